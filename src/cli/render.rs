//! How the client shows things: values, tables, one-line errors, JSON.
//!
//! Text output is for people (aligned tables, short ids, human durations);
//! `--json` output is for scripts and keeps every value exact (numbers as
//! their decimal text, bytes as hex, timestamps in RFC 3339).

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value as Json, json};
use tonic::{Code, Status};

use crate::api::status::code_name;
use crate::proto::value::Kind;
use crate::proto::{self as pb};

/// A value as a person reads it.
pub fn value_text(value: Option<&pb::Value>) -> String {
    match value.and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::NullValue(_)) => "NULL".into(),
        Some(
            Kind::StringValue(s) | Kind::NumberValue(s) | Kind::DateValue(s) | Kind::JsonValue(s),
        ) => s.clone(),
        Some(Kind::IntegerValue(i)) => i.to_string(),
        Some(Kind::FloatValue(f)) => f.to_string(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::TimestampValue(t)) => timestamp_text(Some(t)),
        Some(Kind::BytesValue(b)) => format!("0x{}", hex(b)),
        Some(Kind::RowsValue(set)) => format!(
            "({} rows{})",
            set.rows.len(),
            if set.truncated { ", truncated" } else { "" }
        ),
    }
}

/// A value as JSON: exact, with the kind implied by the JSON type or text.
pub fn value_json(value: Option<&pb::Value>) -> Json {
    match value.and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::StringValue(s) | Kind::NumberValue(s) | Kind::DateValue(s)) => json!(s),
        Some(Kind::JsonValue(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Some(Kind::IntegerValue(i)) => json!(i),
        Some(Kind::FloatValue(f)) => json!(f),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::TimestampValue(t)) => json!(timestamp_text(Some(t))),
        Some(Kind::BytesValue(b)) => json!(format!("0x{}", hex(b))),
        Some(Kind::RowsValue(set)) => rows_json(set),
    }
}

fn rows_json(set: &pb::ResultSet) -> Json {
    let rows: Vec<Json> = set
        .rows
        .iter()
        .map(|row| {
            let object: serde_json::Map<String, Json> = set
                .columns
                .iter()
                .zip(&row.values)
                .map(|(c, v)| (c.name.clone(), value_json(Some(v))))
                .collect();
            Json::Object(object)
        })
        .collect();
    json!({ "rows": rows, "truncated": set.truncated })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn timestamp_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// `2024-05-01 10:30:00`, for tables.
pub(super) fn short_time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn duration_text(d: Option<&prost_types::Duration>) -> String {
    d.and_then(|d| std::time::Duration::try_from(*d).ok())
        .map(|d| format!("{:.1}s", d.as_secs_f64()))
        .unwrap_or_default()
}

pub(super) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    table
}

/// OUT values, the return value and any result sets, as tables.
pub fn outputs_text(
    outputs: &std::collections::HashMap<String, pb::Value>,
    return_value: Option<&pb::Value>,
    implicit_results: &[pb::ResultSet],
) -> String {
    let mut text = String::new();
    let mut names: Vec<&String> = outputs.keys().collect();
    names.sort();
    let mut sets = Vec::new();
    if !names.is_empty() || return_value.is_some() {
        let mut t = table(&["output", "value"]);
        if let Some(value) = return_value {
            t.add_row(vec!["(return value)".to_string(), value_text(Some(value))]);
            sets.extend(rows_of("(return value)", value));
        }
        for name in names {
            t.add_row(vec![name.clone(), value_text(outputs.get(name))]);
            sets.extend(rows_of(name, &outputs[name]));
        }
        writeln!(text, "{t}").expect("write to String");
    }
    for (i, set) in implicit_results.iter().enumerate() {
        sets.push((format!("implicit result {}", i + 1), set));
    }
    for (name, set) in sets {
        writeln!(text, "{name}:\n{}", rows_table(set)).expect("write to String");
    }
    text
}

fn rows_of<'v>(name: &str, value: &'v pb::Value) -> Option<(String, &'v pb::ResultSet)> {
    match &value.kind {
        Some(Kind::RowsValue(set)) => Some((name.to_string(), set)),
        _ => None,
    }
}

fn rows_table(set: &pb::ResultSet) -> String {
    let header: Vec<&str> = set.columns.iter().map(|c| c.name.as_str()).collect();
    let mut t = table(&header);
    for row in &set.rows {
        t.add_row(
            row.values
                .iter()
                .map(|v| value_text(Some(v)))
                .collect::<Vec<_>>(),
        );
    }
    let mut text = t.to_string();
    if set.truncated {
        text.push_str("\n(truncated at the server's row cap)");
    }
    text
}

pub fn state_name(state: i32) -> &'static str {
    pb::JobState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_"))
        .unwrap_or("UNKNOWN")
}

/// The first 8 characters of an id: enough to tell jobs apart on screen.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Whether a job is running with no progress of its own yet (the
/// milestones before its procedure's code runs stay at or below 2 %).
pub fn is_indeterminate(job: &pb::Job) -> bool {
    job.state == pb::JobState::Running as i32 && job.progress <= crate::backend::INDETERMINATE_MAX
}

/// `40%`, or `…` while the amount is unknown.
pub fn progress_text(job: &pb::Job) -> String {
    if is_indeterminate(job) {
        "…".into()
    } else {
        format!("{}%", job.progress)
    }
}

pub fn jobs_table(jobs: &[pb::Job]) -> String {
    let mut t = table(&[
        "id",
        "state",
        "progress",
        "procedure",
        "started",
        "duration",
    ]);
    for job in jobs {
        t.add_row(vec![
            job.id.clone(),
            state_name(job.state).to_string(),
            progress_text(job),
            job.procedure.clone(),
            short_time(job.start_time.as_ref()),
            duration_text(job.duration.as_ref()),
        ]);
    }
    t.to_string()
}

/// A WatchJobs event's name: EXISTING, SYNCED, CHANGED or DELETED.
pub fn event_name(kind: i32) -> &'static str {
    match pb::JobEventType::try_from(kind) {
        Ok(pb::JobEventType::Existing) => "EXISTING",
        Ok(pb::JobEventType::Synced) => "SYNCED",
        Ok(pb::JobEventType::Changed) => "CHANGED",
        Ok(pb::JobEventType::Deleted) => "DELETED",
        Ok(pb::JobEventType::Unspecified) | Err(_) => "UNKNOWN",
    }
}

/// One WatchJobs event on one line:
/// `CHANGED  rev 12  3f0c…  RUNNING  40%  pkg_etl.load  loading rows`.
pub fn event_line(event: &pb::JobEvent) -> String {
    let head = format!("{:<8} rev {}", event_name(event.r#type), event.revision);
    match &event.job {
        None => format!("{head}  (all current jobs sent; live changes follow)"),
        Some(job) if event.r#type == pb::JobEventType::Deleted as i32 => format!(
            "{head}  {}  {}  {}",
            job.id,
            state_name(job.state),
            job.procedure
        ),
        Some(job) => {
            // A change may be a new message only: show the latest.
            let said = job
                .messages
                .last()
                .map(|m| format!("  | {m}"))
                .unwrap_or_default();
            format!(
                "{head}  {}  {}  {}  {}  {}{said}",
                job.id,
                state_name(job.state),
                progress_text(job),
                job.procedure,
                job.progress_message
            )
        }
    }
}

/// One WatchJobs event as one line of JSON.
pub fn event_json(event: &pb::JobEvent) -> Json {
    json!({
        "event": event_name(event.r#type),
        "revision": event.revision,
        "job": event.job.as_ref().map(job_json),
    })
}

/// One job in full.
pub fn job_text(job: &pb::Job) -> String {
    let mut text = String::new();
    let mut line = |label: &str, value: String| {
        if !value.is_empty() {
            writeln!(text, "{label:>16}  {value}").expect("write to String");
        }
    };
    line("id", job.id.clone());
    line("state", state_name(job.state).to_string());
    line("procedure", job.procedure.clone());
    line(
        "progress",
        format!("{} {}", progress_text(job), job.progress_message),
    );
    line("created", timestamp_text(job.create_time.as_ref()));
    line("started", timestamp_text(job.start_time.as_ref()));
    line("ended", timestamp_text(job.end_time.as_ref()));
    line("duration", duration_text(job.duration.as_ref()));
    line("request id", job.request_id.clone());
    if !job.schedule_id.is_empty() {
        line(
            "schedule",
            format!(
                "{} (tick {})",
                job.schedule_id,
                timestamp_text(job.scheduled_time.as_ref())
            ),
        );
    }
    if job.max_attempts > 1 {
        line(
            "attempt",
            format!("{} of {}", job.attempt, job.max_attempts),
        );
    }
    for failed in &job.attempt_errors {
        line(
            "failed attempt",
            format!(
                "{} {}",
                timestamp_text(failed.time.as_ref()),
                error_text(failed.code, &failed.message, &failed.db_code)
            ),
        );
    }
    if job.cancel_requested {
        line("cancel", "requested".into());
    }
    let params: Vec<String> = job
        .params
        .iter()
        .map(|p| match &p.value {
            Some(v) => format!("{}={}", p.name, value_text(Some(v))),
            None => format!("{} (out)", p.name),
        })
        .collect();
    line("params", params.join(", "));
    if let Some(error) = &job.error {
        line("error", job_error_text(error));
    }
    for message in &job.messages {
        line("message", message.clone());
    }
    if job.messages_dropped > 0 {
        line(
            "",
            format!("({} earlier messages dropped)", job.messages_dropped),
        );
    }
    text.push_str(&outputs_text(
        &job.outputs,
        job.return_value.as_ref(),
        &job.implicit_results,
    ));
    text
}

pub fn job_error_text(error: &pb::JobError) -> String {
    error_text(error.code, &error.message, &error.db_code)
}

/// `ABORTED: could not serialize access (db code 40001)`.
fn error_text(code: i32, message: &str, db_code: &str) -> String {
    let code = code_name(Code::from_i32(code));
    match db_code {
        "" => format!("{code}: {message}"),
        db => format!("{code}: {message} (db code {db})"),
    }
}

pub fn job_json(job: &pb::Job) -> Json {
    let mut outputs = serde_json::Map::new();
    for (name, value) in &job.outputs {
        outputs.insert(name.clone(), value_json(Some(value)));
    }
    json!({
        "id": job.id,
        "state": state_name(job.state),
        "procedure": job.procedure,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "create_time": timestamp_text(job.create_time.as_ref()),
        "start_time": timestamp_text(job.start_time.as_ref()),
        "end_time": timestamp_text(job.end_time.as_ref()),
        "outputs": outputs,
        "return_value": job.return_value.as_ref().map(|v| value_json(Some(v))),
        "implicit_results": job.implicit_results.iter().map(rows_json).collect::<Vec<_>>(),
        "error": job.error.as_ref().map(|e| json!({
            "code": code_name(Code::from_i32(e.code)),
            "message": e.message,
            "db_code": e.db_code,
        })),
        "messages": job.messages,
        "params": job.params.iter().map(|p| json!({
            "name": p.name,
            "direction": direction_name(p.direction),
            "value": p.value.as_ref().map(|v| value_json(Some(v))),
        })).collect::<Vec<_>>(),
        "owner": job.owner,
        "request_id": job.request_id,
        "revision": job.revision,
        "create_revision": job.create_revision,
        "duration_seconds": job.duration.and_then(|d| std::time::Duration::try_from(d).ok())
            .map(|d| d.as_secs_f64()),
        "messages_dropped": job.messages_dropped,
        "cancel_requested": job.cancel_requested,
        "schedule_id": job.schedule_id,
        "scheduled_time": timestamp_text(job.scheduled_time.as_ref()),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "attempt_errors": job.attempt_errors.iter().map(|e| json!({
            "code": code_name(Code::from_i32(e.code)),
            "message": e.message,
            "db_code": e.db_code,
            "time": timestamp_text(e.time.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// `IN`, `OUT`, `IN_OUT` as the proto spells them, without the prefix.
fn direction_name(direction: i32) -> &'static str {
    pb::Direction::try_from(direction)
        .map(|d| d.as_str_name().trim_start_matches("DIRECTION_"))
        .unwrap_or("?")
}

/// One line: `pkg_etl.sumar(a numeric, b numeric, OUT total numeric)`, and
/// `→ type` for a function.
pub fn signature_text(d: &pb::ProcedureDescription) -> String {
    let params: Vec<String> = d
        .params
        .iter()
        .map(|p| {
            let direction = match direction_name(p.direction) {
                "IN" => String::new(),
                other => format!("{} ", other.replace('_', " ")),
            };
            let default = if p.has_default { " = …" } else { "" };
            let name = if p.name.is_empty() { "$" } else { &p.name };
            format!("{direction}{name} {}{default}", p.db_type)
        })
        .collect();
    let mut text = format!("{}({})", d.procedure, params.join(", "));
    if !d.returns_db_type.is_empty() {
        write!(text, " → {}", d.returns_db_type).expect("write to String");
    }
    if !d.overload.is_empty() {
        write!(text, "  [overload {}]", d.overload).expect("write to String");
    }
    text
}

pub fn describe_text(d: &pb::ProcedureDescription) -> String {
    let mut t = table(&["parameter", "direction", "type", "database type", "default"]);
    for p in &d.params {
        let direction = direction_name(p.direction);
        let value_type = pb::ValueType::try_from(p.r#type)
            .map(|t| t.as_str_name().trim_start_matches("VALUE_TYPE_"))
            .unwrap_or("?");
        t.add_row(vec![
            p.name.clone(),
            direction.to_string(),
            value_type.to_string(),
            p.db_type.clone(),
            if p.has_default { "yes" } else { "" }.to_string(),
        ]);
    }
    let mut text = format!("{}\n{t}", d.procedure);
    if !d.returns_db_type.is_empty() {
        write!(text, "\nreturns {}", d.returns_db_type).expect("write to String");
    }
    if d.overloads.len() > 1 {
        write!(
            text,
            "\noverload {} (its name has {}: {})",
            d.overload,
            d.overloads.len(),
            d.overloads.join(", ")
        )
        .expect("write to String");
    }
    text
}

/// `error: FAILED_PRECONDITION: lote -1 inválido (db code P0001)`
pub fn status_line(status: &Status) -> String {
    let db_code = status
        .metadata()
        .get(crate::api::status::DB_CODE_TRAILER)
        .and_then(|v| v.to_str().ok());
    let message = status.message().lines().next().unwrap_or_default();
    match db_code {
        Some(db) => format!(
            "error: {}: {message} (db code {db})",
            code_name(status.code())
        ),
        None => format!("error: {}: {message}", code_name(status.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(kind: Kind) -> pb::Value {
        pb::Value { kind: Some(kind) }
    }

    #[test]
    fn values_read_well_and_stay_exact_in_json() {
        assert_eq!(
            value_text(Some(&v(Kind::NumberValue("12.50".into())))),
            "12.50"
        );
        assert_eq!(
            value_text(Some(&v(Kind::BytesValue(vec![0xca, 0xfe])))),
            "0xcafe"
        );
        assert_eq!(value_text(None), "NULL");
        assert_eq!(
            value_json(Some(&v(Kind::NumberValue("12.50".into())))),
            json!("12.50")
        );
        assert_eq!(
            value_json(Some(&v(Kind::JsonValue("{\"a\":1}".into())))),
            json!({"a": 1})
        );
        let ts = prost_types::Timestamp {
            seconds: 0,
            nanos: 500_000_000,
        };
        assert_eq!(
            value_text(Some(&v(Kind::TimestampValue(ts)))),
            "1970-01-01T00:00:00.500Z"
        );
    }

    #[test]
    fn errors_fit_on_one_line() {
        let mut status = Status::failed_precondition("lote -1 inválido\nsecond line");
        status
            .metadata_mut()
            .insert("procgate-db-code", "P0001".parse().unwrap());
        assert_eq!(
            status_line(&status),
            "error: FAILED_PRECONDITION: lote -1 inválido (db code P0001)"
        );
        assert_eq!(
            status_line(&Status::not_found("job x not found")),
            "error: NOT_FOUND: job x not found"
        );
    }
}
