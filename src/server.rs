//! Assembling and running the gRPC server.
//!
//! [`run`] takes an already-bound listener and a shutdown future, in the way
//! of mini-redis's `server::run`: `main` binds the configured address and
//! passes Ctrl-C/SIGTERM, tests bind `127.0.0.1:0` and pass a channel. Besides
//! ProcedureService it serves Arrow Flight (jobs' result sets for data tools,
//! with the same tokens), gRPC health (SERVING only while the database
//! answers) and reflection in both v1 and v1alpha (grpcurl and buf curl
//! speak v1; Python's grpcio-reflection only v1alpha).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::RoutesBuilder;
use tonic::transport::Identity;
use tonic::transport::Server;
use tonic::transport::server::{ServerTlsConfig, TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tonic_web::GrpcWebLayer;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{info, warn};

use crate::allow::AllowList;
use crate::api::ProcedureApi;
use crate::auth::jwt::JwtCheck;
use crate::auth::tokens::TokenCheck;
use crate::auth::{Authenticated, Authenticator};
use crate::backend::{self, Backend};
use crate::config::JobStoreKind;
use crate::config::ServeConfig;
use crate::dashboard::DashboardLayer;
use crate::error::{Error, Result};
use crate::flight::FlightApi;
use crate::jobs::limits::ClaimRules;
use crate::jobs::store::PostgresStore;
use crate::jobs::store::memory::MemoryTable;
use crate::jobs::store::oracle::OracleTable;
use crate::jobs::{Engine, JobTable, Jobs, LocalJobs, StoreSettings};
use crate::policy::PolicyCheck;
use crate::proto;
use crate::proto::procedure_service_server::ProcedureServiceServer;
use crate::schedules::memory::MemorySchedules;
use crate::schedules::ticker::Ticker;
use crate::schedules::{ScheduleTable, Schedules};
use crate::spool::keep::Keeping;
use crate::spool::read::Readers;
use crate::spool::{FileSpool, Spool};
use crate::telemetry::audit::Audit;
use crate::telemetry::endpoint::{self, Endpoint};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::rpc::RpcLayer;
use arrow_flight::flight_service_server::FlightServiceServer;

/// The service name health reports under, besides the server-wide "".
const SERVICE_NAME: &str = "procgate.v1.ProcedureService";

/// The shortest --cancel-grace: a cancel request takes a round trip of its
/// own to reach the statement.
const MIN_CANCEL_GRACE: Duration = Duration::from_secs(1);

/// Serves until `shutdown` resolves, then drains: stops accepting work,
/// cancels running jobs, lets in-flight calls finish within the grace period.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    database_url: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let backend = backend::connect(database_url, &config.backend_settings())?;
    run_with(listener, config, backend, database_url, shutdown).await
}

/// Serves procedure calls through `backend`; `database_url` holds the job
/// store in database mode. [`run`] connects the backend from the URL; tests
/// pass a scripted one.
pub async fn run_with(
    listener: TcpListener,
    config: ServeConfig,
    backend: Arc<dyn Backend>,
    database_url: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener has no address: {e}")))?;
    config.validate(local_addr)?;
    // Checked before anything starts, so a bad flag leaves nothing running.
    let cors = cors_layer(&config.cors_origins)?;
    let audit = Audit::new(config.audit_log.as_deref())?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            Error::InvalidArgument(format!("--metrics-listen: cannot listen on {addr}: {e}"))
        })?),
        None => None,
    };
    let metrics = Metrics::new(backend.kind());
    let dashboard = config.serves_dashboard(local_addr);
    let limits = config.job_limits();
    let settings = config.store_settings();
    let file_spool = || -> Result<Arc<dyn Spool>> {
        Ok(Arc::new(FileSpool::create(
            config.spool_dir.as_deref(),
            config.max_spool_bytes,
        )?))
    };
    let memory_schedules = || -> Arc<dyn ScheduleTable> { Arc::new(MemorySchedules::default()) };
    let (table, spool, settings, schedule_table): (Arc<dyn JobTable>, _, _, _) = match config
        .job_store
    {
        // Writing a change to memory costs nothing worth coalescing.
        JobStoreKind::Memory => (
            Arc::new(MemoryTable::new(
                limits.max_retained,
                limits.max_retained_bytes,
            )),
            file_spool()?,
            StoreSettings {
                progress_interval: Duration::ZERO,
                ..settings
            },
            memory_schedules(),
        ),
        JobStoreKind::Database => match backend.kind() {
            "oracle" => (
                Arc::new(
                    OracleTable::open(database_url, &settings.schema, settings.pool_size).await?,
                ),
                file_spool()?,
                settings,
                memory_schedules(),
            ),
            _ => {
                let store = PostgresStore::open(
                    database_url,
                    &settings.schema,
                    settings.pool_size as usize,
                )
                .await?;
                let spool: Arc<dyn Spool> = Arc::new(store.spool(config.max_spool_bytes));
                let schedules: Arc<dyn ScheduleTable> = Arc::new(store.schedules());
                (Arc::new(store), spool, settings, schedules)
            }
        },
    };
    // The Oracle job store has no spool table yet: its jobs' result sets
    // stay capped inline, so that every instance reads the same job.
    let oracle_store =
        matches!(config.job_store, JobStoreKind::Database) && backend.kind() == "oracle";
    let keeping = Keeping {
        spool: (!oracle_store).then(|| spool.clone()),
        max_inline_rows: config.max_cursor_rows,
        max_inline_bytes: config.max_inline_result_bytes.min(usize::MAX as u64) as usize,
    };
    let local = LocalJobs::new(
        backend.clone(),
        limits.max_running,
        limits.max_messages,
        keeping,
        metrics.clone(),
    );
    let rules = ClaimRules {
        limits: config.procedure_limits.clone(),
    };
    for limit in &rules.limits {
        info!(procedures = %limit.glob, at_once = limit.max, "procedure limit");
    }
    if !rules.limits.is_empty() && oracle_store {
        return Err(Error::InvalidArgument(
            "--procedure-limit needs the memory or PostgreSQL job store; the Oracle job store \
             does not count its claims by procedure yet"
                .into(),
        ));
    }
    let jobs: Jobs =
        Engine::start(table, local.clone(), settings, limits.max_pending, rules).await?;
    if config.cancel_grace < MIN_CANCEL_GRACE {
        return Err(Error::InvalidArgument(format!(
            "--cancel-grace {} is shorter than the {} a cancel needs to reach a statement \
             before procgate ends its session",
            humantime::format_duration(config.cancel_grace),
            humantime::format_duration(MIN_CANCEL_GRACE)
        )));
    }
    let policy = PolicyCheck::new(config.policy.as_deref())?;
    if policy.enabled() && !config.authenticates() {
        return Err(Error::InvalidArgument(
            "--policy gives roles to callers, and without --token-file, --jwt-jwks or \
             --jwt-jwks-url no caller has any: configure one of them"
                .into(),
        ));
    }
    let allow =
        AllowList::new(&config.allow, config.allow_system_schemas)?.with_policy(policy.clone());
    let jwt = match config.jwt_settings() {
        Some(settings) => Some(JwtCheck::new(settings).await?),
        None => None,
    };
    let auth = Authenticator {
        tokens: TokenCheck::new(&config.tokens, config.token_file.as_deref())?,
        jwt,
        policy,
    };
    let ticker = Ticker::new(
        schedule_table,
        jobs.clone(),
        (allow.clone(), auth.clone()),
        config.schedule_catch_up,
        config.store_settings().poll_interval,
    );
    let schedules = Arc::new(Schedules::new(
        ticker.clone(),
        backend.clone(),
        allow.clone(),
        oracle_store.then_some(
            "schedules need the memory or PostgreSQL job store; the Oracle job store does not \
             keep them yet",
        ),
    ));
    let readers = Readers::new(config.max_result_readers as usize);
    let flight = FlightApi {
        jobs: jobs.clone(),
        spool: spool.clone(),
        readers: readers.clone(),
    };
    let api = ProcedureApi {
        backend: backend.clone(),
        jobs: jobs.clone(),
        allow,
        max_messages: config.max_messages,
        max_response_bytes: config.max_response_bytes,
        log_params: config.log_params,
        streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams as usize)),
        max_streams: config.max_streams as usize,
        spool,
        readers,
        schedules,
        metrics: metrics.clone(),
    };

    let tls = tls_config(&config)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    // Every background task of the server ends with `stop`, and shutdown
    // waits for them: after `run` returns, nothing of procgate runs.
    let (background, stop) = (TaskTracker::new(), CancellationToken::new());
    background.spawn(until(
        stop.clone(),
        watch_database(
            backend.clone(),
            local.clone(),
            health.clone(),
            config.health_interval,
        ),
    ));
    background.spawn(until(
        stop.clone(),
        sweep_jobs(jobs.clone(), config.sweep_interval, config.job_retention),
    ));
    background.spawn(until(
        stop.clone(),
        reload_on_sighup(auth.clone(), audit.clone()),
    ));
    if let Some(jwt) = &auth.jwt {
        background.spawn(until(
            stop.clone(),
            jwt.clone().refresh_every(config.jwt_jwks_refresh),
        ));
    }
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            info!("metrics are at http://{addr}/metrics (and /healthz, /readyz)");
        }
        let endpoint = Endpoint {
            metrics: metrics.clone(),
            jobs: jobs.clone(),
            local: local.clone(),
            backend: backend.clone(),
        };
        background.spawn(endpoint::serve(listener, endpoint, stop.clone()));
    }
    background.spawn(until(stop.clone(), ticker.run()));
    background.close();

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| {
        Error::Internal(format!("building the reflection service failed: {e}"))
    };
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;

    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::InvalidArgument(format!("invalid TLS configuration: {e}")))?;
    }
    let mut routes = RoutesBuilder::default();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(Authenticated::new(
            ProcedureServiceServer::new(api)
                .max_decoding_message_size(config.max_request_bytes)
                .max_encoding_message_size(config.max_response_bytes),
            auth.clone(),
        ))
        .add_service(Authenticated::new(
            FlightServiceServer::new(flight)
                .max_decoding_message_size(config.max_request_bytes)
                .max_encoding_message_size(config.max_response_bytes),
            auth,
        ));
    // Outermost first: the dashboard's page, CORS for browsers' preflights,
    // gRPC-Web turning browser calls (HTTP/1.1 or 2) into gRPC, the metrics
    // and audit of each RPC, then our status rewrite (whose codes they count).
    let layers = ServiceBuilder::new()
        .option_layer(dashboard.then_some(DashboardLayer))
        .option_layer(cors)
        .layer(GrpcWebLayer::new())
        .layer(RpcLayer { metrics, audit })
        .layer(tower::util::MapResponseLayer::new(
            crate::api::transport::classify_transport_errors,
        ))
        .into_inner();
    let server = builder
        .accept_http1(true)
        .trace_fn(crate::telemetry::trace::rpc_span)
        .layer(layers)
        .add_routes(routes.routes())
        // Without TCP_NODELAY, a response split over two segments waits
        // for the client's delayed ACK (40 ms on Linux).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stopped.await;
            },
        );
    tokio::pin!(server);
    info!(%local_addr, database = backend.kind(), "procgate is listening");
    if dashboard {
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        info!("the jobs dashboard is at {scheme}://{local_addr}/");
    }

    tokio::select! {
        result = &mut server => {
            stop.cancel();
            background.wait().await;
            return result.map_err(|e| Error::Internal(format!("the gRPC server failed: {e}")));
        }
        _ = shutdown => {}
    }

    info!(grace = ?config.grace_period, "shutting down: no new work, cancelling running jobs");
    set_health(&health, ServingStatus::NotServing).await;
    stop.cancel();
    background.wait().await;
    let _ = stop_accepting.send(());
    // Jobs are cancelled while the server drains: their watchers' streams
    // end with them.
    let drained = tokio::time::timeout(config.grace_period, async {
        let (served, ()) = tokio::join!(&mut server, jobs.shutdown());
        served
    })
    .await;
    match drained {
        Ok(result) => result.map_err(|e| Error::Internal(format!("the gRPC server failed: {e}"))),
        Err(_) => {
            warn!("grace period over: closing the remaining calls");
            Ok(())
        }
    }
}

/// Runs `work` until it ends or `stop` is cancelled.
async fn until(stop: CancellationToken, work: impl Future<Output = ()>) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = work => {}
    }
}

/// CORS for browser clients on other origins (`--cors-origin`), when any.
fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| browser_origin(o))
        .collect::<Result<Vec<_>>>()?;
    let header = |name: &'static str| HeaderName::from_static(name);
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers([
                header("content-type"),
                header("authorization"),
                header("x-grpc-web"),
                header("x-user-agent"),
                header("grpc-timeout"),
            ])
            .expose_headers([
                header("grpc-status"),
                header("grpc-message"),
                header("grpc-status-details-bin"),
                header("procgate-db-code"),
            ]),
    ))
}

/// An origin as browsers send it, `scheme://host[:port]`; a trailing slash
/// is dropped, since it would never match.
fn browser_origin(origin: &str) -> Result<HeaderValue> {
    let invalid = || {
        Error::InvalidArgument(format!(
            "--cors-origin {origin:?} is not an origin; write it as scheme://host[:port], e.g. https://ops.example.com"
        ))
    };
    let trimmed = origin.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|_| invalid())?;
    let web_scheme = matches!(uri.scheme_str(), Some("http" | "https"));
    let bare_host = uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    if !web_scheme || !bare_host {
        return Err(invalid());
    }
    HeaderValue::from_str(trimmed).map_err(|_| invalid())
}

/// The TLS identity of --tls-cert/--tls-key, when given.
fn tls_config(config: &ServeConfig) -> Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", path.display())))
    };
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}

/// Reads the token file, the policy and the JWT key set file again, and
/// reopens the audit log, on every SIGHUP; what cannot be read keeps its
/// previous state.
async fn reload_on_sighup(auth: Authenticator, audit: Audit) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        warn!("cannot listen for SIGHUP; the token file will not be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        // Files are read and parsed off the runtime: calls go on meanwhile.
        let (tokens, policy) = (auth.tokens.clone(), auth.policy.clone());
        let read = tokio::task::spawn_blocking(move || (tokens.reload(), policy.reload())).await;
        let Ok((tokens, policy)) = read else {
            warn!("SIGHUP: reading the token file or the policy panicked; kept both");
            continue;
        };
        match tokens {
            Ok(count) => info!(tokens = count, "SIGHUP: reloaded the token file"),
            Err(e) => warn!(error = %e, "SIGHUP: kept the previous tokens"),
        }
        if auth.policy.enabled() {
            match policy {
                Ok(roles) => info!(roles, "SIGHUP: reloaded the policy"),
                Err(e) => warn!(error = %e, "SIGHUP: kept the previous policy"),
            }
        }
        if let Some(jwt) = &auth.jwt {
            match jwt.reload().await {
                Ok(keys) => info!(keys, "SIGHUP: reloaded the JWT key set"),
                Err(e) => warn!(error = %e, "SIGHUP: kept the previous JWT keys"),
            }
        }
        if let Err(e) = audit.reopen() {
            warn!(error = %e, "SIGHUP: the audit log could not be reopened; writing on to the old file");
        }
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}

/// Pings the database every `interval` and reports the result as health
/// and to the jobs run here. While the database is down the pings back off,
/// doubling up to 5 s (or `interval`, if longer).
async fn watch_database(
    backend: Arc<dyn Backend>,
    local: Arc<LocalJobs>,
    health: HealthReporter,
    interval: Duration,
) {
    let mut serving = None;
    let mut delay = interval;
    loop {
        let started = local.probe_started();
        let timeout = interval.max(Duration::from_secs(1));
        let result = backend.ping(timeout).await;
        let now_serving = result.is_ok();
        tracing::debug!(up = now_serving, "health probe");
        local.report_probe(now_serving, started);
        if serving != Some(now_serving) {
            match &result {
                Ok(()) => info!("the database answers: SERVING"),
                Err(e) => warn!(error = %e, "the database does not answer: NOT_SERVING"),
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, status).await;
            serving = Some(now_serving);
        }
        delay = if now_serving {
            interval
        } else {
            (delay * 2).min(interval.max(Duration::from_secs(5)))
        };
        tokio::time::sleep(delay).await;
    }
}

/// Drops expired jobs every `interval`.
async fn sweep_jobs(jobs: Jobs, interval: Duration, retention: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match jobs.sweep(retention).await {
            Ok(0) => {}
            Ok(removed) => {
                info!(removed, "swept expired jobs");
                release_freed_memory();
            }
            Err(e) => warn!(error = %e, "sweeping expired jobs failed"),
        }
    }
}

/// Gives memory freed by a sweep back to the system when glibc's allocator
/// serves it (a program embedding the library; the procgate binary uses
/// jemalloc, which returns freed pages on its own within seconds). glibc
/// keeps freed pages of its arenas otherwise, so a gateway that once held
/// 100,000 jobs would keep their memory for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_checked_and_normalized() {
        for (given, kept) in [
            ("https://ops.example.com", "https://ops.example.com"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(browser_origin(given).unwrap(), kept);
        }
        for bad in [
            "ops.example.com",
            "ftp://ops.example.com",
            "https://ops.example.com/path",
            "https://user@ops.example.com",
            "https://a\nb",
            "*",
        ] {
            let err = browser_origin(bad).unwrap_err().to_string();
            assert!(err.contains("scheme://host[:port]"), "{bad}: {err}");
        }
    }
}
