//! Background jobs: the registry that holds them and the runner that moves
//! them through their lifecycle.
//!
//! ```text
//! PENDING ──▶ RUNNING ──▶ COMPLETED | FAILED | CANCELLED
//!    └──────────────────▶ CANCELLED
//! ```
//!
//! Each job's state lives in a tokio `watch` channel: the runner writes
//! snapshots, and every reader (GetJob, ListJobs, any number of WatchJob
//! streams) reads the latest one. A watcher that falls behind skips
//! intermediate snapshots but always sees the last, terminal one, and
//! thousands of watchers of one job share that one channel.

mod distributed;
mod registry;
mod runner;
mod service;
pub mod store;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use std::sync::Arc;
use uuid::Uuid;

pub use distributed::{DatabaseJobs, StoreSettings};
pub use registry::{JobRegistry, JobWatch, ListFilter, Page};
pub use service::Jobs;

use crate::backend::MessageLog;
use crate::call::{Outputs, ProcedureCall};
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    /// The state a stored name stands for; None for anything else, never a
    /// guess.
    pub fn parse(name: &str) -> Option<JobState> {
        Some(match name {
            "PENDING" => JobState::Pending,
            "RUNNING" => JobState::Running,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// Everything known about a job at one moment.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    pub id: Uuid,
    pub state: JobState,
    pub progress: u32,
    /// Phase messages are static; the procedure's own are owned.
    pub progress_message: Cow<'static, str>,
    pub create_time: SystemTime,
    pub start_time: Option<SystemTime>,
    pub end_time: Option<SystemTime>,
    pub outputs: Option<Arc<Outputs>>,
    /// Why it failed or was cancelled.
    /// Boxed: most jobs have none, and a retained job should stay small.
    pub error: Option<Box<Error>>,
    pub cancel_requested: bool,
    /// The call as submitted (its name and parameters are echoed back).
    pub call: Arc<ProcedureCall>,
    /// Newest last, at most `JobLimits::max_messages`.
    pub messages: MessageLog,
    pub request_id: Option<Arc<str>>,
    /// The name of the token that submitted it (empty without auth).
    pub owner: Arc<str>,
}

impl JobSnapshot {
    /// How long it ran (or waited, if cancelled while pending), once ended.
    pub fn duration(&self) -> Option<Duration> {
        let end = self.end_time?;
        let start = self.start_time.unwrap_or(self.create_time);
        Some(end.duration_since(start).unwrap_or_default())
    }
}

/// A request_id names one call: a retry of that call gets its job back, and
/// another call (another procedure, other parameters) is refused rather
/// than silently answered with the first one's job (AIP-155).
pub(crate) fn same_call(existing: JobSnapshot, call: &ProcedureCall) -> Result<JobSnapshot, Error> {
    if *existing.call == *call {
        return Ok(existing);
    }
    Err(Error::AlreadyExists(format!(
        "request_id {:?} already names job {}, a call of {} with other parameters or another \
         procedure; send a new request_id for a different call",
        existing.request_id.as_deref().unwrap_or_default(),
        existing.id,
        existing.call.display_name
    )))
}

/// The limits the registry enforces.
#[derive(Debug, Clone)]
pub struct JobLimits {
    /// Jobs running at once.
    pub max_running: usize,
    /// Jobs waiting; SubmitAsync answers RESOURCE_EXHAUSTED past it.
    pub max_pending: usize,
    /// How long a finished job is kept.
    pub retention: Duration,
    /// Most jobs kept; the oldest finished ones go first.
    pub max_retained: usize,
    /// Messages kept per job.
    pub max_messages: usize,
}
