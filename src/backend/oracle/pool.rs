//! The Oracle connection pool: r2d2 over r2d2-oracle's connection manager.
//!
//! Each connection is held in an `Arc` so that a cancel can call
//! `break_execution` on it from another thread while the statement runs
//! (the oracle crate's `Connection` is `Sync` for exactly this). A
//! connection whose break failed is marked for discard: its state is
//! unknown, so the pool drops it instead of handing it out again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use r2d2::ManageConnection;
use r2d2_oracle::OracleConnectionManager;

pub type Pool = r2d2::Pool<Manager>;

pub struct Connection {
    pub conn: Arc<oracle::Connection>,
    pub discard: Arc<AtomicBool>,
}

pub struct Manager {
    inner: OracleConnectionManager,
}

impl Manager {
    pub fn new(connector: oracle::Connector) -> Self {
        Self {
            inner: OracleConnectionManager::from_connector(connector),
        }
    }
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = oracle::Error;

    fn connect(&self) -> Result<Connection, oracle::Error> {
        Ok(Connection {
            conn: Arc::new(self.inner.connect()?),
            discard: Arc::default(),
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), oracle::Error> {
        conn.conn.ping()
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.discard.load(Ordering::SeqCst)
            || !matches!(conn.conn.status(), Ok(oracle::ConnStatus::Normal))
    }
}
