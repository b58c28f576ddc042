//! The change feed that WatchJobs streams read: every change of every job,
//! stamped with one store-wide revision, fanned out to the watchers whose
//! filter it matches.
//!
//! One mutex orders the feed: the engine's change reader publishes the
//! table's changes in revision order, so every watcher receives them in
//! revision order.
//!
//! A watcher whose filter does not match a change is never woken, and its
//! memory is bounded: its queue holds, per job, every undelivered state
//! change plus at most one later snapshot, so progress coalesces and state
//! changes, terminal snapshots and deletions never do.
//!
//! A stream starts with what the store knows (EXISTING jobs, or the changes
//! after `since_revision`), merged with what was queued meanwhile, then
//! SYNCED, then the queue: see [`Subscription::open`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;
use uuid::Uuid;

use super::{JobSnapshot, JobState};
use crate::auth::Caller;
use crate::error::Error;

/// What a deleted or expired job leaves behind, for DELETED events and for
/// watchers that resume after it.
#[derive(Debug, Clone)]
pub struct Tombstone {
    pub id: Uuid,
    pub owner: Arc<str>,
    pub procedure: String,
    /// Its last state.
    pub state: JobState,
    /// The revision of its deletion.
    pub revision: u64,
    pub deleted_at: SystemTime,
    /// The schedule that submitted it, if one did.
    pub schedule_id: Option<Uuid>,
}

impl Tombstone {
    pub fn of(job: &JobSnapshot, revision: u64, deleted_at: SystemTime) -> Tombstone {
        Tombstone {
            id: job.id,
            owner: job.owner.clone(),
            procedure: job.call.display_name.clone(),
            state: job.state,
            revision,
            deleted_at,
            schedule_id: job.schedule_id(),
        }
    }
}

/// One event of a WatchJobs stream.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// A PENDING or RUNNING job, as the stream starts.
    Existing(Arc<JobSnapshot>),
    /// Everything before it has been sent; the revision to resume from.
    Synced(u64),
    Changed(Arc<JobSnapshot>),
    Deleted(Arc<Tombstone>),
}

impl FeedEvent {
    pub fn revision(&self) -> u64 {
        match self {
            FeedEvent::Existing(job) | FeedEvent::Changed(job) => job.revision,
            FeedEvent::Synced(revision) => *revision,
            FeedEvent::Deleted(tombstone) => tombstone.revision,
        }
    }

    fn job_id(&self) -> Option<Uuid> {
        match self {
            FeedEvent::Existing(job) | FeedEvent::Changed(job) => Some(job.id),
            FeedEvent::Deleted(tombstone) => Some(tombstone.id),
            FeedEvent::Synced(_) => None,
        }
    }
}

/// Which jobs a WatchJobs stream follows.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    /// Empty: every state.
    pub states: HashSet<JobState>,
    /// Compared case-insensitively; None: every procedure.
    pub procedure: Option<String>,
    /// Only the jobs of this schedule.
    pub schedule_id: Option<Uuid>,
    pub caller: Caller,
}

impl WatchFilter {
    /// Whether the caller may see a job of `owner`, `procedure` and
    /// `schedule`.
    pub fn admits(&self, owner: &str, procedure: &str, schedule: Option<Uuid>) -> bool {
        self.caller.may_see(owner)
            && self
                .procedure
                .as_deref()
                .is_none_or(|wanted| procedure.eq_ignore_ascii_case(wanted))
            && self
                .schedule_id
                .is_none_or(|wanted| schedule == Some(wanted))
    }

    fn wants_state(&self, state: JobState) -> bool {
        self.states.is_empty() || self.states.contains(&state)
    }

    /// A change matches when the job matches before or after it, so that a
    /// watcher of RUNNING jobs sees them leave.
    fn matches(&self, job: &JobSnapshot, before: Option<JobState>) -> bool {
        self.admits(&job.owner, &job.call.display_name, job.schedule_id())
            && (self.wants_state(job.state) || before.is_some_and(|s| self.wants_state(s)))
    }
}

/// Why a `since_revision` cannot be resumed from.
fn too_old() -> Error {
    Error::WrongJobState("revision too old: resync without since_revision".into())
}

/// Checks a `since_revision` against what the store can replay: nothing
/// above its current revision (a memory store that restarted) and nothing
/// below a purged tombstone.
pub fn check_resumable(since: u64, current: u64, purged_through: u64) -> Result<(), Error> {
    if since > current || since < purged_through {
        Err(too_old())
    } else {
        Ok(())
    }
}

pub struct Feed {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The last revision published.
    revision: u64,
    /// Shutting down: every stream ends once its queue is delivered.
    closed: bool,
    next_watcher: u64,
    watchers: HashMap<u64, Arc<Watcher>>,
}

struct Watcher {
    filter: WatchFilter,
    queue: Mutex<Queue>,
    wake: Notify,
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Queue {
    events: BTreeMap<u64, FeedEvent>,
    /// Per job, the revision of its queued snapshot that a later snapshot
    /// may replace (one that changed no state).
    replaceable: HashMap<Uuid, u64>,
}

impl Queue {
    fn push_changed(&mut self, job: Arc<JobSnapshot>, state_changed: bool) {
        let id = job.id;
        let revision = job.revision;
        if let Some(older) = self.replaceable.remove(&id) {
            self.events.remove(&older);
        }
        self.events.insert(revision, FeedEvent::Changed(job));
        if !state_changed {
            self.replaceable.insert(id, revision);
        }
    }

    fn push_deleted(&mut self, tombstone: Arc<Tombstone>) {
        if let Some(older) = self.replaceable.remove(&tombstone.id) {
            self.events.remove(&older);
        }
        self.events
            .insert(tombstone.revision, FeedEvent::Deleted(tombstone));
    }

    fn pop(&mut self) -> Option<FeedEvent> {
        let (revision, event) = self.events.pop_first()?;
        if let Some(id) = event.job_id()
            && self.replaceable.get(&id) == Some(&revision)
        {
            self.replaceable.remove(&id);
        }
        Some(event)
    }
}

impl Feed {
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed {
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("feed lock")
    }

    /// The last revision published.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// A change read from the table, with its revision.
    pub fn publish(&self, job: Arc<JobSnapshot>, before: Option<JobState>) {
        let mut inner = self.lock();
        inner.revision = inner.revision.max(job.revision);
        inner.fan_out(job, before);
    }

    /// A deletion read from the table.
    pub fn publish_deleted(&self, tombstone: Arc<Tombstone>) {
        let mut inner = self.lock();
        inner.revision = inner.revision.max(tombstone.revision);
        inner.fan_out_deleted(tombstone);
    }

    /// Everything up to `revision` has been published.
    pub fn advance(&self, revision: u64) {
        let mut inner = self.lock();
        inner.revision = inner.revision.max(revision);
    }

    /// Ends every stream once it has delivered what is queued for it (the
    /// instance is shutting down), and every stream that subscribes later.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for watcher in inner.watchers.values() {
            watcher.close();
        }
    }

    /// Whether any stream is watching.
    pub fn is_watched(&self) -> bool {
        !self.lock().watchers.is_empty()
    }

    /// Registers a watcher; changes from now on are queued for it.
    pub fn subscribe(self: &Arc<Self>, filter: WatchFilter) -> Subscription {
        let watcher = Arc::new(Watcher {
            filter,
            queue: Mutex::default(),
            wake: Notify::new(),
            closed: Default::default(),
        });
        let mut inner = self.lock();
        if inner.closed {
            watcher.close();
        }
        let id = inner.next_watcher;
        inner.next_watcher += 1;
        inner.watchers.insert(id, watcher.clone());
        Subscription {
            feed: self.clone(),
            id,
            watcher,
            subscribed_at: inner.revision,
        }
    }
}

impl Watcher {
    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }
}

impl Inner {
    fn fan_out(&self, job: Arc<JobSnapshot>, before: Option<JobState>) {
        let state_changed = before != Some(job.state);
        for watcher in self.watchers.values() {
            if watcher.filter.matches(&job, before) {
                let mut queue = watcher.queue.lock().expect("watcher queue");
                queue.push_changed(job.clone(), state_changed);
                drop(queue);
                watcher.wake.notify_one();
            }
        }
    }

    fn fan_out_deleted(&self, tombstone: Arc<Tombstone>) {
        for watcher in self.watchers.values() {
            let filter = &watcher.filter;
            if filter.admits(
                &tombstone.owner,
                &tombstone.procedure,
                tombstone.schedule_id,
            ) && filter.wants_state(tombstone.state)
            {
                let mut queue = watcher.queue.lock().expect("watcher queue");
                queue.push_deleted(tombstone.clone());
                drop(queue);
                watcher.wake.notify_one();
            }
        }
    }
}

/// One WatchJobs stream's place in the feed; dropping it unsubscribes.
pub struct Subscription {
    feed: Arc<Feed>,
    id: u64,
    watcher: Arc<Watcher>,
    /// The feed's revision when it subscribed: changes after it are queued.
    subscribed_at: u64,
}

impl Subscription {
    pub fn subscribed_at(&self) -> u64 {
        self.subscribed_at
    }

    pub fn filter(&self) -> &WatchFilter {
        &self.watcher.filter
    }

    /// The first events of the stream, in revision order: `initial` (what
    /// the store held after subscribing: EXISTING jobs, or a replay) merged
    /// with the changes queued meanwhile up to `synced`, then SYNCED. A
    /// queued change already reflected by a newer initial snapshot of its
    /// job is dropped. `synced` must be at least every revision in
    /// `initial`, and the feed must have published through it.
    pub fn open(&self, mut initial: Vec<FeedEvent>, synced: u64) -> Vec<FeedEvent> {
        let synced = synced.max(self.subscribed_at);
        let seen: HashMap<Uuid, u64> = initial
            .iter()
            .filter_map(|e| Some((e.job_id()?, e.revision())))
            .collect();
        let mut queue = self.watcher.queue.lock().expect("watcher queue");
        while let Some((&revision, _)) = queue.events.first_key_value() {
            if revision > synced {
                break;
            }
            let event = queue.pop().expect("a first event");
            let superseded = event
                .job_id()
                .and_then(|id| seen.get(&id))
                .is_some_and(|&newest| newest >= revision);
            if !superseded {
                initial.push(event);
            }
        }
        drop(queue);
        initial.sort_by_key(FeedEvent::revision);
        initial.push(FeedEvent::Synced(synced));
        initial
    }

    /// The next queued change, waiting for one; None once the feed closed
    /// and the queue is empty.
    pub async fn next(&self) -> Option<FeedEvent> {
        loop {
            let woken = self.watcher.wake.notified();
            if let Some(event) = self.watcher.queue.lock().expect("watcher queue").pop() {
                return Some(event);
            }
            if self
                .watcher
                .closed
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return None;
            }
            woken.await;
        }
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.watcher.queue.lock().unwrap().events.len()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.lock().watchers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::ProcedureCall;
    use crate::name::ProcedureName;

    fn job(procedure: &str, state: JobState, revision: u64) -> JobSnapshot {
        let call = ProcedureCall {
            name: ProcedureName::parse(procedure).unwrap(),
            display_name: procedure.into(),
            params: Vec::new(),
            returns: None,
            overload: None,
        };
        let mut job = super::super::lifecycle::submit(
            call,
            None,
            "".into(),
            super::super::plan::JobPlan::PLAIN,
        );
        job.state = state;
        job.revision = revision;
        job
    }

    fn filter(states: &[JobState], procedure: Option<&str>) -> WatchFilter {
        WatchFilter {
            schedule_id: None,
            states: states.iter().copied().collect(),
            procedure: procedure.map(Into::into),
            caller: Caller::anonymous(),
        }
    }

    #[test]
    fn progress_coalesces_but_state_changes_and_deletions_never_do() {
        let feed = Feed::new();
        let watcher = feed.subscribe(filter(&[], None));
        let mut a = job("p", JobState::Running, 1);
        feed.publish(Arc::new(a.clone()), Some(JobState::Pending));
        for revision in 2..100 {
            a.revision = revision;
            a.progress = revision as u32 % 100;
            feed.publish(Arc::new(a.clone()), Some(JobState::Running));
        }
        assert_eq!(watcher.queued(), 2, "the start, then the latest progress");
        a.revision = 100;
        a.state = JobState::Completed;
        feed.publish(Arc::new(a.clone()), Some(JobState::Running));
        feed.publish_deleted(Arc::new(Tombstone::of(&a, 101, SystemTime::now())));
        let revisions: Vec<u64> =
            std::iter::from_fn(|| watcher.watcher.queue.lock().unwrap().pop())
                .map(|e| e.revision())
                .collect();
        assert_eq!(
            revisions,
            [1, 100, 101],
            "the last progress gave way to the end"
        );
    }

    #[test]
    fn unrelated_changes_never_reach_a_filtered_watcher() {
        let feed = Feed::new();
        let reports = feed.subscribe(filter(&[], Some("pkg.REPORT")));
        let running = feed.subscribe(filter(&[JobState::Running], None));
        feed.publish(Arc::new(job("pkg.load", JobState::Pending, 1)), None);
        assert_eq!((reports.queued(), running.queued()), (0, 0));
        feed.publish(
            Arc::new(job("pkg.report", JobState::Running, 2)),
            Some(JobState::Pending),
        );
        feed.publish(
            Arc::new(job("pkg.report", JobState::Completed, 3)),
            Some(JobState::Running),
        );
        assert_eq!(
            reports.queued(),
            2,
            "procedure names compare case-insensitively"
        );
        assert_eq!(
            running.queued(),
            2,
            "a job that leaves RUNNING is seen leaving"
        );
    }

    #[test]
    fn opening_merges_what_was_queued_and_drops_what_the_store_already_showed() {
        let feed = Feed::new();
        let watcher = feed.subscribe(filter(&[], None));
        let a = job("a", JobState::Running, 5);
        let b = job("b", JobState::Completed, 4);
        feed.publish(
            Arc::new(job("a", JobState::Running, 3)),
            Some(JobState::Pending),
        );
        feed.publish(Arc::new(b.clone()), Some(JobState::Running));
        feed.publish(Arc::new(a.clone()), Some(JobState::Running));
        let mut a_in_store = a.clone();
        a_in_store.id = a.id;
        let events = watcher.open(vec![FeedEvent::Existing(Arc::new(a_in_store))], 5);
        let shape: Vec<(u64, &str)> = events
            .iter()
            .map(|e| {
                let kind = match e {
                    FeedEvent::Existing(_) => "existing",
                    FeedEvent::Changed(_) => "changed",
                    FeedEvent::Synced(_) => "synced",
                    FeedEvent::Deleted(_) => "deleted",
                };
                (e.revision(), kind)
            })
            .collect();
        // Revision 3 was job("a") under another id: it stays.
        assert_eq!(
            shape,
            [
                (3, "changed"),
                (4, "changed"),
                (5, "existing"),
                (5, "synced")
            ]
        );
    }

    #[test]
    fn a_resume_below_a_purged_tombstone_or_above_now_is_refused() {
        assert!(check_resumable(5, 9, 3).is_ok());
        assert!(
            check_resumable(3, 9, 3).is_ok(),
            "from the purge on is kept"
        );
        let refused = check_resumable(2, 9, 3).unwrap_err().to_string();
        assert!(refused.contains("revision too old: resync without since_revision"));
        assert!(
            check_resumable(10, 9, 0).is_err(),
            "above the current revision"
        );
    }
}
