//! Background jobs, in four layers:
//!
//! ```text
//! lifecycle ─▶ table ─▶ hub ─▶ api
//! ```
//!
//! - [`lifecycle`]: the legal transitions, pure functions over a snapshot,
//!   with every message and error they produce;
//! - the [`table`] that keeps the jobs and applies them, stamping every
//!   change with one table-wide revision: in memory
//!   ([`store::memory::MemoryTable`]) or in PostgreSQL
//!   ([`store::PostgresStore`]);
//! - the [`engine`], one for every table: its scheduler claims jobs in
//!   submission order and runs them ([`runner`], in [`local`] slots), its
//!   writers save what they do, and its hub follows the table's change feed
//!   into one `watch` channel per followed job, shared by every WatchJob of
//!   it on this instance, and into the [`feed`] that WatchJobs streams read;
//! - [`JobStore`], the operations the API calls, which the engine
//!   implements.
//!
//! A watcher that falls behind skips intermediate snapshots but always sees
//! the last, terminal one, and thousands of watchers of one job share one
//! channel.

mod engine;
pub mod feed;
pub mod lifecycle;
pub mod limits;
mod live;
mod local;
pub mod plan;
mod runner;
mod service;
pub mod store;
pub mod table;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use std::sync::Arc;
use uuid::Uuid;

pub use engine::{Engine, StoreSettings};
pub use feed::{Feed, FeedEvent, Subscription, Tombstone, WatchFilter};
pub use local::LocalJobs;
pub use service::{JobStore, JobWatch, Jobs, Page, Submission};
pub use table::{JobTable, ListFilter};

use crate::backend::MessageLog;
use crate::call::{Outputs, ProcedureCall};
use crate::error::Error;
use plan::{JobPlan, Retries};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

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
    /// Holds its spooled result rows (memory mode): they are freed when
    /// the last copy of the job goes.
    pub spool: Option<Arc<crate::spool::SpoolHold>>,
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
    /// Its retry policy, expiry and schedule tick; None for a plain job.
    pub plan: Option<Arc<JobPlan>>,
    /// 1-based: the attempt running, or the last one run.
    pub attempt: u32,
    /// Set once an attempt failed and was tried again.
    pub retries: Option<Box<Retries>>,
}

impl JobSnapshot {
    /// About the bytes it holds beyond its fixed fields: its parameters'
    /// values, outputs, messages and error, for `--max-retained-bytes`.
    pub fn approximate_bytes(&self) -> usize {
        let outputs = self.outputs.as_deref().map_or(0, Outputs::approximate_size);
        let messages: usize = self.messages.lines.iter().map(String::len).sum();
        let error = self.error.as_ref().map_or(0, |e| e.to_string().len());
        self.call.approximate_size() + outputs + messages + error
    }

    /// What it was submitted with besides its call.
    pub fn plan(&self) -> &JobPlan {
        self.plan.as_deref().unwrap_or(&JobPlan::PLAIN)
    }

    /// The schedule that submitted it, if one did.
    pub fn schedule_id(&self) -> Option<Uuid> {
        self.plan().tick.map(|t| t.schedule_id)
    }

    /// When its next attempt may start, if it waits for a retry's backoff.
    pub fn not_before(&self) -> Option<SystemTime> {
        self.retries.as_ref().and_then(|r| r.not_before)
    }

    /// Whether it may be claimed at `now`: not waiting for a backoff, and
    /// not past its expiry before a first attempt.
    pub fn claimable_at(&self, now: SystemTime) -> bool {
        self.not_before().is_none_or(|t| t <= now) && !self.is_expired_at(now)
    }

    /// Whether it is PENDING before its first attempt past its expiry.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.state == JobState::Pending
            && self.attempt <= 1
            && self.plan().expire_time.is_some_and(|t| t <= now)
    }

    /// How long it ran (or waited, if cancelled while pending), once ended.
    pub fn duration(&self) -> Option<Duration> {
        let end = self.end_time?;
        let start = self.start_time.unwrap_or(self.create_time);
        Some(end.duration_since(start).unwrap_or_default())
    }
}

/// The limits the engine enforces.
#[derive(Debug, Clone)]
pub struct JobLimits {
    /// Jobs running at once on this instance.
    pub max_running: usize,
    /// Jobs waiting; SubmitAsync answers RESOURCE_EXHAUSTED past it.
    pub max_pending: usize,
    /// Most jobs the memory table keeps; the oldest finished ones go first.
    pub max_retained: usize,
    /// Most bytes the memory table's jobs hold (`--max-retained-bytes`);
    /// past it, the oldest finished ones go first.
    pub max_retained_bytes: usize,
    /// Messages kept per job.
    pub max_messages: usize,
}
