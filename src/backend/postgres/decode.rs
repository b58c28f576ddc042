//! Rows into values: every cell decoded, cursors fetched, and the types
//! procgate has no decoder for returned in their text form.
//!
//! A call's outputs are known before it runs (the prepared statement
//! describes them), so [`check_outputs`] refuses an output that cannot be
//! returned before anything is sent: nothing half-runs. An output that
//! asks for STRING may be of any type; so may the columns of a set or a
//! cursor, whose types nobody chose. Their text comes from the server,
//! which alone knows every type's output function: the cell's binary value
//! is bound back to `SELECT $1::text` in its own type, all the cells of a
//! result pipelined in one round trip.

use std::future::Future;
use std::pin::Pin;

use futures_util::future::try_join_all;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Row, Statement};

use super::errors::classify;
use super::json::{self, Unreadable};
use super::statement::{Plan, Shape, quote_ident};
use super::types;
use crate::call::{Column, ProcedureCall, ResultSet, Value, ValueType};
use crate::error::{Error, Result};

/// Refuses, before the call, an output the caller could not be given:
/// one of a type procgate cannot decode that does not ask for STRING.
pub fn check_outputs(
    plan: &Plan,
    statement: &Statement,
    call: &ProcedureCall,
    proc_name: &dyn std::fmt::Display,
) -> Result<()> {
    let wanted = |name: &str| -> Option<ValueType> {
        match plan.shape {
            Shape::FunctionScalar => call.returns,
            Shape::Procedure | Shape::FunctionOutParams => call
                .params
                .iter()
                .find(|p| p.name.folded_lower() == name)
                .and_then(|p| p.value_type),
            // A set's columns come back as text when they must.
            Shape::FunctionSet => Some(ValueType::String),
        }
    };
    for column in statement.columns() {
        if *column.type_() == Type::RECORD {
            return Err(Error::InvalidArgument(format!(
                "{proc_name} returns an anonymous record, which procgate cannot return; declare \
                 OUT parameters or a composite type for it; nothing was run"
            )));
        }
        let as_text = matches!(
            wanted(column.name()),
            Some(ValueType::String | ValueType::Clob)
        );
        if as_text || json::readable(column.type_()) {
            continue;
        }
        let what = match plan.shape {
            Shape::FunctionScalar => format!("the result of {proc_name}"),
            _ => format!("output {} of {proc_name}", column.name()),
        };
        let how = match plan.shape {
            Shape::FunctionScalar => "set `returns` to STRING",
            _ => "give the parameter the type STRING",
        };
        return Err(Error::InvalidArgument(format!(
            "{what} is of type {}, which procgate cannot return as a typed value; {how} to \
             get its text form, or cast it in the procedure; nothing was run",
            types::sql_name(column.type_())
        )));
    }
    Ok(())
}

/// The requested type when the value converts losslessly, else its own.
pub fn coerce(value: Value, wanted: Option<ValueType>) -> Value {
    match wanted {
        Some(t) if value.natural_type() != Some(t) => value.clone().coerce(t).unwrap_or(value),
        _ => value,
    }
}

/// A cell decoded, or waiting for its text form.
enum Cell<'a> {
    Value(Value),
    Text(&'a Type, &'a [u8]),
}

/// A column's value; a refcursor is fetched into rows.
pub fn column_value<'a>(
    client: &'a Client,
    row: &'a Row,
    index: usize,
    max_rows: usize,
) -> Pin<Box<dyn Future<Output = Result<Value>> + Send + 'a>> {
    Box::pin(async move {
        match cell(client, row, index, max_rows).await? {
            Cell::Value(value) => Ok(value),
            Cell::Text(ty, raw) => Ok(text_forms(client, &[(ty, raw)]).await?.remove(0)),
        }
    })
}

async fn cell<'a>(
    client: &'a Client,
    row: &'a Row,
    index: usize,
    max_rows: usize,
) -> Result<Cell<'a>> {
    let column = &row.columns()[index];
    let raw: RawCell = row
        .try_get(index)
        .map_err(|e| Error::Internal(format!("reading column {}: {e}", column.name())))?;
    let Some(raw) = raw.0 else {
        return Ok(Cell::Value(Value::Null));
    };
    match types::decode(column.type_(), raw) {
        Ok(Value::String(cursor)) if *column.type_() == Type::REFCURSOR => {
            Ok(Cell::Value(fetch_cursor(client, &cursor, max_rows).await?))
        }
        Ok(value) => Ok(Cell::Value(value)),
        Err(Unreadable::Type(_)) => Ok(Cell::Text(column.type_(), raw)),
        Err(Unreadable::Malformed(why)) => Err(Error::Internal(format!(
            "the procedure ran, but its output {} could not be read: {why}",
            column.name()
        ))),
    }
}

fn fetch_cursor<'a>(
    client: &'a Client,
    cursor: &'a str,
    max_rows: usize,
) -> Pin<Box<dyn Future<Output = Result<Value>> + Send + 'a>> {
    Box::pin(async move {
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
        if rows.is_empty() {
            // No row to read the columns from: the statement describes them
            // (a round trip only for an empty cursor).
            let described = client.prepare(&sql).await.map_err(|e| classify(&e))?;
            set.columns = columns_of(described.columns());
        }
        Ok(Value::Rows(set))
    })
}

/// The columns of a set or a cursor, as a result set names them.
pub fn columns_of(columns: &[tokio_postgres::Column]) -> Vec<Column> {
    columns
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            value_type: types::value_type_of_column(c.type_()).or(Some(ValueType::String)),
        })
        .collect()
}

/// The name of the cursor a refcursor column holds; None for any other
/// column, and for a NULL one.
pub fn cursor_name(row: &Row, index: usize) -> Result<Option<String>> {
    if *row.columns()[index].type_() != Type::REFCURSOR {
        return Ok(None);
    }
    let raw: RawCell = row
        .try_get(index)
        .map_err(|e| Error::Internal(format!("reading a cursor's name: {e}")))?;
    Ok(raw.0.map(|name| String::from_utf8_lossy(name).into_owned()))
}

/// The rows of a set or a cursor, with the text of every cell procgate
/// cannot decode fetched in one pipelined round trip.
pub async fn result_set(client: &Client, rows: &[Row], max_rows: usize) -> Result<ResultSet> {
    let columns = rows
        .first()
        .map(|r| columns_of(r.columns()))
        .unwrap_or_default();
    let mut decoded = Vec::with_capacity(rows.len());
    let mut pending = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            values.push(match cell(client, row, i, max_rows).await? {
                Cell::Value(value) => value,
                Cell::Text(ty, raw) => {
                    pending.push(((r, i), (ty, raw)));
                    Value::Null
                }
            });
        }
        decoded.push(values);
    }
    if !pending.is_empty() {
        let cells: Vec<(&Type, &[u8])> = pending.iter().map(|(_, cell)| *cell).collect();
        let texts = text_forms(client, &cells).await?;
        for (((r, i), _), text) in pending.into_iter().zip(texts) {
            decoded[r][i] = text;
        }
    }
    Ok(ResultSet {
        columns,
        rows: decoded,
        ..Default::default()
    })
}

/// The server's text form of each binary value, pipelined.
async fn text_forms(client: &Client, cells: &[(&Type, &[u8])]) -> Result<Vec<Value>> {
    let queries = cells.iter().map(|(ty, raw)| async move {
        let binary = RawBinary(raw);
        let rows = client
            .query_typed(
                "SELECT $1::text",
                &[(&binary as &(dyn ToSql + Sync), (*ty).clone())],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>(
            rows.first()
                .and_then(|row| row.get::<_, Option<String>>(0))
                .map_or(Value::Null, Value::String),
        )
    });
    try_join_all(queries).await.map_err(|e| {
        Error::Internal(format!(
            "the procedure ran, but the text form of an output could not be read: {}",
            classify(&e)
        ))
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

/// A value in the binary format the server sent it in, bound back as is.
#[derive(Debug)]
struct RawBinary<'a>(&'a [u8]);

impl ToSql for RawBinary<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
