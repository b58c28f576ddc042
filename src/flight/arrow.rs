//! Result sets as Arrow: the schema of a result's columns and the record
//! batch of its rows. Types map as data tools expect: integers → Int64,
//! float → Float64, text and json → Utf8, dates → Date32, timestamps →
//! Timestamp(µs, UTC), bytes → Binary, booleans → Boolean. An exact number
//! becomes Decimal128(p, s) when its declared precision is known and at
//! most 38; neither database reports it for a call's result columns, so
//! exact numbers travel as Utf8 and lose nothing. A column of unknown type
//! is Utf8 too, each value in its text form.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::NaiveDate;

use crate::call::{Column, ValueType};
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::proto::value::Kind;

fn data_type(value_type: Option<ValueType>) -> DataType {
    match value_type {
        Some(ValueType::Integer) => DataType::Int64,
        Some(ValueType::Float) => DataType::Float64,
        Some(ValueType::Boolean) => DataType::Boolean,
        Some(ValueType::Date) => DataType::Date32,
        Some(ValueType::Timestamp) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        Some(ValueType::Bytes) => DataType::Binary,
        Some(
            ValueType::String
            | ValueType::Clob
            | ValueType::Json
            | ValueType::Number
            | ValueType::Cursor,
        )
        | None => DataType::Utf8,
    }
}

/// The Arrow schema of a result's columns; every field is nullable.
pub fn schema_of(columns: &[Column]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, data_type(c.value_type), true))
            .collect::<Vec<_>>(),
    )
}

/// The rows as one record batch of `schema` (from [`schema_of`]).
pub fn record_batch(schema: &Arc<Schema>, rows: &[pb::Row]) -> Result<RecordBatch> {
    let mut builders: Vec<Box<dyn ArrayBuilder>> = schema
        .fields()
        .iter()
        .map(|field| builder(field.data_type(), rows.len()))
        .collect();
    for (r, row) in rows.iter().enumerate() {
        if row.values.len() != builders.len() {
            return Err(Error::Internal(format!(
                "row {r} has {} values for {} columns",
                row.values.len(),
                builders.len()
            )));
        }
        for ((value, builder), field) in row.values.iter().zip(&mut builders).zip(schema.fields()) {
            append(builder.as_mut(), field.data_type(), value.kind.as_ref()).map_err(|what| {
                Error::Internal(format!("column {:?} of row {r}: {what}", field.name()))
            })?;
        }
    }
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| Error::Internal(format!("building a record batch failed: {e}")))
}

fn builder(data_type: &DataType, rows: usize) -> Box<dyn ArrayBuilder> {
    match data_type {
        DataType::Int64 => Box::new(Int64Builder::with_capacity(rows)),
        DataType::Float64 => Box::new(Float64Builder::with_capacity(rows)),
        DataType::Boolean => Box::new(BooleanBuilder::with_capacity(rows)),
        DataType::Date32 => Box::new(Date32Builder::with_capacity(rows)),
        DataType::Timestamp(_, tz) => {
            Box::new(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone_opt(tz.clone()))
        }
        DataType::Binary => Box::new(BinaryBuilder::with_capacity(rows, rows * 16)),
        _ => Box::new(StringBuilder::with_capacity(rows, rows * 16)),
    }
}

fn downcast<T: 'static>(builder: &mut dyn ArrayBuilder) -> &mut T {
    builder
        .as_any_mut()
        .downcast_mut::<T>()
        .expect("a builder of its field's type")
}

/// Days from 1970-01-01, as Date32 counts them.
fn days(date: &str) -> std::result::Result<i32, String> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| format!("{date:?} is not a date"))?;
    i32::try_from((date - epoch).num_days()).map_err(|_| format!("{date} is out of range"))
}

fn append(
    builder: &mut dyn ArrayBuilder,
    data_type: &DataType,
    kind: Option<&Kind>,
) -> std::result::Result<(), String> {
    let null = matches!(kind, None | Some(Kind::NullValue(_)));
    let wrong = || format!("a {kind:?} in a {data_type} column");
    match data_type {
        DataType::Int64 => {
            let b = downcast::<Int64Builder>(builder);
            match kind {
                _ if null => b.append_null(),
                Some(Kind::IntegerValue(i)) => b.append_value(*i),
                _ => return Err(wrong()),
            }
        }
        DataType::Float64 => {
            let b = downcast::<Float64Builder>(builder);
            match kind {
                _ if null => b.append_null(),
                Some(Kind::FloatValue(f)) => b.append_value(*f),
                _ => return Err(wrong()),
            }
        }
        DataType::Boolean => {
            let b = downcast::<BooleanBuilder>(builder);
            match kind {
                _ if null => b.append_null(),
                Some(Kind::BoolValue(v)) => b.append_value(*v),
                _ => return Err(wrong()),
            }
        }
        DataType::Date32 => {
            let b = downcast::<Date32Builder>(builder);
            match kind {
                _ if null => b.append_null(),
                Some(Kind::DateValue(d)) => b.append_value(days(d)?),
                _ => return Err(wrong()),
            }
        }
        DataType::Timestamp(..) => {
            let b = downcast::<TimestampMicrosecondBuilder>(builder);
            match kind {
                _ if null => b.append_null(),
                Some(Kind::TimestampValue(t)) => {
                    b.append_value(t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
                }
                _ => return Err(wrong()),
            }
        }
        DataType::Binary => {
            let b = downcast::<BinaryBuilder>(builder);
            match kind {
                _ if null => b.append_null(),
                Some(Kind::BytesValue(v)) => b.append_value(v),
                _ => return Err(wrong()),
            }
        }
        _ => {
            let b = downcast::<StringBuilder>(builder);
            match kind.filter(|_| !null) {
                None => b.append_null(),
                Some(kind) => b.append_value(text_of(kind)),
            }
        }
    }
    Ok(())
}

/// A value's text form, for a Utf8 column.
fn text_of(kind: &Kind) -> String {
    match kind {
        Kind::StringValue(s) | Kind::NumberValue(s) | Kind::JsonValue(s) | Kind::DateValue(s) => {
            s.clone()
        }
        Kind::IntegerValue(i) => i.to_string(),
        Kind::FloatValue(f) => f.to_string(),
        Kind::BoolValue(b) => b.to_string(),
        Kind::TimestampValue(t) => chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_default(),
        Kind::BytesValue(b) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
        Kind::RowsValue(set) => format!("({} rows)", set.rows.len()),
        Kind::NullValue(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Int64Type, TimestampMicrosecondType};

    fn value(kind: Kind) -> pb::Value {
        pb::Value { kind: Some(kind) }
    }

    #[test]
    fn every_type_maps_as_data_tools_expect() {
        let columns: Vec<Column> = [
            ("n", Some(ValueType::Integer)),
            ("amount", Some(ValueType::Number)),
            ("ratio", Some(ValueType::Float)),
            ("name", Some(ValueType::String)),
            ("day", Some(ValueType::Date)),
            ("at", Some(ValueType::Timestamp)),
            ("raw", Some(ValueType::Bytes)),
            ("doc", Some(ValueType::Json)),
            ("ok", Some(ValueType::Boolean)),
            ("other", None),
        ]
        .into_iter()
        .map(|(name, value_type)| Column {
            name: name.into(),
            value_type,
        })
        .collect();
        let schema = Arc::new(schema_of(&columns));
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "Int64",
                "Utf8",
                "Float64",
                "Utf8",
                "Date32",
                "Timestamp(µs, \"UTC\")",
                "Binary",
                "Utf8",
                "Boolean",
                "Utf8"
            ]
        );
        let full = pb::Row {
            values: vec![
                value(Kind::IntegerValue(-7)),
                value(Kind::NumberValue("12345678901234567890.125".into())),
                value(Kind::FloatValue(0.5)),
                value(Kind::StringValue("ñandú".into())),
                value(Kind::DateValue("2024-02-29".into())),
                value(Kind::TimestampValue(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 123_456_789,
                })),
                value(Kind::BytesValue(vec![0, 255])),
                value(Kind::JsonValue("{\"a\":1}".into())),
                value(Kind::BoolValue(true)),
                value(Kind::IntegerValue(3)),
            ],
        };
        let nulls = pb::Row {
            values: (0..10).map(|_| value(Kind::NullValue(0))).collect(),
        };
        let batch = record_batch(&schema, &[full, nulls]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), -7);
        assert_eq!(
            batch.column(1).as_string::<i32>().value(0),
            "12345678901234567890.125"
        );
        assert_eq!(
            batch.column(4).as_primitive::<Date32Type>().value(0),
            19_782,
            "days since 1970"
        );
        assert_eq!(
            batch
                .column(5)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_700_000_000_123_456
        );
        assert_eq!(batch.column(6).as_binary::<i32>().value(0), [0, 255]);
        assert_eq!(batch.column(9).as_string::<i32>().value(0), "3");
        assert!((0..10).all(|c| batch.column(c).is_null(1)));
    }

    #[test]
    fn a_value_of_another_type_is_an_error_naming_its_column() {
        let columns = [Column {
            name: "n".into(),
            value_type: Some(ValueType::Integer),
        }];
        let schema = Arc::new(schema_of(&columns));
        let row = pb::Row {
            values: vec![value(Kind::StringValue("x".into()))],
        };
        let error = record_batch(&schema, &[row]).unwrap_err().to_string();
        assert!(error.contains("column \"n\" of row 0"), "{error}");
    }
}
