//! Jobs shared by every gateway in front of one database (`--job-store
//! database`).
//!
//! The table is the truth; each instance adds a local fast path:
//!
//! - **Submit** inserts a PENDING row and announces it (`pending`).
//! - **Claim**: each instance, whenever it has a free slot
//!   (`--max-running-jobs`), takes the oldest PENDING row with `FOR UPDATE
//!   SKIP LOCKED`, so a job submitted to a busy instance runs on an idle
//!   one. The claimed job runs through the same runner as in memory mode,
//!   and its local watch channel serves this instance's watchers at once.
//! - **Persist**: a writer per running job saves its progress at most every
//!   `--job-store-progress-interval`, and its end, each time announcing the
//!   job's id. Writes only apply while the row is this instance's RUNNING
//!   job, so nothing stale overwrites an end.
//! - **Follow**: GetJob and ListJobs read the table; WatchJob on an instance
//!   that does not run the job re-reads the row on each announcement (and
//!   every `--job-store-poll-interval`, in case one was missed).
//! - **Cancel**: a PENDING row is cancelled in the table; a RUNNING one is
//!   flagged and announced (`cancel:<id>`); the instance running it (told by
//!   the announcement, or by polling its flags) interrupts the statement.
//! - **Leases**: each instance renews a lease row; when one expires, any
//!   instance fails its RUNNING jobs with reason INTERRUPTED and forgets it.
//!   Pending jobs belong to no instance, so others simply claim them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::registry::{page_size_for, page_token_for, parse_id, parse_page_token};
use super::runner;
use super::store::{CancelOutcome, JobStore, StoredJob};
use super::{JobRegistry, JobSnapshot, JobState, JobWatch, ListFilter, Page};
use crate::auth::Caller;
use crate::call::ProcedureCall;
use crate::error::{Error, Result};

/// How the database store behaves.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The schema of procgate's tables.
    pub schema: String,
    /// This instance's name in leases and INTERRUPTED messages.
    pub instance_name: String,
    /// A lease not renewed for this long means the instance is gone.
    pub lease: Duration,
    /// Most frequent progress write per job.
    pub progress_interval: Duration,
    /// Fallback polling when a notification is missed.
    pub poll_interval: Duration,
}

pub struct DatabaseJobs {
    store: Arc<JobStore>,
    /// The jobs this instance runs, with their watch channels.
    local: Arc<JobRegistry>,
    instance: Uuid,
    settings: StoreSettings,
    notifications: broadcast::Sender<String>,
    wake_claimer: Notify,
    /// The writers of running jobs: shutdown waits for their last write.
    writers: TaskTracker,
    /// Every other task of the store (claims, lease, announcements, the
    /// listener, followers of other instances' jobs): all end with `stop`,
    /// and shutdown waits for them, so nothing is written after it.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl DatabaseJobs {
    /// Opens the store, joins the cluster and starts the background work
    /// (claiming, leases, recovery, cancel requests).
    pub async fn start(
        database_url: &str,
        settings: StoreSettings,
        local: Arc<JobRegistry>,
    ) -> Result<Arc<DatabaseJobs>> {
        let store = Arc::new(JobStore::open(database_url, &settings.schema, 16).await?);
        let instance = Uuid::new_v4();
        store
            .heartbeat(&instance, &settings.instance_name, settings.lease)
            .await?;
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let notifications = store.listen(&tasks, stop.clone());
        let jobs = Arc::new(DatabaseJobs {
            store,
            local,
            instance,
            settings,
            notifications,
            wake_claimer: Notify::new(),
            writers: TaskTracker::new(),
            tasks,
            stop,
        });
        info!(instance = %instance, name = %jobs.settings.instance_name, "joined the job store");
        jobs.spawn(jobs.clone().claim_forever());
        jobs.spawn(jobs.clone().keep_lease());
        jobs.spawn(jobs.clone().follow_announcements());
        Ok(jobs)
    }

    /// Runs `work` on a task of the store until it ends or the store stops.
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = work => {}
            }
        });
    }

    pub fn instance(&self) -> Uuid {
        self.instance
    }

    pub async fn submit(
        &self,
        call: ProcedureCall,
        request_id: Option<String>,
        owner: &Caller,
    ) -> Result<JobSnapshot> {
        if !self.local.is_accepting() {
            return Err(Error::Unavailable(
                "procgate is shutting down and accepts no new jobs".into(),
            ));
        }
        super::registry::check_request_id(request_id.as_deref())?;
        // Idempotency before capacity, as in memory: a retry gets its job
        // even when the queue is full.
        if let Some(request_id) = request_id.as_deref()
            && let Some(existing) = self
                .store
                .find_by_request_id(&owner.name, request_id)
                .await?
        {
            return super::same_call(existing.job, &call);
        }
        let max_pending = self.local.limits.max_pending;
        if self.store.pending().await? >= max_pending as i64 {
            return Err(Error::Exhausted(format!(
                "{max_pending} jobs are already waiting (--max-pending-jobs); retry later"
            )));
        }
        let job = JobSnapshot::pending(call, request_id.map(Into::into), owner.name.clone());
        let stored = self.store.insert(&job).await?;
        if stored.job.id != job.id {
            // Another submit with the same request_id won the race.
            return super::same_call(stored.job, &job.call);
        }
        self.store.notify("pending").await;
        Ok(stored.job)
    }

    pub async fn get(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        let id = parse_id(id)?;
        if let Ok(job) = self.local.get(&id.to_string(), caller) {
            return Ok(job); // fresher than the table
        }
        self.visible(&id, caller).await.map(|stored| stored.job)
    }

    async fn visible(&self, id: &Uuid, caller: &Caller) -> Result<StoredJob> {
        match self.store.get(id).await? {
            Some(stored) if caller.may_see(&stored.job.owner) => Ok(stored),
            _ => Err(Error::JobNotFound(id.to_string())),
        }
    }

    pub async fn list(
        &self,
        filter: &ListFilter,
        page_size: usize,
        page_token: &str,
        caller: &Caller,
    ) -> Result<Page> {
        let page_size = page_size_for(page_size);
        let before = parse_page_token(page_token)?.min(i64::MAX as u64) as i64;
        let owner = (!caller.admin).then_some(caller.name.as_ref());
        let mut rows = self
            .store
            .list(filter, owner, before, page_size as i64 + 1)
            .await?;
        let next_page_token = (rows.len() > page_size).then(|| {
            rows.truncate(page_size);
            page_token_for(rows[page_size - 1].seq as u64)
        });
        Ok(Page {
            jobs: rows.into_iter().map(|stored| stored.job).collect(),
            next_page_token,
        })
    }

    /// A live job of this instance streams from its channel; any other is
    /// followed through the table.
    pub async fn watch(&self, id: &str, caller: &Caller) -> Result<JobWatch> {
        let id = parse_id(id)?;
        if let Ok(watch) = self.local.watch(&id.to_string(), caller) {
            return Ok(watch);
        }
        let first = self.visible(&id, caller).await?;
        if first.job.state.is_terminal() {
            return Ok(JobWatch::Ended(Box::new(first.job)));
        }
        let (tx, rx) = watch::channel(first.job.clone());
        let store = self.store.clone();
        let mut announcements = self.notifications.subscribe();
        let poll = self.settings.poll_interval;
        self.spawn(async move {
            let mut version = first.version;
            let payload = id.to_string();
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(poll) => {}
                    heard = announcements.recv() => match heard {
                        Ok(p) if p == payload => {}
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
                match store.get(&id).await {
                    Ok(Some(stored)) if stored.version > version => {
                        version = stored.version;
                        let ended = stored.job.state.is_terminal();
                        tx.send_replace(stored.job);
                        if ended {
                            return;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return, // deleted
                    Err(e) => warn!(error = %e, "following a job through the store"),
                }
            }
        });
        Ok(JobWatch::Live(rx))
    }

    pub async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        let id = parse_id(id)?;
        self.visible(&id, caller).await?;
        match self.store.cancel(&id).await? {
            CancelOutcome::Cancelled(stored) => {
                self.store.notify(&id.to_string()).await;
                Ok(stored.job)
            }
            CancelOutcome::Requested(stored) => {
                if self.local.runs_here(&id) {
                    self.local
                        .cancel(&id.to_string(), &Caller::anonymous())
                        .await?;
                } else {
                    self.store.notify(&format!("cancel:{id}")).await;
                }
                Ok(stored.job)
            }
            CancelOutcome::Ended(state) => Err(Error::WrongJobState(format!(
                "job {id} is already {}; only PENDING or RUNNING jobs can be cancelled",
                state.name()
            ))),
            CancelOutcome::Missing => Err(Error::JobNotFound(id.to_string())),
        }
    }

    pub async fn delete(&self, id: &str, caller: &Caller) -> Result<()> {
        let id = parse_id(id)?;
        let stored = self.visible(&id, caller).await?;
        if self.store.delete(&id).await? {
            Ok(())
        } else {
            Err(Error::WrongJobState(format!(
                "job {id} is {}; cancel it first, or delete it once it has ended",
                stored.job.state.name()
            )))
        }
    }

    /// Deletes jobs that ended more than `retention` ago.
    pub async fn sweep(&self, retention: Duration) -> Result<u64> {
        self.store.sweep(retention).await
    }

    /// Stops claiming, cancels this instance's jobs, waits for them to be
    /// written, stops every task of the store, and leaves the cluster: once
    /// it returns, nothing of the store runs or writes.
    pub async fn shutdown(&self) {
        self.local.shutdown().await;
        self.local.until_idle().await;
        self.writers.close();
        self.writers.wait().await;
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.store.leave(&self.instance).await {
            warn!(error = %e, "could not leave the job store cleanly; the lease will expire");
        }
    }

    /// Takes PENDING jobs whenever a slot is free.
    async fn claim_forever(self: Arc<Self>) {
        let mut announcements = self.notifications.subscribe();
        loop {
            let permit = self
                .local
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the job semaphore is never closed");
            self.local.database_available().await;
            if !self.local.is_accepting() {
                return;
            }
            match self.store.claim(&self.instance).await {
                Ok(Some(stored)) => self.run_claimed(stored.job, permit),
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = self.wake_claimer.notified() => {}
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = wait_for(&mut announcements, |p| p == "pending") => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    warn!(error = %e, "claiming a job failed");
                    tokio::time::sleep(self.settings.poll_interval).await;
                }
            }
        }
    }

    fn run_claimed(self: &Arc<Self>, job: JobSnapshot, permit: tokio::sync::OwnedSemaphorePermit) {
        let id = job.id;
        let call = job.call.clone();
        let span = info_span!("job", %id, procedure = %call.display_name);
        let (tx, interrupt) = self.local.adopt(job);
        let persisted = tx.subscribe();
        tokio::spawn(
            runner::execute(self.local.clone(), call, tx, interrupt, permit).instrument(span),
        );
        self.writers.spawn(self.clone().persist(id, persisted));
    }

    /// Writes a running job's changes, coalesced, then its end.
    async fn persist(self: Arc<Self>, id: Uuid, mut changes: watch::Receiver<JobSnapshot>) {
        loop {
            let closed = changes.changed().await.is_err();
            let job = changes.borrow_and_update().clone();
            if job.state.is_terminal() || closed {
                return self.save_end(job).await;
            }
            if let Err(e) = self.store.save_progress(&job, &self.instance).await {
                warn!(%id, error = %e, "saving progress failed");
            }
            self.store.notify(&id.to_string()).await;
            // Coalesce: at most one progress write per interval, but the
            // end is never held back.
            let interval = self.settings.progress_interval;
            let ended = tokio::time::timeout(interval, changes.wait_for(|j| j.state.is_terminal()))
                .await
                .is_ok_and(|seen| seen.is_ok());
            if ended {
                let job = changes.borrow_and_update().clone();
                return self.save_end(job).await;
            }
        }
    }

    /// Writes a job's end (retrying while the store is unreachable), then
    /// announces it and lets the local copy go.
    async fn save_end(&self, job: JobSnapshot) {
        let id = job.id;
        let mut saved = self.store.save_end(&job, &self.instance).await;
        for _ in 0..10 {
            if saved.is_ok() {
                break;
            }
            tokio::time::sleep(self.settings.poll_interval).await;
            saved = self.store.save_end(&job, &self.instance).await;
        }
        match saved {
            Ok(true) => {}
            Ok(false) => {
                warn!(%id, "the job's end was not saved: another instance failed it as INTERRUPTED")
            }
            Err(e) => warn!(%id, error = %e, "the job's end could not be saved"),
        }
        self.store.notify(&id.to_string()).await;
        self.local.forget(&id);
    }

    /// Renews the lease and fails the jobs of instances that stopped
    /// renewing theirs.
    async fn keep_lease(self: Arc<Self>) {
        let every = self.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self
                .store
                .heartbeat(
                    &self.instance,
                    &self.settings.instance_name,
                    self.settings.lease,
                )
                .await
            {
                warn!(error = %e, "renewing the lease failed");
            }
            match self.store.recover().await {
                Ok(failed) => {
                    for id in failed {
                        warn!(%id, "failed a job of an instance whose lease expired: INTERRUPTED");
                        self.store.notify(&id.to_string()).await;
                    }
                }
                Err(e) => warn!(error = %e, "recovering expired instances failed"),
            }
        }
    }

    /// Acts on cancel announcements for this instance's jobs, and polls the
    /// cancel flags in case an announcement was missed.
    async fn follow_announcements(self: Arc<Self>) {
        let mut announcements = self.notifications.subscribe();
        loop {
            let to_cancel: Vec<Uuid> = tokio::select! {
                heard = announcements.recv() => match heard {
                    Ok(payload) => payload
                        .strip_prefix("cancel:")
                        .and_then(|id| Uuid::parse_str(id).ok())
                        .into_iter()
                        .collect(),
                    Err(broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(self.settings.poll_interval) => {
                    self.store.cancel_requests(&self.instance).await.unwrap_or_default()
                }
            };
            for id in to_cancel {
                if self.local.runs_here(&id) {
                    let _ = self
                        .local
                        .cancel(&id.to_string(), &Caller::anonymous())
                        .await;
                }
            }
        }
    }
}

/// Waits for an announcement matching `wanted` (or a lag, which may have
/// hidden one).
async fn wait_for(announcements: &mut broadcast::Receiver<String>, wanted: impl Fn(&str) -> bool) {
    loop {
        match announcements.recv().await {
            Ok(payload) if wanted(&payload) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl JobSnapshot {
    /// A new PENDING job.
    pub fn pending(
        call: ProcedureCall,
        request_id: Option<Arc<str>>,
        owner: Arc<str>,
    ) -> JobSnapshot {
        JobSnapshot {
            id: Uuid::new_v4(),
            state: JobState::Pending,
            progress: 0,
            progress_message: "queued".into(),
            create_time: SystemTime::now(),
            start_time: None,
            end_time: None,
            outputs: None,
            error: None,
            cancel_requested: false,
            call: Arc::new(call),
            messages: Default::default(),
            request_id,
            owner,
        }
    }
}
