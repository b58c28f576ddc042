//! The PostgreSQL backend: procedures with `CALL`, functions with `SELECT`,
//! notices as progress, the cancel token as a hard cancel.
//!
//! One call = one pooled connection: look the signature up (cached), build
//! the statement, route the connection's notices to the call's progress
//! sink, arm the interrupt with the connection's cancel token, run, decode.
//! `CALL` is never wrapped in a transaction (procedures may COMMIT), except
//! when a refcursor comes back: then the call runs in one so that the cursor
//! is still open when its rows are fetched.

mod catalog;
mod errors;
mod notice;
mod pool;
mod statement;
mod types;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::{FromSql, ToSql, Type};
use postgres::{Client, NoTls, Row};
use tracing::warn;

use self::catalog::{ArgMode, Catalog};
use self::errors::classify;
use self::pool::{Connection, Manager, Pool};
use self::statement::{Plan, Shape, quote_ident};
use crate::backend::{
    Backend, BackendSettings, Interrupt, ParamDescription, Phase, ProcedureDescription, Progress,
};
use crate::call::{Column, Outputs, ProcedureCall, ResultSet, Value};
use crate::error::{DbErrorKind, Error, Result};
use crate::name::ProcedureName;

/// How long a looked-up signature is trusted.
const SIGNATURE_TTL: Duration = Duration::from_secs(5);

pub struct PostgresBackend {
    /// Always Some until dropped; see the Drop impl.
    pool: Option<Pool>,
    catalog: Catalog,
    settings: BackendSettings,
}

impl PostgresBackend {
    /// Builds the pool without waiting for the database.
    pub fn connect(url: &str, settings: &BackendSettings) -> Result<Self> {
        let mut config = postgres::Config::from_str(url).map_err(|e| {
            Error::InvalidArgument(format!(
                "invalid PostgreSQL URL {}: {e}",
                crate::backend::redact_url(url)
            ))
        })?;
        config
            .connect_timeout(settings.connect_timeout)
            .application_name("procgate");
        let pool = r2d2::Pool::builder()
            .max_size(settings.max_size)
            .min_idle(Some(0))
            .connection_timeout(settings.checkout_timeout)
            .idle_timeout(Some(settings.idle_timeout))
            .test_on_check_out(settings.test_on_checkout)
            .build_unchecked(Manager::new(config));
        Ok(Self {
            pool: Some(pool),
            catalog: Catalog::new(SIGNATURE_TTL),
            settings: settings.clone(),
        })
    }

    fn pool(&self) -> &Pool {
        self.pool
            .as_ref()
            .expect("the pool lives as long as the backend")
    }

    fn checkout(&self, timeout: Duration) -> Result<r2d2::PooledConnection<Manager>> {
        let pool = self.pool();
        pool.get_timeout(timeout).map_err(|e| {
            if pool.state().connections >= pool.max_size() {
                Error::Exhausted(format!(
                    "all {} database connections are busy and none came free within {}",
                    pool.max_size(),
                    humantime::format_duration(timeout)
                ))
            } else {
                Error::Unavailable(format!("cannot reach PostgreSQL: {e}"))
            }
        })
    }
}

/// Closing a `postgres::Client` blocks on its own runtime, which panics on a
/// tokio worker thread, and the last owner of the backend is usually an
/// async task. The pool is therefore closed on a thread of its own.
impl Drop for PostgresBackend {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            std::thread::spawn(move || drop(pool));
        }
    }
}

impl Backend for PostgresBackend {
    fn execute(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
    ) -> Result<Outputs> {
        let mut conn = self.checkout(self.settings.checkout_timeout)?;
        progress.phase(Phase::ConnectionAcquired);
        let routines = self.catalog.lookup(&mut conn.client, &call.name)?;
        let (plan, routine) = statement::plan(call, &routines)?;
        crate::allow::check_resolved(
            self.settings.allow_system_schemas,
            &call.name,
            &routine.schema,
        )?;

        let _route = conn.notices.route_to(progress.clone());
        let token = conn.client.cancel_token();
        let armed = interrupt.arm(move || {
            if let Err(e) = token.cancel_query(NoTls) {
                warn!(error = %e, "sending a cancel request to PostgreSQL failed");
            }
        })?;
        progress.phase(Phase::Executing);
        let result = run(&mut conn, &plan, call, self.settings.max_cursor_rows);
        drop(armed);
        // A cancel request travels on its own connection and lands whenever
        // the server gets to it, perhaps after this statement has returned:
        // the session it names must never run another call, or that call
        // would be cancelled instead. Any cancel was sent while armed, after
        // the request was recorded, so this check sees every one of them.
        if interrupt.is_requested() {
            conn.discard = true;
        }
        match result {
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

    fn describe(&self, name: &ProcedureName) -> Result<ProcedureDescription> {
        let mut conn = self.checkout(self.settings.checkout_timeout)?;
        let routines = self.catalog.lookup(&mut conn.client, name)?;
        let routine = &routines[0];
        crate::allow::check_resolved(self.settings.allow_system_schemas, name, &routine.schema)?;
        let returns = (!routine.is_procedure && routine.return_type.base != "void").then(|| {
            if routine.returns_set {
                crate::call::ValueType::Cursor
            } else {
                types::value_type_of(&routine.return_type.base)
                    .unwrap_or(crate::call::ValueType::String)
            }
        });
        Ok(ProcedureDescription {
            procedure: routine.qualified_name(),
            params: routine
                .args
                .iter()
                .filter(|a| a.mode != ArgMode::Table)
                .map(|a| ParamDescription {
                    name: a.name.clone(),
                    direction: a.mode.direction(),
                    value_type: types::value_type_of(&a.pg_type.base),
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
            overloads: routines.len() as u32,
            overload: if routines.len() > 1 {
                "1".into()
            } else {
                String::new()
            },
        })
    }

    fn ping(&self, timeout: Duration) -> Result<()> {
        let mut conn = self.checkout(timeout)?;
        conn.client
            .simple_query("SELECT 1")
            .map(drop)
            .map_err(|e| classify(&e))
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

/// Runs the plan and turns its result into outputs; owns the transaction
/// when a cursor has to be fetched.
fn run(
    conn: &mut Connection,
    plan: &Plan,
    call: &ProcedureCall,
    max_rows: usize,
) -> Result<Outputs> {
    if !plan.returns_cursor {
        return run_statement(conn, plan, call, max_rows);
    }
    conn.client
        .batch_execute("BEGIN")
        .map_err(|e| classify(&e))?;
    let result = run_statement(conn, plan, call, max_rows);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(e) = conn.client.batch_execute(end) {
        conn.discard = true;
        return Err(result.err().unwrap_or_else(|| classify(&e)));
    }
    result
}

fn run_statement(
    conn: &mut Connection,
    plan: &Plan,
    call: &ProcedureCall,
    max_rows: usize,
) -> Result<Outputs> {
    let limit = if plan.shape == Shape::FunctionSet {
        max_rows
    } else {
        1
    };
    let statement = conn
        .prepared(&plan.sql, plan.binds.len())
        .map_err(|e| classify(&e))?;
    let params = plan.binds.iter().map(|b| b as &(dyn ToSql + Sync));
    let collected = collect_rows(conn.client.query_raw(&statement, params), limit);
    let (rows, truncated) = collected.inspect_err(|_| conn.forget(&plan.sql))?;
    conn.last_used = std::time::Instant::now();
    let client = &mut conn.client;
    let mut outputs = Outputs::default();
    match plan.shape {
        Shape::FunctionSet => {
            let mut set = result_set(client, &rows, max_rows)?;
            set.truncated = truncated;
            outputs.return_value = Some(coerce(Value::Rows(set), call.returns));
        }
        Shape::FunctionScalar => {
            if let Some(row) = rows.first() {
                let value = column_value(client, row, 0, max_rows)?;
                outputs.return_value = Some(coerce(value, call.returns));
            }
        }
        Shape::Procedure | Shape::FunctionOutParams => {
            if let Some(row) = rows.first() {
                for (i, column) in row.columns().iter().enumerate() {
                    let value = column_value(client, row, i, max_rows)?;
                    // Keyed by the name the client used, else the catalog's.
                    let param = call
                        .params
                        .iter()
                        .find(|p| p.name.folded_lower() == column.name());
                    let name = param.map_or(column.name(), |p| p.name.as_written());
                    let wanted = param.and_then(|p| p.value_type);
                    outputs
                        .values
                        .insert(name.to_string(), coerce(value, wanted));
                }
            }
        }
    }
    Ok(outputs)
}

/// Reads at most `limit` rows; says whether more were left.
fn collect_rows(
    rows: std::result::Result<postgres::RowIter<'_>, postgres::Error>,
    limit: usize,
) -> Result<(Vec<Row>, bool)> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut iter = rows.map_err(|e| classify(&e))?;
    let mut rows = Vec::new();
    while let Some(row) = iter.next().map_err(|e| classify(&e))? {
        if rows.len() == limit {
            return Ok((rows, true));
        }
        rows.push(row);
    }
    Ok((rows, false))
}

/// The requested type when the value converts losslessly, else its own.
fn coerce(value: Value, wanted: Option<crate::call::ValueType>) -> Value {
    match wanted {
        Some(t) if value.natural_type() != Some(t) => value.clone().coerce(t).unwrap_or(value),
        _ => value,
    }
}

/// A column's value; a refcursor is fetched into rows.
fn column_value(client: &mut Client, row: &Row, index: usize, max_rows: usize) -> Result<Value> {
    let ty = row.columns()[index].type_();
    let value = decode_cell(row, index)?;
    match (ty, value) {
        (&Type::REFCURSOR, Value::String(cursor)) => fetch_cursor(client, &cursor, max_rows),
        (_, value) => Ok(value),
    }
}

fn decode_cell(row: &Row, index: usize) -> Result<Value> {
    let column = &row.columns()[index];
    let raw: RawCell = row
        .try_get(index)
        .map_err(|e| Error::Internal(format!("reading column {}: {e}", column.name())))?;
    match raw.0 {
        None => Ok(Value::Null),
        Some(bytes) => types::decode(column.type_(), bytes)
            .map_err(|why| Error::InvalidArgument(format!("output {}: {why}", column.name()))),
    }
}

fn fetch_cursor(client: &mut Client, cursor: &str, max_rows: usize) -> Result<Value> {
    let sql = format!(
        "FETCH FORWARD {} FROM {}",
        max_rows + 1,
        quote_ident(cursor)
    );
    let mut rows = client.query(&sql, &[]).map_err(|e| classify(&e))?;
    let truncated = rows.len() > max_rows;
    rows.truncate(max_rows);
    let mut set = result_set(client, &rows, max_rows)?;
    set.truncated = truncated;
    Ok(Value::Rows(set))
}

fn result_set(client: &mut Client, rows: &[Row], max_rows: usize) -> Result<ResultSet> {
    let columns = rows
        .first()
        .map(|r| {
            r.columns()
                .iter()
                .map(|c| Column {
                    name: c.name().to_string(),
                    value_type: types::value_type_of_column(c.type_()),
                })
                .collect()
        })
        .unwrap_or_default();
    let rows = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| column_value(client, row, i, max_rows))
                .collect()
        })
        .collect::<Result<_>>()?;
    Ok(ResultSet {
        columns,
        rows,
        truncated: false,
    })
}

/// Any column, undecoded: the bytes of its binary format (None for NULL).
struct RawCell<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawCell(Some(raw)))
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawCell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}
