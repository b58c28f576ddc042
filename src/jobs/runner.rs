//! Running one job: wait for a slot, run the call, publish every change to
//! the job's watch channel.
//!
//! Slots are a fair tokio `Semaphore` of `--max-running-jobs` permits, so
//! pending jobs start in submission order. A job cancelled while pending
//! never takes a slot: the cancel wakes the wait below.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::{info, warn};

use super::registry::JobRegistry;
use super::{JobSnapshot, JobState};
use crate::backend::{Interrupt, Phase, Progress};
use crate::call::{Outputs, ProcedureCall};
use crate::error::Error;

pub(super) async fn run(
    registry: Arc<JobRegistry>,
    call: Arc<ProcedureCall>,
    tx: watch::Sender<JobSnapshot>,
    interrupt: Interrupt,
) {
    // Wait for a slot, and for the database: while it is down, pending jobs
    // stay pending rather than fail one after the other.
    let permit = loop {
        let permit = tokio::select! {
            biased;
            _ = interrupt.requested() => return, // cancelled while pending
            permit = async {
                registry.database_available().await;
                registry.slots.clone().acquire_owned().await
            } => permit.expect("the job semaphore is never closed"),
        };
        if registry.database_is_up() {
            break permit;
        }
    };
    let started = tx.send_if_modified(|job| {
        if job.state != JobState::Pending {
            return false;
        }
        job.state = JobState::Running;
        job.start_time = Some(SystemTime::now());
        job.progress_message = "waiting for a connection".into();
        true
    });
    if !started {
        return; // cancelled just as its slot came free
    }
    registry
        .pending
        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    execute(registry, call, tx, interrupt, permit).await;
}

/// Runs a RUNNING job that holds a slot, and publishes its end.
pub(super) async fn execute(
    registry: Arc<JobRegistry>,
    call: Arc<ProcedureCall>,
    tx: watch::Sender<JobSnapshot>,
    interrupt: Interrupt,
    permit: OwnedSemaphorePermit,
) {
    info!("job started");

    let progress: Arc<dyn Progress> = Arc::new(JobProgress {
        tx: tx.clone(),
        max_messages: registry.limits.max_messages,
    });
    // A panic in the call must end the job, not leave it RUNNING forever.
    let result = AssertUnwindSafe(registry.backend.execute(&call, &progress, &interrupt))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            warn!("the job's call panicked");
            Err(Error::Internal(
                "the job's call panicked; see the gateway's log".into(),
            ))
        });
    if result.as_ref().is_err_and(Error::means_database_down) {
        // Before the slot frees: the next pending job must wait, not fail.
        registry.report_database_down();
    }
    drop(permit);

    let cancelled = interrupt.is_requested();
    tx.send_modify(|job| {
        job.end_time = Some(SystemTime::now());
        match result {
            Ok(outputs) => {
                job.state = JobState::Completed;
                job.progress = 100;
                job.progress_message = "done".into();
                // A job without outputs keeps no allocation for them.
                job.outputs = (outputs != Outputs::default()).then(|| Arc::new(outputs));
            }
            Err(_) if cancelled => {
                job.state = JobState::Cancelled;
                job.progress_message = "cancelled".into();
                job.error = Some(Box::new(Error::Cancelled(
                    "cancelled while running; its statement was interrupted in the database \
                     (work the procedure committed before the cancel stays committed)"
                        .into(),
                )));
            }
            Err(error) => {
                job.state = JobState::Failed;
                job.progress_message = "failed".into();
                job.error = Some(Box::new(error));
            }
        }
    });
    {
        let job = tx.borrow();
        let duration = job.duration().unwrap_or_default();
        info!(state = job.state.name(), ?duration, "job ended");
    }
    registry.retire(&tx.borrow().id);
    registry.job_ended.notify_waiters();
}

/// Publishes a running call's progress and messages into its job.
struct JobProgress {
    tx: watch::Sender<JobSnapshot>,
    max_messages: usize,
}

impl JobProgress {
    /// Moves progress up (never down) and sets the message; notifies
    /// watchers only when something changed.
    fn advance(&self, percent: u32, message: Option<Cow<'static, str>>) {
        self.tx.send_if_modified(|job| {
            let mut changed = false;
            if percent > job.progress {
                job.progress = percent.min(100);
                changed = true;
            }
            if let Some(message) = message
                && job.progress_message != message
            {
                job.progress_message = message;
                changed = true;
            }
            changed
        });
    }
}

impl Progress for JobProgress {
    fn phase(&self, phase: Phase) {
        self.advance(phase.percent(), Some(phase.message().into()));
    }

    fn report(&self, percent: u32, message: Option<String>) {
        self.advance(percent, message.map(Cow::Owned));
    }

    fn message(&self, line: String) {
        self.tx
            .send_modify(|job| job.messages.push(line, self.max_messages));
    }
}
