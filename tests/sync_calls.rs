//! ExecuteSync against a real PostgreSQL: every type in every direction,
//! functions, cursors and sets, errors with their codes, deadlines.

mod common;

use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, ValueType as T};
use prost_types::Timestamp;
use tonic::Code;

fn every_type() -> Vec<(&'static str, Kind)> {
    vec![
        ("s", Kind::StringValue("ñandú «quoted» 'x'; --".into())),
        ("i", Kind::IntegerValue(i64::MIN + 1)),
        (
            "n",
            Kind::NumberValue("-123456789012345678901234567890.000100".into()),
        ),
        ("f", Kind::FloatValue(0.1 + 0.2)),
        ("b", Kind::BoolValue(true)),
        ("d", Kind::DateValue("2024-02-29".into())),
        (
            "ts",
            Kind::TimestampValue(Timestamp {
                seconds: 1_714_559_400,
                nanos: 123_456_000,
            }),
        ),
        ("bin", Kind::BytesValue(vec![0, 1, 2, 254, 255])),
        (
            "c",
            Kind::StringValue("a long text\nwith lines".repeat(100)),
        ),
        (
            "j",
            Kind::JsonValue(r#"{"b": [1, 2.50, null], "a": "x"}"#.into()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_in_out_exactly() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let params = every_type()
        .into_iter()
        .map(|(name, kind)| p_inout(name, kind))
        .collect();
    let response = execute(&mut client, call("echo_inout", params))
        .await
        .unwrap();
    for (name, kind) in every_type() {
        assert_eq!(
            kind_of(response.outputs.get(name)),
            Some(&kind),
            "IN OUT {name} came back changed"
        );
    }
    assert!(response.elapsed.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_in_then_out_exactly() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let out_types = [
        T::String,
        T::Integer,
        T::Number,
        T::Float,
        T::Boolean,
        T::Date,
        T::Timestamp,
        T::Bytes,
        T::Clob,
        T::Json,
    ];
    let mut params: Vec<pb::Param> = every_type()
        .into_iter()
        .map(|(name, kind)| p_in(name, kind))
        .collect();
    for ((name, _), t) in every_type().into_iter().zip(out_types) {
        params.push(p_out(&format!("{name}_out"), t));
    }
    let response = execute(&mut client, call("public.copy_out", params))
        .await
        .unwrap();
    for (name, kind) in every_type() {
        assert_eq!(
            kind_of(response.outputs.get(&format!("{name}_out"))),
            Some(&kind),
            "OUT {name}_out differs from IN {name}"
        );
    }

    // NULLs travel too.
    let nulls = every_type()
        .into_iter()
        .map(|(name, _)| p_inout(name, Kind::NullValue(0)))
        .collect();
    let response = execute(&mut client, call("echo_inout", nulls))
        .await
        .unwrap();
    assert!(
        response
            .outputs
            .values()
            .all(|v| matches!(v.kind, Some(Kind::NullValue(_)))),
        "{:?}",
        response.outputs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untyped_strings_are_typed_by_the_signature_and_checked() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    // Strings for numeric parameters are cast by the server: exact.
    let response = execute(
        &mut client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::StringValue("0.1".into())),
                p_in("b", Kind::NumberValue("0.20".into())),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(response.outputs.get("total")),
        Some(&Kind::NumberValue("0.30".into()))
    );
    assert_eq!(
        kind_of(response.outputs.get("descripcion")),
        Some(&Kind::StringValue("0.1 + 0.20 = 0.30".into()))
    );

    // A value that does not fit its declared type is refused, naming it.
    for (param, kind) in [
        ("small", Kind::IntegerValue(40_000)),
        ("medium", Kind::StringValue("twelve".into())),
        ("medium", Kind::BoolValue(true)),
    ] {
        let mut params = vec![
            p_in("small", Kind::IntegerValue(1)),
            p_in("medium", Kind::IntegerValue(1)),
        ];
        params.retain(|p| p.name != param);
        params.push(p_in(param, kind));
        let status = execute(&mut client, call("narrow", params))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(param), "{}", status.message());
    }

    // Unknown, missing and misdirected parameters name the culprit.
    let cases = [
        (
            vec![p_in("medium", Kind::IntegerValue(1))],
            "missing parameter small",
        ),
        (
            vec![
                p_in("small", Kind::IntegerValue(1)),
                p_in("medium", Kind::IntegerValue(1)),
                p_in("bogus", Kind::IntegerValue(1)),
            ],
            "no parameter bogus",
        ),
        (
            vec![
                p_in("small", Kind::IntegerValue(1)),
                p_out("medium", T::Integer),
            ],
            "parameter medium",
        ),
    ];
    for (params, expected) in cases {
        let status = execute(&mut client, call("narrow", params))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(expected), "{}", status.message());
    }

    // Defaults apply to parameters left out.
    let response = execute(
        &mut client,
        call(
            "narrow",
            vec![
                p_in("small", Kind::IntegerValue(2)),
                p_in("medium", Kind::IntegerValue(40_000)),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(response.outputs.get("total")),
        Some(&Kind::IntegerValue(40_002))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_return_values_rows_and_cursors() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;

    let scalar = execute(
        &mut client,
        function(
            "add_days",
            vec![p_in("d", Kind::DateValue("2024-12-31".into()))],
            T::Date,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(scalar.return_value.as_ref()),
        Some(&Kind::DateValue("2025-01-01".into()))
    );

    let out_params = execute(
        &mut client,
        call(
            "split_amount",
            vec![
                p_in("amount", Kind::NumberValue("100.00".into())),
                p_in("parts", Kind::IntegerValue(3)),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(out_params.outputs.get("each")),
        Some(&Kind::NumberValue("33.33".into()))
    );
    assert_eq!(
        kind_of(out_params.outputs.get("remainder")),
        Some(&Kind::NumberValue("0.01".into()))
    );

    // A refcursor returned by a function.
    let report = execute(
        &mut client,
        function("pkg_etl.reporte_ventas", vec![], T::Cursor),
    )
    .await
    .unwrap();
    let Some(Kind::RowsValue(rows)) = kind_of(report.return_value.as_ref()) else {
        panic!("expected rows, got {:?}", report.return_value);
    };
    let names: Vec<_> = rows.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["region", "ventas", "total"]);
    assert_eq!(rows.columns[2].r#type, T::Number as i32);
    assert_eq!(rows.rows.len(), 4);
    assert_eq!(
        rows.rows[0].values[0].kind,
        Some(Kind::StringValue("este".into()))
    );

    // A set-returning function.
    let set = execute(
        &mut client,
        function(
            "pkg_etl.ventas_por_region",
            vec![p_in("p_region", Kind::StringValue("norte".into()))],
            T::Cursor,
        ),
    )
    .await
    .unwrap();
    let Some(Kind::RowsValue(rows)) = kind_of(set.return_value.as_ref()) else {
        panic!("expected rows, got {:?}", set.return_value);
    };
    assert_eq!(rows.rows.len(), 100);
    assert!(!rows.truncated);

    // A refcursor IN OUT parameter of a procedure.
    let numbers = execute(
        &mut client,
        call(
            "open_numbers",
            vec![p_in("n", Kind::IntegerValue(3)), p_out("rows", T::Cursor)],
        ),
    )
    .await
    .unwrap();
    let Some(Kind::RowsValue(rows)) = kind_of(numbers.outputs.get("rows")) else {
        panic!("expected rows, got {:?}", numbers.outputs);
    };
    assert_eq!(rows.rows.len(), 3);
    assert_eq!(
        rows.rows[2].values,
        vec![
            value(Kind::IntegerValue(3)),
            value(Kind::NumberValue("4.5".into())),
            value(Kind::StringValue("n3".into())),
        ]
    );

    // Overloads are told apart by their parameter names.
    let text = execute(
        &mut client,
        function(
            "twice",
            vec![p_in("t", Kind::StringValue("ab".into()))],
            T::String,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(text.return_value.as_ref()),
        Some(&Kind::StringValue("abab".into()))
    );
    let number = execute(
        &mut client,
        function("twice", vec![p_in("x", Kind::IntegerValue(21))], T::Integer),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(number.return_value.as_ref()),
        Some(&Kind::IntegerValue(42))
    );

    // Quoted identifiers keep their case.
    let quoted = execute(
        &mut client,
        function(
            r#""Sales"."Total""#,
            vec![p_in(r#""Amount""#, Kind::NumberValue("1.25".into()))],
            T::Number,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(quoted.return_value.as_ref()),
        Some(&Kind::NumberValue("2.50".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_stop_at_the_row_cap() {
    let gw = Gateway::start(&["--max-cursor-rows", "5"]).await;
    let mut client = gw.client().await;
    let response = execute(
        &mut client,
        call(
            "open_numbers",
            vec![p_in("n", Kind::IntegerValue(50)), p_out("rows", T::Cursor)],
        ),
    )
    .await
    .unwrap();
    let Some(Kind::RowsValue(rows)) = kind_of(response.outputs.get("rows")) else {
        panic!("expected rows");
    };
    assert_eq!(rows.rows.len(), 5);
    assert!(rows.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_keep_their_code() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;

    let status = execute(
        &mut client,
        call(
            "pkg_etl.validar_lote",
            vec![p_in("p_lote", Kind::IntegerValue(-1))],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("lote -1 inválido"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("mayor que cero"),
        "hint kept: {}",
        status.message()
    );
    assert_eq!(status.metadata().get("procgate-db-code").unwrap(), "P0001");

    for (sqlstate, code) in [
        ("40P01", Code::Aborted),
        ("55P03", Code::Aborted),
        ("23505", Code::FailedPrecondition),
        ("22012", Code::InvalidArgument),
        ("53200", Code::ResourceExhausted),
        ("XX000", Code::Internal),
    ] {
        let status = execute(
            &mut client,
            call(
                "fail_with",
                vec![
                    p_in("code", Kind::StringValue(sqlstate.into())),
                    p_in("message", Kind::StringValue(format!("raised {sqlstate}"))),
                ],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), code, "{sqlstate}: {status:?}");
        assert_eq!(status.message(), format!("raised {sqlstate}"));
        assert_eq!(status.metadata().get("procgate-db-code").unwrap(), sqlstate);
    }

    let missing = execute(&mut client, call("no_such_proc", vec![]))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("no_such_proc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_come_back_as_messages_and_commits_are_allowed() {
    let gw = Gateway::start(&["--max-messages", "3"]).await;
    let mut client = gw.client().await;
    let response = execute(
        &mut client,
        call("chatty", vec![p_in("lines", Kind::IntegerValue(5))]),
    )
    .await
    .unwrap();
    assert_eq!(response.messages, ["line 3", "line 4", "line 5"]);
    assert_eq!(response.messages_dropped, 2, "as a job counts them");

    execute(
        &mut client,
        call(
            "commit_twice",
            vec![p_in("note", Kind::StringValue("c".into()))],
        ),
    )
    .await
    .expect("a procedure that COMMITs runs outside a transaction block");
    let rows = gw.sql("SELECT count(*) FROM public.audit").await;
    assert_eq!(rows[0].get::<_, i64>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_cancels_the_statement() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let mut request = tonic::Request::new(pb::ExecuteSyncRequest {
        call: Some(call("nap", vec![p_in("seconds", Kind::FloatValue(30.0))])),
    });
    request.set_timeout(Duration::from_millis(800));
    let started = std::time::Instant::now();
    let status = client.execute_sync(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually(Duration::from_secs(5), "no busy session", || async {
        (gw.active_sessions("pg_sleep").await + gw.active_sessions("CALL").await == 0).then_some(())
    })
    .await;

    // The connection went back healthy: the next call works.
    execute(
        &mut client,
        call("nap", vec![p_in("seconds", Kind::FloatValue(0.0))]),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_databases_statement_timeout_is_a_deadline_not_a_cancel() {
    let db = start_db().await;
    // Every session of this gateway starts with a 300 ms statement_timeout.
    let url = format!("{}?options=-c%20statement_timeout%3D300", db.url());
    let gw = Gateway::start_url(&url, &[]).await;
    let mut client = gw.client().await;
    let nap = call("nap", vec![p_in("seconds", Kind::FloatValue(5.0))]);
    let status = execute(&mut client, nap.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.metadata().get("procgate-db-code").unwrap(), "57014");
    assert!(
        status.message().contains("statement timeout"),
        "{}",
        status.message()
    );

    let job = submit(&mut client, nap).await;
    let job = wait_job(&client, &job.id, "ended", |j| j.end_time.is_some()).await;
    assert_eq!(state_of(&job), pb::JobState::Failed, "{job:?}");
    let error = job.error.unwrap();
    assert_eq!(error.code, Code::DeadlineExceeded as i32, "{error:?}");
    assert_eq!(error.db_code, "57014");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_cancels_its_statement() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let call_task = tokio::spawn(async move {
        execute(
            &mut client,
            call("nap", vec![p_in("seconds", Kind::FloatValue(30.0))]),
        )
        .await
    });
    eventually(Duration::from_secs(10), "the nap to start", || async {
        (gw.active_sessions("CALL \"public\".\"nap\"").await == 1).then_some(())
    })
    .await;
    call_task.abort();
    eventually(
        Duration::from_secs(10),
        "the nap to be cancelled",
        || async { (gw.active_sessions("CALL \"public\".\"nap\"").await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_reads_the_catalog() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let d = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "pkg_etl.proceso_largo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.procedure, "pkg_etl.proceso_largo");
    assert_eq!(d.returns, T::Unspecified as i32);
    let summary: Vec<_> = d
        .params
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.direction,
                p.r#type,
                p.db_type.as_str(),
                p.has_default,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "p_fecha",
                pb::Direction::In as i32,
                T::Date as i32,
                "date",
                false
            ),
            (
                "p_pasos",
                pb::Direction::In as i32,
                T::Integer as i32,
                "integer",
                true
            ),
            (
                "p_pausa_ms",
                pb::Direction::In as i32,
                T::Integer as i32,
                "integer",
                true
            ),
            (
                "p_resultado",
                pb::Direction::InOut as i32,
                T::String as i32,
                "text",
                true
            ),
        ]
    );

    let f = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "pkg_etl.reporte_ventas".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.returns, T::Cursor as i32);
    assert_eq!(f.returns_db_type, "refcursor");

    let twice = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "twice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        twice.overloads,
        ["public.twice(integer)", "public.twice(text)"]
    );
    assert_eq!(
        twice.overload, "public.twice(integer)",
        "the first by default"
    );
    assert_eq!(twice.params[0].name, "x");
    let text = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "twice".into(),
            overload: "public.twice(text)".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(text.overload, "public.twice(text)");
    assert_eq!(text.params[0].name, "t");
    let unknown = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "twice".into(),
            overload: "public.twice(date)".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains(
            "has no overload \"public.twice(date)\"; its overloads: public.twice(integer), \
             public.twice(text)"
        ),
        "{}",
        unknown.message()
    );

    let missing = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "pkg_etl.nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_says_the_procedure_ran() {
    let gw = Gateway::start(&["--max-response-bytes", "4000"]).await;
    let mut client = gw.client().await;
    let status = execute(
        &mut client,
        call(
            "open_numbers",
            vec![
                p_in("n", Kind::IntegerValue(1000)),
                p_out("rows", pb::ValueType::Cursor),
            ],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    for needle in ["procedure ran", "--max-response-bytes", "4000"] {
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
}

/// Overloads whose parameter names are the same: the call names one by its
/// id, and without one the error lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_the_names_cannot_tell_is_named_by_its_id() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let label = |overload: &str| pb::ProcedureCall {
        overload: overload.into(),
        ..function(
            "public.label",
            vec![p_in("v", Kind::StringValue("7".into()))],
            pb::ValueType::String,
        )
    };
    let status = execute(&mut client, label("")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(
            "has 2 overloads that these parameters fit: public.label(integer), public.label(text); \
             name one in the call's overload"
        ),
        "{}",
        status.message()
    );
    for (overload, answer) in [
        ("public.label(integer)", "integer 7"),
        ("public.label(text)", "text 7"),
    ] {
        let outcome = execute(&mut client, label(overload)).await.unwrap();
        assert_eq!(
            kind_of(outcome.return_value.as_ref()),
            Some(&Kind::StringValue(answer.into())),
            "{overload}"
        );
    }
    let status = execute(&mut client, label("public.label(date)"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // A job keeps its overload.
    let job = submit(&mut client, label("public.label(text)")).await;
    let done = wait_state(&client, &job.id, pb::JobState::Completed).await;
    assert_eq!(
        kind_of(done.return_value.as_ref()),
        Some(&Kind::StringValue("text 7".into()))
    );
}
