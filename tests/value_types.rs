//! The PostgreSQL types beyond the basic ones, in and out: intervals as ISO
//! 8601 durations, arrays and composites as JSON, the infinities of dates,
//! timestamps and numerics, and the text form of any other type when asked
//! for as STRING. An output that cannot be returned is refused before the
//! call runs.

mod common;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use tonic::Code;

fn json(text: &str) -> Kind {
    Kind::JsonValue(text.into())
}

fn parsed(kind: Option<&Kind>) -> serde_json::Value {
    match kind {
        Some(Kind::JsonValue(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("not JSON: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_arrays_composites_and_infinities_round_trip() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let params = vec![
        p_inout("iv", Kind::StringValue("P1Y2M3DT4H5M6.5S".into())),
        p_inout("ts", Kind::StringValue("infinity".into())),
        p_inout("d", Kind::StringValue("-infinity".into())),
        p_inout("n", Kind::NumberValue("NaN".into())),
        p_inout("ints", json("[1, null, -3]")),
        p_inout("grid", json(r#"[["a b", "c,d"], ["\"q\"", "NULL"]]"#)),
        p_inout(
            "thing",
            json(r#"{"id": 7, "label": "x \"y\"", "tags": ["t1", "t2"]}"#),
        ),
        p_inout("things", json(r#"[{"id": 1}, null, {"label": "two"}]"#)),
    ];
    let answer = execute(&mut client, call("echo_more", params))
        .await
        .unwrap();
    let out = |name: &str| kind_of(answer.outputs.get(name)).cloned();
    assert_eq!(
        out("iv"),
        Some(Kind::StringValue("P1Y2M3DT4H5M6.5S".into()))
    );
    assert_eq!(out("ts"), Some(Kind::StringValue("infinity".into())));
    assert_eq!(out("d"), Some(Kind::StringValue("-infinity".into())));
    assert_eq!(out("n"), Some(Kind::NumberValue("NaN".into())));
    assert_eq!(
        parsed(answer.outputs["ints"].kind.as_ref()),
        serde_json::json!([1, null, -3])
    );
    assert_eq!(
        parsed(answer.outputs["grid"].kind.as_ref()),
        serde_json::json!([["a b", "c,d"], ["\"q\"", "NULL"]])
    );
    assert_eq!(
        parsed(answer.outputs["thing"].kind.as_ref()),
        serde_json::json!({"id": 7, "label": "x \"y\"", "tags": ["t1", "t2"]})
    );
    assert_eq!(
        parsed(answer.outputs["things"].kind.as_ref()),
        serde_json::json!([
            {"id": 1, "label": null, "tags": null},
            null,
            {"id": null, "label": "two", "tags": null}
        ])
    );

    // Exact decimals inside JSON stay exact; years PostgreSQL has and
    // protobuf dates do not come back as PostgreSQL writes them, and go in
    // again as such.
    let answer = execute(
        &mut client,
        call(
            "echo_more",
            vec![
                p_inout(
                    "amounts",
                    json("[19.99, 0.10, 12345678901234567.89, 1e-30, 100000000000000000000000001]"),
                ),
                p_inout("d", Kind::StringValue("0044-03-15 BC".into())),
                p_inout(
                    "ts",
                    Kind::StringValue("294276-12-31 23:59:59.999999".into()),
                ),
            ],
        ),
    )
    .await
    .unwrap();
    let Some(Kind::JsonValue(amounts)) = kind_of(answer.outputs.get("amounts")) else {
        panic!("{answer:?}");
    };
    assert_eq!(
        amounts,
        "[19.99,0.10,12345678901234567.89,0.000000000000000000000000000001,100000000000000000000000001]"
    );
    assert_eq!(
        kind_of(answer.outputs.get("d")),
        Some(&Kind::StringValue("0044-03-15 BC".into()))
    );
    assert_eq!(
        kind_of(answer.outputs.get("ts")),
        Some(&Kind::StringValue("294276-12-31 23:59:59.999999".into()))
    );

    // Numeric infinities, and an interval's negative parts.
    let answer = execute(
        &mut client,
        call(
            "echo_more",
            vec![
                p_inout("n", Kind::NumberValue("-Infinity".into())),
                p_inout("iv", Kind::StringValue("-1 day -3.5 seconds".into())),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(answer.outputs.get("n")),
        Some(&Kind::NumberValue("-Infinity".into()))
    );
    assert_eq!(
        kind_of(answer.outputs.get("iv")),
        Some(&Kind::StringValue("P-1DT-3.5S".into()))
    );

    // One composite result is one JSON object.
    let item = execute(
        &mut client,
        function(
            "make_item",
            vec![
                p_in("id", Kind::IntegerValue(3)),
                p_in("label", Kind::StringValue("three".into())),
            ],
            pb::ValueType::Json,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        parsed(kind_of(item.return_value.as_ref())),
        serde_json::json!({"id": 3, "label": "three", "tags": ["new"]})
    );

    // A huge bad value gets a short message, not a header clients refuse.
    let status = execute(
        &mut client,
        call(
            "echo_more",
            vec![p_inout("iv", Kind::StringValue("z".repeat(20_000)))],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{}",
        status.message().len()
    );
    assert!(
        status.message().len() < 1_100,
        "{} bytes",
        status.message().len()
    );

    // JSON that does not fit is refused, naming the parameter and attribute.
    let status = execute(
        &mut client,
        call("echo_more", vec![p_inout("thing", json(r#"{"nope": 1}"#))]),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("thing") && status.message().contains("nope"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_with_infinite_and_undecodable_values_comes_back_whole() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let answer = execute(
        &mut client,
        function("dated_rows", vec![], pb::ValueType::Cursor),
    )
    .await
    .unwrap();
    let Some(Kind::RowsValue(rows)) = kind_of(answer.return_value.as_ref()) else {
        panic!("no rows: {answer:?}");
    };
    assert_eq!(rows.rows.len(), 3, "every row kept");
    let cell = |r: usize, c: usize| rows.rows[r].values[c].kind.clone();
    let text = |t: &str| Some(Kind::StringValue(t.into()));
    assert_eq!(cell(0, 0), text("infinity"));
    assert_eq!(cell(0, 1), text("-infinity"));
    assert_eq!(cell(0, 2), Some(Kind::NumberValue("NaN".into())));
    assert_eq!(cell(0, 3), text("(1,2)"), "point in its text form");
    assert_eq!(cell(0, 4), text("P1DT2H"));
    assert_eq!(cell(1, 0), Some(Kind::DateValue("2024-02-29".into())));
    assert_eq!(cell(1, 2), Some(Kind::NumberValue("12.50".into())));
    assert_eq!(cell(1, 4), text("PT-3.5S"));
    assert_eq!(cell(2, 0), text("-infinity"));
    assert_eq!(cell(2, 1), text("infinity"));
    assert_eq!(cell(2, 3), text("(0.5,-3)"));
    assert_eq!(cell(2, 4), text("PT0S"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_cannot_be_returned_is_refused_before_anything_runs() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let audit_rows = |note: &'static str| {
        let gw = &gw;
        async move {
            gw.sql(&format!(
                "SELECT count(*) FROM public.audit WHERE note = '{note}'"
            ))
            .await[0]
                .get::<_, i64>(0)
        }
    };
    let status = execute(
        &mut client,
        call(
            "insert_then_point",
            vec![
                p_in("note", Kind::StringValue("refused".into())),
                p_out("spot", pb::ValueType::Unspecified),
            ],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    for needle in ["spot", "point", "STRING", "nothing was run"] {
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
    assert_eq!(audit_rows("refused").await, 0, "the procedure did not run");

    // Asked for as STRING, it runs once and answers the text form.
    let answer = execute(
        &mut client,
        call(
            "insert_then_point",
            vec![
                p_in("note", Kind::StringValue("as text".into())),
                p_out("spot", pb::ValueType::String),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(answer.outputs.get("spot")),
        Some(&Kind::StringValue("(1,2)".into()))
    );
    assert_eq!(audit_rows("as text").await, 1);
}
