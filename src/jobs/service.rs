//! The jobs the API talks to: the [`JobStore`] trait, the operations every
//! RPC about jobs needs. The engine (`super::engine`) implements it over
//! whichever table was chosen at start-up, memory or database, so both
//! answer the same calls with the same states, messages and errors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use tokio::sync::watch;

use super::plan::{RetryPolicy, Tick};
use super::{FeedEvent, JobSnapshot, ListFilter, Subscription, WatchFilter};
use crate::auth::Caller;
use crate::call::ProcedureCall;
use crate::error::Result;

/// How a watcher follows a job.
pub enum JobWatch {
    /// Every change until the end.
    Live(watch::Receiver<JobSnapshot>),
    /// It already ended: this is all there is.
    Ended(Box<JobSnapshot>),
}

/// One page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub jobs: Vec<JobSnapshot>,
    pub next_page_token: Option<String>,
}

/// What the API holds.
pub type Jobs = Arc<dyn JobStore>;

/// How a call is submitted, besides the call itself.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// The idempotency key (AIP-155).
    pub request_id: Option<String>,
    /// How it is tried again; None: one attempt.
    pub retry: Option<RetryPolicy>,
    /// PENDING this long after its submit, it fails EXPIRED.
    pub expire_after: Option<Duration>,
    /// The schedule tick it stands for.
    pub tick: Option<Tick>,
    /// Lines its messages start with (a catch-up job says what it stands for).
    pub messages: Vec<String>,
    /// What it says while it waits in the queue, instead of "queued".
    pub waiting: Option<String>,
    /// The W3C traceparent of the RPC that submitted it, for its run's
    /// span to link back to.
    pub trace_parent: Option<String>,
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Insert-or-get: queues a call as a job; a known `request_id` returns
    /// its job (ALREADY_EXISTS for another call), before capacity is
    /// checked.
    async fn submit(
        &self,
        call: ProcedureCall,
        submission: Submission,
        owner: &Caller,
    ) -> Result<JobSnapshot>;

    async fn get(&self, id: &str, caller: &Caller) -> Result<JobSnapshot>;

    /// One page, newest first by submission.
    async fn list(
        &self,
        filter: &ListFilter,
        page_size: usize,
        page_token: &str,
        caller: &Caller,
    ) -> Result<Page>;

    /// One job's changes (WatchJob).
    /// `since`: the revision the watcher already has; one this store never
    /// reached (it restarted) is FAILED_PRECONDITION, as in WatchJobs.
    async fn watch(&self, id: &str, caller: &Caller, since: Option<u64>) -> Result<JobWatch>;

    /// The change feed (WatchJobs): the stream's first events and its place
    /// in the feed.
    async fn watch_jobs(
        &self,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> Result<(Subscription, Vec<FeedEvent>)>;

    async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobSnapshot>;

    async fn delete(&self, id: &str, caller: &Caller) -> Result<()>;

    /// Removes jobs that ended more than `retention` ago; how many.
    async fn sweep(&self, retention: Duration) -> Result<u64>;

    /// How many jobs the store holds in each state (metrics).
    async fn count_by_state(&self) -> Result<Vec<(super::JobState, u64)>>;

    /// Accepts no new jobs, cancels the live ones, waits for them to end
    /// and stops every task of the store.
    async fn shutdown(&self);
}
