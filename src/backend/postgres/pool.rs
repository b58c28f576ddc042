//! The PostgreSQL connection pool: r2d2 over the blocking `postgres` client.
//!
//! We manage connections ourselves instead of using r2d2_postgres because
//! each connection needs its own notice route: `RAISE NOTICE` arrives through
//! a callback fixed when the connection is opened, and only the job that is
//! using the connection at that moment should see it. Every connection gets a
//! [`NoticeRoute`] that the backend points at the running call's progress
//! sink and clears afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::error::DbError;
use postgres::types::Type;
use postgres::{Client, NoTls, Statement};

use crate::backend::Progress;
use crate::backend::postgres::notice;

pub type Pool = r2d2::Pool<Manager>;

/// A connection that ran a statement this recently is not pinged again on
/// checkout (the idea of HikariCP's "alive bypass window"): the check costs
/// a round-trip, as much as a cheap call itself.
const VALIDATION_BYPASS: Duration = Duration::from_millis(500);

/// Prepared statements kept per connection; past it the cache starts over.
const MAX_STATEMENTS: usize = 256;

/// A pooled client plus the route its notices take.
pub struct Connection {
    pub client: Client,
    pub notices: NoticeRoute,
    /// Set when the session may be left in an unknown state (a failed
    /// ROLLBACK); the pool then drops it instead of reusing it.
    pub discard: bool,
    /// When a statement last succeeded on it.
    pub last_used: Instant,
    statements: HashMap<String, Statement>,
}

impl Connection {
    /// The statement for `sql` with `params` text parameters, prepared once
    /// per connection: later calls skip parsing and analysis.
    pub fn prepared(&mut self, sql: &str, params: usize) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare_typed(sql, &vec![Type::TEXT; params])?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Forgets a statement that failed, in case the failure was its own.
    pub fn forget(&mut self, sql: &str) {
        self.statements.remove(sql);
    }
}

/// Where the notices of one connection go right now.
#[derive(Clone, Default)]
pub struct NoticeRoute(Arc<Mutex<Option<Arc<dyn Progress>>>>);

impl NoticeRoute {
    /// Sends this connection's notices to `progress` until the guard drops.
    pub fn route_to(&self, progress: Arc<dyn Progress>) -> RouteGuard {
        *self.0.lock().expect("notice route lock") = Some(progress);
        RouteGuard(self.clone())
    }

    fn deliver(&self, notice: DbError) {
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
    config: postgres::Config,
}

impl Manager {
    pub fn new(config: postgres::Config) -> Self {
        Self { config }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Connection, postgres::Error> {
        let notices = NoticeRoute::default();
        let route = notices.clone();
        let mut config = self.config.clone();
        config.notice_callback(move |notice| route.deliver(notice));
        let client = config.connect(NoTls)?;
        Ok(Connection {
            client,
            notices,
            discard: false,
            last_used: Instant::now(),
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), postgres::Error> {
        if conn.last_used.elapsed() < VALIDATION_BYPASS {
            return Ok(());
        }
        conn.client.simple_query("")?;
        conn.last_used = Instant::now();
        Ok(())
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.discard || conn.client.is_closed()
    }
}
