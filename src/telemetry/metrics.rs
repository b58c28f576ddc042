//! The Prometheus metrics of one gateway, by the names dashboards expect.
//!
//! The gRPC families follow go-grpc-prometheus (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`), so that the
//! Grafana boards built for Go and Java servers work unchanged. The
//! procedure families are procgate's own. `prometheus-client` appends the
//! unit and `_total` to a registered name: `grpc_server_handling` with
//! seconds is exposed as `grpc_server_handling_seconds`.
//!
//! Labels never carry values, ids or tokens, and a procedure is a label
//! only once the database resolved its name ([`ProcedureLabel`]): a hostile
//! client calling random names adds no label values, only counts under
//! `procedure="<invalid>"`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

use crate::jobs::JobState;

/// The label of a call to a name the database did not resolve.
pub const INVALID_PROCEDURE: &str = "<invalid>";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcCodeLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_type: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    procedure: String,
    mode: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallModeLabels {
    procedure: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabel {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    backend: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// How a procedure was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Job,
    Stream,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Job => "job",
            Mode::Stream => "stream",
        }
    }
}

/// The `procedure` label of a call: its normalised name once the database
/// resolved it (the call reached its statement), `<invalid>` before.
/// Normalised, so that `ACC.Pick` and `acc.pick` count as one.
pub struct ProcedureLabel(String);

impl ProcedureLabel {
    pub fn resolved(name: &crate::name::ProcedureName) -> ProcedureLabel {
        ProcedureLabel(name.normalised())
    }

    pub fn invalid() -> ProcedureLabel {
        ProcedureLabel(INVALID_PROCEDURE.into())
    }
}

/// Every metric of one gateway; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Families>);

struct Families {
    registry: Registry,
    grpc_started: Family<GrpcLabels, Counter>,
    grpc_handled: Family<GrpcCodeLabels, Counter>,
    grpc_handling: Histograms<GrpcLabels>,
    calls: Family<CallLabels, Counter>,
    call_duration: Histograms<CallModeLabels>,
    jobs: Family<StateLabel, Gauge>,
    queue_wait: Histogram,
    pool_connections: Family<StateLabel, Gauge>,
    pool_wait: Histogram,
    watch_streams: Family<RpcLabel, Gauge>,
}

/// Buckets from 1 ms to about 1.2 h: sync calls and nightly jobs alike.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 17))
}

/// Waits are short when all is well: 100 µs to about 10 min.
fn wait_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 3.0, 15))
}

impl Metrics {
    /// The metrics of a gateway serving `backend` (`postgres`, `oracle`).
    pub fn new(backend: &'static str) -> Metrics {
        let families = Families {
            registry: Registry::default(),
            grpc_started: Family::default(),
            grpc_handled: Family::default(),
            grpc_handling: Family::new_with_constructor(duration_buckets),
            calls: Family::default(),
            call_duration: Family::new_with_constructor(duration_buckets),
            jobs: Family::default(),
            queue_wait: wait_buckets(),
            pool_connections: Family::default(),
            pool_wait: wait_buckets(),
            watch_streams: Family::default(),
        };
        let mut families = families;
        let r = &mut families.registry;
        r.register(
            "grpc_server_started",
            "RPCs started on the server",
            families.grpc_started.clone(),
        );
        r.register(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC code",
            families.grpc_handled.clone(),
        );
        r.register_with_unit(
            "grpc_server_handling",
            "Time from an RPC's start to its last message (streams included)",
            Unit::Seconds,
            families.grpc_handling.clone(),
        );
        r.register(
            "procgate_procedure_calls",
            "Procedure calls finished, by mode (sync, job, stream) and outcome (the gRPC code)",
            families.calls.clone(),
        );
        r.register_with_unit(
            "procgate_procedure_duration",
            "Time a procedure call took, from its start to its end",
            Unit::Seconds,
            families.call_duration.clone(),
        );
        r.register(
            "procgate_jobs",
            "Jobs by state, as the job store holds them",
            families.jobs.clone(),
        );
        r.register_with_unit(
            "procgate_job_queue_wait",
            "Time from a job's submission to its start",
            Unit::Seconds,
            families.queue_wait.clone(),
        );
        r.register(
            "procgate_db_pool_connections",
            "Database connections of the call pool, idle or busy",
            families.pool_connections.clone(),
        );
        r.register_with_unit(
            "procgate_db_pool_wait",
            "Time a call waited for a database connection",
            Unit::Seconds,
            families.pool_wait.clone(),
        );
        r.register(
            "procgate_watch_streams",
            "WatchJob and WatchJobs streams open",
            families.watch_streams.clone(),
        );
        r.register(
            "procgate_build",
            "The procgate version and its database backend",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                backend,
            }),
        );
        r.register_collector(Box::new(super::process::ProcessCollector::new()));
        // Every label value that exists at all exists from the start, so
        // that a scrape shows zeros rather than nothing.
        for state in JobState::ALL {
            let _ = families.jobs.get_or_create(&StateLabel {
                state: state.name(),
            });
        }
        for state in ["idle", "busy"] {
            let _ = families
                .pool_connections
                .get_or_create(&StateLabel { state });
        }
        for rpc in ["WatchJob", "WatchJobs"] {
            let _ = families.watch_streams.get_or_create(&RpcLabel { rpc });
        }
        Metrics(Arc::new(families))
    }

    /// The registry, for encoding a scrape.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    pub fn rpc_started(&self, rpc: &GrpcLabels) {
        self.0.grpc_started.get_or_create(rpc).inc();
    }

    pub fn rpc_handled(&self, rpc: &GrpcLabels, code: Code, elapsed: Duration) {
        let labels = GrpcCodeLabels {
            grpc_service: rpc.grpc_service,
            grpc_method: rpc.grpc_method,
            grpc_type: rpc.grpc_type,
            grpc_code: go_code_name(code),
        };
        self.0.grpc_handled.get_or_create(&labels).inc();
        self.0
            .grpc_handling
            .get_or_create(rpc)
            .observe(elapsed.as_secs_f64());
    }

    /// A procedure call ended with `code` after `elapsed`.
    pub fn call_ended(&self, procedure: ProcedureLabel, mode: Mode, code: Code, elapsed: Duration) {
        let labels = CallLabels {
            procedure: procedure.0,
            mode: mode.label(),
            outcome: crate::api::status::code_name(code),
        };
        self.0.calls.get_or_create(&labels).inc();
        let labels = CallModeLabels {
            procedure: labels.procedure,
            mode: labels.mode,
        };
        self.0
            .call_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn job_started_after(&self, queued: Duration) {
        self.0.queue_wait.observe(queued.as_secs_f64());
    }

    pub fn connection_waited(&self, waited: Duration) {
        self.0.pool_wait.observe(waited.as_secs_f64());
    }

    /// The job store's counts, set at each scrape.
    pub fn set_jobs(&self, counts: &[(JobState, u64)]) {
        for state in JobState::ALL {
            let count = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.0
                .jobs
                .get_or_create(&StateLabel {
                    state: state.name(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn set_pool(&self, idle: usize, busy: usize) {
        for (state, n) in [("idle", idle), ("busy", busy)] {
            self.0
                .pool_connections
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts one open watch stream until the guard is dropped.
    pub fn watch_stream(&self, rpc: &'static str) -> StreamGauge {
        let gauge = self
            .0
            .watch_streams
            .get_or_create(&RpcLabel { rpc })
            .clone();
        gauge.inc();
        StreamGauge(gauge)
    }
}

/// One open watch stream, counted while it lives.
pub struct StreamGauge(Gauge);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The gRPC code's name as go-grpc-prometheus writes it in `grpc_code` (`OK`,
/// `InvalidArgument`, `DeadlineExceeded`).
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
