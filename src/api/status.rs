//! The one map from procgate errors to gRPC statuses.
//!
//! Both matches are exhaustive with no `_` arm: a new error variant or
//! database error kind does not compile until someone decides its code here.
//! The database's own code goes in the `procgate-db-code` trailer so that
//! clients can branch on it without parsing messages.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::{DbErrorKind, Error};

/// The trailer that carries the database's code (`P0001`, `ORA-01403`).
pub const DB_CODE_TRAILER: &str = "procgate-db-code";

pub fn code_of(error: &Error) -> Code {
    match error {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::ProcedureNotFound(_)
        | Error::JobNotFound(_)
        | Error::ScheduleNotFound(_)
        | Error::ResultNotFound(_) => Code::NotFound,
        Error::OutOfRange(_) => Code::OutOfRange,
        Error::WrongJobState(_) => Code::FailedPrecondition,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::NotAllowed(_) => Code::PermissionDenied,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::Exhausted(_) => Code::ResourceExhausted,
        Error::DeadlineExceeded(_) | Error::Expired(_) => Code::DeadlineExceeded,
        Error::Cancelled(_) | Error::Terminated { .. } => Code::Cancelled,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Interrupted(_) => Code::Aborted,
        Error::Unimplemented(_) => Code::Unimplemented,
        Error::Internal(_) => Code::Internal,
        Error::Database(db) => match db.kind {
            DbErrorKind::UserRaised => Code::FailedPrecondition,
            DbErrorKind::Conflict => Code::Aborted,
            DbErrorKind::UndefinedObject => Code::NotFound,
            DbErrorKind::InvalidValue => Code::InvalidArgument,
            DbErrorKind::Cancelled => Code::Cancelled,
            DbErrorKind::TimedOut => Code::DeadlineExceeded,
            DbErrorKind::ConnectionLost => Code::Unavailable,
            DbErrorKind::ResourceExhausted => Code::ResourceExhausted,
            DbErrorKind::PermissionDenied => Code::PermissionDenied,
            DbErrorKind::Other => Code::Internal,
        },
    }
}

/// The canonical upper-case name of a gRPC code, as the gRPC spec, grpcurl and
/// Python's `grpc.StatusCode` write it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let mut status = Status::new(code_of(&error), error.to_string());
        if let Some(code) = error.db_code()
            && let Ok(value) = MetadataValue::try_from(code)
        {
            status.metadata_mut().insert(DB_CODE_TRAILER, value);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DbError;

    #[test]
    fn database_errors_carry_their_code() {
        let status = Status::from(Error::Database(DbError {
            kind: DbErrorKind::UserRaised,
            code: "P0001".into(),
            message: "saldo insuficiente".into(),
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "saldo insuficiente");
        assert_eq!(status.metadata().get(DB_CODE_TRAILER).unwrap(), "P0001");
    }

    #[test]
    fn plain_errors_have_no_db_code() {
        let status = Status::from(Error::JobNotFound("x".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.metadata().get(DB_CODE_TRAILER).is_none());
    }
}
