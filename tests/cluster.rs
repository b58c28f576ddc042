//! Several procgate processes sharing one PostgreSQL through the database
//! job store: jobs visible everywhere, claimed exactly once, surviving
//! restarts, and failed as INTERRUPTED when their instance dies.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use procgate::embedded::EmbeddedPostgres;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S};
use tokio_stream::StreamExt;
use tonic::Code;

/// One procgate process on the database store.
struct Instance {
    child: Child,
    client: Client,
}

impl Instance {
    async fn start(db: &EmbeddedPostgres, name: &str, extra: &[&str]) -> Instance {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args([
                "serve",
                "--job-store",
                "database",
                "--database-url",
                &db.url(),
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--instance-name",
                name,
            ])
            .args([
                "--instance-lease",
                "2s",
                "--job-store-poll-interval",
                "200ms",
            ])
            .args(["--health-interval", "200ms"])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = connect_when_listening(port).await;
        Instance { child, client }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL: no goodbye
        self.child.wait().unwrap();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

async fn migrated_db() -> EmbeddedPostgres {
    let db = start_db().await;
    let url = db.url();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args(["migrate", "--database-url", &url])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "procgate migrate failed");
    db
}

fn record(key: &str, pause: f64) -> pb::ProcedureCall {
    call(
        "record_execution",
        vec![
            p_in("job_key", Kind::StringValue(key.into())),
            p_in("pause", Kind::FloatValue(pause)),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_store_that_was_not_migrated() {
    let db = start_db().await;
    let url = db.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args([
                "serve",
                "--job-store",
                "database",
                "--database-url",
                &url,
                "--listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(logs.contains("procgate migrate"), "{logs}");

    // Migrating twice is harmless.
    for _ in 0..2 {
        let url = db.url();
        let status = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_procgate"))
                .args(["migrate", "--database-url", &url])
                .status()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_on_one_instance_is_seen_and_cancelled_on_another() {
    let db = migrated_db().await;
    let mut a = Instance::start(&db, "a", &[]).await;
    let mut b = Instance::start(&db, "b", &[]).await;

    let done = submit(
        &mut a.client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::NumberValue("1.5".into())),
                p_in("b", Kind::NumberValue("2.25".into())),
            ],
        ),
    )
    .await;
    let seen = watch_to_end(&mut b.client, &done.id).await;
    let last = seen.last().unwrap();
    assert_eq!(state_of(last), S::Completed);
    assert_eq!(
        kind_of(last.outputs.get("total")),
        Some(&Kind::NumberValue("3.75".into()))
    );
    let from_b = b
        .client
        .get_job(pb::GetJobRequest {
            id: done.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_b.outputs, last.outputs);
    let listed = b
        .client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.iter().any(|j| j.id == done.id));

    // A long job followed from B shows progress, and B cancels it.
    let long = submit(
        &mut a.client,
        call("staged", vec![p_in("pause", Kind::FloatValue(30.0))]),
    )
    .await;
    let running = wait_state(&b.client, &long.id, S::Running).await;
    assert_eq!(running.id, long.id);
    let started = Instant::now();
    b.client
        .cancel_job(pb::CancelJobRequest {
            id: long.id.clone(),
        })
        .await
        .unwrap();
    let ended = wait_job(&a.client, &long.id, "ended", |j| j.end_time.is_some()).await;
    assert_eq!(state_of(&ended), S::Cancelled, "{ended:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the cancel took {:?}",
        started.elapsed()
    );

    // request_ids are unique across instances.
    let request = pb::SubmitAsyncRequest {
        call: Some(call("chatty", vec![p_in("lines", Kind::IntegerValue(1))])),
        request_id: "once-only".into(),
        ..Default::default()
    };
    let first = a
        .client
        .submit_async(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = b.client.submit_async(request).await.unwrap().into_inner();
    assert_eq!(first.id, second.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_jobs_run_exactly_once_across_three_instances() {
    let db = migrated_db().await;
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        instances.push(Instance::start(&db, name, &["--max-running-jobs", "2"]).await);
    }
    let mut ids = Vec::new();
    for n in 0..500 {
        let instance = &mut instances[n % 3];
        ids.push(
            submit(&mut instance.client, record(&format!("job-{n}"), 0.0))
                .await
                .id,
        );
    }
    for (n, id) in ids.iter().enumerate() {
        let job = wait_job(&instances[(n + 1) % 3].client, id, "ended", |j| {
            j.end_time.is_some()
        })
        .await;
        assert_eq!(state_of(&job), S::Completed, "{job:?}");
    }
    let counts = sql(
        &db.url(),
        "SELECT count(*), count(DISTINCT job_key) FROM public.executions",
    )
    .await;
    assert_eq!(
        (counts[0].get::<_, i64>(0), counts[0].get::<_, i64>(1)),
        (500, 500),
        "a job ran twice or never"
    );
    let spread = sql(
        &db.url(),
        "SELECT count(DISTINCT instance_id) FROM public.procgate_jobs",
    )
    .await;
    assert_eq!(
        spread[0].get::<_, i64>(0),
        3,
        "the work did not spread over the instances"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_its_jobs_interrupted_and_its_queue_to_others() {
    let db = migrated_db().await;
    let mut doomed = Instance::start(&db, "doomed", &["--max-running-jobs", "1"]).await;
    let running = submit(&mut doomed.client, record("slow", 60.0)).await;
    wait_state(&doomed.client, &running.id, S::Running).await;
    let mut queued = Vec::new();
    for n in 0..3 {
        queued.push(
            submit(&mut doomed.client, record(&format!("queued-{n}"), 0.0))
                .await
                .id,
        );
    }
    doomed.kill();
    let killed_at = Instant::now();

    let survivor = Instance::start(&db, "survivor", &[]).await;
    let failed = wait_job(&survivor.client, &running.id, "failed", |j| {
        j.end_time.is_some()
    })
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(2 + 8),
        "took {:?}",
        killed_at.elapsed()
    );
    assert_eq!(state_of(&failed), S::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.reason, "INTERRUPTED");
    assert_eq!(error.db_code, "");
    assert_eq!(error.code, Code::Aborted as i32);
    assert!(error.message.contains("doomed"), "{}", error.message);
    for id in &queued {
        wait_state(&survivor.client, id, S::Completed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_restart_and_page_over_ten_thousand() {
    let db = migrated_db().await;
    let mut first = Instance::start(&db, "first", &[]).await;
    let job = submit(
        &mut first.client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(40)),
                p_in("b", Kind::IntegerValue(2)),
            ],
        ),
    )
    .await;
    let done = wait_state(&first.client, &job.id, S::Completed).await;
    drop(first);

    // 10,000 more finished jobs, written straight into the table.
    sql(
        &db.url(),
        "INSERT INTO public.procgate_jobs (id, procedure, call, state, progress, create_time, end_time)
         SELECT gen_random_uuid(), 'bulk', '{\"procedure\": \"bulk\", \"params\": [], \"returns\": null}',
                'COMPLETED', 100, now(), now()
           FROM generate_series(1, 10000)",
    )
    .await;

    let mut second = Instance::start(&db, "second", &[]).await;
    let again = second
        .client
        .get_job(pb::GetJobRequest {
            id: job.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state_of(&again), S::Completed);
    assert_eq!(again.outputs, done.outputs);
    assert_eq!(
        kind_of(again.outputs.get("total")),
        Some(&Kind::NumberValue("42".into()))
    );

    let mut seen = HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = second
            .client
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for j in page.jobs {
            assert!(seen.insert(j.id), "a job listed twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 10_001);
    assert_eq!(pages, 11);
    assert!(seen.contains(&job.id));
}

/// Calls of the statement that reads one job by id, since the last reset.
async fn reads_by_id(db: &EmbeddedPostgres) -> i64 {
    let rows = sql(
        &db.url(),
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
          WHERE query LIKE '%procgate_jobs WHERE id = $1'",
    )
    .await;
    rows[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_another_instance_share_one_follower_and_see_every_change() {
    let db = migrated_db().await;
    let mut a = Instance::start(&db, "a", &["--max-running-jobs", "1"]).await;
    let job = submit(
        &mut a.client,
        call("staged", vec![p_in("pause", Kind::FloatValue(0.7))]),
    )
    .await;
    wait_state(&a.client, &job.id, S::Running).await;
    // B starts once A runs the job, so the job is surely A's.
    let b = Instance::start(&db, "b", &[]).await;
    let mut feed = b
        .client
        .clone()
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = feed.next().await.unwrap().unwrap();
    assert_eq!(first.r#type, pb::JobEventType::Existing as i32);
    assert_eq!(first.job.as_ref().unwrap().id, job.id);

    sql(&db.url(), "SELECT pg_stat_statements_reset()").await;
    let watch = || {
        let mut client = b.client.clone();
        let id = job.id.clone();
        async move {
            let mut stream = client
                .watch_job(pb::WatchJobRequest {
                    id,
                    since_revision: 0,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let current = stream.next().await.unwrap().unwrap();
            (stream, current)
        }
    };
    let mut streams = vec![watch().await];
    let after_one = reads_by_id(&db).await;
    for _ in 0..49 {
        streams.push(watch().await);
    }
    assert_eq!(
        reads_by_id(&db).await,
        after_one,
        "49 more watchers of a followed job read nothing more"
    );
    for (mut stream, mut last) in streams {
        while let Some(job) = stream.next().await {
            last = job.unwrap();
        }
        assert_eq!(state_of(&last), S::Completed, "{last:?}");
        assert_eq!(last.progress, 100);
    }
    // B's feed saw A's job progress and end.
    let mut progress = Vec::new();
    loop {
        let event = feed.next().await.unwrap().unwrap();
        let Some(seen) = event.job else {
            assert_eq!(event.r#type, pb::JobEventType::Synced as i32);
            continue;
        };
        progress.push(seen.progress);
        if state_of(&seen) == S::Completed {
            break;
        }
    }
    assert!(
        progress.contains(&40) || progress.contains(&75),
        "{progress:?}"
    );
}
