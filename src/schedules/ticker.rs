//! The ticker: one task per instance that wakes at the next tick of any
//! schedule (or every poll interval, for schedules another instance
//! changed), and ticks each due schedule it can lock.
//!
//! A tick counts the ticks due since the schedule's last one: those older
//! than `--schedule-catch-up` are skipped, the others are caught up by one
//! job whose `scheduled_time` is the latest (its messages say how many it
//! stands for). The overlap policy decides whether that job starts; it is
//! submitted as its owner, with the key `schedule:<id>@<tick>`, so a tick
//! that is tried again after a crash gets the same job.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::Notify;
use tracing::{info, warn};
use uuid::Uuid;

use super::timing::{MAX_COUNTED_TICKS, Timing};
use super::{Advance, Overlap, Schedule, ScheduleTable, TickLock};
use crate::allow::AllowList;
use crate::auth::{Authenticator, Caller};
use crate::error::{Error, Result};
use crate::jobs::plan::Tick;
use crate::jobs::{Jobs, Submission};

pub struct Ticker {
    pub(super) table: Arc<dyn ScheduleTable>,
    jobs: Jobs,
    allow: AllowList,
    /// Whose roles a schedule's owner has at each tick (--policy).
    auth: Authenticator,
    catch_up: Duration,
    poll_interval: Duration,
    changed: Notify,
}

/// A tick found this late (beyond the poll interval) still runs, whatever
/// `--schedule-catch-up` says: a busy instance, not downtime.
const LATE_TICK_GRACE: Duration = Duration::from_secs(5);

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Ticker {
    /// A schedule's owner as its ticks run: its roles as they are now.
    pub fn owner(&self, name: &Arc<str>) -> Caller {
        Caller {
            name: name.clone(),
            admin: false,
            roles: self.auth.roles_of(name),
        }
    }

    pub fn new(
        table: Arc<dyn ScheduleTable>,
        jobs: Jobs,
        (allow, auth): (AllowList, Authenticator),
        catch_up: Duration,
        poll_interval: Duration,
    ) -> Arc<Ticker> {
        Arc::new(Ticker {
            table,
            jobs,
            allow,
            auth,
            catch_up: catch_up.max(poll_interval + LATE_TICK_GRACE),
            poll_interval,
            changed: Notify::new(),
        })
    }

    /// A schedule was created or changed here: look again at the next tick.
    pub fn wake(&self) {
        self.changed.notify_one();
    }

    /// Ticks until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = SystemTime::now();
            let wait = match self.table.next_due().await {
                Ok(Some(next)) => next.duration_since(now).unwrap_or_default(),
                Ok(None) => self.poll_interval,
                Err(e) => {
                    warn!(error = %e, "reading the next schedule tick failed");
                    self.poll_interval
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait.min(self.poll_interval)) => {}
                () = self.changed.notified() => continue,
            }
            self.tick_due(SystemTime::now()).await;
        }
    }

    async fn tick_due(&self, now: SystemTime) {
        let due = match self.table.due(now).await {
            Ok(due) => due,
            Err(e) => return warn!(error = %e, "reading the due schedules failed"),
        };
        for id in due {
            match self.table.lock_due(&id, now).await {
                Ok(Some(lock)) => self.tick(lock, now).await,
                // Another instance ticks it, or it changed meanwhile.
                Ok(None) => {}
                Err(e) => warn!(schedule = %id, error = %e, "locking a due schedule failed"),
            }
        }
    }

    async fn tick(&self, lock: Box<dyn TickLock>, now: SystemTime) {
        let schedule = lock.schedule().clone();
        let Some(first) = schedule.next_run_time else {
            return;
        };
        let timing = match Timing::parse(&schedule.cron, &schedule.time_zone) {
            Ok(timing) => timing,
            Err(e) => {
                return warn!(schedule = %schedule.id, error = %e, "a stored schedule no longer parses");
            }
        };
        let window_start = now
            .checked_sub(self.catch_up)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let due = timing.due(first, now, window_start);
        let mut advance = Advance {
            next_run_time: timing.next_after(now),
            last_run_time: due.latest.unwrap_or(first),
            started: None,
            skipped: due.too_old,
        };
        if due.too_old > 0 {
            warn!(
                schedule = %schedule.id,
                skipped = due.too_old,
                "skipped ticks missed longer than --schedule-catch-up ago"
            );
        }
        if let Some(tick) = due.latest_recent {
            match self.start(&schedule, tick, due.recent).await {
                Ok(Some(job)) => advance.started = Some(job),
                Ok(None) => advance.skipped += 1,
                Err(e) => {
                    warn!(schedule = %schedule.id, error = %e, "a schedule's tick started no job");
                    advance.skipped += 1;
                }
            }
        }
        if let Err(e) = lock.commit(advance).await {
            warn!(schedule = %schedule.id, error = %e, "saving a schedule's tick failed; it runs again");
        }
    }

    /// Starts the job of one tick, standing for `stands_for` ticks, as the
    /// overlap policy allows; None when it skips.
    async fn start(
        &self,
        schedule: &Schedule,
        tick: SystemTime,
        stands_for: u64,
    ) -> Result<Option<Uuid>> {
        let owner = self.owner(&schedule.owner);
        let live = match schedule.last_job_id {
            Some(id) => match self.jobs.get(&id.to_string(), &owner).await {
                Ok(job) if !job.state.is_terminal() => Some(job.id),
                Ok(_) | Err(Error::JobNotFound(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let waiting = match (live, schedule.overlap) {
            (Some(live), Overlap::Skip) => {
                info!(schedule = %schedule.id, %live, "skipped a tick: the last job is still live (OVERLAP_POLICY_SKIP)");
                return Ok(None);
            }
            (Some(live), Overlap::Queue) => Some(format!(
                "queued behind job {live} of its schedule (OVERLAP_POLICY_QUEUE)"
            )),
            (Some(live), Overlap::CancelPrevious) => {
                match self.jobs.cancel(&live.to_string(), &owner).await {
                    Ok(_) | Err(Error::WrongJobState(_)) | Err(Error::JobNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                Some(format!(
                    "waiting for job {live} of its schedule to stop (OVERLAP_POLICY_CANCEL_PREVIOUS)"
                ))
            }
            (None, _) => None,
        };
        // --allow, the policy or the owner's roles may have changed since
        // the schedule was created.
        self.allow.check(&owner, &schedule.call.name)?;
        let messages = if stands_for > 1 {
            let at_least = if stands_for >= MAX_COUNTED_TICKS {
                "at least "
            } else {
                ""
            };
            vec![format!(
                "catch-up: this job stands for {at_least}{stands_for} ticks of schedule {} missed \
                 while no procgate instance ran it, the latest at {}",
                schedule.name,
                rfc3339(tick)
            )]
        } else {
            Vec::new()
        };
        let submission = Submission {
            request_id: Some(format!("schedule:{}@{}", schedule.id, rfc3339(tick))),
            retry: schedule.retry,
            tick: Some(Tick {
                schedule_id: schedule.id,
                time: tick,
            }),
            messages,
            waiting,
            ..Submission::default()
        };
        let job = self
            .jobs
            .submit((*schedule.call).clone(), submission, &owner)
            .await?;
        info!(schedule = %schedule.id, job = %job.id, tick = %rfc3339(tick), "a schedule started a job");
        Ok(Some(job.id))
    }
}
