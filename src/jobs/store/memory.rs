//! The memory job table (`--job-store memory`, the default): the jobs of
//! one instance, in maps of this process, with the same rows, guards and
//! revisions as the database tables, so that one engine runs both.
//!
//! One std `Mutex` guards the maps; it is held only for map operations,
//! never across an await. Each change takes the next revision under it, so
//! the change feed (`by_revision`) is exactly the order of the changes.
//! Listing walks a `BTreeMap` keyed by the revision taken at submit, and
//! claiming takes the first entry of the queue (unclaimed PENDING jobs by
//! that same revision): a page or a claim costs what it returns, not a scan
//! of every job. At most `max_retained` jobs, holding at most
//! `max_retained_bytes` (their parameters, outputs and messages), are kept:
//! past either, the oldest finished ones are forgotten, each with a
//! tombstone as a deletion leaves.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::error::Result;
use crate::jobs::feed::{self, Tombstone, WatchFilter};
use crate::jobs::lifecycle::{self, Cancel};
use crate::jobs::limits::ClaimRules;
use crate::jobs::table::{
    Announcement, CHANGES_BATCH, CancelOutcome, ChangedJob, Changes, JobTable, ListFilter, Start,
};
use crate::jobs::{JobSnapshot, JobState};

pub struct MemoryTable {
    tables: Mutex<Tables>,
    max_retained: usize,
    max_retained_bytes: usize,
}

#[derive(Default)]
struct Tables {
    /// The last revision taken.
    revision: u64,
    /// The highest revision of a purged tombstone.
    purged_through: u64,
    /// Boxed: a map keeps spare slots, which should cost a pointer each.
    rows: HashMap<Uuid, Box<Row>>,
    /// Submission order: create_revision → id.
    by_create: BTreeMap<u64, Uuid>,
    /// The change feed: each job at its last revision.
    by_revision: BTreeMap<u64, Uuid>,
    /// The queue: unclaimed PENDING jobs by create_revision.
    unclaimed: BTreeMap<u64, Uuid>,
    /// PENDING jobs, claimed or not.
    pending: u64,
    /// What the rows hold, by [`JobSnapshot::approximate_bytes`].
    retained_bytes: usize,
    /// (owner, request_id) → job: idempotency keys are per owner.
    by_request_id: HashMap<(Arc<str>, Arc<str>), Uuid>,
    /// Claimed jobs that have not ended, which the procedure limits count.
    claimed: HashSet<Uuid>,
    /// Each schedule's live jobs by create_revision: a job of a schedule
    /// waits for the older ones.
    live_by_schedule: HashMap<Uuid, BTreeSet<u64>>,
    /// Deletions by revision.
    tombstones: BTreeMap<u64, Tombstone>,
}

struct Row {
    job: JobSnapshot,
    /// The instance that claimed it.
    instance: Option<Uuid>,
    /// The revision at which it became RUNNING.
    start_revision: Option<u64>,
    /// Its [`JobSnapshot::approximate_bytes`] when submitted and once ended.
    bytes: usize,
}

impl Row {
    fn queued(&self) -> bool {
        self.job.state == JobState::Pending && self.instance.is_none()
    }

    fn claimed(&self) -> bool {
        self.instance.is_some() && !self.job.state.is_terminal()
    }
}

impl Tables {
    fn next(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Applies `change` to a row; when it changed something, stamps the
    /// next revision and keeps the indexes. Returns whether it changed.
    fn update(&mut self, id: &Uuid, change: impl FnOnce(&mut Row, &mut u64) -> bool) -> bool {
        let mut revision = self.revision;
        let Some(row) = self.rows.get_mut(id) else {
            return false;
        };
        let (was_queued, was_pending, was_claimed, old) = (
            row.queued(),
            row.job.state == JobState::Pending,
            row.claimed(),
            row.job.revision,
        );
        if !change(row, &mut revision) {
            return false;
        }
        let revision = if revision == self.revision {
            revision + 1
        } else {
            revision
        };
        row.job.revision = revision;
        let (queued, pending, claimed, order) = (
            row.queued(),
            row.job.state == JobState::Pending,
            row.claimed(),
            row.job.create_revision,
        );
        let ended_tick = row
            .job
            .schedule_id()
            .filter(|_| row.job.state.is_terminal());
        self.revision = revision;
        self.by_revision.remove(&old);
        self.by_revision.insert(revision, *id);
        match (was_queued, queued) {
            (true, false) => drop(self.unclaimed.remove(&order)),
            (false, true) => drop(self.unclaimed.insert(order, *id)),
            _ => {}
        }
        match (was_pending, pending) {
            (true, false) => self.pending -= 1,
            (false, true) => self.pending += 1,
            _ => {}
        }
        match (was_claimed, claimed) {
            (true, false) => drop(self.claimed.remove(id)),
            (false, true) => drop(self.claimed.insert(*id)),
            _ => {}
        }
        if let Some(schedule) = ended_tick {
            self.forget_live_of_schedule(schedule, order);
        }
        true
    }

    fn forget_live_of_schedule(&mut self, schedule: Uuid, order: u64) {
        if let Some(live) = self.live_by_schedule.get_mut(&schedule) {
            live.remove(&order);
            if live.is_empty() {
                self.live_by_schedule.remove(&schedule);
            }
        }
    }

    /// The oldest claimable job of the queue, and the jobs passed over for
    /// a limit whose message should say so.
    fn next_claimable(
        &self,
        rules: &ClaimRules,
        now: SystemTime,
    ) -> (Option<Uuid>, Vec<(Uuid, String)>) {
        let counts: Vec<usize> = rules
            .limits
            .iter()
            .map(|limit| {
                self.claimed
                    .iter()
                    .filter(|id| limit.matches(&self.rows[*id].job.call.display_name))
                    .count()
            })
            .collect();
        let mut waiting = Vec::new();
        for (order, id) in &self.unclaimed {
            let job = &self.rows[id].job;
            if !job.claimable_at(now) {
                continue;
            }
            if let Some(schedule) = job.schedule_id()
                && self
                    .live_by_schedule
                    .get(&schedule)
                    .and_then(|live| live.first())
                    .is_some_and(|oldest| oldest < order)
            {
                continue;
            }
            if let Some(limit) = rules.blocking(&job.call.display_name, &counts) {
                let message = limit.waiting_message();
                if job.progress_message != message {
                    waiting.push((*id, message));
                }
                continue;
            }
            return (Some(*id), waiting);
        }
        (None, waiting)
    }

    /// Removes a job, leaving a tombstone with the next revision.
    fn remove(&mut self, id: &Uuid, now: SystemTime) -> Option<JobSnapshot> {
        let row = self.rows.remove(id)?;
        self.retained_bytes -= row.bytes;
        let job = row.job;
        self.by_create.remove(&job.create_revision);
        self.by_revision.remove(&job.revision);
        self.unclaimed.remove(&job.create_revision);
        self.claimed.remove(id);
        if let Some(schedule) = job.schedule_id() {
            self.forget_live_of_schedule(schedule, job.create_revision);
        }
        if job.state == JobState::Pending {
            self.pending -= 1;
        }
        if let Some(request_id) = &job.request_id {
            self.by_request_id
                .remove(&(job.owner.clone(), request_id.clone()));
        }
        let revision = self.next();
        self.tombstones
            .insert(revision, Tombstone::of(&job, revision, now));
        Some(job)
    }

    /// Keeps at most `max_jobs` jobs holding at most `max_bytes`, counting
    /// `adding` about to be added, by forgetting the oldest finished ones
    /// (never `keep`, a job that just ended: its outputs are still wanted).
    fn make_room(
        &mut self,
        max_jobs: usize,
        max_bytes: usize,
        adding: Option<usize>,
        keep: Option<Uuid>,
    ) {
        let now = SystemTime::now();
        loop {
            let jobs = self.rows.len() + usize::from(adding.is_some());
            let bytes = self.retained_bytes + adding.unwrap_or(0);
            if jobs <= max_jobs && bytes <= max_bytes {
                return;
            }
            let oldest_finished = self
                .by_create
                .values()
                .find(|id| Some(**id) != keep && self.rows[*id].job.state.is_terminal())
                .copied();
            match oldest_finished {
                Some(id) => drop(self.remove(&id, now)),
                None => return,
            }
        }
    }
}

impl MemoryTable {
    pub fn new(max_retained: usize, max_retained_bytes: usize) -> MemoryTable {
        MemoryTable {
            tables: Mutex::default(),
            max_retained,
            max_retained_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().expect("job table lock")
    }

    fn snapshot(&self, id: &Uuid) -> Option<JobSnapshot> {
        self.lock().rows.get(id).map(|row| row.job.clone())
    }
}

#[async_trait]
impl JobTable for MemoryTable {
    fn durable(&self) -> bool {
        false
    }

    async fn insert(&self, job: &JobSnapshot) -> Result<JobSnapshot> {
        let mut tables = self.lock();
        let key = job
            .request_id
            .as_ref()
            .map(|request_id| (job.owner.clone(), request_id.clone()));
        if let Some(existing) = key.as_ref().and_then(|key| tables.by_request_id.get(key)) {
            return Ok(tables.rows[existing].job.clone());
        }
        let bytes = job.approximate_bytes();
        tables.make_room(
            self.max_retained,
            self.max_retained_bytes,
            Some(bytes),
            None,
        );
        let revision = tables.next();
        let job = JobSnapshot {
            revision,
            create_revision: revision,
            ..job.clone()
        };
        if let Some(key) = key {
            tables.by_request_id.insert(key, job.id);
        }
        tables.by_create.insert(revision, job.id);
        tables.by_revision.insert(revision, job.id);
        tables.unclaimed.insert(revision, job.id);
        tables.pending += 1;
        if let Some(schedule) = job.schedule_id() {
            tables
                .live_by_schedule
                .entry(schedule)
                .or_default()
                .insert(revision);
        }
        tables.rows.insert(
            job.id,
            Box::new(Row {
                job: job.clone(),
                instance: None,
                start_revision: None,
                bytes,
            }),
        );
        tables.retained_bytes += bytes;
        Ok(job)
    }

    async fn find_by_request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<JobSnapshot>> {
        let tables = self.lock();
        let key = (Arc::<str>::from(owner), Arc::<str>::from(request_id));
        Ok(tables
            .by_request_id
            .get(&key)
            .map(|id| tables.rows[id].job.clone()))
    }

    async fn pending(&self) -> Result<u64> {
        Ok(self.lock().pending)
    }

    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        let tables = self.lock();
        Ok(JobState::ALL
            .into_iter()
            .map(|state| {
                let count = tables.rows.values().filter(|r| r.job.state == state);
                (state, count.count() as u64)
            })
            .collect())
    }

    async fn get(&self, id: &Uuid) -> Result<Option<JobSnapshot>> {
        Ok(self.snapshot(id))
    }

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<JobSnapshot>> {
        let tables = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| tables.rows.get(id).map(|row| row.job.clone()))
            .collect())
    }

    async fn list(
        &self,
        filter: &ListFilter,
        owner: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobSnapshot>> {
        let procedure = filter.procedure.as_deref();
        let tables = self.lock();
        let page = tables
            .by_create
            .range(..before)
            .rev()
            .map(|(_, id)| &tables.rows[id].job)
            .filter(|job| {
                owner.is_none_or(|owner| *job.owner == *owner)
                    && (filter.states.is_empty() || filter.states.contains(&job.state))
                    && procedure.is_none_or(|p| job.call.display_name.eq_ignore_ascii_case(p))
                    && filter
                        .schedule_id
                        .is_none_or(|s| job.schedule_id() == Some(s))
            })
            .take(limit)
            .cloned()
            .collect();
        Ok(page)
    }

    async fn claim(&self, instance: &Uuid, rules: &ClaimRules) -> Result<Option<JobSnapshot>> {
        let mut tables = self.lock();
        let (next, waiting) = tables.next_claimable(rules, SystemTime::now());
        for (id, message) in waiting {
            tables.update(&id, |row, _| {
                row.job.progress_message = message.into();
                true
            });
        }
        let Some(id) = next else {
            return Ok(None);
        };
        tables.update(&id, |row, _| {
            row.instance = Some(*instance);
            lifecycle::claim(&mut row.job);
            true
        });
        Ok(Some(tables.rows[&id].job.clone()))
    }

    async fn save(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let mut tables = self.lock();
        let saved = tables.update(&job.id, |row, revision| {
            // Never backwards: a stale PENDING snapshot does not undo a start.
            let backwards = row.job.state == JobState::Running && job.state == JobState::Pending;
            if row.job.state.is_terminal() || row.instance != Some(*instance) || backwards {
                return false;
            }
            if job.state != JobState::Pending && row.start_revision.is_none() {
                // A start and an end written at once take a revision each.
                *revision += 1;
                row.start_revision = Some(*revision);
                if job.state.is_terminal() {
                    *revision += 1;
                }
            }
            row.job = JobSnapshot {
                cancel_requested: row.job.cancel_requested || job.cancel_requested,
                call: row.job.call.clone(),
                request_id: row.job.request_id.clone(),
                owner: row.job.owner.clone(),
                create_revision: row.job.create_revision,
                ..job.clone()
            };
            true
        });
        if saved && job.state.is_terminal() {
            // Its outputs and messages count from now on.
            let row = tables.rows.get_mut(&job.id).expect("just saved");
            let (old, new) = (row.bytes, row.job.approximate_bytes());
            row.bytes = new;
            tables.retained_bytes = tables.retained_bytes - old + new;
            tables.make_room(
                self.max_retained,
                self.max_retained_bytes,
                None,
                Some(job.id),
            );
        }
        Ok(saved)
    }

    async fn release(&self, job: &JobSnapshot, instance: &Uuid) -> Result<()> {
        self.lock().update(&job.id, |row, _| {
            if !(row.job.state == JobState::Pending && row.instance == Some(*instance)) {
                return false;
            }
            row.instance = None;
            row.job.progress_message = job.progress_message.clone();
            true
        });
        Ok(())
    }

    async fn retry(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let now = SystemTime::now();
        Ok(self.lock().update(&job.id, |row, _| {
            if row.job.state.is_terminal() || row.instance != Some(*instance) {
                return false;
            }
            let cancel_requested = row.job.cancel_requested;
            row.instance = None;
            row.start_revision = None;
            row.job = JobSnapshot {
                call: row.job.call.clone(),
                request_id: row.job.request_id.clone(),
                owner: row.job.owner.clone(),
                create_revision: row.job.create_revision,
                ..job.clone()
            };
            if cancel_requested {
                lifecycle::cancel_pending(&mut row.job, now);
            }
            true
        }))
    }

    async fn expire_due(&self, now: SystemTime) -> Result<Vec<Uuid>> {
        let mut tables = self.lock();
        let due: Vec<Uuid> = tables
            .unclaimed
            .values()
            .filter(|id| tables.rows[*id].job.is_expired_at(now))
            .copied()
            .collect();
        for id in &due {
            tables.update(id, |row, _| lifecycle::expire(&mut row.job, now));
        }
        Ok(due)
    }

    async fn cancel(&self, id: &Uuid) -> Result<CancelOutcome> {
        let mut tables = self.lock();
        let Some(row) = tables.rows.get(id) else {
            return Ok(CancelOutcome::Missing);
        };
        let mut job = row.job.clone();
        let outcome = lifecycle::cancel(&mut job, SystemTime::now())?;
        if outcome != Cancel::AlreadyRequested {
            tables.update(id, |row, _| {
                row.job = job;
                true
            });
        }
        let job = tables.rows[id].job.clone();
        Ok(match outcome {
            Cancel::Ended => CancelOutcome::Cancelled(job),
            Cancel::Requested | Cancel::AlreadyRequested => CancelOutcome::Requested(job),
        })
    }

    async fn cancel_requests(&self, live: &[Uuid]) -> Result<Vec<Uuid>> {
        let tables = self.lock();
        Ok(live
            .iter()
            .filter(|id| tables.rows.get(id).is_some_and(|r| r.job.cancel_requested))
            .copied()
            .collect())
    }

    async fn delete(&self, id: &Uuid) -> Result<bool> {
        let mut tables = self.lock();
        if !tables
            .rows
            .get(id)
            .is_some_and(|row| row.job.state.is_terminal())
        {
            return Ok(false);
        }
        Ok(tables.remove(id, SystemTime::now()).is_some())
    }

    async fn sweep(&self, retention: Duration, tombstone_retention: Duration) -> Result<u64> {
        let now = SystemTime::now();
        let mut tables = self.lock();
        let expired: Vec<Uuid> = tables
            .rows
            .values()
            .filter(|row| lifecycle::expired(&row.job, retention, now))
            .map(|row| row.job.id)
            .collect();
        for id in &expired {
            tables.remove(id, now);
        }
        while let Some(oldest) = tables.tombstones.first_entry() {
            let age = now.duration_since(oldest.get().deleted_at);
            if age.unwrap_or_default() < tombstone_retention {
                break;
            }
            tables.purged_through = oldest.remove().revision;
        }
        // Maps keep their capacity after removals: give most of it back once
        // a burst of jobs is gone.
        if tables.rows.capacity() > 4 * tables.rows.len().max(1024) {
            tables.rows.shrink_to_fit();
            tables.by_request_id.shrink_to_fit();
        }
        Ok(expired.len() as u64)
    }

    async fn changes(&self, after: u64) -> Result<Changes> {
        let tables = self.lock();
        let jobs = tables
            .by_revision
            .range(after + 1..)
            .take(CHANGES_BATCH)
            .map(|(_, id)| {
                let row = &tables.rows[id];
                ChangedJob {
                    job: row.job.clone(),
                    start_revision: row.start_revision,
                }
            })
            .collect();
        let deleted = tables
            .tombstones
            .range(after + 1..)
            .take(CHANGES_BATCH)
            .map(|(_, tombstone)| tombstone.clone())
            .collect();
        Ok(Changes::from_batches(jobs, deleted, after))
    }

    async fn revision(&self) -> Result<u64> {
        Ok(self.lock().revision)
    }

    async fn start_of_watch(&self, filter: &WatchFilter, since: Option<u64>) -> Result<Start> {
        let tables = self.lock();
        let mut start = Start {
            revision: tables.revision,
            ..Start::default()
        };
        let admits = |job: &JobSnapshot| {
            filter.admits(&job.owner, &job.call.display_name, job.schedule_id())
        };
        match since {
            Some(since) => {
                feed::check_resumable(since, tables.revision, tables.purged_through)?;
                start.jobs = tables
                    .by_revision
                    .range(since + 1..)
                    .map(|(_, id)| &tables.rows[id].job)
                    .filter(|job| admits(job))
                    .cloned()
                    .collect();
                start.deleted = tables
                    .tombstones
                    .range(since + 1..)
                    .map(|(_, tombstone)| tombstone)
                    .filter(|t| filter.admits(&t.owner, &t.procedure, t.schedule_id))
                    .cloned()
                    .collect();
            }
            None => {
                start.jobs = tables
                    .by_revision
                    .values()
                    .map(|id| &tables.rows[id].job)
                    .filter(|job| {
                        !job.state.is_terminal()
                            && (filter.states.is_empty() || filter.states.contains(&job.state))
                            && admits(job)
                    })
                    .cloned()
                    .collect();
            }
        }
        Ok(start)
    }

    /// One instance: nobody else reads its lease.
    async fn heartbeat(&self, _instance: &Uuid, _name: &str, _lease: Duration) -> Result<()> {
        Ok(())
    }

    async fn leave(&self, _instance: &Uuid) -> Result<()> {
        Ok(())
    }

    /// One instance: no other's lease can expire.
    async fn recover(&self) -> Result<Vec<Uuid>> {
        Ok(Vec::new())
    }

    /// One instance: the engine hears its own announcements.
    async fn notify(&self, _announcement: Announcement) {}

    fn listen(
        &self,
        _tasks: &TaskTracker,
        _stop: CancellationToken,
    ) -> Option<broadcast::Sender<String>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Caller;
    use crate::call::ProcedureCall;
    use crate::name::ProcedureName;

    fn submitted(procedure: &str, request_id: Option<&str>) -> JobSnapshot {
        let call = ProcedureCall {
            name: ProcedureName::parse(procedure).unwrap(),
            display_name: procedure.into(),
            params: Vec::new(),
            returns: None,
            overload: None,
        };
        lifecycle::submit(
            call,
            request_id.map(Into::into),
            "".into(),
            crate::jobs::plan::JobPlan::PLAIN,
        )
    }

    fn everyone() -> WatchFilter {
        WatchFilter {
            states: Default::default(),
            procedure: None,
            schedule_id: None,
            caller: Caller::anonymous(),
        }
    }

    #[tokio::test]
    async fn claims_follow_submission_order_and_a_released_job_is_first_again() {
        let table = MemoryTable::new(100, usize::MAX);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = table.insert(&submitted("p.a", None)).await.unwrap();
        let second = table.insert(&submitted("p.b", None)).await.unwrap();
        assert!(first.create_revision < second.create_revision);
        let claimed = table
            .claim(&a, &ClaimRules::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.id, first.id);
        assert_eq!(
            claimed.state,
            JobState::Pending,
            "a claim leaves it pending"
        );
        assert_eq!(claimed.progress_message, lifecycle::CLAIMED);
        table.release(&claimed, &b).await.unwrap();
        assert_eq!(
            table
                .claim(&b, &ClaimRules::default())
                .await
                .unwrap()
                .unwrap()
                .id,
            second.id,
            "only its claimer gives a job back"
        );
        table.release(&claimed, &a).await.unwrap();
        assert_eq!(
            table
                .claim(&b, &ClaimRules::default())
                .await
                .unwrap()
                .unwrap()
                .id,
            first.id
        );
        assert!(
            table
                .claim(&b, &ClaimRules::default())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(table.pending().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn only_the_claimer_saves_and_nothing_overwrites_an_end() {
        let table = MemoryTable::new(100, usize::MAX);
        let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
        table.insert(&submitted("p.a", None)).await.unwrap();
        let mut job = table
            .claim(&me, &ClaimRules::default())
            .await
            .unwrap()
            .unwrap();
        let claimed = job.clone();
        let now = SystemTime::now();
        lifecycle::start(&mut job, now);
        assert!(!table.save(&job, &other).await.unwrap(), "not its claim");
        assert!(table.save(&job, &me).await.unwrap());
        assert!(
            !table.save(&claimed, &me).await.unwrap(),
            "a stale PENDING snapshot does not undo the start"
        );
        assert_eq!(table.pending().await.unwrap(), 0);
        let cancelled = table.cancel(&job.id).await.unwrap();
        assert!(matches!(cancelled, CancelOutcome::Requested(ref j) if j.cancel_requested));
        lifecycle::finish(&mut job, Ok(Default::default()), false, now);
        assert!(table.save(&job, &me).await.unwrap());
        let stored = table.get(&job.id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Completed);
        assert!(
            stored.cancel_requested,
            "a save keeps the table's cancel flag"
        );
        assert!(!table.save(&job, &me).await.unwrap(), "an end is final");
        assert_eq!(table.pending().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_start_and_an_end_saved_at_once_are_both_in_the_feed() {
        let table = MemoryTable::new(100, usize::MAX);
        let me = Uuid::new_v4();
        table.insert(&submitted("p.a", None)).await.unwrap();
        let mut job = table
            .claim(&me, &ClaimRules::default())
            .await
            .unwrap()
            .unwrap();
        let claimed_at = job.revision;
        let now = SystemTime::now();
        lifecycle::start(&mut job, now);
        lifecycle::finish(&mut job, Ok(Default::default()), false, now);
        table.save(&job, &me).await.unwrap();
        let changes = table.changes(claimed_at).await.unwrap();
        let [changed] = &changes.jobs[..] else {
            panic!("one row changed: {changes:?}")
        };
        assert_eq!(changed.start_revision, Some(claimed_at + 1));
        assert_eq!(changed.job.revision, claimed_at + 2);
        assert_eq!(changes.through, claimed_at + 2);
    }

    #[tokio::test]
    async fn a_request_id_is_insert_or_get() {
        let table = MemoryTable::new(100, usize::MAX);
        let first = table.insert(&submitted("p.a", Some("k"))).await.unwrap();
        let again = table.insert(&submitted("p.a", Some("k"))).await.unwrap();
        assert_eq!(again.id, first.id);
        let found = table.find_by_request_id("", "k").await.unwrap().unwrap();
        assert_eq!(found.id, first.id);
        assert_eq!(table.pending().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn deletions_leave_tombstones_until_purged_and_old_resumes_are_refused() {
        let table = MemoryTable::new(100, usize::MAX);
        let job = table.insert(&submitted("p.a", None)).await.unwrap();
        assert!(!table.delete(&job.id).await.unwrap(), "a live job stays");
        table.cancel(&job.id).await.unwrap();
        assert!(table.delete(&job.id).await.unwrap());
        let start = table.start_of_watch(&everyone(), Some(0)).await.unwrap();
        assert_eq!(start.deleted.len(), 1);
        assert_eq!(start.deleted[0].state, JobState::Cancelled);
        assert!(start.jobs.is_empty());
        table.sweep(Duration::ZERO, Duration::ZERO).await.unwrap();
        let refused = table.start_of_watch(&everyone(), Some(0)).await;
        assert!(refused.is_err(), "below a purged tombstone");
        let now = table.revision().await.unwrap();
        assert!(table.start_of_watch(&everyone(), Some(now)).await.is_ok());
        assert!(
            table
                .start_of_watch(&everyone(), Some(now + 1))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn past_max_retained_the_oldest_finished_job_goes() {
        let table = MemoryTable::new(2, usize::MAX);
        let old = table.insert(&submitted("p.a", None)).await.unwrap();
        table.cancel(&old.id).await.unwrap();
        let live = table.insert(&submitted("p.b", None)).await.unwrap();
        table.insert(&submitted("p.c", None)).await.unwrap();
        assert!(table.get(&old.id).await.unwrap().is_none());
        assert!(
            table.get(&live.id).await.unwrap().is_some(),
            "live jobs stay"
        );
        let page = table
            .list(&ListFilter::default(), None, u64::MAX, 10)
            .await
            .unwrap();
        let names: Vec<_> = page.iter().map(|j| j.call.display_name.as_str()).collect();
        assert_eq!(names, ["p.c", "p.b"], "newest first");
    }

    /// Submits, claims and completes a job whose output holds `bytes`.
    async fn run_to_end(table: &MemoryTable, me: &Uuid, name: &str, bytes: usize) -> Uuid {
        table.insert(&submitted(name, None)).await.unwrap();
        let mut job = table
            .claim(me, &ClaimRules::default())
            .await
            .unwrap()
            .unwrap();
        let now = SystemTime::now();
        lifecycle::start(&mut job, now);
        let mut outputs = crate::call::Outputs::default();
        outputs
            .values
            .insert("big".into(), crate::call::Value::String("x".repeat(bytes)));
        lifecycle::finish(&mut job, Ok(outputs), false, now);
        assert!(table.save(&job, me).await.unwrap());
        job.id
    }

    #[tokio::test]
    async fn past_max_retained_bytes_the_oldest_finished_jobs_go_but_not_one_just_ended() {
        let table = MemoryTable::new(100, 2_500);
        let me = Uuid::new_v4();
        let mut ended = Vec::new();
        for name in ["p.a", "p.b", "p.c"] {
            ended.push(run_to_end(&table, &me, name, 1_000).await);
        }
        // 3 × ~1,004 bytes do not fit in 2,500: the oldest went.
        assert!(table.get(&ended[0]).await.unwrap().is_none());
        assert!(table.get(&ended[1]).await.unwrap().is_some());
        assert!(table.get(&ended[2]).await.unwrap().is_some());
        assert!(table.lock().retained_bytes <= 2_500);

        // A job bigger than the whole bound pushes out every other finished
        // job, but stays while it is the newest.
        let small = MemoryTable::new(100, 10);
        for name in ["p.q0", "p.q1"] {
            let id = run_to_end(&small, &me, name, 100).await;
            assert!(small.get(&id).await.unwrap().is_some(), "just ended");
        }
        assert_eq!(small.lock().rows.len(), 1);
        let deleted = small.lock().rows.keys().copied().next().unwrap();
        assert!(small.delete(&deleted).await.unwrap());
        assert_eq!(
            small.lock().retained_bytes,
            0,
            "a deletion gives its bytes back"
        );
    }
}
