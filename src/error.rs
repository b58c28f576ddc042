//! The errors of procgate, classified by what the client should do about them.
//!
//! Every layer returns this one type; `api::status` maps each variant to a
//! gRPC code in a single exhaustive match, so adding a variant forces a
//! decision there. Database errors carry the database's own code (SQLSTATE or
//! `ORA-nnnnn`) and a kind decided by the backend that understood it, in the
//! way rust-oracle and tokio-postgres expose `DbError::code()` / `SqlState`.
//! Messages are written for people and never contain a Debug dump or a secret.

use crate::name::NameError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A malformed request: a bad name, a value that does not fit its type.
    #[error("{0}")]
    InvalidArgument(String),
    /// The procedure does not exist (or is not visible to the gateway's user).
    #[error("{0}")]
    ProcedureNotFound(String),
    /// No job has this id (or it expired).
    #[error("job {0} not found")]
    JobNotFound(String),
    /// No schedule has this id (or it is another owner's).
    #[error("{0}")]
    ScheduleNotFound(String),
    /// The job is in a state that does not allow the operation.
    #[error("{0}")]
    WrongJobState(String),
    /// A request_id already names another call's job (AIP-155).
    #[error("{0}")]
    AlreadyExists(String),
    /// The procedure is outside the `--allow` list.
    #[error("{0}")]
    NotAllowed(String),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The pending-job queue is full, or no connection came free in time.
    #[error("{0}")]
    Exhausted(String),
    /// The gRPC deadline passed; the statement was cancelled.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Cancelled by the client (CancelJob, or the caller went away).
    #[error("{0}")]
    Cancelled(String),
    /// Cancelled, and the procedure ignored the cancel for `--cancel-grace`:
    /// its session was ended from another connection.
    #[error("terminated after {}: the procedure did not stop on cancel", humantime::format_duration(*after))]
    Terminated { after: std::time::Duration },
    /// The database cannot be reached, or the gateway is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The instance running a job died (its lease expired) before the job
    /// ended: whether the procedure finished is unknown.
    #[error("{0}")]
    Interrupted(String),
    /// A job waited PENDING past its `expire_after` and never started.
    #[error("{0}")]
    Expired(String),
    /// The database reported an error while running the call.
    #[error("{0}")]
    Database(DbError),
    /// Asked of a backend that cannot do it (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// A job has no such result set, or its spooled rows are gone.
    #[error("{0}")]
    ResultNotFound(String),
    /// Past the end of something: a result's rows, the response size.
    #[error("{0}")]
    OutOfRange(String),
    /// A bug or an unexpected state in procgate itself.
    #[error("{0}")]
    Internal(String),
}

/// An error raised by the database, classified by the backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub kind: DbErrorKind,
    /// SQLSTATE (`P0001`) or `ORA-nnnnn`.
    pub code: String,
    pub message: String,
}

/// What a database error means for the caller; each backend maps its own
/// codes to these kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Raised on purpose by the procedure (PG P0001, ORA-20000..20999) or a
    /// business rule of the data (constraint violations, no data found).
    UserRaised,
    /// A lock could not be taken, a deadlock, a serialization failure.
    Conflict,
    /// The procedure, or a parameter of it, does not exist.
    UndefinedObject,
    /// A bound value was rejected by the database (bad format, out of range).
    InvalidValue,
    /// The statement was interrupted by a cancel request.
    Cancelled,
    /// The database's own timeout ended the statement (PostgreSQL's
    /// statement_timeout: 57014 without a cancel from procgate).
    TimedOut,
    /// The session or the server went away.
    ConnectionLost,
    /// The database ran out of something (memory, connections, disk).
    ResourceExhausted,
    /// The gateway's database user may not do this.
    PermissionDenied,
    /// Anything else: a bug in the procedure, an internal database error.
    Other,
}

impl Error {
    /// Whether this error says the database cannot be reached right now.
    pub fn means_database_down(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(db) => db.kind == DbErrorKind::ConnectionLost,
            _ => false,
        }
    }

    /// Whether trying the same call again may succeed: the database was
    /// unreachable or the connection lost (UNAVAILABLE), a deadlock, lock
    /// timeout or serialization failure (ABORTED), or the instance running
    /// it was lost (INTERRUPTED). Never a user error, a cancel or a deadline.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Interrupted(_) => true,
            Error::Database(db) => {
                matches!(db.kind, DbErrorKind::Conflict | DbErrorKind::ConnectionLost)
            }
            _ => false,
        }
    }

    /// The database's own code, when the error came from the database.
    pub fn db_code(&self) -> Option<&str> {
        match self {
            Error::Database(db) if !db.code.is_empty() => Some(&db.code),
            _ => None,
        }
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Database(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
