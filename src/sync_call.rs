//! ExecuteSync: one call, bounded by the caller's gRPC deadline and
//! cancelled in the database if the caller goes away.
//!
//! tonic itself drops a handler when the `grpc-timeout` passes and answers
//! CANCELLED. To answer DEADLINE_EXCEEDED instead, and to have the statement
//! stopped by then, we act slightly before the deadline: request the cancel,
//! give the statement a moment to stop and return its session, then answer.
//! A handler dropped for any other reason (the client disconnected) drops
//! the backend's call with it, whose interrupt guard cancels the statement.
//!
//! Each call is counted in the metrics here, once, whatever its end: the
//! procedure is a label only if its statement was reached (the database
//! resolved the name).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::backend::{Backend, Interrupt, MessageLog, Phase, Progress, RowSink, SessionTag};
use crate::call::{Outputs, ProcedureCall};
use crate::error::{Error, Result};
use crate::telemetry::metrics::{Metrics, Mode, ProcedureLabel};
use crate::telemetry::trace::db_span;
use tracing::Instrument;

/// Deadlines shorter than this are refused before anything runs.
const SHORTEST_DEADLINE: Duration = Duration::from_millis(5);

/// What a completed sync call returns.
#[derive(Debug)]
pub struct SyncOutcome {
    pub outputs: Outputs,
    pub messages: MessageLog,
    pub elapsed: Duration,
}

/// Runs `call`, within `deadline` when there is one.
pub async fn execute(
    backend: &dyn Backend,
    call: &ProcedureCall,
    deadline: Option<Duration>,
    max_messages: usize,
    metrics: &Metrics,
    tag: &SessionTag,
) -> Result<SyncOutcome> {
    let run = Run::new(deadline, max_messages, metrics);
    let outcome = match &run {
        Ok(run) => {
            let work = backend
                .execute(call, &run.progress, &run.interrupt, tag)
                .instrument(db_span(backend.kind(), call));
            run.wait(work).await
        }
        Err(e) => Err(e.clone()),
    };
    count(metrics, Mode::Sync, call, run.as_ref().ok(), &outcome);
    outcome
}

/// Counts one call in the metrics.
fn count(
    metrics: &Metrics,
    mode: Mode,
    call: &ProcedureCall,
    run: Option<&Run>,
    outcome: &Result<SyncOutcome>,
) {
    let code = match outcome {
        Ok(_) => tonic::Code::Ok,
        Err(e) => crate::api::status::code_of(e),
    };
    let reached = run.is_some_and(|r| r.collector.reached_statement.load(Ordering::Relaxed));
    let label = if reached {
        ProcedureLabel::resolved(&call.name)
    } else {
        ProcedureLabel::invalid()
    };
    let elapsed = run.map_or(Duration::ZERO, |r| r.started.elapsed());
    metrics.call_ended(label, mode, code, elapsed);
}

/// ExecuteStream: runs `call` as [`execute`] does, its cursor and set rows
/// handed to `rows` as they are read.
pub async fn execute_stream(
    backend: &dyn Backend,
    call: &ProcedureCall,
    deadline: Option<Duration>,
    max_messages: usize,
    rows: &RowSink,
    metrics: &Metrics,
    tag: &SessionTag,
) -> Result<SyncOutcome> {
    let run = Run::new(deadline, max_messages, metrics);
    let outcome = match &run {
        Ok(run) => {
            let work = backend
                .execute_stream(call, &run.progress, &run.interrupt, rows, tag)
                .instrument(db_span(backend.kind(), call));
            run.wait(work).await
        }
        Err(e) => Err(e.clone()),
    };
    count(metrics, Mode::Stream, call, run.as_ref().ok(), &outcome);
    outcome
}

/// One call under way: its deadline, its interrupt and its messages.
struct Run {
    started: Instant,
    deadline: Option<Duration>,
    interrupt: Interrupt,
    collector: Arc<MessageCollector>,
    progress: Arc<dyn Progress>,
}

impl Run {
    fn new(deadline: Option<Duration>, max_messages: usize, metrics: &Metrics) -> Result<Run> {
        let started = Instant::now();
        // A deadline too far to represent is no deadline at all.
        let deadline = deadline.filter(|d| started.checked_add(*d).is_some());
        if let Some(deadline) = deadline
            && deadline < SHORTEST_DEADLINE
        {
            // tonic's own timer would win the race and answer CANCELLED.
            return Err(Error::DeadlineExceeded(format!(
                "the deadline of {} is shorter than the {} procgate needs to run a call and \
                 still cancel it in time; nothing was run",
                humantime::format_duration(deadline),
                humantime::format_duration(SHORTEST_DEADLINE)
            )));
        }
        let interrupt = match deadline {
            Some(deadline) => Interrupt::with_deadline(started + deadline),
            None => Interrupt::new(),
        };
        let collector = Arc::new(MessageCollector {
            log: Mutex::default(),
            capacity: max_messages,
            started,
            metrics: metrics.clone(),
            reached_statement: AtomicBool::new(false),
        });
        Ok(Run {
            started,
            deadline,
            interrupt,
            progress: collector.clone(),
            collector,
        })
    }

    /// Waits for the call, stopping it slightly before the deadline.
    async fn wait(&self, work: impl Future<Output = Result<Outputs>>) -> Result<SyncOutcome> {
        let work = AssertUnwindSafe(work).catch_unwind();
        let mut work = std::pin::pin!(work);
        let joined = match self.deadline {
            None => work.await,
            Some(deadline) => {
                let margin = (deadline / 10).min(Duration::from_millis(50));
                match tokio::time::timeout(deadline - margin, &mut work).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        self.interrupt.request();
                        // Let the statement stop and release its session
                        // first; if it finished after all, its outputs are
                        // the answer.
                        match tokio::time::timeout(margin / 2, &mut work).await {
                            Ok(Ok(Ok(outputs))) => Ok(Ok(outputs)),
                            _ => return Err(deadline_passed(deadline)),
                        }
                    }
                }
            }
        };
        let outputs = joined
            .map_err(|_| Error::Internal("the call panicked; see the gateway's log".into()))??;
        for note in outputs.truncation_notes() {
            self.progress.message(note);
        }
        let messages = std::mem::take(&mut *self.collector.log.lock().expect("messages lock"));
        Ok(SyncOutcome {
            outputs,
            messages,
            elapsed: self.started.elapsed(),
        })
    }
}

fn deadline_passed(deadline: Duration) -> Error {
    Error::DeadlineExceeded(format!(
        "the call did not finish within its deadline of {}; procgate cancelled its statement \
         in the database, but the procedure may have run in part or in full (work it \
         committed stays committed)",
        humantime::format_duration(deadline)
    ))
}

/// A sync call has no one to show progress to: it keeps the messages, and
/// notes its wait for a connection and whether it reached its statement.
struct MessageCollector {
    log: Mutex<MessageLog>,
    capacity: usize,
    started: Instant,
    metrics: Metrics,
    reached_statement: AtomicBool,
}

impl Progress for MessageCollector {
    fn phase(&self, phase: Phase) {
        match phase {
            Phase::ConnectionAcquired => self.metrics.connection_waited(self.started.elapsed()),
            Phase::Executing => self.reached_statement.store(true, Ordering::Relaxed),
            Phase::OutputsFetched => {}
        }
    }

    fn report(&self, _: u32, _: Option<String>) {}

    fn message(&self, line: String) {
        self.log
            .lock()
            .expect("messages lock")
            .push(line, self.capacity);
    }
}
