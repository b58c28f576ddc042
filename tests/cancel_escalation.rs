//! A cancel that always wins: a procedure that catches `query_canceled`
//! (public.stubborn) has its session ended after `--cancel-grace`, from
//! another connection, whether it runs as a job (CancelJob) or as a sync
//! call past its deadline; the session is gone from pg_stat_activity and
//! never pooled again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use procgate::proto as pb;
use procgate::proto::value::Kind;
use tonic::Code;

fn stubborn(seconds: f64) -> pb::ProcedureCall {
    call(
        "public.stubborn",
        vec![p_in("seconds", Kind::FloatValue(seconds))],
    )
}

/// The pids of sessions whose application_name is `name`.
async fn pids_named(gw: &Gateway, name: &str) -> Vec<i32> {
    gw.sql(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{name}'"
    ))
    .await
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// The next call works, on another session.
async fn the_pool_goes_on(client: &mut Client) {
    let outcome = execute(
        client,
        call("public.nap", vec![p_in("seconds", Kind::FloatValue(0.0))]),
    )
    .await;
    assert!(outcome.is_ok(), "{outcome:?}");
}

async fn alive(gw: &Gateway, pid: i32) -> bool {
    let rows = gw
        .sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
        ))
        .await;
    rows[0].get::<_, i64>(0) > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_swallows_its_cancel_is_terminated_after_the_grace() {
    // The default grace, 10 s.
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, stubborn(600.0)).await;
    wait_state(&client, &job.id, pb::JobState::Running).await;
    let tag = format!("procgate job {}", job.id);
    let pid = eventually(
        Duration::from_secs(10),
        "the job's tagged session",
        || async { pids_named(&gw, &tag).await.first().copied() },
    )
    .await;

    let cancelled_at = Instant::now();
    client
        .cancel_job(pb::CancelJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    let ended = wait_state(&client, &job.id, pb::JobState::Cancelled).await;
    let took = cancelled_at.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(12),
        "ended {took:?} after the cancel"
    );
    let error = ended.error.expect("the job says why it ended");
    assert_eq!(
        error.message,
        "terminated after 10s: the procedure did not stop on cancel"
    );
    assert_eq!(error.code, Code::Cancelled as i32);
    assert_eq!(error.reason, "TERMINATED");
    let full = client
        .get_job(pb::GetJobRequest {
            id: job.id.clone(),
            view: pb::JobView::Full as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        full.messages
            .iter()
            .any(|m| m.contains("a cancel, ignored")),
        "the procedure took the cancel: {:?}",
        full.messages
    );
    assert!(
        full.messages.iter().any(|m| m.contains(&format!(
            "procgate ended its database session (pg_terminate_backend, pid {pid})"
        ))),
        "{:?}",
        full.messages
    );
    eventually(Duration::from_secs(5), "the session to be gone", || async {
        (!alive(&gw, pid).await).then_some(())
    })
    .await;

    the_pool_goes_on(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_call_past_its_deadline_that_swallows_the_cancel_is_terminated() {
    let gw = Gateway::start(&["--cancel-grace", "2s"]).await;
    let mut client = gw.client().await;
    let mut request = tonic::Request::new(pb::ExecuteSyncRequest {
        call: Some(stubborn(600.0)),
    });
    request.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let status = client.execute_sync(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        gw.active_sessions("stubborn").await,
        1,
        "it ignores the cancel"
    );
    eventually(
        Duration::from_secs(10),
        "the stubborn session to be ended",
        || async { (gw.active_sessions("stubborn").await == 0).then(|| started.elapsed()) },
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "ended after {took:?}");
    the_pool_goes_on(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_too_short_for_a_cancel_is_refused() {
    let db = start_db().await;
    let logs = refused_start(&db.url(), &["--cancel-grace", "0s"]).await;
    assert!(
        logs.contains("--cancel-grace 0s is shorter than the 1s a cancel needs"),
        "{logs}"
    );
}
