//! The jobs the API talks to: in this process's memory (one instance), or
//! in the database job store (durable, shared by every instance).
//!
//! An enum rather than a trait object: two implementations, chosen once at
//! start-up, with async methods.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    DatabaseJobs, FeedEvent, JobRegistry, JobSnapshot, JobWatch, ListFilter, Page, Subscription,
    WatchFilter,
};
use crate::auth::Caller;
use crate::call::ProcedureCall;
use crate::error::Result;

#[derive(Clone)]
pub enum Jobs {
    Memory(Arc<JobRegistry>),
    Database(Arc<DatabaseJobs>, Arc<JobRegistry>),
}

impl Jobs {
    /// The registry of the jobs that run in this process.
    pub fn local(&self) -> &Arc<JobRegistry> {
        match self {
            Jobs::Memory(registry) | Jobs::Database(_, registry) => registry,
        }
    }

    pub async fn submit(
        &self,
        call: ProcedureCall,
        request_id: Option<String>,
        owner: &Caller,
    ) -> Result<JobSnapshot> {
        match self {
            Jobs::Memory(registry) => registry.submit(call, request_id, owner),
            Jobs::Database(store, _) => store.submit(call, request_id, owner).await,
        }
    }

    pub async fn get(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        match self {
            Jobs::Memory(registry) => registry.get(id, caller),
            Jobs::Database(store, _) => store.get(id, caller).await,
        }
    }

    pub async fn list(
        &self,
        filter: &ListFilter,
        page_size: usize,
        page_token: &str,
        caller: &Caller,
    ) -> Result<Page> {
        match self {
            Jobs::Memory(registry) => registry.list(filter, page_size, page_token, caller),
            Jobs::Database(store, _) => store.list(filter, page_size, page_token, caller).await,
        }
    }

    pub async fn watch(&self, id: &str, caller: &Caller) -> Result<JobWatch> {
        match self {
            Jobs::Memory(registry) => registry.watch(id, caller),
            Jobs::Database(store, _) => store.watch(id, caller).await,
        }
    }

    /// The start of a WatchJobs stream and its place in the feed.
    pub async fn watch_jobs(
        &self,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> Result<(Subscription, Vec<FeedEvent>)> {
        match self {
            Jobs::Memory(registry) => registry.watch_jobs(filter, since),
            Jobs::Database(store, _) => store.watch_jobs(filter, since).await,
        }
    }

    pub async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        match self {
            Jobs::Memory(registry) => registry.cancel(id, caller),
            Jobs::Database(store, _) => store.cancel(id, caller).await,
        }
    }

    pub async fn delete(&self, id: &str, caller: &Caller) -> Result<()> {
        match self {
            Jobs::Memory(registry) => registry.delete(id, caller),
            Jobs::Database(store, _) => store.delete(id, caller).await,
        }
    }

    /// Removes jobs that ended more than `retention` ago; how many.
    pub async fn sweep(&self, retention: Duration) -> Result<u64> {
        match self {
            Jobs::Memory(registry) => Ok(registry.sweep(SystemTime::now()) as u64),
            Jobs::Database(store, _) => store.sweep(retention).await,
        }
    }

    /// Accepts no new jobs, cancels the running ones, waits for them to end.
    pub async fn shutdown(&self) {
        match self {
            Jobs::Memory(registry) => registry.shutdown().await,
            Jobs::Database(store, _) => store.shutdown().await,
        }
    }
}
