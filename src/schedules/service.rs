//! What the schedule RPCs do: check a schedule before it is stored (its
//! name, cron and time zone, and its call as ExecuteSync would check it:
//! the name, `--allow`, the procedure and its parameters in the catalog),
//! keep each caller to its own schedules (admins see all), and apply an
//! UpdateSchedule's field mask.

use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use super::ticker::Ticker;
use super::timing::Timing;
use super::{Overlap, Schedule};
use crate::allow::AllowList;
use crate::auth::Caller;
use crate::backend::Backend;
use crate::call::ProcedureCall;
use crate::error::{Error, Result};
use crate::jobs::plan::RetryPolicy;
use crate::name::printable;

const MAX_NAME_CHARS: usize = 128;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;
const PAGE_TOKEN_PREFIX: &str = "before:";

/// What a client says a schedule is (CreateSchedule, or the fields of an
/// UpdateSchedule).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub call: Option<ProcedureCall>,
    pub paused: bool,
    pub overlap: Overlap,
    pub retry: Option<RetryPolicy>,
}

/// The fields an UpdateSchedule may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Cron,
    TimeZone,
    Call,
    Paused,
    Overlap,
    Retry,
}

const FIELDS: &str = "cron, time_zone, call, paused, overlap, retry";

impl Field {
    /// An update_mask path.
    pub fn parse(path: &str) -> Result<Field> {
        Ok(match path {
            "cron" => Field::Cron,
            "time_zone" => Field::TimeZone,
            "call" => Field::Call,
            "paused" => Field::Paused,
            "overlap" => Field::Overlap,
            "retry" => Field::Retry,
            "name" => {
                return Err(Error::InvalidArgument(
                    "a schedule's name cannot change; create another schedule and delete this one"
                        .into(),
                ));
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "update_mask path {} is not one UpdateSchedule can change; use {FIELDS}",
                    printable(other)
                )));
            }
        })
    }
}

pub struct Schedules {
    ticker: Arc<Ticker>,
    backend: Arc<dyn Backend>,
    allow: AllowList,
    /// Why this job store cannot keep schedules, if it cannot.
    unsupported: Option<&'static str>,
}

impl Schedules {
    pub fn new(
        ticker: Arc<Ticker>,
        backend: Arc<dyn Backend>,
        allow: AllowList,
        unsupported: Option<&'static str>,
    ) -> Schedules {
        Schedules {
            ticker,
            backend,
            allow,
            unsupported,
        }
    }

    pub async fn create(&self, spec: ScheduleSpec, caller: &Caller) -> Result<Schedule> {
        if let Some(why) = self.unsupported {
            return Err(Error::Unimplemented(why.into()));
        }
        check_name(&spec.name)?;
        let timing = Timing::parse(&spec.cron, &spec.time_zone)?;
        let call = spec
            .call
            .ok_or_else(|| Error::InvalidArgument("schedule.call is missing".into()))?;
        self.check_call(&call, caller).await?;
        let now = SystemTime::now();
        let schedule = Schedule {
            id: Uuid::new_v4(),
            name: spec.name,
            cron: spec.cron,
            time_zone: zone_or_utc(spec.time_zone),
            call: Arc::new(call),
            paused: spec.paused,
            overlap: spec.overlap,
            retry: spec.retry,
            next_run_time: (!spec.paused).then(|| timing.next_after(now)).flatten(),
            last_run_time: None,
            last_job_id: None,
            owner: caller.name.clone(),
            create_time: now,
            skipped_ticks: 0,
            seq: 0,
        };
        let stored = self.ticker.table.create(&schedule).await?;
        self.ticker.wake();
        Ok(stored)
    }

    pub async fn get(&self, id: &str, caller: &Caller) -> Result<Schedule> {
        let id = parse_id(id)?;
        match self.ticker.table.get(&id).await? {
            Some(schedule) if caller.may_see(&schedule.owner) => Ok(schedule),
            _ => Err(not_found(&id)),
        }
    }

    /// One page, newest first, and the token of the next.
    pub async fn list(
        &self,
        page_size: usize,
        page_token: &str,
        caller: &Caller,
    ) -> Result<(Vec<Schedule>, Option<String>)> {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let before = parse_page_token(page_token)?;
        let owner = (!caller.admin).then_some(caller.name.as_ref());
        let mut schedules = self.ticker.table.list(owner, before, page_size + 1).await?;
        let next = (schedules.len() > page_size).then(|| {
            schedules.truncate(page_size);
            format!("{PAGE_TOKEN_PREFIX}{:x}", schedules[page_size - 1].seq)
        });
        Ok((schedules, next))
    }

    /// Takes the fields `mask` names from `spec`. Resuming (or a new cron
    /// or time zone) starts from the next tick after now: ticks missed
    /// while paused never run.
    pub async fn update(
        &self,
        id: &str,
        spec: ScheduleSpec,
        mask: &[Field],
        caller: &Caller,
    ) -> Result<Schedule> {
        if mask.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "update_mask is empty; name the fields to change: {FIELDS}"
            )));
        }
        let mut schedule = self.get(id, caller).await?;
        let was_paused = schedule.paused;
        let mut timing_changed = false;
        for field in mask {
            match field {
                Field::Cron => {
                    schedule.cron = spec.cron.clone();
                    timing_changed = true;
                }
                Field::TimeZone => {
                    schedule.time_zone = zone_or_utc(spec.time_zone.clone());
                    timing_changed = true;
                }
                Field::Call => {
                    let call = spec.call.clone().ok_or_else(|| {
                        Error::InvalidArgument(
                            "update_mask names call but schedule.call is missing".into(),
                        )
                    })?;
                    // It runs with its owner's roles, whoever changes it.
                    let owner = self.ticker.owner(&schedule.owner);
                    let runs_as = if owner.name == caller.name {
                        caller
                    } else {
                        &owner
                    };
                    self.check_call(&call, runs_as).await?;
                    schedule.call = Arc::new(call);
                }
                Field::Paused => schedule.paused = spec.paused,
                Field::Overlap => schedule.overlap = spec.overlap,
                Field::Retry => schedule.retry = spec.retry,
            }
        }
        let timing = Timing::parse(&schedule.cron, &schedule.time_zone)?;
        if schedule.paused {
            schedule.next_run_time = None;
        } else if timing_changed || was_paused {
            schedule.next_run_time = timing.next_after(SystemTime::now());
        }
        if !self.ticker.table.update(&schedule).await? {
            return Err(not_found(&schedule.id));
        }
        self.ticker.wake();
        self.get(id, caller).await
    }

    /// Stops future ticks; the schedule's jobs stay.
    pub async fn delete(&self, id: &str, caller: &Caller) -> Result<()> {
        let schedule = self.get(id, caller).await?;
        if self.ticker.table.delete(&schedule.id).await? {
            Ok(())
        } else {
            Err(not_found(&schedule.id))
        }
    }

    /// As ExecuteSync checks a call, before any job of it exists: the
    /// allowlist and the caller's roles, then the procedure and its
    /// parameters in the catalog.
    async fn check_call(&self, call: &ProcedureCall, caller: &Caller) -> Result<()> {
        self.allow.check(caller, &call.name)?;
        let description = self
            .backend
            .describe(&call.name, call.overload.as_deref())
            .await?;
        for param in &call.params {
            let known = description
                .params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case(param.name.as_written()));
            if !known {
                let names: Vec<&str> = description.params.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::InvalidArgument(format!(
                    "{} has no parameter {}; its parameters are: {}",
                    description.procedure,
                    printable(param.name.as_written()),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

fn zone_or_utc(zone: String) -> String {
    if zone.is_empty() { "UTC".into() } else { zone }
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "schedule.name is empty; name it, such as nightly-load".into(),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::InvalidArgument(format!(
            "schedule.name {} is longer than {MAX_NAME_CHARS} characters",
            printable(name)
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "schedule.name {} contains control characters; use printable text",
            printable(name)
        )));
    }
    Ok(())
}

fn not_found(id: &Uuid) -> Error {
    Error::ScheduleNotFound(format!("schedule {id} not found"))
}

fn parse_id(id: &str) -> Result<Uuid> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("schedule id is empty".into()));
    }
    Uuid::try_parse(id).map_err(|_| {
        Error::InvalidArgument(format!(
            "schedule id {} is not a UUID; use the id CreateSchedule returned",
            printable(id)
        ))
    })
}

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
