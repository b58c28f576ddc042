//! What operations see, checked with their own tools: `/metrics` scraped and
//! parsed by Python's prometheus_client, `/healthz` and `/readyz` as a load
//! balancer reads them, and the audit trail as a file.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use serde_json::Value as Json;
use tonic::Code;

/// A scrape, as Python's prometheus_client parsed it.
struct Scrape {
    content_type: String,
    eof: bool,
    types: serde_json::Map<String, Json>,
    samples: Vec<(String, serde_json::Map<String, Json>, f64)>,
}

impl Scrape {
    /// The sample `name` whose labels include every pair of `labels`; 0
    /// when there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(Json::as_str) == Some(v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        matching.iter().sum()
    }

    /// Every value of one label across the samples of `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| Some(l.get(label)?.as_str()?.to_string()))
            .collect()
    }
}

fn python(args: &[&str]) -> Json {
    let output = std::process::Command::new(project_python())
        .arg("tests/python/scrape.py")
        .args(args)
        .output()
        .expect("running tests/python/scrape.py");
    assert!(
        output.status.success(),
        "scrape.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("scrape.py prints JSON")
}

async fn scrape(port: u16, accept: Option<&str>) -> Scrape {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut args = vec!["metrics".to_string(), url];
    args.extend(accept.map(str::to_string));
    let parsed = tokio::task::spawn_blocking(move || {
        python(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    Scrape {
        content_type: parsed["content_type"].as_str().unwrap().to_string(),
        eof: parsed["eof"].as_bool().unwrap(),
        types: parsed["types"].as_object().unwrap().clone(),
        samples: parsed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_str().unwrap().to_string(),
                    s[1].as_object().unwrap().clone(),
                    s[2].as_f64().unwrap(),
                )
            })
            .collect(),
    }
}

async fn http_status(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let answer = tokio::task::spawn_blocking(move || python(&["status", &url]))
        .await
        .unwrap();
    (
        answer["status"].as_u64().unwrap() as u16,
        answer["body"].as_str().unwrap().to_string(),
    )
}

fn sumar(a: i64, b: i64) -> pb::ProcedureCall {
    call(
        "pkg_etl.sumar",
        vec![
            p_in("a", Kind::IntegerValue(a)),
            p_in("b", Kind::IntegerValue(b)),
        ],
    )
}

const SYNC: &[(&str, &str)] = &[
    ("grpc_service", "procgate.v1.ProcedureService"),
    ("grpc_method", "ExecuteSync"),
    ("grpc_type", "unary"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_jobs_failures_and_watches_by_their_names() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::start(&["--metrics-listen", &listen]).await;
    let mut client = gw.client().await;

    for i in 0..3 {
        execute(&mut client, sumar(i, 1)).await.unwrap();
    }
    let failed = execute(
        &mut client,
        call(
            "pkg_etl.validar_lote",
            vec![p_in("p_lote", Kind::IntegerValue(0))],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(failed.code(), Code::FailedPrecondition);
    let job = submit(&mut client, long_load(2, 10)).await;
    let seen = watch_to_end(&mut client, &job.id).await;
    assert_eq!(state_of(seen.last().unwrap()), pb::JobState::Completed);
    // A WatchJobs stream held open while the scrape runs.
    let feed = client
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let first = scrape(port, None).await;
    assert!(
        first.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        first.content_type
    );
    assert!(!first.eof, "the Prometheus text format has no # EOF");
    assert_eq!(first.value("grpc_server_started_total", SYNC), 4.0);
    let ok = [SYNC, &[("grpc_code", "OK")]].concat();
    assert_eq!(first.value("grpc_server_handled_total", &ok), 3.0);
    let precondition = [SYNC, &[("grpc_code", "FailedPrecondition")]].concat();
    assert_eq!(first.value("grpc_server_handled_total", &precondition), 1.0);
    assert_eq!(first.value("grpc_server_handling_seconds_count", SYNC), 4.0);
    assert!(first.value("grpc_server_handling_seconds_sum", SYNC) > 0.0);
    let inf = [SYNC, &[("le", "+Inf")]].concat();
    assert_eq!(
        first.value("grpc_server_handling_seconds_bucket", &inf),
        4.0
    );
    assert_eq!(first.types["grpc_server_handling_seconds"], "histogram");

    let calls = "procgate_procedure_calls_total";
    let sumar_ok = [
        ("procedure", "pkg_etl.sumar"),
        ("mode", "sync"),
        ("outcome", "OK"),
    ];
    assert_eq!(first.value(calls, &sumar_ok), 3.0);
    let raised = [
        ("procedure", "pkg_etl.validar_lote"),
        ("mode", "sync"),
        ("outcome", "FAILED_PRECONDITION"),
    ];
    assert_eq!(first.value(calls, &raised), 1.0);
    let job_ok = [
        ("procedure", "pkg_etl.proceso_largo"),
        ("mode", "job"),
        ("outcome", "OK"),
    ];
    assert_eq!(first.value(calls, &job_ok), 1.0);
    let duration = "procgate_procedure_duration_seconds_count";
    assert_eq!(
        first.value(
            duration,
            &[("procedure", "pkg_etl.sumar"), ("mode", "sync")]
        ),
        3.0
    );
    assert!(
        first.value(
            "procgate_procedure_duration_seconds_sum",
            &[("procedure", "pkg_etl.proceso_largo"), ("mode", "job")]
        ) >= 0.02,
        "a job of 2 × 10 ms lasts at least 20 ms"
    );
    assert_eq!(first.value("procgate_jobs", &[("state", "COMPLETED")]), 1.0);
    assert_eq!(first.value("procgate_jobs", &[("state", "RUNNING")]), 0.0);
    assert_eq!(
        first.value("procgate_job_queue_wait_seconds_count", &[]),
        1.0
    );
    assert!(first.value("procgate_db_pool_wait_seconds_count", &[]) >= 5.0);
    let pool = first.value("procgate_db_pool_connections", &[("state", "idle")])
        + first.value("procgate_db_pool_connections", &[("state", "busy")]);
    assert!(pool >= 1.0, "the pool holds the connections the calls used");
    assert_eq!(
        first.value("procgate_watch_streams", &[("rpc", "WatchJobs")]),
        1.0
    );
    assert_eq!(
        first.value("procgate_watch_streams", &[("rpc", "WatchJob")]),
        0.0
    );
    assert_eq!(
        first.value(
            "grpc_server_handled_total",
            &[("grpc_method", "WatchJob"), ("grpc_code", "OK")]
        ),
        1.0,
        "the WatchJob stream ended OK with its job"
    );
    assert!(first.value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(first.value("process_open_fds", &[]) > 3.0);
    assert!(first.value("process_cpu_seconds_total", &[]) > 0.0);
    let started = first.value("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 600.0..=now + 1.0).contains(&started),
        "{started} vs {now}"
    );
    assert_eq!(
        first.value(
            "procgate_build_info",
            &[
                ("backend", "postgres"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        1.0
    );

    // A hostile client calling 1,000 names that do not exist, or cannot:
    // counted, under one label value.
    let procedures_before = first.label_values(calls, "procedure");
    for i in 0..1000 {
        let name = match i % 3 {
            0 => format!("nope_{i}.missing_{}", fastrand::u64(..)),
            1 => format!("x{i}; DROP TABLE t{i}"),
            _ => format!("\"{i}\"\"q\".\"{}\"", fastrand::u64(..)),
        };
        let status = execute(&mut client, call(&name, vec![])).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::NotFound | Code::InvalidArgument),
            "{name}: {status:?}"
        );
    }
    drop(feed);
    let second = scrape(port, None).await;
    let mut expected = procedures_before.clone();
    expected.insert("<invalid>".into());
    assert_eq!(second.label_values(calls, "procedure"), expected);
    assert_eq!(
        second.label_values("procgate_procedure_duration_seconds_count", "procedure"),
        expected
    );
    let invalid = second.value(calls, &[("procedure", "<invalid>")])
        - first.value(calls, &[("procedure", "<invalid>")]);
    assert_eq!(invalid, 1000.0);
    assert_eq!(second.value("grpc_server_started_total", SYNC), 1004.0);
    assert_eq!(
        second.value("procgate_watch_streams", &[("rpc", "WatchJobs")]),
        0.0,
        "the WatchJobs stream was closed"
    );

    // OpenMetrics, for a scraper that asks for it.
    let open = scrape(
        port,
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    )
    .await;
    assert!(
        open.content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        open.content_type
    );
    assert!(open.eof);
    assert_eq!(open.value("grpc_server_started_total", SYNC), 1004.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database_and_healthz_the_process() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut gw = Gateway::start(&["--metrics-listen", &listen, "--pool-timeout", "1s"]).await;
    let ready = eventually(Duration::from_secs(30), "/readyz to answer 200", || async {
        let (status, body) = http_status(port, "/readyz").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(ready, "ready\n");
    assert_eq!(http_status(port, "/healthz").await.0, 200);

    let db = gw.db.take().unwrap();
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
    let not_ready = eventually(Duration::from_secs(30), "/readyz to answer 503", || async {
        let (status, body) = http_status(port, "/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        not_ready.contains("the database does not answer"),
        "{not_ready}"
    );
    assert_eq!(
        http_status(port, "/healthz").await.0,
        200,
        "the process is up, whatever the database"
    );
    assert_eq!(http_status(port, "/nothing").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_stops_the_start_with_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let db = start_db().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config =
        procgate::config::ServeConfig::parse_from(["--metrics-listen", listen.as_str()]).unwrap();
    let err = procgate::server::run(listener, config, &db.url(), std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--metrics-listen") && err.contains(&listen),
        "{err}"
    );
}

/// The application_names of the sessions that match `pattern` (LIKE).
async fn sessions_named(gw: &Gateway, pattern: &str) -> Vec<(String, String)> {
    gw.sql(&format!(
        "SELECT application_name, state FROM pg_stat_activity WHERE application_name LIKE '{pattern}'"
    ))
    .await
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dba_sees_whose_each_database_session_is() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;

    let job = submit(&mut client, long_load(12, 250)).await;
    let wanted = format!("procgate job {}", job.id);
    let seen = eventually(
        Duration::from_secs(20),
        "the job's tagged session",
        || async {
            let sessions = sessions_named(&gw, "procgate job %").await;
            (!sessions.is_empty()).then_some(sessions)
        },
    )
    .await;
    assert_eq!(seen, vec![(wanted.clone(), "active".to_string())]);
    wait_state(&client, &job.id, pb::JobState::Completed).await;
    let after = sessions_named(&gw, "procgate%").await;
    assert!(
        after.iter().all(|(name, _)| name == "procgate"),
        "back in the pool, a session shows no job: {after:?}"
    );
    assert!(!after.is_empty(), "the job's session stays pooled");

    let mut sync_client = gw.client().await;
    let sync = tokio::spawn(async move { execute(&mut sync_client, long_load(12, 250)).await });
    let seen = eventually(
        Duration::from_secs(20),
        "the sync call's tagged session",
        || async {
            let sessions = sessions_named(&gw, "procgate sync %").await;
            (!sessions.is_empty()).then_some(sessions)
        },
    )
    .await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (name, state) = &seen[0];
    let id = name.strip_prefix("procgate sync ").unwrap();
    assert!(
        id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "a short id: {name}"
    );
    assert_eq!(state, "active");
    sync.await.unwrap().unwrap();
    assert!(sessions_named(&gw, "procgate sync %").await.is_empty());
}

/// A span as tests/python/otlp_receiver.py received it.
fn spans_named<'a>(spans: &'a [Json], name: &str) -> Vec<&'a Json> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_receiver_and_continue_the_callers_trace() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let receiver_port = free_port();
    let mut receiver = Command::new(project_python())
        .arg("tests/python/otlp_receiver.py")
        .arg(receiver_port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the OTLP receiver");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = receiver.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(30)).unwrap(),
        "listening"
    );

    let db = start_db().await;
    let port = free_port();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &db.url()])
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{receiver_port}"),
        ])
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut client = connect_when_listening(port).await;

    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut request = tonic::Request::new(pb::ExecuteSyncRequest {
        call: Some(sumar(2, 3)),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{parent}-01").parse().unwrap(),
    );
    client.execute_sync(request).await.unwrap();
    // A failed call's span says so; a streamed call's database span is a
    // child of its RPC's, as a sync call's is.
    let failed = client
        .execute_sync(pb::ExecuteSyncRequest {
            call: Some(call(
                "pkg_etl.validar_lote",
                vec![p_in("p_lote", Kind::IntegerValue(0))],
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::FailedPrecondition);
    let mut stream = client
        .execute_stream(pb::ExecuteSyncRequest {
            call: Some(call("pkg_etl.reporte_ventas", vec![])),
        })
        .await
        .unwrap()
        .into_inner();
    while tokio_stream::StreamExt::next(&mut stream)
        .await
        .transpose()
        .unwrap()
        .is_some()
    {}

    let submit_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(pb::SubmitAsyncRequest {
        call: Some(long_load(1, 10)),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{submit_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let job = client.submit_async(request).await.unwrap().into_inner();
    wait_state(&client, &job.id, pb::JobState::Completed).await;

    // Spans leave in batches every 100 ms; gather until all are in.
    let mut spans: Vec<Json> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let complete = |spans: &[Json]| {
        spans_named(spans, "procgate job").len() == 1
            && spans_named(spans, "CALL pkg_etl.proceso_largo").len() == 1
            && spans_named(spans, "CALL pkg_etl.sumar").len() == 1
            && spans_named(spans, "procgate.v1.ProcedureService/SubmitAsync").len() == 1
            && spans_named(spans, "CALL pkg_etl.reporte_ventas").len() == 1
            && spans_named(spans, "CALL pkg_etl.validar_lote").len() == 1
    };
    while !complete(&spans) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("spans missing after 30 s: {spans:#?}"));
        spans.push(serde_json::from_str(&line).unwrap());
    }
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    receiver.kill().unwrap();
    receiver.wait().unwrap();

    let sync = spans_named(&spans, "procgate.v1.ProcedureService/ExecuteSync");
    assert_eq!(sync.len(), 2, "{spans:#?}");
    let sync = *sync
        .iter()
        .find(|s| s["trace_id"] == trace)
        .expect("the span of the call that sent a traceparent");
    assert_eq!(
        sync["trace_id"], trace,
        "the server span continues the caller's trace"
    );
    assert_eq!(sync["parent_span_id"], parent);
    assert_eq!(sync["kind"], "SPAN_KIND_SERVER");
    assert_eq!(sync["service"], "procgate");
    assert_eq!(sync["attributes"]["rpc.system"], "grpc");
    assert_eq!(sync["attributes"]["rpc.method"], "ExecuteSync");
    let db_call = spans_named(&spans, "CALL pkg_etl.sumar")[0];
    assert_eq!(db_call["trace_id"], trace);
    assert_eq!(
        db_call["parent_span_id"], sync["span_id"],
        "the database call is a child"
    );
    assert_eq!(db_call["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(db_call["attributes"]["db.system"], "postgresql");
    assert_eq!(db_call["attributes"]["db.operation.name"], "CALL");
    assert_eq!(
        db_call["attributes"]["db.stored_procedure.name"],
        "pkg_etl.sumar"
    );

    assert_eq!(sync["status"], "STATUS_CODE_UNSET");
    assert_eq!(sync["attributes"]["rpc.grpc.status_code"], 0);
    let raised = spans_named(&spans, "procgate.v1.ProcedureService/ExecuteSync")
        .into_iter()
        .find(|s| s["attributes"]["rpc.grpc.status_code"] == 9)
        .expect("the failed ExecuteSync's span");
    assert_eq!(raised["status"], "STATUS_CODE_ERROR");
    let streamed = spans_named(&spans, "procgate.v1.ProcedureService/ExecuteStream")[0];
    let streamed_call = spans_named(&spans, "CALL pkg_etl.reporte_ventas")[0];
    assert_eq!(streamed_call["parent_span_id"], streamed["span_id"]);
    assert_eq!(streamed_call["trace_id"], streamed["trace_id"]);

    let submitted = spans_named(&spans, "procgate.v1.ProcedureService/SubmitAsync")[0];
    assert_eq!(submitted["trace_id"], submit_trace);
    let run = spans_named(&spans, "procgate job")[0];
    assert_eq!(
        run["links"],
        serde_json::json!([{"trace_id": submit_trace, "span_id": submitted["span_id"]}]),
        "the job's run links to the SubmitAsync that queued it"
    );
    let job_call = spans_named(&spans, "CALL pkg_etl.proceso_largo")[0];
    assert_eq!(job_call["parent_span_id"], run["span_id"]);
    assert_eq!(job_call["trace_id"], run["trace_id"]);
}

fn audit_lines(path: &std::path::Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each audit line is one JSON object"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_says_who_called_what_and_never_a_value() {
    let (dir, tokens) = token_file("etl:secret-etl-0042\nops:secret-ops-0042:admin\n");
    let audit = dir.path().join("audit.jsonl");
    let gw = Gateway::start(&[
        "--token-file",
        &tokens,
        "--audit-log",
        audit.to_str().unwrap(),
    ])
    .await;
    let mut client = gw.client().await;
    let etl = "secret-etl-0042";

    let secret_value = 918_273_645;
    client
        .execute_sync(as_user(
            pb::ExecuteSyncRequest {
                call: Some(sumar(secret_value, 1)),
            },
            etl,
        ))
        .await
        .unwrap();
    let raised = client
        .execute_sync(as_user(
            pb::ExecuteSyncRequest {
                call: Some(call(
                    "pkg_etl.validar_lote",
                    vec![p_in("p_lote", Kind::IntegerValue(-777_123))],
                )),
            },
            etl,
        ))
        .await
        .unwrap_err();
    assert_eq!(raised.code(), Code::FailedPrecondition);
    let job = client
        .submit_async(as_user(
            pb::SubmitAsyncRequest {
                call: Some(long_load(1, 10)),
                ..Default::default()
            },
            etl,
        ))
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .execute_sync(pb::ExecuteSyncRequest {
            call: Some(sumar(1, 1)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // Not audited: it names no procedure and no job.
    client
        .list_jobs(as_user(pb::ListJobsRequest::default(), etl))
        .await
        .unwrap();
    let got = client
        .get_job(as_user(
            pb::GetJobRequest {
                id: job.id.clone(),
                ..Default::default()
            },
            "secret-ops-0042",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, job.id);

    let lines = eventually(Duration::from_secs(10), "five audit lines", || {
        let lines = audit_lines(&audit);
        async move { (lines.len() >= 5).then_some(lines) }
    })
    .await;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for line in &lines {
        for key in [
            "time",
            "owner",
            "peer",
            "method",
            "procedure",
            "job_id",
            "code",
            "db_code",
            "duration",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert!(
            line["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(line["duration"].as_f64().unwrap() >= 0.0);
        assert!(
            chrono::DateTime::parse_from_rfc3339(line["time"].as_str().unwrap()).is_ok(),
            "{line}"
        );
    }
    let field = |i: usize, key: &str| lines[i][key].as_str().unwrap().to_string();
    let sync = "procgate.v1.ProcedureService/ExecuteSync";
    assert_eq!(
        (
            field(0, "method"),
            field(0, "owner"),
            field(0, "procedure"),
            field(0, "code")
        ),
        (
            sync.into(),
            "etl".into(),
            "pkg_etl.sumar".into(),
            "OK".into()
        )
    );
    assert_eq!(
        (field(1, "code"), field(1, "db_code"), field(1, "procedure")),
        (
            "FAILED_PRECONDITION".into(),
            "P0001".into(),
            "pkg_etl.validar_lote".into()
        )
    );
    assert_eq!(
        field(2, "method"),
        "procgate.v1.ProcedureService/SubmitAsync"
    );
    assert_eq!(field(2, "job_id"), job.id);
    assert_eq!(
        (field(3, "code"), field(3, "owner"), field(3, "method")),
        ("UNAUTHENTICATED".into(), String::new(), sync.into())
    );
    assert_eq!(
        (field(4, "method"), field(4, "owner"), field(4, "job_id")),
        (
            "procgate.v1.ProcedureService/GetJob".into(),
            "ops".into(),
            job.id.clone()
        )
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    for never in [
        "918273645",
        "777123",
        "secret-etl",
        "secret-ops",
        "inválido",
    ] {
        assert!(
            !text.contains(never),
            "{never} leaked into the audit log: {text}"
        );
    }

    // logrotate moves the file away and sends SIGHUP: the next event goes
    // to a new file at the same path.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).unwrap();
    // SAFETY: the gateway in this process has replaced SIGHUP's default
    // action with its reload handler.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let reopened = eventually(Duration::from_secs(10), "the audit log reopened", || {
        let mut client = client.clone();
        let audit = audit.clone();
        async move {
            client
                .describe_procedure(as_user(
                    pb::DescribeProcedureRequest {
                        procedure: "pkg_etl.sumar".into(),
                        ..Default::default()
                    },
                    etl,
                ))
                .await
                .ok()?;
            let lines = audit_lines(&audit);
            (!lines.is_empty()).then_some(lines)
        }
    })
    .await;
    assert_eq!(
        reopened[0]["method"],
        "procgate.v1.ProcedureService/DescribeProcedure"
    );
    assert_eq!(audit_lines(&rotated).len(), 5 + count_describes(&rotated));
}

/// DescribeProcedure calls written to the old file before the reopen.
fn count_describes(path: &std::path::Path) -> usize {
    audit_lines(path)
        .iter()
        .filter(|l| l["method"] == "procgate.v1.ProcedureService/DescribeProcedure")
        .count()
}
