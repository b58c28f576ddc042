//! Clean sessions: nothing a procedure did to its session reaches the next
//! caller of that pooled connection.
//!
//! A procedure can `set_config('statement_timeout', …, false)`, change the
//! search_path or its role, create temp tables, open cursors, PREPARE
//! statements, LISTEN, or take session-level advisory locks. `DISCARD ALL`
//! undoes all of that but also procgate's own prepared statements, so the
//! reset here is DISCARD ALL's list without `DEALLOCATE ALL`, in two parts:
//!
//! - [`release`], pipelined right after the call: advisory locks end with
//!   the call (an idle pooled session must not hold a lock another client
//!   waits for), and it reports whether the session LISTENs (then ended at
//!   once) and which statements the procedure PREPAREd (then deallocated
//!   with the next reset);
//! - [`reset`], pipelined before the next call on the session: settings,
//!   role and session authorization, cursors, temp tables, sequences.
//!
//! The call's [`SessionTag`](crate::backend::SessionTag) rides with the
//! reset (`SET application_name`, see [`tagged`]), and the release puts the
//! session's own name back, so that an idle pooled session shows no job.
//!
//! Neither costs a round trip of its own: both travel in the same write as
//! the call, and their answers in the same read. The reset being the first
//! message of a call also tells a dead session apart: a FATAL answer to it
//! (57P01–57P03) means the statement after it never ran.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::statement::quote_ident;

/// Run after every call, as a prepared statement. Every name is qualified:
/// it runs with the search_path the procedure may have left. Its last
/// column puts back `home`, the application_name the session connected
/// with (a literal: reading it back from pg_settings cost a third of the
/// sync calls' throughput).
pub fn release(home: &str) -> String {
    format!(
        "SELECT pg_catalog.pg_advisory_unlock_all(), \
         EXISTS (SELECT FROM pg_catalog.pg_listening_channels()), \
         ARRAY(SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql), \
         pg_catalog.set_config('application_name', {}, false)",
        literal(home)
    )
}

/// A string as an SQL literal; standard_conforming_strings is on in every
/// supported PostgreSQL, so only quotes are doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Run (as a simple query) when the release found LISTENs.
pub const UNLISTEN: &str = "UNLISTEN *";

/// What the release found.
pub struct Released {
    pub listening: bool,
    /// Statements the procedure PREPAREd, to deallocate with the next reset.
    pub prepared: Vec<String>,
}

impl Released {
    pub fn from_row(row: &Row) -> Result<Released, tokio_postgres::Error> {
        Ok(Released {
            listening: row.try_get(1)?,
            prepared: row.try_get(2)?,
        })
    }
}

/// The reset sent before a call on a session that served one before.
/// `prepared` are the statements to deallocate; they come last, so that
/// an error there (one deallocated meanwhile) leaves the rest reset.
pub fn reset(prepared: &[String]) -> String {
    let mut sql = String::from(
        "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES",
    );
    for name in prepared {
        sql.push_str("; DEALLOCATE ");
        sql.push_str(&quote_ident(name));
    }
    sql
}

/// The reset (when the session needs one) followed by the call's
/// `application_name`, as one simple-query batch sent with the call.
pub fn tagged(reset: Option<String>, application_name: &str) -> String {
    // application_name is printable ASCII of at most 63 bytes; ours are.
    let name: String = application_name
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(63)
        .collect();
    let set = format!("SET application_name = {}", literal(&name));
    match reset {
        Some(reset) => format!("{reset}; {set}"),
        None => set,
    }
}

/// Whether an error is the server ending the session (administrator
/// command, crash, shutdown): given to the first message of a call, it
/// proves that nothing after it ran.
pub fn is_session_terminated(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_undoes_what_discard_all_does_but_deallocate_all() {
        let plain = reset(&[]);
        for part in [
            "CLOSE ALL",
            "SET SESSION AUTHORIZATION DEFAULT",
            "RESET ALL",
            "DISCARD TEMP",
            "DISCARD SEQUENCES",
        ] {
            assert!(plain.contains(part), "{part}");
        }
        assert!(!plain.contains("DEALLOCATE"));
        let with = reset(&["mine".into(), r#"we"ird"#.into()]);
        assert!(
            with.ends_with(r#"; DEALLOCATE "mine"; DEALLOCATE "we""ird""#),
            "{with}"
        );
        assert!(release("procgate").contains("pg_advisory_unlock_all()"));
        assert!(release("it's").ends_with("set_config('application_name', 'it''s', false)"));
        assert_eq!(
            tagged(None, "procgate job x'y"),
            "SET application_name = 'procgate job x''y'"
        );
        assert!(
            tagged(Some(plain), "procgate sync 1")
                .ends_with("DISCARD SEQUENCES; SET application_name = 'procgate sync 1'")
        );
    }
}
