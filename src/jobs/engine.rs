//! The job engine: one for every table. It owns the queue, runs the jobs
//! it claims, writes what they do, and follows what every instance writes.
//!
//! ```text
//! lifecycle ─▶ table ─▶ hub ─▶ api
//! ```
//!
//! The table ([`JobTable`]: memory, or PostgreSQL shared by every instance
//! in front of it) is the truth; the engine adds:
//!
//! - **Submit** checks idempotency before capacity (a repeated
//!   `request_id` gets its job even when the queue is full), inserts a
//!   PENDING row and announces it (`pending`).
//! - **The scheduler** (one task): whenever a slot is free
//!   (`--max-running-jobs`) and the database is believed up, it claims the
//!   oldest PENDING row, so jobs start in submission order, and in database
//!   mode a job submitted to a busy instance runs on an idle one. A claimed
//!   job runs through [`super::runner`] in [`LocalJobs`]; one that finds no
//!   connection is given back before its slot frees, so it is first again
//!   once the database is back, also after an outage.
//! - **The writer** of each running job saves its changes to the table,
//!   coalesced to one per `--job-store-progress-interval` in database mode,
//!   and never holds back its end; each save is announced.
//! - **The hub**: GetJob and ListJobs read the table. One task, the change
//!   reader, reads the change feed (the rows stamped after the last revision
//!   it read, and the tombstones) on each announcement and every
//!   `--job-store-poll-interval`, and only while someone here watches. It
//!   fans the changes out to the WatchJobs [`Feed`] and to one
//!   `watch::Sender` per followed job, shared by every WatchJob of it here,
//!   wherever the job runs: following a job already followed costs no
//!   query, so the work does not grow with the number of watchers.
//! - **Cancel**: the lifecycle ends a PENDING row in the table or flags a
//!   RUNNING one; the instance that holds it (this one, or the one told by
//!   the `cancel:<id>` announcement or by polling the flags) interrupts it.
//! - **Leases**: each instance renews a lease; when one expires, any
//!   instance fails its RUNNING jobs with reason INTERRUPTED and gives its
//!   claims back.
//!
//! Every task belongs to one `CancellationToken` and `TaskTracker`: after
//! [`JobStore::shutdown`] returns, nothing of the engine runs or writes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use super::feed::{self, Feed, FeedEvent, Subscription, Tombstone, WatchFilter};
use super::lifecycle;
use super::limits::ClaimRules;
use super::live::LiveJob;
use super::local::LocalJobs;
use super::plan::{JobPlan, RetryPolicy};
use super::runner::Ran;
use super::table::{Announcement, CancelOutcome, ChangedJob, Changes, JobTable, ListFilter};
use super::{JobSnapshot, JobState, JobStore, JobWatch, Page, Submission};
use crate::auth::Caller;
use crate::call::ProcedureCall;
use crate::error::{Error, Result};
use crate::name::printable;

const MAX_REQUEST_ID_LEN: usize = 128;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// How long a WatchJobs stream waits for this instance's change reader to
/// catch up with the store before it answers UNAVAILABLE.
const CATCH_UP: Duration = Duration::from_secs(10);

/// How the engine and its table behave.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The schema of procgate's tables (database mode).
    pub schema: String,
    /// This instance's name in leases and INTERRUPTED messages.
    pub instance_name: String,
    /// A lease not renewed for this long means the instance is gone.
    pub lease: Duration,
    /// Most frequent progress write per job (zero: every change).
    pub progress_interval: Duration,
    /// Fallback polling when a notification is missed.
    pub poll_interval: Duration,
    /// Connections of the database table's own pool.
    pub pool_size: u32,
    /// How long tombstones of deleted jobs are kept.
    pub tombstone_retention: Duration,
}

pub struct Engine {
    table: Arc<dyn JobTable>,
    /// What claims respect: the procedure limits.
    rules: ClaimRules,
    /// Expiry times of jobs submitted here, soonest first, so that the
    /// expiry task wakes when one is due rather than at its next poll.
    expiries: Mutex<BinaryHeap<Reverse<SystemTime>>>,
    expiry_added: Notify,
    /// The jobs this instance runs, with their watch channels.
    local: Arc<LocalJobs>,
    instance: Uuid,
    settings: StoreSettings,
    max_pending: usize,
    /// Whether announcements travel through the table (and come back to
    /// this instance through it); else the engine hears its own at once.
    announcements_travel: bool,
    /// Woken by a `pending` announcement: the scheduler claims.
    job_queued: Arc<Notify>,
    /// Whether the change reader reads (someone here watches), so that an
    /// announcement wakes it only then.
    reading: AtomicBool,
    /// Each claimed job's run and writer: shutdown waits for its last write.
    job_tasks: TaskTracker,
    /// Every other task of the engine (the scheduler, the lease,
    /// announcements, the listener, the change reader): all end with
    /// `stop`, and shutdown waits for them, so nothing is written after it.
    tasks: TaskTracker,
    stop: CancellationToken,
    /// What WatchJobs streams of this instance read.
    feed: Arc<Feed>,
    /// The hub: the jobs followed here, one sender each.
    followed: Mutex<HashMap<Uuid, watch::Sender<JobSnapshot>>>,
    /// The change reader's place; held by whoever starts following, so
    /// that no change falls between their first read and the reader's.
    reader: tokio::sync::Mutex<Reader>,
    read_now: Notify,
    /// The revision the reader has published through.
    read_through: watch::Sender<u64>,
}

#[derive(Default)]
struct Reader {
    cursor: u64,
    /// Nobody watches: the reader reads nothing and the cursor is stale
    /// until someone starts watching again.
    idle: bool,
    /// The last state read of each live job, so that a change is matched
    /// against the filters before and after it.
    states: HashMap<Uuid, JobState>,
    /// The cursor at the previous poll: each poll reads again from there,
    /// in case a write committed after a later revision had been read.
    horizon: u64,
    /// What was published since the horizon, by job: a row read again is
    /// not published twice.
    published: HashMap<Uuid, u64>,
}

impl Reader {
    /// Whether this change of a job is new to the reader; records it.
    fn first_time(&mut self, id: Uuid, revision: u64) -> bool {
        let seen = self.published.get(&id).is_some_and(|&r| r >= revision);
        if !seen {
            self.published.insert(id, revision);
        }
        !seen
    }
}

impl Engine {
    /// Joins the table's cluster and starts the background work (the
    /// scheduler, leases, recovery, cancel requests, the change reader).
    pub async fn start(
        table: Arc<dyn JobTable>,
        local: Arc<LocalJobs>,
        settings: StoreSettings,
        max_pending: usize,
        rules: ClaimRules,
    ) -> Result<Arc<Engine>> {
        let instance = Uuid::new_v4();
        table
            .heartbeat(&instance, &settings.instance_name, settings.lease)
            .await?;
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let announcements = table.listen(&tasks, stop.clone());
        let jobs = Arc::new(Engine {
            announcements_travel: announcements.is_some(),
            job_queued: Arc::new(Notify::new()),
            reading: AtomicBool::new(false),
            table,
            rules,
            expiries: Mutex::default(),
            expiry_added: Notify::new(),
            local,
            instance,
            settings,
            max_pending,
            job_tasks: TaskTracker::new(),
            tasks,
            stop,
            feed: Feed::new(),
            followed: Mutex::default(),
            reader: tokio::sync::Mutex::new(Reader {
                idle: true,
                ..Reader::default()
            }),
            read_now: Notify::new(),
            read_through: watch::Sender::new(0),
        });
        if jobs.table.durable() {
            info!(instance = %instance, name = %jobs.settings.instance_name, "joined the job store");
        }
        jobs.spawn(jobs.clone().claim_forever());
        jobs.spawn(jobs.clone().keep_lease());
        if let Some(announcements) = announcements {
            jobs.spawn(jobs.clone().hear(announcements.subscribe()));
        }
        jobs.spawn(jobs.clone().poll_cancel_requests());
        jobs.spawn(jobs.clone().expire_forever());
        jobs.spawn(jobs.clone().read_changes());
        Ok(jobs)
    }

    /// Runs `work` on a task of the engine until it ends or the engine stops.
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

    async fn visible(&self, id: &Uuid, caller: &Caller) -> Result<JobSnapshot> {
        match self.table.get(id).await? {
            Some(job) if caller.may_see(&job.owner) => Ok(job),
            _ => Err(Error::JobNotFound(id.to_string())),
        }
    }

    /// A WatchJob of a job this instance already follows: no query, not
    /// even for the first snapshot.
    fn already_followed(&self, id: &Uuid, caller: &Caller) -> Result<Option<JobWatch>> {
        let followed = self.followed.lock().expect("hub lock");
        let Some(tx) = followed.get(id) else {
            return Ok(None);
        };
        if !caller.may_see(&tx.borrow().owner) {
            return Err(Error::JobNotFound(id.to_string()));
        }
        Ok(Some(JobWatch::Live(tx.subscribe())))
    }

    /// Wakes the change reader, idle while nobody watched, to read the
    /// changes after `revision`. Called with the reader held while the new
    /// interest is registered, so that it cannot go idle again in between.
    fn resume_reading(&self, reader: &mut Reader, revision: u64) {
        reader.cursor = reader.cursor.max(revision);
        reader.horizon = reader.cursor;
        reader.idle = false;
        self.reading.store(true, Ordering::SeqCst);
        reader.states.clear();
        reader.published.clear();
        self.feed.advance(reader.cursor);
        self.read_through.send_replace(reader.cursor);
    }

    /// Waits until the change reader has published through `revision`.
    async fn reached(&self, revision: u64) -> Result<()> {
        let mut through = self.read_through.subscribe();
        self.read_now.notify_one();
        let caught_up = tokio::time::timeout(CATCH_UP, through.wait_for(|r| *r >= revision));
        match caught_up.await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Unavailable(
                "the job store's change feed is not readable right now; retry".into(),
            )),
        }
    }

    /// The scheduler: claims the oldest PENDING job whenever a slot is free
    /// and the database is believed up.
    async fn claim_forever(self: Arc<Self>) {
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
                return; // shutting down: claims nothing more
            }
            match self.table.claim(&self.instance, &self.rules).await {
                Ok(Some(job)) => {
                    let Some(live) = self.local.hold(job.clone()) else {
                        // Shut down meanwhile: it waits for another
                        // instance, or is cancelled with the rest of the queue.
                        let mut job = job;
                        lifecycle::unclaim(&mut job);
                        return self.give_back(job).await;
                    };
                    self.job_tasks.spawn(self.clone().run(live, permit));
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = self.job_queued.notified() => {}
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

    /// Runs a claimed job in the slot it holds, with its writer; both end
    /// before anything else happens to it, so no write of this run comes
    /// after the job is given back or claimed again. One that found no
    /// connection (the database is gone) goes back to the queue before the
    /// slot frees, so it is the first claimed once the database is back.
    async fn run(self: Arc<Self>, job: LiveJob, permit: OwnedSemaphorePermit) {
        let id = job.with(|j| j.id);
        let changes = job.subscribe();
        // The job's last handle goes with the run, which closes the writer's
        // channel once its last change is out.
        let (ran, unsaved) = tokio::join!(self.local.run(job), self.persist(id, changes));
        let scheduled = unsaved.as_ref().is_some_and(|j| j.schedule_id().is_some());
        match ran {
            Ran::NoConnection => {
                self.local.report_database_down();
                if let Some(job) = unsaved {
                    self.give_back(job).await;
                }
            }
            Ran::Ended { database_down } => {
                if database_down {
                    // Before the slot frees: the next job must wait, not fail.
                    self.local.report_database_down();
                }
                if let Some(job) = unsaved {
                    // Sent back to PENDING for its next attempt.
                    self.requeue(job).await;
                }
            }
        }
        drop(permit);
        // Its end may free a limit's place or its schedule's next job,
        // which a claim passed over.
        if !self.rules.limits.is_empty() || scheduled {
            self.announce(Announcement::Pending).await;
        }
    }

    /// Writes a job that failed transiently back to the queue for its next
    /// attempt, and wakes the scheduler when its backoff is over.
    async fn requeue(&self, job: JobSnapshot) {
        let id = job.id;
        match self
            .retrying(|| self.table.retry(&job, &self.instance))
            .await
        {
            Ok(true) => {}
            Ok(false) => warn!(%id, "the job's retry was not saved: the store already ended it"),
            Err(e) => warn!(%id, error = %e, "the job's retry could not be saved"),
        }
        self.announce(Announcement::Changed(id)).await;
        if let Some(not_before) = job.not_before() {
            let wait = not_before
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let queued = self.announcer();
            self.spawn(async move {
                tokio::time::sleep(wait).await;
                queued.await;
            });
        }
    }

    /// A future that announces a queued job, for a task to run later.
    fn announcer(&self) -> impl Future<Output = ()> + Send + 'static {
        let table = self.table.clone();
        let travel = self.announcements_travel;
        let wake = self.job_queued.clone();
        async move {
            if travel {
                table.notify(Announcement::Pending).await;
            } else {
                wake.notify_one();
            }
        }
    }

    /// Ends EXPIRED the jobs past their expiry: when one submitted here is
    /// due, and every poll interval for those of other instances.
    async fn expire_forever(self: Arc<Self>) {
        loop {
            let now = SystemTime::now();
            let next = self
                .expiries
                .lock()
                .expect("expiries lock")
                .peek()
                .map(|r| r.0);
            let wait = next
                .map(|t| t.duration_since(now).unwrap_or_default())
                .unwrap_or(self.settings.poll_interval)
                .min(self.settings.poll_interval);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.expiry_added.notified() => continue,
            }
            let now = SystemTime::now();
            {
                let mut expiries = self.expiries.lock().expect("expiries lock");
                while expiries.peek().is_some_and(|r| r.0 <= now) {
                    expiries.pop();
                }
            }
            match self.table.expire_due(now).await {
                Ok(expired) => {
                    for id in expired {
                        info!(%id, "a job expired before it started");
                        self.announce(Announcement::Changed(id)).await;
                    }
                }
                Err(e) => warn!(error = %e, "expiring jobs failed"),
            }
        }
    }

    /// The writer: saves a claimed job's changes, coalesced, then its end.
    /// A job still PENDING when its run ended is returned unsaved: its run
    /// gives it back.
    async fn persist(
        &self,
        id: Uuid,
        mut changes: watch::Receiver<JobSnapshot>,
    ) -> Option<JobSnapshot> {
        loop {
            let closed = changes.changed().await.is_err();
            let job = changes.borrow_and_update().clone();
            if closed && job.state == JobState::Pending {
                return Some(job);
            }
            if job.state.is_terminal() || closed {
                self.save_end(job).await;
                return None;
            }
            if let Err(e) = self.table.save(&job, &self.instance).await {
                warn!(%id, error = %e, "saving progress failed");
            }
            self.announce(Announcement::Changed(id)).await;
            // Coalesce: at most one progress write per interval, but the
            // end is never held back.
            let interval = self.settings.progress_interval;
            if interval.is_zero() {
                continue;
            }
            let ended = tokio::time::timeout(interval, changes.wait_for(|j| j.state.is_terminal()))
                .await
                .is_ok_and(|seen| seen.is_ok());
            if ended {
                let job = changes.borrow_and_update().clone();
                self.save_end(job).await;
                return None;
            }
        }
    }

    /// Writes a job's end (retrying while the table is unreachable), then
    /// announces it.
    async fn save_end(&self, job: JobSnapshot) {
        let id = job.id;
        let saved = self
            .retrying(|| self.table.save(&job, &self.instance))
            .await;
        match saved {
            Ok(true) => {}
            // Cancelled while it waited for its connection: the table
            // ended it first.
            Ok(false) if job.state == JobState::Cancelled => {}
            Ok(false) => warn!(
                %id,
                "the job's end was not saved: the store already has one (cancelled while \
                 pending, or failed as INTERRUPTED by another instance)"
            ),
            Err(e) => warn!(%id, error = %e, "the job's end could not be saved"),
        }
        self.announce(Announcement::Changed(id)).await;
    }

    /// Gives a claimed job back to the queue, retrying a while when the
    /// table is unreachable; past that, the lease's expiry gives it back.
    async fn give_back(&self, job: JobSnapshot) {
        let released = self
            .retrying(|| self.table.release(&job, &self.instance))
            .await;
        match released {
            Ok(()) => self.announce(Announcement::Pending).await,
            Err(e) => warn!(id = %job.id, error = %e, "could not give the job back to the queue; \
                            it goes back when this instance's lease expires"),
        }
    }

    /// A write that must not be lost: tried again every poll interval,
    /// up to ten times, while the table is unreachable.
    async fn retrying<T, F: Future<Output = Result<T>>>(&self, write: impl Fn() -> F) -> Result<T> {
        let mut written = write().await;
        for _ in 0..10 {
            if written.is_ok() {
                break;
            }
            tokio::time::sleep(self.settings.poll_interval).await;
            written = write().await;
        }
        written
    }

    /// Cancels every job still queued: a table that does not outlive the
    /// process would lose them, and their watchers should hear it.
    async fn cancel_queue(&self) {
        let pending = ListFilter {
            states: [JobState::Pending].into(),
            ..ListFilter::default()
        };
        let queued = match self.table.list(&pending, None, u64::MAX, usize::MAX).await {
            Ok(queued) => queued,
            Err(e) => return warn!(error = %e, "could not read the queue to cancel it"),
        };
        for job in queued {
            if let Err(e) = self.table.cancel(&job.id).await {
                warn!(id = %job.id, error = %e, "could not cancel a queued job");
            }
        }
    }

    /// Renews the lease and fails the jobs of instances that stopped
    /// renewing theirs.
    async fn keep_lease(self: Arc<Self>) {
        let every = self.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self
                .table
                .heartbeat(
                    &self.instance,
                    &self.settings.instance_name,
                    self.settings.lease,
                )
                .await
            {
                warn!(error = %e, "renewing the lease failed");
            }
            match self.table.recover().await {
                Ok(failed) => {
                    for id in failed {
                        warn!(%id, "failed a job of an instance whose lease expired: INTERRUPTED");
                        self.announce(Announcement::Changed(id)).await;
                    }
                }
                Err(e) => warn!(error = %e, "recovering expired instances failed"),
            }
        }
    }

    /// Tells every instance of a write: through the table when
    /// announcements travel (this instance hears it back), else at once.
    async fn announce(&self, announcement: Announcement) {
        if self.announcements_travel {
            self.table.notify(announcement).await;
        } else {
            self.heard(announcement);
        }
    }

    /// Acts on an announcement: wakes whichever task it concerns, and only
    /// that one.
    fn heard(&self, announcement: Announcement) {
        match announcement {
            Announcement::Pending => self.job_queued.notify_one(),
            Announcement::Cancel(id) => {
                self.local.cancel(&id);
                self.wake_reader();
            }
            Announcement::Changed(_) | Announcement::Swept => self.wake_reader(),
        }
    }

    fn wake_reader(&self) {
        if self.reading.load(Ordering::SeqCst) {
            self.read_now.notify_one();
        }
    }

    /// Hears the announcements of every instance, this one included.
    async fn hear(self: Arc<Self>, mut announcements: broadcast::Receiver<String>) {
        loop {
            match announcements.recv().await {
                Ok(payload) => match Announcement::parse(&payload) {
                    Some(announcement) => self.heard(announcement),
                    None => warn!(%payload, "ignored an announcement this version does not know"),
                },
                // Some were lost: whatever they said, read and claim.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.job_queued.notify_one();
                    self.wake_reader();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Polls the cancel flags of this instance's jobs, in case an
    /// announcement was missed.
    async fn poll_cancel_requests(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.poll_interval).await;
            let live = self.local.live_ids();
            for id in self.table.cancel_requests(&live).await.unwrap_or_default() {
                self.local.cancel(&id);
            }
        }
    }

    /// The change reader: on each announcement (a burst counts once) and
    /// every poll interval, while anyone here watches, reads the store's
    /// changes and fans them out.
    async fn read_changes(self: Arc<Self>) {
        loop {
            // A burst of announcements leaves one wake-up: it reads once.
            let polled = tokio::select! {
                () = self.read_now.notified() => false,
                () = tokio::time::sleep(self.settings.poll_interval) => true,
            };
            self.read_once(polled).await;
        }
    }

    fn interested(&self) -> bool {
        self.feed.is_watched() || !self.followed.lock().expect("hub lock").is_empty()
    }

    async fn read_once(&self, polled: bool) {
        let mut reader = self.reader.lock().await;
        self.followed
            .lock()
            .expect("hub lock")
            .retain(|_, tx| tx.receiver_count() > 0);
        if !self.interested() {
            reader.idle = true;
            self.reading.store(false, Ordering::SeqCst);
            return;
        }
        if reader.idle {
            return;
        }
        // A sequence value is taken before its transaction commits, so a
        // write can become visible after one stamped later was read: each
        // poll reads again from the previous poll's cursor.
        let from = if polled {
            reader.horizon
        } else {
            reader.cursor
        };
        let horizon = reader.cursor;
        let mut after = from;
        loop {
            match self.table.changes(after).await {
                Ok(changes) => {
                    let more = changes.more;
                    let read_from = after;
                    after = changes.through;
                    self.fan_out(&mut reader, changes, read_from);
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "reading the job store's changes failed");
                    return;
                }
            }
        }
        if polled {
            reader.horizon = horizon;
            reader.published.retain(|_, revision| *revision > horizon);
            // The same for followed jobs, in one query.
            self.refresh_followed().await;
        }
    }

    /// Publishes a batch of changes read after revision `from`, in
    /// revision order, to the feed and the hub. The table keeps a job's
    /// latest state only, so a state the reader did not see (a job
    /// submitted and started between two reads, or started and ended) is
    /// replayed from the revisions the row keeps: `create_revision` for its
    /// submit, `start_revision` for its start. A watcher never misses a
    /// state change.
    fn fan_out(&self, reader: &mut Reader, changes: Changes, from: u64) {
        enum Step {
            Changed(JobSnapshot),
            Deleted(Tombstone),
        }
        let revision = |step: &Step| match step {
            Step::Changed(job) => job.revision,
            Step::Deleted(tombstone) => tombstone.revision,
        };
        let Changes {
            jobs,
            deleted,
            through,
            ..
        } = changes;
        let mut steps: Vec<Step> = deleted.into_iter().map(Step::Deleted).collect();
        for ChangedJob {
            job,
            start_revision,
        } in jobs
        {
            let known = reader.states.get(&job.id).copied();
            let last = reader.published.get(&job.id).copied().unwrap_or(0);
            let unseen = |r: u64| r > from && r > last && r < job.revision;
            if job.state != JobState::Pending && known.is_none() && unseen(job.create_revision) {
                steps.push(Step::Changed(lifecycle::as_submitted(&job)));
            }
            if let Some(started) = start_revision
                && job.state.is_terminal()
                && known != Some(JobState::Running)
                && unseen(started)
            {
                steps.push(Step::Changed(lifecycle::as_started(&job, started)));
            }
            steps.push(Step::Changed(job));
        }
        steps.sort_by_key(revision);
        for step in steps {
            match step {
                Step::Changed(job) => self.changed(reader, job),
                Step::Deleted(tombstone) => self.deleted(reader, tombstone),
            }
        }
        reader.cursor = reader.cursor.max(through);
        self.feed.advance(reader.cursor);
        self.read_through.send_replace(reader.cursor);
    }

    fn changed(&self, reader: &mut Reader, job: JobSnapshot) {
        if !reader.first_time(job.id, job.revision) {
            return;
        }
        let before = if job.state.is_terminal() {
            reader.states.remove(&job.id)
        } else {
            reader.states.insert(job.id, job.state)
        };
        let job = Arc::new(job);
        self.follow_up(&job);
        self.feed.publish(job, before);
    }

    fn deleted(&self, reader: &mut Reader, tombstone: Tombstone) {
        if !reader.first_time(tombstone.id, tombstone.revision) {
            return;
        }
        reader.states.remove(&tombstone.id);
        self.followed
            .lock()
            .expect("hub lock")
            .remove(&tombstone.id);
        self.feed.publish_deleted(Arc::new(tombstone));
    }

    /// Hands a newer snapshot of a followed job to its watchers, and stops
    /// following it once it ended.
    fn follow_up(&self, job: &JobSnapshot) {
        let mut followed = self.followed.lock().expect("hub lock");
        let Some(tx) = followed.get(&job.id) else {
            return;
        };
        tx.send_if_modified(|current| {
            let newer = job.revision > current.revision;
            if newer {
                *current = job.clone();
            }
            newer
        });
        if job.state.is_terminal() {
            followed.remove(&job.id);
        }
    }

    /// Re-reads every followed job at once (one query, whatever the number
    /// of watchers).
    async fn refresh_followed(&self) {
        let ids: Vec<Uuid> = self
            .followed
            .lock()
            .expect("hub lock")
            .keys()
            .copied()
            .collect();
        if ids.is_empty() {
            return;
        }
        match self.table.get_many(&ids).await {
            Ok(jobs) => {
                for job in &jobs {
                    self.follow_up(job);
                }
            }
            Err(e) => warn!(error = %e, "refreshing followed jobs failed"),
        }
    }
}

#[async_trait]
impl JobStore for Engine {
    async fn submit(
        &self,
        call: ProcedureCall,
        submission: Submission,
        owner: &Caller,
    ) -> Result<JobSnapshot> {
        if !self.local.is_accepting() {
            return Err(lifecycle::shutting_down());
        }
        let Submission {
            request_id,
            retry,
            expire_after,
            tick,
            messages,
            waiting,
            trace_parent,
        } = submission;
        check_request_id(request_id.as_deref())?;
        let now = SystemTime::now();
        let plan = JobPlan {
            retry: retry.unwrap_or(RetryPolicy::ONCE),
            expire_time: expire_after.map(|after| now + after.min(super::plan::MAX_EXPIRE_AFTER)),
            tick,
        };
        if !plan.is_plain() && !self.table.keeps_plans() {
            return Err(Error::Unimplemented(
                "retry, expire_after and schedules need the memory or PostgreSQL job store; the \
                 Oracle job store does not keep them yet"
                    .into(),
            ));
        }
        // Idempotency before capacity: a retry gets its job even when the
        // queue is full.
        if let Some(request_id) = request_id.as_deref()
            && let Some(existing) = self
                .table
                .find_by_request_id(&owner.name, request_id)
                .await?
        {
            return lifecycle::same_call(existing, &call);
        }
        let max_pending = self.max_pending;
        if self.table.pending().await? >= max_pending as u64 {
            return Err(lifecycle::queue_full(max_pending));
        }
        let mut job = lifecycle::submit(call, request_id.map(Into::into), owner.name.clone(), plan);
        job.create_time = now;
        for line in messages {
            lifecycle::message(&mut job, line, usize::MAX);
        }
        if let Some(waiting) = waiting {
            job.progress_message = waiting.into();
        }
        // Before the insert: an idle instance may claim the job at once.
        if let Some(trace_parent) = trace_parent {
            self.local.link_submission(job.id, trace_parent);
        }
        let stored = self.table.insert(&job).await?;
        if stored.id != job.id {
            // Another submit with the same request_id won the race.
            return lifecycle::same_call(stored, &job.call);
        }
        self.announce(Announcement::Pending).await;
        if let Some(expire_time) = stored.plan().expire_time {
            self.expiries
                .lock()
                .expect("expiries lock")
                .push(Reverse(expire_time));
            self.expiry_added.notify_one();
        }
        Ok(stored)
    }

    async fn get(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        self.visible(&parse_id(id)?, caller).await
    }

    async fn list(
        &self,
        filter: &ListFilter,
        page_size: usize,
        page_token: &str,
        caller: &Caller,
    ) -> Result<Page> {
        let page_size = page_size_for(page_size);
        let before = parse_page_token(page_token)?;
        let owner = (!caller.admin).then_some(caller.name.as_ref());
        let mut jobs = self
            .table
            .list(filter, owner, before, page_size + 1)
            .await?;
        let next_page_token = (jobs.len() > page_size).then(|| {
            jobs.truncate(page_size);
            page_token_for(jobs[page_size - 1].create_revision)
        });
        Ok(Page {
            jobs,
            next_page_token,
        })
    }

    /// Follows a job through the hub, wherever it runs: the store's
    /// revisions are the ones every watcher sees.
    async fn watch(&self, id: &str, caller: &Caller, since: Option<u64>) -> Result<JobWatch> {
        let id = parse_id(id)?;
        if let Some(since) = since
            && since > self.feed.revision()
        {
            // Rare: ask the table only when the feed has not seen it.
            feed::check_resumable(since, self.table.revision().await?, 0)?;
        }
        if let Some(watch) = self.already_followed(&id, caller)? {
            return Ok(watch);
        }
        // Held until the follower is registered: concurrent first watchers
        // wait here, then find it followed, and the reader cannot read past
        // a change before the follower hears of it.
        let mut reader = self.reader.lock().await;
        if let Some(watch) = self.already_followed(&id, caller)? {
            return Ok(watch);
        }
        let job = self.visible(&id, caller).await?;
        if job.state.is_terminal() {
            return Ok(JobWatch::Ended(Box::new(job)));
        }
        if reader.idle {
            // Every later change of the job is stamped above this.
            self.resume_reading(&mut reader, job.revision);
        }
        let tx = watch::Sender::new(job);
        let rx = tx.subscribe();
        self.followed.lock().expect("hub lock").insert(id, tx);
        Ok(JobWatch::Live(rx))
    }

    /// The start of a WatchJobs stream: what the store holds (in one
    /// snapshot of it), merged with what the change reader published
    /// meanwhile.
    async fn watch_jobs(
        &self,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> Result<(Subscription, Vec<FeedEvent>)> {
        let subscription = {
            let mut reader = self.reader.lock().await;
            if reader.idle {
                let now = self.table.revision().await?;
                self.resume_reading(&mut reader, now);
            }
            self.feed.subscribe(filter)
        };
        let start = self
            .table
            .start_of_watch(subscription.filter(), since)
            .await?;
        self.reached(start.revision).await?;
        let as_event = |job: JobSnapshot| match since {
            Some(_) => FeedEvent::Changed(Arc::new(job)),
            None => FeedEvent::Existing(Arc::new(job)),
        };
        let mut initial: Vec<FeedEvent> = start.jobs.into_iter().map(as_event).collect();
        initial.extend(
            start
                .deleted
                .into_iter()
                .map(|t| FeedEvent::Deleted(Arc::new(t))),
        );
        let events = subscription.open(initial, start.revision);
        Ok((subscription, events))
    }

    async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        let id = parse_id(id)?;
        self.visible(&id, caller).await?;
        let job = match self.table.cancel(&id).await? {
            // Cancelled while pending: an instance may hold it, claimed,
            // waiting for a connection. Running: it is to be interrupted.
            CancelOutcome::Cancelled(job) | CancelOutcome::Requested(job) => job,
            CancelOutcome::Missing => return Err(Error::JobNotFound(id.to_string())),
        };
        if self.local.cancel(&id) {
            self.announce(Announcement::Changed(id)).await;
        } else {
            self.announce(Announcement::Cancel(id)).await;
        }
        Ok(job)
    }

    async fn delete(&self, id: &str, caller: &Caller) -> Result<()> {
        let id = parse_id(id)?;
        let job = self.visible(&id, caller).await?;
        lifecycle::delete(&job)?;
        if self.table.delete(&id).await? {
            self.announce(Announcement::Changed(id)).await;
            Ok(())
        } else {
            Err(Error::JobNotFound(id.to_string()))
        }
    }

    /// Deletes jobs that ended more than `retention` ago, and old tombstones.
    async fn sweep(&self, retention: Duration) -> Result<u64> {
        let swept = self
            .table
            .sweep(retention, self.settings.tombstone_retention)
            .await?;
        if swept > 0 {
            self.announce(Announcement::Swept).await;
        }
        Ok(swept)
    }

    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        self.table.count_by_state().await
    }

    /// Stops claiming, cancels this instance's jobs (and, in a table that
    /// does not outlive the process, the queue), waits for them to be
    /// written and read out to watchers, stops every task of the engine,
    /// and leaves the cluster: once it returns, nothing of the engine runs
    /// or writes.
    async fn shutdown(&self) {
        self.local.shutdown().await;
        self.job_tasks.close();
        self.job_tasks.wait().await;
        if !self.table.durable() {
            self.cancel_queue().await;
        }
        // What the last writes changed still reaches this instance's
        // watchers; then their streams end, so that none holds up the exit.
        self.read_once(false).await;
        self.feed.close();
        self.followed.lock().expect("hub lock").clear();
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.table.leave(&self.instance).await {
            warn!(error = %e, "could not leave the job store cleanly; the lease will expire");
        }
    }
}

/// A request_id is at most 128 characters.
fn check_request_id(request_id: Option<&str>) -> Result<()> {
    match request_id {
        Some(key) if key.chars().count() > MAX_REQUEST_ID_LEN => {
            Err(Error::InvalidArgument(format!(
                "request_id {} is longer than {MAX_REQUEST_ID_LEN} characters",
                printable(key)
            )))
        }
        Some(key) if key.contains('\0') => Err(Error::InvalidArgument(format!(
            "request_id {} contains a NUL character; use printable text",
            printable(key)
        ))),
        _ => Ok(()),
    }
}

fn parse_id(id: &str) -> Result<Uuid> {
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
fn page_size_for(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

const PAGE_TOKEN_PREFIX: &str = "before:";

fn page_token_for(create_revision: u64) -> String {
    format!("{PAGE_TOKEN_PREFIX}{create_revision:x}")
}

/// The create_revision to list before; everything for an empty token.
fn parse_page_token(token: &str) -> Result<u64> {
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
