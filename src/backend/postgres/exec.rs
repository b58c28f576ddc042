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
use super::decode::{coerce, column_value, columns_of, cursor_name, result_set};
use super::errors::classify;
use super::statement::{Plan, Shape, quote_ident};
use crate::backend::{Interrupt, RowSink};
use crate::call::{Outputs, ProcedureCall, Value};
use crate::error::{Error, Result};

/// Where a streamed call's rows go, and the interrupt that stops its
/// statement when the client goes away.
#[derive(Clone, Copy)]
pub struct Streaming<'a> {
    pub sink: &'a RowSink,
    pub interrupt: &'a Interrupt,
}

impl Streaming<'_> {
    /// The client went away: the statement is to stop, and the call ends.
    fn client_gone(&self) -> Error {
        self.interrupt.request();
        Error::Cancelled("the client went away; its statement was cancelled".into())
    }
}

/// Rows read from a set-returning function before they are decoded and
/// handed on: one chunk, the most read ahead of the client.
const CHUNK_ROWS: usize = 1000;

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
    streaming: Option<Streaming<'_>>,
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
    let call_statement = call_statement(client, plan, binds, statement, call, max_rows, streaming);
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
    streaming: Option<Streaming<'_>>,
) -> Result<Outputs> {
    let limit = if plan.shape == Shape::FunctionSet {
        max_rows
    } else {
        1
    };
    let binds = binds.iter().map(|b| TextParam(b.as_deref()));
    let rows = client.query_raw(statement, binds).await;
    if let Some(streaming) = streaming {
        return stream_outputs(client, plan, statement, rows, call, max_rows, streaming).await;
    }
    let (rows, truncated) = collect_rows(rows, limit).await?;
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

/// A streamed call: a set-returning function's rows, and every refcursor
/// output's, go to the sink in chunks as they are read; the other outputs
/// are returned. A set's rows are read from the statement as the server
/// sends them: the driver reads the socket only as fast as they are taken,
/// so the server waits on the connection instead of the gateway buffering.
async fn stream_outputs(
    client: &Client,
    plan: &Plan,
    statement: &Statement,
    rows: std::result::Result<tokio_postgres::RowStream, tokio_postgres::Error>,
    call: &ProcedureCall,
    max_rows: usize,
    streaming: Streaming<'_>,
) -> Result<Outputs> {
    let rows = rows.map_err(|e| classify(&e))?;
    let mut rows = std::pin::pin!(rows);
    let mut outputs = Outputs::default();
    if plan.shape == Shape::FunctionSet {
        if !streaming
            .sink
            .start("", columns_of(statement.columns()))
            .await
        {
            return Err(streaming.client_gone());
        }
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        loop {
            let row = rows.next().await.transpose().map_err(|e| classify(&e))?;
            let last = row.is_none();
            chunk.extend(row);
            if chunk.len() == CHUNK_ROWS || (last && !chunk.is_empty()) {
                let set = result_set(client, &chunk, max_rows).await?;
                if !streaming.sink.rows("", set.rows).await {
                    return Err(streaming.client_gone());
                }
                chunk.clear();
            }
            if last {
                return Ok(outputs);
            }
        }
    }
    let Some(row) = rows.next().await.transpose().map_err(|e| classify(&e))? else {
        return Ok(outputs);
    };
    // Read to the end, so that the statement is done before the fetches.
    while rows
        .next()
        .await
        .transpose()
        .map_err(|e| classify(&e))?
        .is_some()
    {}
    for (i, column) in row.columns().iter().enumerate() {
        let output = match plan.shape {
            Shape::FunctionScalar => String::new(),
            _ => call
                .params
                .iter()
                .find(|p| p.name.folded_lower() == column.name())
                .map_or(column.name(), |p| p.name.as_written())
                .to_string(),
        };
        if let Some(cursor) = cursor_name(&row, i)? {
            stream_cursor(client, &cursor, &output, max_rows, streaming).await?;
            continue;
        }
        let value = column_value(client, &row, i, max_rows).await?;
        match plan.shape {
            Shape::FunctionScalar => outputs.return_value = Some(coerce(value, call.returns)),
            _ => {
                let wanted = call
                    .params
                    .iter()
                    .find(|p| p.name.folded_lower() == column.name())
                    .and_then(|p| p.value_type);
                outputs.values.insert(output, coerce(value, wanted));
            }
        }
    }
    Ok(outputs)
}

/// A refcursor's rows, fetched `CHUNK_ROWS` at a time, each chunk handed on
/// before the next is fetched.
async fn stream_cursor(
    client: &Client,
    cursor: &str,
    output: &str,
    max_rows: usize,
    streaming: Streaming<'_>,
) -> Result<()> {
    let fetch = format!("FETCH FORWARD {CHUNK_ROWS} FROM {}", quote_ident(cursor));
    // Prepared, so that its columns are known even when it has no rows.
    let fetch = client.prepare(&fetch).await.map_err(|e| classify(&e))?;
    if !streaming
        .sink
        .start(output, columns_of(fetch.columns()))
        .await
    {
        return Err(streaming.client_gone());
    }
    loop {
        let rows = client.query(&fetch, &[]).await.map_err(|e| classify(&e))?;
        let fetched = rows.len();
        if fetched > 0 {
            let set = result_set(client, &rows, max_rows).await?;
            if !streaming.sink.rows(output, set.rows).await {
                return Err(streaming.client_gone());
            }
        }
        if fetched < CHUNK_ROWS {
            return Ok(());
        }
    }
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
