//! `procgate schedule create | list | get | pause | resume | delete`: the
//! schedules of nightly batches from a terminal, as the dashboard's
//! schedules tab shows them, and the retry flags `submit` shares.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tonic::Status;

use std::fmt::Write;

use serde_json::{Value as Json, json};

use super::render::{short_id, short_time, state_name, table, timestamp_text};
use super::{CallArgs, Client, Outcome, ServerArgs};
use crate::proto::{self as pb};

/// How a job is tried again after a transient failure (a lost connection,
/// a deadlock, a serialization failure). Setting it says that the procedure
/// is safe to run again.
#[derive(Args, Debug, Clone, Default)]
pub struct RetryArgs {
    /// Attempts in all, the first included (at most 100); without it, one.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt (default 1s); each next one waits
    /// --backoff-multiplier times longer, ±20 %.
    #[arg(long, value_name = "DURATION", value_parser = super::proto_duration, requires = "max_attempts")]
    pub initial_backoff: Option<Duration>,
    /// The longest wait between attempts (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = super::proto_duration, requires = "max_attempts")]
    pub max_backoff: Option<Duration>,
    /// Growth of the wait from one attempt to the next (default 2).
    #[arg(long, value_name = "FACTOR", requires = "max_attempts")]
    pub backoff_multiplier: Option<f64>,
}

impl RetryArgs {
    pub fn to_proto(&self) -> Option<pb::RetryPolicy> {
        let duration = |d: Option<Duration>| d.map(super::to_proto_duration);
        self.max_attempts.map(|max_attempts| pb::RetryPolicy {
            max_attempts,
            initial_backoff: duration(self.initial_backoff),
            max_backoff: duration(self.max_backoff),
            multiplier: self.backoff_multiplier.unwrap_or_default(),
        })
    }
}

/// What a tick does while the schedule's last job is still live.
#[derive(ValueEnum, Debug, Clone, Copy, Default)]
pub enum Overlap {
    /// Start nothing (the tick counts as skipped).
    #[default]
    Skip,
    /// Start the job PENDING behind the live one.
    Queue,
    /// Cancel the live one, then start the job.
    CancelPrevious,
}

impl From<Overlap> for pb::OverlapPolicy {
    fn from(overlap: Overlap) -> pb::OverlapPolicy {
        match overlap {
            Overlap::Skip => pb::OverlapPolicy::Skip,
            Overlap::Queue => pb::OverlapPolicy::Queue,
            Overlap::CancelPrevious => pb::OverlapPolicy::CancelPrevious,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Submit a procedure on a cron expression (CreateSchedule).
    ///
    /// For example: `procgate schedule create nightly-sums --cron '0 2 * * *'
    /// --time-zone Europe/Madrid --max-attempts 3 pkg_etl.sumar a=1 b=2`.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Unique among your schedules; it cannot change.
        name: String,
        /// 5 fields (minute hour day-of-month month day-of-week), 6 with
        /// seconds first, or @hourly, @daily, @weekly, @monthly, @yearly.
        #[arg(long)]
        cron: String,
        /// An IANA time zone the cron expression is read in.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// What a tick does while the last job is still live.
        #[arg(long, value_enum, default_value_t)]
        overlap: Overlap,
        /// Create it paused: no job until it is resumed.
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        retry: RetryArgs,
        #[command(flatten)]
        call: Box<CallArgs>,
        #[arg(long)]
        json: bool,
    },
    /// Your schedules, newest first, with each one's last job (ListSchedules).
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// At most this many schedules.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One schedule in full (GetSchedule).
    Get {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop starting jobs; the schedule and its jobs are kept.
    Pause {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
    /// Start jobs again from the next tick; the ticks missed while paused
    /// do not run.
    Resume {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
    /// Stop the schedule for good; its jobs remain (DeleteSchedule).
    Delete {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
}

impl ScheduleCommand {
    pub fn server(&self) -> &ServerArgs {
        match self {
            ScheduleCommand::Create { server, .. }
            | ScheduleCommand::List { server, .. }
            | ScheduleCommand::Get { server, .. }
            | ScheduleCommand::Pause { server, .. }
            | ScheduleCommand::Resume { server, .. }
            | ScheduleCommand::Delete { server, .. } => server,
        }
    }
}

pub async fn execute(client: &mut Client, command: ScheduleCommand) -> Result<Outcome, Status> {
    match command {
        ScheduleCommand::Create {
            name,
            cron,
            time_zone,
            overlap,
            paused,
            retry,
            call,
            json,
            ..
        } => {
            let call = call.to_proto().map_err(Status::invalid_argument)?;
            let schedule = client
                .create_schedule(pb::CreateScheduleRequest {
                    schedule: Some(pb::Schedule {
                        name,
                        cron,
                        time_zone,
                        call: Some(call),
                        paused,
                        overlap: pb::OverlapPolicy::from(overlap) as i32,
                        retry: retry.to_proto(),
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            print_schedule(&schedule, None, json);
        }
        ScheduleCommand::List { limit, json, .. } => {
            let schedules = list(client, limit).await?;
            let mut last_jobs = Vec::with_capacity(schedules.len());
            for schedule in &schedules {
                last_jobs.push(last_job(client, schedule).await?);
            }
            if json {
                let all: Vec<_> = schedules
                    .iter()
                    .zip(&last_jobs)
                    .map(|(s, job)| schedule_json(s, job.as_ref()))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&all).expect("JSON"));
            } else {
                println!("{}", schedules_table(&schedules, &last_jobs));
            }
        }
        ScheduleCommand::Get { id, json, .. } => {
            let schedule = client
                .get_schedule(pb::GetScheduleRequest { id })
                .await?
                .into_inner();
            let job = last_job(client, &schedule).await?;
            print_schedule(&schedule, job.as_ref(), json);
        }
        ScheduleCommand::Pause { id, .. } => {
            let schedule = set_paused(client, id, true).await?;
            println!("{} paused", schedule.id);
        }
        ScheduleCommand::Resume { id, .. } => {
            let schedule = set_paused(client, id, false).await?;
            println!(
                "{} resumed; next run {}",
                schedule.id,
                timestamp_text(schedule.next_run_time.as_ref())
            );
        }
        ScheduleCommand::Delete { id, .. } => {
            client
                .delete_schedule(pb::DeleteScheduleRequest { id: id.clone() })
                .await?;
            println!("{id} deleted; its jobs remain");
        }
    }
    Ok(Outcome::Done)
}

fn print_schedule(schedule: &pb::Schedule, last_job: Option<&pb::Job>, json: bool) {
    if json {
        let body = schedule_json(schedule, last_job);
        println!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
    } else {
        print!("{}", schedule_text(schedule, last_job));
    }
}

async fn set_paused(client: &mut Client, id: String, paused: bool) -> Result<pb::Schedule, Status> {
    Ok(client
        .update_schedule(pb::UpdateScheduleRequest {
            schedule: Some(pb::Schedule {
                id,
                paused,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["paused".into()],
            }),
        })
        .await?
        .into_inner())
}

/// The job the schedule's last tick started, if it is still there.
async fn last_job(client: &mut Client, schedule: &pb::Schedule) -> Result<Option<pb::Job>, Status> {
    if schedule.last_job_id.is_empty() {
        return Ok(None);
    }
    let job = client
        .get_job(pb::GetJobRequest {
            id: schedule.last_job_id.clone(),
            view: pb::JobView::Basic as i32,
        })
        .await;
    match job {
        Ok(job) => Ok(Some(job.into_inner())),
        // Deleted since: the schedule still names it.
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

/// Up to `limit` schedules, following pages.
async fn list(client: &mut Client, limit: usize) -> Result<Vec<pb::Schedule>, Status> {
    let mut schedules = Vec::new();
    let mut page_token = String::new();
    while schedules.len() < limit {
        let page = client
            .list_schedules(pb::ListSchedulesRequest {
                page_size: (limit - schedules.len()).min(1000) as u32,
                page_token,
            })
            .await?
            .into_inner();
        schedules.extend(page.schedules);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(schedules)
}

fn overlap_name(overlap: i32) -> &'static str {
    match pb::OverlapPolicy::try_from(overlap) {
        Ok(pb::OverlapPolicy::Queue) => "QUEUE",
        Ok(pb::OverlapPolicy::CancelPrevious) => "CANCEL_PREVIOUS",
        Ok(pb::OverlapPolicy::Skip | pb::OverlapPolicy::Unspecified) | Err(_) => "SKIP",
    }
}

/// `8d1f…  COMPLETED`, or the id alone once the job was deleted.
fn last_job_text(schedule: &pb::Schedule, job: Option<&pb::Job>, short: bool) -> String {
    let id = if short {
        short_id(&schedule.last_job_id)
    } else {
        &schedule.last_job_id
    };
    match job {
        Some(job) => format!("{id} {}", state_name(job.state)),
        None if id.is_empty() => String::new(),
        None => format!("{id} (deleted)"),
    }
}

/// `3 attempts, 1s → 5m ×2`.
fn retry_text(retry: Option<&pb::RetryPolicy>) -> String {
    match retry {
        Some(r) if r.max_attempts > 1 => format!(
            "{} attempts, backoff {} up to {}, ×{}",
            r.max_attempts,
            backoff_text(r.initial_backoff.as_ref(), "1s"),
            backoff_text(r.max_backoff.as_ref(), "5m"),
            if r.multiplier == 0.0 {
                2.0
            } else {
                r.multiplier
            }
        ),
        _ => String::new(),
    }
}

/// `2s`, `5m`; the server's default when unset or zero.
fn backoff_text(duration: Option<&prost_types::Duration>, default: &str) -> String {
    match duration.and_then(|d| Duration::try_from(*d).ok()) {
        Some(d) if !d.is_zero() => humantime::format_duration(d).to_string(),
        _ => default.into(),
    }
}

pub fn schedules_table(schedules: &[pb::Schedule], last_jobs: &[Option<pb::Job>]) -> String {
    let mut t = table(&[
        "id", "name", "cron", "zone", "next run", "state", "last job",
    ]);
    // Whole ids: `schedule get|pause|resume|delete` take them as shown.
    for (schedule, job) in schedules.iter().zip(last_jobs) {
        t.add_row(vec![
            schedule.id.clone(),
            schedule.name.clone(),
            schedule.cron.clone(),
            schedule.time_zone.clone(),
            short_time(schedule.next_run_time.as_ref()),
            if schedule.paused { "paused" } else { "active" }.into(),
            last_job_text(schedule, job.as_ref(), true),
        ]);
    }
    t.to_string()
}

pub fn schedule_text(schedule: &pb::Schedule, last_job: Option<&pb::Job>) -> String {
    let mut text = String::new();
    let mut line = |label: &str, value: String| {
        if !value.is_empty() {
            writeln!(text, "{label:>16}  {value}").expect("write to String");
        }
    };
    line("id", schedule.id.clone());
    line("name", schedule.name.clone());
    line(
        "cron",
        format!("{} ({})", schedule.cron, schedule.time_zone),
    );
    let call = schedule.call.as_ref();
    line(
        "procedure",
        call.map(|c| c.procedure.clone()).unwrap_or_default(),
    );
    line(
        "state",
        if schedule.paused { "paused" } else { "active" }.into(),
    );
    line("overlap", overlap_name(schedule.overlap).into());
    line("retry", retry_text(schedule.retry.as_ref()));
    line("next run", timestamp_text(schedule.next_run_time.as_ref()));
    line("last run", timestamp_text(schedule.last_run_time.as_ref()));
    line("last job", last_job_text(schedule, last_job, false));
    if schedule.skipped_ticks > 0 {
        line("skipped ticks", schedule.skipped_ticks.to_string());
    }
    line("owner", schedule.owner.clone());
    line("created", timestamp_text(schedule.create_time.as_ref()));
    text
}

pub fn schedule_json(schedule: &pb::Schedule, last_job: Option<&pb::Job>) -> Json {
    let duration = |d: Option<&prost_types::Duration>| {
        d.and_then(|d| Duration::try_from(*d).ok())
            .map(|d| d.as_secs_f64())
    };
    json!({
        "id": schedule.id,
        "name": schedule.name,
        "cron": schedule.cron,
        "time_zone": schedule.time_zone,
        "procedure": schedule.call.as_ref().map(|c| c.procedure.clone()),
        "paused": schedule.paused,
        "overlap": overlap_name(schedule.overlap),
        "retry": schedule.retry.as_ref().map(|r| json!({
            "max_attempts": r.max_attempts,
            "initial_backoff_seconds": duration(r.initial_backoff.as_ref()),
            "max_backoff_seconds": duration(r.max_backoff.as_ref()),
            "multiplier": r.multiplier,
        })),
        "next_run_time": timestamp_text(schedule.next_run_time.as_ref()),
        "last_run_time": timestamp_text(schedule.last_run_time.as_ref()),
        "last_job_id": schedule.last_job_id,
        "last_job_state": last_job.map(|j| state_name(j.state)),
        "skipped_ticks": schedule.skipped_ticks,
        "owner": schedule.owner,
        "create_time": timestamp_text(schedule.create_time.as_ref()),
    })
}
