//! ValueType ⇄ Oracle types, both ways.
//!
//! Every bind gets an explicit Oracle type, chosen from the declared type in
//! ALL_ARGUMENTS (so a VARCHAR2 OUT gets a 32767-byte buffer, a NUMBER is
//! exchanged as exact decimal text, a DATE keeps its time). Values are
//! decoded by the type they were bound or fetched with, through one
//! [`Source`] trait that serves both OUT binds and cursor columns.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use oracle::sql_type::{FromSql, OracleType, RefCursor, ToSql};
use oracle::{Connection, SqlValue};

use crate::backend::RowSink;
use crate::call::{Column, ResultSet, Value, ValueType};

/// Default OUT buffer of VARCHAR2 and RAW: the PL/SQL maximum.
pub const DEFAULT_BUFFER: u32 = 32_767;

/// How one declared Oracle type is bound, and what it naturally returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub oracle_type: OracleType,
    pub natural: ValueType,
}

/// The binding of an ALL_ARGUMENTS.DATA_TYPE; `size` overrides the OUT buffer
/// of strings and raws. None for types procgate cannot bind (objects,
/// collections, records).
pub fn binding_of(data_type: &str, size: Option<u32>) -> Option<Binding> {
    let buffer = size.unwrap_or(DEFAULT_BUFFER);
    let (oracle_type, natural) = match data_type {
        "VARCHAR2" | "VARCHAR" | "CHAR" | "LONG" => {
            (OracleType::Varchar2(buffer), ValueType::String)
        }
        "NVARCHAR2" | "NCHAR" => (OracleType::NVarchar2(buffer / 2), ValueType::String),
        "NUMBER" | "FLOAT" | "DECIMAL" | "INTEGER" | "SMALLINT" | "REAL" | "DOUBLE PRECISION" => {
            (OracleType::Number(0, 0), ValueType::Number)
        }
        "PLS_INTEGER" | "BINARY_INTEGER" | "SIMPLE_INTEGER" | "NATURAL" | "NATURALN"
        | "POSITIVE" | "POSITIVEN" | "SIGNTYPE" => (OracleType::Number(0, 0), ValueType::Integer),
        "BINARY_DOUBLE" => (OracleType::BinaryDouble, ValueType::Float),
        "BINARY_FLOAT" => (OracleType::BinaryFloat, ValueType::Float),
        "DATE" => (OracleType::Date, ValueType::Timestamp),
        "TIMESTAMP" => (OracleType::Timestamp(9), ValueType::Timestamp),
        "TIMESTAMP WITH TIME ZONE" => (OracleType::TimestampTZ(9), ValueType::Timestamp),
        "TIMESTAMP WITH LOCAL TIME ZONE" => (OracleType::TimestampLTZ(9), ValueType::Timestamp),
        "CLOB" => (OracleType::CLOB, ValueType::Clob),
        "NCLOB" => (OracleType::NCLOB, ValueType::Clob),
        "BLOB" => (OracleType::BLOB, ValueType::Bytes),
        "RAW" | "LONG RAW" => (OracleType::Raw(buffer), ValueType::Bytes),
        "PL/SQL BOOLEAN" | "BOOLEAN" => (OracleType::Boolean, ValueType::Boolean),
        // Exchanged as text; JSON parameters accept and return it.
        "JSON" => (OracleType::CLOB, ValueType::Json),
        "REF CURSOR" => (OracleType::RefCursor, ValueType::Cursor),
        _ => return None,
    };
    Some(Binding {
        oracle_type,
        natural,
    })
}

/// A value on its way in, already in the form its Oracle type takes.
#[derive(Debug, Clone, PartialEq)]
pub enum BindValue {
    Null,
    /// Strings, exact NUMBER text, JSON text.
    Text(String),
    Double(f64),
    Bool(bool),
    /// DATE and TIMESTAMP: wall-clock time (UTC for instants).
    Local(NaiveDateTime),
    /// TIMESTAMP WITH [LOCAL] TIME ZONE.
    Instant(DateTime<Utc>),
    Bytes(Vec<u8>),
}

/// Converts a request value for a parameter bound as `oracle_type`.
pub fn bind_value(value: &Value, binding: &Binding) -> Result<BindValue, String> {
    let value = value
        .clone()
        .coerce(match binding.natural {
            // Oracle converts between its numeric and string forms itself;
            // keep the request's own type where it is already exact.
            ValueType::Integer | ValueType::Number => ValueType::Number,
            other => other,
        })
        .map_err(|why| format!("{why} (declared {})", binding.oracle_type))?;
    Ok(match value {
        Value::Null => BindValue::Null,
        Value::String(s) | Value::Number(s) | Value::Json(s) => BindValue::Text(s),
        Value::Integer(i) => BindValue::Text(i.to_string()),
        Value::Float(f) => BindValue::Double(f),
        Value::Bool(b) => BindValue::Bool(b),
        Value::Date(d) => BindValue::Local(midnight(d)),
        Value::Timestamp(t) => match binding.oracle_type {
            OracleType::TimestampTZ(_) | OracleType::TimestampLTZ(_) => BindValue::Instant(t),
            _ => BindValue::Local(t.naive_utc()),
        },
        Value::Bytes(b) => BindValue::Bytes(b),
        Value::Rows(_) => return Err("a cursor cannot be passed into a procedure".into()),
    })
}

/// One positional bind: its type, and its value going in (None: OUT only).
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub oracle_type: OracleType,
    pub value: Option<BindValue>,
}

impl ToSql for Bind {
    fn oratype(&self, _: &Connection) -> oracle::Result<OracleType> {
        Ok(self.oracle_type.clone())
    }

    fn to_sql(&self, sql: &mut SqlValue) -> oracle::Result<()> {
        match &self.value {
            None | Some(BindValue::Null) => sql.set_null(),
            Some(BindValue::Text(s)) => sql.set(&s.as_str()),
            Some(BindValue::Double(f)) => sql.set(f),
            Some(BindValue::Bool(b)) => sql.set(b),
            Some(BindValue::Local(t)) => sql.set(t),
            Some(BindValue::Instant(t)) => sql.set(t),
            Some(BindValue::Bytes(b)) => sql.set(&b.as_slice()),
        }
    }
}

/// Where a value is read from: an OUT bind of a statement, or a column.
pub trait Source {
    fn read<T: FromSql>(&self) -> oracle::Result<T>;
}

impl Source for SqlValue<'_> {
    fn read<T: FromSql>(&self) -> oracle::Result<T> {
        self.get()
    }
}

/// An OUT bind: the statement and its 1-based position.
pub struct OutBind<'s>(pub &'s oracle::Statement, pub usize);

impl Source for OutBind<'_> {
    fn read<T: FromSql>(&self) -> oracle::Result<T> {
        self.0.bind_value(self.1)
    }
}

/// Decodes a value read as `oracle_type`; `wanted` is the type the client
/// asked for (used when the conversion loses nothing).
pub fn decode(
    source: &impl Source,
    oracle_type: &OracleType,
    natural: ValueType,
    wanted: Option<ValueType>,
    max_rows: usize,
) -> Result<Value, String> {
    let failed = |e: oracle::Error| format!("cannot read {oracle_type}: {e}");
    let value = match oracle_type {
        OracleType::Number(_, _)
        | OracleType::Float(_)
        | OracleType::Int64
        | OracleType::UInt64 => match source.read::<Option<String>>().map_err(failed)? {
            None => Value::Null,
            Some(text) => {
                let text = normalise_number(&text);
                match natural {
                    ValueType::Integer => text
                        .parse()
                        .map(Value::Integer)
                        .unwrap_or(Value::Number(text)),
                    _ => Value::Number(text),
                }
            }
        },
        OracleType::BinaryDouble | OracleType::BinaryFloat => {
            opt(source.read::<Option<f64>>().map_err(failed)?, Value::Float)
        }
        OracleType::Boolean => opt(source.read::<Option<bool>>().map_err(failed)?, Value::Bool),
        OracleType::Date | OracleType::Timestamp(_) => opt(
            source.read::<Option<NaiveDateTime>>().map_err(failed)?,
            |t| Value::Timestamp(t.and_utc()),
        ),
        OracleType::TimestampTZ(_) | OracleType::TimestampLTZ(_) => opt(
            source
                .read::<Option<DateTime<FixedOffset>>>()
                .map_err(failed)?,
            |t| Value::Timestamp(t.with_timezone(&Utc)),
        ),
        OracleType::Raw(_) | OracleType::LongRaw | OracleType::BLOB => opt(
            source.read::<Option<Vec<u8>>>().map_err(failed)?,
            Value::Bytes,
        ),
        OracleType::RefCursor => match source.read::<Option<RefCursor>>().map_err(failed)? {
            None => Value::Null,
            Some(mut cursor) => Value::Rows(fetch(&mut cursor, max_rows)?),
        },
        OracleType::Varchar2(_)
        | OracleType::NVarchar2(_)
        | OracleType::Char(_)
        | OracleType::NChar(_)
        | OracleType::Long
        | OracleType::Rowid
        | OracleType::Xml
        | OracleType::CLOB
        | OracleType::NCLOB => opt(source.read::<Option<String>>().map_err(failed)?, |s| {
            if natural == ValueType::Json {
                Value::Json(s)
            } else {
                Value::String(s)
            }
        }),
        other => {
            return Err(format!(
                "procgate cannot return values of type {other} yet; convert it in PL/SQL"
            ));
        }
    };
    Ok(shape(value, wanted))
}

fn opt<T>(value: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    value.map_or(Value::Null, f)
}

/// The client's requested type when it loses nothing; a DATE asked for as
/// DATE_VALUE comes back as a date when it has no time.
fn shape(value: Value, wanted: Option<ValueType>) -> Value {
    match wanted {
        Some(t) if value.natural_type() != Some(t) => value.clone().coerce(t).unwrap_or(value),
        _ => value,
    }
}

/// ODPI-C renders 0.5 as ".5" and -0.5 as "-.5"; decimal text has a digit
/// before the point.
fn normalise_number(text: &str) -> String {
    if let Some(rest) = text.strip_prefix("-.") {
        format!("-0.{rest}")
    } else if let Some(rest) = text.strip_prefix('.') {
        format!("0.{rest}")
    } else {
        text.to_string()
    }
}

/// The ValueType of a fetched column.
pub fn column_type(oracle_type: &OracleType) -> Option<ValueType> {
    Some(match oracle_type {
        OracleType::Number(precision, 0) if (1..=18).contains(precision) => ValueType::Integer,
        OracleType::Number(_, _) | OracleType::Float(_) => ValueType::Number,
        OracleType::Int64 | OracleType::UInt64 => ValueType::Integer,
        OracleType::BinaryDouble | OracleType::BinaryFloat => ValueType::Float,
        OracleType::Boolean => ValueType::Boolean,
        OracleType::Date
        | OracleType::Timestamp(_)
        | OracleType::TimestampTZ(_)
        | OracleType::TimestampLTZ(_) => ValueType::Timestamp,
        OracleType::Raw(_) | OracleType::LongRaw | OracleType::BLOB => ValueType::Bytes,
        OracleType::CLOB | OracleType::NCLOB => ValueType::Clob,
        OracleType::RefCursor => ValueType::Cursor,
        OracleType::Varchar2(_)
        | OracleType::NVarchar2(_)
        | OracleType::Char(_)
        | OracleType::NChar(_)
        | OracleType::Long
        | OracleType::Rowid
        | OracleType::Xml => ValueType::String,
        _ => return None,
    })
}

/// Rows fetched from a REF CURSOR per round trip (the statement's fetch
/// array size), and handed on per chunk when streaming.
pub const FETCH_ROWS: usize = 1000;

/// A cursor opened for reading: its columns, and its rows decoded.
struct OpenCursor<'c> {
    columns: Vec<(String, OracleType)>,
    rows: oracle::ResultSet<'c, oracle::Row>,
    max_rows: usize,
}

impl<'c> OpenCursor<'c> {
    fn open(cursor: &'c mut RefCursor, max_rows: usize) -> Result<OpenCursor<'c>, String> {
        let rows = cursor
            .query()
            .map_err(|e| format!("cannot open the cursor: {e}"))?;
        let columns = rows
            .column_info()
            .iter()
            .map(|c| (c.name().to_string(), c.oracle_type().clone()))
            .collect();
        Ok(OpenCursor {
            columns,
            rows,
            max_rows,
        })
    }

    fn columns(&self) -> Vec<Column> {
        self.columns
            .iter()
            .map(|(name, t)| Column {
                name: name.clone(),
                value_type: column_type(t),
            })
            .collect()
    }

    /// The rows, decoded, as the driver fetches them by arrays.
    fn decoded(self) -> impl Iterator<Item = Result<Vec<Value>, String>> + 'c {
        let (columns, max_rows) = (self.columns, self.max_rows);
        self.rows.map(move |row| {
            let row = row.map_err(|e| format!("cannot fetch a row: {e}"))?;
            row.sql_values()
                .iter()
                .zip(&columns)
                .map(|(value, (_, t))| {
                    let natural = column_type(t).unwrap_or(ValueType::String);
                    decode(value, t, natural, None, max_rows)
                })
                .collect()
        })
    }
}

/// Reads at most `max_rows` rows of a cursor, marking the set truncated
/// when more were left.
pub fn fetch(cursor: &mut RefCursor, max_rows: usize) -> Result<ResultSet, String> {
    let cursor = OpenCursor::open(cursor, max_rows)?;
    let mut set = ResultSet {
        columns: cursor.columns(),
        ..Default::default()
    };
    let (rows, truncated) = take_rows(cursor.decoded(), max_rows)?;
    set.rows = rows;
    set.truncated = truncated;
    Ok(set)
}

/// Streams every row of a cursor to `sink` as `output`, [`FETCH_ROWS`] at a
/// time; false once the client went away (the rest is not fetched).
pub fn stream(
    cursor: &mut RefCursor,
    output: &str,
    max_rows: usize,
    sink: &RowSink,
) -> Result<bool, String> {
    let cursor = OpenCursor::open(cursor, max_rows)?;
    if !sink.blocking_start(output, cursor.columns()) {
        return Ok(false);
    }
    in_chunks(cursor.decoded(), FETCH_ROWS, |chunk| {
        sink.blocking_rows(output, chunk)
    })
}

/// At most `max` rows; whether more were left.
fn take_rows(
    mut rows: impl Iterator<Item = Result<Vec<Value>, String>>,
    max: usize,
) -> Result<(Vec<Vec<Value>>, bool), String> {
    let taken = rows.by_ref().take(max).collect::<Result<Vec<_>, _>>()?;
    let more = taken.len() == max && rows.next().is_some();
    Ok((taken, more))
}

/// Hands rows on in chunks of `chunk`, each as soon as it is full (the
/// last one shorter); stops at the first chunk `take` refuses. Whether
/// every row was handed on.
fn in_chunks(
    rows: impl Iterator<Item = Result<Vec<Value>, String>>,
    chunk: usize,
    mut take: impl FnMut(Vec<Vec<Value>>) -> bool,
) -> Result<bool, String> {
    let mut pending = Vec::with_capacity(chunk);
    for row in rows {
        pending.push(row?);
        if pending.len() == chunk
            && !take(std::mem::replace(&mut pending, Vec::with_capacity(chunk)))
        {
            return Ok(false);
        }
    }
    Ok(pending.is_empty() || take(pending))
}

/// A calendar date as Oracle's DATE takes it (midnight).
pub fn midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_time(NaiveTime::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: i64, fail_at: Option<i64>) -> impl Iterator<Item = Result<Vec<Value>, String>> {
        (1..=n).map(move |i| match fail_at {
            Some(at) if at == i => Err(format!("cannot fetch row {i}")),
            _ => Ok(vec![Value::Integer(i)]),
        })
    }

    #[test]
    fn streamed_cursors_go_in_fetch_sized_chunks_until_the_client_goes() {
        let mut chunks = Vec::new();
        let all = in_chunks(numbered(2_500, None), FETCH_ROWS, |c| {
            chunks.push(c.len());
            true
        });
        assert_eq!(all, Ok(true));
        assert_eq!(chunks, [1000, 1000, 500]);

        let mut read = 0;
        let stopped = in_chunks(numbered(10_000, None), FETCH_ROWS, |c| {
            read += c.len();
            read < 2_000
        });
        assert_eq!(stopped, Ok(false), "the client went away");
        assert_eq!(read, 2_000, "nothing fetched past the refused chunk");

        assert_eq!(
            in_chunks(numbered(0, None), FETCH_ROWS, |_| unreachable!()),
            Ok(true)
        );
        let failed = in_chunks(numbered(1_500, Some(1_200)), FETCH_ROWS, |_| true);
        assert_eq!(failed, Err("cannot fetch row 1200".into()));
    }

    #[test]
    fn capped_cursors_stop_at_the_cap_and_say_so() {
        let (rows, more) = take_rows(numbered(12, None), 10).unwrap();
        assert_eq!((rows.len(), more), (10, true));
        let (rows, more) = take_rows(numbered(10, None), 10).unwrap();
        assert_eq!((rows.len(), more), (10, false));
        assert!(take_rows(numbered(5, Some(3)), 10).is_err());
    }
    use crate::call::{parse_date, parse_timestamp};

    #[test]
    fn declared_types_choose_the_bind() {
        let cases = [
            (
                "VARCHAR2",
                None,
                OracleType::Varchar2(32767),
                ValueType::String,
            ),
            (
                "VARCHAR2",
                Some(200),
                OracleType::Varchar2(200),
                ValueType::String,
            ),
            (
                "NVARCHAR2",
                None,
                OracleType::NVarchar2(16383),
                ValueType::String,
            ),
            ("CHAR", None, OracleType::Varchar2(32767), ValueType::String),
            ("NUMBER", None, OracleType::Number(0, 0), ValueType::Number),
            (
                "PLS_INTEGER",
                None,
                OracleType::Number(0, 0),
                ValueType::Integer,
            ),
            (
                "BINARY_DOUBLE",
                None,
                OracleType::BinaryDouble,
                ValueType::Float,
            ),
            ("DATE", None, OracleType::Date, ValueType::Timestamp),
            (
                "TIMESTAMP",
                None,
                OracleType::Timestamp(9),
                ValueType::Timestamp,
            ),
            (
                "TIMESTAMP WITH TIME ZONE",
                None,
                OracleType::TimestampTZ(9),
                ValueType::Timestamp,
            ),
            (
                "TIMESTAMP WITH LOCAL TIME ZONE",
                None,
                OracleType::TimestampLTZ(9),
                ValueType::Timestamp,
            ),
            ("CLOB", None, OracleType::CLOB, ValueType::Clob),
            ("NCLOB", None, OracleType::NCLOB, ValueType::Clob),
            ("BLOB", None, OracleType::BLOB, ValueType::Bytes),
            ("RAW", Some(16), OracleType::Raw(16), ValueType::Bytes),
            (
                "PL/SQL BOOLEAN",
                None,
                OracleType::Boolean,
                ValueType::Boolean,
            ),
            ("BOOLEAN", None, OracleType::Boolean, ValueType::Boolean),
            ("JSON", None, OracleType::CLOB, ValueType::Json),
            ("REF CURSOR", None, OracleType::RefCursor, ValueType::Cursor),
        ];
        for (data_type, size, oracle_type, natural) in cases {
            assert_eq!(
                binding_of(data_type, size),
                Some(Binding {
                    oracle_type,
                    natural
                }),
                "{data_type}"
            );
        }
        for unsupported in ["OBJECT", "TABLE", "VARRAY", "PL/SQL RECORD", "UROWID"] {
            assert_eq!(binding_of(unsupported, None), None, "{unsupported}");
        }
    }

    #[test]
    fn every_value_type_has_a_bind_plan() {
        let b = |t| binding_of(t, None).unwrap();
        let cases = [
            (
                Value::String("x".into()),
                b("VARCHAR2"),
                BindValue::Text("x".into()),
            ),
            (
                Value::Integer(-7),
                b("NUMBER"),
                BindValue::Text("-7".into()),
            ),
            (
                Value::Integer(7),
                b("PLS_INTEGER"),
                BindValue::Text("7".into()),
            ),
            (
                Value::Number("12.50".into()),
                b("NUMBER"),
                BindValue::Text("12.50".into()),
            ),
            (
                Value::String("3.25".into()),
                b("NUMBER"),
                BindValue::Text("3.25".into()),
            ),
            (
                Value::Float(0.5),
                b("BINARY_DOUBLE"),
                BindValue::Double(0.5),
            ),
            (
                Value::Bool(true),
                b("PL/SQL BOOLEAN"),
                BindValue::Bool(true),
            ),
            (
                Value::Date(parse_date("2024-02-29").unwrap()),
                b("DATE"),
                BindValue::Local(midnight(parse_date("2024-02-29").unwrap())),
            ),
            (
                Value::Timestamp(parse_timestamp("2024-05-01T10:30:00.5Z").unwrap()),
                b("DATE"),
                BindValue::Local(
                    parse_timestamp("2024-05-01T10:30:00.5Z")
                        .unwrap()
                        .naive_utc(),
                ),
            ),
            (
                Value::Timestamp(parse_timestamp("2024-05-01T10:30:00+02:00").unwrap()),
                b("TIMESTAMP WITH TIME ZONE"),
                BindValue::Instant(parse_timestamp("2024-05-01T08:30:00Z").unwrap()),
            ),
            (
                Value::Bytes(vec![1, 2]),
                b("BLOB"),
                BindValue::Bytes(vec![1, 2]),
            ),
            (Value::Bytes(vec![3]), b("RAW"), BindValue::Bytes(vec![3])),
            (
                Value::String("long".into()),
                b("CLOB"),
                BindValue::Text("long".into()),
            ),
            (
                Value::Json("{\"a\":1}".into()),
                b("JSON"),
                BindValue::Text("{\"a\":1}".into()),
            ),
            (Value::Null, b("NUMBER"), BindValue::Null),
        ];
        for (value, binding, expected) in cases {
            assert_eq!(bind_value(&value, &binding), Ok(expected), "{value:?}");
        }
        assert!(bind_value(&Value::Bool(true), &b("DATE")).is_err());
        assert!(bind_value(&Value::String("abc".into()), &b("NUMBER")).is_err());
        assert!(bind_value(&Value::Bytes(vec![1]), &b("VARCHAR2")).is_err());
    }

    #[test]
    fn numbers_get_a_leading_zero() {
        assert_eq!(normalise_number(".5"), "0.5");
        assert_eq!(normalise_number("-.25"), "-0.25");
        assert_eq!(normalise_number("12.5"), "12.5");
    }

    #[test]
    fn dates_with_a_time_stay_timestamps_unless_asked() {
        let at = |s| Value::Timestamp(parse_timestamp(s).unwrap());
        let midnight = at("2024-05-01T00:00:00Z");
        assert_eq!(
            shape(midnight.clone(), Some(ValueType::Date)),
            Value::Date(parse_date("2024-05-01").unwrap())
        );
        let with_time = at("2024-05-01T10:30:00Z");
        assert_eq!(shape(with_time.clone(), Some(ValueType::Date)), with_time);
        assert_eq!(shape(with_time.clone(), None), with_time);
    }

    #[test]
    fn column_types() {
        assert_eq!(
            column_type(&OracleType::Number(10, 0)),
            Some(ValueType::Integer)
        );
        assert_eq!(
            column_type(&OracleType::Number(0, -127)),
            Some(ValueType::Number)
        );
        assert_eq!(
            column_type(&OracleType::Number(12, 2)),
            Some(ValueType::Number)
        );
        assert_eq!(column_type(&OracleType::Date), Some(ValueType::Timestamp));
        assert_eq!(column_type(&OracleType::IntervalDS(2, 6)), None);
    }
}
