//! Schedules: a cron expression that submits a call as a job at each tick,
//! so that a nightly batch needs no cron script outside.
//!
//! ```text
//! api ─▶ Schedules (checks, ownership) ─▶ ScheduleTable (memory | PostgreSQL)
//!                        ticker ─▶ lock_due ─▶ JobStore::submit ─▶ commit
//! ```
//!
//! - [`timing`] parses the expression and walks its ticks in the time zone.
//! - A [`ScheduleTable`] keeps the schedules: in memory while the process
//!   lives, or in PostgreSQL beside the jobs, durable and shared.
//! - The [`ticker`] of every instance wakes at the next tick, locks each
//!   due schedule (in PostgreSQL a row lock that other instances skip),
//!   applies the overlap policy, submits the job through the job store
//!   with an idempotency key made of the schedule and the tick, and
//!   commits the schedule's next tick. One tick is one job at most, on
//!   every instance together, even across a crash between the submit and
//!   the commit: the key gives the same job back.
//! - [`service::Schedules`] is what the API calls: validation, ownership
//!   and the field-mask update.

pub mod memory;
pub mod postgres;
pub mod service;
pub mod ticker;
pub mod timing;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use crate::call::ProcedureCall;
use crate::error::Result;
use crate::jobs::plan::RetryPolicy;

pub use service::Schedules;

/// What a tick does while the schedule's last job is still live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Start nothing.
    #[default]
    Skip,
    /// Start the job PENDING behind the live one.
    Queue,
    /// Cancel the live one, then start the job behind it.
    CancelPrevious,
}

impl Overlap {
    pub fn name(self) -> &'static str {
        match self {
            Overlap::Skip => "SKIP",
            Overlap::Queue => "QUEUE",
            Overlap::CancelPrevious => "CANCEL_PREVIOUS",
        }
    }

    pub fn parse(name: &str) -> Option<Overlap> {
        Some(match name {
            "SKIP" => Overlap::Skip,
            "QUEUE" => Overlap::Queue,
            "CANCEL_PREVIOUS" => Overlap::CancelPrevious,
            _ => return None,
        })
    }
}

/// A schedule as stored.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: Uuid,
    /// Unique per owner; never changes.
    pub name: String,
    /// As written.
    pub cron: String,
    /// An IANA name.
    pub time_zone: String,
    pub call: Arc<ProcedureCall>,
    pub paused: bool,
    pub overlap: Overlap,
    /// None: one attempt per job.
    pub retry: Option<RetryPolicy>,
    /// None while paused.
    pub next_run_time: Option<SystemTime>,
    pub last_run_time: Option<SystemTime>,
    pub last_job_id: Option<Uuid>,
    pub owner: Arc<str>,
    pub create_time: SystemTime,
    pub skipped_ticks: u64,
    /// Its place in creation order, for paging.
    pub seq: u64,
}

/// What a tick leaves on its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    pub next_run_time: Option<SystemTime>,
    pub last_run_time: SystemTime,
    /// The job this tick started, if it started one.
    pub started: Option<Uuid>,
    /// Ticks that started no job.
    pub skipped: u64,
}

/// A due schedule held by one ticker until it commits what the tick did.
#[async_trait]
pub trait TickLock: Send {
    /// The schedule as locked.
    fn schedule(&self) -> &Schedule;

    /// Writes the tick's outcome and lets the schedule go.
    async fn commit(self: Box<Self>, advance: Advance) -> Result<()>;
}

/// Where schedules are kept.
#[async_trait]
pub trait ScheduleTable: Send + Sync {
    /// Stores a new schedule; ALREADY_EXISTS when its owner has one of
    /// that name.
    async fn create(&self, schedule: &Schedule) -> Result<Schedule>;

    async fn get(&self, id: &Uuid) -> Result<Option<Schedule>>;

    /// Schedules created before `before` (a seq), newest first, at most
    /// `limit`; only `owner`'s when given.
    async fn list(&self, owner: Option<&str>, before: u64, limit: usize) -> Result<Vec<Schedule>>;

    /// Writes what UpdateSchedule may change (cron, time zone, call,
    /// paused, overlap, retry) and the next run time; false when it is gone.
    async fn update(&self, schedule: &Schedule) -> Result<bool>;

    /// False when it is not there.
    async fn delete(&self, id: &Uuid) -> Result<bool>;

    /// The ids of the schedules not paused whose next tick is at or before
    /// `now`.
    async fn due(&self, now: SystemTime) -> Result<Vec<Uuid>>;

    /// The earliest next tick of any schedule not paused.
    async fn next_due(&self) -> Result<Option<SystemTime>>;

    /// Locks a schedule that is still due at `now`, for one ticker; None
    /// when it is no longer due or another ticker holds it.
    async fn lock_due(&self, id: &Uuid, now: SystemTime) -> Result<Option<Box<dyn TickLock>>>;
}
