//! Running a planned statement on a session and turning its rows into
//! outputs.
//!
//! `CALL` is never wrapped in a transaction (procedures may COMMIT), except
//! when a refcursor comes back: then the call runs in one so that the cursor
//! is still open when its rows are fetched. The call travels pipelined with
//! the session's reset before it and its release after it (`clean`).
//! Values are bound in text format to the statement's own parameter types,
//! so the server parses them with each type's input function; results come
//! back in binary and are decoded in `decode`.

use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Row, Statement};
use tokio_stream::StreamExt;

use super::clean::Released;
use super::decode::{coerce, column_value, result_set};
use super::errors::classify;
use super::statement::{Plan, Shape};
use crate::call::{Outputs, ProcedureCall, Value};
use crate::error::{Error, Result};

/// What running a call did, beyond its outputs.
pub struct Ran {
    pub outputs: Result<Outputs>,
    /// How the reset before the call went (Ok when there was none). When it
    /// failed, the call was sent all the same: pipelined messages run in
    /// order, so it ran on a session only partly reset, unless the server
    /// had ended the session.
    pub reset: std::result::Result<(), tokio_postgres::Error>,
    /// The session may hold state the reset cannot undo (a failed
    /// ROLLBACK, a failed release): it must not serve another call.
    pub unfit: bool,
    /// What the release after the call found, when it ran.
    pub released: Option<Released>,
}

/// What goes out in one write for a call.
pub struct Pipeline<'a> {
    /// The session's reset, when it served a call before.
    pub reset: Option<&'a str>,
    pub plan: &'a Plan,
    /// The plan's binds, with JSON turned into literals where needed.
    pub binds: &'a [Option<String>],
    pub statement: &'a Statement,
    pub release: &'a Statement,
}

/// Runs the plan, pipelined between the session's reset (when it needs
/// one) and the release, and turns its result into outputs. Owns the
/// transaction when a cursor has to be fetched.
pub async fn run(
    client: &Client,
    pipeline: Pipeline<'_>,
    call: &ProcedureCall,
    max_rows: usize,
) -> Ran {
    let Pipeline {
        reset,
        plan,
        binds,
        statement,
        release,
    } = pipeline;
    let reset = async {
        match reset {
            Some(sql) => client.batch_execute(sql).await,
            None => Ok(()),
        }
    };
    let call_statement = call_statement(client, plan, binds, statement, call, max_rows);
    let (reset, outputs, end, released) = if plan.returns_cursor {
        // BEGIN … the call and its cursor fetches … COMMIT, then release.
        let (reset, begun, outputs) =
            tokio::join!(reset, client.batch_execute("BEGIN"), call_statement);
        let outputs = begun.map_err(|e| classify(&e)).and(outputs);
        let end = if outputs.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let (ended, released) =
            tokio::join!(client.batch_execute(end), client.query_one(release, &[]));
        (reset, outputs, ended.map_err(|e| (end, e)), released)
    } else {
        let (reset, outputs, released) =
            tokio::join!(reset, call_statement, client.query_one(release, &[]));
        (reset, outputs, Ok(()), released)
    };
    let mut unfit = false;
    let outputs = match (outputs, end) {
        (Ok(_), Err(("COMMIT", e))) => Err(Error::Database(ran_but(
            classify(&e),
            "the procedure ran, but its transaction could not be committed",
        ))),
        (outputs, Err((_, _))) => {
            unfit = true;
            outputs
        }
        (outputs, Ok(())) => outputs,
    };
    let released = match released.and_then(|row| Released::from_row(&row)) {
        Ok(released) => Some(released),
        Err(_) => {
            unfit = true;
            None
        }
    };
    Ran {
        outputs,
        reset,
        unfit,
        released,
    }
}

/// A failure after the procedure ran, saying so.
fn ran_but(error: Error, what: &str) -> crate::error::DbError {
    match error {
        Error::Database(mut db) => {
            db.message = format!("{what}: {}", db.message);
            db
        }
        other => crate::error::DbError {
            kind: crate::error::DbErrorKind::ConnectionLost,
            code: String::new(),
            message: format!("{what}: {other}"),
        },
    }
}

async fn call_statement(
    client: &Client,
    plan: &Plan,
    binds: &[Option<String>],
    statement: &Statement,
    call: &ProcedureCall,
    max_rows: usize,
) -> Result<Outputs> {
    let limit = if plan.shape == Shape::FunctionSet {
        max_rows
    } else {
        1
    };
    let binds = binds.iter().map(|b| TextParam(b.as_deref()));
    let (rows, truncated) = collect_rows(client.query_raw(statement, binds).await, limit).await?;
    let mut outputs = Outputs::default();
    match plan.shape {
        Shape::FunctionSet => {
            let mut set = result_set(client, &rows, max_rows).await?;
            set.truncated = truncated;
            outputs.return_value = Some(coerce(Value::Rows(set), call.returns));
        }
        Shape::FunctionScalar => {
            if let Some(row) = rows.first() {
                let value = column_value(client, row, 0, max_rows).await?;
                outputs.return_value = Some(coerce(value, call.returns));
            }
        }
        Shape::Procedure | Shape::FunctionOutParams => {
            if let Some(row) = rows.first() {
                for (i, column) in row.columns().iter().enumerate() {
                    let value = column_value(client, row, i, max_rows).await?;
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
async fn collect_rows(
    rows: std::result::Result<tokio_postgres::RowStream, tokio_postgres::Error>,
    limit: usize,
) -> Result<(Vec<Row>, bool)> {
    let rows = rows.map_err(|e| classify(&e))?;
    let mut rows = std::pin::pin!(rows);
    let mut collected = Vec::new();
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| classify(&e))?;
        if collected.len() == limit {
            return Ok((collected, true));
        }
        collected.push(row);
    }
    Ok((collected, false))
}

/// A value bound in text format, whatever the parameter's type: the server
/// parses it with that type's input function. `None` is SQL NULL.
#[derive(Debug)]
struct TextParam<'a>(Option<&'a str>);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}
