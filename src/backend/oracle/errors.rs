//! Oracle errors → procgate errors, by ORA/PLS/DPI code.
//!
//! Oracle reports a failed PL/SQL block as ORA-06550 with the real cause on a
//! PLS line ("PLS-00201: identifier 'PKG.X' must be declared"), so the
//! message is searched for the PLS code too. The `ORA-nnnnn` code travels in
//! `db_code`; the message is Oracle's first meaningful line.

use crate::error::{DbError, DbErrorKind, Error};

/// Classifies a driver error.
pub fn classify(error: &oracle::Error) -> Error {
    match error.db_error() {
        Some(db) => from_parts(db.code(), db.message()),
        None => Error::Internal(format!("Oracle driver error: {error}")),
    }
}

/// Builds the procgate error of an Oracle code (0 for ODPI-C's own DPI-nnnn
/// errors, whose code is in the message) and message.
pub fn from_parts(code: i32, message: &str) -> Error {
    let db_code = if code > 0 {
        format!("ORA-{code:05}")
    } else {
        message
            .split(':')
            .next()
            .filter(|c| c.starts_with("DPI-"))
            .unwrap_or_default()
            .to_string()
    };
    let kind = kind_of(&db_code, message);
    Error::Database(DbError {
        kind,
        code: db_code,
        message: first_line(message),
    })
}

/// The first line that says something: for ORA-06550 the PLS line.
fn first_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let pls = message
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("PLS-"));
    pls.unwrap_or(first).to_string()
}

/// The kind of an `ORA-nnnnn` / `DPI-nnnn` code, looking into the message
/// for a PLS code when the block failed to compile.
pub fn kind_of(db_code: &str, message: &str) -> DbErrorKind {
    use DbErrorKind as K;
    let number: u32 = db_code
        .strip_prefix("ORA-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if db_code.starts_with("DPI-") {
        // DPI-1010 not connected, DPI-1080 closed by ORA-03113.
        return match db_code {
            "DPI-1010" | "DPI-1080" => K::ConnectionLost,
            _ => K::Other,
        };
    }
    match number {
        20_000..=20_999 => K::UserRaised,
        // no data found, unique / check / foreign key / not null violations
        1403 | 1 | 2290 | 2291 | 2292 | 1400 | 1407 => K::UserRaised,
        // deadlock, resource busy (NOWAIT), can't serialize, package state
        // discarded (retrying works)
        60 | 54 | 30006 | 8177 | 4068 | 4061 => K::Conflict,
        // user requested cancel
        1013 => K::Cancelled,
        // object does not exist
        4043 | 6564 => K::UndefinedObject,
        6550 => {
            if message.contains("PLS-00201") || message.contains("PLS-00302") {
                // identifier must be declared / component must be declared
                K::UndefinedObject
            } else if message.contains("PLS-00306") || message.contains("PLS-00307") {
                // wrong number or types of arguments / too many declarations
                K::InvalidValue
            } else {
                K::Other
            }
        }
        // invalid number, value errors, bad dates, value too large
        1722 | 6502 | 1438 | 12899 | 1830 | 1840 | 1841 | 1843 | 1847 | 1858 | 1861 => {
            K::InvalidValue
        }
        // end-of-file on channel, not connected, connection lost, listener
        // errors, shutdown in progress, session killed, timeouts
        3113 | 3114 | 3135 | 3136 | 12541 | 12514 | 12505 | 12170 | 12537 | 12545 | 12547
        | 1033 | 1034 | 1089 | 1090 | 1092 | 28 | 2396 | 1017 => K::ConnectionLost,
        // out of memory, temp space, sessions, processes, listener busy
        4030 | 4031 | 4036 | 1652 | 1653 | 1654 | 18 | 20 | 12516 | 12519 | 12520 => {
            K::ResourceExhausted
        }
        1031 | 1045 | 29_471 => K::PermissionDenied,
        _ => K::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DbErrorKind as K;

    #[test]
    fn real_oracle_errors_are_classified() {
        let cases: &[(i32, &str, K)] = &[
            (
                20001,
                "ORA-20001: saldo insuficiente para la cuenta 42",
                K::UserRaised,
            ),
            (20999, "ORA-20999: custom", K::UserRaised),
            (1403, "ORA-01403: no data found", K::UserRaised),
            (
                1,
                "ORA-00001: unique constraint (APP.PK_T) violated",
                K::UserRaised,
            ),
            (
                60,
                "ORA-00060: deadlock detected while waiting for resource",
                K::Conflict,
            ),
            (
                54,
                "ORA-00054: resource busy and acquire with NOWAIT specified or timeout expired",
                K::Conflict,
            ),
            (
                8177,
                "ORA-08177: can't serialize access for this transaction",
                K::Conflict,
            ),
            (
                1013,
                "ORA-01013: user requested cancel of current operation",
                K::Cancelled,
            ),
            (
                6550,
                "ORA-06550: line 1, column 7:\nPLS-00201: identifier 'PKG_ETL.NOPE' must be declared\nORA-06550: line 1, column 7:\nPL/SQL: Statement ignored",
                K::UndefinedObject,
            ),
            (
                6550,
                "ORA-06550: line 1, column 7:\nPLS-00306: wrong number or types of arguments in call to 'SUMAR'",
                K::InvalidValue,
            ),
            (
                6550,
                "ORA-06550: line 3, column 1:\nPLS-00103: Encountered the symbol \"END\"",
                K::Other,
            ),
            (
                6564,
                "ORA-06564: object PKG_NOPE does not exist",
                K::UndefinedObject,
            ),
            (
                4043,
                "ORA-04043: object NOPE does not exist",
                K::UndefinedObject,
            ),
            (1722, "ORA-01722: invalid number", K::InvalidValue),
            (
                6502,
                "ORA-06502: PL/SQL: numeric or value error: character string buffer too small",
                K::InvalidValue,
            ),
            (
                1858,
                "ORA-01858: a non-numeric character was found where a numeric was expected",
                K::InvalidValue,
            ),
            (
                3113,
                "ORA-03113: end-of-file on communication channel",
                K::ConnectionLost,
            ),
            (
                3135,
                "ORA-03135: connection lost contact",
                K::ConnectionLost,
            ),
            (12541, "ORA-12541: TNS:no listener", K::ConnectionLost),
            (
                12514,
                "ORA-12514: TNS:listener does not currently know of service requested in connect descriptor",
                K::ConnectionLost,
            ),
            (
                28,
                "ORA-00028: your session has been killed",
                K::ConnectionLost,
            ),
            (
                1017,
                "ORA-01017: invalid username/password; logon denied",
                K::ConnectionLost,
            ),
            (
                4036,
                "ORA-04036: PGA memory used by the instance exceeds PGA_AGGREGATE_LIMIT",
                K::ResourceExhausted,
            ),
            (
                18,
                "ORA-00018: maximum number of sessions exceeded",
                K::ResourceExhausted,
            ),
            (
                1031,
                "ORA-01031: insufficient privileges",
                K::PermissionDenied,
            ),
            (942, "ORA-00942: table or view does not exist", K::Other),
            (
                0,
                "DPI-1080: connection was closed by ORA-3113",
                K::ConnectionLost,
            ),
            (
                0,
                "DPI-1047: Cannot locate a 64-bit Oracle Client library",
                K::Other,
            ),
        ];
        for (code, message, kind) in cases {
            let Error::Database(db) = from_parts(*code, message) else {
                panic!("not a database error");
            };
            assert_eq!(db.kind, *kind, "{message}");
        }
    }

    #[test]
    fn codes_and_messages_are_what_a_person_needs() {
        let Error::Database(db) = from_parts(
            6550,
            "ORA-06550: line 1, column 7:\nPLS-00201: identifier 'PKG_ETL.NOPE' must be declared\nORA-06550: line 1, column 7:\nPL/SQL: Statement ignored",
        ) else {
            panic!()
        };
        assert_eq!(db.code, "ORA-06550");
        assert_eq!(
            db.message,
            "PLS-00201: identifier 'PKG_ETL.NOPE' must be declared"
        );

        let Error::Database(db) =
            from_parts(1403, "ORA-01403: no data found\nORA-06512: at line 5")
        else {
            panic!()
        };
        assert_eq!(db.code, "ORA-01403");
        assert_eq!(db.message, "ORA-01403: no data found");

        let Error::Database(db) = from_parts(0, "DPI-1080: connection was closed by ORA-3113")
        else {
            panic!()
        };
        assert_eq!(db.code, "DPI-1080");
    }
}
