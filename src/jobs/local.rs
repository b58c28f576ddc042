//! The jobs this instance runs: their slots (`--max-running-jobs`), each
//! one's [`LiveJob`] while it runs, and whether the database is believed
//! reachable, so that the engine claims nothing while it is not.
//!
//! It knows nothing of the table: the engine claims a job, hands it here to
//! run, writes what changes and decides what happens after. One std `Mutex`
//! guards the map of live jobs, held only for map operations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, info_span};
use uuid::Uuid;

use super::lifecycle::{self, Cancel};
use super::live::LiveJob;
use super::runner::{self, Ran};
use crate::backend::Backend;
use crate::spool::keep::Keeping;
use crate::telemetry::metrics::Metrics;

pub struct LocalJobs {
    running: Mutex<HashMap<Uuid, LiveJob>>,
    backend: Arc<dyn Backend>,
    pub(super) slots: Arc<Semaphore>,
    max_messages: usize,
    keeping: Keeping,
    metrics: Metrics,
    accepting: AtomicBool,
    /// Woken each time a job ends, for [`LocalJobs::until_idle`].
    job_ended: Notify,
    /// Whether the database is believed reachable: pending jobs wait while
    /// it is not, instead of failing one after the other.
    database_up: watch::Sender<bool>,
    /// Counts the jobs' reports that the database is gone, so that a health
    /// probe that started before one cannot undo it.
    down_reports: AtomicU64,
    /// The traceparent of each job this instance took the SubmitAsync of,
    /// until it ends: its runs' spans link to it.
    links: Mutex<HashMap<Uuid, String>>,
}

/// Most submission links kept; a job that never runs here leaves its link
/// behind, so past this many they are all dropped.
const MAX_LINKS: usize = 100_000;

impl LocalJobs {
    pub fn new(
        backend: Arc<dyn Backend>,
        max_running: usize,
        max_messages: usize,
        keeping: Keeping,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(LocalJobs {
            running: Mutex::default(),
            backend,
            slots: Arc::new(Semaphore::new(max_running)),
            max_messages,
            keeping,
            metrics,
            accepting: AtomicBool::new(true),
            job_ended: Notify::new(),
            database_up: watch::Sender::new(false),
            down_reports: AtomicU64::new(0),
            links: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, LiveJob>> {
        self.running.lock().expect("local jobs lock")
    }

    /// Holds a claimed job here, so that cancels reach it; its changes are
    /// published on the returned job's channel. None once shutting down.
    pub(super) fn hold(&self, job: super::JobSnapshot) -> Option<LiveJob> {
        let mut running = self.lock();
        if !self.is_accepting() {
            return None;
        }
        let id = job.id;
        let job = LiveJob::new(job);
        running.insert(id, job.clone());
        Some(job)
    }

    /// Runs a held job to its end, or until it finds no connection; then
    /// lets it go.
    pub(super) async fn run(&self, job: LiveJob) -> Ran {
        let (id, procedure) = job.with(|j| (j.id, j.call.display_name.clone()));
        let span = info_span!("job", otel.name = "procgate job", %id, %procedure);
        let link = self.links.lock().expect("links lock").get(&id).cloned();
        if let Some(trace_parent) = link {
            crate::telemetry::trace::link(&span, &trace_parent);
        }
        let ran = runner::run(
            &self.backend,
            &job,
            self.max_messages,
            &self.keeping,
            &self.metrics,
        )
        .instrument(span)
        .await;
        if ran == Ran::NoConnection {
            job.change(lifecycle::release);
        }
        if job.with(|j| j.state.is_terminal()) {
            self.links.lock().expect("links lock").remove(&id);
        }
        self.lock().remove(&id);
        self.job_ended.notify_waiters();
        ran
    }

    /// Remembers the traceparent of a job submitted here.
    pub(super) fn link_submission(&self, id: Uuid, trace_parent: String) {
        let mut links = self.links.lock().expect("links lock");
        if links.len() >= MAX_LINKS {
            links.clear();
        }
        links.insert(id, trace_parent);
    }

    /// Cancels a job held here: one waiting for its connection ends (and is
    /// refused its start), a running one is interrupted in the database.
    /// False when it is not here.
    pub(super) fn cancel(&self, id: &Uuid) -> bool {
        let Some(job) = self.lock().get(id).cloned() else {
            return false;
        };
        let now = SystemTime::now();
        job.change(|j| {
            matches!(
                lifecycle::cancel(j, now),
                Ok(Cancel::Ended | Cancel::Requested)
            )
        });
        job.interrupt.request();
        true
    }

    /// The jobs held here.
    pub(super) fn live_ids(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
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

    /// Resolves once the database is believed reachable.
    pub(super) async fn database_available(&self) {
        let mut up = self.database_up.subscribe();
        // The sender lives as long as this, which outlives the wait.
        let _ = up.wait_for(|up| *up).await;
    }

    /// Whether this instance can take work now: the database answers and
    /// it is not shutting down. Else why not, for `/readyz`.
    pub fn readiness(&self) -> std::result::Result<(), &'static str> {
        if !self.is_accepting() {
            Err("shutting down: accepting no new work")
        } else if !*self.database_up.borrow() {
            Err("the database does not answer")
        } else {
            Ok(())
        }
    }

    pub(super) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Accepts no new jobs, cancels every job held here and waits for them
    /// to end.
    pub(super) async fn shutdown(&self) {
        {
            // Under the lock, so that nothing is held after this.
            let _running = self.lock();
            self.accepting.store(false, Ordering::SeqCst);
        }
        for id in self.live_ids() {
            self.cancel(&id);
        }
        loop {
            // Created before the check, so an end between the two is not missed.
            let ended = self.job_ended.notified();
            if self.lock().is_empty() {
                return;
            }
            ended.await;
        }
    }
}
