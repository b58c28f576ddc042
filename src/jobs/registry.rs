//! The job registry: every job of this process by id, newest-first order,
//! idempotency keys, and the scheduler that owns the queue.
//!
//! One std `Mutex` guards the maps; it is held only for map operations,
//! never across an await or a database call. A live job's state lives in
//! its `watch` channel ([`LiveJob`]), so readers of one job do not contend
//! with writers of another. Once a job ends it keeps only its final
//! snapshot: nothing is left to notify or cancel, and a retained job costs a
//! few hundred bytes instead of a channel and an interrupt. Listing walks a
//! `BTreeMap` keyed by the revision taken at submit (`create_revision`), so
//! a page costs the page (plus skipped non-matching jobs), not a scan of
//! every job; the page token is that revision.
//!
//! The scheduler is one task: it starts the oldest queued job whenever a
//! slot is free and the database is believed up. A job that finds the
//! database gone before it got a connection is still PENDING and goes back
//! into the queue at its place, so jobs start in submission order, also
//! after an outage.
//!
//! In memory mode the registry is the store and records every change in
//! its [`Feed`]; in database mode it only holds the jobs this instance
//! runs, and the store stamps their revisions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};
use uuid::Uuid;

use super::feed::{Feed, FeedEvent, Subscription, WatchFilter};
use super::lifecycle::{self, Cancel};
use super::live::LiveJob;
use super::runner::{self, Ran};
use super::{JobLimits, JobSnapshot, JobState, JobStore};
use crate::auth::Caller;
use crate::backend::Backend;
use crate::call::ProcedureCall;
use crate::error::{Error, Result};
use crate::name::printable;

const MAX_REQUEST_ID_LEN: usize = 128;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

pub struct JobRegistry {
    jobs: Mutex<Jobs>,
    backend: Arc<dyn Backend>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) limits: JobLimits,
    /// Memory mode: where every change is recorded; None in database mode.
    feed: Option<Arc<Feed>>,
    accepting: AtomicBool,
    /// Woken each time a job ends, for [`JobRegistry::until_idle`].
    job_ended: Notify,
    /// Woken each time a job is queued, for the scheduler.
    queued: Notify,
    /// Whether the database is believed reachable: pending jobs wait while
    /// it is not, instead of failing one after the other.
    database_up: watch::Sender<bool>,
    /// Counts the jobs' reports that the database is gone, so that a health
    /// probe that started before one cannot undo it.
    down_reports: AtomicU64,
    /// The scheduler and every running job; shutdown waits for them.
    tasks: TaskTracker,
    stop: CancellationToken,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<Uuid, Entry>,
    /// Submission order: create_revision → id.
    order: BTreeMap<u64, Uuid>,
    /// (owner, request_id) → job: idempotency keys are per owner.
    by_request_id: HashMap<(Arc<str>, Arc<str>), Uuid>,
    /// PENDING jobs waiting for a slot, oldest first.
    queue: BTreeMap<u64, LiveJob>,
}

impl Jobs {
    fn insert_live(&mut self, job: LiveJob) {
        let (id, order) = job.with(|j| (j.id, j.create_revision));
        self.order.insert(order, id);
        self.by_id.insert(
            id,
            Entry {
                order,
                slot: Slot::Live(job),
            },
        );
    }

    fn remove(&mut self, id: &Uuid) -> Option<JobSnapshot> {
        let entry = self.by_id.remove(id)?;
        self.order.remove(&entry.order);
        self.queue.remove(&entry.order);
        let job = entry.snapshot();
        if let Some(request_id) = &job.request_id {
            self.by_request_id
                .remove(&(job.owner.clone(), request_id.clone()));
        }
        Some(job)
    }
}

struct Entry {
    order: u64,
    slot: Slot,
}

enum Slot {
    /// Pending or running: watchers follow the channel, a cancel reaches
    /// the interrupt.
    Live(LiveJob),
    /// Ended: only the final snapshot is kept.
    Ended(Box<JobSnapshot>),
}

impl Entry {
    /// Reads the current snapshot without copying it.
    fn with<R>(&self, read: impl FnOnce(&JobSnapshot) -> R) -> R {
        match &self.slot {
            Slot::Live(job) => job.with(read),
            Slot::Ended(snapshot) => read(snapshot),
        }
    }

    fn snapshot(&self) -> JobSnapshot {
        self.with(JobSnapshot::clone)
    }
}

/// How a watcher follows a job.
pub enum JobWatch {
    /// Every change until the end.
    Live(watch::Receiver<JobSnapshot>),
    /// It already ended: this is all there is.
    Ended(Box<JobSnapshot>),
}

/// Which jobs ListJobs returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Empty: every state.
    pub states: HashSet<JobState>,
    /// Compared case-insensitively; None: every procedure.
    pub procedure: Option<String>,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub jobs: Vec<JobSnapshot>,
    pub next_page_token: Option<String>,
}

impl JobRegistry {
    /// A registry; with a feed it is the memory store and records every
    /// change there, without one it serves the database store.
    pub fn new(backend: Arc<dyn Backend>, limits: JobLimits, feed: Option<Arc<Feed>>) -> Arc<Self> {
        let registry = Arc::new(Self {
            jobs: Mutex::new(Jobs::default()),
            backend,
            slots: Arc::new(Semaphore::new(limits.max_running)),
            limits,
            feed,
            accepting: AtomicBool::new(true),
            job_ended: Notify::new(),
            queued: Notify::new(),
            database_up: watch::Sender::new(false),
            down_reports: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        if registry.feed.is_some() {
            registry.tasks.spawn(registry.clone().schedule());
        }
        registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().expect("registry lock")
    }

    fn feed(&self) -> &Arc<Feed> {
        self.feed
            .as_ref()
            .expect("only the memory store submits, lists changes and keeps tombstones")
    }

    /// Cancels a job: PENDING ends at once, RUNNING is interrupted in the
    /// database and ends CANCELLED when its statement returns.
    pub fn cancel(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        let id = parse_id(id)?;
        let mut jobs = self.lock();
        let job = match &visible(&jobs, &id, caller)?.slot {
            Slot::Live(job) => job.clone(),
            Slot::Ended(job) => return Err(lifecycle::already_ended(&id, job.state)),
        };
        let now = SystemTime::now();
        let mut outcome = Ok(Cancel::AlreadyRequested);
        job.change(|j| {
            outcome = lifecycle::cancel(j, now);
            matches!(outcome, Ok(Cancel::Ended | Cancel::Requested))
        });
        match outcome? {
            Cancel::Ended => {
                let order = job.with(|j| j.create_revision);
                jobs.queue.remove(&order);
                // A job waiting for its connection is refused its start.
                job.interrupt.request();
                retire(&mut jobs, &id);
                drop(jobs);
                self.job_ended.notify_waiters();
            }
            Cancel::Requested | Cancel::AlreadyRequested => job.interrupt.request(),
        }
        Ok(job.snapshot())
    }

    /// Starts the oldest queued job whenever a slot is free and the
    /// database is believed up; stops with the registry.
    async fn schedule(self: Arc<Self>) {
        loop {
            let queued = self.queued.notified();
            if self.lock().queue.is_empty() {
                tokio::select! {
                    () = queued => continue,
                    () = self.stop.cancelled() => return,
                }
            }
            let permit = tokio::select! {
                () = self.stop.cancelled() => return,
                permit = async {
                    self.database_available().await;
                    self.slots.clone().acquire_owned().await
                } => permit.expect("the job semaphore is never closed"),
            };
            if !self.database_is_up() {
                continue;
            }
            let Some((_, job)) = self.lock().queue.pop_first() else {
                continue; // cancelled meanwhile
            };
            job.change(lifecycle::claim);
            self.tasks.spawn(self.clone().run(job, permit));
        }
    }

    /// Runs a job that holds a slot, then puts it back in the queue (no
    /// connection: the database is gone) or retires it.
    async fn run(self: Arc<Self>, job: LiveJob, permit: OwnedSemaphorePermit) {
        let (id, procedure) = job.with(|j| (j.id, j.call.display_name.clone()));
        let span = info_span!("job", %id, %procedure);
        let ran = runner::run(&self.backend, &job, self.limits.max_messages)
            .instrument(span)
            .await;
        match ran {
            Ran::NoConnection => {
                self.report_database_down();
                drop(permit);
                job.change(lifecycle::release);
                let order = job.with(|j| j.create_revision);
                let mut jobs = self.lock();
                if self.feed.is_none() {
                    // Database mode: its writer gives the claim back to the
                    // store once this last handle is gone.
                    jobs.remove(&id);
                } else if job.with(|j| j.state == JobState::Pending) && jobs.by_id.contains_key(&id)
                {
                    // Back at its place: jobs start in submission order.
                    jobs.queue.insert(order, job);
                    drop(jobs);
                    self.queued.notify_one();
                } else {
                    retire(&mut jobs, &id); // cancelled meanwhile
                    drop(jobs);
                    self.job_ended.notify_waiters();
                }
            }
            Ran::Ended { database_down } => {
                if database_down {
                    // Before the slot frees: the next job must wait, not fail.
                    self.report_database_down();
                }
                drop(permit);
                retire(&mut self.lock(), &id);
                self.job_ended.notify_waiters();
            }
        }
    }

    /// Database mode: runs a job claimed from the store, already RUNNING,
    /// in a slot this instance took; returns its changes, from before it
    /// runs.
    pub(super) fn run_claimed(
        self: &Arc<Self>,
        job: JobSnapshot,
        permit: OwnedSemaphorePermit,
    ) -> watch::Receiver<JobSnapshot> {
        let job = LiveJob::new(job, None);
        let changes = job.subscribe();
        self.lock().insert_live(job.clone());
        self.tasks.spawn(self.clone().run(job, permit));
        changes
    }

    /// Drops a job this instance no longer needs to hold (the store has it).
    pub(super) fn forget(&self, id: &Uuid) {
        self.lock().remove(id);
    }

    /// The jobs live on this instance.
    pub(super) fn live_ids(&self) -> Vec<Uuid> {
        self.lock()
            .by_id
            .iter()
            .filter(|(_, e)| matches!(e.slot, Slot::Live(_)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether the job is live on this instance.
    pub(super) fn runs_here(&self, id: &Uuid) -> bool {
        self.lock()
            .by_id
            .get(id)
            .is_some_and(|e| matches!(e.slot, Slot::Live(_)))
    }

    /// A job found the database gone.
    pub(super) fn report_database_down(&self) {
        self.down_reports.fetch_add(1, Ordering::SeqCst);
        self.set_database_up(false);
    }

    /// Call before a health probe; pass the result to [`Self::report_probe`].
    pub fn probe_started(&self) -> u64 {
        self.down_reports.load(Ordering::SeqCst)
    }

    /// A health probe's result. A success does not count when a job
    /// reported the database gone while the probe ran.
    pub fn report_probe(&self, up: bool, started: u64) {
        if up && self.down_reports.load(Ordering::SeqCst) != started {
            return;
        }
        self.set_database_up(up);
    }

    fn set_database_up(&self, up: bool) {
        self.database_up.send_if_modified(|current| {
            let changed = *current != up;
            *current = up;
            changed
        });
    }

    pub(super) fn database_is_up(&self) -> bool {
        *self.database_up.borrow()
    }

    /// Resolves once the database is believed reachable.
    pub(super) async fn database_available(&self) {
        let mut up = self.database_up.subscribe();
        // The sender lives as long as the registry, which outlives this wait.
        let _ = up.wait_for(|up| *up).await;
    }

    /// Removes a job, with a tombstone for WatchJobs in memory mode.
    fn remove(&self, jobs: &mut Jobs, id: &Uuid, now: SystemTime) {
        if let Some(job) = jobs.remove(id)
            && let Some(feed) = &self.feed
        {
            feed.record_deleted(&job, now);
        }
    }

    /// Removes finished jobs older than the retention period, and
    /// tombstones older than theirs.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let mut jobs = self.lock();
        let expired: Vec<Uuid> = jobs
            .by_id
            .iter()
            .filter(|(_, entry)| {
                entry.with(|job| lifecycle::expired(job, self.limits.retention, now))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.remove(&mut jobs, id, now);
        }
        // Maps keep their capacity after removals: give most of it back once
        // a burst of jobs is gone.
        if jobs.by_id.capacity() > 4 * jobs.by_id.len().max(1024) {
            jobs.by_id.shrink_to_fit();
            jobs.by_request_id.shrink_to_fit();
        }
        drop(jobs);
        if let Some(feed) = &self.feed {
            feed.purge_tombstones(now);
        }
        expired.len()
    }

    pub(super) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Stops accepting jobs, cancels every pending and running one, waits
    /// for them to end and stops the scheduler: once it returns, no task of
    /// the registry runs.
    pub async fn shutdown(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        for id in self.live_ids() {
            // A job that ended meanwhile refuses the cancel; nothing to do.
            let _ = self.cancel(&id.to_string(), &Caller::anonymous());
        }
        self.until_idle().await;
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Resolves once no job is pending or running.
    pub async fn until_idle(&self) {
        loop {
            // Created before the check, so an end between the two is not missed.
            let ended = self.job_ended.notified();
            if self.live_jobs() == 0 {
                return;
            }
            ended.await;
        }
    }

    fn live_jobs(&self) -> usize {
        self.lock()
            .by_id
            .values()
            .filter(|e| matches!(e.slot, Slot::Live(_)))
            .count()
    }

    /// Keeps at most `max_retained` jobs by dropping the oldest finished ones.
    fn evict_over_cap(&self, jobs: &mut Jobs) {
        let excess = (jobs.by_id.len() + 1).saturating_sub(self.limits.max_retained);
        if excess == 0 {
            return;
        }
        let oldest_finished: Vec<Uuid> = jobs
            .order
            .values()
            .filter(|id| matches!(jobs.by_id[*id].slot, Slot::Ended(_)))
            .take(excess)
            .copied()
            .collect();
        let now = SystemTime::now();
        for id in &oldest_finished {
            self.remove(jobs, id, now);
        }
    }
}

#[async_trait]
impl JobStore for JobRegistry {
    /// Queues a call as a job; with a known `request_id`, returns that job.
    async fn submit(
        &self,
        call: ProcedureCall,
        request_id: Option<String>,
        owner: &Caller,
    ) -> Result<JobSnapshot> {
        check_request_id(request_id.as_deref())?;
        if !self.is_accepting() {
            return Err(lifecycle::shutting_down());
        }
        let request_key = request_id.map(|key| (owner.name.clone(), Arc::<str>::from(key)));
        let mut jobs = self.lock();
        // Idempotency before capacity: a retry gets its job even when the
        // queue is full.
        if let Some(key) = &request_key
            && let Some(id) = jobs.by_request_id.get(key)
        {
            return lifecycle::same_call(jobs.by_id[id].snapshot(), &call);
        }
        if jobs.queue.len() >= self.limits.max_pending {
            return Err(lifecycle::queue_full(self.limits.max_pending));
        }
        self.evict_over_cap(&mut jobs);

        let job = LiveJob::submitted(
            lifecycle::submit(
                call,
                request_key.as_ref().map(|(_, key)| key.clone()),
                owner.name.clone(),
            ),
            self.feed(),
        );
        let snapshot = job.snapshot();
        if let Some(key) = request_key {
            jobs.by_request_id.insert(key, snapshot.id);
        }
        jobs.queue.insert(snapshot.create_revision, job.clone());
        jobs.insert_live(job);
        drop(jobs);
        self.queued.notify_one();
        Ok(snapshot)
    }

    async fn get(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        let id = parse_id(id)?;
        Ok(visible(&self.lock(), &id, caller)?.snapshot())
    }

    /// How to follow the job: its channel while it is live, else its end.
    async fn watch(&self, id: &str, caller: &Caller) -> Result<JobWatch> {
        let id = parse_id(id)?;
        Ok(match &visible(&self.lock(), &id, caller)?.slot {
            Slot::Live(job) => JobWatch::Live(job.subscribe()),
            Slot::Ended(snapshot) => JobWatch::Ended(snapshot.clone()),
        })
    }

    /// Jobs newest first, `page_size` (0 = default) at a time.
    async fn list(
        &self,
        filter: &ListFilter,
        page_size: usize,
        page_token: &str,
        caller: &Caller,
    ) -> Result<Page> {
        let page_size = page_size_for(page_size);
        let before = parse_page_token(page_token)?;
        let procedure = filter.procedure.as_deref();
        let jobs = self.lock();
        let mut page = Vec::with_capacity(page_size);
        let mut next_page_token = None;
        for (&order, id) in jobs.order.range(..before).rev() {
            let entry = &jobs.by_id[id];
            let matches = entry.with(|job| {
                caller.may_see(&job.owner)
                    && (filter.states.is_empty() || filter.states.contains(&job.state))
                    && procedure.is_none_or(|p| job.call.display_name.eq_ignore_ascii_case(p))
            });
            if !matches {
                continue;
            }
            if page.len() == page_size {
                next_page_token = Some(page_token_for(order + 1));
                break;
            }
            page.push(entry.snapshot());
        }
        Ok(Page {
            jobs: page,
            next_page_token,
        })
    }

    /// The start of a WatchJobs stream (memory mode): EXISTING events for
    /// the live jobs that match, or, resuming after `since`, a CHANGED
    /// event for every job changed after it and a DELETED one for every
    /// deletion, merged with what changed meanwhile, then SYNCED.
    async fn watch_jobs(
        &self,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> Result<(Subscription, Vec<FeedEvent>)> {
        let feed = self.feed();
        let subscription = feed.subscribe(filter);
        let filter = subscription.filter();
        let mut initial = match since {
            Some(since) => feed
                .tombstones_after(since, filter)?
                .into_iter()
                .map(FeedEvent::Deleted)
                .collect(),
            None => Vec::new(),
        };
        {
            let jobs = self.lock();
            for entry in jobs.by_id.values() {
                let event = entry.with(|job| {
                    if !filter.admits(&job.owner, &job.call.display_name) {
                        return None;
                    }
                    match since {
                        Some(since) => {
                            (job.revision > since).then(|| FeedEvent::Changed(job.clone().into()))
                        }
                        None => (!job.state.is_terminal()
                            && (filter.states.is_empty() || filter.states.contains(&job.state)))
                        .then(|| FeedEvent::Existing(job.clone().into())),
                    }
                });
                initial.extend(event);
            }
        }
        // Read after the listing: every change up to here is either in it
        // or queued for the subscription.
        let synced = feed.revision();
        let events = subscription.open(initial, synced);
        Ok((subscription, events))
    }

    /// Forgets a finished job (memory mode), leaving a tombstone.
    async fn delete(&self, id: &str, caller: &Caller) -> Result<()> {
        let id = parse_id(id)?;
        let mut jobs = self.lock();
        visible(&jobs, &id, caller)?.with(lifecycle::delete)?;
        self.remove(&mut jobs, &id, SystemTime::now());
        Ok(())
    }

    async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        JobRegistry::cancel(self, id, caller)
    }

    async fn sweep(&self, _retention: Duration) -> Result<u64> {
        // The registry keeps its own retention (JobLimits).
        Ok(JobRegistry::sweep(self, SystemTime::now()) as u64)
    }

    async fn shutdown(&self) {
        JobRegistry::shutdown(self).await
    }
}

/// Replaces an ended job's channel and interrupt by its final snapshot.
fn retire(jobs: &mut Jobs, id: &Uuid) {
    if let Some(entry) = jobs.by_id.get_mut(id)
        && let Slot::Live(job) = &entry.slot
    {
        let job = job.snapshot();
        if job.state.is_terminal() {
            entry.slot = Slot::Ended(Box::new(job));
        }
    }
}

/// The job, if this caller may see it: another owner's job does not exist
/// for them.
fn visible<'j>(jobs: &'j Jobs, id: &Uuid, caller: &Caller) -> Result<&'j Entry> {
    match jobs.by_id.get(id) {
        Some(entry) if entry.with(|job| caller.may_see(&job.owner)) => Ok(entry),
        _ => Err(Error::JobNotFound(id.to_string())),
    }
}

/// A request_id is at most 128 characters.
pub(super) fn check_request_id(request_id: Option<&str>) -> Result<()> {
    match request_id {
        Some(key) if key.chars().count() > MAX_REQUEST_ID_LEN => {
            Err(Error::InvalidArgument(format!(
                "request_id {} is longer than {MAX_REQUEST_ID_LEN} characters",
                printable(key)
            )))
        }
        _ => Ok(()),
    }
}

pub(super) fn parse_id(id: &str) -> Result<Uuid> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("job id is empty".into()));
    }
    Uuid::try_parse(id).map_err(|_| {
        Error::InvalidArgument(format!(
            "job id {} is not a UUID like 3f0c…-…; use the id SubmitAsync returned",
            printable(id)
        ))
    })
}

/// The page size a ListJobs request asked for: 0 means the default, and
/// larger requests are capped.
pub(super) fn page_size_for(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

const PAGE_TOKEN_PREFIX: &str = "before:";

pub(super) fn page_token_for(seq: u64) -> String {
    format!("{PAGE_TOKEN_PREFIX}{seq:x}")
}

/// The sequence number to list before; everything for an empty token.
pub(super) fn parse_page_token(token: &str) -> Result<u64> {
    if token.is_empty() {
        return Ok(u64::MAX);
    }
    token
        .strip_prefix(PAGE_TOKEN_PREFIX)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "page_token {} is not one this server issued; pass next_page_token unchanged",
                printable(token)
            ))
        })
}
