//! The schedule RPCs' messages: a `procgate.v1.Schedule` to and from what
//! [`crate::schedules::Schedules`] works with, and the field mask of
//! UpdateSchedule. The handlers in `super` only call these and the service.

use crate::error::{Error, Result};
use crate::proto as pb;
use crate::schedules::service::{Field, ScheduleSpec};
use crate::schedules::{Overlap, Schedule};

use super::convert::{call_from_proto, call_to_proto, retry_from_proto, retry_to_proto};

pub fn schedule_to_proto(schedule: &Schedule) -> pb::Schedule {
    pb::Schedule {
        id: schedule.id.to_string(),
        name: schedule.name.clone(),
        cron: schedule.cron.clone(),
        time_zone: schedule.time_zone.clone(),
        call: Some(call_to_proto(&schedule.call)),
        paused: schedule.paused,
        overlap: overlap_to_proto(schedule.overlap) as i32,
        retry: schedule.retry.as_ref().and_then(retry_to_proto),
        next_run_time: schedule.next_run_time.map(Into::into),
        last_run_time: schedule.last_run_time.map(Into::into),
        last_job_id: schedule
            .last_job_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        owner: schedule.owner.to_string(),
        create_time: Some(schedule.create_time.into()),
        skipped_ticks: schedule.skipped_ticks,
    }
}

fn overlap_to_proto(overlap: Overlap) -> pb::OverlapPolicy {
    match overlap {
        Overlap::Skip => pb::OverlapPolicy::Skip,
        Overlap::Queue => pb::OverlapPolicy::Queue,
        Overlap::CancelPrevious => pb::OverlapPolicy::CancelPrevious,
    }
}

fn overlap_from_proto(raw: i32) -> Result<Overlap> {
    match pb::OverlapPolicy::try_from(raw) {
        Ok(pb::OverlapPolicy::Unspecified | pb::OverlapPolicy::Skip) => Ok(Overlap::Skip),
        Ok(pb::OverlapPolicy::Queue) => Ok(Overlap::Queue),
        Ok(pb::OverlapPolicy::CancelPrevious) => Ok(Overlap::CancelPrevious),
        Err(_) => Err(Error::InvalidArgument(format!(
            "overlap {raw} is not an OverlapPolicy; use OVERLAP_POLICY_SKIP, \
             OVERLAP_POLICY_QUEUE or OVERLAP_POLICY_CANCEL_PREVIOUS"
        ))),
    }
}

/// What a request's schedule says; the call is converted only when given.
pub fn spec_from_proto(schedule: Option<pb::Schedule>) -> Result<ScheduleSpec> {
    let schedule =
        schedule.ok_or_else(|| Error::InvalidArgument("`schedule` is required".into()))?;
    Ok(ScheduleSpec {
        name: schedule.name,
        cron: schedule.cron,
        time_zone: schedule.time_zone,
        call: schedule
            .call
            .map(|call| call_from_proto(Some(call)))
            .transpose()?,
        paused: schedule.paused,
        overlap: overlap_from_proto(schedule.overlap)?,
        retry: retry_from_proto(schedule.retry)?,
    })
}

/// An update_mask's paths; INVALID_ARGUMENT for one UpdateSchedule cannot
/// change.
pub fn mask_from_proto(mask: Option<prost_types::FieldMask>) -> Result<Vec<Field>> {
    mask.map(|m| m.paths)
        .unwrap_or_default()
        .iter()
        .map(|path| Field::parse(path))
        .collect()
}
