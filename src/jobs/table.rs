//! The passive side of the job engine: where jobs are kept. A [`JobTable`]
//! stores rows and answers questions about them; it never runs a job and
//! never decides a transition: the engine (`super::engine`) asks
//! [`super::lifecycle`], and a table only applies what it decided, on a
//! row it holds (a lock, or a row locked `FOR UPDATE`).
//!
//! Two tables implement it: [`super::store::memory::MemoryTable`] (maps in
//! this process, one instance) and [`super::store::PostgresStore`] (tables
//! in the database, durable and shared by every instance in front of it).
//! Both stamp every change with the next value of one table-wide sequence,
//! the revision, so that the rows changed after a revision are the change
//! feed that WatchJob and WatchJobs follow.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::feed::{Tombstone, WatchFilter};
use super::limits::ClaimRules;
use super::{JobSnapshot, JobState};
use crate::error::Result;

/// What an instance tells the others (and itself) after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// A job waits to be claimed.
    Pending,
    /// A job changed or was deleted.
    Changed(Uuid),
    /// Whoever runs this job, stop it.
    Cancel(Uuid),
    /// Old jobs were removed.
    Swept,
}

impl Announcement {
    /// As it travels in a notification: `pending`, a job id, `cancel:` and
    /// a job id, `swept`.
    pub fn payload(&self) -> String {
        match self {
            Announcement::Pending => "pending".into(),
            Announcement::Changed(id) => id.to_string(),
            Announcement::Cancel(id) => format!("cancel:{id}"),
            Announcement::Swept => "swept".into(),
        }
    }

    /// A payload heard; None for one this binary does not know.
    pub fn parse(payload: &str) -> Option<Announcement> {
        Some(match payload {
            "pending" => Announcement::Pending,
            "swept" => Announcement::Swept,
            _ => match payload.strip_prefix("cancel:") {
                Some(id) => Announcement::Cancel(Uuid::try_parse(id).ok()?),
                None => Announcement::Changed(Uuid::try_parse(payload).ok()?),
            },
        })
    }
}

/// Which jobs a page holds.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Empty: every state.
    pub states: HashSet<JobState>,
    /// Compared ASCII-case-insensitively; None: every procedure.
    pub procedure: Option<String>,
    /// Only the jobs of this schedule.
    pub schedule_id: Option<Uuid>,
}

/// A changed job as the change feed reads it.
#[derive(Debug)]
pub struct ChangedJob {
    pub job: JobSnapshot,
    /// The revision at which it became RUNNING, if it did.
    pub start_revision: Option<u64>,
}

/// The change feed after a revision.
#[derive(Debug, Default)]
pub struct Changes {
    /// Changed jobs, in revision order.
    pub jobs: Vec<ChangedJob>,
    /// Deletions, in revision order.
    pub deleted: Vec<Tombstone>,
    /// The highest revision read (or the one asked from, when nothing changed).
    pub through: u64,
    /// Whether more changes wait beyond this batch.
    pub more: bool,
}

/// Most changes read at once.
pub const CHANGES_BATCH: usize = 1000;

impl Changes {
    /// The changes after `after`, from two batches of at most
    /// [`CHANGES_BATCH`] each, read in revision order. When a batch is full
    /// the feed reads on from the lower of the two batches' ends, so that
    /// neither list skips what lies beyond the other's end.
    pub fn from_batches(jobs: Vec<ChangedJob>, deleted: Vec<Tombstone>, after: u64) -> Changes {
        let more = jobs.len() == CHANGES_BATCH || deleted.len() == CHANGES_BATCH;
        let mut changes = Changes {
            jobs,
            deleted,
            through: after,
            more,
        };
        if more {
            let end = |last: Option<u64>| last.unwrap_or(u64::MAX);
            let through = end(changes.jobs.last().map(|j| j.job.revision))
                .min(end(changes.deleted.last().map(|t| t.revision)));
            changes.jobs.retain(|j| j.job.revision <= through);
            changes.deleted.retain(|t| t.revision <= through);
            changes.through = through;
        } else {
            let last_job = changes.jobs.last().map_or(0, |j| j.job.revision);
            let last_deleted = changes.deleted.last().map_or(0, |t| t.revision);
            changes.through = after.max(last_job).max(last_deleted);
        }
        changes
    }
}

/// What a WatchJobs stream starts from, read in one snapshot of the table.
#[derive(Debug, Default)]
pub struct Start {
    pub jobs: Vec<JobSnapshot>,
    pub deleted: Vec<Tombstone>,
    /// The table's revision as of that snapshot.
    pub revision: u64,
}

/// What a cancel did.
pub enum CancelOutcome {
    /// It was PENDING: it is CANCELLED now.
    Cancelled(JobSnapshot),
    /// It is RUNNING: whoever runs it is to stop it.
    Requested(JobSnapshot),
    Missing,
}

/// Where the engine keeps jobs. Every write stamps the next revision.
#[async_trait]
pub trait JobTable: Send + Sync {
    /// Whether the jobs outlive this process (and are shared by other
    /// instances): a table that is not durable loses its PENDING jobs at
    /// shutdown, so the engine cancels them.
    fn durable(&self) -> bool;

    /// Insert-or-get: stores a PENDING job whose revision is also its place
    /// in submission order; with its (owner, request_id) already stored,
    /// returns that job and stores nothing.
    async fn insert(&self, job: &JobSnapshot) -> Result<JobSnapshot>;

    /// The job an owner submitted with `request_id`, if any.
    async fn find_by_request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<JobSnapshot>>;

    /// How many jobs are PENDING (claimed or not).
    async fn pending(&self) -> Result<u64>;

    /// How many jobs are in each state, for metrics; states with none may
    /// be left out.
    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>>;

    async fn get(&self, id: &Uuid) -> Result<Option<JobSnapshot>>;

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<JobSnapshot>>;

    /// Jobs submitted before revision `before`, newest first, at most
    /// `limit`; only `owner`'s when given.
    async fn list(
        &self,
        filter: &ListFilter,
        owner: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobSnapshot>>;

    /// Claim next: takes the oldest claimable PENDING job nobody claimed
    /// for `instance`, applying `lifecycle::claim`. It stays PENDING, at
    /// its place in the queue, until the instance has a connection for it.
    /// Claimable: not waiting for a retry's backoff, not expired, no older
    /// job of its schedule still live, and within every `rules` limit its
    /// procedure matches (counting the claimed jobs of every instance); a
    /// job passed over for a limit says so in its progress message.
    async fn claim(&self, instance: &Uuid, rules: &ClaimRules) -> Result<Option<JobSnapshot>>;

    /// Writes a job of `instance` that `lifecycle::finish` or `interrupt`
    /// sent back to PENDING for its next attempt, unclaimed; a cancel
    /// requested meanwhile ends it CANCELLED instead. False when the row is
    /// no longer that instance's live job.
    async fn retry(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool>;

    /// Applies `lifecycle::expire` to every unclaimed PENDING job past its
    /// expiry at `now`; returns the jobs that ended.
    async fn expire_due(&self, now: SystemTime) -> Result<Vec<Uuid>>;

    /// Whether it keeps jobs' plans (retry policies, expiry, schedule
    /// ticks); a table that does not refuses them at submit.
    fn keeps_plans(&self) -> bool {
        true
    }

    /// Save: writes a claimed job's progress or its end, as the lifecycle
    /// left it on the instance running it; false when the row is no longer
    /// that instance's live job (it was cancelled while pending, or failed
    /// as INTERRUPTED), which then keeps what it has.
    async fn save(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool>;

    /// Gives back a claimed job that could not get a connection: it waits,
    /// PENDING at its place, for a claim again.
    async fn release(&self, job: &JobSnapshot, instance: &Uuid) -> Result<()>;

    /// CancelJob, applying `lifecycle::cancel` to the held row.
    async fn cancel(&self, id: &Uuid) -> Result<CancelOutcome>;

    /// Which of these live jobs someone asked to cancel.
    async fn cancel_requests(&self, live: &[Uuid]) -> Result<Vec<Uuid>>;

    /// Deletes an ended job, leaving a tombstone; false when it is not there
    /// or still live.
    async fn delete(&self, id: &Uuid) -> Result<bool>;

    /// Deletes jobs that ended more than `retention` ago, leaving
    /// tombstones, and purges tombstones older than `tombstone_retention`.
    async fn sweep(&self, retention: Duration, tombstone_retention: Duration) -> Result<u64>;

    /// The change feed: jobs changed and deleted after revision `after`, in
    /// revision order, at most a batch.
    async fn changes(&self, after: u64) -> Result<Changes>;

    /// The current revision.
    async fn revision(&self) -> Result<u64>;

    /// What a WatchJobs stream starts from, in one snapshot: the live jobs
    /// that match (`since` None), or every job changed and deleted after
    /// `since` whatever its state, after checking that the table can replay
    /// from there.
    async fn start_of_watch(&self, filter: &WatchFilter, since: Option<u64>) -> Result<Start>;

    /// Renews an instance's lease.
    async fn heartbeat(&self, instance: &Uuid, name: &str, lease: Duration) -> Result<()>;

    /// Removes an instance (a clean shutdown).
    async fn leave(&self, instance: &Uuid) -> Result<()>;

    /// Instances whose lease expired: what they claimed goes back to the
    /// queue, `lifecycle::interrupt` fails what they ran, and they are
    /// forgotten. Returns the jobs failed.
    async fn recover(&self) -> Result<Vec<Uuid>>;

    /// Announces a change to every instance, this one included.
    async fn notify(&self, announcement: Announcement);

    /// The announcements of every instance (payloads), forwarded on a task
    /// of `tasks` that ends with `stop`. None when announcements do not
    /// travel: the engine then hears its own at once and the others' writes
    /// by polling, and `notify` is never called.
    fn listen(
        &self,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Option<broadcast::Sender<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_unknown_payloads_are_ignored() {
        let id = Uuid::new_v4();
        for announcement in [
            Announcement::Pending,
            Announcement::Changed(id),
            Announcement::Cancel(id),
            Announcement::Swept,
        ] {
            assert_eq!(
                Announcement::parse(&announcement.payload()),
                Some(announcement)
            );
        }
        assert_eq!(Announcement::parse("cancel:nope"), None);
        assert_eq!(Announcement::parse("hello"), None);
    }
}
