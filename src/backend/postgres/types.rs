//! ValueType ⇄ PostgreSQL types, both ways and exactly.
//!
//! Values go in as text in the parameter's own type, so the server parses
//! them with its input functions: numeric stays exact decimal text (NaN and
//! the infinities included), floats use their shortest round-trip form,
//! timestamps carry their offset and microseconds, dates and timestamps may
//! be `infinity`, intervals are ISO 8601 durations, arrays and composites
//! JSON (turned into literals by `json`). Before that, each value is
//! checked against the declared type here, so that a value that does not
//! fit is refused naming its parameter instead of surfacing as a cast error.
//!
//! Values come back in PostgreSQL's binary format and are decoded per type;
//! `numeric` is decoded by hand (base-10000 digits) because no float or
//! 128-bit decimal holds every numeric exactly. A type without a decoder
//! here is returned in its text form, which the server renders (`exec`).

use std::fmt::Write;

use chrono::{Datelike, NaiveDate, SecondsFormat, TimeDelta};
use tokio_postgres::types::{FromSql, Kind, Type};

use super::catalog::PgType;
use super::json::{self, Unreadable};
use crate::call::{Value, ValueType};

/// The ValueType closest to a catalog type.
pub fn value_type_of(pg_type: &PgType) -> Option<ValueType> {
    if pg_type.is_structured() {
        return Some(ValueType::Json);
    }
    value_type_of_name(&pg_type.base)
}

/// A type as SQL spells it, for messages: `integer[]`, not `_int4`.
pub fn sql_name(ty: &Type) -> String {
    if let Kind::Array(element) = ty.kind() {
        return format!("{}[]", sql_name(element));
    }
    match ty.name() {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        "timetz" => "time with time zone",
        "time" => "time without time zone",
        other => other,
    }
    .to_string()
}

fn value_type_of_name(typname: &str) -> Option<ValueType> {
    Some(match typname {
        "text" | "varchar" | "bpchar" | "name" | "char" | "uuid" | "xml" | "citext"
        | "interval" | "time" | "timetz" => ValueType::String,
        "int2" | "int4" | "int8" | "oid" => ValueType::Integer,
        "numeric" => ValueType::Number,
        "float4" | "float8" => ValueType::Float,
        "bool" => ValueType::Boolean,
        "date" => ValueType::Date,
        "timestamp" | "timestamptz" => ValueType::Timestamp,
        "bytea" => ValueType::Bytes,
        "json" | "jsonb" => ValueType::Json,
        "refcursor" | "record" => ValueType::Cursor,
        _ => return None,
    })
}

/// The ValueType of a result column.
pub fn value_type_of_column(ty: &Type) -> Option<ValueType> {
    match ty.kind() {
        Kind::Domain(base) => value_type_of_column(base),
        Kind::Enum(_) => Some(ValueType::String),
        Kind::Array(_) | Kind::Composite(_) => Some(ValueType::Json),
        _ => value_type_of_name(ty.name()),
    }
}

/// Checks `value` against the declared type and renders the text that the
/// server's input function will parse. `None` is SQL NULL.
pub fn encode(value: &Value, pg_type: &PgType) -> Result<Option<String>, String> {
    let typname = pg_type.base.as_str();
    if let Value::Rows(_) = value {
        return Err("a cursor cannot be passed into a procedure".into());
    }
    if let Some(special) = special_text(value, typname) {
        return Ok(Some(special));
    }
    let value = match value_type_of(pg_type) {
        // Unmapped types (enums, interval, ranges…) take any scalar as text
        // and let the server parse it; arrays and composites take JSON (or
        // their own literal) as text.
        None | Some(ValueType::Cursor) => value.clone(),
        Some(ValueType::Json) if pg_type.is_structured() => match value {
            Value::String(_) | Value::Json(_) | Value::Null => value.clone(),
            other => {
                return Err(format!(
                    "{} takes a JSON {} (json_value), not a {} value",
                    pg_type.sql,
                    if pg_type.category == 'A' {
                        "array"
                    } else {
                        "object"
                    },
                    other.natural_type().map_or("null", ValueType::name)
                ));
            }
        },
        Some(family) => value
            .clone()
            .coerce(family)
            .map_err(|why| format!("{why} (declared {})", pg_type.sql))?,
    };
    if let Value::Integer(i) = value {
        let fits = match typname {
            "int2" => i16::try_from(i).is_ok(),
            "int4" => i32::try_from(i).is_ok(),
            "oid" => u32::try_from(i).is_ok(),
            _ => true,
        };
        if !fits {
            return Err(format!("{i} is out of range for {}", pg_type.sql));
        }
    }
    Ok(to_text(&value))
}

/// The special values a type's input function takes that no ValueType
/// holds: `infinity` dates and timestamps, numeric NaN and infinities.
fn special_text(value: &Value, typname: &str) -> Option<String> {
    let text = match value {
        Value::String(s) | Value::Number(s) => s.trim(),
        Value::Float(f) if typname == "numeric" && !f.is_finite() => return Some(float_text(*f)),
        _ => return None,
    };
    let datetime = matches!(typname, "date" | "timestamp" | "timestamptz");
    if datetime && is_far_datetime(text) {
        // What procgate returns for years outside 1–9999 goes back in as is.
        return Some(text.to_string());
    }
    let specials: &[&str] = match typname {
        "date" | "timestamp" | "timestamptz" => &["infinity", "-infinity"],
        "numeric" | "float4" | "float8" => &["NaN", "Infinity", "-Infinity"],
        _ => return None,
    };
    specials
        .iter()
        .find(|s| s.eq_ignore_ascii_case(text))
        .map(|s| s.to_string())
}

/// A date or timestamp outside years 1–9999 in PostgreSQL's own text:
/// `10213-09-21`, `0044-03-15 BC`.
fn is_far_datetime(text: &str) -> bool {
    let year_digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let bc = text
        .get(text.len().saturating_sub(3)..)
        .is_some_and(|era| era.eq_ignore_ascii_case(" BC"));
    (year_digits >= 5 && text.as_bytes().get(year_digits) == Some(&b'-'))
        || (bc && year_digits == 4)
}

/// The names PostgreSQL gives a float's special values, or its shortest
/// round-trip text.
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:?}")
    }
}

fn to_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null | Value::Rows(_) => return None,
        Value::String(s) | Value::Number(s) | Value::Json(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => float_text(*f),
        Value::Bool(b) => b.to_string(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Timestamp(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        Value::Bytes(b) => {
            let mut hex = String::with_capacity(2 + 2 * b.len());
            hex.push_str("\\x");
            for byte in b {
                write!(hex, "{byte:02x}").expect("write to String");
            }
            hex
        }
    })
}

/// Decodes one binary-format value of type `ty`. A `refcursor` decodes to
/// its cursor name (a string); the caller fetches its rows. Arrays and
/// composites become JSON.
pub fn decode(ty: &Type, raw: &[u8]) -> Result<Value, Unreadable> {
    match ty.kind() {
        Kind::Array(_) | Kind::Composite(_) => json::render(ty, raw).map(Value::Json),
        Kind::Domain(base) => decode(base, raw),
        Kind::Enum(_) => Ok(Value::String(utf8(raw)?)),
        _ => decode_scalar(ty, raw),
    }
}

/// Whether [`decode_scalar`] knows `ty`.
pub fn has_scalar_decoder(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::NUMERIC
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::XML
            | Type::REFCURSOR
            | Type::CHAR
            | Type::DATE
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::TIME
            | Type::INTERVAL
            | Type::BYTEA
            | Type::JSON
            | Type::JSONB
            | Type::UUID
            | Type::VOID
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

/// Decodes a value of a scalar (not array or composite) type.
pub fn decode_scalar(ty: &Type, raw: &[u8]) -> Result<Value, Unreadable> {
    fn get<'a, T: FromSql<'a>>(ty: &Type, raw: &'a [u8]) -> Result<T, Unreadable> {
        T::from_sql(ty, raw)
            .map_err(|e| Unreadable::Malformed(format!("cannot decode {}: {e}", ty.name())))
    }
    let value = match *ty {
        Type::BOOL => Value::Bool(get(ty, raw)?),
        Type::INT2 => Value::Integer(get::<i16>(ty, raw)?.into()),
        Type::INT4 => Value::Integer(get::<i32>(ty, raw)?.into()),
        Type::INT8 => Value::Integer(get(ty, raw)?),
        Type::OID => Value::Integer(get::<u32>(ty, raw)?.into()),
        Type::FLOAT4 => Value::Float(get::<f32>(ty, raw)?.into()),
        Type::FLOAT8 => Value::Float(get(ty, raw)?),
        Type::NUMERIC => Value::Number(numeric_text(raw).map_err(Unreadable::Malformed)?),
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::XML
        | Type::REFCURSOR => Value::String(utf8(raw)?),
        Type::CHAR => Value::String(char::from(get::<i8>(ty, raw)? as u8).to_string()),
        Type::DATE => date(i32::from_be_bytes(fixed(raw)?)),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => timestamp(i64::from_be_bytes(fixed(raw)?)),
        Type::TIME => {
            let micros = i64::from_be_bytes(fixed(raw)?);
            Value::String(clock(micros))
        }
        Type::INTERVAL => Value::String(interval_text(raw)?),
        Type::BYTEA => Value::Bytes(raw.to_vec()),
        Type::JSON => Value::Json(utf8(raw)?),
        // jsonb's binary format is a version byte, then the text.
        Type::JSONB => Value::Json(utf8(raw.get(1..).unwrap_or_default())?),
        Type::UUID => Value::String(uuid_text(raw).map_err(Unreadable::Malformed)?),
        Type::VOID => Value::Null,
        _ if matches!(ty.kind(), Kind::Enum(_)) || ty.name() == "citext" => {
            Value::String(utf8(raw)?)
        }
        _ => return Err(Unreadable::Type(ty.name().to_string())),
    };
    Ok(value)
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], Unreadable> {
    raw.try_into()
        .map_err(|_| Unreadable::Malformed(format!("expected {N} bytes, got {}", raw.len())))
}

/// PostgreSQL's epoch for dates and timestamps.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a real date")
}

/// Days since 2000-01-01; the infinities and years outside 1–9999 (which
/// protobuf and ISO dates cannot hold) as text.
fn date(days: i32) -> Value {
    match days {
        i32::MAX => Value::String("infinity".into()),
        i32::MIN => Value::String("-infinity".into()),
        _ => match epoch().checked_add_signed(TimeDelta::days(days.into())) {
            Some(d) if (1..=9999).contains(&d.year()) => Value::Date(d),
            _ => Value::String(far_date(days.into(), "")),
        },
    }
}

/// A day outside years 1–9999 (counted from 2000-01-01) the way
/// PostgreSQL writes it: `10213-09-21`, `0044-03-15 BC`, with `time`
/// before the era (`0044-03-15 12:00:00 BC`). Computed on the calendar
/// itself, since PostgreSQL's years (to 5874897) outrun chrono's.
fn far_date(days: i64, time: &str) -> String {
    let (year, month, day) = civil_from_days(days + 10_957); // 1970-01-01 → 2000-01-01
    let (year, era) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    format!("{year:04}-{month:02}-{day:02}{time}{era}")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`); year 0 is 1 BC.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Microseconds since 2000-01-01 00:00 (UTC for timestamptz).
fn timestamp(micros: i64) -> Value {
    match micros {
        i64::MAX => Value::String("infinity".into()),
        i64::MIN => Value::String("-infinity".into()),
        _ => {
            let at = epoch()
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .checked_add_signed(TimeDelta::microseconds(micros));
            match at {
                Some(t) if (1..=9999).contains(&t.year()) => Value::Timestamp(t),
                _ => {
                    let (days, of_day) = (
                        micros.div_euclid(86_400_000_000),
                        micros.rem_euclid(86_400_000_000),
                    );
                    Value::String(far_date(days, &format!(" {}", clock(of_day))))
                }
            }
        }
    }
}

/// `HH:MM:SS[.ffffff]` of microseconds since midnight.
fn clock(micros: i64) -> String {
    let (h, m) = (micros / 3_600_000_000, micros / 60_000_000 % 60);
    let (s, us) = (micros / 1_000_000 % 60, micros % 1_000_000);
    let mut text = format!("{h:02}:{m:02}:{s:02}");
    if us != 0 {
        let fraction = format!("{us:06}");
        write!(text, ".{}", fraction.trim_end_matches('0')).expect("write to String");
    }
    text
}

/// An interval (microseconds, days, months) as an ISO 8601 duration, the
/// way PostgreSQL's `iso_8601` IntervalStyle writes it: `P1Y2M3DT4H5M6.5S`,
/// each part with its own sign, `PT0S` for zero.
pub fn interval_text(raw: &[u8]) -> Result<String, Unreadable> {
    let raw: [u8; 16] = fixed(raw)?;
    let micros = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
    let days = i32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
    let months = i32::from_be_bytes(raw[12..].try_into().expect("4 bytes"));
    if micros == 0 && days == 0 && months == 0 {
        return Ok("PT0S".into());
    }
    let mut text = String::from("P");
    for (amount, unit) in [(months / 12, 'Y'), (months % 12, 'M'), (days, 'D')] {
        if amount != 0 {
            write!(text, "{amount}{unit}").expect("write to String");
        }
    }
    if micros != 0 {
        text.push('T');
        let (hours, minutes) = (micros / 3_600_000_000, micros / 60_000_000 % 60);
        let (seconds, fraction) = (micros / 1_000_000 % 60, micros % 1_000_000);
        for (amount, unit) in [(hours, 'H'), (minutes, 'M')] {
            if amount != 0 {
                write!(text, "{amount}{unit}").expect("write to String");
            }
        }
        if seconds != 0 || fraction != 0 {
            let sign = if seconds < 0 || fraction < 0 { "-" } else { "" };
            write!(text, "{sign}{}", seconds.abs()).expect("write to String");
            if fraction != 0 {
                let digits = format!("{:06}", fraction.abs());
                write!(text, ".{}", digits.trim_end_matches('0')).expect("write to String");
            }
            text.push('S');
        }
    }
    Ok(text)
}

fn utf8(raw: &[u8]) -> Result<String, Unreadable> {
    String::from_utf8(raw.to_vec())
        .map_err(|_| Unreadable::Malformed("the database sent invalid UTF-8".into()))
}

fn uuid_text(raw: &[u8]) -> Result<String, String> {
    if raw.len() != 16 {
        return Err("a uuid is 16 bytes".into());
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Renders a binary `numeric` as exact decimal text with its display scale.
///
/// Layout: ndigits i16, weight i16, sign u16, dscale u16, then ndigits
/// base-10000 digits; the first digit is worth 10000^weight.
pub fn numeric_text(raw: &[u8]) -> Result<String, String> {
    let bad = || "malformed numeric value".to_string();
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(bad)
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i64;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<u16>, String>>()?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => return Err(bad()),
    }
    let digit = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit(0).to_string());
        for i in 1..=weight {
            text.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut i = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_decode_exactly() {
        assert_eq!(
            numeric_text(&numeric(2, 0, 0, 2, &[12, 5000])).unwrap(),
            "12.50"
        );
        assert_eq!(
            numeric_text(&numeric(3, 1, 0x4000, 4, &[1, 2345, 6789])).unwrap(),
            "-12345.6789"
        );
        assert_eq!(
            numeric_text(&numeric(1, -1, 0, 5, &[10])).unwrap(),
            "0.00100"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(
            numeric_text(&numeric(1, 2, 0, 0, &[7])).unwrap(),
            "700000000"
        );
        assert_eq!(
            numeric_text(&numeric(2, 1, 0, 0, &[1, 2])).unwrap(),
            "10002"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert_eq!(
            numeric_text(&numeric(0, 0, 0xD000, 0, &[])).unwrap(),
            "Infinity"
        );
        assert!(numeric_text(&[0, 1]).is_err());
    }

    fn pg(base: &str) -> PgType {
        let category = if base.starts_with('_') { 'A' } else { 'S' };
        PgType {
            base: base.into(),
            sql: base.into(),
            category,
        }
    }

    #[test]
    fn values_are_checked_against_declared_types() {
        let text = |v: Value, t: &str| encode(&v, &pg(t)).unwrap();
        assert_eq!(text(Value::Integer(7), "int4").as_deref(), Some("7"));
        assert!(
            encode(&Value::Integer(1 << 40), &pg("int4"))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(encode(&Value::String("abc".into()), &pg("int8")).is_err());
        assert_eq!(
            text(Value::String("12.50".into()), "numeric").as_deref(),
            Some("12.50")
        );
        assert_eq!(
            text(Value::Bytes(vec![0xde, 0xad]), "bytea").as_deref(),
            Some("\\xdead")
        );
        assert_eq!(
            text(Value::Float(f64::INFINITY), "float8").as_deref(),
            Some("Infinity")
        );
        assert_eq!(text(Value::Null, "int4"), None);
        assert!(encode(&Value::Bool(true), &pg("date")).is_err());
        assert_eq!(text(Value::Integer(5), "mood").as_deref(), Some("5"));
    }

    #[test]
    fn special_values_go_in_as_the_server_spells_them() {
        let text = |v: Value, t: &str| encode(&v, &pg(t)).unwrap();
        assert_eq!(
            text(Value::String("Infinity".into()), "date").as_deref(),
            Some("infinity")
        );
        assert_eq!(
            text(Value::String("-infinity".into()), "timestamptz").as_deref(),
            Some("-infinity")
        );
        assert_eq!(
            text(Value::Number("nan".into()), "numeric").as_deref(),
            Some("NaN")
        );
        assert_eq!(
            text(Value::Float(f64::NEG_INFINITY), "numeric").as_deref(),
            Some("-Infinity")
        );
        assert_eq!(
            text(Value::Json("[1,2]".into()), "_int4").as_deref(),
            Some("[1,2]")
        );
        assert_eq!(sql_name(&Type::INT4_ARRAY), "integer[]");
        assert_eq!(sql_name(&Type::TIMESTAMPTZ), "timestamp with time zone");
        assert_eq!(sql_name(&Type::POINT), "point");
        let err = encode(&Value::Integer(1), &pg("_int4")).unwrap_err();
        assert!(err.contains("JSON array"), "{err}");
        assert_eq!(
            text(Value::String("P1DT2H".into()), "interval").as_deref(),
            Some("P1DT2H")
        );
        for far in ["10213-09-21", "0044-03-15 BC", "0038-11-16 04:00:00 BC"] {
            assert_eq!(
                text(Value::String(far.into()), "date").as_deref(),
                Some(far)
            );
        }
        assert!(encode(&Value::String("12345".into()), &pg("date")).is_err());
    }

    #[test]
    fn dates_timestamps_and_intervals_decode_with_their_special_values() {
        assert_eq!(date(i32::MAX), Value::String("infinity".into()));
        assert_eq!(date(i32::MIN), Value::String("-infinity".into()));
        assert_eq!(
            date(-1),
            Value::Date(NaiveDate::from_ymd_opt(1999, 12, 31).unwrap())
        );
        assert_eq!(date(3_000_000), Value::String("10213-09-21".into()));
        assert_eq!(date(-750_000), Value::String("0055-07-28 BC".into()));
        // PostgreSQL's last date, far past chrono's.
        assert_eq!(date(2_145_031_948), Value::String("5874897-12-31".into()));
        assert_eq!(
            timestamp(9_223_371_331_199_999_999),
            Value::String("294276-12-31 23:59:59.999999".into())
        );
        assert_eq!(
            timestamp(-64_253_937_600_000_000),
            Value::String("0038-11-16 04:00:00 BC".into())
        );
        assert_eq!(timestamp(i64::MIN), Value::String("-infinity".into()));
        assert!(matches!(timestamp(1_500_000), Value::Timestamp(_)));
        let interval = |micros: i64, days: i32, months: i32| {
            let mut raw = micros.to_be_bytes().to_vec();
            raw.extend_from_slice(&days.to_be_bytes());
            raw.extend_from_slice(&months.to_be_bytes());
            interval_text(&raw).unwrap()
        };
        assert_eq!(interval(7_383_500_000, 1, 0), "P1DT2H3M3.5S");
        assert_eq!(interval(0, 0, 0), "PT0S");
        assert_eq!(interval(0, 3, 14), "P1Y2M3D");
        assert_eq!(interval(-1_500_000, -1, 0), "P-1DT-1.5S");
        assert_eq!(interval(3_600_000_000, 0, 0), "PT1H");
        assert_eq!(clock(45_296_250_000), "12:34:56.25");
    }
}
