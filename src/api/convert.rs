//! protobuf ⇄ domain conversion, with validation on the way in.
//!
//! Requests become [`ProcedureCall`]s here, and every check that needs no
//! database happens here: names, directions, types, value formats, sizes.
//! A request that fails any of them never reaches a backend. On the way out,
//! snapshots, outputs and descriptions become protobuf messages.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};
use prost_types::Timestamp;

use crate::backend::{ParamDescription, ProcedureDescription};
use crate::call::{
    self, Column, Direction, Outputs, Param, ProcedureCall, ResultSet, Value, ValueType,
};
use crate::error::{Error, Result};
use crate::jobs::{FeedEvent, JobSnapshot, JobState};
use crate::name::{Identifier, ProcedureName, printable};
use crate::proto as pb;
use crate::proto::value::Kind;

/// Most parameters in one call (PostgreSQL allows 100 function arguments).
pub const MAX_PARAMS: usize = 1000;

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

pub fn call_from_proto(call: Option<pb::ProcedureCall>) -> Result<ProcedureCall> {
    let call = call.ok_or_else(|| invalid("`call` is required".into()))?;
    let name = ProcedureName::parse(&call.procedure)?;
    if call.params.len() > MAX_PARAMS {
        return Err(invalid(format!(
            "{} parameters; at most {MAX_PARAMS} are accepted",
            call.params.len()
        )));
    }
    let mut seen = HashSet::new();
    let params = call
        .params
        .into_iter()
        .map(|p| {
            let param = param_from_proto(p)?;
            if !seen.insert(param.name.folded_lower()) {
                return Err(invalid(format!(
                    "parameter {} is given more than once",
                    param.name
                )));
            }
            Ok(param)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ProcedureCall {
        name,
        display_name: call.procedure,
        params,
        returns: value_type_from_proto(call.returns, &"returns")?,
        overload: overload_from_proto(call.overload)?,
    })
}

/// An overload id as a request names it: empty for none.
pub fn overload_from_proto(overload: String) -> Result<Option<String>> {
    if overload.len() > 1024 || overload.chars().any(char::is_control) {
        return Err(invalid(format!(
            "overload {} is not an overload id: take one from DescribeProcedure or \
             ListProcedures",
            crate::name::printable(&overload)
        )));
    }
    Ok((!overload.is_empty()).then_some(overload))
}

fn param_from_proto(param: pb::Param) -> Result<Param> {
    let name = Identifier::parse(&param.name, "parameter name")?;
    let direction = match pb::Direction::try_from(param.direction) {
        Ok(pb::Direction::Unspecified | pb::Direction::In) => Direction::In,
        Ok(pb::Direction::Out) => Direction::Out,
        Ok(pb::Direction::InOut) => Direction::InOut,
        Err(_) => {
            return Err(invalid(format!(
                "parameter {name}: unknown direction {}",
                param.direction
            )));
        }
    };
    let value_type = value_type_from_proto(param.r#type, &format_args!("parameter {name}"))?;
    let value = match (direction, param.value) {
        (Direction::Out, None) => None,
        (
            Direction::Out,
            Some(pb::Value {
                kind: None | Some(Kind::NullValue(_)),
            }),
        ) => None,
        (Direction::Out, Some(_)) => {
            return Err(invalid(format!(
                "parameter {name} is OUT and must not carry a value (use IN_OUT to pass one in)"
            )));
        }
        (_, None) => {
            return Err(invalid(format!(
                "parameter {name} is IN but has no value: send a value, `null_value` for NULL, \
                 or leave the parameter out to use its default"
            )));
        }
        (_, Some(value)) => {
            let value = value_from_proto(value)
                .map_err(|why| invalid(format!("parameter {name}: {why}")))?;
            let value = match value_type {
                Some(t) => value
                    .coerce(t)
                    .map_err(|why| invalid(format!("parameter {name}: {why}")))?,
                None => value,
            };
            Some(value)
        }
    };
    if value_type == Some(ValueType::Cursor) && direction.takes_value() {
        return Err(invalid(format!(
            "parameter {name}: a cursor can only be an OUT parameter"
        )));
    }
    Ok(Param {
        name,
        direction,
        value_type,
        value,
        size: (param.size > 0).then_some(param.size),
    })
}

/// `what` names the field in the error; it is rendered only on an error.
fn value_type_from_proto(raw: i32, what: &dyn std::fmt::Display) -> Result<Option<ValueType>> {
    use pb::ValueType as P;
    let value_type = match P::try_from(raw) {
        Ok(P::Unspecified) => return Ok(None),
        Ok(P::String) => ValueType::String,
        Ok(P::Integer) => ValueType::Integer,
        Ok(P::Number) => ValueType::Number,
        Ok(P::Float) => ValueType::Float,
        Ok(P::Boolean) => ValueType::Boolean,
        Ok(P::Date) => ValueType::Date,
        Ok(P::Timestamp) => ValueType::Timestamp,
        Ok(P::Bytes) => ValueType::Bytes,
        Ok(P::Clob) => ValueType::Clob,
        Ok(P::Json) => ValueType::Json,
        Ok(P::Cursor) => ValueType::Cursor,
        Err(_) => return Err(invalid(format!("{what}: unknown value type {raw}"))),
    };
    Ok(Some(value_type))
}

pub fn value_type_to_proto(value_type: Option<ValueType>) -> pb::ValueType {
    use pb::ValueType as P;
    match value_type {
        None => P::Unspecified,
        Some(ValueType::String) => P::String,
        Some(ValueType::Integer) => P::Integer,
        Some(ValueType::Number) => P::Number,
        Some(ValueType::Float) => P::Float,
        Some(ValueType::Boolean) => P::Boolean,
        Some(ValueType::Date) => P::Date,
        Some(ValueType::Timestamp) => P::Timestamp,
        Some(ValueType::Bytes) => P::Bytes,
        Some(ValueType::Clob) => P::Clob,
        Some(ValueType::Json) => P::Json,
        Some(ValueType::Cursor) => P::Cursor,
    }
}

fn value_from_proto(value: pb::Value) -> std::result::Result<Value, String> {
    let no_nul = |s: String| {
        if s.contains('\0') {
            Err("contains a NUL character, which databases cannot store in text".to_string())
        } else {
            Ok(s)
        }
    };
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::StringValue(s)) => Value::String(no_nul(s)?),
        Some(Kind::IntegerValue(i)) => Value::Integer(i),
        Some(Kind::NumberValue(s)) => Value::Number(s).coerce(ValueType::Number)?,
        Some(Kind::FloatValue(f)) => Value::Float(f),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::DateValue(s)) => Value::Date(call::parse_date(&s)?),
        Some(Kind::TimestampValue(t)) => Value::Timestamp(timestamp_from_proto(&t)?),
        Some(Kind::BytesValue(b)) => Value::Bytes(b),
        Some(Kind::JsonValue(s)) => Value::Json(no_nul(s)?).coerce(ValueType::Json)?,
        Some(Kind::RowsValue(_)) => return Err("a cursor cannot be passed in".into()),
    })
}

fn timestamp_from_proto(t: &Timestamp) -> std::result::Result<DateTime<Utc>, String> {
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| format!("timestamp nanos {} is out of range", t.nanos))?;
    let timestamp = DateTime::from_timestamp(t.seconds, nanos)
        .ok_or_else(|| format!("timestamp seconds {} is out of range", t.seconds))?;
    call::check_year(timestamp.year())?;
    Ok(timestamp)
}

fn timestamp_to_proto(t: &DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn value_to_proto(value: &Value) -> pb::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Integer(i) => Kind::IntegerValue(*i),
        Value::Number(s) => Kind::NumberValue(s.clone()),
        Value::Float(f) => Kind::FloatValue(*f),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Date(d) => Kind::DateValue(d.format("%Y-%m-%d").to_string()),
        Value::Timestamp(t) => Kind::TimestampValue(timestamp_to_proto(t)),
        Value::Bytes(b) => Kind::BytesValue(b.clone()),
        Value::Json(s) => Kind::JsonValue(s.clone()),
        Value::Rows(set) => Kind::RowsValue(result_set_to_proto(set)),
    };
    pb::Value { kind: Some(kind) }
}

fn result_set_to_proto(set: &ResultSet) -> pb::ResultSet {
    pb::ResultSet {
        columns: set.columns.iter().map(column_to_proto).collect(),
        rows: set.rows.iter().map(|row| row_to_proto(row)).collect(),
        truncated: set.truncated,
        total_rows: set.total_rows(),
    }
}

pub fn column_to_proto(Column { name, value_type }: &Column) -> pb::Column {
    pb::Column {
        name: name.clone(),
        r#type: value_type_to_proto(*value_type) as i32,
    }
}

pub fn row_to_proto(row: &[Value]) -> pb::Row {
    pb::Row {
        values: row.iter().map(value_to_proto).collect(),
    }
}

/// What ExecuteSync answers, and ExecuteStream's `done`.
pub fn sync_response(outcome: &crate::sync_call::SyncOutcome) -> pb::ExecuteSyncResponse {
    let outputs = outputs_to_proto(&outcome.outputs);
    pb::ExecuteSyncResponse {
        outputs: outputs.outputs,
        return_value: outputs.return_value,
        messages: outcome.messages.lines.iter().cloned().collect(),
        elapsed: prost_types::Duration::try_from(outcome.elapsed).ok(),
        implicit_results: outputs.implicit_results,
        messages_dropped: outcome.messages.dropped,
    }
}

/// Outputs in the shape both ExecuteSyncResponse and Job carry them.
#[derive(Default)]
pub struct ProtoOutputs {
    pub outputs: std::collections::HashMap<String, pb::Value>,
    pub return_value: Option<pb::Value>,
    pub implicit_results: Vec<pb::ResultSet>,
}

pub fn outputs_to_proto(outputs: &Outputs) -> ProtoOutputs {
    ProtoOutputs {
        outputs: outputs
            .values
            .iter()
            .map(|(name, value)| (name.clone(), value_to_proto(value)))
            .collect(),
        return_value: outputs.return_value.as_ref().map(value_to_proto),
        implicit_results: outputs
            .implicit_results
            .iter()
            .map(result_set_to_proto)
            .collect(),
    }
}

/// A call as a client would send it again (a schedule's).
pub fn call_to_proto(call: &ProcedureCall) -> pb::ProcedureCall {
    pb::ProcedureCall {
        procedure: call.display_name.clone(),
        params: call.params.iter().map(param_to_proto).collect(),
        returns: value_type_to_proto(call.returns) as i32,
        overload: call.overload.clone().unwrap_or_default(),
    }
}

fn param_to_proto(param: &Param) -> pb::Param {
    let direction = match param.direction {
        Direction::In => pb::Direction::In,
        Direction::Out => pb::Direction::Out,
        Direction::InOut => pb::Direction::InOut,
    };
    pb::Param {
        name: param.name.to_string(),
        direction: direction as i32,
        r#type: value_type_to_proto(param.value_type) as i32,
        value: param.value.as_ref().map(value_to_proto),
        size: param.size.unwrap_or(0),
    }
}

pub fn job_state_to_proto(state: JobState) -> pb::JobState {
    match state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn job_state_from_proto(raw: i32) -> Result<Option<JobState>> {
    Ok(match pb::JobState::try_from(raw) {
        Ok(pb::JobState::Unspecified) => None,
        Ok(pb::JobState::Pending) => Some(JobState::Pending),
        Ok(pb::JobState::Running) => Some(JobState::Running),
        Ok(pb::JobState::Completed) => Some(JobState::Completed),
        Ok(pb::JobState::Failed) => Some(JobState::Failed),
        Ok(pb::JobState::Cancelled) => Some(JobState::Cancelled),
        Err(_) => return Err(invalid(format!("unknown job state {raw}"))),
    })
}

/// How much of a job a response carries (`procgate.v1.JobView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// No params, outputs or messages.
    Basic,
    Full,
}

impl View {
    /// The view a request asked for; UNSPECIFIED is the RPC's default.
    pub fn from_proto(raw: i32, default: View) -> Result<View> {
        match pb::JobView::try_from(raw) {
            Ok(pb::JobView::Unspecified) => Ok(default),
            Ok(pb::JobView::Basic) => Ok(View::Basic),
            Ok(pb::JobView::Full) => Ok(View::Full),
            Err(_) => Err(invalid(format!(
                "unknown job view {raw}: use JOB_VIEW_BASIC or JOB_VIEW_FULL"
            ))),
        }
    }
}

/// A response message, if it fits in `max_bytes` (`--max-response-bytes`).
/// Checked here rather than left to tonic's encoder, so that the caller
/// learns what to do instead.
pub fn within<M: prost::Message>(message: M, max_bytes: usize, what: &str) -> Result<M> {
    let size = message.encoded_len();
    if size > max_bytes {
        return Err(Error::OutOfRange(format!(
            "{what} takes {size} bytes, over this gateway's --max-response-bytes of {max_bytes}: \
             ask for view JOB_VIEW_BASIC (no params, outputs or messages), and read a job's \
             result sets with ReadJobResult or Arrow Flight"
        )));
    }
    Ok(message)
}

pub fn job_to_proto(job: &JobSnapshot, view: View) -> pb::Job {
    let full = view == View::Full;
    let ProtoOutputs {
        outputs,
        return_value,
        implicit_results,
    } = job
        .outputs
        .as_deref()
        .filter(|_| full)
        .map(outputs_to_proto)
        .unwrap_or_default();
    pb::Job {
        id: job.id.to_string(),
        state: job_state_to_proto(job.state) as i32,
        procedure: job.call.display_name.clone(),
        progress: job.progress,
        progress_message: job.progress_message.to_string(),
        create_time: Some(job.create_time.into()),
        start_time: job.start_time.map(Into::into),
        end_time: job.end_time.map(Into::into),
        duration: job
            .duration()
            .and_then(|d| prost_types::Duration::try_from(d).ok()),
        outputs,
        return_value,
        error: job.error.as_ref().map(|e| pb::JobError {
            code: crate::api::status::code_of(e) as i32,
            message: e.to_string(),
            db_code: e.db_code().unwrap_or_default().to_string(),
            reason: match **e {
                Error::Interrupted(_) => "INTERRUPTED".into(),
                Error::Expired(_) => "EXPIRED".into(),
                Error::Terminated { .. } => "TERMINATED".into(),
                _ => String::new(),
            },
        }),
        cancel_requested: job.cancel_requested,
        params: match view {
            View::Full => job.call.params.iter().map(param_to_proto).collect(),
            View::Basic => Vec::new(),
        },
        messages: match view {
            View::Full => job.messages.lines.iter().cloned().collect(),
            View::Basic => Vec::new(),
        },
        messages_dropped: job.messages.dropped,
        request_id: job.request_id.as_deref().unwrap_or_default().to_string(),
        owner: job.owner.to_string(),
        implicit_results,
        revision: job.revision,
        create_revision: job.create_revision,
        schedule_id: job
            .schedule_id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        scheduled_time: job.plan().tick.map(|t| t.time.into()),
        attempt: job.attempt,
        max_attempts: job.plan().retry.max_attempts,
        attempt_errors: job
            .retries
            .iter()
            .flat_map(|r| r.errors.iter())
            .map(|failed| pb::AttemptError {
                code: crate::api::status::code_of(&failed.error) as i32,
                message: failed.error.to_string(),
                db_code: failed.error.db_code().unwrap_or_default().to_string(),
                time: Some(failed.time.into()),
            })
            .collect(),
    }
}

/// A duration of a request, which must not be negative.
/// A duration field of a request, at most `max`: protobuf's rules (seconds
/// and nanos of one sign, nanos within ±999,999,999), and never negative.
pub fn duration_from_proto(
    duration: Option<prost_types::Duration>,
    field: &str,
    max: std::time::Duration,
) -> Result<Option<std::time::Duration>, Error> {
    let Some(d) = duration else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        Error::InvalidArgument(format!(
            "{field} {why}; give a positive duration of at most {}, such as \"30s\"",
            crate::jobs::plan::in_days(max)
        ))
    };
    if d.nanos.abs() > 999_999_999
        || (d.seconds > 0 && d.nanos < 0)
        || (d.seconds < 0 && d.nanos > 0)
    {
        return Err(invalid(
            "is not a valid protobuf Duration (its seconds and nanos differ in sign, or nanos \
             pass ±999,999,999)",
        ));
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(invalid("is negative"));
    }
    let duration = std::time::Duration::new(d.seconds as u64, d.nanos as u32);
    if duration > max {
        return Err(invalid("is too long"));
    }
    Ok(Some(duration))
}

use crate::jobs::plan::MAX_BACKOFF;

/// A retry policy of a request; None when unset or one attempt.
pub fn retry_from_proto(
    retry: Option<pb::RetryPolicy>,
) -> Result<Option<crate::jobs::plan::RetryPolicy>, Error> {
    let Some(retry) = retry else {
        return Ok(None);
    };
    let zero = std::time::Duration::ZERO;
    let policy = crate::jobs::plan::RetryPolicy::new(
        retry.max_attempts,
        duration_from_proto(retry.initial_backoff, "retry.initial_backoff", MAX_BACKOFF)?
            .unwrap_or(zero),
        duration_from_proto(retry.max_backoff, "retry.max_backoff", MAX_BACKOFF)?.unwrap_or(zero),
        retry.multiplier,
    )?;
    Ok(Some(policy))
}

/// A retry policy as a response shows it; None for one attempt.
pub fn retry_to_proto(policy: &crate::jobs::plan::RetryPolicy) -> Option<pb::RetryPolicy> {
    (policy.max_attempts > 1).then(|| pb::RetryPolicy {
        max_attempts: policy.max_attempts,
        initial_backoff: prost_types::Duration::try_from(policy.initial_backoff).ok(),
        max_backoff: prost_types::Duration::try_from(policy.max_backoff).ok(),
        multiplier: policy.multiplier,
    })
}

/// A schedule_id filter: empty for every job, else a UUID.
pub fn schedule_filter(schedule_id: &str) -> Result<Option<uuid::Uuid>, Error> {
    if schedule_id.is_empty() {
        return Ok(None);
    }
    uuid::Uuid::try_parse(schedule_id).map(Some).map_err(|_| {
        Error::InvalidArgument(format!(
            "schedule_id {} is not a UUID; use the id CreateSchedule returned",
            crate::name::printable(schedule_id)
        ))
    })
}

/// A WatchJobs event; a deletion carries what its tombstone keeps.
pub fn event_to_proto(event: &FeedEvent, view: View) -> pb::JobEvent {
    let (kind, job) = match event {
        FeedEvent::Existing(job) => (pb::JobEventType::Existing, Some(job_to_proto(job, view))),
        FeedEvent::Changed(job) => (pb::JobEventType::Changed, Some(job_to_proto(job, view))),
        FeedEvent::Synced(_) => (pb::JobEventType::Synced, None),
        FeedEvent::Deleted(tombstone) => (
            pb::JobEventType::Deleted,
            Some(pb::Job {
                id: tombstone.id.to_string(),
                owner: tombstone.owner.to_string(),
                procedure: tombstone.procedure.clone(),
                state: job_state_to_proto(tombstone.state) as i32,
                revision: tombstone.revision,
                ..Default::default()
            }),
        ),
    };
    pb::JobEvent {
        r#type: kind as i32,
        job,
        revision: event.revision(),
    }
}

pub fn description_to_proto(d: &ProcedureDescription) -> pb::ProcedureDescription {
    pb::ProcedureDescription {
        procedure: d.procedure.clone(),
        params: d
            .params
            .iter()
            .map(|p: &ParamDescription| pb::ParamDescription {
                name: p.name.clone(),
                direction: match p.direction {
                    Direction::In => pb::Direction::In,
                    Direction::Out => pb::Direction::Out,
                    Direction::InOut => pb::Direction::InOut,
                } as i32,
                r#type: value_type_to_proto(p.value_type) as i32,
                db_type: p.db_type.clone(),
                has_default: p.has_default,
            })
            .collect(),
        returns: value_type_to_proto(d.returns) as i32,
        returns_db_type: d.returns_db_type.clone(),
        overload: d.overload.clone(),
        overloads: d.overloads.clone(),
    }
}

/// A short description of a call for logs: name and parameter names only,
/// values only when `with_values` (`--log-params`).
pub fn describe_call(call: &ProcedureCall, with_values: bool) -> String {
    let params = call
        .params
        .iter()
        .map(|p| match (&p.value, with_values) {
            (Some(v), true) => format!("{}={v:?}", p.name),
            _ => p.name.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("{}({params})", printable(&call.display_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, direction: pb::Direction, kind: Option<Kind>) -> pb::Param {
        pb::Param {
            name: name.into(),
            direction: direction as i32,
            value: kind.map(|k| pb::Value { kind: Some(k) }),
            ..Default::default()
        }
    }

    fn call(params: Vec<pb::Param>) -> Option<pb::ProcedureCall> {
        Some(pb::ProcedureCall {
            procedure: "pkg.proc".into(),
            params,
            returns: 0,
            overload: String::new(),
        })
    }

    #[test]
    fn valid_calls_convert() {
        let c = call_from_proto(call(vec![
            param("a", pb::Direction::In, Some(Kind::IntegerValue(1))),
            param("b", pb::Direction::Out, None),
        ]))
        .unwrap();
        assert_eq!(c.params.len(), 2);
        assert_eq!(c.params[1].value, None);
    }

    #[test]
    fn bad_params_are_named_in_the_error() {
        let cases = vec![
            vec![
                param("a", pb::Direction::In, Some(Kind::IntegerValue(1))),
                param("A", pb::Direction::In, Some(Kind::IntegerValue(2))),
            ],
            vec![param("a", pb::Direction::Out, Some(Kind::IntegerValue(1)))],
            vec![param("a", pb::Direction::In, None)],
            vec![param(
                "a",
                pb::Direction::In,
                Some(Kind::NumberValue("1,5".into())),
            )],
            vec![param(
                "a",
                pb::Direction::In,
                Some(Kind::DateValue("2024-13-01".into())),
            )],
            vec![param(
                "a",
                pb::Direction::In,
                Some(Kind::StringValue("x\0y".into())),
            )],
            vec![param(
                "a",
                pb::Direction::In,
                Some(Kind::JsonValue("{".into())),
            )],
            vec![param(
                "a",
                pb::Direction::In,
                Some(Kind::TimestampValue(Timestamp {
                    seconds: 0,
                    nanos: -1,
                })),
            )],
        ];
        for params in cases {
            let err = call_from_proto(call(params)).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(
                err.to_string().contains("parameter a") || err.to_string().contains("parameter A"),
                "{err}"
            );
        }
    }

    #[test]
    fn typed_strings_are_parsed() {
        let mut p = param("a", pb::Direction::In, Some(Kind::StringValue("42".into())));
        p.r#type = pb::ValueType::Integer as i32;
        let c = call_from_proto(call(vec![p])).unwrap();
        assert_eq!(c.params[0].value, Some(Value::Integer(42)));
        let mut p = param("a", pb::Direction::In, Some(Kind::BoolValue(true)));
        p.r#type = pb::ValueType::Date as i32;
        assert!(call_from_proto(call(vec![p])).is_err());
    }

    #[test]
    fn values_round_trip() {
        let values = [
            Value::Null,
            Value::String("ñandú".into()),
            Value::Integer(i64::MIN),
            Value::Number("-0.000100".into()),
            Value::Float(0.1),
            Value::Bool(false),
            Value::Date(call::parse_date("2024-02-29").unwrap()),
            Value::Timestamp(call::parse_timestamp("2024-05-01T10:30:00.123456789Z").unwrap()),
            Value::Bytes(vec![0, 255]),
            Value::Json(r#"{"a":[1,2]}"#.into()),
        ];
        for value in values {
            assert_eq!(value_from_proto(value_to_proto(&value)).unwrap(), value);
        }
    }
}
