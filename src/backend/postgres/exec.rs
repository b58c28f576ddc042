//! Running a planned statement on a session and turning its rows into
//! outputs.
//!
//! `CALL` is never wrapped in a transaction (procedures may COMMIT), except
//! when a refcursor comes back: then the call runs in one so that the cursor
//! is still open when its rows are fetched. Values are bound in text format
//! to the statement's own parameter types, so the server parses them with
//! each type's input function; results come back in binary and are decoded
//! in `types`.

use std::future::Future;
use std::pin::Pin;

use tokio_postgres::types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Row, Statement};
use tokio_stream::StreamExt;

use super::errors::classify;
use super::pool::Session;
use super::statement::{Plan, Shape, quote_ident};
use super::types;
use crate::call::{Column, Outputs, ProcedureCall, ResultSet, Value, ValueType};
use crate::error::{Error, Result};

/// Runs the plan and turns its result into outputs; owns the transaction
/// when a cursor has to be fetched.
pub async fn run(
    session: &mut Session,
    plan: &Plan,
    statement: &Statement,
    call: &ProcedureCall,
    max_rows: usize,
) -> Result<Outputs> {
    if !plan.returns_cursor {
        return run_statement(session, plan, statement, call, max_rows).await;
    }
    session
        .client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| classify(&e))?;
    let result = run_statement(session, plan, statement, call, max_rows).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(e) = session.client.batch_execute(end).await {
        session.discard = true;
        return Err(result.err().unwrap_or_else(|| classify(&e)));
    }
    result
}

async fn run_statement(
    session: &mut Session,
    plan: &Plan,
    statement: &Statement,
    call: &ProcedureCall,
    max_rows: usize,
) -> Result<Outputs> {
    let limit = if plan.shape == Shape::FunctionSet {
        max_rows
    } else {
        1
    };
    let binds = plan.binds.iter().map(|b| TextParam(b.as_deref()));
    let collected = collect_rows(session.client.query_raw(statement, binds).await, limit).await;
    let (rows, truncated) = collected.inspect_err(|_| session.forget(&plan.sql))?;
    session.last_used = std::time::Instant::now();
    let client = &session.client;
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

/// The requested type when the value converts losslessly, else its own.
fn coerce(value: Value, wanted: Option<ValueType>) -> Value {
    match wanted {
        Some(t) if value.natural_type() != Some(t) => value.clone().coerce(t).unwrap_or(value),
        _ => value,
    }
}

/// A column's value; a refcursor is fetched into rows.
fn column_value<'a>(
    client: &'a Client,
    row: &'a Row,
    index: usize,
    max_rows: usize,
) -> Pin<Box<dyn Future<Output = Result<Value>> + Send + 'a>> {
    Box::pin(async move {
        let ty = row.columns()[index].type_();
        let value = decode_cell(row, index)?;
        match (ty, value) {
            (&Type::REFCURSOR, Value::String(cursor)) => {
                fetch_cursor(client, &cursor, max_rows).await
            }
            (_, value) => Ok(value),
        }
    })
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

async fn fetch_cursor(client: &Client, cursor: &str, max_rows: usize) -> Result<Value> {
    let sql = format!(
        "FETCH FORWARD {} FROM {}",
        max_rows + 1,
        quote_ident(cursor)
    );
    let mut rows = client
        .query_typed(&sql, &[])
        .await
        .map_err(|e| classify(&e))?;
    let truncated = rows.len() > max_rows;
    rows.truncate(max_rows);
    let mut set = result_set(client, &rows, max_rows).await?;
    set.truncated = truncated;
    Ok(Value::Rows(set))
}

async fn result_set(client: &Client, rows: &[Row], max_rows: usize) -> Result<ResultSet> {
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
    let mut decoded = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            values.push(column_value(client, row, i, max_rows).await?);
        }
        decoded.push(values);
    }
    Ok(ResultSet {
        columns,
        rows: decoded,
        truncated: false,
    })
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
