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
