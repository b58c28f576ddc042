//! PostgreSQL errors → procgate errors, by SQLSTATE.
//!
//! The SQLSTATE travels with the error (it becomes `JobError.db_code` and the
//! `procgate-db-code` trailer); its class decides the kind.

use crate::error::{DbError, DbErrorKind, Error};

/// Classifies a driver error. Errors without a SQLSTATE are connection
/// problems (closed socket, I/O) or driver-side conversion failures.
pub fn classify(error: &tokio_postgres::Error) -> Error {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            message.push_str(&format!(" (hint: {hint})"));
        }
        shorten(&mut message);
        return Error::Database(DbError {
            kind: kind_of(code),
            code: code.to_string(),
            message,
        });
    }
    if error.is_closed()
        || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
    {
        return Error::Database(DbError {
            kind: DbErrorKind::ConnectionLost,
            code: String::new(),
            message: format!("lost the connection to PostgreSQL: {error}"),
        });
    }
    Error::Internal(format!("PostgreSQL driver error: {error}"))
}

/// The longest database message passed on: a message quotes the value it
/// refused, and a status message travels in a header that clients cap
/// (grpc-core at 16 KiB), so a huge bad value must not become a huge error.
const MAX_MESSAGE: usize = 1_000;

fn shorten(message: &mut String) {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (shortened)");
    }
}

/// The kind of a SQLSTATE.
pub fn kind_of(sqlstate: &str) -> DbErrorKind {
    use DbErrorKind as K;
    match sqlstate {
        // raise_exception, no_data_found, too_many_rows, assert_failure
        "P0001" | "P0002" | "P0003" | "P0004" => K::UserRaised,
        // deadlock_detected, lock_not_available, serialization_failure
        "40P01" | "55P03" | "40001" => K::Conflict,
        // undefined_function, undefined_object, invalid_schema_name
        "42883" | "42704" | "3F000" => K::UndefinedObject,
        "57014" => K::Cancelled,
        // admin_shutdown, crash_shutdown, cannot_connect_now
        "57P01" | "57P02" | "57P03" => K::ConnectionLost,
        "42501" => K::PermissionDenied,
        _ => match &sqlstate[..sqlstate.len().min(2)] {
            "08" => K::ConnectionLost,
            "22" => K::InvalidValue,
            "23" => K::UserRaised,
            "53" => K::ResourceExhausted,
            // program_limit_exceeded: too many array dimensions, a row too
            // big, a name too long — what the request asked for.
            "54" => K::InvalidValue,
            _ => K::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_MESSAGE, kind_of, shorten};

    #[test]
    fn long_messages_are_shortened_on_a_char_boundary() {
        let mut message = "é".repeat(MAX_MESSAGE);
        shorten(&mut message);
        assert!(message.len() < MAX_MESSAGE + 20, "{}", message.len());
        assert!(message.ends_with("… (shortened)"));
        let mut short = "fine".to_string();
        shorten(&mut short);
        assert_eq!(short, "fine");
    }
    use crate::error::DbErrorKind as K;

    #[test]
    fn sqlstates_map_to_kinds() {
        let cases = [
            ("P0001", K::UserRaised),
            ("23505", K::UserRaised),
            ("40P01", K::Conflict),
            ("55P03", K::Conflict),
            ("42883", K::UndefinedObject),
            ("22P02", K::InvalidValue),
            ("22003", K::InvalidValue),
            ("57014", K::Cancelled),
            ("57P01", K::ConnectionLost),
            ("08006", K::ConnectionLost),
            ("53300", K::ResourceExhausted),
            ("54000", K::InvalidValue),
            ("42501", K::PermissionDenied),
            ("42P01", K::Other),
            ("XX000", K::Other),
        ];
        for (code, kind) in cases {
            assert_eq!(kind_of(code), kind, "{code}");
        }
    }
}
