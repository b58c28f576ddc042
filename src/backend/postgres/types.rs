//! ValueType ⇄ PostgreSQL types, both ways and exactly.
//!
//! Values go in as text bound to `$n::<declared type>` casts, so the server
//! parses them with its own input functions: numeric stays exact decimal
//! text, floats use their shortest round-trip form, timestamps carry their
//! offset and microseconds. Before that, each value is checked against the
//! declared type here, so that a value that does not fit is refused naming
//! its parameter instead of surfacing as a bare cast error.
//!
//! Values come back in PostgreSQL's binary format and are decoded per type;
//! `numeric` is decoded by hand (base-10000 digits) because no float or
//! 128-bit decimal holds every numeric exactly.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use tokio_postgres::types::{FromSql, Kind, Type};

use crate::call::{Value, ValueType};

/// The ValueType closest to a PostgreSQL base type name (`pg_type.typname`).
pub fn value_type_of(typname: &str) -> Option<ValueType> {
    Some(match typname {
        "text" | "varchar" | "bpchar" | "name" | "char" | "uuid" | "xml" | "citext" => {
            ValueType::String
        }
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
        _ => value_type_of(ty.name()),
    }
}

/// Checks `value` against the declared base type and renders the text that
/// the server's input function will parse. `None` is SQL NULL.
pub fn encode(value: &Value, typname: &str) -> Result<Option<String>, String> {
    if let Value::Rows(_) = value {
        return Err("a cursor cannot be passed into a procedure".into());
    }
    let value = match value_type_of(typname) {
        // Unmapped types (enums, interval, arrays…) take any scalar as text
        // and let the server parse it.
        None | Some(ValueType::Cursor) => value.clone(),
        Some(family) => value
            .clone()
            .coerce(family)
            .map_err(|why| format!("{why} (declared {typname})"))?,
    };
    if let Value::Integer(i) = value {
        let fits = match typname {
            "int2" => i16::try_from(i).is_ok(),
            "int4" => i32::try_from(i).is_ok(),
            "oid" => u32::try_from(i).is_ok(),
            _ => true,
        };
        if !fits {
            return Err(format!("{i} is out of range for {typname}"));
        }
    }
    Ok(to_text(&value))
}

fn to_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null | Value::Rows(_) => return None,
        Value::String(s) | Value::Number(s) | Value::Json(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".into(),
        Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
        }
        Value::Float(f) => format!("{f:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Timestamp(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        Value::Bytes(b) => {
            let mut hex = String::with_capacity(2 + 2 * b.len());
            hex.push_str("\\x");
            for byte in b {
                hex.push_str(&format!("{byte:02x}"));
            }
            hex
        }
    })
}

/// Decodes one binary-format value of type `ty`. A `refcursor` decodes to
/// its cursor name (a string); the caller fetches its rows.
pub fn decode(ty: &Type, raw: &[u8]) -> Result<Value, String> {
    fn get<'a, T: FromSql<'a>>(ty: &Type, raw: &'a [u8]) -> Result<T, String> {
        T::from_sql(ty, raw).map_err(|e| format!("cannot decode {}: {e}", ty.name()))
    }
    let value = match *ty {
        Type::BOOL => Value::Bool(get(ty, raw)?),
        Type::INT2 => Value::Integer(get::<i16>(ty, raw)?.into()),
        Type::INT4 => Value::Integer(get::<i32>(ty, raw)?.into()),
        Type::INT8 => Value::Integer(get(ty, raw)?),
        Type::OID => Value::Integer(get::<u32>(ty, raw)?.into()),
        Type::FLOAT4 => Value::Float(get::<f32>(ty, raw)?.into()),
        Type::FLOAT8 => Value::Float(get(ty, raw)?),
        Type::NUMERIC => Value::Number(numeric_text(raw)?),
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::XML
        | Type::REFCURSOR => Value::String(get::<&str>(&Type::TEXT, raw)?.to_string()),
        Type::CHAR => Value::String(char::from(get::<i8>(ty, raw)? as u8).to_string()),
        Type::DATE => Value::Date(get::<NaiveDate>(ty, raw)?),
        Type::TIMESTAMP => Value::Timestamp(get::<NaiveDateTime>(ty, raw)?.and_utc()),
        Type::TIMESTAMPTZ => Value::Timestamp(get::<DateTime<Utc>>(ty, raw)?),
        Type::TIME => Value::String(get::<NaiveTime>(ty, raw)?.to_string()),
        Type::BYTEA => Value::Bytes(get::<Vec<u8>>(ty, raw)?),
        Type::JSON => Value::Json(utf8(raw)?),
        // jsonb's binary format is a version byte, then the text.
        Type::JSONB => Value::Json(utf8(raw.get(1..).unwrap_or_default())?),
        Type::UUID => Value::String(uuid_text(raw)?),
        Type::VOID => Value::Null,
        _ => match ty.kind() {
            Kind::Domain(base) => return decode(base, raw),
            Kind::Enum(_) => Value::String(utf8(raw)?),
            _ => {
                return Err(format!(
                    "procgate cannot return values of type {} yet; cast it to text in the procedure",
                    ty.name()
                ));
            }
        },
    };
    Ok(value)
}

fn utf8(raw: &[u8]) -> Result<String, String> {
    String::from_utf8(raw.to_vec()).map_err(|_| "the database sent invalid UTF-8".to_string())
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
        assert!(numeric_text(&[0, 1]).is_err());
    }

    #[test]
    fn values_are_checked_against_declared_types() {
        assert_eq!(
            encode(&Value::Integer(7), "int4").unwrap().as_deref(),
            Some("7")
        );
        assert!(
            encode(&Value::Integer(1 << 40), "int4")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(encode(&Value::String("abc".into()), "int8").is_err());
        assert_eq!(
            encode(&Value::String("12.50".into()), "numeric")
                .unwrap()
                .as_deref(),
            Some("12.50")
        );
        assert_eq!(
            encode(&Value::Bytes(vec![0xde, 0xad]), "bytea")
                .unwrap()
                .as_deref(),
            Some("\\xdead")
        );
        assert_eq!(
            encode(&Value::Float(f64::INFINITY), "float8")
                .unwrap()
                .as_deref(),
            Some("Infinity")
        );
        assert_eq!(encode(&Value::Null, "int4").unwrap(), None);
        assert!(encode(&Value::Bool(true), "date").is_err());
        assert_eq!(
            encode(&Value::Integer(5), "mood").unwrap().as_deref(),
            Some("5")
        );
    }
}
