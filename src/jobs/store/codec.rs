//! Jobs as JSON for the database store, losslessly.
//!
//! Every value keeps its exact form: numbers as decimal text, floats as
//! their shortest round-trip text (NaN and infinities too), timestamps as
//! RFC 3339 with nanoseconds, bytes as hex, errors with their kind and the
//! database's code. Reading back gives the same domain values, so a job read
//! from the store is indistinguishable from one read from memory.

use chrono::SecondsFormat;
use serde_json::{Map, Value as Json, json};

use crate::backend::MessageLog;
use crate::call::{
    self, Column, Direction, Outputs, Param, ProcedureCall, ResultSet, Value, ValueType,
};
use crate::error::{DbError, DbErrorKind, Error};
use crate::jobs::plan::{AttemptError, Retries, RetryPolicy};
use crate::name::{Identifier, ProcedureName};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

type Decoded<T> = std::result::Result<T, String>;

pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => json!({ "null": true }),
        Value::String(s) => json!({ "string": s }),
        Value::Integer(i) => json!({ "integer": i }),
        Value::Number(s) => json!({ "number": s }),
        Value::Float(f) => json!({ "float": format!("{f:?}") }),
        Value::Bool(b) => json!({ "bool": b }),
        Value::Date(d) => json!({ "date": d.format("%Y-%m-%d").to_string() }),
        Value::Timestamp(t) => {
            json!({ "timestamp": t.to_rfc3339_opts(SecondsFormat::Nanos, true) })
        }
        Value::Bytes(b) => json!({ "bytes": hex(b) }),
        Value::Json(s) => json!({ "json": s }),
        Value::Rows(set) => json!({ "rows": result_set_to_json(set) }),
    }
}

pub fn value_from_json(json: &Json) -> Decoded<Value> {
    let object = json.as_object().ok_or("a value is not an object")?;
    let (kind, inner) = object.iter().next().ok_or("an empty value")?;
    let text = || inner.as_str().ok_or_else(|| format!("{kind} is not text"));
    Ok(match kind.as_str() {
        "null" => Value::Null,
        "string" => Value::String(text()?.to_string()),
        "integer" => Value::Integer(inner.as_i64().ok_or("integer is not an i64")?),
        "number" => Value::Number(text()?.to_string()),
        "float" => Value::Float(parse_float(text()?)?),
        "bool" => Value::Bool(inner.as_bool().ok_or("bool is not a boolean")?),
        "date" => Value::Date(call::parse_date(text()?)?),
        "timestamp" => Value::Timestamp(call::parse_timestamp(text()?)?),
        "bytes" => Value::Bytes(unhex(text()?)?),
        "json" => Value::Json(text()?.to_string()),
        "rows" => Value::Rows(result_set_from_json(inner)?),
        other => return Err(format!("unknown value kind {other}")),
    })
}

fn parse_float(text: &str) -> Decoded<f64> {
    match text {
        "NaN" => Ok(f64::NAN),
        "inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| format!("{text} is not a float")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Decoded<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| "bad hex bytes".to_string())
        })
        .collect()
}

fn type_name(value_type: Option<ValueType>) -> Json {
    value_type.map_or(Json::Null, |t| json!(t.name()))
}

fn type_from(json: &Json) -> Decoded<Option<ValueType>> {
    match json {
        Json::Null => Ok(None),
        Json::String(name) => ValueType::from_name(name)
            .map(Some)
            .ok_or_else(|| format!("unknown value type {name}")),
        _ => Err("a value type is not text".into()),
    }
}

fn result_set_to_json(set: &ResultSet) -> Json {
    json!({
        "columns": set.columns.iter().map(|c| json!({ "name": c.name, "type": type_name(c.value_type) })).collect::<Vec<_>>(),
        "rows": set.rows.iter().map(|row| row.iter().map(value_to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "truncated": set.truncated,
        "spooled_rows": set.spooled_rows,
    })
}

fn result_set_from_json(json: &Json) -> Decoded<ResultSet> {
    let columns = array(&json["columns"])?
        .iter()
        .map(|c| {
            Ok(Column {
                name: c["name"]
                    .as_str()
                    .ok_or("a column has no name")?
                    .to_string(),
                value_type: type_from(&c["type"])?,
            })
        })
        .collect::<Decoded<_>>()?;
    let rows = array(&json["rows"])?
        .iter()
        .map(|row| array(row)?.iter().map(value_from_json).collect())
        .collect::<Decoded<_>>()?;
    Ok(ResultSet {
        columns,
        rows,
        truncated: json["truncated"].as_bool().unwrap_or(false),
        spooled_rows: json["spooled_rows"].as_u64().unwrap_or(0),
    })
}

fn array(json: &Json) -> Decoded<&Vec<Json>> {
    json.as_array()
        .ok_or_else(|| "expected an array".to_string())
}

pub fn call_to_json(call: &ProcedureCall) -> Json {
    json!({
        "procedure": call.display_name,
        "returns": type_name(call.returns),
        "overload": call.overload,
        "params": call.params.iter().map(|p| json!({
            "name": p.name.to_string(),
            "direction": match p.direction {
                Direction::In => "in",
                Direction::Out => "out",
                Direction::InOut => "inout",
            },
            "type": type_name(p.value_type),
            "value": p.value.as_ref().map(value_to_json),
            "size": p.size,
        })).collect::<Vec<_>>(),
    })
}

pub fn call_from_json(json: &Json) -> Decoded<ProcedureCall> {
    let display_name = json["procedure"]
        .as_str()
        .ok_or("the call has no procedure")?
        .to_string();
    let params = array(&json["params"])?
        .iter()
        .map(|p| {
            Ok(Param {
                name: Identifier::parse(p["name"].as_str().unwrap_or_default(), "parameter name")
                    .map_err(|e| e.to_string())?,
                direction: match p["direction"].as_str() {
                    Some("out") => Direction::Out,
                    Some("inout") => Direction::InOut,
                    _ => Direction::In,
                },
                value_type: type_from(&p["type"])?,
                value: match &p["value"] {
                    Json::Null => None,
                    value => Some(value_from_json(value)?),
                },
                size: p["size"].as_u64().map(|s| s as u32),
            })
        })
        .collect::<Decoded<_>>()?;
    Ok(ProcedureCall {
        name: ProcedureName::parse(&display_name).map_err(|e| e.to_string())?,
        display_name,
        params,
        returns: type_from(&json["returns"])?,
        overload: json["overload"].as_str().map(String::from),
    })
}

pub fn outputs_to_json(outputs: &Outputs) -> Json {
    let values: Map<String, Json> = outputs
        .values
        .iter()
        .map(|(name, value)| (name.clone(), value_to_json(value)))
        .collect();
    json!({
        "values": values,
        "return_value": outputs.return_value.as_ref().map(value_to_json),
        "implicit_results": outputs.implicit_results.iter().map(result_set_to_json).collect::<Vec<_>>(),
    })
}

pub fn outputs_from_json(json: &Json) -> Decoded<Outputs> {
    let values = json["values"]
        .as_object()
        .ok_or("outputs have no values")?
        .iter()
        .map(|(name, value)| Ok((name.clone(), value_from_json(value)?)))
        .collect::<Decoded<_>>()?;
    Ok(Outputs {
        values,
        return_value: match &json["return_value"] {
            Json::Null => None,
            value => Some(value_from_json(value)?),
        },
        implicit_results: array(&json["implicit_results"])?
            .iter()
            .map(result_set_from_json)
            .collect::<Decoded<_>>()?,
    })
}

pub fn messages_to_json(messages: &MessageLog) -> Json {
    json!({ "lines": messages.lines, "dropped": messages.dropped })
}

pub fn messages_from_json(json: &Json) -> Decoded<MessageLog> {
    Ok(MessageLog {
        lines: array(&json["lines"])?
            .iter()
            .map(|l| {
                l.as_str()
                    .map(str::to_string)
                    .ok_or("a message is not text")
            })
            .collect::<std::result::Result<_, _>>()?,
        dropped: json["dropped"].as_u64().unwrap_or(0),
    })
}

/// How a database error's kind is stored.
fn kind_name(kind: DbErrorKind) -> &'static str {
    match kind {
        DbErrorKind::UserRaised => "user_raised",
        DbErrorKind::Conflict => "conflict",
        DbErrorKind::UndefinedObject => "undefined_object",
        DbErrorKind::InvalidValue => "invalid_value",
        DbErrorKind::Cancelled => "cancelled",
        DbErrorKind::TimedOut => "timed_out",
        DbErrorKind::ConnectionLost => "connection_lost",
        DbErrorKind::ResourceExhausted => "resource_exhausted",
        DbErrorKind::PermissionDenied => "permission_denied",
        DbErrorKind::Other => "other",
    }
}

/// Every kind, for reading stored names back.
const KINDS: [DbErrorKind; 10] = [
    DbErrorKind::UserRaised,
    DbErrorKind::Conflict,
    DbErrorKind::UndefinedObject,
    DbErrorKind::InvalidValue,
    DbErrorKind::Cancelled,
    DbErrorKind::TimedOut,
    DbErrorKind::ConnectionLost,
    DbErrorKind::ResourceExhausted,
    DbErrorKind::PermissionDenied,
    DbErrorKind::Other,
];

pub fn error_to_json(error: &Error) -> Json {
    let (variant, message) = match error {
        Error::InvalidArgument(m) => ("invalid_argument", m),
        Error::ProcedureNotFound(m) => ("procedure_not_found", m),
        Error::JobNotFound(m) => ("job_not_found", m),
        Error::ScheduleNotFound(m) => ("schedule_not_found", m),
        Error::WrongJobState(m) => ("wrong_job_state", m),
        Error::AlreadyExists(m) => ("already_exists", m),
        Error::NotAllowed(m) => ("not_allowed", m),
        Error::Unauthenticated(m) => ("unauthenticated", m),
        Error::Exhausted(m) => ("exhausted", m),
        Error::DeadlineExceeded(m) => ("deadline_exceeded", m),
        Error::Cancelled(m) => ("cancelled", m),
        Error::Terminated { after } => {
            return json!({ "terminated": { "after_ms": after.as_millis() as u64 } });
        }
        Error::Unavailable(m) => ("unavailable", m),
        Error::Interrupted(m) => ("interrupted", m),
        Error::Expired(m) => ("expired", m),
        Error::Unimplemented(m) => ("unimplemented", m),
        Error::ResultNotFound(m) => ("result_not_found", m),
        Error::OutOfRange(m) => ("out_of_range", m),
        Error::Internal(m) => ("internal", m),
        Error::Database(db) => {
            let kind = kind_name(db.kind);
            return json!({ "database": { "kind": kind, "code": db.code, "message": db.message } });
        }
    };
    json!({ variant: message })
}

pub fn error_from_json(json: &Json) -> Decoded<Error> {
    let object = json.as_object().ok_or("an error is not an object")?;
    let (variant, inner) = object.iter().next().ok_or("an empty error")?;
    let message = || inner.as_str().unwrap_or_default().to_string();
    Ok(match variant.as_str() {
        "invalid_argument" => Error::InvalidArgument(message()),
        "procedure_not_found" => Error::ProcedureNotFound(message()),
        "job_not_found" => Error::JobNotFound(message()),
        "schedule_not_found" => Error::ScheduleNotFound(message()),
        "wrong_job_state" => Error::WrongJobState(message()),
        "already_exists" => Error::AlreadyExists(message()),
        "not_allowed" => Error::NotAllowed(message()),
        "unauthenticated" => Error::Unauthenticated(message()),
        "exhausted" => Error::Exhausted(message()),
        "deadline_exceeded" => Error::DeadlineExceeded(message()),
        "expired" => Error::Expired(message()),
        "cancelled" => Error::Cancelled(message()),
        "terminated" => Error::Terminated {
            after: std::time::Duration::from_millis(
                inner["after_ms"]
                    .as_u64()
                    .ok_or("a termination without after_ms")?,
            ),
        },
        "unavailable" => Error::Unavailable(message()),
        "interrupted" => Error::Interrupted(message()),
        "unimplemented" => Error::Unimplemented(message()),
        "result_not_found" => Error::ResultNotFound(message()),
        "out_of_range" => Error::OutOfRange(message()),
        "internal" => Error::Internal(message()),
        "database" => {
            let stored = inner["kind"]
                .as_str()
                .ok_or("a database error without a kind")?;
            Error::Database(DbError {
                // An unknown kind is an error, not "other": it would change
                // the job's gRPC code without a word.
                kind: KINDS
                    .into_iter()
                    .find(|k| kind_name(*k) == stored)
                    .ok_or_else(|| format!("unknown database error kind {stored}"))?,
                code: inner["code"].as_str().unwrap_or_default().to_string(),
                message: inner["message"].as_str().unwrap_or_default().to_string(),
            })
        }
        other => return Err(format!("unknown error kind {other}")),
    })
}

/// A retry policy, with its durations in milliseconds.
pub fn retry_to_json(policy: &RetryPolicy) -> Json {
    json!({
        "max_attempts": policy.max_attempts,
        "initial_backoff_ms": policy.initial_backoff.as_millis() as u64,
        "max_backoff_ms": policy.max_backoff.as_millis() as u64,
        "multiplier": policy.multiplier,
    })
}

pub fn retry_from_json(json: &Json) -> Decoded<RetryPolicy> {
    let number = |key: &str| {
        json[key]
            .as_u64()
            .ok_or(format!("a retry policy without {key}"))
    };
    Ok(RetryPolicy {
        max_attempts: number("max_attempts")? as u32,
        initial_backoff: Duration::from_millis(number("initial_backoff_ms")?),
        max_backoff: Duration::from_millis(number("max_backoff_ms")?),
        multiplier: json["multiplier"]
            .as_f64()
            .ok_or("a retry policy without multiplier")?,
    })
}

/// The errors of a job's failed attempts, oldest first.
pub fn attempt_errors_to_json(retries: &Retries) -> Json {
    let errors: Vec<Json> = retries
        .errors
        .iter()
        .map(|e| {
            let time = chrono::DateTime::<chrono::Utc>::from(e.time);
            json!({
                "time": time.to_rfc3339_opts(SecondsFormat::Nanos, true),
                "error": error_to_json(&e.error),
            })
        })
        .collect();
    Json::Array(errors)
}

pub fn attempt_errors_from_json(json: &Json) -> Decoded<VecDeque<AttemptError>> {
    array(json)?
        .iter()
        .map(|e| {
            let time = e["time"]
                .as_str()
                .ok_or("an attempt error without a time")?;
            let time = chrono::DateTime::parse_from_rfc3339(time).map_err(|e| e.to_string())?;
            Ok(AttemptError {
                time: SystemTime::from(time),
                error: error_from_json(&e["error"])?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{parse_date, parse_timestamp};
    use crate::jobs::JobState;

    fn values() -> Vec<Value> {
        vec![
            Value::Null,
            Value::String("ñandú \"q\"".into()),
            Value::Integer(i64::MIN),
            Value::Number("-0.000100".into()),
            Value::Float(0.1 + 0.2),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Bool(true),
            Value::Date(parse_date("2024-02-29").unwrap()),
            Value::Timestamp(parse_timestamp("2024-05-01T10:30:00.123456789Z").unwrap()),
            Value::Bytes(vec![0, 1, 254, 255]),
            Value::Json("{\"a\": [1, 2]}".into()),
            Value::Rows(ResultSet {
                columns: vec![Column {
                    name: "n".into(),
                    value_type: Some(ValueType::Integer),
                }],
                rows: vec![vec![Value::Integer(1)], vec![Value::Null]],
                truncated: true,
                spooled_rows: 3,
            }),
        ]
    }

    #[test]
    fn values_round_trip_exactly() {
        for value in values() {
            let back = value_from_json(&value_to_json(&value)).unwrap();
            match (&value, &back) {
                (Value::Float(a), Value::Float(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(back, value),
            }
        }
    }

    #[test]
    fn calls_outputs_and_errors_round_trip() {
        let call = ProcedureCall {
            name: ProcedureName::parse(r#"pkg."Mixed".p"#).unwrap(),
            display_name: r#"pkg."Mixed".p"#.into(),
            params: vec![
                Param {
                    name: Identifier::parse(r#""Quoted Name""#, "parameter name").unwrap(),
                    direction: Direction::InOut,
                    value_type: Some(ValueType::Number),
                    value: Some(Value::Number("1.50".into())),
                    size: Some(200),
                },
                Param {
                    name: Identifier::parse("total", "parameter name").unwrap(),
                    direction: Direction::Out,
                    value_type: None,
                    value: None,
                    size: None,
                },
            ],
            returns: Some(ValueType::Cursor),
            overload: Some("public.p(integer)".into()),
        };
        assert_eq!(call_from_json(&call_to_json(&call)).unwrap(), call);

        let mut outputs = Outputs::default();
        outputs.values.insert("a".into(), Value::Bytes(vec![9]));
        outputs.return_value = Some(Value::Integer(3));
        outputs.implicit_results.push(ResultSet::default());
        assert_eq!(
            outputs_from_json(&outputs_to_json(&outputs)).unwrap(),
            outputs
        );

        for error in [
            Error::Cancelled("stopped".into()),
            Error::Terminated {
                after: std::time::Duration::from_secs(10),
            },
            Error::Interrupted("instance a died".into()),
            Error::Database(DbError {
                kind: DbErrorKind::UserRaised,
                code: "P0001".into(),
                message: "lote inválido".into(),
            }),
        ] {
            assert_eq!(error_from_json(&error_to_json(&error)).unwrap(), error);
        }

        let mut log = MessageLog::default();
        log.push("line".into(), 5);
        assert_eq!(messages_from_json(&messages_to_json(&log)).unwrap(), log);
    }

    #[test]
    fn every_database_error_kind_round_trips_and_unknown_ones_are_refused() {
        for kind in KINDS {
            let error = Error::Database(DbError {
                kind,
                code: "X".into(),
                message: "m".into(),
            });
            assert_eq!(error_from_json(&error_to_json(&error)).unwrap(), error);
        }
        let unknown = json!({"database": {"kind": "novel", "code": "", "message": ""}});
        assert!(error_from_json(&unknown).is_err());
        for state in ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"] {
            assert_eq!(JobState::parse(state).unwrap().name(), state);
        }
        assert_eq!(JobState::parse("pending"), None);
    }

    #[test]
    fn corrupt_json_is_an_error_not_a_panic() {
        for bad in [
            json!(1),
            json!({}),
            json!({"float": "x"}),
            json!({"bytes": "zz"}),
            json!({"what": 1}),
        ] {
            assert!(value_from_json(&bad).is_err(), "{bad}");
        }
    }
}
