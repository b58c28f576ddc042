//! The PostgreSQL connection pool: deadpool over tokio-postgres sessions.
//!
//! We manage sessions ourselves instead of using deadpool-postgres because
//! each one needs its own notice route: `RAISE NOTICE` arrives on the
//! connection's message stream, which the task that drives the connection
//! reads, and only the call that is using the session at that moment may
//! see it. Every session gets a [`NoticeRoute`] that the backend points at
//! the running call's progress sink and clears afterwards.
//!
//! A session is handed out again only while its connection is open, it is
//! not marked for discard (a cancelled or interrupted statement), and, when
//! it sat idle for a while, it answers a ping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};
use tracing::debug;

use crate::backend::Progress;
use crate::backend::postgres::{clean, notice};

pub type Pool = managed::Pool<Manager>;
pub type PooledSession = managed::Object<Manager>;

/// A session checked out for a call. Dropped while its statement runs (the
/// caller went away) or marked for discard, it leaves the pool at once: its
/// connection closes as soon as the statement returns, rather than waiting
/// in the idle list for the next checkout to find it unfit.
pub struct Checkout(Option<PooledSession>);

impl Checkout {
    pub fn new(session: PooledSession) -> Self {
        Self(Some(session))
    }
}

impl std::ops::Deref for Checkout {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.0
            .as_ref()
            .expect("a checkout holds its session until dropped")
    }
}

impl std::ops::DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut Session {
        self.0
            .as_mut()
            .expect("a checkout holds its session until dropped")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(session) = self.0.take()
            && (session.in_flight || session.discard)
        {
            drop(PooledSession::take(session));
        }
    }
}

/// A session that ran a statement this recently is not pinged again on
/// checkout (the idea of HikariCP's "alive bypass window"): the check costs
/// a round-trip, as much as a cheap call itself.
const VALIDATION_BYPASS: Duration = Duration::from_millis(500);

/// Prepared statements kept per session; past it the cache starts over.
const MAX_STATEMENTS: usize = 256;

/// Which server process a session is: its pid, and when that process
/// started, since a pid is reused once its process ends.
#[derive(Clone, Debug)]
pub struct ServerProcess {
    pub pid: i32,
    pub started: String,
}

/// One pooled connection and what procgate knows about its state.
pub struct Session {
    pub client: Client,
    /// The server process behind it, for ending it from another connection
    /// when a statement ignores its cancels.
    pub process: ServerProcess,
    /// Set once its connection has closed (the task that drives it ended).
    pub closed: Arc<AtomicBool>,
    pub notices: NoticeRoute,
    /// Set while a call's statement runs: a session that comes back with it
    /// set was abandoned mid-statement (its caller's future was dropped).
    pub in_flight: bool,
    /// Set for good when the session's state is unknown (a cancel was sent,
    /// a ROLLBACK failed, a ping went unanswered).
    pub discard: bool,
    /// When a statement last succeeded on it.
    pub last_used: Instant,
    /// It served a call: the next one must reset it first.
    pub needs_reset: bool,
    /// Statements a procedure PREPAREd, to deallocate with the next reset.
    pub deallocate: Vec<String>,
    /// Set by the connection's task when the server ended the session with
    /// a FATAL that answered no request: then no request still waiting was
    /// ever written to the server.
    ended_unasked: Arc<AtomicBool>,
    statements: HashMap<String, Statement>,
    release: Option<Statement>,
    /// The text of `release` for this session's application_name.
    release_sql: Arc<str>,
}

impl Session {
    /// The statement for `sql` when this session prepared it before: later
    /// calls skip parsing and analysis.
    pub fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements.get(sql).cloned()
    }

    /// Prepares `sql` and keeps it for the session's later calls. Its
    /// parameter types are the server's inference.
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let statement = self.client.prepare(sql).await?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Whether the session has everything a call needs prepared.
    pub fn has_release(&self) -> bool {
        self.release.is_some()
    }

    /// The release statement (`clean::release`), prepared once per session.
    pub async fn release(&mut self) -> Result<Statement, tokio_postgres::Error> {
        if let Some(release) = &self.release {
            return Ok(release.clone());
        }
        let release = self.client.prepare(&self.release_sql).await?;
        self.release = Some(release.clone());
        Ok(release)
    }

    /// Whether the server ended the session with a FATAL that answered no
    /// request (pg_terminate_backend on an idle session): then every
    /// request that failed because the connection closed was never sent.
    /// tokio-postgres reads before it writes, so a FATAL already there is
    /// seen before a waiting request is written, and one that comes after
    /// a write answers that write instead.
    pub fn ended_unasked(&self) -> bool {
        self.ended_unasked.load(Ordering::SeqCst)
    }

    /// Resets the session now, when it served a call, in a round trip of
    /// its own: for the catalog lookups and prepares that must not run with
    /// what the previous caller left (its search_path, its role). A call's
    /// own reset travels pipelined with it instead.
    pub async fn reset_now(&mut self) -> Result<(), tokio_postgres::Error> {
        if !self.needs_reset {
            return Ok(());
        }
        let sql = clean::reset(&self.deallocate);
        if let Err(e) = self.client.batch_execute(&sql).await {
            self.discard = true;
            return Err(e);
        }
        self.needs_reset = false;
        self.deallocate.clear();
        Ok(())
    }

    /// Forgets a statement that failed, in case the failure was its own.
    pub fn forget(&mut self, sql: &str) {
        self.statements.remove(sql);
    }
}

/// Where the notices of one session go right now.
#[derive(Clone, Default)]
pub struct NoticeRoute(Arc<Mutex<Option<Arc<dyn Progress>>>>);

impl NoticeRoute {
    /// Sends this session's notices to `progress` until the guard drops.
    pub fn route_to(&self, progress: Arc<dyn Progress>) -> RouteGuard {
        *self.0.lock().expect("notice route lock") = Some(progress);
        RouteGuard(self.clone())
    }

    fn deliver(&self, notice: &DbError) {
        let target = self.0.lock().expect("notice route lock").clone();
        if let Some(progress) = target {
            notice::deliver(notice.message(), progress.as_ref());
        }
    }
}

pub struct RouteGuard(NoticeRoute);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        *(self.0).0.lock().expect("notice route lock") = None;
    }
}

pub struct Manager {
    config: tokio_postgres::Config,
    /// Ping a session idle for longer than VALIDATION_BYPASS on checkout.
    test_on_checkout: bool,
    /// How long that ping may take.
    ping_timeout: Duration,
    /// Sessions idle for longer are closed instead of handed out.
    idle_timeout: Duration,
    release_sql: Arc<str>,
}

impl Manager {
    pub fn new(
        config: tokio_postgres::Config,
        test_on_checkout: bool,
        ping_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let home = config.get_application_name().unwrap_or_default();
        Self {
            release_sql: clean::release(home).into(),
            config,
            test_on_checkout,
            ping_timeout,
            idle_timeout,
        }
    }
}

impl managed::Manager for Manager {
    type Type = Session;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Session, tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let notices = NoticeRoute::default();
        let route = notices.clone();
        let ended_unasked = Arc::new(AtomicBool::new(false));
        let ended = ended_unasked.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let closing = closed.clone();
        // Drives the connection: every request and response passes through
        // this task. It ends when the connection closes, which is what
        // `Client::is_closed` then reports.
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notice(notice))) => route.deliver(&notice),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        // A database error here answered no request (those
                        // go to the request): the server ended the session.
                        if clean::is_session_terminated(&e) {
                            ended.store(true, Ordering::SeqCst);
                        }
                        debug!(error = %e, "a PostgreSQL session closed");
                        break;
                    }
                    None => break,
                }
            }
            closing.store(true, Ordering::SeqCst);
        });
        let row = client
            .query_one(
                "SELECT pg_backend_pid(), backend_start::text FROM pg_stat_activity \
                 WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        let process = ServerProcess {
            pid: row.get(0),
            started: row.get(1),
        };
        Ok(Session {
            client,
            process,
            closed,
            notices,
            in_flight: false,
            discard: false,
            last_used: Instant::now(),
            needs_reset: false,
            deallocate: Vec::new(),
            ended_unasked,
            statements: HashMap::new(),
            release: None,
            release_sql: self.release_sql.clone(),
        })
    }

    async fn recycle(
        &self,
        session: &mut Session,
        metrics: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        if session.discard || session.in_flight {
            return Err(RecycleError::message("discarded after a cancel or failure"));
        }
        if session.client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        if metrics.last_used() > self.idle_timeout {
            return Err(RecycleError::message("idle for longer than --idle-timeout"));
        }
        if self.test_on_checkout && session.last_used.elapsed() >= VALIDATION_BYPASS {
            match tokio::time::timeout(self.ping_timeout, session.client.simple_query("")).await {
                Ok(Ok(_)) => session.last_used = Instant::now(),
                Ok(Err(e)) => return Err(RecycleError::Backend(e)),
                Err(_) => return Err(RecycleError::message("did not answer a ping in time")),
            }
        }
        Ok(())
    }
}
