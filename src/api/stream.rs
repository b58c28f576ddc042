//! ExecuteStream as protobuf: each output's start, its row batches as the
//! backend hands them on, then `done` (or the error, as the stream's
//! status); and ReadJobResult, the same messages read from a job.
//!
//! The call runs on a task of its own, so that the stream can be answered
//! at once; the backend hands its rows through a channel of one part, so it
//! reads at most one batch ahead of what the client has taken. A client that
//! goes away drops the receiving end: the backend's next send fails, and it
//! cancels its statement.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tracing::{Instrument, info};

use crate::api::convert::{column_to_proto, row_to_proto, sync_response};
use crate::api::status;
use crate::backend::{Backend, ResultPart, RowSink, SessionTag};
use crate::call::ProcedureCall;
use crate::error::Error;
use crate::proto as pb;
use crate::proto::execute_stream_response::Kind;
use crate::spool::read::JobResult;
use crate::sync_call;
use crate::telemetry::metrics::Metrics;

/// The ExecuteStream response stream.
pub type ExecuteStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExecuteStreamResponse, Status>> + Send + 'static>>;

pub fn execute_stream(
    backend: Arc<dyn Backend>,
    call: ProcedureCall,
    deadline: Option<Duration>,
    max_messages: usize,
    open: OwnedSemaphorePermit,
    metrics: Metrics,
    tag: SessionTag,
) -> ExecuteStream {
    let (sink, parts) = RowSink::channel();
    // The task keeps the RPC's span: its database call is a child of it.
    let span = tracing::Span::current();
    let run = tokio::spawn(
        async move {
        // Held until the call and its connection are done.
        let _open = open;
        let ran = sync_call::execute_stream(
            backend.as_ref(),
            &call,
            deadline,
            max_messages,
            &sink,
            &metrics,
            &tag,
        )
        .await;
        match &ran {
            Ok(outcome) => {
                info!(procedure = %call.name, session = %tag.action, elapsed = ?outcome.elapsed, "stream call completed")
            }
            // The code and the database's code, never the message: it may
            // quote a parameter's value.
            Err(e) => info!(
                procedure = %call.name,
                session = %tag.action,
                code = ?status::code_of(e),
                db_code = e.db_code().unwrap_or_default(),
                "stream call failed"
            ),
        }
        ran
        }
        .instrument(span),
    );
    let parts = ReceiverStream::new(parts).map(|part| Ok(part_to_proto(part)));
    // The receiver ends when the call's task dropped the sink: it is done.
    let done = futures_util::stream::once(async move {
        let outcome = run.await.map_err(|_| {
            Error::Internal("the streamed call's task failed; see the gateway's log".into())
        })??;
        Ok::<_, Error>(pb::ExecuteStreamResponse {
            kind: Some(Kind::Done(sync_response(&outcome))),
        })
    })
    .map(|done| done.map_err(Status::from));
    Box::pin(parts.chain(done))
}

/// ReadJobResult: the result set's start, then its rows as they are read
/// from the job and its spool, one batch at a time as the client takes
/// them; no `done`.
pub fn job_result(result: JobResult) -> ExecuteStream {
    let start = pb::ExecuteStreamResponse {
        kind: Some(Kind::Start(pb::ResultSetStart {
            output: result.output.clone(),
            columns: result.columns.iter().map(column_to_proto).collect(),
        })),
    };
    let rows = futures_util::stream::unfold(Some(result), |reading| async move {
        let mut result = reading?;
        match result.next_batch().await {
            Ok(Some(rows)) => {
                let batch = Kind::Rows(pb::RowBatch {
                    output: result.output.clone(),
                    rows,
                });
                Some((
                    Ok(pb::ExecuteStreamResponse { kind: Some(batch) }),
                    Some(result),
                ))
            }
            Ok(None) => None,
            Err(e) => Some((Err(Status::from(e)), None)),
        }
    });
    Box::pin(futures_util::stream::once(std::future::ready(Ok(start))).chain(rows))
}

fn part_to_proto(part: ResultPart) -> pb::ExecuteStreamResponse {
    let kind = match part {
        ResultPart::Start { output, columns } => Kind::Start(pb::ResultSetStart {
            output,
            columns: columns.iter().map(column_to_proto).collect(),
        }),
        ResultPart::Rows { output, rows } => Kind::Rows(pb::RowBatch {
            output,
            rows: rows.iter().map(|row| row_to_proto(row)).collect(),
        }),
    };
    pb::ExecuteStreamResponse { kind: Some(kind) }
}
