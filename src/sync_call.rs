//! ExecuteSync: one call on a blocking thread, bounded by the caller's gRPC
//! deadline and cancelled in the database if the caller goes away.
//!
//! tonic itself drops a handler when the `grpc-timeout` passes and answers
//! CANCELLED. To answer DEADLINE_EXCEEDED instead, and to have the statement
//! stopped by then, we act slightly before the deadline: fire the interrupt,
//! give the statement a moment to return its connection, then answer. A
//! handler dropped for any other reason (the client disconnected) fires the
//! interrupt from a drop guard, so no session stays busy behind it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Interrupt, MessageLog, Phase, Progress};
use crate::call::{Outputs, ProcedureCall};
use crate::error::{Error, Result};

/// What a completed sync call returns.
#[derive(Debug)]
pub struct SyncOutcome {
    pub outputs: Outputs,
    pub messages: MessageLog,
    pub elapsed: Duration,
}

/// Runs `call`, within `deadline` when there is one.
pub async fn execute(
    backend: Arc<dyn Backend>,
    call: ProcedureCall,
    deadline: Option<Duration>,
    max_messages: usize,
) -> Result<SyncOutcome> {
    let started = Instant::now();
    // A deadline too far to represent is no deadline at all.
    let deadline = deadline.filter(|d| started.checked_add(*d).is_some());
    let interrupt = match deadline {
        Some(deadline) => Interrupt::with_deadline(started + deadline),
        None => Interrupt::new(),
    };
    let mut guard = CancelOnDrop(Some(interrupt.clone()));
    let collector = Arc::new(MessageCollector {
        log: Mutex::default(),
        capacity: max_messages,
    });
    let progress: Arc<dyn Progress> = collector.clone();
    let worker_interrupt = interrupt.clone();
    let mut task =
        tokio::task::spawn_blocking(move || backend.execute(&call, &progress, &worker_interrupt));

    let joined = match deadline {
        None => (&mut task).await,
        Some(deadline) => {
            let margin = (deadline / 10).min(Duration::from_millis(50));
            match tokio::time::timeout(deadline - margin, &mut task).await {
                Ok(joined) => joined,
                Err(_) => {
                    guard.0 = None;
                    let stopper = interrupt.clone();
                    tokio::task::spawn_blocking(move || stopper.request());
                    // Let the statement stop and release its session first.
                    let _ = tokio::time::timeout(margin / 2, task).await;
                    return Err(Error::DeadlineExceeded(format!(
                        "the call did not finish within its deadline of {}; \
                         its statement was cancelled in the database",
                        humantime::format_duration(deadline)
                    )));
                }
            }
        }
    };
    guard.0 = None;
    let outputs =
        joined.map_err(|_| Error::Internal("the call's worker thread panicked".into()))??;
    let messages = std::mem::take(&mut *collector.log.lock().expect("messages lock"));
    Ok(SyncOutcome {
        outputs,
        messages,
        elapsed: started.elapsed(),
    })
}

/// Fires the interrupt if the handler is dropped mid-call.
struct CancelOnDrop(Option<Interrupt>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(interrupt) = self.0.take() {
            tracing::info!("the caller went away; cancelling its statement");
            tokio::task::spawn_blocking(move || interrupt.request());
        }
    }
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
