//! Ending a session whose statement ignores its break.
//!
//! Oracle code can be blocked where a break does not reach it (a remote
//! call, a wait the break cannot interrupt). After `--cancel-grace`, from a
//! connection of its own, procgate runs `ALTER SYSTEM CANCEL SQL` on the
//! session, and then, if the statement still runs,
//! `ALTER SYSTEM KILL SESSION … IMMEDIATE`. Both need the ALTER SYSTEM
//! privilege, and finding the session needs SELECT on V_$SESSION unless its
//! id was read for the progress poller; when the gateway's user lacks them,
//! the call's messages say which grant is missing, and the statement is
//! left to run. The connection is marked for discard either way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::session::SessionId;
use super::{BreakSlot, Running};
use crate::backend::{Progress, Terminate};

/// How long CANCEL SQL is given before the session is killed.
const CANCEL_SQL_SETTLE: Duration = Duration::from_secs(2);

const FIND_SESSION: &str =
    "SELECT sid, serial# FROM v$session WHERE module = 'procgate' AND action = :1";

/// ORA-00942 (no such view for this user) and ORA-01031 (insufficient
/// privileges): a grant is missing.
const NOT_GRANTED: [i32; 2] = [942, 1031];

/// What ends the statement in `slot` after `grace`.
pub fn terminator(
    connector: &Arc<oracle::Connector>,
    slot: &BreakSlot,
    action: &str,
    grace: Duration,
    progress: &Arc<dyn Progress>,
) -> Terminate {
    let (connector, slot, action, progress) = (
        connector.clone(),
        slot.clone(),
        action.to_string(),
        progress.clone(),
    );
    let watched = slot.clone();
    Terminate::after(grace, move || {
        let (connector, slot, action, progress) = (
            connector.clone(),
            slot.clone(),
            action.clone(),
            progress.clone(),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                end(&connector, &slot, &action, grace, progress.as_ref())
            })
            .await
            .unwrap_or(false)
        }
    })
    .settled_when(move || !running(&watched))
}

/// Whether the statement is still running: its connection is in the slot.
fn running(slot: &BreakSlot) -> bool {
    slot.lock().expect("break slot lock").is_some()
}

/// True once the statement stopped or its session is gone.
fn end(
    connector: &oracle::Connector,
    slot: &BreakSlot,
    action: &str,
    grace: Duration,
    progress: &dyn Progress,
) -> bool {
    let Some(Running {
        discard,
        session: known,
        ..
    }) = slot.lock().expect("break slot lock").clone()
    else {
        return true;
    };
    // Never pooled again, whatever comes of this.
    discard.store(true, Ordering::SeqCst);
    let grace = humantime::format_duration(grace);
    let say = |what: String| {
        progress.message(format!(
            "the procedure did not stop on cancel within {grace}: {what}"
        ))
    };
    let missing_grant = |e: &oracle::Error| {
        e.db_error()
            .is_some_and(|db| NOT_GRANTED.contains(&db.code()))
    };
    let conn = match connector.connect() {
        Ok(conn) => conn,
        Err(e) => {
            say(format!(
                "procgate could not connect to end its session: {e}"
            ));
            return false;
        }
    };
    let session = match known {
        Some(session) => session,
        None => match conn.query_row_as::<(i64, i64)>(FIND_SESSION, &[&action]) {
            Ok((sid, serial)) => SessionId { sid, serial },
            Err(e) if missing_grant(&e) => {
                say(
                    "procgate cannot find its session to end it: the gateway's user needs \
                     GRANT SELECT ON V_$SESSION (see docs/oracle.md)"
                        .into(),
                );
                return false;
            }
            Err(e) => {
                say(format!("procgate could not find its session: {e}"));
                return false;
            }
        },
    };
    let target = format!("'{}, {}'", session.sid, session.serial);
    let cancel_sql = format!("ALTER SYSTEM CANCEL SQL {target}");
    match conn.execute(&cancel_sql, &[]) {
        Ok(_) => {
            let asked = Instant::now();
            while running(slot) && asked.elapsed() < CANCEL_SQL_SETTLE {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !running(slot) {
                say(format!("procgate cancelled its SQL ({cancel_sql})"));
                return true;
            }
        }
        Err(e) if missing_grant(&e) => {
            say(
                "procgate cannot end its session: the gateway's user needs the ALTER SYSTEM \
                 privilege for ALTER SYSTEM CANCEL SQL and KILL SESSION (see docs/oracle.md)"
                    .into(),
            );
            return false;
        }
        // Before 18c there is no CANCEL SQL: KILL SESSION alone.
        Err(_) => {}
    }
    let kill = format!("ALTER SYSTEM KILL SESSION {target} IMMEDIATE");
    match conn.execute(&kill, &[]) {
        Ok(_) => {
            say(format!("procgate ended its database session ({kill})"));
            true
        }
        Err(e) if missing_grant(&e) => {
            say(
                "procgate cannot end its session: the gateway's user needs the ALTER SYSTEM \
                 privilege for KILL SESSION (see docs/oracle.md)"
                    .into(),
            );
            false
        }
        Err(e) => {
            say(format!("procgate could not end its session ({kill}): {e}"));
            false
        }
    }
}
