//! Arrays and composite (row) values as JSON, both ways.
//!
//! Out, an array's binary format becomes a JSON array (nested for several
//! dimensions, bounds dropped) and a composite's a JSON object keyed by
//! attribute name, each element rendered the way `to_jsonb` renders it:
//! numbers as JSON numbers (exact: numeric text is copied, never parsed
//! into a float), NaN and infinities as strings, timestamps in ISO 8601
//! with a `T`, bytea as `\x…` hex. Intervals inside follow procgate's own
//! rendering, ISO 8601 durations, and timestamptz is shown in UTC.
//!
//! In, a JSON array or object becomes the array or row literal that the
//! type's input function parses (`{"a b",NULL}`, `(1,"x")`), using the
//! parameter's type as the server described it when the statement was
//! prepared. The server parses the literal, so the element types are its
//! own to check.

use std::fmt::Write;

use serde_json::Value as Json;
use tokio_postgres::types::{Field, Kind, Type};

use super::types;

/// Why a value cannot be rendered: a type procgate has no decoder for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// A type (or an element type) without a decoder: its text form can be
    /// asked for as STRING.
    Type(String),
    /// Bytes that are not the type's binary format.
    Malformed(String),
}

/// Renders the binary value of an array or composite type as JSON text.
pub fn render(ty: &Type, raw: &[u8]) -> Result<String, Unreadable> {
    let mut out = String::new();
    write_value(ty, raw, &mut out)?;
    Ok(out)
}

fn write_value(ty: &Type, raw: &[u8], out: &mut String) -> Result<(), Unreadable> {
    match ty.kind() {
        Kind::Array(element) => write_array(element, raw, out),
        Kind::Composite(fields) => write_composite(fields, raw, out),
        Kind::Domain(base) => write_value(base, raw, out),
        _ => write_scalar(ty, raw, out),
    }
}

/// Reads big-endian integers off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Unreadable> {
        if self.0.len() < n {
            return Err(Unreadable::Malformed("a truncated array or row".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i32(&mut self) -> Result<i32, Unreadable> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed value: None for NULL.
    fn value(&mut self) -> Result<Option<&'a [u8]>, Unreadable> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }
}

fn write_array(element: &Type, raw: &[u8], out: &mut String) -> Result<(), Unreadable> {
    let mut r = Reader(raw);
    let dimensions = r.i32()?;
    let _has_nulls = r.i32()?;
    let _element_oid = r.i32()?;
    let mut lengths = Vec::new();
    for _ in 0..dimensions.max(0) {
        lengths.push(r.i32()?.max(0) as usize);
        let _lower_bound = r.i32()?;
    }
    if lengths.is_empty() {
        out.push_str("[]");
        return Ok(());
    }
    write_dimension(element, &lengths, &mut r, out)
}

fn write_dimension(
    element: &Type,
    lengths: &[usize],
    r: &mut Reader<'_>,
    out: &mut String,
) -> Result<(), Unreadable> {
    out.push('[');
    for i in 0..lengths[0] {
        if i > 0 {
            out.push(',');
        }
        if lengths.len() > 1 {
            write_dimension(element, &lengths[1..], r, out)?;
        } else {
            match r.value()? {
                None => out.push_str("null"),
                Some(raw) => write_value(element, raw, out)?,
            }
        }
    }
    out.push(']');
    Ok(())
}

fn write_composite(fields: &[Field], raw: &[u8], out: &mut String) -> Result<(), Unreadable> {
    let mut r = Reader(raw);
    let count = r.i32()?.max(0) as usize;
    out.push('{');
    for i in 0..count {
        let _oid = r.i32()?;
        let value = r.value()?;
        let field = fields.get(i).ok_or_else(|| {
            Unreadable::Malformed("a row with more values than attributes".into())
        })?;
        if i > 0 {
            out.push(',');
        }
        write_string(field.name(), out);
        out.push(':');
        match value {
            None => out.push_str("null"),
            Some(raw) => write_value(field.type_(), raw, out)?,
        }
    }
    out.push('}');
    Ok(())
}

fn write_scalar(ty: &Type, raw: &[u8], out: &mut String) -> Result<(), Unreadable> {
    use crate::call::Value;
    let value = types::decode_scalar(ty, raw)?;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Integer(i) => write!(out, "{i}").expect("write to String"),
        Value::Number(n) if crate::call::is_decimal(&n) => out.push_str(&json_number(&n)),
        Value::Float(f) if f.is_finite() => write!(out, "{f:?}").expect("write to String"),
        Value::Number(text) => write_string(&text, out),
        Value::Float(f) => write_string(&types::float_text(f), out),
        Value::String(s) => write_string(&s, out),
        Value::Json(json) => out.push_str(&json),
        Value::Date(d) => write_string(&d.format("%Y-%m-%d").to_string(), out),
        Value::Timestamp(t) => {
            let local = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string();
            let offset = if *ty == Type::TIMESTAMPTZ {
                "+00:00"
            } else {
                ""
            };
            write_string(&format!("{local}{offset}"), out);
        }
        Value::Bytes(b) => {
            let mut hex = String::with_capacity(2 + 2 * b.len());
            hex.push_str("\\x");
            for byte in b {
                write!(hex, "{byte:02x}").expect("write to String");
            }
            write_string(&hex, out);
        }
        Value::Rows(_) => return Err(Unreadable::Type(ty.name().to_string())),
    }
    Ok(())
}

/// Decimal text as a JSON number: JSON allows no leading `+`, no bare
/// `.5` and no `5.`.
fn json_number(decimal: &str) -> String {
    let (sign, digits) = match decimal.strip_prefix(['+', '-']) {
        Some(rest) if decimal.starts_with('-') => ("-", rest),
        Some(rest) => ("", rest),
        None => ("", decimal),
    };
    let digits = if digits.starts_with('.') {
        format!("0{digits}")
    } else {
        digits.to_string()
    };
    let digits = digits.replace(".e", "e").replace(".E", "E");
    let digits = digits.strip_suffix('.').unwrap_or(&digits);
    format!("{sign}{digits}")
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}

/// Whether values of `ty` can be decoded natively, all the way down.
pub fn readable(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Array(element) => readable(element),
        Kind::Composite(fields) => fields.iter().all(|f| readable(f.type_())),
        Kind::Domain(base) => readable(base),
        Kind::Enum(_) => true,
        _ => types::has_scalar_decoder(ty),
    }
}

/// The array or row literal for a JSON value bound to a parameter of type
/// `ty`; None when `ty` is neither (or the text is not JSON of that shape,
/// in which case it is passed on as it is: a literal already).
pub fn literal(ty: &Type, text: &str) -> Result<Option<String>, String> {
    let base = base_type(ty);
    let json = match base.kind() {
        Kind::Array(_) | Kind::Composite(_) => match serde_json::from_str::<Json>(text) {
            Ok(json @ (Json::Array(_) | Json::Object(_))) => json,
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let mut out = String::new();
    write_literal(base, &json, &mut out)?;
    Ok(Some(out))
}

fn base_type(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(base) => base_type(base),
        _ => ty,
    }
}

fn write_literal(ty: &Type, json: &Json, out: &mut String) -> Result<(), String> {
    let ty = base_type(ty);
    match (ty.kind(), json) {
        (Kind::Array(element), Json::Array(items)) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Json::Null => out.push_str("NULL"),
                    // Another dimension of the same array.
                    Json::Array(_) if !matches!(base_type(element).kind(), Kind::Array(_)) => {
                        write_literal(ty, item, out)?
                    }
                    _ => {
                        let mut element_text = String::new();
                        write_literal(element, item, &mut element_text)?;
                        quote_element(&element_text, out);
                    }
                }
            }
            out.push('}');
        }
        (Kind::Composite(fields), Json::Object(object)) => {
            if let Some(unknown) = object
                .keys()
                .find(|k| !fields.iter().any(|f| f.name() == k.as_str()))
            {
                let names: Vec<&str> = fields.iter().map(Field::name).collect();
                return Err(format!(
                    "type {} has no attribute {unknown:?}; its attributes are: {}",
                    ty.name(),
                    names.join(", ")
                ));
            }
            out.push('(');
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match object.get(field.name()) {
                    None | Some(Json::Null) => {}
                    Some(value) => {
                        let mut field_text = String::new();
                        write_literal(field.type_(), value, &mut field_text)?;
                        quote_element(&field_text, out);
                    }
                }
            }
            out.push(')');
        }
        (Kind::Array(_), other) | (Kind::Composite(_), other) => {
            return Err(format!(
                "{} needs a JSON {}, not {}",
                ty.name(),
                if matches!(ty.kind(), Kind::Array(_)) {
                    "array"
                } else {
                    "object"
                },
                json_kind(other)
            ));
        }
        (_, Json::String(s)) => out.push_str(s),
        (_, Json::Null) => {}
        // Numbers keep the digits the client sent (serde_json's
        // arbitrary_precision): `0.10` stays `0.10`, never a float.
        (_, Json::Number(n)) => out.push_str(n.as_str()),
        // json/jsonb elements, booleans: their JSON text.
        (_, other) => out.push_str(&other.to_string()),
    }
    Ok(())
}

fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// An element of an array or row literal, double-quoted with `"` and `\`
/// escaped, so that commas, braces, spaces and the word NULL stay data.
fn quote_element(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array_of(element: Type) -> Type {
        Type::new("arr".into(), 0, Kind::Array(element), "public".into())
    }

    fn item() -> Type {
        Type::new(
            "item".into(),
            0,
            Kind::Composite(vec![
                Field::new("id".into(), Type::INT4),
                Field::new("label".into(), Type::TEXT),
                Field::new("tags".into(), Type::TEXT_ARRAY),
            ]),
            "public".into(),
        )
    }

    /// The binary format of a one-dimensional array of int4.
    fn int4_array(values: &[Option<i32>]) -> Vec<u8> {
        let mut raw = Vec::new();
        for v in [1i32, 1, 23, values.len() as i32, 1] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        for v in values {
            match v {
                Some(v) => {
                    raw.extend_from_slice(&4i32.to_be_bytes());
                    raw.extend_from_slice(&v.to_be_bytes());
                }
                None => raw.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        raw
    }

    #[test]
    fn arrays_render_as_json_arrays() {
        let raw = int4_array(&[Some(1), None, Some(-3)]);
        assert_eq!(render(&Type::INT4_ARRAY, &raw).unwrap(), "[1,null,-3]");
        let empty = [0i32, 0, 23]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<_>>();
        assert_eq!(render(&Type::INT4_ARRAY, &empty).unwrap(), "[]");
        // Two dimensions, 2 × 1.
        let mut two = Vec::new();
        for v in [2i32, 0, 23, 2, 1, 1, 1, 4, 7, 4, 8] {
            two.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(render(&Type::INT4_ARRAY, &two).unwrap(), "[[7],[8]]");
        assert!(matches!(
            render(&Type::INT4_ARRAY, &raw[..10]),
            Err(Unreadable::Malformed(_))
        ));
    }

    #[test]
    fn composites_render_as_objects_by_attribute_name() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&3i32.to_be_bytes());
        raw.extend_from_slice(&23u32.to_be_bytes());
        raw.extend_from_slice(&4i32.to_be_bytes());
        raw.extend_from_slice(&7i32.to_be_bytes());
        raw.extend_from_slice(&25u32.to_be_bytes());
        raw.extend_from_slice(&3i32.to_be_bytes());
        raw.extend_from_slice(b"a\"b");
        raw.extend_from_slice(&1009u32.to_be_bytes());
        raw.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            render(&item(), &raw).unwrap(),
            r#"{"id":7,"label":"a\"b","tags":null}"#
        );
    }

    #[test]
    fn json_becomes_array_and_row_literals() {
        let lit = |ty: &Type, json: &str| literal(ty, json).unwrap().unwrap();
        assert_eq!(lit(&Type::INT4_ARRAY, "[1, null, 3]"), r#"{"1",NULL,"3"}"#);
        assert_eq!(
            lit(
                &Type::NUMERIC_ARRAY,
                "[19.99, 0.10, 12345678901234567.89, 1e-30]"
            ),
            r#"{"19.99","0.10","12345678901234567.89","1e-30"}"#
        );
        assert_eq!(
            lit(&Type::JSONB_ARRAY, r#"[{"n": 0.10}, 12345678901234567.89]"#),
            r#"{"{\"n\":0.10}","12345678901234567.89"}"#
        );
        assert_eq!(
            lit(&Type::INT4_ARRAY, "[[1,2],[3,4]]"),
            r#"{{"1","2"},{"3","4"}}"#
        );
        assert_eq!(
            lit(&Type::TEXT_ARRAY, r#"["a,b", "NULL", "q\"\\"]"#),
            r#"{"a,b","NULL","q\"\\"}"#
        );
        assert_eq!(
            lit(&item(), r#"{"id": 1, "label": "x y", "tags": ["t"]}"#),
            r#"("1","x y","{\"t\"}")"#
        );
        assert_eq!(lit(&item(), r#"{"id": 2}"#), r#"("2",,)"#);
        assert_eq!(
            lit(&array_of(item()), r#"[{"id": 1}, null]"#),
            r#"{"(\"1\",,)",NULL}"#
        );
        // Not JSON of that shape: a literal already, passed on.
        assert_eq!(literal(&Type::INT4_ARRAY, "{1,2}").unwrap(), None);
        assert_eq!(literal(&Type::INT4, "[1]").unwrap(), None);
        let unknown = literal(&item(), r#"{"nope": 1}"#).unwrap_err();
        assert!(unknown.contains("no attribute \"nope\"") && unknown.contains("id, label, tags"));
        let wrong = literal(&array_of(item()), r#"[[1]]"#).unwrap_err();
        assert!(wrong.contains("needs a JSON object"), "{wrong}");
    }

    #[test]
    fn numbers_stay_exact_json_numbers() {
        assert_eq!(json_number("12.50"), "12.50");
        assert_eq!(json_number("-.5"), "-0.5");
        assert_eq!(json_number("+4."), "4");
        assert!(readable(&Type::INT4_ARRAY));
        assert!(readable(&item()));
        assert!(!readable(&Type::POINT_ARRAY));
    }
}
