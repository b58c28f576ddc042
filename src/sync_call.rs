//! ExecuteSync: one call, bounded by the caller's gRPC deadline and
//! cancelled in the database if the caller goes away.
//!
//! tonic itself drops a handler when the `grpc-timeout` passes and answers
//! CANCELLED. To answer DEADLINE_EXCEEDED instead, and to have the statement
//! stopped by then, we act slightly before the deadline: request the cancel,
//! give the statement a moment to stop and return its session, then answer.
//! A handler dropped for any other reason (the client disconnected) drops
//! the backend's call with it, whose interrupt guard cancels the statement.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::backend::{Backend, Interrupt, MessageLog, Phase, Progress};
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
    let progress: Arc<dyn Progress> = collector.clone();
    let work = AssertUnwindSafe(backend.execute(call, &progress, &interrupt)).catch_unwind();
    let mut work = std::pin::pin!(work);
    let joined = match deadline {
        None => work.await,
        Some(deadline) => {
            let margin = (deadline / 10).min(Duration::from_millis(50));
            match tokio::time::timeout(deadline - margin, &mut work).await {
                Ok(joined) => joined,
                Err(_) => {
                    interrupt.request();
                    // Let the statement stop and release its session first;
                    // if it finished after all, its outputs are the answer.
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
    let messages = std::mem::take(&mut *collector.log.lock().expect("messages lock"));
    Ok(SyncOutcome {
        outputs,
        messages,
        elapsed: started.elapsed(),
    })
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
