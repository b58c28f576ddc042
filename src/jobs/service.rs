//! The jobs the API talks to: the [`JobStore`] trait, with two
//! implementations chosen once at start-up: `JobRegistry` (registry.rs), in
//! this process's memory (one instance), and `DatabaseJobs`
//! (distributed.rs), in the database job store (durable, shared by every
//! instance).
//!
//! Both apply the same lifecycle (`super::lifecycle`) and feed WatchJobs
//! streams through the same [`super::feed`]; claiming and saving a job are
//! each store's own business, behind these operations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{FeedEvent, JobSnapshot, JobWatch, ListFilter, Page, Subscription, WatchFilter};
use crate::auth::Caller;
use crate::call::ProcedureCall;
use crate::error::Result;

/// What the API holds.
pub type Jobs = Arc<dyn JobStore>;

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Insert-or-get: queues a call as a job; a known `request_id` returns
    /// its job (ALREADY_EXISTS for another call), before capacity is
    /// checked.
    async fn submit(
        &self,
        call: ProcedureCall,
        request_id: Option<String>,
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
    async fn watch(&self, id: &str, caller: &Caller) -> Result<JobWatch>;

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

    /// Accepts no new jobs, cancels the live ones, waits for them to end
    /// and stops every task of the store.
    async fn shutdown(&self);
}
