//! Pooled sessions are clean for every caller: what a procedure leaves in
//! its session (settings, search_path, role, temp tables, advisory locks,
//! LISTEN, PREPAREd statements, cursors) never reaches the next call, and a
//! session the server killed while it sat idle never fails one.

mod common;

use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};

/// Two sessions in all, so that every call reuses what `leaky` left.
const SMALL_POOL: &[&str] = &[
    "--pool-size",
    "1",
    "--sync-connections",
    "1",
    "--max-running-jobs",
    "1",
];

async fn session_state(client: &mut Client) -> serde_json::Value {
    let answer = execute(
        client,
        function("public.session_state", vec![], pb::ValueType::Json),
    )
    .await
    .expect("session_state");
    match kind_of(answer.return_value.as_ref()) {
        Some(Kind::JsonValue(json)) => serde_json::from_str(json).unwrap(),
        other => panic!("session_state answered {other:?}"),
    }
}

fn clean_state() -> serde_json::Value {
    serde_json::json!({
        "statement_timeout": "0",
        "search_path": "\"$user\", public",
        "current_user": "postgres",
        "temp_table": false,
        "cursors": 0,
        "prepared": 0,
        "listening": 0,
        "advisory_locks": 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_procedure_leaves_in_its_session_never_reaches_the_next_caller() {
    let gw = Gateway::start(SMALL_POOL).await;
    let mut client = gw.client().await;
    // Each call would fail on a reused session that kept the previous
    // one's PREPAREd statement, cursor or temp table.
    for i in 0..6 {
        execute(&mut client, call("leaky", vec![]))
            .await
            .unwrap_or_else(|s| panic!("leaky call {i}: {s:?}"));
    }
    // The idle pooled sessions hold no advisory lock.
    let taken = gw
        .sql("SELECT pg_try_advisory_lock(4242), pg_advisory_unlock(4242)")
        .await;
    assert!(
        taken[0].get::<_, bool>(0),
        "an idle pooled session held the lock"
    );

    for _ in 0..10 {
        assert_eq!(session_state(&mut client).await, clean_state());
    }
    // Jobs run on the same sessions: a 0.4 s nap outlives the leaked 150 ms
    // statement_timeout only if it is gone.
    for _ in 0..3 {
        execute(&mut client, call("leaky", vec![])).await.unwrap();
        let job = submit(
            &mut client,
            call("public.nap", vec![p_in("seconds", Kind::FloatValue(0.4))]),
        )
        .await;
        let job = wait_job(&client, &job.id, "ended", |j| j.end_time.is_some()).await;
        assert_eq!(state_of(&job), pb::JobState::Completed, "{:?}", job.error);
    }
    assert_eq!(session_state(&mut client).await, clean_state());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_killed_while_idle_never_fail_the_next_call() {
    let gw = Gateway::start(&["--pool-size", "4", "--sync-connections", "4"]).await;
    let mut client = gw.client().await;
    let add = || {
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(1)),
                p_in("b", Kind::IntegerValue(2)),
            ],
        )
    };
    for round in 0..3 {
        // Open several sessions, then let a DBA end every idle one.
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let mut client = client.clone();
                let call = add();
                tokio::spawn(async move { execute(&mut client, call).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let killed: Vec<i32> = gw
            .sql(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE application_name = 'procgate' AND state = 'idle'",
            )
            .await
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(!killed.is_empty(), "round {round}: none killed");
        // Killed a moment ago, not killed as the call is sent: a session
        // ended while the call travels to it fails that call (UNAVAILABLE,
        // since it may have run), unless the server answers its reset with
        // the FATAL.
        let pids = killed
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        eventually(
            Duration::from_secs(10),
            "the killed sessions to end",
            || async {
                let left = gw
                    .sql(&format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid IN ({pids})"
                    ))
                    .await;
                (left[0].get::<_, i64>(0) == 0).then_some(())
            },
        )
        .await;
        for i in 0..10 {
            execute(&mut client, add())
                .await
                .unwrap_or_else(|s| panic!("round {round}, call {i}: {s:?}"));
        }
        let job = submit(&mut client, add()).await;
        let job = wait_job(&client, &job.id, "ended", |j| j.end_time.is_some()).await;
        assert_eq!(state_of(&job), pb::JobState::Completed, "{:?}", job.error);
    }
}
