//! The PostgreSQL backend: procedures with `CALL`, functions with `SELECT`,
//! notices as progress, the cancel request as a hard cancel.
//!
//! It runs on tokio-postgres, on the tokio workers that serve the RPC: no
//! thread hand-off anywhere on the call path. One call = one pooled
//! session: look the signature up (cached), build the statement (prepared
//! once per session), route the session's notices to the call's progress
//! sink, run it under the call's [`Interrupt`] with the session's cancel
//! token, decode. A session whose statement was cancelled or abandoned is
//! never handed out again: a cancel request lands whenever the server gets
//! to it, perhaps on the next statement. A statement that ignores its
//! cancels for `--cancel-grace` has its session ended (`terminate`).

mod catalog;
mod clean;
mod decode;
mod errors;
mod exec;
mod json;
mod notice;
mod pool;
mod statement;
mod terminate;
mod types;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{PoolError, TimeoutType};
use tokio_postgres::NoTls;
use tracing::warn;

use self::catalog::{ArgMode, Catalog};
use self::errors::classify;
use self::pool::{Checkout, Manager, Pool, Session};
use crate::backend::signature;
use crate::backend::{
    Backend, BackendSettings, CatalogEntry, CatalogPage, CatalogQuery, Interrupt, ParamDescription,
    Phase, ProcedureDescription, Progress, RowSink, SessionTag,
};
use crate::call::{Outputs, ProcedureCall};
use crate::error::{DbErrorKind, Error, Result};
use crate::name::ProcedureName;

/// How long a looked-up signature is trusted.
const SIGNATURE_TTL: Duration = Duration::from_secs(5);

/// tokio-postgres's default keepalive idle time, the kernel's two hours.
const DRIVER_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// A silently dropped idle session is found within about a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

pub struct PostgresBackend {
    pool: Pool,
    /// For a connection outside the pool (ending a session).
    ending: Arc<tokio_postgres::Config>,
    catalog: Catalog,
    settings: BackendSettings,
}

impl PostgresBackend {
    /// Builds the pool without waiting for the database.
    pub fn connect(url: &str, settings: &BackendSettings) -> Result<Self> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::InvalidArgument(format!(
                "invalid PostgreSQL URL {}: {e}",
                crate::backend::redact_url(url)
            ))
        })?;
        config
            .connect_timeout(settings.connect_timeout)
            .application_name("procgate");
        // TCP keepalive finds idle sessions that a firewall dropped without
        // a word, unless the URL already tunes it (keepalives_idle=…).
        if config.get_keepalives_idle() == DRIVER_KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        let manager = Manager::new(
            config.clone(),
            settings.test_on_checkout,
            settings.connect_timeout,
            settings.idle_timeout,
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_size as usize)
            .wait_timeout(Some(settings.checkout_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Internal(format!("building the PostgreSQL pool: {e}")))?;
        Ok(Self {
            pool,
            ending: terminate::config_for_ending(&config),
            catalog: Catalog::new(SIGNATURE_TTL),
            settings: settings.clone(),
        })
    }

    /// The routines of a name a caller may reach: those in a system schema
    /// only with --allow-system-schemas. Decided before the request is
    /// matched against a signature, so that a refused routine's parameters
    /// are never described to the caller.
    fn reachable(
        &self,
        name: &ProcedureName,
        routines: Arc<Vec<catalog::Routine>>,
    ) -> Result<Arc<Vec<catalog::Routine>>> {
        let closed = |r: &catalog::Routine| crate::allow::is_system_schema(&r.schema);
        if self.settings.allow_system_schemas || !routines.iter().any(closed) {
            return Ok(routines);
        }
        let open: Vec<_> = routines.iter().filter(|r| !closed(r)).cloned().collect();
        if open.is_empty() {
            return Err(crate::allow::resolved_into_system_schema(
                name,
                &routines[0].schema,
            ));
        }
        Ok(Arc::new(open))
    }

    async fn checkout(&self, timeout: Duration) -> Result<Checkout> {
        let mut timeouts = self.pool.timeouts();
        timeouts.wait = Some(timeout);
        self.pool
            .timeout_get(&timeouts)
            .await
            .map(Checkout::new)
            .map_err(|e| match e {
                PoolError::Timeout(TimeoutType::Wait) => Error::Exhausted(format!(
                    "all {} database connections are busy and none came free within {}",
                    self.pool.status().max_size,
                    humantime::format_duration(timeout)
                )),
                PoolError::Timeout(_) => Error::Unavailable(format!(
                    "cannot reach PostgreSQL: connecting took longer than {}",
                    humantime::format_duration(self.settings.connect_timeout)
                )),
                PoolError::Backend(e) => {
                    Error::Unavailable(format!("cannot reach PostgreSQL: {}", classify(&e)))
                }
                PoolError::Closed
                | PoolError::NoRuntimeSpecified
                | PoolError::PostCreateHook(_) => {
                    Error::Unavailable(format!("the PostgreSQL pool is unusable: {e}"))
                }
            })
    }
}

/// Why an attempt at a call failed, and whether another may be made.
enum Failed {
    /// The server ended the session before the call was sent, or answered
    /// the reset in front of it with a FATAL: the statement never ran.
    BeforeTheCall(Error),
    Final(Error),
}

impl PostgresBackend {
    /// One attempt at a call, on one session; with `rows`, its cursors and
    /// sets are streamed there.
    async fn attempt(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        rows: Option<&RowSink>,
        tag: &SessionTag,
    ) -> std::result::Result<Outputs, Failed> {
        let mut session = self
            .checkout(self.settings.checkout_timeout)
            .await
            .map_err(Failed::Final)?;
        progress.phase(Phase::ConnectionAcquired);
        // A session that dies under the lookup or the prepare has run
        // nothing of the call either.
        let before_the_call = |e: &tokio_postgres::Error, session: &Session| {
            if clean::is_session_terminated(e) || (e.is_closed() && session.ended_unasked()) {
                Failed::BeforeTheCall(classify(e))
            } else {
                Failed::Final(classify(e))
            }
        };
        let routines = match self.catalog.cached(&call.name) {
            Some(routines) => routines,
            None => {
                if let Err(e) = session.reset_now().await {
                    return Err(before_the_call(&e, &session));
                }
                self.catalog
                    .lookup(&session.client, &call.name)
                    .await
                    .map_err(Failed::Final)?
            }
        };
        let routines = self
            .reachable(&call.name, routines)
            .map_err(Failed::Final)?;
        let (plan, routine) = statement::plan(call, &routines).map_err(Failed::Final)?;
        let cached = session.cached(&plan.sql);
        if (cached.is_none() || !session.has_release())
            && let Err(e) = session.reset_now().await
        {
            return Err(before_the_call(&e, &session));
        }
        let statement = match cached {
            Some(statement) => statement,
            None => match session.prepare(&plan.sql).await {
                Ok(statement) => statement,
                Err(e) => return Err(before_the_call(&e, &session)),
            },
        };
        let release = match session.release().await {
            Ok(release) => release,
            Err(e) => return Err(before_the_call(&e, &session)),
        };
        // Everything that can be checked before the call is, so that
        // nothing half-runs: the outputs can be returned, and the JSON of
        // arrays and composites fits their types.
        decode::check_outputs(&plan, &statement, call, routine).map_err(Failed::Final)?;
        let structured = plan
            .structured_binds(statement.params(), routine)
            .map_err(Failed::Final)?;
        let binds = structured.as_deref().unwrap_or(&plan.binds);
        // The tag travels with the reset, in the call's own write.
        let reset = session
            .needs_reset
            .then(|| clean::reset(&std::mem::take(&mut session.deallocate)));
        let reset = Some(clean::tagged(reset, &tag.application_name()));

        let _route = session.notices.route_to(progress.clone());
        let token = session.client.cancel_token();
        let terminate =
            terminate::terminator(&self.ending, &session, self.settings.cancel_grace, progress);
        progress.phase(Phase::Executing);
        // Until the statement returns, the session is not fit for reuse: if
        // this future is dropped mid-statement, the pool drops the session.
        session.in_flight = true;
        session.needs_reset = true;
        let ran = interrupt
            .guard(
                exec::run(
                    &session.client,
                    exec::Pipeline {
                        reset: reset.as_deref(),
                        plan: &plan,
                        binds,
                        statement: &statement,
                        release: &release,
                    },
                    call,
                    self.settings.max_cursor_rows,
                    rows.map(|sink| exec::Streaming { sink, interrupt }),
                ),
                move || {
                    let token = token.clone();
                    async move {
                        if let Err(e) = token.cancel_query(NoTls).await {
                            warn!(error = %e, "sending a cancel request to PostgreSQL failed");
                        }
                    }
                },
                terminate,
            )
            .await
            .map_err(Failed::Final)?;
        session.in_flight = false;
        // A cancel request travels on its own connection and lands whenever
        // the server gets to it, perhaps after this statement has returned:
        // the session it names must never run another call, or that call
        // would be cancelled instead.
        session.discard |= interrupt.is_requested() || ran.unfit || ran.reset.is_err();
        // The driver's buffers grow to the largest message a session
        // carried and never shrink: one that moved a big call is closed, not
        // pooled, so that its memory goes with it.
        let moved =
            call.approximate_size() + ran.outputs.as_ref().map_or(0, Outputs::approximate_size);
        session.discard |= moved > BIG_CALL_BYTES;
        // Pipelined messages run in order: a FATAL answer to the reset, or
        // a session ended before anything was written, means the call
        // never ran.
        let never_ran = match &ran.reset {
            Err(e) => clean::is_session_terminated(e) || (e.is_closed() && session.ended_unasked()),
            Ok(()) => {
                session.ended_unasked()
                    && matches!(&ran.outputs, Err(Error::Database(db))
                        if db.kind == DbErrorKind::ConnectionLost && db.code.is_empty())
            }
        };
        if never_ran {
            let error = match ran.outputs {
                Err(e) => e,
                Ok(_) => Error::Unavailable("the session ended before the call".into()),
            };
            return Err(Failed::BeforeTheCall(error));
        }
        match ran.released {
            Some(released) if released.listening => {
                // LISTENs end with the call; this costs a round trip only
                // after a procedure that LISTENed.
                if session.client.batch_execute(clean::UNLISTEN).await.is_err() {
                    session.discard = true;
                }
                session.deallocate = released.prepared;
            }
            Some(released) => session.deallocate = released.prepared,
            None => {}
        }
        match &ran.outputs {
            Ok(_) => session.last_used = std::time::Instant::now(),
            // The statement itself may be stale (the routine was replaced:
            // "cached plan must not change result type"): prepare it anew.
            Err(Error::Database(db))
                if matches!(db.kind, DbErrorKind::Other | DbErrorKind::UndefinedObject) =>
            {
                session.forget(&plan.sql)
            }
            Err(_) => {}
        }
        ran.outputs.map_err(Failed::Final)
    }
}

impl PostgresBackend {
    /// A call, retried once on another session when the first one ended
    /// before the statement ran (then nothing was streamed either).
    async fn call(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        rows: Option<&RowSink>,
        tag: &SessionTag,
    ) -> Result<Outputs> {
        let result = match self.attempt(call, progress, interrupt, rows, tag).await {
            // Once, on another session: the statement did not run.
            Err(Failed::BeforeTheCall(e)) => {
                warn!(error = %e, "the session ended before the call; retrying on another");
                self.attempt(call, progress, interrupt, rows, tag).await
            }
            other => other,
        };
        match result.map_err(|(Failed::BeforeTheCall(e) | Failed::Final(e))| e) {
            Ok(outputs) => {
                progress.phase(Phase::OutputsFetched);
                Ok(outputs)
            }
            Err(Error::Database(mut db)) => {
                if db.kind == DbErrorKind::UndefinedObject {
                    self.catalog.forget(&call.name);
                }
                // 57014 that procgate did not ask for: statement_timeout.
                if db.kind == DbErrorKind::Cancelled && !interrupt.is_requested() {
                    db.kind = DbErrorKind::TimedOut;
                }
                Err(Error::Database(db))
            }
            Err(e) => Err(e),
        }
    }
}

/// A routine as DescribeProcedure and ListProcedures show it; `overloads`
/// are the ids of every overload of its name.
fn description_of(routine: &catalog::Routine, overloads: Vec<String>) -> ProcedureDescription {
    let overloaded = overloads.len() > 1;
    let returns = (!routine.is_procedure && routine.return_type.base != "void").then(|| {
        if routine.returns_set {
            crate::call::ValueType::Cursor
        } else {
            types::value_type_of(&routine.return_type).unwrap_or(crate::call::ValueType::String)
        }
    });
    ProcedureDescription {
        procedure: routine.qualified_name(),
        params: routine
            .args
            .iter()
            .filter(|a| a.mode != ArgMode::Table)
            .map(|a| ParamDescription {
                name: a.name.clone(),
                direction: a.mode.direction(),
                value_type: types::value_type_of(&a.pg_type),
                db_type: a.pg_type.sql.clone(),
                has_default: a.has_default,
            })
            .collect(),
        returns,
        returns_db_type: if routine.is_procedure {
            String::new()
        } else if routine.returns_set {
            format!("SETOF {}", routine.return_type.sql)
        } else {
            routine.return_type.sql.clone()
        },
        overload: if overloaded {
            routine.identity()
        } else {
            String::new()
        },
        overloads: if overloaded { overloads } else { Vec::new() },
    }
}

/// A call whose values take more than this closes its session afterwards.
const BIG_CALL_BYTES: usize = 4 << 20;

#[async_trait::async_trait]
impl Backend for PostgresBackend {
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
        self.call(call, progress, interrupt, Some(rows), tag).await
    }

    async fn describe(
        &self,
        name: &ProcedureName,
        overload: Option<&str>,
    ) -> Result<ProcedureDescription> {
        let routines = match self.catalog.cached(name) {
            Some(routines) => routines,
            None => {
                let mut session = self.checkout(self.settings.checkout_timeout).await?;
                session.reset_now().await.map_err(|e| classify(&e))?;
                self.catalog.lookup(&session.client, name).await?
            }
        };
        let routines = self.reachable(name, routines)?;
        let routine = match overload {
            Some(id) => signature::overload_by_id(name, &routines, catalog::Routine::identity, id)?,
            None => &routines[0],
        };
        let ids = routines.iter().map(catalog::Routine::identity).collect();
        Ok(description_of(routine, ids))
    }

    async fn list_procedures(&self, query: &CatalogQuery) -> Result<CatalogPage> {
        let session = self.checkout(self.settings.checkout_timeout).await?;
        let schema = query.schema.as_ref().map(|s| s.folded_lower());
        let listed = catalog::list(
            &session.client,
            schema.as_deref(),
            self.settings.allow_system_schemas,
            query.after.as_deref(),
            query.limit + 1,
        )
        .await?;
        let entries = listed
            .into_iter()
            .map(|l| CatalogEntry {
                name: ProcedureName::exact(&[&l.routine.schema, &l.routine.name]),
                position: l.position,
                description: description_of(&l.routine, l.overloads),
            })
            .collect();
        Ok(CatalogPage::from_read(entries, query.limit))
    }

    async fn ping(&self, timeout: Duration) -> Result<()> {
        let mut session = self.checkout(timeout).await?;
        match tokio::time::timeout(timeout, session.client.simple_query("SELECT 1")).await {
            Ok(answer) => answer.map(drop).map_err(|e| classify(&e)),
            Err(_) => {
                // Its answer may still come: not a session for anyone else.
                session.discard = true;
                Err(Error::Unavailable(format!(
                    "PostgreSQL did not answer within {}",
                    humantime::format_duration(timeout)
                )))
            }
        }
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn pool_state(&self) -> crate::backend::PoolState {
        let status = self.pool.status();
        crate::backend::PoolState {
            idle: status.available,
            busy: status.size.saturating_sub(status.available),
        }
    }
}
