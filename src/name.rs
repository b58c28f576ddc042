//! Procedure and parameter names: parsed, never pasted.
//!
//! Names are the only part of a request that ends up in statement text (values
//! are always bound), so this module is the injection boundary. A name is 1–3
//! dot-separated parts; each part is a plain identifier
//! (`[A-Za-z_][A-Za-z0-9_$#]*`, at most 128 characters) or a double-quoted
//! identifier with no `"` or NUL inside. Anything else is rejected before any
//! database round-trip. Backends render a parsed name with their own case
//! folding (PostgreSQL lower-cases plain identifiers, Oracle upper-cases them)
//! and always re-quote, so the text they build can only name an object.

use std::fmt;

/// The longest identifier we accept: Oracle 12.2+ and PostgreSQL (63 bytes,
/// truncated) both fit in it.
pub const MAX_IDENTIFIER_LEN: usize = 128;

/// One part of a name, as written by the client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifier {
    text: String,
    quoted: bool,
}

impl Identifier {
    /// Parses one identifier (plain or double-quoted). `what` names the thing
    /// in error messages ("procedure name", "parameter name").
    pub fn parse(input: &str, what: &str) -> Result<Self, NameError> {
        let mut parts = split_parts(input, what)?;
        if parts.len() != 1 {
            return Err(NameError::new(
                what,
                input,
                "must be a single identifier, without dots",
            ));
        }
        Ok(parts.remove(0))
    }

    /// The identifier as the client wrote it, without quotes.
    pub fn as_written(&self) -> &str {
        &self.text
    }

    /// Whether it was double-quoted (and so keeps its exact case).
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }

    /// PostgreSQL's view: plain identifiers fold to lower case.
    pub fn folded_lower(&self) -> String {
        if self.quoted {
            self.text.clone()
        } else {
            self.text.to_lowercase()
        }
    }

    /// Oracle's view: plain identifiers fold to upper case.
    pub fn folded_upper(&self) -> String {
        if self.quoted {
            self.text.clone()
        } else {
            self.text.to_uppercase()
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            write!(f, "\"{}\"", self.text)
        } else {
            f.write_str(&self.text)
        }
    }
}

/// A procedure or function name: 1 to 3 parts (`proc`, `schema.proc`,
/// `pkg.proc`, `schema.pkg.proc`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcedureName {
    parts: Vec<Identifier>,
}

impl ProcedureName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        const WHAT: &str = "procedure name";
        let parts = split_parts(input, WHAT)?;
        if parts.len() > 3 {
            return Err(NameError::new(
                WHAT,
                input,
                "has more than 3 dot-separated parts (at most schema.package.procedure)",
            ));
        }
        Ok(Self { parts })
    }

    pub fn parts(&self) -> &[Identifier] {
        &self.parts
    }

    /// A name as the catalog spells it, part by part: each part is quoted,
    /// so the name is exactly that object's.
    pub fn exact(parts: &[&str]) -> Self {
        Self {
            parts: parts
                .iter()
                .map(|text| Identifier {
                    text: text.to_string(),
                    quoted: true,
                })
                .collect(),
        }
    }

    /// The last part: the procedure itself.
    pub fn object(&self) -> &Identifier {
        self.parts
            .last()
            .expect("a parsed name has at least one part")
    }

    /// The name with plain parts lower-cased, for matching (`--allow`) and
    /// display: `public.load_sales`.
    pub fn normalised(&self) -> String {
        self.parts
            .iter()
            .map(Identifier::folded_lower)
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl fmt::Display for ProcedureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{part}")?;
        }
        Ok(())
    }
}

/// Why a name was refused; the message quotes a printable, shortened form of
/// the input so that a person can find the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {shown}: {reason}")]
pub struct NameError {
    what: String,
    shown: String,
    reason: String,
}

impl NameError {
    fn new(what: &str, input: &str, reason: impl Into<String>) -> Self {
        Self {
            what: what.to_string(),
            shown: printable(input),
            reason: reason.into(),
        }
    }
}

/// A quoted, escaped and shortened rendering of untrusted input for messages.
pub fn printable(input: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = input.chars().take(SHOWN).collect();
    if input.chars().count() > SHOWN {
        shown.push('…');
    }
    format!("{shown:?}")
}

fn split_parts(input: &str, what: &str) -> Result<Vec<Identifier>, NameError> {
    let fail = |reason: &str| NameError::new(what, input, reason);
    if input.is_empty() {
        return Err(fail("is empty"));
    }
    let mut parts = Vec::new();
    let mut rest = input;
    loop {
        let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| fail("has a double quote that is never closed"))?;
            let text = &quoted[..end];
            if text.is_empty() {
                return Err(fail("has an empty quoted identifier"));
            }
            if text.contains('\0') {
                return Err(fail("contains a NUL character"));
            }
            if text.chars().any(char::is_control) {
                return Err(fail("contains a control character"));
            }
            check_length(text).map_err(|r| fail(&r))?;
            (
                Identifier {
                    text: text.to_string(),
                    quoted: true,
                },
                &quoted[end + 1..],
            )
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let text = &rest[..end];
            check_plain(text).map_err(|r| fail(&r))?;
            (
                Identifier {
                    text: text.to_string(),
                    quoted: false,
                },
                &rest[end..],
            )
        };
        parts.push(part);
        if parts.len() > 3 {
            // Stop early: a 10 kB name of dots is not worth walking.
            return Ok(parts);
        }
        match after.strip_prefix('.') {
            None if after.is_empty() => return Ok(parts),
            None => return Err(fail("has characters after a quoted identifier")),
            Some("") => return Err(fail("ends with a dot")),
            Some(next) => rest = next,
        }
    }
}

fn check_plain(text: &str) -> Result<(), String> {
    let mut chars = text.chars();
    match chars.next() {
        None => return Err("has an empty part".into()),
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        Some(c) => {
            return Err(format!(
                "part {} must start with a letter or _ (found {c:?})",
                printable(text)
            ));
        }
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '#')))
    {
        return Err(format!(
            "part {} contains {bad:?}; plain identifiers allow letters, digits, _, $ and # \
             (double-quote the part for anything else)",
            printable(text)
        ));
    }
    check_length(text)
}

fn check_length(text: &str) -> Result<(), String> {
    let len = text.chars().count();
    if len > MAX_IDENTIFIER_LEN {
        return Err(format!(
            "has a part of {len} characters (at most {MAX_IDENTIFIER_LEN})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_quoted_parts() {
        let name = ProcedureName::parse("PKG_ETL.proceso_largo").unwrap();
        assert_eq!(name.parts().len(), 2);
        assert_eq!(name.normalised(), "pkg_etl.proceso_largo");
        assert_eq!(name.object().folded_upper(), "PROCESO_LARGO");

        let name = ProcedureName::parse(r#"app."Mixed Case".p$1#"#).unwrap();
        assert_eq!(name.parts()[1].as_written(), "Mixed Case");
        assert!(name.parts()[1].is_quoted());
        assert_eq!(name.normalised(), "app.Mixed Case.p$1#");
        assert_eq!(name.to_string(), r#"app."Mixed Case".p$1#"#);
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a".repeat(129);
        let ten_kb = "x".repeat(10_000);
        let cases: &[&str] = &[
            "",
            "x; drop table t",
            "a.b.c.d",
            "a..b",
            ".a",
            "a.",
            "1abc",
            "a-b",
            "a b",
            "\"a\"\"b\"",
            "\"unterminated",
            "\"\"",
            "\"a\0b\"",
            "a\0b",
            "\"a\nb\"",
            "tab\tname",
            "café",
            "\"x\"y",
            "p()",
            "p'--",
            &long,
            &ten_kb,
        ];
        for case in cases {
            let err = ProcedureName::parse(case).expect_err(case);
            assert!(
                err.to_string().starts_with("invalid procedure name"),
                "{err}"
            );
        }
    }

    #[test]
    fn identifiers_are_single_parts() {
        assert!(Identifier::parse("p_fecha", "parameter name").is_ok());
        let err = Identifier::parse("a.b", "parameter name").unwrap_err();
        assert!(err.to_string().contains("single identifier"));
    }

    #[test]
    fn error_messages_shorten_long_input() {
        let err = ProcedureName::parse(&"y".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }
}
