//! Running procgate: health follows the database, shutdown drains, the
//! binary starts on an embedded database by default, exits 0 on SIGTERM and
//! never logs a secret.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_down_and_back() {
    let mut gw = Gateway::start(&["--pool-timeout", "1s", "--connect-timeout", "1s"]).await;
    let mut client = gw.client().await;
    gw.health_becomes(ServingStatus::Serving).await;

    let db = gw.db.take().unwrap();
    let port = db.port();
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
    gw.health_becomes(ServingStatus::NotServing).await;
    let status = execute(
        &mut client,
        call("nap", vec![p_in("seconds", Kind::FloatValue(0.0))]),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Back on the same port: SERVING again, calls work, no restart needed.
    gw.bring_db_back(port).await;
    gw.health_becomes(ServingStatus::Serving).await;
    execute(
        &mut client,
        call("nap", vec![p_in("seconds", Kind::FloatValue(0.0))]),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_sync_calls_finish_and_cancels_jobs() {
    let gw = Gateway::start(&["--grace-period", "10s"]).await;
    let mut client = gw.client().await;
    let job = submit(
        &mut client,
        call("nap", vec![p_in("seconds", Kind::FloatValue(60.0))]),
    )
    .await;
    wait_state(&client, &job.id, S::Running).await;
    let mut watcher = client.clone();
    let job_id = job.id.clone();
    let watch = tokio::spawn(async move { watch_to_end(&mut watcher, &job_id).await });
    let mut sync_client = client.clone();
    let sync = tokio::spawn(async move {
        execute(
            &mut sync_client,
            call("nap", vec![p_in("seconds", Kind::FloatValue(1.5))]),
        )
        .await
    });
    eventually(
        Duration::from_secs(5),
        "both naps in the database",
        || async { (gw.active_sessions("CALL \"public\".\"nap\"").await == 2).then_some(()) },
    )
    .await;

    let db_url = gw.db_url.clone();
    let mut gw = gw;
    let _db = gw.db.take();
    let started = Instant::now();
    gw.shutdown().await.expect("a clean shutdown");
    assert!(started.elapsed() < Duration::from_secs(10));
    sync.await
        .unwrap()
        .expect("the in-flight sync call finished during the grace period");
    let seen = watch.await.unwrap();
    assert_eq!(state_of(seen.last().unwrap()), S::Cancelled);
    let busy = sql(
        &db_url,
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'CALL%'",
    )
    .await;
    assert_eq!(busy[0].get::<_, i64>(0), 0);
}

/// A procgate process with its stderr collected.
struct Procgate {
    child: Child,
    port: u16,
}

impl Procgate {
    fn spawn(args: &[&str]) -> Procgate {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_procgate"))
            .arg("serve")
            .args(["--listen", &listen])
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("PROCGATE_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Procgate { child, port }
    }

    async fn client(&self) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(60), "procgate to listen", || {
            let url = url.clone();
            async move { Client::connect(url).await.ok() }
        })
        .await
    }

    /// Sends SIGTERM; returns the exit code and everything logged.
    fn terminate(mut self) -> (Option<i32>, String) {
        // SAFETY: kill with a valid pid and signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "procgate ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut logs = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        (status.code(), logs)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_cleanly_on_sigterm_and_logs_no_secrets() {
    let db = start_db().await;
    let url = db.url();
    let password = password_of(&url);
    assert!(!password.is_empty());
    let procgate = Procgate::spawn(&[
        "--database-url",
        &url,
        "--token",
        "tok-abcdef-123456",
        "--log-format",
        "json",
    ]);
    let mut client = procgate.client().await;
    let mut request = tonic::Request::new(pb::ExecuteSyncRequest {
        call: Some(call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::NumberValue("7.25".into())),
                p_in("b", Kind::NumberValue("SECRET-VALUE".into())),
            ],
        )),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer tok-abcdef-123456".parse().unwrap());
    let refused = client.execute_sync(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let (code, logs) = tokio::task::spawn_blocking(move || procgate.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("procgate is listening"), "{logs}");
    assert!(
        logs.lines().all(|l| l.starts_with('{')),
        "JSON logs: {logs}"
    );
    for secret in [password.as_str(), "tok-abcdef-123456"] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_database_url_runs_an_embedded_postgres() {
    let procgate = Procgate::spawn(&[]);
    let mut client = procgate.client().await;
    let response = execute(
        &mut client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(2)),
                p_in("b", Kind::IntegerValue(3)),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(response.outputs.get("total")),
        Some(&Kind::NumberValue("5".into()))
    );
    let (code, logs) = tokio::task::spawn_blocking(move || procgate.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{logs}");
    let first_lines: String = logs.lines().take(3).collect();
    assert!(
        first_lines.contains("EMBEDDED THROWAWAY PostgreSQL"),
        "{logs}"
    );
    let data_dir = logs
        .lines()
        .find_map(|l| l.split("data_dir=").nth(1))
        .expect("the data dir is logged")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(data_dir.contains("procgate-pg-"), "{data_dir}");
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "the embedded database's data dir {data_dir} was left behind"
    );
}

/// Once shutdown returns, nothing of the gateway runs: its tasks are gone
/// (in memory mode, counted by the runtime itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_no_task_of_the_gateway_runs() {
    let db = start_db().await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let baseline = tasks();
    let gw = Gateway::start_url(&db.url(), &[]).await;
    {
        let mut client = gw.client().await;
        let nap = |seconds: f64| call("nap", vec![p_in("seconds", Kind::FloatValue(seconds))]);
        let done = submit(&mut client, nap(0.0)).await;
        watch_to_end(&mut client, &done.id).await;
        execute(&mut client, nap(0.0)).await.unwrap();
        submit(&mut client, nap(30.0)).await; // still running at shutdown
    }
    gw.shutdown().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the gateway's tasks to end",
        || async { (tasks() <= baseline).then_some(()) },
    )
    .await;
}

/// In database mode, once shutdown returns nothing more is written to the
/// store: the instance has left and its lease is never renewed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_database_store_is_left_alone() {
    let db = start_db().await;
    procgate::jobs::store::migrate(&db.url(), "public")
        .await
        .unwrap();
    let gw = Gateway::start_on(
        db,
        &["--job-store", "database", "--instance-lease", "300ms"],
    )
    .await;
    let url = gw.db_url.clone();
    {
        let mut client = gw.client().await;
        let job = submit(
            &mut client,
            call("nap", vec![p_in("seconds", Kind::FloatValue(0.0))]),
        )
        .await;
        watch_to_end(&mut client, &job.id).await;
    }
    let instances = || async {
        sql(&url, "SELECT count(*) FROM public.procgate_instances").await[0].get::<_, i64>(0)
    };
    assert_eq!(instances().await, 1);
    let db = {
        let mut gw = gw;
        let db = gw.db.take();
        gw.shutdown().await.unwrap();
        db
    };
    assert_eq!(instances().await, 0, "the instance left the store");
    // Three lease periods: a heartbeat still running would have come back.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(instances().await, 0, "no lease was written after shutdown");
    drop(db);
}
