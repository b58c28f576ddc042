//! Running one job that holds a slot: call the backend, publish every
//! change through the job's lifecycle, and say how it went.
//!
//! The runner knows a job only as a [`LiveJob`] and the backend: queues,
//! slots and retirement belong to the scheduler that called it. A job
//! starts (PENDING → RUNNING) when the backend reports its connection, so a
//! job that cannot get one never leaves PENDING and goes back to the head
//! of the queue.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures_util::FutureExt;
use tracing::{Instrument, info, warn};

use super::JobState;
use super::lifecycle;
use super::live::LiveJob;
use crate::backend::{Backend, Phase, Progress, SessionTag};
use crate::error::Error;
use crate::spool::keep::{self, Keeping};
use crate::telemetry::metrics::{Metrics, Mode, ProcedureLabel};

/// How a run went, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// The job ended (or was cancelled before it could start).
    Ended { database_down: bool },
    /// It never got a connection because the database is gone: it is still
    /// PENDING and should wait at the head of the queue.
    NoConnection,
}

pub(super) async fn run(
    backend: &Arc<dyn Backend>,
    job: &LiveJob,
    max_messages: usize,
    keeping: &Keeping,
    metrics: &Metrics,
) -> Ran {
    let observed = Arc::new(JobProgress {
        job: job.clone(),
        max_messages,
        metrics: metrics.clone(),
        run_started: Instant::now(),
        connected: Mutex::new(None),
        reached_statement: AtomicBool::new(false),
    });
    let progress: Arc<dyn Progress> = observed.clone();
    let (id, call, owner) = job.with(|j| (j.id, j.call.clone(), j.owner.clone()));
    let tag = SessionTag::job(id, owner);
    let running = keep::execute(
        backend.as_ref(),
        &call,
        &progress,
        &job.interrupt,
        id,
        keeping,
        &tag,
    )
    .instrument(crate::telemetry::trace::db_span(backend.kind(), &call));
    // A panic in the call must end the job, not leave it RUNNING forever.
    let result = AssertUnwindSafe(running)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            warn!("the job's call panicked");
            Err(Error::Internal(
                "the job's call panicked; see the gateway's log".into(),
            ))
        });
    let database_down = result.as_ref().is_err_and(Error::means_database_down);
    if database_down && job.with(|j| j.state == JobState::Pending) {
        return Ran::NoConnection;
    }
    let (result, spooled) = match result {
        Ok((outputs, spooled)) => (Ok(outputs), spooled),
        Err(e) => (Err(e), None),
    };
    if let Ok(outputs) = &result {
        for note in outputs.truncation_notes() {
            progress.message(note);
        }
    }
    // Asked for by a cancel, not by the call stopping itself (its result
    // did not fit in the spool).
    let cancelled = job.with(|j| j.cancel_requested) && job.interrupt.is_requested();
    observed.call_ended(&result, cancelled);
    let now = SystemTime::now();
    job.change(|j| {
        // A call that failed before its connection ends without starting.
        lifecycle::start(j, now);
        let ended = lifecycle::finish(j, result, cancelled, now);
        if ended && j.state == JobState::Completed {
            j.spool = spooled.map(Arc::new);
        }
        ended
    });
    job.with(|j| {
        let duration = j.duration().unwrap_or_default();
        info!(state = j.state.name(), ?duration, "job ended");
    });
    Ran::Ended { database_down }
}

/// Publishes a running call's progress and messages into its job, and
/// its waits and outcome into the metrics.
struct JobProgress {
    job: LiveJob,
    max_messages: usize,
    metrics: Metrics,
    run_started: Instant,
    /// When it got its connection.
    connected: Mutex<Option<Instant>>,
    /// Whether the database resolved the procedure and ran its statement.
    reached_statement: AtomicBool,
}

impl JobProgress {
    /// Counts this attempt's call: from its connection to its end.
    fn call_ended<T>(&self, result: &Result<T, Error>, cancelled: bool) {
        let code = match result {
            _ if cancelled => tonic::Code::Cancelled,
            Ok(_) => tonic::Code::Ok,
            Err(e) => crate::api::status::code_of(e),
        };
        crate::telemetry::trace::record_outcome(&tracing::Span::current(), code);
        let label = if self.reached_statement.load(Ordering::Relaxed) {
            ProcedureLabel::resolved(&self.job.with(|j| j.call.name.clone()))
        } else {
            ProcedureLabel::invalid()
        };
        let since = self
            .connected
            .lock()
            .expect("connected lock")
            .unwrap_or(self.run_started);
        self.metrics
            .call_ended(label, Mode::Job, code, since.elapsed());
    }

    fn advance(&self, percent: u32, message: Option<Cow<'static, str>>) {
        self.job
            .change(|job| lifecycle::progress(job, percent, message));
    }
}

impl Progress for JobProgress {
    fn phase(&self, phase: Phase) {
        if phase == Phase::Executing {
            self.reached_statement.store(true, Ordering::Relaxed);
        }
        if phase == Phase::ConnectionAcquired {
            self.metrics.connection_waited(self.run_started.elapsed());
            *self.connected.lock().expect("connected lock") = Some(Instant::now());
            let now = SystemTime::now();
            let mut first_start = None;
            self.job.change(|job| {
                let started = lifecycle::start(job, now);
                if started && job.attempt <= 1 {
                    first_start = Some(now.duration_since(job.create_time).unwrap_or_default());
                }
                let moved = lifecycle::progress(job, phase.percent(), Some(phase.message().into()));
                started || moved
            });
            if let Some(queued) = first_start {
                self.metrics.job_started_after(queued);
            }
            if self.job.with(|job| job.state.is_terminal()) {
                // Cancelled while it waited for the connection: a request
                // made before the statement refuses its start.
                self.job.interrupt.request();
            }
            return;
        }
        self.advance(phase.percent(), Some(phase.message().into()));
    }

    fn report(&self, percent: u32, message: Option<String>) {
        self.advance(percent, message.map(Cow::Owned));
    }

    fn message(&self, line: String) {
        self.job
            .change(|job| lifecycle::message(job, line, self.max_messages));
    }
}
