//! Property tests (proptest) of the two parsers that face untrusted input:
//! procedure names and request values. They must never panic, must accept
//! exactly what the grammar allows, and what they accept must survive a
//! round trip. tests/corpus/names.txt holds tricky names that always run,
//! and proptest-regressions/ keeps any failing case found.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use procgate::api::convert::{call_from_proto, value_to_proto};
use procgate::name::ProcedureName;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};

const CORPUS: &str = include_str!("corpus/names.txt");

/// 2000 cases per property; failures are kept in the repo's corpus.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/corpus/properties.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// A plain identifier: the grammar's own definition.
fn plain() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_$#]{0,20}"
}

/// A quoted identifier: anything but quotes, NUL and control characters.
fn quoted() -> impl Strategy<Value = String> {
    "[^\"\\x00-\\x1f\\x7f-\\x9f]{1,20}".prop_map(|s| format!("\"{s}\""))
}

fn part() -> impl Strategy<Value = String> {
    prop_oneof![plain(), quoted()]
}

/// Parts of an accepted name are each a plain or quoted identifier.
fn check_accepted(name: &ProcedureName) {
    assert!((1..=3).contains(&name.parts().len()));
    for part in name.parts() {
        let text = part.as_written();
        assert!(!text.is_empty() && !text.contains('"') && !text.contains('\0'));
        if !part.is_quoted() {
            let mut chars = text.chars();
            assert!(
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            );
            assert!(chars.all(|c| c.is_ascii_alphanumeric() || "_$#".contains(c)));
        }
    }
    // What is accepted prints back to the same name.
    assert_eq!(&ProcedureName::parse(&name.to_string()).unwrap(), name);
}

#[test]
fn the_corpus_of_tricky_names() {
    let mut accepted = 0;
    for line in CORPUS.lines() {
        if let Ok(name) = ProcedureName::parse(line) {
            check_accepted(&name);
            accepted += 1;
        }
    }
    assert!(
        accepted >= 5 && accepted < CORPUS.lines().count(),
        "{accepted}"
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_parsed_or_refused_without_panic(text in "\\PC{0,80}") {
        if let Ok(name) = ProcedureName::parse(&text) {
            check_accepted(&name);
        }
    }

    #[test]
    fn grammatical_names_are_accepted(parts in prop::collection::vec(part(), 1..=3)) {
        let text = parts.join(".");
        let name = ProcedureName::parse(&text).expect("a name of the grammar");
        prop_assert_eq!(name.parts().len(), parts.len());
        check_accepted(&name);
    }

    #[test]
    fn four_or_more_parts_are_refused(parts in prop::collection::vec(part(), 4..=6)) {
        prop_assert!(ProcedureName::parse(&parts.join(".")).is_err());
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::NullValue(0)),
        any::<String>().prop_map(Kind::StringValue),
        any::<i64>().prop_map(Kind::IntegerValue),
        "[+-]?[0-9]{0,30}(\\.[0-9]{0,10})?([eE][+-]?[0-9]{1,3})?".prop_map(Kind::NumberValue),
        any::<f64>().prop_map(Kind::FloatValue),
        any::<bool>().prop_map(Kind::BoolValue),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(Kind::DateValue),
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Kind::TimestampValue(
            prost_types::Timestamp { seconds, nanos }
        )),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Kind::BytesValue),
        any::<String>().prop_map(Kind::JsonValue),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any value, with any declared type and direction, converts or is
    /// refused as INVALID_ARGUMENT; what converts comes back unchanged.
    #[test]
    fn values_convert_or_are_refused(kind in kind(), value_type in 0i32..13, direction in 0i32..5) {
        let param = pb::Param {
            name: "p".into(),
            direction,
            r#type: value_type,
            value: Some(pb::Value { kind: Some(kind) }),
            size: 0,
        };
        let request = pb::ProcedureCall { procedure: "pkg.proc".into(), params: vec![param.clone()], returns: 0, overload: String::new() };
        match call_from_proto(Some(request)) {
            Err(error) => prop_assert!(
                matches!(error, procgate::error::Error::InvalidArgument(_)),
                "{error:?}"
            ),
            Ok(call) => {
                let converted = &call.params[0];
                if let Some(value) = &converted.value {
                    let again = pb::Param { value: Some(value_to_proto(value)), ..param };
                    let request = pb::ProcedureCall { procedure: "pkg.proc".into(), params: vec![again], returns: 0, overload: String::new() };
                    let round = call_from_proto(Some(request)).expect("a converted value converts again");
                    prop_assert_eq!(&round.params[0].value, &converted.value);
                }
            }
        }
    }
}
