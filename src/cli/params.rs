//! Parameters on the command line: `name=value`, `name:TYPE=value`,
//! `name:out:TYPE`, `name:inout:TYPE=value`, and `name:null` for SQL NULL.
//!
//! TYPE is a ValueType in lower case (string, integer, number, float,
//! boolean, date, timestamp, bytes, clob, json, cursor). An untyped value is
//! sent as text and typed by the server from the procedure's signature; a
//! typed one is sent in its own protobuf field, so that a typo is caught here
//! (`a:integer=12x`) rather than by the database. Bytes are hex (`0xCAFE`).

use crate::call::ValueType;
use crate::proto::value::Kind;
use crate::proto::{self as pb};

/// Parses one parameter argument.
pub fn parse_param(arg: &str) -> Result<pb::Param, String> {
    let (spec, value) = match arg.split_once('=') {
        Some((spec, value)) => (spec, Some(value)),
        None => (arg, None),
    };
    let mut parts = spec.split(':');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(format!(
            "{arg:?}: the parameter has no name (expected name=value)"
        ));
    }
    let rest: Vec<&str> = parts.collect();
    let (direction, type_name) = match rest.as_slice() {
        [] => (pb::Direction::In, None),
        ["null"] if value.is_none() => {
            return Ok(param(name, pb::Direction::In, Some(Kind::NullValue(0))));
        }
        ["out", t] => (pb::Direction::Out, Some(*t)),
        ["out"] => (pb::Direction::Out, None),
        ["inout", t] => (pb::Direction::InOut, Some(*t)),
        ["in", t] | [t] => (pb::Direction::In, Some(*t)),
        _ => {
            return Err(format!(
                "{arg:?}: expected name[:out|:inout][:TYPE][=value]"
            ));
        }
    };
    let value_type = type_name
        .map(|t| {
            ValueType::from_name(t).ok_or_else(|| {
                let known: Vec<_> = ValueType::ALL.iter().map(|t| t.name()).collect();
                format!("{arg:?}: unknown type {t:?} (one of {})", known.join(", "))
            })
        })
        .transpose()?;
    let kind = match (direction, value) {
        (pb::Direction::Out, Some(_)) => {
            return Err(format!(
                "{arg:?}: an OUT parameter takes no value (use :inout:)"
            ));
        }
        (pb::Direction::Out, None) => None,
        (_, None) => return Err(format!("{arg:?}: missing =value (or name:null for NULL)")),
        (_, Some(text)) => {
            Some(typed_value(text, value_type).map_err(|e| format!("{arg:?}: {e}"))?)
        }
    };
    let mut p = param(name, direction, kind);
    if let Some(t) = value_type {
        p.r#type = crate::api::convert::value_type_to_proto(Some(t)) as i32;
    }
    Ok(p)
}

fn param(name: &str, direction: pb::Direction, kind: Option<Kind>) -> pb::Param {
    pb::Param {
        name: name.to_string(),
        direction: direction as i32,
        value: kind.map(|k| pb::Value { kind: Some(k) }),
        ..Default::default()
    }
}

fn typed_value(text: &str, value_type: Option<ValueType>) -> Result<Kind, String> {
    let parse_error = |what: &str| format!("{text:?} is not {what}");
    Ok(match value_type {
        None | Some(ValueType::String | ValueType::Clob | ValueType::Timestamp) => {
            Kind::StringValue(text.to_string())
        }
        Some(ValueType::Integer) => {
            Kind::IntegerValue(text.parse().map_err(|_| parse_error("an integer"))?)
        }
        Some(ValueType::Number) => {
            if !crate::call::is_decimal(text) && crate::call::special_number(text).is_none() {
                return Err(parse_error("a decimal number"));
            }
            Kind::NumberValue(text.to_string())
        }
        Some(ValueType::Float) => {
            Kind::FloatValue(text.parse().map_err(|_| parse_error("a number"))?)
        }
        Some(ValueType::Boolean) => Kind::BoolValue(match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => true,
            "false" | "f" | "no" | "n" | "0" => false,
            _ => return Err(parse_error("true or false")),
        }),
        Some(ValueType::Date) => {
            crate::call::parse_date(text)?;
            Kind::DateValue(text.to_string())
        }
        Some(ValueType::Bytes) => {
            Kind::BytesValue(hex(text).ok_or_else(|| parse_error("hex bytes like 0xCAFE"))?)
        }
        Some(ValueType::Json) => {
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| format!("{text:?} is not JSON ({e})"))?;
            Kind::JsonValue(text.to_string())
        }
        Some(ValueType::Cursor) => return Err("a cursor can only be an OUT parameter".into()),
    })
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &pb::Param) -> Option<&Kind> {
        p.value.as_ref().and_then(|v| v.kind.as_ref())
    }

    #[test]
    fn all_forms_parse() {
        let p = parse_param("p_fecha=2024-05-01").unwrap();
        assert_eq!(p.name, "p_fecha");
        assert_eq!(p.r#type, 0);
        assert_eq!(kind(&p), Some(&Kind::StringValue("2024-05-01".into())));

        let p = parse_param("a:number=12.50").unwrap();
        assert_eq!(kind(&p), Some(&Kind::NumberValue("12.50".into())));
        assert_eq!(p.r#type, pb::ValueType::Number as i32);

        let p = parse_param("total:out:number").unwrap();
        assert_eq!(p.direction, pb::Direction::Out as i32);
        assert!(p.value.is_none());

        let p = parse_param("c:inout:integer=5").unwrap();
        assert_eq!(p.direction, pb::Direction::InOut as i32);
        assert_eq!(kind(&p), Some(&Kind::IntegerValue(5)));

        let p = parse_param("b:bytes=0xCAfe").unwrap();
        assert_eq!(kind(&p), Some(&Kind::BytesValue(vec![0xca, 0xfe])));

        let p = parse_param("n:null").unwrap();
        assert_eq!(kind(&p), Some(&Kind::NullValue(0)));

        let p = parse_param("note=a=b").unwrap();
        assert_eq!(kind(&p), Some(&Kind::StringValue("a=b".into())));
    }

    #[test]
    fn mistakes_are_caught_here() {
        for bad in [
            "=1",
            "a",
            "a:integer=12x",
            "a:number=1,5",
            "a:date=2024-02-30",
            "a:out:integer=3",
            "a:weird=1",
            "a:bytes=0xABC",
            "a:json={",
            "a:x:y:z=1",
        ] {
            assert!(parse_param(bad).is_err(), "{bad}");
        }
    }
}
