//! Background jobs, in four layers:
//!
//! ```text
//! lifecycle ─▶ store ─▶ hub ─▶ api
//! ```
//!
//! - [`lifecycle`]: the legal transitions, pure functions over a snapshot,
//!   with every message and error they produce;
//! - the stores that apply them: the memory registry ([`JobRegistry`], with
//!   its scheduler and [`runner`]) and the database store ([`store`],
//!   [`DatabaseJobs`]), which stamps every change with one store-wide
//!   revision;
//! - the hub: each live job's `watch` channel, shared by every WatchJob of
//!   it on this instance (in database mode also for jobs that run on other
//!   instances), and the [`feed`] that WatchJobs streams read;
//! - [`JobStore`], the trait both stores implement, which the API talks to.
//!
//! A watcher that falls behind skips intermediate snapshots but always sees
//! the last, terminal one, and thousands of watchers of one job share one
//! channel.

mod distributed;
pub mod feed;
pub mod lifecycle;
mod live;
mod registry;
mod runner;
mod service;
pub mod store;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use std::sync::Arc;
use uuid::Uuid;

pub use distributed::{DatabaseJobs, StoreSettings};
pub use feed::{Feed, FeedEvent, Subscription, Tombstone, WatchFilter};
pub use registry::{JobRegistry, JobWatch, ListFilter, Page};
pub use service::{JobStore, Jobs};

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
    /// The store-wide revision of its last change.
    pub revision: u64,
    /// The revision taken when it was submitted: its place in submission
    /// order, which never changes.
    pub create_revision: u64,
}

impl JobSnapshot {
    /// How long it ran (or waited, if cancelled while pending), once ended.
    pub fn duration(&self) -> Option<Duration> {
        let end = self.end_time?;
        let start = self.start_time.unwrap_or(self.create_time);
        Some(end.duration_since(start).unwrap_or_default())
    }
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
    /// How long a deleted or expired job's tombstone is kept, for WatchJobs
    /// streams that resume from before it.
    pub tombstone_retention: Duration,
}
