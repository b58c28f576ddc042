//! Faults, against real PostgreSQL processes the tests stop, start and
//! sabotage: nothing stays RUNNING, nothing is lost, nothing leaks.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn nap(seconds: f64) -> pb::ProcedureCall {
    call("nap", vec![p_in("seconds", Kind::FloatValue(seconds))])
}

/// A call that needs nothing but PostgreSQL itself, for jobs that run on a
/// database the test has just recreated (before its fixtures are back).
/// It lives in pg_catalog, so these gateways run with SYSTEM_SCHEMAS open.
const SYSTEM_SCHEMAS: &str = "--allow-system-schemas";

fn builtin() -> pb::ProcedureCall {
    function(
        "pg_catalog.make_date",
        vec![
            p_in("year", Kind::IntegerValue(2024)),
            p_in("month", Kind::IntegerValue(5)),
            p_in("day", Kind::IntegerValue(1)),
        ],
        pb::ValueType::Date,
    )
}

async fn states(client: &Client, ids: &[String]) -> Vec<S> {
    let mut states = Vec::new();
    for id in ids {
        let job = client
            .clone()
            .get_job(pb::GetJobRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        states.push(state_of(&job));
    }
    states
}

/// Stopping the database fails the running jobs with UNAVAILABLE, keeps the
/// pending ones waiting, and everything resumes when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stops_while_jobs_run_and_wait() {
    let mut gw = Gateway::start(&[
        SYSTEM_SCHEMAS,
        "--max-running-jobs",
        "20",
        "--pool-size",
        "20",
        "--pool-timeout",
        "1s",
    ])
    .await;
    let mut client = gw.client().await;
    let mut running = Vec::new();
    for _ in 0..20 {
        running.push(submit(&mut client, nap(60.0)).await.id);
    }
    eventually(
        Duration::from_secs(20),
        "20 naps in the database",
        || async { (gw.active_sessions("CALL \"public\".\"nap\"").await == 20).then_some(()) },
    )
    .await;
    let mut waiting = Vec::new();
    for _ in 0..20 {
        waiting.push(submit(&mut client, builtin()).await.id);
    }

    let db = gw.db.take().unwrap();
    let port = db.port();
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();

    for id in &running {
        let job = wait_job(&client, id, "ended", |j| state_of(j) != S::Running).await;
        assert_eq!(state_of(&job), S::Failed, "{job:?}");
        let error = job.error.unwrap();
        assert_eq!(error.code, Code::Unavailable as i32, "{error:?}");
        assert!(!error.message.is_empty());
    }
    gw.health_becomes(ServingStatus::NotServing).await;
    // The documented rule: pending jobs wait while the database is down.
    assert!(
        states(&client, &waiting)
            .await
            .iter()
            .all(|s| *s == S::Pending)
    );

    gw.bring_db_back(port).await;
    gw.health_becomes(ServingStatus::Serving).await;
    for id in &waiting {
        let job = wait_job(&client, id, "ended", |j| {
            matches!(state_of(j), S::Completed | S::Failed)
        })
        .await;
        assert_eq!(state_of(&job), S::Completed, "{job:?}");
    }
    let fresh = submit(&mut client, builtin()).await;
    wait_state(&client, &fresh.id, S::Completed).await;
}

/// Jobs queued while the database is down start in submission order once it
/// is back, even when the first ones cannot get a connection at first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_during_an_outage_start_in_submission_order() {
    let mut gw = Gateway::start(&["--max-running-jobs", "1", "--pool-timeout", "1s"]).await;
    let mut client = gw.client().await;
    let db = gw.db.take().unwrap();
    let port = db.port();
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
    gw.health_becomes(ServingStatus::NotServing).await;
    let mut queued = Vec::new();
    for n in 0..8 {
        let job = submit(
            &mut client,
            call(
                "record_execution",
                vec![p_in("job_key", Kind::StringValue(format!("k{n}")))],
            ),
        )
        .await;
        queued.push(job.id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        states(&client, &queued)
            .await
            .iter()
            .all(|s| *s == S::Pending)
    );

    gw.bring_db_back(port).await;
    for id in &queued {
        wait_state(&client, id, S::Completed).await;
    }
    let order: Vec<String> = gw
        .sql("SELECT job_key FROM public.executions ORDER BY at")
        .await
        .iter()
        .map(|row| row.get(0))
        .collect();
    let submitted: Vec<String> = (0..8).map(|n| format!("k{n}")).collect();
    assert_eq!(order, submitted, "jobs did not start in submission order");
}

/// A database that is not there yet: NOT_SERVING, then SERVING once it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_unreachable_at_start_up() {
    let port = free_port();
    let url = format!("postgresql://postgres:password@localhost:{port}/postgres");
    let mut gw = Gateway::start_url(
        &url,
        &[
            SYSTEM_SCHEMAS,
            "--pool-timeout",
            "1s",
            "--connect-timeout",
            "1s",
        ],
    )
    .await;
    let mut client = gw.client().await;
    gw.health_becomes(ServingStatus::NotServing).await;
    let job = submit(&mut client, builtin()).await;
    assert_eq!(state_of(&job), S::Pending);

    gw.bring_db_back(port).await;
    gw.health_becomes(ServingStatus::Serving).await;
    wait_state(&client, &job.id, S::Completed).await;
    execute(&mut client, builtin()).await.unwrap();
}

/// A session killed mid-job fails that job alone; the next one gets a
/// healthy connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_session_fails_only_its_job() {
    let gw = Gateway::start(&["--max-running-jobs", "1", "--pool-size", "1"]).await;
    let mut client = gw.client().await;
    let victim = submit(&mut client, nap(60.0)).await;
    eventually(Duration::from_secs(10), "the nap to run", || async {
        (gw.active_sessions("CALL \"public\".\"nap\"").await == 1).then_some(())
    })
    .await;
    gw.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'CALL \"public\".\"nap\"%'")
        .await;
    let failed = wait_state(&client, &victim.id, S::Failed).await;
    assert_eq!(failed.error.unwrap().code, Code::Unavailable as i32);
    for _ in 0..3 {
        let next = submit(&mut client, nap(0.0)).await;
        wait_state(&client, &next.id, S::Completed).await;
    }
}

/// More sync callers than connections: they wait up to --pool-timeout, then
/// RESOURCE_EXHAUSTED; a job holding its connection blocks nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_callers_beyond_the_pool_are_bounded() {
    let gw = Gateway::start(&[
        SYSTEM_SCHEMAS,
        "--pool-size",
        "1",
        "--sync-connections",
        "1",
        "--max-running-jobs",
        "1",
        "--max-streams",
        "1",
        "--pool-timeout",
        "500ms",
    ])
    .await;
    let mut client = gw.client().await;
    let job = submit(&mut client, nap(3.0)).await;
    wait_state(&client, &job.id, S::Running).await;
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { execute(&mut client, nap(1.5)).await })
        })
        .collect();
    let mut ok = 0;
    let mut exhausted = 0;
    for caller in callers {
        match caller.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("connections are busy"),
                    "{}",
                    status.message()
                );
                exhausted += 1;
            }
        }
    }
    // The pool: 1 for the job, 1 for sync calls, 1 for a stream (free for
    // sync calls while no stream is open).
    assert_eq!((ok, exhausted), (2, 2));
    wait_state(&client, &job.id, S::Completed).await;
    execute(&mut client, builtin()).await.unwrap();
}

/// Watchers that stop reading or leave all at once, and sync callers that
/// hang up, leave no task, stream or busy session behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_watchers_and_callers_leave_nothing_behind() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    // Warm up first: the first job and watch start a few lasting tasks
    // (connection drivers, the blocking pool's first workers).
    let warm = submit(&mut client, nap(0.0)).await;
    watch_to_end(&mut client, &warm.id).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    // A watcher that never reads while a chatty job changes 5,000 times.
    let chatty = submit(
        &mut client,
        call("chatty", vec![p_in("lines", Kind::IntegerValue(5000))]),
    )
    .await;
    let stalled = client
        .clone()
        .watch_job(pb::WatchJobRequest {
            id: chatty.id.clone(),
            since_revision: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_state(&client, &chatty.id, S::Completed).await;
    drop(stalled);

    // A thousand watchers of a long job, gone at once.
    let long = submit(&mut client, nap(60.0)).await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let mut stream = client
            .clone()
            .watch_job(pb::WatchJobRequest {
                id: long.id.clone(),
                since_revision: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();
        streams.push(stream);
    }
    drop(streams);

    // Sync callers that hang up mid-call.
    for _ in 0..5 {
        let mut caller = client.clone();
        let call = tokio::spawn(async move { execute(&mut caller, nap(60.0)).await });
        eventually(
            Duration::from_secs(10),
            "the call to reach the database",
            || async { (gw.active_sessions("CALL \"public\".\"nap\"").await >= 2).then_some(()) },
        )
        .await;
        call.abort(); // the client hangs up mid-call
    }
    client
        .cancel_job(pb::CancelJobRequest {
            id: long.id.clone(),
        })
        .await
        .unwrap();
    wait_state(&client, &long.id, S::Cancelled).await;

    eventually(Duration::from_secs(10), "no busy session", || async {
        (gw.active_sessions("CALL \"public\".\"nap\"").await == 0).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "tasks back to the baseline",
        || async { (metrics.num_alive_tasks() <= baseline).then_some(()) },
    )
    .await;
}

/// SIGTERM under load: in-flight sync calls finish, jobs are cancelled in the
/// database, nothing new is accepted, and the process exits 0 in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_zero() {
    let db = start_db().await;
    let url = db.url();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args(["serve", "--database-url", &url, "--grace-period", "10s"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = connect_when_listening(port).await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(submit(&mut client, nap(60.0)).await.id);
    }
    let syncs: Vec<_> = (0..4)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { execute(&mut client, nap(2.0)).await })
        })
        .collect();
    eventually(Duration::from_secs(10), "9 naps in the database", || async {
        let busy = sql(&url, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'CALL%'").await;
        (busy[0].get::<_, i64>(0) == 9).then_some(())
    })
    .await;

    let stopped = Instant::now();
    // SAFETY: kill with our child's pid and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for sync in syncs {
        sync.await
            .unwrap()
            .expect("an in-flight sync call finishes in the grace period");
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut logs = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        (status, logs)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1);
    assert!(stopped.elapsed() < Duration::from_secs(10));
    let refused = client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(nap(0.0)),
            request_id: String::new(),
            ..Default::default()
        })
        .await;
    assert!(refused.is_err(), "a stopped gateway accepted work");
    let busy = sql(
        &url,
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'CALL%'",
    )
    .await;
    assert_eq!(
        busy[0].get::<_, i64>(0),
        0,
        "a job's statement outlived the gateway"
    );
    drop(db);
}
