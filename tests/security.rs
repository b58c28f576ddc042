//! Who may call what: bearer tokens, the allowlist, names that try to
//! inject SQL (refused before any database round-trip), loopback-only
//! without tokens.

mod common;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use tonic::Code;
use tonic::metadata::MetadataValue;

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The services a reflection endpoint lists; `$version` is `v1` or `v1alpha`,
/// whose generated types are distinct but alike.
macro_rules! reflected_services {
    ($version:ident, $gw:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new($gw.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match responses.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_the_token_but_health_and_reflection() {
    let gw = Gateway::start(&["--token", "s3cret", "--token", "second"]).await;
    let mut client = gw.client().await;
    let sum = || pb::ExecuteSyncRequest {
        call: Some(call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(1)),
                p_in("b", Kind::IntegerValue(2)),
            ],
        )),
    };
    for token in [None, Some("wrong"), Some("s3cre"), Some("")] {
        let status = client
            .execute_sync(with_token(sum(), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        assert!(!status.message().contains("s3cret"));
    }
    for token in ["s3cret", "second"] {
        client
            .execute_sync(with_token(sum(), Some(token)))
            .await
            .unwrap();
    }
    let listed = client
        .list_jobs(with_token(pb::ListJobsRequest::default(), None))
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::Unauthenticated);
    let watch = client
        .watch_job(with_token(
            pb::WatchJobRequest {
                id: uuid::Uuid::new_v4().to_string(),
                since_revision: 0,
                ..Default::default()
            },
            Some("wrong"),
        ))
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::Unauthenticated);

    // Health needs no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(gw.channel().await);
    eventually(std::time::Duration::from_secs(10), "SERVING", || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "procgate.v1.ProcedureService".into(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            (status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                .then_some(())
        }
    })
    .await;
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();

    // Reflection needs no token, in both v1 and v1alpha.
    let service = "procgate.v1.ProcedureService".to_string();
    assert!(reflected_services!(v1, gw).contains(&service));
    assert!(reflected_services!(v1alpha, gw).contains(&service));
}

/// Statements the database has run, except the health probe (`SELECT 1`,
/// normalised to `SELECT $1`) and the test's own bookkeeping.
async fn statements_run(gw: &Gateway) -> i64 {
    let rows = gw
        .sql(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
              WHERE query <> 'SELECT $1' AND query NOT LIKE '%pg_stat_%'",
        )
        .await;
    rows[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_attempts_in_names_never_reach_the_database() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let ten_kb = "p".repeat(10_000);
    let names = [
        "x; drop table t",
        "pkg_etl.sumar; DROP TABLE pkg_etl.ventas",
        "a.b.c.d",
        "pkg_etl.sumar()",
        "pkg_etl.sumar(a => 1)",
        "\"unterminated",
        "\"a\"\"b\"",
        "pkg_etl.\"x\0y\"",
        "pkg_etl.sumar--",
        "pkg_etl.sumar/**/",
        "pkg_etl..sumar",
        "",
        " pkg_etl.sumar",
        "pkg\u{7f}etl.sumar",
        "pkg_etl.sümar",
        "1pkg.sumar",
        ten_kb.as_str(),
    ];
    let before = statements_run(&gw).await;
    for name in names {
        for sync in [true, false] {
            let c = call(name, vec![p_in("a", Kind::IntegerValue(1))]);
            let status = if sync {
                execute(&mut client, c).await.unwrap_err()
            } else {
                client
                    .submit_async(pb::SubmitAsyncRequest {
                        call: Some(c),
                        request_id: String::new(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err()
            };
            assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
            assert!(
                status.message().contains("procedure name"),
                "{}",
                status.message()
            );
            assert!(status.message().len() < 400, "message quotes 10 kB back");
        }
        let status = client
            .describe_procedure(pb::DescribeProcedureRequest {
                procedure: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
    }
    for param in ["a; drop table t", "a b", "\"a\0\"", "a.b", ""] {
        let status = execute(
            &mut client,
            call("pkg_etl.sumar", vec![p_in(param, Kind::IntegerValue(1))]),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{param:?}");
        assert!(
            status.message().contains("parameter name"),
            "{}",
            status.message()
        );
    }
    assert_eq!(
        statements_run(&gw).await,
        before,
        "a refused request reached the database"
    );

    // The counter does count: a valid call moves it.
    execute(
        &mut client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(1)),
                p_in("b", Kind::IntegerValue(1)),
            ],
        ),
    )
    .await
    .unwrap();
    assert!(statements_run(&gw).await > before);

    // A quoted name may hold anything but quotes and NUL: it is a name, not
    // SQL, and the lookup simply finds nothing.
    let status = execute(
        &mut client,
        call("\"x; drop table pkg_etl.ventas\"", vec![]),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let rows = gw.sql("SELECT count(*) FROM pkg_etl.ventas").await;
    assert_eq!(rows[0].get::<_, i64>(0), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_limits_callable_procedures() {
    let gw = Gateway::start(&["--allow", "pkg_etl.*", "--allow", "public.add_*"]).await;
    let mut client = gw.client().await;
    let allowed = execute(
        &mut client,
        function(
            "public.add_days",
            vec![p_in("d", Kind::DateValue("2024-01-01".into()))],
            pb::ValueType::Date,
        ),
    )
    .await;
    assert!(allowed.is_ok(), "{allowed:?}");
    for name in ["public.nap", "nap", "twice", "\"Sales\".\"Total\""] {
        let status = execute(&mut client, call(name, vec![])).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{name}");
        let status = client
            .submit_async(pb::SubmitAsyncRequest {
                call: Some(call(name, vec![])),
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{name}");
    }
    let status = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "public.nap".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_only_loopback_is_served() {
    let db = start_db().await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = procgate::config::ServeConfig::parse_from(Vec::<String>::new()).unwrap();
    let result = procgate::server::run(listener, config, &db.url(), std::future::pending()).await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("--token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_schemas_are_closed_unless_their_flag_opens_them() {
    let gw = Gateway::start(&["--allow", "*"]).await;
    let mut client = gw.client().await;
    // A session the hostile caller would like to end.
    let (victim, connection) = tokio_postgres::connect(&gw.db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let terminate = |name: &str| {
        function(
            name,
            vec![p_in("pid", Kind::IntegerValue(pid.into()))],
            pb::ValueType::Boolean,
        )
    };

    let before = statements_run(&gw).await;
    let qualified = execute(&mut client, terminate("pg_catalog.pg_terminate_backend"))
        .await
        .unwrap_err();
    assert_eq!(qualified.code(), Code::PermissionDenied, "{qualified:?}");
    assert!(
        qualified.message().contains("--allow-system-schemas"),
        "{}",
        qualified.message()
    );
    let submitted = client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(terminate("PG_CATALOG.pg_terminate_backend")),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(submitted.code(), Code::PermissionDenied);
    let described = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: "information_schema._pg_truetypid".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(described.code(), Code::PermissionDenied);
    assert_eq!(
        statements_run(&gw).await,
        before,
        "qualified system names are refused before any round trip"
    );

    // Unqualified, it resolves into pg_catalog: refused after the lookup.
    for rpc in ["execute", "describe"] {
        let status = if rpc == "execute" {
            execute(&mut client, terminate("pg_terminate_backend"))
                .await
                .unwrap_err()
        } else {
            client
                .describe_procedure(pb::DescribeProcedureRequest {
                    procedure: "pg_terminate_backend".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err()
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
        assert!(
            status
                .message()
                .contains("resolved to pg_catalog.pg_terminate_backend"),
            "{rpc}: {}",
            status.message()
        );
    }
    // Parameters that do not fit are refused for the schema, not described.
    let status = execute(
        &mut client,
        call(
            "pg_read_file",
            vec![p_in("filename", Kind::StringValue("/etc/passwd".into()))],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        !status.message().contains("parameters are"),
        "{}",
        status.message()
    );
    let alive: i32 = victim.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(alive, 1, "the victim session survived");
    drop(client);
    gw.shutdown().await.unwrap();

    // The flag opens them, within --allow.
    let open = Gateway::start(&["--allow-system-schemas"]).await;
    let mut client = open.client().await;
    let pid = execute(
        &mut client,
        function("pg_catalog.pg_backend_pid", vec![], pb::ValueType::Integer),
    )
    .await
    .unwrap();
    assert!(matches!(
        kind_of(pid.return_value.as_ref()),
        Some(Kind::IntegerValue(p)) if *p > 0
    ));
    let unqualified = execute(
        &mut client,
        function("pg_backend_pid", vec![], pb::ValueType::Integer),
    )
    .await;
    assert!(unqualified.is_ok(), "{unqualified:?}");
    let bounded = Gateway::start_url(
        &open.db_url,
        &["--allow-system-schemas", "--allow", "public.*"],
    )
    .await;
    let status = execute(
        &mut bounded.client().await,
        function("pg_catalog.pg_backend_pid", vec![], pb::ValueType::Integer),
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "--allow stays the outer bound"
    );
}
