//! What happens around the call in the job's own session: DBMS_OUTPUT, and
//! progress read from V$SESSION_LONGOPS by a second connection.
//!
//! A PL/SQL procedure reports progress with
//! `DBMS_APPLICATION_INFO.SET_SESSION_LONGOPS`; the row it maintains in
//! V$SESSION_LONGOPS is keyed by the session's SID and SERIAL#, which are
//! read before the call. While the call runs, a poller thread queries the
//! view every `--oracle-progress-interval` from another pooled connection and
//! maps SOFAR/TOTALWORK to a percentage and MESSAGE to the progress message.
//! Without SELECT on the view, progress degrades to phase milestones after
//! one warning; the call itself never fails because of it.
//!
//! While it runs, the session says whose it is in V$SESSION: module
//! `procgate`, action `job <id>` (or `sync <id>`), client identifier the
//! owner. These are the driver's attributes, sent with the session's next
//! round trip, never in one of their own.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use oracle::Connection;
use oracle::sql_type::OracleType;

use crate::backend::{Progress, SessionTag};

/// Tags the session for a call, or (None) puts it back as an idle pooled
/// session shows it. Oracle's limits: module 48 bytes, action and client
/// identifier 64.
pub fn tag(conn: &Connection, tag: Option<&SessionTag>) {
    let cut = |text: &str, max: usize| -> String {
        let mut end = text.len().min(max);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    };
    let (action, owner) = match tag {
        Some(tag) => (cut(&tag.action, 64), cut(&tag.owner, 64)),
        None => (String::new(), String::new()),
    };
    // They only fail on a closed connection, which the call then reports.
    let _ = conn.set_module("procgate");
    let _ = conn.set_action(&action);
    let _ = conn.set_client_identifier(&owner);
}

/// The session running a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId {
    pub sid: i64,
    pub serial: i64,
}

const SESSION_ID: &str =
    "SELECT SYS_CONTEXT('USERENV', 'SID'), DBMS_DEBUG_JDWP.CURRENT_SESSION_SERIAL FROM DUAL";

pub fn session_id(conn: &Connection) -> oracle::Result<SessionId> {
    let (sid, serial) = conn.query_row_as::<(i64, i64)>(SESSION_ID, &[])?;
    Ok(SessionId { sid, serial })
}

const LONGOPS: &str = "
SELECT sofar, totalwork, message FROM (
    SELECT sofar, totalwork, message FROM v$session_longops
     WHERE sid = :1 AND serial# = :2 AND totalwork > 0
     ORDER BY last_update_time DESC)
 WHERE ROWNUM = 1";

/// One reading of V$SESSION_LONGOPS: (percent, message).
pub fn read_longops(
    conn: &Connection,
    session: SessionId,
) -> oracle::Result<Option<(u32, String)>> {
    let mut rows =
        conn.query_as::<(f64, f64, Option<String>)>(LONGOPS, &[&session.sid, &session.serial])?;
    match rows.next() {
        None => Ok(None),
        Some(row) => {
            let (sofar, totalwork, message) = row?;
            Ok(Some((
                percent(sofar, totalwork),
                message.unwrap_or_default(),
            )))
        }
    }
}

/// SOFAR/TOTALWORK as a whole percentage, 0–100.
pub fn percent(sofar: f64, totalwork: f64) -> u32 {
    if totalwork <= 0.0 || !sofar.is_finite() {
        return 0;
    }
    (sofar / totalwork * 100.0).clamp(0.0, 100.0) as u32
}

/// Polls until `stop` fires (or its sender is dropped). `read` takes one
/// reading; an error stops the polling and is returned for one warning.
pub fn poll_progress(
    interval: Duration,
    stop: Receiver<()>,
    progress: &dyn Progress,
    mut read: impl FnMut() -> oracle::Result<Option<(u32, String)>>,
) -> Option<oracle::Error> {
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return None,
        }
        match read() {
            Ok(Some((percent, message))) => {
                progress.report(percent, (!message.is_empty()).then_some(message))
            }
            Ok(None) => {}
            Err(e) => return Some(e),
        }
    }
}

pub const ENABLE_OUTPUT: &str = "BEGIN DBMS_OUTPUT.ENABLE(NULL); END;";

/// Drains DBMS_OUTPUT into one CLOB (lines joined by LF), at most `:2`
/// lines, counting the rest in `:3`.
const DRAIN_OUTPUT: &str = "
DECLARE
    line   VARCHAR2(32767);
    status INTEGER;
    kept   PLS_INTEGER := 0;
    extra  PLS_INTEGER := 0;
    buffer CLOB;
BEGIN
    LOOP
        DBMS_OUTPUT.GET_LINE(line, status);
        EXIT WHEN status <> 0;
        IF kept < :2 THEN
            buffer := buffer || line || CHR(10);
            kept := kept + 1;
        ELSE
            extra := extra + 1;
        END IF;
    END LOOP;
    DBMS_OUTPUT.DISABLE;
    :1 := buffer;
    :3 := extra;
END;";

/// The lines the call printed (at most `max_lines`), and how many more.
pub fn drain_output(conn: &Connection, max_lines: usize) -> oracle::Result<(Vec<String>, u64)> {
    let mut stmt = conn.statement(DRAIN_OUTPUT).build()?;
    let max = max_lines as i64;
    stmt.execute(&[&OracleType::CLOB, &max, &OracleType::Number(0, 0)])?;
    let buffer: Option<String> = stmt.bind_value(1)?;
    let extra: Option<i64> = stmt.bind_value(3)?;
    let lines = split_lines(buffer.as_deref().unwrap_or_default());
    Ok((lines, extra.unwrap_or(0).max(0) as u64))
}

fn split_lines(buffer: &str) -> Vec<String> {
    buffer
        .strip_suffix('\n')
        .unwrap_or(buffer)
        .split('\n')
        .filter(|_| !buffer.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Phase;
    use std::sync::Mutex;

    #[test]
    fn longops_become_percentages() {
        assert_eq!(percent(40.0, 100.0), 40);
        assert_eq!(percent(1.0, 3.0), 33);
        assert_eq!(percent(5.0, 0.0), 0);
        assert_eq!(percent(150.0, 100.0), 100);
    }

    #[test]
    fn output_lines_are_split() {
        assert_eq!(split_lines("a\nb\n"), ["a", "b"]);
        assert_eq!(split_lines("only\n"), ["only"]);
        assert!(split_lines("").is_empty());
        assert_eq!(split_lines("\n"), [""]);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u32, Option<String>)>>);

    impl Progress for Recorder {
        fn phase(&self, _: Phase) {}
        fn report(&self, percent: u32, message: Option<String>) {
            self.0.lock().unwrap().push((percent, message));
        }
        fn message(&self, _: String) {}
    }

    #[test]
    fn the_poller_reports_until_stopped_and_gives_up_on_errors() {
        let recorder = Recorder::default();
        let (stop, stopped) = std::sync::mpsc::channel();
        let mut readings = vec![Some((40, "Carga: 40 of 100".to_string())), None].into_iter();
        let result = poll_progress(
            Duration::from_millis(1),
            stopped,
            &recorder,
            || match readings.next() {
                Some(reading) => Ok(reading),
                None => {
                    stop.send(()).unwrap();
                    Ok(None)
                }
            },
        );
        assert!(result.is_none());
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [(40, Some("Carga: 40 of 100".to_string()))]
        );

        let (_stop, stopped) = std::sync::mpsc::channel::<()>();
        let failed = poll_progress(Duration::from_millis(1), stopped, &recorder, || {
            Err(oracle::Error::new(
                oracle::ErrorKind::Other,
                "ORA-00942: table or view does not exist",
            ))
        });
        assert!(failed.is_some());
    }
}
