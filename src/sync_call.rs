//! ExecuteSync: one call, bounded by the caller's gRPC deadline and
//! cancelled in the database if the caller goes away.
//!
//! tonic itself drops a handler when the `grpc-timeout` passes and answers
//! CANCELLED. To answer DEADLINE_EXCEEDED instead, and to have the statement
//! stopped by then, we act slightly before the deadline: request the cancel,
//! give the statement a moment to stop and return its session, then answer.
//! A handler dropped for any other reason (the client disconnected) drops
//! the backend's call with it, whose interrupt guard cancels the statement.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::backend::{Backend, Interrupt, MessageLog, Phase, Progress, RowSink};
use crate::call::{Outputs, ProcedureCall};
use crate::error::{Error, Result};

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
) -> Result<SyncOutcome> {
    let run = Run::new(deadline, max_messages)?;
    let work = backend.execute(call, &run.progress, &run.interrupt);
    run.wait(work).await
}

/// ExecuteStream: runs `call` as [`execute`] does, its cursor and set rows
/// handed to `rows` as they are read.
pub async fn execute_stream(
    backend: &dyn Backend,
    call: &ProcedureCall,
    deadline: Option<Duration>,
    max_messages: usize,
    rows: &RowSink,
) -> Result<SyncOutcome> {
    let run = Run::new(deadline, max_messages)?;
    let work = backend.execute_stream(call, &run.progress, &run.interrupt, rows);
    run.wait(work).await
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
    fn new(deadline: Option<Duration>, max_messages: usize) -> Result<Run> {
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

/// A sync call has no one to show progress to: it keeps the messages.
struct MessageCollector {
    log: Mutex<MessageLog>,
    capacity: usize,
}

impl Progress for MessageCollector {
    fn phase(&self, _: Phase) {}

    fn report(&self, _: u32, _: Option<String>) {}

    fn message(&self, line: String) {
        self.log
            .lock()
            .expect("messages lock")
            .push(line, self.capacity);
    }
}
