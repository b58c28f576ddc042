//! Ending a session whose statement ignores its cancels.
//!
//! A PL/pgSQL block can catch `query_canceled` and go on, so a cancel
//! request alone may never stop it. After `--cancel-grace`, procgate opens a
//! connection of its own (the pool may be exhausted, and the session in
//! question is busy) and calls `pg_terminate_backend` on the session's
//! server process, named by its pid *and* its start time: a pid is reused
//! once its process ends, and a stale one must never end someone else's
//! session. What it did, or why it could not, goes to the call's messages.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;
use tracing::{info, warn};

use std::sync::atomic::Ordering;

use super::pool::{ServerProcess, Session};
use crate::backend::{Progress, Terminate};

/// The configuration of the connections that end sessions: the pool's,
/// under an application_name of their own. Made once, at start.
pub fn config_for_ending(pool: &tokio_postgres::Config) -> Arc<tokio_postgres::Config> {
    let mut config = pool.clone();
    config.application_name("procgate cancel");
    Arc::new(config)
}

const TERMINATE: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE pid = $1 AND backend_start::text = $2";

/// What ends the session's process after `grace`, from a new connection
/// made with `config` (see [`config_for_ending`]), reporting to `progress`.
/// Built for every call: it only clones `Arc`s.
pub fn terminator(
    config: &Arc<tokio_postgres::Config>,
    session: &Session,
    grace: Duration,
    progress: &Arc<dyn Progress>,
) -> Terminate {
    let closed = session.closed.clone();
    let (config, process, progress) = (config.clone(), session.process.clone(), progress.clone());
    Terminate::after(grace, move || {
        let (config, process, progress) = (config.clone(), process.clone(), progress.clone());
        async move { end(&config, &process, grace, progress.as_ref()).await }
    })
    // A session whose connection closed has nothing left to end.
    .settled_when(move || closed.load(Ordering::SeqCst))
}

/// True once the process is gone, ended here or before.
async fn end(
    config: &tokio_postgres::Config,
    process: &ServerProcess,
    grace: Duration,
    progress: &dyn Progress,
) -> bool {
    let grace = humantime::format_duration(grace);
    let ended = async {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(connection);
        let row = client
            .query_opt(TERMINATE, &[&process.pid, &process.started])
            .await?;
        Ok::<_, tokio_postgres::Error>(row.is_some())
    };
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5))
        * 2;
    match tokio::time::timeout(timeout, ended).await {
        Ok(Ok(found)) => {
            if found {
                info!(
                    pid = process.pid,
                    "ended a session whose statement ignored its cancel"
                );
                progress.message(format!(
                    "the procedure did not stop on cancel within {grace}: procgate ended its \
                     database session (pg_terminate_backend, pid {})",
                    process.pid
                ));
            }
            true
        }
        Ok(Err(e)) => {
            // tokio-postgres says only "db error" for the server's own.
            let why = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_string());
            warn!(pid = process.pid, error = %why, "ending a session that ignored its cancel failed; trying again");
            progress.message(format!(
                "the procedure did not stop on cancel within {grace}, and procgate could not end \
                 its database session (pid {}): {why}; it tries again",
                process.pid
            ));
            false
        }
        Err(_) => {
            warn!(
                pid = process.pid,
                "ending a session that ignored its cancel timed out"
            );
            progress.message(format!(
                "the procedure did not stop on cancel within {grace}, and procgate could not \
                 reach the database to end its session (pid {}); it tries again",
                process.pid
            ));
            false
        }
    }
}
