//! A job's legal transitions, written once, as pure functions over a
//! snapshot, with every message and error they produce.
//!
//! ```text
//! PENDING ──start──▶ RUNNING ──finish──▶ COMPLETED | FAILED | CANCELLED
//!    │  ▲               ├──interrupt──▶ FAILED (INTERRUPTED)
//!    │  └──────retry────┘  (a transient failure, attempts left: backoff)
//!    ├──cancel_pending──────────────────▶ CANCELLED
//!    └──expire (before a first attempt)─▶ FAILED (EXPIRED)
//! ```
//!
//! The engine decides with these functions, on the job it runs (its watch
//! channel) or on a row a table holds (the memory table's lock, a
//! PostgreSQL row locked `FOR UPDATE`). Neither the map nor the SQL decides
//! a transition on its own, so both tables answer the same calls with the
//! same states, messages and errors. Each function returns
//! whether it changed the job; a refused transition changes nothing.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use super::plan::{AttemptError, JobPlan, human_wait};
use super::{JobSnapshot, JobState};
use crate::call::{Outputs, ProcedureCall};
use crate::error::Error;

/// A new PENDING job of `owner`, at its first attempt.
pub fn submit(
    call: ProcedureCall,
    request_id: Option<Arc<str>>,
    owner: Arc<str>,
    plan: JobPlan,
) -> JobSnapshot {
    JobSnapshot {
        id: Uuid::new_v4(),
        state: JobState::Pending,
        progress: 0,
        progress_message: QUEUED.into(),
        create_time: SystemTime::now(),
        start_time: None,
        end_time: None,
        outputs: None,
        spool: None,
        error: None,
        cancel_requested: false,
        call: Arc::new(call),
        messages: Default::default(),
        request_id,
        owner,
        revision: 0,
        create_revision: 0,
        plan: (!plan.is_plain()).then(|| Arc::new(plan)),
        attempt: 1,
        retries: None,
    }
}

/// What a job says while it waits in the queue.
const QUEUED: &str = "queued";

/// What a claimed job says while it waits for its connection.
pub const CLAIMED: &str = "waiting for a connection";

/// An instance took a PENDING job to run: it stays PENDING until it has a connection.
pub fn claim(job: &mut JobSnapshot) -> bool {
    if job.state != JobState::Pending {
        return false;
    }
    job.progress_message = CLAIMED.into();
    true
}

/// A claimed job goes back to the queue untouched: the instance that
/// claimed it is shutting down.
pub fn unclaim(job: &mut JobSnapshot) -> bool {
    if job.state != JobState::Pending {
        return false;
    }
    job.progress_message = QUEUED.into();
    true
}

/// A claimed job goes back to the queue: the database was gone before it
/// got a connection.
pub fn release(job: &mut JobSnapshot) -> bool {
    if job.state != JobState::Pending {
        return false;
    }
    job.progress_message = "queued; the database was unreachable".into();
    true
}

/// PENDING → RUNNING, once a slot and a connection are there; a job past
/// its expiry ends EXPIRED instead (it waited for a connection too long).
pub fn start(job: &mut JobSnapshot, now: SystemTime) -> bool {
    if job.state != JobState::Pending {
        return false;
    }
    if expire(job, now) {
        return true;
    }
    job.state = JobState::Running;
    job.start_time = Some(now);
    true
}

/// Progress moves up, never down; the message follows the latest report.
pub fn progress(job: &mut JobSnapshot, percent: u32, message: Option<Cow<'static, str>>) -> bool {
    if job.state != JobState::Running {
        return false;
    }
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
}

/// A line the procedure printed, keeping at most `max_messages`.
pub fn message(job: &mut JobSnapshot, line: String, max_messages: usize) -> bool {
    job.messages.push(line, max_messages);
    true
}

/// What CancelJob does to a job in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// It was PENDING: it is CANCELLED now and never reaches the database.
    Ended,
    /// It is RUNNING: flagged, and its statement is to be interrupted.
    Requested,
    /// It is RUNNING and was already flagged: nothing more to do.
    AlreadyRequested,
}

/// CancelJob: PENDING ends CANCELLED at once, RUNNING is flagged; a job that
/// already ended refuses.
pub fn cancel(job: &mut JobSnapshot, now: SystemTime) -> Result<Cancel, Error> {
    match job.state {
        JobState::Pending => {
            cancel_pending(job, now);
            Ok(Cancel::Ended)
        }
        JobState::Running if job.cancel_requested => Ok(Cancel::AlreadyRequested),
        JobState::Running => {
            job.cancel_requested = true;
            job.progress_message = "cancelling".into();
            Ok(Cancel::Requested)
        }
        JobState::Completed | JobState::Failed | JobState::Cancelled => {
            Err(already_ended(&job.id, job.state))
        }
    }
}

/// PENDING → CANCELLED; false when the job is no longer pending.
pub fn cancel_pending(job: &mut JobSnapshot, now: SystemTime) -> bool {
    if job.state != JobState::Pending {
        return false;
    }
    job.state = JobState::Cancelled;
    job.cancel_requested = true;
    job.end_time = Some(now);
    job.progress_message = "cancelled before it started".into();
    job.error = Some(Box::new(Error::Cancelled(
        "cancelled while waiting to run; it never reached the database".into(),
    )));
    true
}

/// RUNNING → COMPLETED, FAILED or CANCELLED, from the call's result.
/// `cancelled`: a cancel was requested, so a failure is the interruption.
pub fn finish(
    job: &mut JobSnapshot,
    result: Result<Outputs, Error>,
    cancelled: bool,
    now: SystemTime,
) -> bool {
    if job.state != JobState::Running {
        return false;
    }
    job.end_time = Some(now);
    match result {
        Ok(outputs) => {
            job.state = JobState::Completed;
            job.progress = 100;
            job.progress_message = "done".into();
            // A job without outputs keeps no allocation for them.
            job.outputs = (outputs != Outputs::default()).then(|| Arc::new(outputs));
        }
        // The procedure ignored the cancel and its session was ended.
        Err(error @ Error::Terminated { .. }) if cancelled => {
            job.state = JobState::Cancelled;
            job.progress_message = "cancelled".into();
            job.error = Some(Box::new(error));
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
        Err(error) if may_retry(job, &error) => retry(job, error, now),
        Err(error) => {
            job.state = JobState::Failed;
            job.progress_message = "failed".into();
            job.error = Some(Box::new(error));
        }
    }
    true
}

/// Whether a failed attempt is tried again: the error is transient and the
/// job's policy has attempts left.
fn may_retry(job: &JobSnapshot, error: &Error) -> bool {
    error.is_transient() && job.attempt < job.plan().retry.max_attempts
}

/// RUNNING → PENDING for the next attempt, after the policy's backoff
/// (with jitter); the failed attempt's error is kept.
fn retry(job: &mut JobSnapshot, error: Error, now: SystemTime) {
    let policy = job.plan().retry;
    let wait = policy
        .backoff(job.attempt, fastrand::f64() * 2.0 - 1.0)
        .min(super::plan::MAX_BACKOFF);
    let retries = job.retries.get_or_insert_with(Default::default);
    retries.push(AttemptError { time: now, error });
    retries.not_before = Some(now + wait);
    job.attempt += 1;
    job.state = JobState::Pending;
    job.start_time = None;
    job.end_time = None;
    job.progress = 0;
    job.progress_message = format!(
        "retrying in {} (attempt {} of {})",
        human_wait(wait),
        job.attempt,
        policy.max_attempts
    )
    .into();
}

/// PENDING → FAILED with reason EXPIRED: it is past its expiry before its
/// first attempt, so it never starts (yesterday's batch must not run today).
pub fn expire(job: &mut JobSnapshot, now: SystemTime) -> bool {
    if !job.is_expired_at(now) {
        return false;
    }
    let waited = now.duration_since(job.create_time).unwrap_or_default();
    job.state = JobState::Failed;
    job.end_time = Some(now);
    job.progress_message = "expired".into();
    job.error = Some(Box::new(Error::Expired(format!(
        "EXPIRED: still PENDING {} after it was submitted, past its expire_after; it never \
         started",
        human_wait(waited)
    ))));
    true
}

/// RUNNING → FAILED with reason INTERRUPTED: the instance running it
/// stopped renewing its lease, so whether the procedure finished is unknown.
pub fn interrupt(
    job: &mut JobSnapshot,
    instance: &str,
    lease_until: SystemTime,
    now: SystemTime,
) -> bool {
    if job.state != JobState::Running {
        return false;
    }
    let lease_until = chrono::DateTime::<chrono::Utc>::from(lease_until);
    let error = Error::Interrupted(format!(
        "INTERRUPTED: instance {instance} stopped renewing its lease at {} while running this \
         job; whether the procedure finished is unknown",
        lease_until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    ));
    if may_retry(job, &error) {
        retry(job, error, now);
        return true;
    }
    job.state = JobState::Failed;
    job.end_time = Some(now);
    job.progress_message = "interrupted".into();
    job.error = Some(Box::new(error));
    true
}

/// The job as it was when submitted (revision `create_revision`), for a
/// feed reader that first sees it later, so that its submit is not lost.
pub fn as_submitted(job: &JobSnapshot) -> JobSnapshot {
    JobSnapshot {
        state: JobState::Pending,
        progress: 0,
        progress_message: QUEUED.into(),
        start_time: None,
        end_time: None,
        outputs: None,
        spool: None,
        error: None,
        cancel_requested: false,
        messages: Default::default(),
        revision: job.create_revision,
        attempt: 1,
        retries: None,
        ..job.clone()
    }
}

/// The job as it was when it started (revision `start_revision`), for a
/// feed reader that first sees it ended.
pub fn as_started(job: &JobSnapshot, start_revision: u64) -> JobSnapshot {
    JobSnapshot {
        state: JobState::Running,
        progress: job.progress.min(crate::backend::INDETERMINATE_MAX),
        progress_message: "connection acquired".into(),
        end_time: None,
        outputs: None,
        spool: None,
        error: None,
        revision: start_revision,
        ..job.clone()
    }
}

/// Whether a finished job is past its retention at `now`.
pub fn expired(job: &JobSnapshot, retention: std::time::Duration, now: SystemTime) -> bool {
    job.end_time
        .is_some_and(|end| now.duration_since(end).unwrap_or_default() >= retention)
}

/// DeleteJob: only a job that ended may be forgotten.
pub fn delete(job: &JobSnapshot) -> Result<(), Error> {
    if job.state.is_terminal() {
        Ok(())
    } else {
        Err(Error::WrongJobState(format!(
            "job {} is {}; cancel it first, or delete it once it has ended",
            job.id,
            job.state.name()
        )))
    }
}

/// The refusal to cancel a job that already ended.
pub fn already_ended(id: &Uuid, state: JobState) -> Error {
    Error::WrongJobState(format!(
        "job {id} is already {}; only PENDING or RUNNING jobs can be cancelled",
        state.name()
    ))
}

/// A request_id reused for another call (AIP-155).
pub fn request_id_taken(existing: &JobSnapshot) -> Error {
    Error::AlreadyExists(format!(
        "request_id {:?} already names job {}, a call of {} with other parameters or another \
         procedure; send a new request_id for a different call",
        existing.request_id.as_deref().unwrap_or_default(),
        existing.id,
        existing.call.display_name
    ))
}

/// The refusal of a submit past `--max-pending-jobs`.
pub fn queue_full(max_pending: usize) -> Error {
    Error::Exhausted(format!(
        "{max_pending} jobs are already waiting (--max-pending-jobs); retry later"
    ))
}

/// How a watch stream ends when the instance shuts down before its job
/// (or feed) did.
pub fn watch_interrupted_by_shutdown() -> Error {
    Error::Unavailable(
        "procgate is shutting down: watch again (another instance, or this one once it is back) \
         with since_revision set to the last revision you saw"
            .into(),
    )
}

/// The refusal of a submit during shutdown.
pub fn shutting_down() -> Error {
    Error::Unavailable("procgate is shutting down and accepts no new jobs".into())
}

/// A request_id names one call: a retry of that call gets its job back, and
/// another call (another procedure, other parameters) is refused rather
/// than silently answered with the first one's job (AIP-155).
/// The same call means the same procedure (plain names compared as the
/// database folds them) and the same parameters in any order, since they
/// bind by name.
pub fn same_call(existing: JobSnapshot, call: &ProcedureCall) -> Result<JobSnapshot, Error> {
    fn by_name(call: &ProcedureCall) -> Vec<&crate::call::Param> {
        let mut params: Vec<_> = call.params.iter().collect();
        params.sort_by_key(|p| p.name.folded_lower());
        params
    }
    let same = existing.call.name.normalised() == call.name.normalised()
        && existing.call.returns == call.returns
        && existing.call.params.len() == call.params.len()
        && by_name(&existing.call)
            .into_iter()
            .zip(by_name(call))
            .all(|(a, b)| {
                a.name.folded_lower() == b.name.folded_lower()
                    && (a.direction, a.value_type, &a.value, a.size)
                        == (b.direction, b.value_type, &b.value, b.size)
            });
    if same {
        Ok(existing)
    } else {
        Err(request_id_taken(&existing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::ProcedureName;

    fn job() -> JobSnapshot {
        let call = ProcedureCall {
            name: ProcedureName::parse("pkg.p").unwrap(),
            display_name: "pkg.p".into(),
            params: Vec::new(),
            returns: None,
            overload: None,
        };
        submit(call, None, "".into(), JobPlan::PLAIN)
    }

    #[test]
    fn a_job_moves_only_forward() {
        let now = SystemTime::now();
        let mut job = job();
        assert!(!finish(&mut job, Ok(Outputs::default()), false, now));
        assert!(!progress(&mut job, 50, None), "no progress before it runs");
        assert!(start(&mut job, now));
        assert!(!start(&mut job, now), "started once");
        assert!(progress(&mut job, 40, None));
        assert!(!progress(&mut job, 30, None), "never backwards");
        assert_eq!(job.progress, 40);
        assert!(finish(&mut job, Ok(Outputs::default()), false, now));
        assert_eq!((job.state, job.progress), (JobState::Completed, 100));
        assert!(!interrupt(&mut job, "a", now, now), "an end is final");
        assert!(cancel(&mut job, now).is_err());
        assert!(delete(&job).is_ok());
    }

    #[test]
    fn cancel_ends_a_pending_job_and_flags_a_running_one() {
        let now = SystemTime::now();
        let mut pending = job();
        assert_eq!(cancel(&mut pending, now).unwrap(), Cancel::Ended);
        assert_eq!(pending.state, JobState::Cancelled);
        assert!(!start(&mut pending, now), "a cancelled job never starts");

        let mut running = job();
        start(&mut running, now);
        assert!(delete(&running).is_err(), "a live job cannot be deleted");
        assert_eq!(cancel(&mut running, now).unwrap(), Cancel::Requested);
        assert_eq!(cancel(&mut running, now).unwrap(), Cancel::AlreadyRequested);
        finish(&mut running, Err(Error::Internal("x".into())), true, now);
        assert_eq!(running.state, JobState::Cancelled);
    }

    #[test]
    fn an_interrupted_job_says_which_instance_and_that_its_end_is_unknown() {
        let now = SystemTime::now();
        let mut job = job();
        start(&mut job, now);
        assert!(interrupt(&mut job, "b (3f0c)", now, now));
        let error = job.error.unwrap().to_string();
        assert!(error.contains("INTERRUPTED: instance b (3f0c)"), "{error}");
        assert!(error.contains("unknown"), "{error}");
    }
}
