//! Databases behind the gateway.
//!
//! A [`Backend`] runs one [`ProcedureCall`] on a pooled connection and
//! returns its [`Outputs`]. The trait is async and the layers above know
//! nothing of blocking: the PostgreSQL backend drives tokio-postgres on the
//! tokio workers themselves (a thread hand-off per call used to cost more
//! than the call), while the Oracle backend hides its blocking driver behind
//! `spawn_blocking`. While a call runs, the backend reports progress and
//! messages to a [`Progress`] sink and lets an [`Interrupt`] cancel its
//! statement.
//!
//! [`connect`] picks the backend from the URL scheme.

mod interrupt;
pub mod oracle;
pub mod postgres;
pub mod signature;
pub mod stream;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

pub use interrupt::{Interrupt, Terminate};
pub use stream::{ResultPart, RowSink};

use crate::call::{Direction, Outputs, ProcedureCall, ValueType};
use crate::error::{Error, Result};
use crate::name::ProcedureName;

/// The milestones a call passes through; they move a job's progress when the
/// procedure reports none of its own. Those before the procedure's own code
/// runs stay below anything it reports (from 3 %), since progress never goes
/// back: a procedure that reports 5 % shows 5 %. Progress of at most
/// [`INDETERMINATE_MAX`] on a RUNNING job means "started, amount unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    ConnectionAcquired,
    Executing,
    OutputsFetched,
}

impl Phase {
    pub fn percent(self) -> u32 {
        match self {
            Phase::ConnectionAcquired => 1,
            Phase::Executing => INDETERMINATE_MAX,
            Phase::OutputsFetched => 90,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Phase::ConnectionAcquired => "connection acquired",
            Phase::Executing => "executing",
            Phase::OutputsFetched => "outputs fetched",
        }
    }
}

/// The highest milestone before the procedure's own code runs.
pub const INDETERMINATE_MAX: u32 = 2;

/// Where a running call reports what it is doing. Called from whichever
/// thread reads the database's messages: keep it quick and non-blocking.
pub trait Progress: Send + Sync {
    /// A milestone was reached.
    fn phase(&self, phase: Phase);
    /// The procedure reported its own progress (0–100) and what it is doing.
    fn report(&self, percent: u32, message: Option<String>);
    /// The procedure printed a line (a notice, DBMS_OUTPUT).
    fn message(&self, line: String);
}

/// What a procedure printed, bounded: the newest `capacity` lines are kept
/// and the older ones counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageLog {
    pub lines: VecDeque<String>,
    pub dropped: u64,
}

impl MessageLog {
    pub fn push(&mut self, line: String, capacity: usize) {
        self.lines.push_back(line);
        while self.lines.len() > capacity {
            self.lines.pop_front();
            self.dropped += 1;
        }
    }
}

/// Settings shared by every backend.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Total connections (jobs + sync calls).
    pub max_size: u32,
    /// Check each connection with a round-trip when it leaves the pool.
    pub test_on_checkout: bool,
    /// How long a caller waits for a free connection before
    /// RESOURCE_EXHAUSTED.
    pub checkout_timeout: Duration,
    /// How long opening a new connection may take.
    pub connect_timeout: Duration,
    /// Close connections idle for longer than this.
    pub idle_timeout: Duration,
    /// How long a cancelled statement may run on before its session is
    /// ended from another connection (`--cancel-grace`).
    pub cancel_grace: Duration,
    /// Most rows read from one cursor or set-returning function.
    pub max_cursor_rows: usize,
    /// Most messages (notices, DBMS_OUTPUT lines) kept per call.
    pub max_messages: usize,
    /// How often Oracle's V$SESSION_LONGOPS is read for a running call.
    pub progress_interval: Duration,
    /// Whether routines that resolve into a system schema may be called
    /// (`--allow-system-schemas`).
    pub allow_system_schemas: bool,
}

/// What ListProcedures asks of the catalog.
#[derive(Debug, Clone, Default)]
pub struct CatalogQuery {
    /// Only this schema (or Oracle package), folded as the backend folds
    /// names.
    pub schema: Option<crate::name::Identifier>,
    /// After this entry's `position`; from the start when unset.
    pub after: Option<String>,
    /// At most this many entries.
    pub limit: usize,
}

/// One read of the catalog: entries in order, each with its position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogPage {
    pub entries: Vec<CatalogEntry>,
    /// Whether the catalog holds more after the last entry.
    pub more: bool,
}

impl CatalogPage {
    /// The page of `limit` entries from a read of `limit + 1`: an extra
    /// entry only says that the catalog holds more.
    pub fn from_read(mut entries: Vec<CatalogEntry>, limit: usize) -> Self {
        let more = entries.len() > limit;
        entries.truncate(limit);
        Self { entries, more }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// Where the next read starts after this entry (backend-defined).
    pub position: String,
    /// Its name, exactly, for the allowlist and the policy.
    pub name: ProcedureName,
    pub description: ProcedureDescription,
}

/// The signature of a procedure, as DescribeProcedure reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcedureDescription {
    pub procedure: String,
    pub params: Vec<ParamDescription>,
    pub returns: Option<ValueType>,
    pub returns_db_type: String,
    /// Which overload `params` describe, its id; empty when there is only
    /// one.
    pub overload: String,
    /// The ids of every overload of the name; empty when there is only one.
    pub overloads: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamDescription {
    pub name: String,
    pub direction: Direction,
    pub value_type: Option<ValueType>,
    pub db_type: String,
    pub has_default: bool,
}

/// A database that runs stored procedures.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs the call. Before returning, the connection is back in the pool in
    /// a clean state, or discarded. Dropping the future mid-call cancels the
    /// statement in the database.
    async fn execute(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        tag: &SessionTag,
    ) -> Result<Outputs>;

    /// Runs the call as [`Backend::execute`] does, but hands the rows of
    /// every cursor or set output (and of a set-returning function's
    /// result) to `rows` as the database produces them, in batches, with no
    /// row cap; the outputs returned hold the rest. A backend that cannot
    /// read its results in chunks says so before anything runs.
    async fn execute_stream(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        rows: &RowSink,
        tag: &SessionTag,
    ) -> Result<Outputs> {
        let _ = (call, progress, interrupt, rows, tag);
        Err(Error::Unimplemented(format!(
            "ExecuteStream is not available on {} yet; nothing was run: use ExecuteSync \
             (cursor rows are capped at --max-cursor-rows) or SubmitAsync",
            self.kind()
        )))
    }

    /// Reads a procedure's signature from the catalog: of the overload
    /// `overload` names, else of the first.
    async fn describe(
        &self,
        name: &ProcedureName,
        overload: Option<&str>,
    ) -> Result<ProcedureDescription>;

    /// A page of the procedures and functions the gateway's user can
    /// execute, in a stable order, from one catalog read.
    async fn list_procedures(&self, query: &CatalogQuery) -> Result<CatalogPage> {
        let _ = query;
        Err(Error::Unimplemented(format!(
            "ListProcedures is not available on {} yet: use DescribeProcedure with a name",
            self.kind()
        )))
    }

    /// Checks that the database answers, waiting at most `timeout`.
    async fn ping(&self, timeout: Duration) -> Result<()>;

    /// Which database this is, for logs and health: `postgres`, `oracle`.
    fn kind(&self) -> &'static str;

    /// The call pool's connections now, for metrics.
    fn pool_state(&self) -> PoolState {
        PoolState::default()
    }
}

/// Whose a call is, as a DBA sees it on the database session while it runs:
/// PostgreSQL's `application_name`, Oracle's module, action and client
/// identifier. Put back when the session returns to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTag {
    /// `job <id>` or `sync <trace id or short id>`.
    pub action: String,
    /// The token's name or the JWT's subject; empty without authentication.
    pub owner: Arc<str>,
}

impl SessionTag {
    pub fn job(id: uuid::Uuid, owner: Arc<str>) -> SessionTag {
        SessionTag {
            action: format!("job {id}"),
            owner,
        }
    }

    /// A sync call (ExecuteSync, ExecuteStream), known by `id`: its trace
    /// id when it is traced, else a short random one that its log lines
    /// carry.
    pub fn sync(id: &str, owner: Arc<str>) -> SessionTag {
        SessionTag {
            action: format!("sync {id}"),
            owner,
        }
    }

    /// PostgreSQL's `application_name` for the call: `procgate job <id>`.
    pub fn application_name(&self) -> String {
        format!("procgate {}", self.action)
    }
}

/// The connections a backend's pool holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    pub idle: usize,
    pub busy: usize,
}

/// Opens the backend that the URL's scheme names. Does not wait for the
/// database: an unreachable database shows up in health, not as a start-up
/// failure.
pub fn connect(url: &str, settings: &BackendSettings) -> Result<Arc<dyn Backend>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "postgres" | "postgresql" => {
            Ok(Arc::new(postgres::PostgresBackend::connect(url, settings)?))
        }
        "oracle" => Ok(Arc::new(oracle::OracleBackend::connect(url, settings)?)),
        _ => Err(Error::InvalidArgument(format!(
            "unsupported database URL scheme {scheme:?}: use postgres://user:password@host:port/dbname \
             or oracle://user:password@host:port/service_name"
        ))),
    }
}

/// A URL with its password replaced, safe for logs: the one in the
/// authority (`user:secret@`) and any `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable database URL>".into();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_logs_keep_the_newest_lines() {
        let mut log = MessageLog::default();
        for i in 0..5 {
            log.push(format!("line {i}"), 3);
        }
        assert_eq!(log.lines, ["line 2", "line 3", "line 4"]);
        assert_eq!(log.dropped, 2);
        log.push("x".into(), 0);
        assert!(log.lines.is_empty());
        assert_eq!(log.dropped, 6);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cr%40t@db:5432/sales?sslmode=disable"),
            "postgres://app:***@db:5432/sales?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://db.local/sales"),
            "postgres://db.local/sales"
        );
        assert!(!redact_url("oracle://scott:tiger@tns").contains("tiger"));
        assert_eq!(
            redact_url("postgresql://app@db/x?user=app&Password=Sup3r!&sslmode=disable"),
            "postgresql://app@db/x?user=app&Password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://db:5432/x?password=s"),
            "postgresql://db:5432/x?password=***"
        );
    }

    #[test]
    fn unknown_schemes_are_refused_clearly() {
        let settings = BackendSettings {
            max_size: 1,
            test_on_checkout: true,
            max_messages: 10,
            progress_interval: Duration::from_secs(1),
            checkout_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            cancel_grace: Duration::from_secs(1),
            max_cursor_rows: 10,
            allow_system_schemas: false,
        };
        let err = connect("mysql://x", &settings).err().unwrap();
        assert!(err.to_string().contains("mysql"), "{err}");
    }
}
