//! Command-line configuration. Every flag is also an environment variable
//! `PROCGATE_*`, so the same binary is configured by flags on a laptop and by
//! the environment in a container; `procgate serve --help` lists them all.
//!
//! Secrets (database URL, tokens) are hidden from `--help` output and this
//! type deliberately has no `Debug`: it is never logged whole.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::auth::jwt::{JwtSettings, KeySource};
use crate::backend::BackendSettings;
use crate::error::{Error, Result};
use crate::jobs::limits::ProcedureLimit;
use crate::jobs::{JobLimits, StoreSettings};

/// `host:pid`, unique enough to tell instances apart in logs and messages.
fn default_instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "procgate".into());
    format!("{host}:{}", std::process::id())
}

#[derive(Args, Clone)]
pub struct ServeConfig {
    /// Address to listen on. Without --token only loopback addresses are allowed.
    #[arg(long, env = "PROCGATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Database URL: postgres://user:password@host:5432/dbname. When unset,
    /// procgate starts an embedded throwaway PostgreSQL loaded with the
    /// examples of docs/examples/postgres (for trying it out, not production).
    #[arg(long, env = "PROCGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Bearer token clients must send (`authorization: Bearer <token>`).
    /// Repeatable; PROCGATE_TOKENS takes a comma-separated list.
    #[arg(
        long = "token",
        env = "PROCGATE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,

    /// Named tokens, one `name:secret` or `name:secret:role1,role2` per line
    /// (the role `admin` marks an admin); read again on SIGHUP. Each caller
    /// sees only the jobs its token submitted, unless it is an admin
    /// (--token tokens are admins).
    #[arg(long, env = "PROCGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Accept JWTs signed by the keys of this JWKS file (read again on SIGHUP).
    #[arg(long, env = "PROCGATE_JWT_JWKS", conflicts_with = "jwt_jwks_url")]
    pub jwt_jwks: Option<PathBuf>,

    /// Accept JWTs signed by the keys of this JWKS URL (an identity
    /// provider's jwks_uri): fetched at start, every --jwt-jwks-refresh, and
    /// when a token names an unknown key id (at most once per 30s).
    #[arg(long, env = "PROCGATE_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// How often --jwt-jwks-url is fetched again.
    #[arg(long, env = "PROCGATE_JWT_JWKS_REFRESH", default_value = "10m", value_parser = humantime::parse_duration)]
    pub jwt_jwks_refresh: Duration,

    /// The issuer (`iss`) a JWT must name; a token without `iss` is refused.
    #[arg(long, env = "PROCGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// An audience (`aud`) a JWT may name; repeatable (PROCGATE_JWT_AUDIENCE
    /// takes a comma-separated list). When set, a token without `aud` is refused.
    #[arg(
        long = "jwt-audience",
        env = "PROCGATE_JWT_AUDIENCE",
        value_delimiter = ','
    )]
    pub jwt_audiences: Vec<String>,

    /// Clock skew allowed on a JWT's `exp` and `nbf`.
    #[arg(long, env = "PROCGATE_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// The JWT claim that names the caller, who owns its jobs.
    #[arg(long, env = "PROCGATE_JWT_OWNER_CLAIM", default_value = "sub")]
    pub jwt_owner_claim: String,

    /// The JWT claim holding the caller's roles: a dotted path such as
    /// `realm_access.roles` (Keycloak) to a list of strings.
    #[arg(long, env = "PROCGATE_JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,

    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "PROCGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PROCGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Only procedures matching one of these globs may be called
    /// (case-insensitive, on the normalised name, e.g. 'pkg_etl.*').
    /// Repeatable; PROCGATE_ALLOW takes a comma-separated list.
    #[arg(long = "allow", env = "PROCGATE_ALLOW", value_delimiter = ',')]
    pub allow: Vec<String>,

    /// Per-role rules (TOML): `[roles.NAME]` with `allow`/`deny` globs and
    /// `admin`; a caller may call what one of its roles allows and none
    /// denies, inside --allow. Read again on SIGHUP. See docs/security.md.
    #[arg(long, env = "PROCGATE_POLICY")]
    pub policy: Option<PathBuf>,

    /// Open the databases' own schemas (PostgreSQL's pg_catalog and
    /// information_schema, Oracle's SYS and its DBMS_*/UTL_* packages),
    /// which are closed by default: their routines can end sessions, read
    /// files or sleep forever. --allow alone never opens them.
    #[arg(long, env = "PROCGATE_ALLOW_SYSTEM_SCHEMAS")]
    pub allow_system_schemas: bool,

    /// Database connections for jobs.
    #[arg(long, env = "PROCGATE_POOL_SIZE", default_value_t = 10)]
    pub pool_size: u32,

    /// Extra connections kept for ExecuteSync, DescribeProcedure and health
    /// checks, so that they never wait behind running jobs. The pool holds
    /// pool-size + sync-connections connections.
    #[arg(long, env = "PROCGATE_SYNC_CONNECTIONS", default_value_t = 4)]
    pub sync_connections: u32,

    /// ExecuteStream calls open at once; each holds a connection of its own
    /// for as long as its client reads, added to the pool, so that streams
    /// never take the connections of jobs, sync calls or health checks. One
    /// more is RESOURCE_EXHAUSTED.
    #[arg(long, env = "PROCGATE_MAX_STREAMS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_streams: u32,

    /// ReadJobResult and Arrow Flight DoGet reads open at once; each holds
    /// an open spool file or a job store connection while its client reads.
    /// One more is RESOURCE_EXHAUSTED.
    #[arg(long, env = "PROCGATE_MAX_RESULT_READERS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub max_result_readers: u32,

    /// How long a call waits for a free connection before RESOURCE_EXHAUSTED.
    #[arg(long, env = "PROCGATE_POOL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pool_timeout: Duration,

    /// How long opening a database connection may take.
    #[arg(long, env = "PROCGATE_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// How long a cancelled call (CancelJob, a sync call past its deadline
    /// or whose caller left) may ignore the cancel before procgate ends its
    /// database session from another connection (pg_terminate_backend;
    /// Oracle's ALTER SYSTEM CANCEL SQL, then KILL SESSION).
    #[arg(long, env = "PROCGATE_CANCEL_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cancel_grace: Duration,

    /// Close database connections idle for longer than this.
    #[arg(long, env = "PROCGATE_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Check each connection with a round-trip when it leaves the pool, so
    /// that a connection broken by a database restart is replaced before use.
    #[arg(long, env = "PROCGATE_POOL_TEST_ON_CHECKOUT", default_value_t = true, action = clap::ArgAction::Set)]
    pub pool_test_on_checkout: bool,

    /// Oracle: how often V$SESSION_LONGOPS is read for a running job's progress.
    #[arg(long, env = "PROCGATE_ORACLE_PROGRESS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub oracle_progress_interval: Duration,

    /// Where jobs live: `memory` (one instance; lost on restart) or
    /// `database` (a table in the same PostgreSQL, durable and shared by
    /// every instance; run `procgate migrate` first).
    #[arg(long, env = "PROCGATE_JOB_STORE", value_enum, default_value_t = JobStoreKind::Memory)]
    pub job_store: JobStoreKind,

    #[command(flatten)]
    pub store: StoreArgs,

    /// This instance's name in the job store (default: host name and pid).
    #[arg(long, env = "PROCGATE_INSTANCE_NAME")]
    pub instance_name: Option<String>,

    /// An instance whose lease is not renewed for this long is considered
    /// dead: its running jobs fail as INTERRUPTED.
    #[arg(long, env = "PROCGATE_INSTANCE_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub instance_lease: Duration,

    /// Most frequent progress write per running job to the job store.
    #[arg(long, env = "PROCGATE_JOB_STORE_PROGRESS_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub job_store_progress_interval: Duration,

    /// How often instances poll the job store in case a notification was
    /// missed (new jobs, cancels, watched jobs of other instances).
    #[arg(long, env = "PROCGATE_JOB_STORE_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub job_store_poll_interval: Duration,

    /// Connections of the database job store's own pool (bookkeeping: claims,
    /// saves, the change feed), plus one that LISTENs, per instance.
    #[arg(long, env = "PROCGATE_JOB_STORE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub job_store_pool_size: u32,

    /// Jobs running at once (default: --pool-size). More wait PENDING, in
    /// submission order.
    #[arg(long, env = "PROCGATE_MAX_RUNNING_JOBS")]
    pub max_running_jobs: Option<usize>,

    /// Jobs allowed to wait; past it SubmitAsync answers RESOURCE_EXHAUSTED.
    #[arg(long, env = "PROCGATE_MAX_PENDING_JOBS", default_value_t = 1000)]
    pub max_pending_jobs: usize,

    /// At most N jobs of procedures matching GLOB run at once (on every
    /// instance together, in database mode); the others wait PENDING.
    /// Repeatable: `--procedure-limit 'pkg_etl.carga_*=2'`. Globs match the
    /// name as submitted, ignoring case; a job must fit every limit it
    /// matches. ExecuteSync is never limited. PROCGATE_PROCEDURE_LIMIT takes
    /// a comma-separated list.
    #[arg(long = "procedure-limit", env = "PROCGATE_PROCEDURE_LIMIT", value_name = "GLOB=N",
          value_delimiter = ',', value_parser = parse_procedure_limit)]
    pub procedure_limits: Vec<ProcedureLimit>,

    /// After downtime, the ticks a schedule missed within this long run
    /// once (one job for them all); older ones are skipped. At least the
    /// poll interval plus 5s, so that a tick met a little late still runs.
    #[arg(long, env = "PROCGATE_SCHEDULE_CATCH_UP", default_value = "1h", value_parser = humantime::parse_duration)]
    pub schedule_catch_up: Duration,

    /// How long finished jobs are kept.
    #[arg(long, env = "PROCGATE_JOB_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub job_retention: Duration,

    /// How long a deleted or expired job's tombstone is kept: a WatchJobs
    /// stream can resume (since_revision) from up to this long ago.
    #[arg(long, env = "PROCGATE_TOMBSTONE_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub tombstone_retention: Duration,

    /// Most jobs kept; the oldest finished ones are dropped first.
    #[arg(long, env = "PROCGATE_MAX_RETAINED_JOBS", default_value_t = 100_000)]
    pub max_retained_jobs: usize,

    /// Most bytes the memory store's retained jobs hold (their parameters'
    /// values, inline outputs and messages); past it the oldest finished
    /// jobs are dropped first. Memory mode only: the database store keeps
    /// jobs in the database.
    #[arg(long, env = "PROCGATE_MAX_RETAINED_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub max_retained_bytes: u64,

    /// How often expired jobs are swept.
    #[arg(long, env = "PROCGATE_SWEEP_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// Messages (notices, DBMS_OUTPUT lines) kept per call; older ones are
    /// dropped and counted.
    #[arg(long, env = "PROCGATE_MAX_MESSAGES", default_value_t = 100)]
    pub max_messages: usize,

    /// Most rows read from one cursor or set-returning function; past it the
    /// result is cut and marked `truncated`.
    #[arg(long, env = "PROCGATE_MAX_CURSOR_ROWS", default_value_t = 10_000)]
    pub max_cursor_rows: usize,

    /// Largest request accepted, in bytes; larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "PROCGATE_MAX_REQUEST_BYTES", default_value_t = 16 << 20, value_parser = parse_size)]
    pub max_request_bytes: usize,

    /// Largest response sent, in bytes (a call whose outputs are bigger fails
    /// instead of exhausting memory).
    #[arg(long, env = "PROCGATE_MAX_RESPONSE_BYTES", default_value_t = 64 << 20, value_parser = parse_size)]
    pub max_response_bytes: usize,

    /// Most bytes of a job's result sets kept inline in the job (GetJob,
    /// WatchJob), all of them together, besides --max-cursor-rows each; its other rows are spooled and
    /// read with ReadJobResult or Arrow Flight. A number of bytes, or with
    /// a unit: 512KiB, 1MiB.
    #[arg(long, env = "PROCGATE_MAX_INLINE_RESULT_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_inline_result_bytes: u64,

    /// Where jobs' result rows past their inline part are spooled in memory
    /// mode: a directory of this process's own is made in it, and removed
    /// at exit. Default: the system's temporary directory. In database mode
    /// they go to a table of the job store instead.
    #[arg(long, env = "PROCGATE_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,

    /// Most bytes spooled in all (per instance in memory mode, per job store
    /// in database mode); a job whose result would pass it fails with
    /// RESOURCE_EXHAUSTED and its spooled rows are freed.
    #[arg(long, env = "PROCGATE_MAX_SPOOL_BYTES", default_value = "4GiB", value_parser = parse_bytes)]
    pub max_spool_bytes: u64,

    /// Serve the jobs dashboard at `/`: `auto` serves it when listening on
    /// loopback only.
    #[arg(long, env = "PROCGATE_DASHBOARD", value_enum, default_value_t = DashboardMode::Auto)]
    pub dashboard: DashboardMode,

    /// Origins allowed to call the API from a browser (CORS for gRPC-Web),
    /// e.g. https://ops.example.com; repeatable or comma-separated. None by
    /// default: only the dashboard's own origin.
    #[arg(
        long = "cors-origin",
        env = "PROCGATE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// On SIGTERM/Ctrl-C, how long running sync calls may take to finish.
    #[arg(long, env = "PROCGATE_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,

    /// How often the database is pinged for the health service.
    #[arg(long, env = "PROCGATE_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// Log format.
    #[arg(long, env = "PROCGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics (GET /metrics), /healthz and /readyz on this
    /// address, without tokens; off by default. See docs/operations.md.
    #[arg(long, env = "PROCGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Export traces over OTLP/gRPC to this collector, e.g.
    /// http://127.0.0.1:4317; off by default. OTEL_SERVICE_NAME overrides
    /// the service name (procgate).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Also append the audit events (one JSON object per line: who called
    /// which procedure or job, from where, with what code) to this file;
    /// reopened on SIGHUP, for logrotate.
    #[arg(long, env = "PROCGATE_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Log parameter values of calls (at debug level). Off by default: values
    /// may be personal data.
    #[arg(long, env = "PROCGATE_LOG_PARAMS")]
    pub log_params: bool,
}

/// When the jobs dashboard is served: by default only to the machine
/// itself, as an operator's tool rather than a public page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DashboardMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobStoreKind {
    Memory,
    Database,
}

/// Where the database job store's tables are (shared by serve and migrate).
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// The schema of procgate's own tables (procgate_jobs, procgate_instances).
    #[arg(
        long = "job-store-schema",
        env = "PROCGATE_JOB_STORE_SCHEMA",
        default_value = "public"
    )]
    pub schema: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeConfig {
    /// Parses `serve` flags from `args` (without the program name), with the
    /// same defaults and environment variables as the command line.
    pub fn parse_from<I, T>(args: I) -> std::result::Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            config: ServeConfig,
        }
        let args = std::iter::once("procgate".into()).chain(args.into_iter().map(Into::into));
        <Serve as clap::Parser>::try_parse_from(args).map(|s| s.config)
    }

    /// Refuses combinations that would be unsafe or cannot work.
    pub fn validate(&self, listen: SocketAddr) -> Result<()> {
        if !self.authenticates() && !listen.ip().is_loopback() {
            return Err(Error::InvalidArgument(format!(
                "refusing to listen on {listen} without authentication: set --token \
                 (or PROCGATE_TOKENS), --token-file, --jwt-jwks or --jwt-jwks-url, or listen \
                 on a loopback address such as 127.0.0.1"
            )));
        }
        if self.jwt_jwks.is_none()
            && self.jwt_jwks_url.is_none()
            && (self.jwt_issuer.is_some() || !self.jwt_audiences.is_empty())
        {
            return Err(Error::InvalidArgument(
                "--jwt-issuer and --jwt-audience need the keys to check tokens with: set \
                 --jwt-jwks or --jwt-jwks-url"
                    .into(),
            ));
        }
        if self.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::InvalidArgument("--token must not be empty".into()));
        }
        if self.pool_size == 0 || self.max_running_jobs() == 0 {
            return Err(Error::InvalidArgument(
                "--pool-size and --max-running-jobs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether any credential is configured (tokens or JWT keys).
    pub fn authenticates(&self) -> bool {
        !self.tokens.is_empty()
            || self.token_file.is_some()
            || self.jwt_jwks.is_some()
            || self.jwt_jwks_url.is_some()
    }

    /// The JWT checks, when a key set is configured.
    pub fn jwt_settings(&self) -> Option<JwtSettings> {
        let source = match (&self.jwt_jwks, &self.jwt_jwks_url) {
            (Some(file), _) => KeySource::File(file.clone()),
            (None, Some(url)) => KeySource::Url(url.clone()),
            (None, None) => return None,
        };
        Some(JwtSettings {
            source,
            issuer: self.jwt_issuer.clone(),
            audiences: self.jwt_audiences.clone(),
            leeway: self.jwt_leeway,
            owner_claim: self.jwt_owner_claim.clone(),
            roles_claim: self.jwt_roles_claim.clone(),
        })
    }

    /// Whether to serve the dashboard when listening on `listen`.
    pub fn serves_dashboard(&self, listen: SocketAddr) -> bool {
        match self.dashboard {
            DashboardMode::On => true,
            DashboardMode::Off => false,
            DashboardMode::Auto => listen.ip().is_loopback(),
        }
    }

    pub fn max_running_jobs(&self) -> usize {
        self.max_running_jobs.unwrap_or(self.pool_size as usize)
    }

    pub fn backend_settings(&self) -> BackendSettings {
        BackendSettings {
            max_size: self.pool_size + self.sync_connections + self.max_streams,
            test_on_checkout: self.pool_test_on_checkout,
            max_messages: self.max_messages,
            progress_interval: self.oracle_progress_interval,
            checkout_timeout: self.pool_timeout,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            cancel_grace: self.cancel_grace,
            max_cursor_rows: self.max_cursor_rows,
            allow_system_schemas: self.allow_system_schemas,
        }
    }

    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            schema: self.store.schema.clone(),
            instance_name: self
                .instance_name
                .clone()
                .unwrap_or_else(default_instance_name),
            lease: self.instance_lease,
            progress_interval: self.job_store_progress_interval,
            poll_interval: self.job_store_poll_interval,
            pool_size: self.job_store_pool_size,
            tombstone_retention: self.tombstone_retention,
        }
    }

    pub fn job_limits(&self) -> JobLimits {
        JobLimits {
            max_running: self.max_running_jobs(),
            max_pending: self.max_pending_jobs,
            max_retained: self.max_retained_jobs,
            max_retained_bytes: self.max_retained_bytes.min(usize::MAX as u64) as usize,
            max_messages: self.max_messages,
        }
    }
}

/// [`parse_bytes`], for a size held in memory.
pub fn parse_size(text: &str) -> Result<usize, String> {
    parse_bytes(text)
        .and_then(|bytes| usize::try_from(bytes).map_err(|_| format!("{text:?} is too large")))
}

/// A size in bytes: a number, or one with a unit (B, KB, MB, GB, KiB, MiB,
/// GiB; any case).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size: use a number of bytes, or one such as 512KiB or 4GiB")
    })?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `--procedure-limit GLOB=N`, refused at parse time (exit 2) when bad.
fn parse_procedure_limit(spec: &str) -> std::result::Result<ProcedureLimit, String> {
    ProcedureLimit::parse(spec).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_a_number_or_a_unit() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("4gib"), Ok(4 << 30));
        assert_eq!(parse_bytes("512 KB"), Ok(512_000));
        assert!(parse_bytes("lots").unwrap_err().contains("not a size"));
        assert!(
            parse_bytes("3 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(
            parse_bytes("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    fn parse(args: &[&str]) -> ServeConfig {
        ServeConfig::parse_from(args).unwrap()
    }

    #[test]
    fn defaults_are_sane() {
        let config = parse(&[]);
        assert_eq!(config.max_running_jobs(), 10);
        assert_eq!(
            config.backend_settings().max_size,
            18,
            "jobs, sync calls, streams"
        );
        assert_eq!(config.job_retention, Duration::from_secs(24 * 3600));
        assert!(config.validate(config.listen).is_ok());
    }

    #[test]
    fn the_dashboard_is_served_on_loopback_unless_told() {
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let auto = parse(&[]);
        assert!(auto.serves_dashboard(loopback));
        assert!(auto.serves_dashboard("[::1]:50051".parse().unwrap()));
        assert!(!auto.serves_dashboard(everywhere));
        assert!(parse(&["--dashboard", "on"]).serves_dashboard(everywhere));
        assert!(!parse(&["--dashboard", "off"]).serves_dashboard(loopback));
        let origins = parse(&["--cors-origin", "https://a.example,https://b.example"]);
        assert_eq!(
            origins.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert!(parse(&[]).cors_origins.is_empty());
    }

    #[test]
    fn no_token_means_loopback_only() {
        let open = parse(&["--listen", "0.0.0.0:50051"]);
        let err = open.validate(open.listen).unwrap_err();
        assert!(err.to_string().contains("--token"), "{err}");
        let guarded = parse(&[
            "--listen",
            "0.0.0.0:50051",
            "--token",
            "t1",
            "--token",
            "t2",
        ]);
        assert_eq!(guarded.tokens, ["t1", "t2"]);
        assert!(guarded.validate(guarded.listen).is_ok());
    }
}
