//! Retries with backoff, expiry and per-procedure limits, on both job
//! stores, against a real PostgreSQL through a real gRPC client.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S};
use tonic::Code;

/// A procedure that fails with a serialization failure (40001) on its first
/// `p_fails` calls, counted by a sequence (which a rollback does not undo).
const FLAKY: [&str; 2] = [
    "CREATE SEQUENCE IF NOT EXISTS flaky_calls",
    "CREATE OR REPLACE PROCEDURE flaky(p_fails integer, INOUT p_calls bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    p_calls := nextval('flaky_calls');
    IF p_calls <= p_fails THEN
        RAISE EXCEPTION 'could not serialize access (call %)', p_calls
            USING ERRCODE = '40001';
    END IF;
END $$",
];

fn retry(max_attempts: u32, initial_ms: u64) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_attempts,
        initial_backoff: Some(prost_types::Duration {
            seconds: 0,
            nanos: (initial_ms * 1_000_000) as i32,
        }),
        ..Default::default()
    }
}

async fn submit_with(
    client: &mut Client,
    call: pb::ProcedureCall,
    retry: Option<pb::RetryPolicy>,
    expire_after: Option<Duration>,
) -> Result<pb::Job, tonic::Status> {
    client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(call),
            retry,
            expire_after: expire_after.map(|d| d.try_into().unwrap()),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn a_serialization_failure_is_retried_until_it_succeeds(store: Store) {
    let gateway = gateway(store, &[]).await;
    for statement in FLAKY {
        gateway.sql(statement).await;
    }
    let mut client = gateway.client().await;
    let flaky = call("flaky", vec![p_in("p_fails", Kind::IntegerValue(2))]);
    let job = submit_with(&mut client, flaky, Some(retry(5, 200)), None)
        .await
        .unwrap();
    assert_eq!((job.attempt, job.max_attempts), (1, 5));
    let seen = watch_to_end(&mut client, &job.id).await;
    let last = seen.last().unwrap();
    assert_eq!(state_of(last), S::Completed, "{last:?}");
    assert_eq!(last.attempt, 3, "two failures, then the third attempt");
    assert_eq!(last.attempt_errors.len(), 2);
    for failed in &last.attempt_errors {
        assert_eq!(failed.code, Code::Aborted as i32, "{failed:?}");
        assert_eq!(failed.db_code, "40001");
        assert!(failed.message.contains("could not serialize"), "{failed:?}");
        assert!(failed.time.is_some());
    }
    let calls = last.outputs.get("p_calls").and_then(|v| kind_of(Some(v)));
    assert!(
        matches!(calls, Some(Kind::IntegerValue(3))),
        "the procedure ran three times: {calls:?}"
    );
    let retrying: Vec<&pb::Job> = seen
        .iter()
        .filter(|j| state_of(j) == S::Pending && j.progress_message.starts_with("retrying in"))
        .collect();
    assert!(
        retrying
            .iter()
            .any(|j| j.progress_message.ends_with("(attempt 2 of 5)")),
        "WatchJob shows the retry as it happens: {:?}",
        seen.iter()
            .map(|j| (&j.progress_message, j.attempt))
            .collect::<Vec<_>>()
    );
}

async fn a_user_error_is_tried_once_and_a_plain_job_is_attempt_1_of_1(store: Store) {
    let gateway = gateway(store, &[]).await;
    let mut client = gateway.client().await;
    let invalid = call(
        "pkg_etl.validar_lote",
        vec![p_in("p_lote", Kind::IntegerValue(-1))],
    );
    let job = submit_with(&mut client, invalid.clone(), Some(retry(5, 100)), None)
        .await
        .unwrap();
    let failed = wait_state(&client, &job.id, S::Failed).await;
    assert_eq!(failed.error.as_ref().unwrap().db_code, "P0001");
    assert_eq!((failed.attempt, failed.max_attempts), (1, 5));
    assert!(failed.attempt_errors.is_empty(), "{failed:?}");

    let plain = submit(&mut client, invalid).await;
    let plain = wait_state(&client, &plain.id, S::Failed).await;
    assert_eq!((plain.attempt, plain.max_attempts), (1, 1));
}

async fn a_bad_retry_policy_or_expiry_is_refused_before_anything_runs(store: Store) {
    let gateway = gateway(store, &[]).await;
    let mut client = gateway.client().await;
    let sum = call("pkg_etl.sumar", vec![]);
    let mut policy = retry(3, 100);
    policy.multiplier = 0.5;
    let refused = submit_with(&mut client, sum.clone(), Some(policy), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("multiplier"), "{refused:?}");
    let refused = submit_with(&mut client, sum.clone(), Some(retry(1000, 100)), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let duration = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    for (expire_after, why) in [
        (duration(-5, 0), "is negative"),
        (duration(1, -5), "not a valid protobuf Duration"),
        (duration(i64::MAX, 0), "is too long"),
        (duration(400 * 86400, 0), "at most 366 days"),
    ] {
        let refused = client
            .submit_async(pb::SubmitAsyncRequest {
                call: Some(sum.clone()),
                expire_after,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("expire_after"), "{refused:?}");
        assert!(refused.message().contains(why), "{why}: {refused:?}");
    }
    // A backoff too long to add to a clock would once panic the server.
    let mut huge = retry(3, 100);
    huge.initial_backoff = duration(i64::MAX, 0);
    huge.max_backoff = duration(i64::MAX, 0);
    let refused = submit_with(&mut client, sum.clone(), Some(huge), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("at most 7 days"), "{refused:?}");
    let mut tiny = retry(3, 100);
    tiny.multiplier = 5e-324;
    let refused = submit_with(&mut client, sum, Some(tiny), None)
        .await
        .unwrap_err();
    assert!(refused.message().contains("5e-324"), "{refused:?}");
    let page = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(page.jobs.is_empty(), "nothing was queued: {page:?}");
}

async fn a_job_still_pending_past_its_expiry_fails_expired_and_never_starts(store: Store) {
    let gateway = gateway(store, &["--max-running-jobs", "1"]).await;
    let mut client = gateway.client().await;
    let busy = submit(&mut client, long_load(10, 300)).await;
    wait_state(&client, &busy.id, S::Running).await;
    let waiting = submit_with(
        &mut client,
        call("pkg_etl.sumar", vec![]),
        None,
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let expired = wait_state(&client, &waiting.id, S::Failed).await;
    let error = expired.error.as_ref().unwrap();
    assert_eq!(error.code, Code::DeadlineExceeded as i32, "{error:?}");
    assert_eq!(error.reason, "EXPIRED");
    assert!(error.message.contains("never"), "{error:?}");
    assert!(expired.start_time.is_none(), "it never started");
    let created: SystemTime = expired.create_time.unwrap().try_into().unwrap();
    let ended: SystemTime = expired.end_time.unwrap().try_into().unwrap();
    let after = ended.duration_since(created).unwrap();
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_secs(2),
        "ended {after:?} after its submit, within a second of its expiry"
    );
    // It never ran: the busy job is still the only one that started.
    let busy = client
        .get_job(pb::GetJobRequest {
            id: busy.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state_of(&busy), S::Running);
    client
        .cancel_job(pb::CancelJobRequest { id: busy.id })
        .await
        .unwrap();
}

async fn a_procedure_limit_holds_its_jobs_back_but_not_other_procedures(store: Store) {
    let gateway = gateway(
        store,
        &[
            "--procedure-limit",
            "PKG_ETL.proceso_*=1",
            "--max-running-jobs",
            "4",
        ],
    )
    .await;
    let mut client = gateway.client().await;
    let first = submit(&mut client, long_load(6, 250)).await;
    // Quoting the name does not escape the limit.
    let mut quoted = long_load(1, 10);
    quoted.procedure = "\"pkg_etl\".proceso_largo".into();
    let second = submit(&mut client, quoted).await;
    let sum = call(
        "pkg_etl.sumar",
        vec![
            p_in("a", Kind::IntegerValue(1)),
            p_in("b", Kind::IntegerValue(2)),
        ],
    );
    let other = submit(&mut client, sum).await;
    wait_state(&client, &first.id, S::Running).await;
    let held = wait_job(&client, &second.id, "waiting for the limit", |j| {
        j.progress_message == "waiting: PKG_ETL.proceso_* limit 1"
    })
    .await;
    assert_eq!(state_of(&held), S::Pending);
    let other = wait_state(&client, &other.id, S::Completed).await;
    assert_eq!(
        state_of(&other),
        S::Completed,
        "other procedures run meanwhile"
    );
    let first = wait_state(&client, &first.id, S::Completed).await;
    let second = wait_state(&client, &second.id, S::Completed).await;
    let first_end: SystemTime = first.end_time.unwrap().try_into().unwrap();
    let second_start: SystemTime = second.start_time.unwrap().try_into().unwrap();
    assert!(
        second_start >= first_end,
        "the second started once the first ended"
    );
    // ExecuteSync is never limited.
    let mut sync = gateway.client().await;
    execute(&mut sync, long_load(1, 10)).await.unwrap();
}

on_both_stores!(
    a_serialization_failure_is_retried_until_it_succeeds,
    a_user_error_is_tried_once_and_a_plain_job_is_attempt_1_of_1,
    a_bad_retry_policy_or_expiry_is_refused_before_anything_runs,
    a_job_still_pending_past_its_expiry_fails_expired_and_never_starts,
    a_procedure_limit_holds_its_jobs_back_but_not_other_procedures,
);

#[test]
fn a_bad_procedure_limit_is_a_usage_error() {
    for bad in ["pkg_etl.carga_*", "pkg=0", "=3", "pkg=two"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args(["serve", "--procedure-limit", bad])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--procedure-limit"), "{bad}: {stderr}");
    }
}
