//! Schedules in memory (`--job-store memory`): they live while the process
//! does. One std `Mutex` guards the map, never held across an await; the
//! tick lock is a `tokio` mutex that one ticker holds while it ticks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::{Advance, Schedule, ScheduleTable, TickLock};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct MemorySchedules {
    inner: Arc<Mutex<Inner>>,
    ticking: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    schedules: HashMap<Uuid, Schedule>,
    by_seq: BTreeMap<u64, Uuid>,
}

impl MemorySchedules {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("schedules lock")
    }
}

pub fn name_taken(name: &str) -> Error {
    Error::AlreadyExists(format!(
        "you already have a schedule named {}; pick another name, or update or delete that one",
        crate::name::printable(name)
    ))
}

#[async_trait]
impl ScheduleTable for MemorySchedules {
    async fn create(&self, schedule: &Schedule) -> Result<Schedule> {
        let mut inner = self.lock();
        if inner
            .schedules
            .values()
            .any(|s| s.owner == schedule.owner && s.name == schedule.name)
        {
            return Err(name_taken(&schedule.name));
        }
        inner.seq += 1;
        let stored = Schedule {
            seq: inner.seq,
            ..schedule.clone()
        };
        inner.by_seq.insert(stored.seq, stored.id);
        inner.schedules.insert(stored.id, stored.clone());
        Ok(stored)
    }

    async fn get(&self, id: &Uuid) -> Result<Option<Schedule>> {
        Ok(self.lock().schedules.get(id).cloned())
    }

    async fn list(&self, owner: Option<&str>, before: u64, limit: usize) -> Result<Vec<Schedule>> {
        let inner = self.lock();
        Ok(inner
            .by_seq
            .range(..before)
            .rev()
            .map(|(_, id)| &inner.schedules[id])
            .filter(|s| owner.is_none_or(|owner| *s.owner == *owner))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn update(&self, schedule: &Schedule) -> Result<bool> {
        let mut inner = self.lock();
        let Some(stored) = inner.schedules.get_mut(&schedule.id) else {
            return Ok(false);
        };
        stored.cron = schedule.cron.clone();
        stored.time_zone = schedule.time_zone.clone();
        stored.call = schedule.call.clone();
        stored.paused = schedule.paused;
        stored.overlap = schedule.overlap;
        stored.retry = schedule.retry;
        stored.next_run_time = schedule.next_run_time;
        Ok(true)
    }

    async fn delete(&self, id: &Uuid) -> Result<bool> {
        let mut inner = self.lock();
        let Some(gone) = inner.schedules.remove(id) else {
            return Ok(false);
        };
        inner.by_seq.remove(&gone.seq);
        Ok(true)
    }

    async fn due(&self, now: SystemTime) -> Result<Vec<Uuid>> {
        Ok(self
            .lock()
            .schedules
            .values()
            .filter(|s| !s.paused && s.next_run_time.is_some_and(|t| t <= now))
            .map(|s| s.id)
            .collect())
    }

    async fn next_due(&self) -> Result<Option<SystemTime>> {
        Ok(self
            .lock()
            .schedules
            .values()
            .filter(|s| !s.paused)
            .filter_map(|s| s.next_run_time)
            .min())
    }

    async fn lock_due(&self, id: &Uuid, now: SystemTime) -> Result<Option<Box<dyn TickLock>>> {
        let Ok(held) = self.ticking.clone().try_lock_owned() else {
            return Ok(None);
        };
        let schedule = match self.lock().schedules.get(id) {
            Some(s) if !s.paused && s.next_run_time.is_some_and(|t| t <= now) => s.clone(),
            _ => return Ok(None),
        };
        Ok(Some(Box::new(MemoryTick {
            inner: self.inner.clone(),
            schedule,
            _held: held,
        })))
    }
}

struct MemoryTick {
    inner: Arc<Mutex<Inner>>,
    schedule: Schedule,
    _held: OwnedMutexGuard<()>,
}

#[async_trait]
impl TickLock for MemoryTick {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    async fn commit(self: Box<Self>, advance: Advance) -> Result<()> {
        let mut inner = self.inner.lock().expect("schedules lock");
        if let Some(stored) = inner.schedules.get_mut(&self.schedule.id) {
            // An update while it ticked chose the next run time itself.
            if stored.next_run_time == self.schedule.next_run_time && !stored.paused {
                stored.next_run_time = advance.next_run_time;
            }
            stored.last_run_time = Some(advance.last_run_time);
            stored.last_job_id = advance.started.or(stored.last_job_id);
            stored.skipped_ticks += advance.skipped;
        }
        Ok(())
    }
}
