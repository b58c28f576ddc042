//! The terminal client and the demo, run as the real binary against a real
//! server and PostgreSQL: output and exit codes (0 done, 1 RPC error,
//! 2 bad command line, 3 FAILED, 4 CANCELLED).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use procgate::proto::JobState as S;

fn procgate(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args(args)
        .env("PROCGATE_SERVER", server)
        .env_remove("PROCGATE_TOKEN")
        .output()
        .unwrap()
}

async fn run(server: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let server = server.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = procgate(&server, &args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_outputs_and_errors_on_one_line() {
    let gw = Gateway::start(&[]).await;
    let server = format!("http://{}", gw.addr);

    let (code, out, err) = run(&server, &["call", "pkg_etl.sumar", "a=1.25", "b:number=2"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("total") && out.contains("3.25"), "{out}");

    let (code, out, _) = run(
        &server,
        &["call", "pkg_etl.sumar", "a=1.25", "b=2", "--json"],
    )
    .await;
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["outputs"]["total"], "3.25");

    let (code, out, _) = run(
        &server,
        &["call", "pkg_etl.reporte_ventas", "--returns", "cursor"],
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(out.contains("region") && out.contains("norte"), "{out}");

    let (code, _, err) = run(&server, &["call", "pkg_etl.validar_lote", "p_lote=-1"]).await;
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: FAILED_PRECONDITION: lote -1"),
        "{err}"
    );
    assert!(err.contains("(db code P0001)"), "{err}");

    let (code, _, err) = run(&server, &["call", "pkg_etl.sumar", "a:integer=x"]).await;
    assert_eq!(
        code,
        Some(2),
        "a bad parameter is a command-line error: {err}"
    );
    assert!(err.contains("a:integer=x"), "{err}");

    let (code, _, err) = run(
        "http://127.0.0.1:1",
        &["call", "pkg_etl.sumar", "a=1", "b=2"],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("UNAVAILABLE"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_and_cancel_end_with_the_jobs_exit_code() {
    let gw = Gateway::start(&[]).await;
    let server = format!("http://{}", gw.addr);

    let (code, out, err) = run(
        &server,
        &[
            "submit",
            "pkg_etl.proceso_largo",
            "p_fecha=2024-05-01",
            "p_pasos=2",
            "p_pausa_ms=100",
            "--watch",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("COMPLETED"), "{out}");
    assert!(out.contains("2 pasos procesados para 2024-05-01"), "{out}");
    assert!(
        out.contains("RUNNING") && out.contains("%"),
        "one plain line per change: {out}"
    );

    let (code, out, _) = run(
        &server,
        &["submit", "pkg_etl.validar_lote", "p_lote=0", "--watch"],
    )
    .await;
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("FAILED") && out.contains("db code P0001"),
        "{out}"
    );

    let (code, id, _) = run(&server, &["submit", "nap", "seconds=60"]).await;
    assert_eq!(code, Some(0));
    let id = id.trim().to_string();
    let client = gw.client().await;
    wait_state(&client, &id, S::Running).await;
    let (code, out, _) = run(&server, &["cancel", &id]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains(&id), "{out}");
    let (code, out, _) = run(&server, &["watch", &id]).await;
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("CANCELLED"), "{out}");

    let (code, _, err) = run(&server, &["cancel", &id]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");

    let (code, out, _) = run(&server, &["jobs", "--state", "completed,failed"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("COMPLETED") && out.contains("FAILED"), "{out}");
    assert!(!out.contains("CANCELLED"), "{out}");

    let (code, out, _) = run(&server, &["jobs", "--procedure", "nap", "--json", "--full"]).await;
    assert_eq!(code, Some(0));
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["state"], "CANCELLED");
    let param = &jobs[0]["params"][0];
    assert_eq!(
        (&param["name"], &param["direction"]),
        (&"seconds".into(), &"IN".into()),
        "{out}"
    );
    assert!(!param["value"].is_null(), "{out}");
    assert_eq!(jobs[0]["cancel_requested"], true, "{out}");

    let (code, out, _) = run(&server, &["job", &id]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("seconds=60") && out.contains("CANCELLED"),
        "{out}"
    );

    let (code, out, _) = run(&server, &["describe", "pkg_etl.proceso_largo"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("p_fecha") && out.contains("date"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_the_environment() {
    let gw = Gateway::start(&["--token", "cli-secret"]).await;
    let server = format!("http://{}", gw.addr);
    let (code, _, err) = run(&server, &["jobs"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("UNAUTHENTICATED"), "{err}");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args(["jobs", "--server", &server])
            .env("PROCGATE_TOKEN", "cli-secret")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tours_and_leaves_nothing_behind() {
    let output = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args(["demo", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{out}\n{err}");
    for needle in [
        "$ procgate call pkg_etl.sumar",
        "13.25",
        "COMPLETED",
        "CANCELLED",
        "db code P0001",
        "$ procgate jobs",
    ] {
        assert!(
            out.contains(needle),
            "{needle} missing from the tour:\n{out}"
        );
    }
    let data_dir = demo_data_dir(&out);
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "{data_dir} left behind"
    );
    assert!(
        !processes_mentioning(&data_dir),
        "a postgres process of the demo is still running"
    );
}

/// Where the demo said its database lives.
fn demo_data_dir(transcript: &str) -> String {
    transcript
        .lines()
        .find_map(|l| l.split("its data in ").nth(1))
        .and_then(|rest| rest.split(" (removed").next())
        .expect("the demo says where its data lives")
        .to_string()
}

/// Whether any process's command line mentions `needle`.
fn processes_mentioning(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_stays_up_until_ctrl_c_then_cleans_up() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let (code, transcript) = tokio::task::spawn_blocking(|| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args(["demo", "--serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut transcript = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            transcript.push_str(&line);
            transcript.push('\n');
            if line.starts_with("procgate is serving on") {
                // SAFETY: kill with a valid pid and signal number.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            }
        }
        (child.wait().unwrap().code(), transcript)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{transcript}");
    assert!(
        transcript.contains("procgate is serving on"),
        "{transcript}"
    );
    let data_dir = demo_data_dir(&transcript);
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "{data_dir} left behind"
    );
    assert!(!processes_mentioning(&data_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_watch_prints_one_line_per_event() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let gw = Gateway::start(&[]).await;
    let server = format!("http://{}", gw.addr);
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args(["jobs", "--watch", "--procedure", "pkg_etl.sumar", "--json"])
        .env("PROCGATE_SERVER", &server)
        .env_remove("PROCGATE_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut submitted = None;
    let within = Duration::from_secs(20);
    while let Ok(Some(line)) = tokio::time::timeout(within, lines.recv()).await {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "SYNCED" && submitted.is_none() {
            let (code, out, err) = run(&server, &["submit", "pkg_etl.sumar", "a=1", "b=2"]).await;
            assert_eq!(code, Some(0), "{err}");
            submitted = Some(out.trim().to_string());
        }
        let done = event["event"] == "CHANGED" && event["job"]["state"] == "COMPLETED";
        seen.push(event);
        if done {
            break;
        }
    }
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let id = submitted.expect("a SYNCED line came");
    let events: Vec<(&str, &str)> = seen
        .iter()
        .filter(|e| e["event"] != "SYNCED")
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["job"]["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(events.first(), Some(&("CHANGED", "PENDING")), "{seen:?}");
    assert_eq!(events.last(), Some(&("CHANGED", "COMPLETED")), "{seen:?}");
    assert!(seen.iter().skip(1).all(|e| e["job"]["id"] == id.as_str()));
    let revisions: Vec<u64> = seen
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
}

/// Big results go to CSV while they stream: `call --output` and `result --csv`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_results_are_written_as_csv_while_they_stream() {
    let gw = Gateway::start(&["--max-cursor-rows", "100"]).await;
    let server = format!("http://{}", gw.addr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let path = file.to_string_lossy().into_owned();
    let (code, _, err) = run(
        &server,
        &[
            "call",
            "numbers",
            "n:integer=25000",
            "--returns",
            "cursor",
            "--output",
            &path,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("wrote 25000 rows"), "{err}");
    let csv = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        25_001,
        "a header and every row, past --max-cursor-rows"
    );
    assert_eq!(lines[0], "num,label");
    assert_eq!(lines[25_000], "25000,row 25000");

    let (code, id, err) = run(
        &server,
        &[
            "submit",
            "open_numbers",
            "n:integer=3000",
            "rows:out:cursor",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let id = id.trim().to_string();
    let client = gw.client().await;
    wait_state(&client, &id, S::Completed).await;
    let (code, out, err) = run(&server, &["result", &id, "rows", "--csv"]).await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3_001);
    assert_eq!(lines[0], "num,half_more,label");
    assert_eq!(lines[3_000], "3000,4500.0,n3000");
    let (code, out, _) = run(&server, &["result", &id, "rows", "--start-row", "2998"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["[2999,\"4498.5\",\"n2999\"]", "[3000,\"4500.0\",\"n3000\"]"]
    );
    let (code, _, err) = run(&server, &["result", &id, "nope"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("NOT_FOUND"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_paused_resumed_and_deleted_from_the_terminal() {
    let gw = Gateway::start(&[]).await;
    let server = format!("http://{}", gw.addr);

    let (code, out, err) = run(
        &server,
        &[
            "schedule",
            "create",
            "every-second",
            "--cron",
            "* * * * * *",
            "--time-zone",
            "Europe/Madrid",
            "--max-attempts",
            "3",
            "--initial-backoff",
            "2s",
            "--json",
            "pkg_etl.sumar",
            "a=1",
            "b=2",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["time_zone"], "Europe/Madrid");
    assert_eq!(created["retry"]["max_attempts"], 3);
    assert!(!created["next_run_time"].as_str().unwrap().is_empty());

    let (code, _, err) = run(
        &server,
        &[
            "schedule",
            "create",
            "bad",
            "--cron",
            "0 0 L * *",
            "pkg_etl.sumar",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: INVALID_ARGUMENT: cron"), "{err}");

    // The first tick's job shows in the list with its state.
    let listed = eventually(Duration::from_secs(10), "a job of the schedule", || {
        let server = server.clone();
        async move {
            let (_, out, _) = run(&server, &["schedule", "list", "--json"]).await;
            let all: serde_json::Value = serde_json::from_str(&out).ok()?;
            (all[0]["last_job_state"] == "COMPLETED").then_some(all)
        }
    })
    .await;
    assert_eq!(listed[0]["name"], "every-second");
    let (code, table, _) = run(&server, &["schedule", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(
        table.contains("every-second") && table.contains("COMPLETED"),
        "{table}"
    );

    let (code, out, _) = run(&server, &["schedule", "pause", &id]).await;
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("{id} paused").as_str())
    );
    let (_, text, _) = run(&server, &["schedule", "get", &id]).await;
    assert!(
        text.contains("paused") && text.contains("3 attempts, backoff 2s"),
        "{text}"
    );
    let (code, out, _) = run(&server, &["schedule", "resume", &id]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("resumed; next run"), "{out}");

    let (code, jobs, _) = run(&server, &["jobs", "--schedule", &id, "--json"]).await;
    assert_eq!(code, Some(0));
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert!(!jobs.as_array().unwrap().is_empty());
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["schedule_id"] == id.as_str())
    );
    assert_eq!(jobs[0]["max_attempts"], 3);

    let (code, out, _) = run(&server, &["schedule", "delete", &id]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("its jobs remain"), "{out}");
    let (code, _, err) = run(&server, &["schedule", "get", &id]).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: NOT_FOUND"), "{err}");

    // submit takes the retry policy and the expiry too.
    let (code, out, err) = run(
        &server,
        &[
            "submit",
            "--max-attempts",
            "2",
            "--expire-after",
            "1m",
            "--watch",
            "pkg_etl.sumar",
            "a=1",
            "b=2",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("COMPLETED"), "{out}");
}
