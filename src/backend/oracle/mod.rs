//! The Oracle backend: PL/SQL procedures and functions in anonymous blocks,
//! DBMS_OUTPUT as messages, V$SESSION_LONGOPS as progress,
//! `break_execution` as a hard cancel.
//!
//! One call = one pooled connection: resolve the name and read its
//! signature (ALL_ARGUMENTS, cached), build the block, enable DBMS_OUTPUT,
//! note the session's SID/SERIAL# for the progress poller, arm the interrupt
//! with `break_execution`, bound the call by the caller's deadline
//! (`call_timeout`), run, read OUT binds, cursors and implicit results, then
//! drain DBMS_OUTPUT. The Oracle client library is checked before the pool
//! is built, so a machine without Instant Client fails at start-up with one
//! clear message.
//!
//! The oracle crate blocks, so every call runs on a `spawn_blocking` thread
//! inside this backend and the async [`Backend`] it implements hides that
//! from the layers above. The call's [`Interrupt`] is watched on the tokio
//! side and breaks the statement through a clone of its connection, which
//! the blocking side publishes in a [`BreakSlot`] while the statement runs.
//! One that ignores the break for `--cancel-grace` has its session ended
//! from another connection (`terminate`).

mod block;
mod catalog;
pub(crate) mod client;
mod errors;
mod pool;
mod session;
mod terminate;
mod types;
pub mod url;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use oracle::sql_type::{OracleType, RefCursor};

use self::block::Block;
use self::catalog::Catalog;
use self::errors::classify;
use self::pool::{Connection, Manager, Pool};
use self::session::SessionId;
use crate::backend::{
    Backend, BackendSettings, CatalogEntry, CatalogPage, CatalogQuery, Interrupt, ParamDescription,
    Phase, ProcedureDescription, Progress, RowSink, SessionTag,
};
use crate::call::{Outputs, ProcedureCall, ValueType};
use crate::error::{DbErrorKind, Error, Result};
use crate::name::ProcedureName;

/// How long a looked-up signature is trusted.
const SIGNATURE_TTL: Duration = Duration::from_secs(5);

pub struct OracleBackend {
    inner: Arc<Inner>,
}

/// The blocking half: everything a call needs on its worker thread.
struct Inner {
    pool: Pool,
    /// For a connection outside the pool (ending a session).
    connector: Arc<oracle::Connector>,
    catalog: Catalog,
    settings: BackendSettings,
    /// Cleared after the first failed V$SESSION_LONGOPS read (missing grant).
    longops_readable: AtomicBool,
}

impl OracleBackend {
    /// Checks the client library, then builds the pool without waiting for
    /// the database.
    pub fn connect(url: &str, settings: &BackendSettings) -> Result<Self> {
        let target = url::parse(url, |name| std::env::var(name).ok())?;
        let version = client::check_client_library()?;
        info!(client = %version, connect = %target.connect_string, user = %target.user, "Oracle client library loaded");
        let connector =
            oracle::Connector::new(&target.user, &target.password, &target.connect_string);
        let pool = r2d2::Pool::builder()
            .max_size(settings.max_size)
            .min_idle(Some(0))
            .connection_timeout(settings.checkout_timeout)
            .idle_timeout(Some(settings.idle_timeout))
            .test_on_check_out(settings.test_on_checkout)
            .build_unchecked(Manager::new(connector.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                connector: Arc::new(connector),
                catalog: Catalog::new(SIGNATURE_TTL),
                settings: settings.clone(),
                longops_readable: AtomicBool::new(true),
            }),
        })
    }

    /// Runs `work` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .unwrap_or_else(|_| Err(Error::Internal("an Oracle worker thread panicked".into())))
    }
}

/// The statement that is running, for the interrupt to break or end.
#[derive(Clone)]
struct Running {
    conn: Arc<oracle::Connection>,
    discard: Arc<AtomicBool>,
    /// Its session, when it was read (for the progress poller).
    session: Option<session::SessionId>,
}

/// Holds the running statement while it runs.
type BreakSlot = Arc<Mutex<Option<Running>>>;

/// Breaks the statement in `slot`, if one runs; a connection whose break
/// fails is marked for discard.
async fn break_statement(slot: BreakSlot) {
    let Some(Running { conn, discard, .. }) = slot.lock().expect("break slot lock").clone() else {
        return;
    };
    let broken = tokio::task::spawn_blocking(move || conn.break_execution()).await;
    if !matches!(broken, Ok(Ok(()))) {
        warn!("break_execution failed; the connection will be discarded");
        discard.store(true, Ordering::SeqCst);
    }
}

impl Inner {
    fn checkout(&self, timeout: Duration) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool.get_timeout(timeout).map_err(|e| {
            if self.pool.state().connections >= self.pool.max_size() {
                Error::Exhausted(format!(
                    "all {} database connections are busy and none came free within {}",
                    self.pool.max_size(),
                    humantime::format_duration(timeout)
                ))
            } else {
                Error::Unavailable(format!("cannot reach Oracle: {e}"))
            }
        })
    }

    /// The session id for the progress poller, when V$SESSION_LONGOPS is
    /// readable at all.
    fn session_for_progress(&self, conn: &oracle::Connection) -> Option<SessionId> {
        if !self.longops_readable.load(Ordering::Relaxed) {
            return None;
        }
        session::session_id(conn)
            .map_err(|e| self.longops_unavailable(&e))
            .ok()
    }

    fn longops_unavailable(&self, error: &oracle::Error) {
        if self.longops_readable.swap(false, Ordering::Relaxed) {
            warn!(
                error = %error,
                "cannot read V$SESSION_LONGOPS; job progress falls back to phase milestones \
                 (GRANT SELECT ON V_$SESSION_LONGOPS, see docs/oracle.md)"
            );
        }
    }

    /// Reads progress from another connection until `stop` fires.
    fn poll_progress(
        &self,
        session: SessionId,
        progress: &dyn Progress,
        stop: std::sync::mpsc::Receiver<()>,
    ) {
        let failure =
            session::poll_progress(self.settings.progress_interval, stop, progress, || {
                match self.pool.try_get() {
                    Some(conn) => session::read_longops(&conn.conn, session),
                    None => Ok(None), // no connection free this tick; try the next
                }
            });
        if let Some(error) = failure {
            self.longops_unavailable(&error);
        }
    }
}

impl OracleBackend {
    /// Runs a call on a blocking thread, its statement broken when the
    /// interrupt fires; with `rows`, its REF CURSORs stream there.
    async fn call(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        rows: Option<RowSink>,
        tag: &SessionTag,
    ) -> Result<Outputs> {
        let slot = BreakSlot::default();
        let terminate = terminate::terminator(
            &self.inner.connector,
            &slot,
            &tag.action,
            self.inner.settings.cancel_grace,
            progress,
        );
        let work = {
            let (call, progress, interrupt, slot, tag) = (
                call.clone(),
                progress.clone(),
                interrupt.clone(),
                slot.clone(),
                tag.clone(),
            );
            self.blocking(move |inner| {
                inner.execute(&call, &progress, &interrupt, &slot, rows.as_ref(), &tag)
            })
        };
        interrupt
            .guard(work, move || break_statement(slot.clone()), terminate)
            .await?
    }
}

#[async_trait::async_trait]
impl Backend for OracleBackend {
    async fn execute(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        tag: &SessionTag,
    ) -> Result<Outputs> {
        self.call(call, progress, interrupt, None, tag).await
    }

    async fn execute_stream(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        rows: &RowSink,
        tag: &SessionTag,
    ) -> Result<Outputs> {
        self.call(call, progress, interrupt, Some(rows.clone()), tag)
            .await
    }

    async fn describe(
        &self,
        name: &ProcedureName,
        overload: Option<&str>,
    ) -> Result<ProcedureDescription> {
        let (name, overload) = (name.clone(), overload.map(String::from));
        self.blocking(move |inner| inner.describe(&name, overload.as_deref()))
            .await
    }

    async fn list_procedures(&self, query: &CatalogQuery) -> Result<CatalogPage> {
        let query = query.clone();
        self.blocking(move |inner| inner.list_procedures(&query))
            .await
    }

    async fn ping(&self, timeout: Duration) -> Result<()> {
        self.blocking(move |inner| inner.ping(timeout)).await
    }

    fn kind(&self) -> &'static str {
        "oracle"
    }

    fn pool_state(&self) -> crate::backend::PoolState {
        let state = self.inner.pool.state();
        crate::backend::PoolState {
            idle: state.idle_connections as usize,
            busy: state.connections.saturating_sub(state.idle_connections) as usize,
        }
    }
}

impl Inner {
    fn execute(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        slot: &BreakSlot,
        rows: Option<&RowSink>,
        tag: &SessionTag,
    ) -> Result<Outputs> {
        let conn = self.checkout(self.settings.checkout_timeout)?;
        progress.phase(Phase::ConnectionAcquired);
        // Sent with the session's next round trip: no round trip of its own.
        session::tag(&conn.conn, Some(tag));
        let routines = self.catalog.lookup(&conn.conn, &call.name)?;
        // Every overload of a name lives in one schema; checked before the
        // request is matched, so a refused routine's signature stays unsaid.
        crate::allow::check_resolved(
            self.settings.allow_system_schemas,
            &call.name,
            routines[0].schema(),
        )?;
        let (block, _) = block::plan(call, &routines)?;

        conn.conn
            .execute(session::ENABLE_OUTPUT, &[])
            .map_err(|e| classify(&e))?;
        let session = self.session_for_progress(&conn.conn);
        if let Some(deadline) = interrupt.deadline() {
            let left = deadline.saturating_duration_since(Instant::now());
            conn.conn
                .set_call_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| classify(&e))?;
        }

        let armed = Armed::new(slot, &conn, session);
        if interrupt.is_requested() {
            return Err(Error::Cancelled("cancelled before it started".into()));
        }
        progress.phase(Phase::Executing);
        let result = std::thread::scope(|scope| {
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            if let Some(session) = session {
                let progress = progress.as_ref();
                scope.spawn(move || self.poll_progress(session, progress, stopped));
            }
            let result = run_block(&conn, &block, self.settings.max_cursor_rows, rows);
            drop(stop);
            result
        });
        drop(armed);
        finish_session(
            &conn,
            progress.as_ref(),
            self.settings.max_messages,
            interrupt,
        );

        match result {
            Ok(outputs) => {
                progress.phase(Phase::OutputsFetched);
                Ok(outputs)
            }
            Err(e) => {
                if let Error::Database(db) = &e
                    && db.kind == DbErrorKind::UndefinedObject
                {
                    self.catalog.forget(&call.name);
                }
                Err(e)
            }
        }
    }

    fn describe(
        &self,
        name: &ProcedureName,
        overload: Option<&str>,
    ) -> Result<ProcedureDescription> {
        let conn = self.checkout(self.settings.checkout_timeout)?;
        let routines = self.catalog.lookup(&conn.conn, name)?;
        crate::allow::check_resolved(
            self.settings.allow_system_schemas,
            name,
            routines[0].schema(),
        )?;
        let routine = match overload {
            Some(id) => crate::backend::signature::overload_by_id(
                name,
                &routines,
                catalog::Routine::id,
                id,
            )?,
            None => &routines[0],
        };
        let ids = routines.iter().map(catalog::Routine::id).collect();
        Ok(description_of(routine, ids))
    }

    fn list_procedures(&self, query: &CatalogQuery) -> Result<CatalogPage> {
        let conn = self.checkout(self.settings.checkout_timeout)?;
        let schema = query.schema.as_ref().map(|s| s.folded_upper());
        let listed = catalog::list(
            &conn.conn,
            schema.as_deref(),
            self.settings.allow_system_schemas,
            query.after.as_deref(),
            query.limit + 1,
        )?;
        let entries = listed
            .into_iter()
            .map(|l| {
                let parts: Vec<&str> = l.parts.iter().map(String::as_str).collect();
                CatalogEntry {
                    name: ProcedureName::exact(&parts),
                    description: description_of(&l.routine, l.overloads),
                    position: l.position,
                }
            })
            .collect();
        Ok(CatalogPage::from_read(entries, query.limit))
    }

    fn ping(&self, timeout: Duration) -> Result<()> {
        let conn = self.checkout(timeout)?;
        conn.conn.ping().map_err(|e| classify(&e))
    }
}

/// A routine as DescribeProcedure and ListProcedures show it; `overloads`
/// are the ids of every overload of its name.
fn description_of(routine: &catalog::Routine, overloads: Vec<String>) -> ProcedureDescription {
    let natural = |data_type: &str| types::binding_of(data_type, None).map(|b| b.natural);
    ProcedureDescription {
        procedure: routine.qualified_name.clone(),
        params: routine
            .args
            .iter()
            .map(|a| ParamDescription {
                name: a.name.clone(),
                direction: a.direction,
                value_type: natural(&a.data_type),
                db_type: a.data_type.clone(),
                has_default: a.has_default,
            })
            .collect(),
        returns: routine
            .returns
            .as_deref()
            .map(|t| natural(t).unwrap_or(ValueType::String)),
        returns_db_type: routine.returns.clone().unwrap_or_default(),
        overload: if overloads.len() > 1 {
            routine.id()
        } else {
            String::new()
        },
        overloads: if overloads.len() > 1 {
            overloads
        } else {
            Vec::new()
        },
    }
}

/// Publishes a connection in the break slot while its statement runs.
struct Armed<'a>(&'a BreakSlot);

impl<'a> Armed<'a> {
    fn new(slot: &'a BreakSlot, conn: &Connection, session: Option<session::SessionId>) -> Self {
        *slot.lock().expect("break slot lock") = Some(Running {
            conn: conn.conn.clone(),
            discard: conn.discard.clone(),
            session,
        });
        Armed(slot)
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        *self.0.lock().expect("break slot lock") = None;
    }
}

/// Runs the block and reads everything it returned; with a sink, every row
/// of each REF CURSOR output goes to it instead, fetched by arrays of
/// [`types::FETCH_ROWS`].
fn run_block(
    conn: &Connection,
    block: &Block,
    max_rows: usize,
    sink: Option<&RowSink>,
) -> Result<Outputs> {
    let mut stmt = conn
        .conn
        .statement(&block.text)
        .fetch_array_size(types::FETCH_ROWS as u32)
        .build()
        .map_err(|e| classify(&e))?;
    for (i, bind) in block.binds.iter().enumerate() {
        stmt.bind(i + 1, bind).map_err(|e| classify(&e))?;
    }
    stmt.execute(&[]).map_err(|e| classify(&e))?;
    let mut outputs = Outputs::default();
    for output in &block.outputs {
        let streamed = sink.filter(|_| output.binding.oracle_type == OracleType::RefCursor);
        if let Some(sink) = streamed {
            let cursor: Option<RefCursor> =
                stmt.bind_value(output.position).map_err(|e| classify(&e))?;
            if let Some(mut cursor) = cursor {
                let name = output.name.as_deref().unwrap_or_default();
                let sent = types::stream(&mut cursor, name, max_rows, sink)
                    .map_err(|why| Error::Internal(format!("output {name:?}: {why}")))?;
                if !sent {
                    return Err(Error::Cancelled(
                        "the client went away; the rest of the cursor was not fetched".into(),
                    ));
                }
                continue;
            }
        }
        let value = types::decode(
            &types::OutBind(&stmt, output.position),
            &output.binding.oracle_type,
            output.binding.natural,
            output.wanted,
            max_rows,
        )
        .map_err(|why| {
            Error::Internal(format!(
                "output {}: {why}",
                output.name.as_deref().unwrap_or("(result)")
            ))
        })?;
        match &output.name {
            Some(name) => {
                outputs.values.insert(name.clone(), value);
            }
            None => outputs.return_value = Some(value),
        }
    }
    while let Some(mut cursor) = stmt.implicit_result().map_err(|e| classify(&e))? {
        let rows = types::fetch(&mut cursor, max_rows)
            .map_err(|why| Error::Internal(format!("implicit result: {why}")))?;
        outputs.implicit_results.push(rows);
    }
    Ok(outputs)
}

/// After the call: DBMS_OUTPUT lines become messages, the call timeout is
/// cleared. A session that cannot do either is discarded, not reused.
fn finish_session(
    conn: &Connection,
    progress: &dyn Progress,
    max_lines: usize,
    interrupt: &Interrupt,
) {
    // Untagged with the DBMS_OUTPUT read, the call's last round trip.
    session::tag(&conn.conn, None);
    match session::drain_output(&conn.conn, max_lines) {
        Ok((lines, extra)) => {
            for line in lines {
                progress.message(line);
            }
            if extra > 0 {
                progress.message(format!(
                    "[procgate] {extra} more DBMS_OUTPUT lines not kept"
                ));
            }
        }
        Err(e) => {
            warn!(error = %e, "reading DBMS_OUTPUT failed; discarding the connection");
            conn.discard.store(true, Ordering::SeqCst);
        }
    }
    if interrupt.deadline().is_some() && conn.conn.set_call_timeout(None).is_err() {
        conn.discard.store(true, Ordering::SeqCst);
    }
}
