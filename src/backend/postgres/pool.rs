//! The PostgreSQL connection pool: r2d2 over the blocking `postgres` client.
//!
//! We manage connections ourselves instead of using r2d2_postgres because
//! each connection needs its own notice route: `RAISE NOTICE` arrives through
//! a callback fixed when the connection is opened, and only the job that is
//! using the connection at that moment should see it. Every connection gets a
//! [`NoticeRoute`] that the backend points at the running call's progress
//! sink and clears afterwards.

use std::sync::{Arc, Mutex};

use postgres::error::DbError;
use postgres::{Client, NoTls};

use crate::backend::Progress;
use crate::backend::postgres::notice;

pub type Pool = r2d2::Pool<Manager>;

/// A pooled client plus the route its notices take.
pub struct Connection {
    pub client: Client,
    pub notices: NoticeRoute,
    /// Set when the session may be left in an unknown state (a failed
    /// ROLLBACK); the pool then drops it instead of reusing it.
    pub discard: bool,
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
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.discard || conn.client.is_closed()
    }
}
