//! The domain of a procedure call: what to call, with which values, and what
//! came back.
//!
//! These types know nothing of protobuf, tonic or any database driver: the
//! api layer converts requests into them, the backends bind and decode them.
//! Keeping them apart is what lets one call run on PostgreSQL or Oracle and be
//! reported identically through ExecuteSync, a job snapshot or the CLI.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::name::{Identifier, ProcedureName, printable};

/// The value types of the API (`procgate.v1.ValueType` without UNSPECIFIED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    Integer,
    Number,
    Float,
    Boolean,
    Date,
    Timestamp,
    Bytes,
    Clob,
    Json,
    Cursor,
}

impl ValueType {
    pub const ALL: [ValueType; 11] = [
        ValueType::String,
        ValueType::Integer,
        ValueType::Number,
        ValueType::Float,
        ValueType::Boolean,
        ValueType::Date,
        ValueType::Timestamp,
        ValueType::Bytes,
        ValueType::Clob,
        ValueType::Json,
        ValueType::Cursor,
    ];

    /// Lower-case name, as the CLI and error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Number => "number",
            ValueType::Float => "float",
            ValueType::Boolean => "boolean",
            ValueType::Date => "date",
            ValueType::Timestamp => "timestamp",
            ValueType::Bytes => "bytes",
            ValueType::Clob => "clob",
            ValueType::Json => "json",
            ValueType::Cursor => "cursor",
        }
    }

    pub fn from_name(name: &str) -> Option<ValueType> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    In,
    Out,
    InOut,
}

impl Direction {
    pub fn takes_value(self) -> bool {
        matches!(self, Direction::In | Direction::InOut)
    }

    pub fn returns_value(self) -> bool {
        matches!(self, Direction::Out | Direction::InOut)
    }
}

/// A typed value. Exact where the database is exact: NUMBER travels as
/// decimal text, timestamps as instants with sub-second precision, dates as
/// calendar dates.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    String(String),
    Integer(i64),
    /// Validated decimal text (see [`is_decimal`]), or one of the special
    /// values `NaN`, `Infinity`, `-Infinity` (PostgreSQL's numeric has them).
    Number(String),
    Float(f64),
    Bool(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    Bytes(Vec<u8>),
    Json(String),
    Rows(ResultSet),
}

impl Value {
    /// About the bytes it takes on the wire and in memory.
    pub fn approximate_size(&self) -> usize {
        match self {
            Value::String(s) | Value::Number(s) | Value::Json(s) => s.len() + 4,
            Value::Bytes(b) => b.len() + 4,
            Value::Rows(set) => set.approximate_size(),
            Value::Null
            | Value::Integer(_)
            | Value::Float(_)
            | Value::Bool(_)
            | Value::Date(_)
            | Value::Timestamp(_) => 12,
        }
    }

    /// The type this value naturally has (None for NULL).
    pub fn natural_type(&self) -> Option<ValueType> {
        Some(match self {
            Value::Null => return None,
            Value::String(_) => ValueType::String,
            Value::Integer(_) => ValueType::Integer,
            Value::Number(_) => ValueType::Number,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Boolean,
            Value::Date(_) => ValueType::Date,
            Value::Timestamp(_) => ValueType::Timestamp,
            Value::Bytes(_) => ValueType::Bytes,
            Value::Json(_) => ValueType::Json,
            Value::Rows(_) => ValueType::Cursor,
        })
    }

    /// Converts to `target` when that loses nothing; the error says why not.
    /// Used both for typed inputs (a string_value declared INTEGER) and for
    /// outputs the client asked for in a given type.
    pub fn coerce(self, target: ValueType) -> Result<Value, String> {
        use ValueType as T;
        let value = match (self, target) {
            (Value::Null, _) => Value::Null,
            (Value::String(s), T::String | T::Clob) => Value::String(s),
            (Value::String(s), T::Json) | (Value::Json(s), T::Json) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&s)
                    .map_err(|e| format!("{} is not valid JSON ({e})", printable(&s)))?;
                Value::Json(s)
            }
            (Value::String(s), T::Integer) => Value::Integer(
                s.trim()
                    .parse()
                    .map_err(|_| format!("{} is not a 64-bit integer", printable(&s)))?,
            ),
            (Value::String(s), T::Number) | (Value::Number(s), T::Number) => {
                let s = s.trim();
                if let Some(special) = special_number(s) {
                    return Ok(Value::Number(special.into()));
                }
                if !is_decimal(s) {
                    return Err(if decimal_exponent_digits(s).is_some() {
                        format!(
                            "{} is out of range: its exponent has more than {MAX_EXPONENT_DIGITS} \
                             digits, past what a database number holds",
                            printable(s)
                        )
                    } else {
                        format!(
                            "{} is not a decimal number (nor NaN, Infinity or -Infinity)",
                            printable(s)
                        )
                    });
                }
                Value::Number(s.to_string())
            }
            (Value::String(s), T::Float) => Value::Float(
                s.trim()
                    .parse()
                    .map_err(|_| format!("{} is not a floating-point number", printable(&s)))?,
            ),
            (Value::String(s), T::Boolean) => Value::Bool(parse_bool(&s)?),
            (Value::String(s), T::Date) => Value::Date(parse_date(&s)?),
            (Value::String(s), T::Timestamp) => match parse_date(&s) {
                // A bare date is its midnight (Oracle DATE parameters).
                Ok(date) => return Value::Date(date).coerce(T::Timestamp),
                Err(_) => Value::Timestamp(parse_timestamp(&s)?),
            },
            (Value::Integer(i), T::Integer) => Value::Integer(i),
            (Value::Integer(i), T::Number) => Value::Number(i.to_string()),
            (Value::Integer(i), T::Float) => Value::Float(i as f64),
            (Value::Integer(i), T::String | T::Clob) => Value::String(i.to_string()),
            (Value::Number(s), T::Integer) => Value::Integer(integral(&s)?),
            (Value::Number(s), T::Float) => Value::Float(
                s.parse()
                    .map_err(|_| format!("{} is not a number", printable(&s)))?,
            ),
            (Value::Number(s), T::String | T::Clob) => Value::String(s),
            (Value::Float(f), T::Float) => Value::Float(f),
            (Value::Float(f), T::Number) if f.is_finite() => Value::Number(f.to_string()),
            (Value::Float(f), T::Number) if f.is_nan() => Value::Number("NaN".into()),
            (Value::Float(f), T::Number) => {
                Value::Number(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
            }
            (Value::Float(f), T::String | T::Clob) => Value::String(f.to_string()),
            (Value::Bool(b), T::Boolean) => Value::Bool(b),
            (Value::Bool(b), T::String | T::Clob) => Value::String(b.to_string()),
            (Value::Date(d), T::Date) => Value::Date(d),
            (Value::Date(d), T::Timestamp) => {
                Value::Timestamp(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
            }
            (Value::Date(d), T::String | T::Clob) => Value::String(d.to_string()),
            (Value::Timestamp(t), T::Timestamp) => Value::Timestamp(t),
            (Value::Timestamp(t), T::Date) if t.time() == chrono::NaiveTime::MIN => {
                Value::Date(t.date_naive())
            }
            (Value::Timestamp(t), T::String | T::Clob) => Value::String(t.to_rfc3339()),
            (Value::Bytes(b), T::Bytes) => Value::Bytes(b),
            (Value::Json(s), T::String | T::Clob) => Value::String(s),
            (Value::Rows(r), T::Cursor) => Value::Rows(r),
            (value, target) => {
                return Err(format!(
                    "a {} value cannot be used as {}",
                    value.natural_type().map_or("null", ValueType::name),
                    target.name()
                ));
            }
        };
        Ok(value)
    }
}

/// Rows of a cursor or a set-returning function.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// The reader stopped at its row cap, or (a job's result) the rows
    /// past the inline part were spooled.
    pub truncated: bool,
    /// A job's rows kept past its inline part, for ReadJobResult and
    /// Flight: the whole result is `rows` then these.
    pub spooled_rows: u64,
}

impl ResultSet {
    /// About the bytes its inline rows take.
    pub fn approximate_size(&self) -> usize {
        self.rows
            .iter()
            .flatten()
            .map(Value::approximate_size)
            .sum::<usize>()
            + 8
    }

    /// Every row of the result, inline and spooled.
    pub fn total_rows(&self) -> u64 {
        self.rows.len() as u64 + self.spooled_rows
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub value_type: Option<ValueType>,
}

/// One parameter of a call, validated: a well-formed name, a value exactly
/// when the direction takes one, and the value already of the declared type.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Identifier,
    pub direction: Direction,
    pub value_type: Option<ValueType>,
    /// Present for IN and IN OUT, absent for OUT.
    pub value: Option<Value>,
    /// Optional OUT buffer size (Oracle strings and bytes).
    pub size: Option<u32>,
}

/// What to call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcedureCall {
    pub name: ProcedureName,
    /// The name exactly as the client sent it, for display and filters.
    pub display_name: String,
    pub params: Vec<Param>,
    /// Set for a function: the type of its result.
    pub returns: Option<ValueType>,
    /// The overload asked for, by id; None lets the parameters choose.
    pub overload: Option<String>,
}

impl ProcedureCall {
    /// About the bytes its parameters' values take.
    pub fn approximate_size(&self) -> usize {
        self.params
            .iter()
            .filter_map(|p| p.value.as_ref())
            .map(Value::approximate_size)
            .sum()
    }

    pub fn param(&self, folded_name: &str, fold: fn(&Identifier) -> String) -> Option<&Param> {
        self.params.iter().find(|p| fold(&p.name) == folded_name)
    }
}

/// What came back from a call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outputs {
    /// OUT and IN OUT values by parameter name.
    pub values: BTreeMap<String, Value>,
    pub return_value: Option<Value>,
    /// Result sets returned with DBMS_SQL.RETURN_RESULT (Oracle).
    pub implicit_results: Vec<ResultSet>,
}

impl Outputs {
    /// About the bytes its values take.
    pub fn approximate_size(&self) -> usize {
        let values: usize = self
            .values
            .values()
            .chain(&self.return_value)
            .map(Value::approximate_size)
            .sum();
        values
            + self
                .implicit_results
                .iter()
                .map(ResultSet::approximate_size)
                .sum::<usize>()
    }

    /// Every result set by output name ("" for a function's result), the
    /// names ReadJobResult and Flight tickets use.
    pub fn result_sets(&self) -> impl Iterator<Item = (&str, &ResultSet)> {
        let named = self
            .values
            .iter()
            .map(|(name, value)| (name.as_str(), value));
        named
            .chain(self.return_value.iter().map(|value| ("", value)))
            .filter_map(|(name, value)| match value {
                Value::Rows(set) => Some((name, set)),
                _ => None,
            })
    }

    /// One line per result set cut at the row cap, saying how to get every
    /// row: `cur truncated at 10000 rows (--max-cursor-rows): use
    /// ExecuteStream, or SubmitAsync and ReadJobResult or Flight`; for a
    /// job whose rows past the inline part were spooled, how to read them.
    pub fn truncation_notes(&self) -> Vec<String> {
        let named = self
            .result_sets()
            .map(|(name, set)| (if name.is_empty() { "the result" } else { name }, set))
            .chain(
                self.implicit_results
                    .iter()
                    .map(|set| ("an implicit result", set)),
            );
        let mut notes: Vec<String> = named
            .filter(|(_, set)| set.truncated)
            .map(|(name, set)| {
                let inline = set.rows.len();
                if set.spooled_rows > 0 {
                    format!(
                        "{name}: the first {inline} of its {} rows are inline \
                         (--max-cursor-rows, --max-inline-result-bytes): read every row with \
                         ReadJobResult or Flight",
                        set.total_rows()
                    )
                } else {
                    format!(
                        "{name} truncated at {inline} rows (--max-cursor-rows): use \
                         ExecuteStream, or SubmitAsync and ReadJobResult or Flight"
                    )
                }
            })
            .collect();
        notes.dedup();
        notes
    }
}

/// `NaN`, `Infinity` or `-Infinity` (any case) in their canonical spelling.
pub fn special_number(s: &str) -> Option<&'static str> {
    ["NaN", "Infinity", "-Infinity"]
        .into_iter()
        .find(|special| special.eq_ignore_ascii_case(s))
}

/// `[+-]digits[.digits][e[+-]digits]` (or `.digits`): the decimal text that
/// NUMBER values travel as.
pub fn is_decimal(s: &str) -> bool {
    decimal_exponent_digits(s).is_some_and(|digits| digits <= MAX_EXPONENT_DIGITS)
}

/// The most digits of a decimal's exponent: 1e9999 already passes what
/// PostgreSQL's numeric and Oracle's NUMBER hold.
const MAX_EXPONENT_DIGITS: usize = 4;

/// When `s` is decimal text, how many digits its exponent has (0 without).
fn decimal_exponent_digits(s: &str) -> Option<usize> {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = (!int.is_empty() || !frac.is_empty()) && digits(int) && digits(frac);
    let exponent_digits = match exponent {
        None => Some(0),
        Some(e) => {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            (!e.is_empty() && digits(e)).then_some(e.len())
        }
    };
    exponent_digits.filter(|_| mantissa_ok)
}

fn integral(s: &str) -> Result<i64, String> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.bytes().all(|b| b == b'0') {
        return Err(format!("{} has a fraction; not an integer", printable(s)));
    }
    int.parse()
        .map_err(|_| format!("{} does not fit a 64-bit integer", printable(s)))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "on" => Ok(true),
        "false" | "f" | "no" | "n" | "0" | "off" => Ok(false),
        _ => Err(format!("{} is not a boolean", printable(s))),
    }
}

/// `YYYY-MM-DD`, a real calendar day.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("{} is not a date YYYY-MM-DD ({e})", printable(s)))?;
    check_year(date.year())?;
    Ok(date)
}

/// Years 1–9999: what protobuf Timestamps, Oracle and ISO dates share.
pub fn check_year(year: i32) -> Result<(), String> {
    if (1..=9999).contains(&year) {
        Ok(())
    } else {
        Err(format!("year {year} is out of range (0001 to 9999)"))
    }
}

/// RFC 3339 (`2024-05-01T10:30:00.25Z`, `…+02:00`).
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    let timestamp = DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{} is not an RFC 3339 timestamp like 2024-05-01T10:30:00Z ({e})",
                printable(s)
            )
        })?;
    check_year(timestamp.year())?;
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_exponent_is_out_of_range_not_malformed() {
        let err = Value::String("1e999999".into())
            .coerce(ValueType::Number)
            .unwrap_err();
        assert!(err.contains("\"1e999999\" is out of range"), "{err}");
        let err = Value::String("1e".into())
            .coerce(ValueType::Number)
            .unwrap_err();
        assert!(err.contains("is not a decimal number"), "{err}");
    }

    #[test]
    fn decimal_text() {
        for ok in ["0", "12.50", "-3", "+4.", ".5", "1e10", "1.5E-3"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in [
            "", ".", "-", "1.2.3", "12a", "1e", "NaN", "inf", "1e99999", " 1",
        ] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn strings_coerce_to_declared_types() {
        let s = |t: &str| Value::String(t.into());
        assert_eq!(s("42").coerce(ValueType::Integer), Ok(Value::Integer(42)));
        assert_eq!(
            s("12.50").coerce(ValueType::Number),
            Ok(Value::Number("12.50".into()))
        );
        assert_eq!(s("yes").coerce(ValueType::Boolean), Ok(Value::Bool(true)));
        assert_eq!(
            s("2024-02-29").coerce(ValueType::Date),
            Ok(Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()))
        );
        assert!(s("2023-02-29").coerce(ValueType::Date).is_err());
        assert!(s("abc").coerce(ValueType::Integer).is_err());
        assert!(
            s("99999999999999999999")
                .coerce(ValueType::Integer)
                .is_err()
        );
        assert!(s("{bad json").coerce(ValueType::Json).is_err());
        assert!(
            s("2024-05-01T10:30:00+02:00")
                .coerce(ValueType::Timestamp)
                .is_ok()
        );
    }

    #[test]
    fn numbers_take_their_special_values() {
        let n = |t: &str| Value::Number(t.into()).coerce(ValueType::Number);
        assert_eq!(n("nan"), Ok(Value::Number("NaN".into())));
        assert_eq!(n(" -INFINITY"), Ok(Value::Number("-Infinity".into())));
        assert!(n("infinite").is_err());
        assert_eq!(
            Value::Float(f64::NAN).coerce(ValueType::Number),
            Ok(Value::Number("NaN".into()))
        );
        assert!(
            Value::Number("NaN".into())
                .coerce(ValueType::Integer)
                .is_err()
        );
    }

    #[test]
    fn numbers_keep_exactness() {
        let n = Value::Number("12.000".into());
        assert_eq!(n.clone().coerce(ValueType::Integer), Ok(Value::Integer(12)));
        assert!(
            Value::Number("12.5".into())
                .coerce(ValueType::Integer)
                .is_err()
        );
        assert!(Value::Bool(true).coerce(ValueType::Date).is_err());
        assert_eq!(
            Value::Integer(7).coerce(ValueType::Number),
            Ok(Value::Number("7".into()))
        );
    }
}
