//! The Oracle backend end to end. Every test but the first needs a real
//! Oracle: set `PROCGATE_ORACLE_TEST_URL=oracle://user:password@host:1521/service`
//! (docs/oracle.md shows how to run Oracle Database Free in a container).
//! The suite installs docs/examples/oracle/*.sql into that user's schema.
//! Those tests are `#[ignore]`d with that reason, so that the runner reports
//! them as skipped rather than green; scripts/test.sh runs them when the
//! variable is set.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S, ValueType as T};
use prost_types::Timestamp;
use tokio_stream::StreamExt;
use tonic::Code;

const URL_VAR: &str = "PROCGATE_ORACLE_TEST_URL";
const SCRIPTS: [&str; 2] = [
    include_str!("../docs/examples/oracle/pkg_procgate_test.sql"),
    include_str!("../docs/examples/oracle/pkg_etl.sql"),
];

/// The test database, with the example packages installed. The tests that
/// call this are `#[ignore]`d, and scripts/test.sh runs them when the
/// variable is set; run without it, they fail saying what is missing.
async fn oracle() -> String {
    let url = std::env::var(URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "this test needs {URL_VAR}=oracle://user:password@host:1521/service \
                 (a real Oracle; see docs/oracle.md)"
            )
        });
    let install = url.clone();
    tokio::task::spawn_blocking(move || install_scripts(&install))
        .await
        .unwrap();
    url
}

/// Runs the SQL*Plus-style scripts: units separated by lines holding "/".
fn install_scripts(url: &str) {
    let target = procgate::backend::oracle::url::parse(url, |name| std::env::var(name).ok())
        .expect("a valid PROCGATE_ORACLE_TEST_URL");
    let conn = oracle::Connection::connect(&target.user, &target.password, &target.connect_string)
        .expect("connecting to the test Oracle");
    for script in SCRIPTS {
        for unit in script.split("\n/\n") {
            let unit: String = unit
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if unit.trim().is_empty() {
                continue;
            }
            conn.execute(&unit, &[])
                .expect("installing the test packages");
        }
    }
}

fn proc(name: &str) -> String {
    format!("pkg_procgate_test.{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_instant_client_the_binary_stops_at_once_with_one_clear_message() {
    if oracle::Version::client().is_ok() {
        println!(
            "SKIPPED: an Oracle client library is installed here, so the missing-client \
             error cannot be shown"
        );
        return;
    }
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "oracle://scott:tiger-secret@db.example:1521/ORCLPDB1",
        ])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{logs}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    for needle in ["DPI-1047", "libclntsh", "Instant Client", "LD_LIBRARY_PATH"] {
        assert!(logs.contains(needle), "{needle} missing from:\n{logs}");
    }
    assert!(
        !logs.contains("tiger-secret"),
        "the password leaked:\n{logs}"
    );
    assert_eq!(
        logs.matches("ERROR").count(),
        1,
        "one message, not a retry loop:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn every_type_round_trips_in_out() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &[]).await;
    let mut client = gw.client().await;
    let values = [
        ("p_str", Kind::StringValue("ñandú 'x'; --".into())),
        ("p_int", Kind::IntegerValue(-2_147_483_647)),
        (
            "p_num",
            Kind::NumberValue("-12345678901234567890.0001".into()),
        ),
        ("p_dbl", Kind::FloatValue(0.1 + 0.2)),
        ("p_bool", Kind::BoolValue(true)),
        (
            "p_date",
            Kind::TimestampValue(Timestamp {
                seconds: 1_714_559_400,
                nanos: 0,
            }),
        ),
        (
            "p_ts",
            Kind::TimestampValue(Timestamp {
                seconds: 1_714_559_400,
                nanos: 123_456_789,
            }),
        ),
        ("p_raw", Kind::BytesValue(vec![0, 1, 254, 255])),
        ("p_clob", Kind::StringValue("x".repeat(100_000))),
        ("p_blob", Kind::BytesValue(vec![7; 70_000])),
    ];
    let params = values
        .iter()
        .map(|(name, kind)| p_inout(name, kind.clone()))
        .collect();
    let response = execute(&mut client, call(&proc("echo_all"), params))
        .await
        .unwrap();
    for (name, kind) in &values {
        assert_eq!(kind_of(response.outputs.get(*name)), Some(kind), "{name}");
    }

    let copied = execute(
        &mut client,
        call(
            &proc("copy_out"),
            vec![
                p_in("p_str", Kind::StringValue("abc".into())),
                p_in("p_num", Kind::NumberValue("12.5".into())),
                p_in("p_date", Kind::DateValue("2024-02-29".into())),
                p_out("p_date_out", T::Date),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(copied.outputs.get("p_date_out")),
        Some(&Kind::DateValue("2024-02-29".into()))
    );
    assert_eq!(
        kind_of(copied.outputs.get("P_NUM_OUT")),
        Some(&Kind::NumberValue("12.5".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn functions_cursors_and_implicit_results() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &[]).await;
    let mut client = gw.client().await;
    let days = execute(
        &mut client,
        function(
            &proc("add_days"),
            vec![p_in("p_date", Kind::DateValue("2024-12-31".into()))],
            T::Date,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(days.return_value.as_ref()),
        Some(&Kind::DateValue("2025-01-01".into()))
    );

    let out_cursor = execute(
        &mut client,
        call(
            &proc("open_numbers"),
            vec![
                p_in("p_n", Kind::IntegerValue(3)),
                p_out("p_rows", T::Cursor),
            ],
        ),
    )
    .await
    .unwrap();
    let Some(Kind::RowsValue(rows)) = kind_of(out_cursor.outputs.get("p_rows")) else {
        panic!("{:?}", out_cursor.outputs);
    };
    assert_eq!(rows.rows.len(), 3);
    assert_eq!(
        rows.rows[2].values[1],
        value(Kind::NumberValue("4.5".into()))
    );

    let result_cursor = execute(
        &mut client,
        function(
            &proc("numbers"),
            vec![p_in("p_n", Kind::IntegerValue(2))],
            T::Cursor,
        ),
    )
    .await
    .unwrap();
    let Some(Kind::RowsValue(rows)) = kind_of(result_cursor.return_value.as_ref()) else {
        panic!("{:?}", result_cursor.return_value);
    };
    assert_eq!(rows.rows.len(), 2);

    let implicit = execute(
        &mut client,
        call(
            &proc("implicit_numbers"),
            vec![p_in("p_n", Kind::IntegerValue(4))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(implicit.implicit_results.len(), 1);
    assert_eq!(implicit.implicit_results[0].rows.len(), 4);
}

/// A REF CURSOR streams whole (ExecuteStream), and a job keeps it whole
/// (spooled past --max-cursor-rows, read back with ReadJobResult).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn ref_cursors_stream_and_jobs_keep_them_whole() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &["--max-cursor-rows", "100"]).await;
    let mut client = gw.client().await;
    let n = 25_000i64;
    let numbers = || {
        call(
            &proc("open_numbers"),
            vec![
                p_in("p_n", Kind::IntegerValue(n)),
                p_out("p_rows", T::Cursor),
            ],
        )
    };
    let count = |parts: Vec<pb::ExecuteStreamResponse>| -> usize {
        parts
            .into_iter()
            .filter_map(|p| match p.kind {
                Some(pb::execute_stream_response::Kind::Rows(batch)) => Some(batch.rows.len()),
                _ => None,
            })
            .sum()
    };
    let parts: Vec<_> = client
        .execute_stream(pb::ExecuteSyncRequest {
            call: Some(numbers()),
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        count(parts),
        n as usize,
        "every row, past --max-cursor-rows"
    );

    let job = submit(&mut client, numbers()).await;
    wait_state(&client, &job.id, S::Completed).await;
    let parts: Vec<_> = client
        .read_job_result(pb::ReadJobResultRequest {
            job_id: job.id.clone(),
            output: "p_rows".into(),
            start_row: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(count(parts), n as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn errors_keep_their_oracle_code_and_output_becomes_messages() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &["--max-messages", "3"]).await;
    let mut client = gw.client().await;
    let status = execute(
        &mut client,
        call(
            &proc("fail"),
            vec![p_in(
                "p_message",
                Kind::StringValue("saldo insuficiente".into()),
            )],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("saldo insuficiente"));
    assert_eq!(
        status.metadata().get("procgate-db-code").unwrap(),
        "ORA-20001"
    );

    let missing = execute(&mut client, call(&proc("no_such_proc"), vec![]))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let chatty = execute(
        &mut client,
        call(
            &proc("chatty"),
            vec![p_in("p_lines", Kind::IntegerValue(5))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(chatty.messages, ["line 3", "line 4", "line 5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn longops_progress_reaches_watchers() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &["--oracle-progress-interval", "200ms"]).await;
    let mut client = gw.client().await;
    let job = submit(
        &mut client,
        call(
            &proc("long_load"),
            vec![
                p_in("p_steps", Kind::IntegerValue(5)),
                p_in("p_pause", Kind::NumberValue("0.6".into())),
            ],
        ),
    )
    .await;
    let seen = watch_to_end(&mut client, &job.id).await;
    let last = seen.last().unwrap();
    assert_eq!(state_of(last), S::Completed, "{last:?}");
    let reported: Vec<u32> = seen
        .iter()
        .filter(|j| state_of(j) == S::Running && j.progress_message.contains("long_load"))
        .map(|j| j.progress)
        .collect();
    assert!(
        reported.len() >= 2,
        "LONGOPS progress should arrive while running: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn cancel_and_deadline_break_the_execution() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &[]).await;
    let mut client = gw.client().await;
    let nap = |seconds: i64| {
        call(
            &proc("nap"),
            vec![p_in("p_seconds", Kind::IntegerValue(seconds))],
        )
    };

    let job = submit(&mut client, nap(60)).await;
    wait_state(&client, &job.id, S::Running).await;
    let started = Instant::now();
    client
        .cancel_job(pb::CancelJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    let ended = wait_state(&client, &job.id, S::Cancelled).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(ended.error.unwrap().code, Code::Cancelled as i32);

    let mut request = tonic::Request::new(pb::ExecuteSyncRequest {
        call: Some(nap(60)),
    });
    request.set_timeout(Duration::from_secs(1));
    let status = client.execute_sync(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);

    // The connections went back healthy.
    execute(&mut client, nap(0)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn describe_reads_all_arguments() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &[]).await;
    let mut client = gw.client().await;
    let d = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: proc("long_load"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        d.procedure.ends_with("PKG_PROCGATE_TEST.LONG_LOAD"),
        "{}",
        d.procedure
    );
    let summary: Vec<_> = d
        .params
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.direction,
                p.db_type.as_str(),
                p.has_default,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("P_STEPS", pb::Direction::In as i32, "NUMBER", true),
            ("P_PAUSE", pb::Direction::In as i32, "NUMBER", true),
            ("P_RESULT", pb::Direction::Out as i32, "VARCHAR2", false),
        ]
    );
    let f = client
        .describe_procedure(pb::DescribeProcedureRequest {
            procedure: proc("numbers"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.returns, T::Cursor as i32);
}

/// The one job engine on the Oracle job table: `procgate migrate` creates
/// it, and two instances in front of it share the jobs: a job submitted to
/// A is seen live by a watcher on B (by polling, since Oracle has no
/// NOTIFY here), a request_id is insert-or-get, a cancel from B reaches
/// the job A runs, and a deleted job leaves the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn list_procedures_reads_the_package_members_page_by_page() {
    let url = oracle().await;
    let gw = Gateway::start_url(&url, &[]).await;
    let mut client = gw.client().await;
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_procedures(pb::ListProceduresRequest {
                schema: "PKG_PROCGATE_TEST".into(),
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.procedures.into_iter().map(|p| p.procedure));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("PKG_PROCGATE_TEST.LONG_LOAD")),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        names, sorted,
        "in the catalog's order (overloads side by side)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PROCGATE_ORACLE_TEST_URL (a real Oracle; see docs/oracle.md)"]
async fn the_database_job_store_runs_on_oracle_across_instances() {
    let url = oracle().await;
    let migrated = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let store = [
        "--job-store",
        "database",
        "--job-store-poll-interval",
        "300ms",
    ];
    let a = Gateway::start_url(&url, &store).await;
    let b = Gateway::start_url(&url, &store).await;
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    let nap = |seconds: i64| {
        call(
            &proc("nap"),
            vec![p_in("p_seconds", Kind::IntegerValue(seconds))],
        )
    };

    let quick = submit(&mut on_a, nap(1)).await;
    let seen = watch_to_end(&mut on_b, &quick.id).await;
    assert_eq!(state_of(seen.last().unwrap()), S::Completed, "{seen:?}");

    let request = || pb::SubmitAsyncRequest {
        call: Some(nap(60)),
        request_id: "oracle-store-1".into(),
        ..Default::default()
    };
    let long = on_a.submit_async(request()).await.unwrap().into_inner();
    let again = on_b.submit_async(request()).await.unwrap().into_inner();
    assert_eq!(again.id, long.id, "insert-or-get by request_id");
    wait_state(&on_b, &long.id, S::Running).await;
    on_b.cancel_job(pb::CancelJobRequest {
        id: long.id.clone(),
    })
    .await
    .unwrap();
    let ended = wait_state(&on_a, &long.id, S::Cancelled).await;
    assert_eq!(ended.error.unwrap().code, Code::Cancelled as i32);

    on_b.delete_job(pb::DeleteJobRequest {
        id: quick.id.clone(),
    })
    .await
    .unwrap();
    let listed = on_a
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.iter().all(|j| j.id != quick.id));
    assert!(listed.jobs.iter().any(|j| j.id == long.id));
}
