//! The job registry: every job by id, newest-first order, idempotency keys.
//!
//! One std `Mutex` guards the maps; it is held only for map operations,
//! never across an await or a database call. A live job's state lives in
//! its `watch` channel, so readers of one job do not contend with writers
//! of another. Once a job ends it keeps only its final snapshot: nothing is
//! left to notify or cancel, and a retained job costs a few hundred bytes
//! instead of a channel and an interrupt. Listing walks a `BTreeMap` keyed by
//! a submission sequence number, so a page costs the page (plus skipped
//! non-matching jobs), not a scan of every job; the page token is that
//! sequence number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, info_span};
use uuid::Uuid;

use super::runner;
use super::{JobLimits, JobSnapshot, JobState};
use crate::auth::Caller;
use crate::backend::{Backend, Interrupt};
use crate::call::ProcedureCall;
use crate::error::{Error, Result};
use crate::name::printable;

const MAX_REQUEST_ID_LEN: usize = 128;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

pub struct JobRegistry {
    jobs: Mutex<Jobs>,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) limits: JobLimits,
    /// Jobs in PENDING; decremented by whoever moves a job out of it.
    pub(super) pending: AtomicUsize,
    accepting: AtomicBool,
    /// Woken each time a job ends, for [`JobRegistry::until_idle`].
    pub(super) job_ended: Notify,
    /// Whether the database is believed reachable: pending jobs wait while
    /// it is not, instead of failing one after the other.
    database_up: watch::Sender<bool>,
    /// Counts the jobs' reports that the database is gone, so that a health
    /// probe that started before one cannot undo it.
    down_reports: AtomicU64,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<Uuid, Entry>,
    /// Submission order: sequence number → id.
    order: BTreeMap<u64, Uuid>,
    /// (owner, request_id) → job: idempotency keys are per owner.
    by_request_id: HashMap<(Arc<str>, Arc<str>), Uuid>,
    next_seq: u64,
}

impl Jobs {
    /// Adds a pending or running job, newest in submission order.
    fn insert_live(&mut self, id: Uuid, tx: watch::Sender<JobSnapshot>, interrupt: Interrupt) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id);
        let slot = Slot::Live { tx, interrupt };
        self.by_id.insert(id, Entry { seq, slot });
    }
}

struct Entry {
    seq: u64,
    slot: Slot,
}

enum Slot {
    /// Pending or running: watchers follow the channel, a cancel reaches
    /// the interrupt.
    Live {
        tx: watch::Sender<JobSnapshot>,
        interrupt: Interrupt,
    },
    /// Ended: only the final snapshot is kept.
    Ended(Box<JobSnapshot>),
}

impl Entry {
    /// Reads the current snapshot without copying it.
    fn with<R>(&self, read: impl FnOnce(&JobSnapshot) -> R) -> R {
        match &self.slot {
            Slot::Live { tx, .. } => read(&tx.borrow()),
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
    pub fn new(backend: Arc<dyn Backend>, limits: JobLimits) -> Arc<Self> {
        Arc::new(Self {
            jobs: Mutex::new(Jobs::default()),
            backend,
            slots: Arc::new(Semaphore::new(limits.max_running)),
            limits,
            pending: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            job_ended: Notify::new(),
            database_up: watch::Sender::new(false),
            down_reports: AtomicU64::new(0),
        })
    }

    /// Queues a call as a job; with a known `request_id`, returns that job.
    pub fn submit(
        self: &Arc<Self>,
        call: ProcedureCall,
        request_id: Option<String>,
        owner: &Caller,
    ) -> Result<JobSnapshot> {
        check_request_id(request_id.as_deref())?;
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "procgate is shutting down and accepts no new jobs".into(),
            ));
        }
        let request_key = request_id.map(|key| (owner.name.clone(), Arc::<str>::from(key)));
        let mut jobs = self.jobs.lock().expect("registry lock");
        // Idempotency before capacity: a retry gets its job even when the
        // queue is full.
        if let Some(key) = &request_key
            && let Some(id) = jobs.by_request_id.get(key)
        {
            return super::same_call(jobs.by_id[id].snapshot(), &call);
        }
        if self.pending.load(Ordering::SeqCst) >= self.limits.max_pending {
            return Err(Error::Exhausted(format!(
                "{} jobs are already waiting (--max-pending-jobs); retry later",
                self.limits.max_pending
            )));
        }
        self.evict_over_cap(&mut jobs);

        let snapshot = JobSnapshot::pending(
            call,
            request_key.as_ref().map(|(_, key)| key.clone()),
            owner.name.clone(),
        );
        let id = snapshot.id;
        let call = snapshot.call.clone();
        let (tx, _) = watch::channel(snapshot.clone());
        let interrupt = Interrupt::new();
        if let Some(key) = request_key {
            jobs.by_request_id.insert(key, id);
        }
        jobs.insert_live(id, tx.clone(), interrupt.clone());
        self.pending.fetch_add(1, Ordering::SeqCst);
        drop(jobs);

        let span = info_span!("job", %id, procedure = %call.display_name);
        tokio::spawn(runner::run(self.clone(), call, tx, interrupt).instrument(span));
        Ok(snapshot)
    }

    pub fn get(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        let id = parse_id(id)?;
        let jobs = self.jobs.lock().expect("registry lock");
        Ok(visible(&jobs, &id, caller)?.snapshot())
    }

    /// How to follow the job: its channel while it is live, else its end.
    pub fn watch(&self, id: &str, caller: &Caller) -> Result<JobWatch> {
        let id = parse_id(id)?;
        let jobs = self.jobs.lock().expect("registry lock");
        Ok(match &visible(&jobs, &id, caller)?.slot {
            Slot::Live { tx, .. } => JobWatch::Live(tx.subscribe()),
            Slot::Ended(snapshot) => JobWatch::Ended(snapshot.clone()),
        })
    }

    /// Jobs newest first, `page_size` (0 = default) at a time.
    pub fn list(
        &self,
        filter: &ListFilter,
        page_size: usize,
        page_token: &str,
        caller: &Caller,
    ) -> Result<Page> {
        let page_size = page_size_for(page_size);
        let before = parse_page_token(page_token)?;
        let procedure = filter.procedure.as_deref();
        let jobs = self.jobs.lock().expect("registry lock");
        let mut page = Vec::with_capacity(page_size);
        let mut next_page_token = None;
        for (&seq, id) in jobs.order.range(..before).rev() {
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
                next_page_token = Some(page_token_for(seq + 1));
                break;
            }
            page.push(entry.snapshot());
        }
        Ok(Page {
            jobs: page,
            next_page_token,
        })
    }

    /// Cancels a job: PENDING ends at once, RUNNING is interrupted in the
    /// database and ends CANCELLED when its statement returns.
    pub async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobSnapshot> {
        let id = parse_id(id)?;
        let (tx, interrupt) = {
            let jobs = self.jobs.lock().expect("registry lock");
            match &visible(&jobs, &id, caller)?.slot {
                Slot::Live { tx, interrupt } => (tx.clone(), interrupt.clone()),
                Slot::Ended(job) => return Err(already_ended(&id, job.state)),
            }
        };
        if self.cancel_pending(&tx) {
            interrupt.request(); // no statement yet: only wakes the runner
            let job = tx.borrow().clone();
            self.retire(&id);
            return Ok(job);
        }
        let mut refused = None;
        tx.send_if_modified(|job| match job.state {
            JobState::Running if !job.cancel_requested => {
                job.cancel_requested = true;
                job.progress_message = "cancelling".into();
                true
            }
            JobState::Running => false,
            state => {
                refused = Some(state);
                false
            }
        });
        if let Some(state) = refused {
            return Err(already_ended(&id, state));
        }
        interrupt.request();
        Ok(tx.borrow().clone())
    }

    /// PENDING → CANCELLED; false when the job is no longer pending.
    pub(super) fn cancel_pending(&self, tx: &watch::Sender<JobSnapshot>) -> bool {
        let cancelled = tx.send_if_modified(|job| {
            if job.state != JobState::Pending {
                return false;
            }
            job.state = JobState::Cancelled;
            job.cancel_requested = true;
            job.end_time = Some(SystemTime::now());
            job.progress_message = "cancelled before it started".into();
            job.error = Some(Box::new(Error::Cancelled(
                "cancelled while waiting to run; it never reached the database".into(),
            )));
            true
        });
        if cancelled {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.job_ended.notify_waiters();
        }
        cancelled
    }

    /// Takes in a job claimed from the job store, already RUNNING, to run on
    /// this instance; returns its channel and interrupt.
    pub(super) fn adopt(&self, job: JobSnapshot) -> (watch::Sender<JobSnapshot>, Interrupt) {
        let id = job.id;
        let (tx, _) = watch::channel(job);
        let interrupt = Interrupt::new();
        let mut jobs = self.jobs.lock().expect("registry lock");
        jobs.insert_live(id, tx.clone(), interrupt.clone());
        (tx, interrupt)
    }

    /// Drops a job this instance no longer needs to hold (the store has it).
    pub(super) fn forget(&self, id: &Uuid) {
        self.jobs.lock().expect("registry lock").remove(id);
    }

    /// Whether the job is live on this instance.
    pub(super) fn runs_here(&self, id: &Uuid) -> bool {
        let jobs = self.jobs.lock().expect("registry lock");
        jobs.by_id
            .get(id)
            .is_some_and(|e| matches!(e.slot, Slot::Live { .. }))
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

    /// Replaces an ended job's channel and interrupt by its final snapshot.
    pub(super) fn retire(&self, id: &Uuid) {
        let mut jobs = self.jobs.lock().expect("registry lock");
        if let Some(entry) = jobs.by_id.get_mut(id)
            && let Slot::Live { tx, .. } = &entry.slot
        {
            let job = tx.borrow().clone();
            if job.state.is_terminal() {
                entry.slot = Slot::Ended(Box::new(job));
            }
        }
    }

    /// Forgets a finished job.
    pub fn delete(&self, id: &str, caller: &Caller) -> Result<()> {
        let id = parse_id(id)?;
        let mut jobs = self.jobs.lock().expect("registry lock");
        let state = visible(&jobs, &id, caller)?.with(|job| job.state);
        if !state.is_terminal() {
            return Err(Error::WrongJobState(format!(
                "job {id} is {}; cancel it first, or delete it once it has ended",
                state.name()
            )));
        }
        jobs.remove(&id);
        Ok(())
    }

    /// Removes finished jobs older than the retention period.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let mut jobs = self.jobs.lock().expect("registry lock");
        let expired: Vec<Uuid> = jobs
            .by_id
            .iter()
            .filter(|(_, entry)| {
                entry.with(|job| {
                    job.end_time.is_some_and(|end| {
                        now.duration_since(end).unwrap_or_default() >= self.limits.retention
                    })
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            jobs.remove(id);
        }
        // Maps keep their capacity after removals: give most of it back once
        // a burst of jobs is gone.
        if jobs.by_id.capacity() > 4 * jobs.by_id.len().max(1024) {
            jobs.by_id.shrink_to_fit();
            jobs.by_request_id.shrink_to_fit();
        }
        expired.len()
    }

    pub(super) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Stops accepting jobs and cancels every pending and running one.
    pub async fn shutdown(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        let live: Vec<Uuid> = {
            let jobs = self.jobs.lock().expect("registry lock");
            jobs.by_id
                .iter()
                .filter(|(_, e)| !e.with(|job| job.state.is_terminal()))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in live {
            // A job that ended meanwhile refuses the cancel; nothing to do.
            let _ = self.cancel(&id.to_string(), &Caller::anonymous()).await;
        }
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
        let jobs = self.jobs.lock().expect("registry lock");
        jobs.by_id
            .values()
            .filter(|e| !e.with(|job| job.state.is_terminal()))
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
            .filter(|id| jobs.by_id[*id].with(|job| job.state.is_terminal()))
            .take(excess)
            .copied()
            .collect();
        for id in &oldest_finished {
            jobs.remove(id);
        }
    }
}

impl Jobs {
    fn remove(&mut self, id: &Uuid) {
        if let Some(entry) = self.by_id.remove(id) {
            self.order.remove(&entry.seq);
            let key = entry.with(|job| Some((job.owner.clone(), job.request_id.clone()?)));
            if let Some(key) = key {
                self.by_request_id.remove(&key);
            }
        }
    }
}

fn entry<'j>(jobs: &'j Jobs, id: &Uuid) -> Result<&'j Entry> {
    jobs.by_id
        .get(id)
        .ok_or_else(|| Error::JobNotFound(id.to_string()))
}

/// The job, if this caller may see it: another owner's job does not exist
/// for them.
fn visible<'j>(jobs: &'j Jobs, id: &Uuid, caller: &Caller) -> Result<&'j Entry> {
    let entry = entry(jobs, id)?;
    if entry.with(|job| caller.may_see(&job.owner)) {
        Ok(entry)
    } else {
        Err(Error::JobNotFound(id.to_string()))
    }
}

fn already_ended(id: &Uuid, state: JobState) -> Error {
    Error::WrongJobState(format!(
        "job {id} is already {}; only PENDING or RUNNING jobs can be cancelled",
        state.name()
    ))
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
