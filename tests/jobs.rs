//! Jobs end to end: lifecycle, WatchJob progress, cancel, limits, paging,
//! idempotency and retention, against a real PostgreSQL.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S};
use tokio_stream::StreamExt;
use tonic::Code;

fn nap(seconds: f64) -> pb::ProcedureCall {
    call("nap", vec![p_in("seconds", Kind::FloatValue(seconds))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_progress_notices_until_the_job_completes() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let job = submit(
        &mut client,
        call("staged", vec![p_in("pause", Kind::FloatValue(0.3))]),
    )
    .await;
    assert!(uuid::Uuid::parse_str(&job.id).is_ok_and(|id| id.get_version_num() == 4));
    assert_eq!(job.procedure, "staged");
    assert!(job.create_time.is_some());
    assert_eq!(job.params.len(), 1, "params are echoed");

    let seen = watch_to_end(&mut client, &job.id).await;
    let last = seen.last().unwrap();
    assert_eq!(state_of(last), S::Completed);
    assert_eq!(last.progress, 100);
    assert!(last.start_time.is_some() && last.end_time.is_some() && last.duration.is_some());
    assert_eq!(last.messages, ["starting the stages", "finished"]);

    // The procedure's own reports arrived while it was still running.
    let running_reports: Vec<(u32, &str)> = seen
        .iter()
        .filter(|j| state_of(j) == S::Running)
        .map(|j| (j.progress, j.progress_message.as_str()))
        .collect();
    assert!(
        running_reports.contains(&(40, "loading rows")),
        "{running_reports:?}"
    );
    assert!(
        running_reports.contains(&(75, "merging")),
        "{running_reports:?}"
    );
    let progress: Vec<u32> = seen.iter().map(|j| j.progress).collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {progress:?}"
    );
    // Exactly one terminal snapshot, and it is the last.
    assert_eq!(
        seen.iter().filter(|j| state_of(j) == S::Completed).count(),
        1
    );

    // A finished job can still be watched: one terminal snapshot, then the end.
    let again = watch_to_end(&mut client, &job.id).await;
    assert_eq!(again.len(), 1);
    assert_eq!(state_of(&again[0]), S::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_report_outputs_errors_and_can_be_deleted() {
    let gw = Gateway::start(&["--max-messages", "3"]).await;
    let mut client = gw.client().await;

    let sum = submit(
        &mut client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::NumberValue("1.10".into())),
                p_in("b", Kind::NumberValue("2.20".into())),
            ],
        ),
    )
    .await;
    let done = wait_state(&client, &sum.id, S::Completed).await;
    assert_eq!(
        kind_of(done.outputs.get("total")),
        Some(&Kind::NumberValue("3.30".into()))
    );
    assert!(done.error.is_none());

    let failing = submit(
        &mut client,
        call(
            "pkg_etl.validar_lote",
            vec![p_in("p_lote", Kind::IntegerValue(0))],
        ),
    )
    .await;
    let failed = wait_state(&client, &failing.id, S::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!(error.code, Code::FailedPrecondition as i32);
    assert_eq!(error.db_code, "P0001");
    assert!(
        error.message.contains("lote 0 inválido"),
        "{}",
        error.message
    );

    let unknown = submit(&mut client, call("no_such_thing", vec![])).await;
    let failed = wait_state(&client, &unknown.id, S::Failed).await;
    assert_eq!(failed.error.unwrap().code, Code::NotFound as i32);

    let chatty = submit(
        &mut client,
        call("chatty", vec![p_in("lines", Kind::IntegerValue(5))]),
    )
    .await;
    let done = wait_state(&client, &chatty.id, S::Completed).await;
    assert_eq!(done.messages, ["line 3", "line 4", "line 5"]);
    assert_eq!(done.messages_dropped, 2);

    // Delete: a running job refuses, a finished one goes away.
    let running = submit(&mut client, nap(30.0)).await;
    wait_state(&client, &running.id, S::Running).await;
    let refused = client
        .delete_job(pb::DeleteJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    client
        .delete_job(pb::DeleteJobRequest { id: sum.id.clone() })
        .await
        .unwrap();
    let gone = client
        .get_job(pb::GetJobRequest {
            id: sum.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    client
        .cancel_job(pb::CancelJobRequest { id: running.id })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_pending_and_running_jobs_in_the_database() {
    let gw = Gateway::start(&["--max-running-jobs", "1"]).await;
    let mut client = gw.client().await;
    let running = submit(&mut client, nap(60.0)).await;
    wait_state(&client, &running.id, S::Running).await;
    let pending = submit(
        &mut client,
        call(
            "commit_twice",
            vec![p_in("note", Kind::StringValue("never".into()))],
        ),
    )
    .await;
    assert_eq!(state_of(&pending), S::Pending);

    // PENDING → CANCELLED at once; it never reaches the database.
    let cancelled = client
        .cancel_job(pb::CancelJobRequest {
            id: pending.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state_of(&cancelled), S::Cancelled);
    assert_eq!(cancelled.error.unwrap().code, Code::Cancelled as i32);

    // RUNNING → cancel_requested, the statement is interrupted, CANCELLED.
    eventually(
        Duration::from_secs(5),
        "the nap to reach the database",
        || async { (gw.active_sessions("CALL \"public\".\"nap\"").await == 1).then_some(()) },
    )
    .await;
    let requested = client
        .cancel_job(pb::CancelJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(requested.cancel_requested);
    let ended = wait_state(&client, &running.id, S::Cancelled).await;
    assert!(ended.end_time.is_some());
    eventually(
        Duration::from_secs(5),
        "no session still napping",
        || async { (gw.active_sessions("CALL \"public\".\"nap\"").await == 0).then_some(()) },
    )
    .await;

    // A finished job cannot be cancelled.
    let again = client
        .cancel_job(pb::CancelJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // The slot and the connection are free and healthy: the next job runs.
    let next = submit(&mut client, nap(0.0)).await;
    wait_state(&client, &next.id, S::Completed).await;
    let audit = gw.sql("SELECT count(*) FROM public.audit").await;
    assert_eq!(
        audit[0].get::<_, i64>(0),
        0,
        "the cancelled pending job ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_never_run_more_than_max_running_at_once() {
    let gw = Gateway::start(&["--max-running-jobs", "4", "--pool-size", "8"]).await;
    let mut client = gw.client().await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(submit(&mut client, nap(0.15)).await.id);
    }
    let mut most = 0;
    loop {
        let active = gw.active_sessions("CALL \"public\".\"nap\"").await;
        most = most.max(active);
        let list = client
            .list_jobs(pb::ListJobsRequest {
                states: vec![S::Pending as i32, S::Running as i32],
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let running = list
            .jobs
            .iter()
            .filter(|j| state_of(j) == S::Running)
            .count();
        assert!(running <= 4, "{running} jobs RUNNING at once");
        if list.jobs.is_empty() {
            break;
        }
    }
    assert!(most <= 4, "{most} sessions ran jobs at once");
    assert!(most >= 2, "jobs did not run in parallel (at most {most})");
    for id in ids {
        let job = client
            .get_job(pb::GetJobRequest {
                id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state_of(&job), S::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_queue_is_bounded() {
    let gw = Gateway::start(&["--max-running-jobs", "1", "--max-pending-jobs", "2"]).await;
    let mut client = gw.client().await;
    let first = submit(&mut client, nap(30.0)).await;
    wait_state(&client, &first.id, S::Running).await;
    submit(&mut client, nap(0.0)).await;
    submit(&mut client, nap(0.0)).await;
    let full = client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(nap(0.0)),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(
        full.message().contains("--max-pending-jobs"),
        "{}",
        full.message()
    );
    client
        .cancel_job(pb::CancelJobRequest { id: first.id })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_returns_the_same_job() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let request = pb::SubmitAsyncRequest {
        call: Some(call("chatty", vec![p_in("lines", Kind::IntegerValue(1))])),
        request_id: "nightly-2024-05-01".into(),
        ..Default::default()
    };
    let first = client
        .submit_async(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = client
        .submit_async(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.id, second.id);
    assert_eq!(second.request_id, "nightly-2024-05-01");
    wait_state(&client, &first.id, S::Completed).await;
    let third = client.submit_async(request).await.unwrap().into_inner();
    assert_eq!(third.id, first.id, "still the same job once it ended");
    let list = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.jobs.len(), 1);

    let too_long = client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(call("chatty", vec![p_in("lines", Kind::IntegerValue(1))])),
            request_id: "x".repeat(200),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);
}

/// A request_id names one call: a retry of it gets its job even when the
/// queue is full, another call with it is ALREADY_EXISTS naming the job.
async fn request_ids_are_checked_before_capacity_and_bound_to_one_call(gw: Gateway) {
    let mut client = gw.client().await;
    let nap = |seconds: f64| call("nap", vec![p_in("seconds", Kind::FloatValue(seconds))]);
    let submit_with = |call: pb::ProcedureCall, request_id: &str| pb::SubmitAsyncRequest {
        call: Some(call),
        request_id: request_id.into(),
        ..Default::default()
    };
    // One job runs, one waits: the queue (--max-pending-jobs 1) is full.
    let running = submit(&mut client, nap(30.0)).await;
    wait_state(&client, &running.id, S::Running).await;
    let waiting = client
        .submit_async(submit_with(nap(0.0), "retry-me"))
        .await
        .unwrap()
        .into_inner();
    let full = client
        .submit_async(submit_with(nap(0.0), "another"))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    let retried = client
        .submit_async(submit_with(nap(0.0), "retry-me"))
        .await
        .expect("a retry gets its job even with the queue full")
        .into_inner();
    assert_eq!(retried.id, waiting.id);

    for different in [
        nap(1.0),
        call("chatty", vec![p_in("lines", Kind::IntegerValue(1))]),
    ] {
        let status = client
            .submit_async(submit_with(different, "retry-me"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert!(
            status.message().contains(&waiting.id),
            "{}",
            status.message()
        );
    }
    client
        .cancel_job(pb::CancelJobRequest { id: running.id })
        .await
        .unwrap();
    wait_state(&client, &waiting.id, S::Completed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedures_first_small_progress_shows_as_sent() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, call("creep", vec![])).await;
    let seen = watch_to_end(&mut client, &job.id).await;
    let running: Vec<u32> = seen
        .iter()
        .filter(|j| state_of(j) == S::Running)
        .map(|j| j.progress)
        .collect();
    // Milestones 1 (connection) and 2 (executing) stay below the 5 %.
    assert!(
        running.iter().all(|p| [0, 1, 2, 5].contains(p)),
        "{running:?}"
    );
    assert!(running.contains(&5), "{running:?}");
    assert!(
        running.windows(2).all(|w| w[0] <= w[1]),
        "never backwards: {running:?}"
    );
    assert_eq!(seen.last().unwrap().progress, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_in_memory() {
    let gw = Gateway::start(&["--max-running-jobs", "1", "--max-pending-jobs", "1"]).await;
    request_ids_are_checked_before_capacity_and_bound_to_one_call(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_in_the_database_store() {
    let db = start_db().await;
    procgate::jobs::store::migrate(&db.url(), "public")
        .await
        .unwrap();
    let gw = Gateway::start_on(
        db,
        &[
            "--job-store",
            "database",
            "--max-running-jobs",
            "1",
            "--max-pending-jobs",
            "1",
        ],
    )
    .await;
    request_ids_are_checked_before_capacity_and_bound_to_one_call(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_newest_first_with_filters() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let job = if i % 2 == 0 {
            submit(&mut client, nap(0.0)).await
        } else {
            submit(
                &mut client,
                call(
                    "pkg_etl.validar_lote",
                    vec![p_in("p_lote", Kind::IntegerValue(-i))],
                ),
            )
            .await
        };
        ids.push(job.id);
    }
    for id in &ids {
        wait_job(&client, id, "ended", |job| {
            matches!(state_of(job), S::Completed | S::Failed)
        })
        .await;
    }

    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        listed.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);

    let failed = client
        .list_jobs(pb::ListJobsRequest {
            states: vec![S::Failed as i32],
            procedure: "PKG_ETL.VALIDAR_LOTE".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.jobs.len(), 3);
    assert!(failed.jobs.iter().all(|j| state_of(j) == S::Failed));

    let bad = client
        .list_jobs(pb::ListJobsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_after_the_retention_period() {
    let gw = Gateway::start(&["--job-retention", "300ms", "--sweep-interval", "100ms"]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, nap(0.0)).await;
    let running = submit(&mut client, nap(30.0)).await;
    eventually(
        Duration::from_secs(10),
        "the finished job to expire",
        || {
            let mut client = client.clone();
            let id = job.id.clone();
            async move {
                let status = client
                    .get_job(pb::GetJobRequest {
                        id,
                        ..Default::default()
                    })
                    .await
                    .err()?;
                (status.code() == Code::NotFound).then_some(())
            }
        },
    )
    .await;
    // A live job is never swept.
    let still = client
        .get_job(pb::GetJobRequest {
            id: running.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state_of(&still), S::Running);
    client
        .cancel_job(pb::CancelJobRequest { id: running.id })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_share_one_job_and_all_see_the_end() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let job = submit(
        &mut client,
        call("staged", vec![p_in("pause", Kind::FloatValue(0.2))]),
    )
    .await;
    let mut watchers = Vec::new();
    for _ in 0..200 {
        let mut client = client.clone();
        let id = job.id.clone();
        watchers.push(tokio::spawn(
            async move { watch_to_end(&mut client, &id).await },
        ));
    }
    for watcher in watchers {
        let seen = watcher.await.unwrap();
        assert_eq!(state_of(seen.last().unwrap()), S::Completed);
    }

    for (id, code) in [
        ("", Code::InvalidArgument),
        ("not-a-uuid", Code::InvalidArgument),
        ("3f0c1b1e-8a4e-4c1e-9f57-6f2b8f3d2a10", Code::NotFound),
    ] {
        let status = client
            .watch_job(pb::WatchJobRequest {
                id: id.into(),
                since_revision: 0,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{id:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_disconnects_releases_its_stream() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, nap(30.0)).await;
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            id: job.id.clone(),
            since_revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.id, job.id);
    drop(stream);
    // The job is unaffected by its watcher leaving.
    let job = wait_state(&client, &job.id, S::Running).await;
    assert!(!job.cancel_requested);
    client
        .cancel_job(pb::CancelJobRequest { id: job.id })
        .await
        .unwrap();
    let ids: HashSet<String> = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids.len(), 1);
}

/// The procgate sessions open in the database, by backend pid.
/// A PostgreSQL cancel request can land after the statement it aimed at has
/// returned; were that session reused, the next call on it would be the one
/// cancelled. So the session of a cancelled call is closed, not pooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_of_a_cancelled_call_is_never_reused() {
    let gw = Gateway::start(&["--pool-size", "1"]).await;
    let mut client = gw.client().await;
    let running = submit(&mut client, nap(60.0)).await;
    let napping = "SELECT pid FROM pg_stat_activity WHERE state = 'active' \
                   AND query LIKE 'CALL \"public\".\"nap\"%'";
    let pid: i32 = eventually(
        Duration::from_secs(5),
        "the nap to reach the database",
        || async { gw.sql(napping).await.first().map(|row| row.get(0)) },
    )
    .await;
    client
        .cancel_job(pb::CancelJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap();
    wait_state(&client, &running.id, S::Cancelled).await;

    // The next job runs on another session; the cancelled one is closed
    // (its backend may take a moment to exit).
    let next = submit(&mut client, nap(0.0)).await;
    wait_state(&client, &next.id, S::Completed).await;
    let alive = format!("SELECT 1 FROM pg_stat_activity WHERE pid = {pid}");
    eventually(
        Duration::from_secs(10),
        "the cancelled call's session to close",
        || async { gw.sql(&alive).await.is_empty().then_some(()) },
    )
    .await;
}
