//! The job engine's shared suite: the same lifecycle, idempotency, paging,
//! ownership, cancel, retention and watch tests against the memory store and
//! the database store. Calls go to the scripted fake backend
//! (tests/common/fake.rs), so each test takes milliseconds plus, for the
//! database store, a private PostgreSQL.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use procgate::proto::{self as pb, JobEventType as E, JobState as S};
use tokio_stream::StreamExt;
use tonic::Code;

on_both_stores!(
    a_job_moves_through_its_states_with_its_progress_and_outputs,
    a_failure_keeps_the_database_code,
    a_request_id_returns_its_job_even_when_the_queue_is_full,
    a_request_id_reused_for_another_call_is_already_exists,
    pages_are_newest_first_without_gaps_and_filters_apply,
    another_owners_job_does_not_exist_for_a_caller,
    cancel_ends_a_pending_job_at_once_and_interrupts_a_running_one,
    only_ended_jobs_can_be_deleted_and_then_they_are_gone,
    ended_jobs_expire_and_their_watchers_hear_of_it,
    every_watcher_of_a_job_sees_its_end,
    a_job_that_finds_the_database_gone_waits_at_the_head_of_the_queue,
    a_watcher_sees_every_state_change_of_jobs_that_end_at_once,
);

fn fake(name: &str) -> pb::ProcedureCall {
    call(&format!("fake.{name}"), Vec::new())
}

fn submit_request(name: &str, request_id: &str) -> pb::SubmitAsyncRequest {
    pb::SubmitAsyncRequest {
        call: Some(fake(name)),
        request_id: request_id.into(),
        ..Default::default()
    }
}

async fn a_job_moves_through_its_states_with_its_progress_and_outputs(store: Store) {
    let gw = fake_gateway(store, &[]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, fake("progress")).await;
    assert_eq!(state_of(&job), S::Pending);
    assert_eq!(job.progress, 0);
    let seen = watch_to_end(&mut client, &job.id).await;
    let last = seen.last().unwrap();
    assert_eq!(state_of(last), S::Completed);
    assert_eq!(last.progress, 100);
    assert_eq!(last.messages, ["all steps done"]);
    assert!(matches!(
        kind_of(last.outputs.get("done")),
        Some(pb::value::Kind::BoolValue(true))
    ));
    assert!(last.start_time.is_some() && last.end_time.is_some() && last.duration.is_some());
    let progress: Vec<u32> = seen.iter().map(|j| j.progress).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let revisions: Vec<u64> = seen.iter().map(|j| j.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    // Every state on the way was a legal one, in order.
    let mut states: Vec<S> = seen.iter().map(state_of).collect();
    states.dedup();
    assert!(
        [
            vec![S::Pending, S::Running, S::Completed],
            vec![S::Running, S::Completed]
        ]
        .contains(&states)
            || states == [S::Completed],
        "{states:?}"
    );
}

async fn a_failure_keeps_the_database_code(store: Store) {
    let gw = fake_gateway(store, &[]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, fake("fail")).await;
    let failed = wait_state(&client, &job.id, S::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!(error.db_code, "P0001");
    assert!(error.message.contains("scripted failure"), "{error:?}");
    assert_eq!(failed.progress_message, "failed");
}

async fn a_request_id_returns_its_job_even_when_the_queue_is_full(store: Store) {
    let gw = fake_gateway(
        store,
        &["--max-running-jobs", "1", "--max-pending-jobs", "1"],
    )
    .await;
    let mut client = gw.client().await;
    let running = submit(&mut client, fake("block")).await;
    wait_state(&client, &running.id, S::Running).await;
    let queued = client
        .submit_async(submit_request("ok", "nightly-1"))
        .await
        .unwrap()
        .into_inner();
    let full = client
        .submit_async(submit_request("ok", "nightly-2"))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("--max-pending-jobs"));
    // Idempotency before capacity: the retry gets its job back.
    let again = client
        .submit_async(submit_request("ok", "nightly-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, queued.id);
    client
        .cancel_job(pb::CancelJobRequest { id: running.id })
        .await
        .unwrap();
    wait_state(&client, &queued.id, S::Completed).await;
}

async fn a_request_id_reused_for_another_call_is_already_exists(store: Store) {
    let gw = fake_gateway(store, &[]).await;
    let mut client = gw.client().await;
    let first = client
        .submit_async(submit_request("ok", "load-2026-12-01"))
        .await
        .unwrap()
        .into_inner();
    // The same call, written differently: names fold, parameters bind by
    // name in any order.
    let params = |order: [(&str, i64); 2]| {
        order
            .iter()
            .map(|(name, n)| p_in(name, pb::value::Kind::IntegerValue(*n)))
            .collect::<Vec<_>>()
    };
    let with_params = |procedure: &str, order, key: &str| pb::SubmitAsyncRequest {
        call: Some(call(procedure, params(order))),
        request_id: key.into(),
        ..Default::default()
    };
    let sum = client
        .submit_async(with_params("fake.ok", [("a", 1), ("b", 2)], "sum-1"))
        .await
        .unwrap()
        .into_inner();
    let same = client
        .submit_async(with_params("FAKE.OK", [("B", 2), ("a", 1)], "sum-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.id, sum.id);
    let changed = client
        .submit_async(with_params("fake.ok", [("a", 1), ("b", 3)], "sum-1"))
        .await
        .unwrap_err();
    assert_eq!(changed.code(), Code::AlreadyExists, "{changed:?}");

    let other = client
        .submit_async(submit_request("progress", "load-2026-12-01"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    assert!(other.message().contains(&first.id), "{}", other.message());
    let too_long = client
        .submit_async(submit_request("ok", &"k".repeat(129)))
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);
}

async fn pages_are_newest_first_without_gaps_and_filters_apply(store: Store) {
    let gw = fake_gateway(store, &[]).await;
    let mut client = gw.client().await;
    let mut submitted = Vec::new();
    for n in 0..25 {
        let name = if n % 5 == 0 { "fail" } else { "ok" };
        submitted.push(submit(&mut client, fake(name)).await.id);
    }
    for id in &submitted {
        wait_job(&client, id, "ended", |j| j.end_time.is_some()).await;
    }
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 10,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.jobs.len() <= 10);
        listed.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    submitted.reverse();
    assert_eq!(listed, submitted, "newest first, every job once");

    let failed = client
        .list_jobs(pb::ListJobsRequest {
            states: vec![S::Failed as i32],
            procedure: "FAKE.FAIL".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        failed.jobs.len(),
        5,
        "state and (case-insensitive) procedure"
    );
    let bad_token = client
        .list_jobs(pb::ListJobsRequest {
            page_token: "made-up".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    // A filter no procedure name can match is refused, not kept.
    let huge = "p".repeat(1 << 20);
    let listed = client
        .list_jobs(pb::ListJobsRequest {
            procedure: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let watched = client
        .watch_jobs(pb::WatchJobsRequest {
            procedure: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    for refused in [listed, watched] {
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("procedure filter"),
            "{refused:?}"
        );
    }
}

async fn another_owners_job_does_not_exist_for_a_caller(store: Store) {
    let (_dir, path) = token_file(TOKENS);
    let gw = fake_gateway(store, &["--token-file", &path]).await;
    let mut client = gw.client().await;
    let alices = client
        .submit_async(as_user(
            submit_request("block", "same-key"),
            "alice-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alices.owner, "alice");
    let id = alices.id.clone();
    let bob = "bob-secret-22";
    let get = client
        .get_job(as_user(
            pb::GetJobRequest {
                id: id.clone(),
                ..Default::default()
            },
            bob,
        ))
        .await
        .unwrap_err();
    let cancel = client
        .cancel_job(as_user(pb::CancelJobRequest { id: id.clone() }, bob))
        .await
        .unwrap_err();
    let watch = client
        .watch_job(as_user(
            pb::WatchJobRequest {
                id: id.clone(),
                since_revision: 0,
                ..Default::default()
            },
            bob,
        ))
        .await
        .unwrap_err();
    for status in [get, cancel, watch] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let bobs_list = client
        .list_jobs(as_user(pb::ListJobsRequest::default(), bob))
        .await
        .unwrap()
        .into_inner();
    assert!(bobs_list.jobs.is_empty());
    // request_ids are per owner: bob's "same-key" is another job.
    let bobs = client
        .submit_async(as_user(submit_request("ok", "same-key"), bob))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.id, id);
    // The admin sees and cancels everyone's.
    let root = "root-secret-333";
    let all = client
        .list_jobs(as_user(pb::ListJobsRequest::default(), root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.jobs.len(), 2);
    client
        .cancel_job(as_user(pb::CancelJobRequest { id }, root))
        .await
        .unwrap();
}

async fn cancel_ends_a_pending_job_at_once_and_interrupts_a_running_one(store: Store) {
    let gw = fake_gateway(store, &["--max-running-jobs", "1"]).await;
    let mut client = gw.client().await;
    let running = submit(&mut client, fake("block")).await;
    wait_state(&client, &running.id, S::Running).await;
    let pending = submit(&mut client, fake("ok")).await;

    let cancelled = client
        .cancel_job(pb::CancelJobRequest {
            id: pending.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state_of(&cancelled), S::Cancelled, "at once");
    assert_eq!(cancelled.progress_message, "cancelled before it started");
    assert!(
        cancelled
            .error
            .unwrap()
            .message
            .contains("never reached the database")
    );

    let asked = client
        .cancel_job(pb::CancelJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(asked.cancel_requested);
    let ended = wait_state(&client, &running.id, S::Cancelled).await;
    assert!(ended.error.unwrap().message.contains("interrupted"));
    let again = client
        .cancel_job(pb::CancelJobRequest { id: running.id })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(again.message().contains("already CANCELLED"), "{again:?}");
}

async fn only_ended_jobs_can_be_deleted_and_then_they_are_gone(store: Store) {
    let gw = fake_gateway(store, &[]).await;
    let mut client = gw.client().await;
    let live = submit(&mut client, fake("block")).await;
    wait_state(&client, &live.id, S::Running).await;
    let refused = client
        .delete_job(pb::DeleteJobRequest {
            id: live.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("cancel it first"), "{refused:?}");

    let done = submit(&mut client, fake("ok")).await;
    wait_state(&client, &done.id, S::Completed).await;
    client
        .delete_job(pb::DeleteJobRequest {
            id: done.id.clone(),
        })
        .await
        .unwrap();
    let gone = client
        .get_job(pb::GetJobRequest {
            id: done.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let twice = client
        .delete_job(pb::DeleteJobRequest { id: done.id })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::NotFound);
    client
        .cancel_job(pb::CancelJobRequest { id: live.id })
        .await
        .unwrap();
}

async fn ended_jobs_expire_and_their_watchers_hear_of_it(store: Store) {
    let gw = fake_gateway(
        store,
        &["--job-retention", "300ms", "--sweep-interval", "100ms"],
    )
    .await;
    let mut client = gw.client().await;
    let mut events = client
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let job = submit(&mut client, fake("ok")).await;
    let expired = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            if event.r#type == E::Deleted as i32 {
                return event;
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("a DELETED event once the job expired");
    let tombstone = expired.job.unwrap();
    assert_eq!(
        (tombstone.id.as_str(), tombstone.owner.as_str()),
        (job.id.as_str(), "")
    );
    assert_eq!(state_of(&tombstone), S::Completed);
    let gone = client
        .get_job(pb::GetJobRequest {
            id: job.id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

async fn every_watcher_of_a_job_sees_its_end(store: Store) {
    let gw = fake_gateway(store, &[]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, fake("block")).await;
    wait_state(&client, &job.id, S::Running).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut stream = client
            .watch_job(pb::WatchJobRequest {
                id: job.id.clone(),
                since_revision: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();
        streams.push(stream);
    }
    client
        .cancel_job(pb::CancelJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    let mut ends = HashSet::new();
    for (n, mut stream) in streams.into_iter().enumerate() {
        let mut last = None;
        while let Some(snapshot) = stream.next().await {
            last = Some(snapshot.unwrap());
        }
        let last = last.expect("a terminal snapshot");
        assert_eq!(state_of(&last), S::Cancelled);
        ends.insert((n, last.revision));
    }
    let revisions: HashSet<u64> = ends.iter().map(|(_, r)| *r).collect();
    assert_eq!(revisions.len(), 1, "every watcher saw the same end");
}

async fn a_job_that_finds_the_database_gone_waits_at_the_head_of_the_queue(store: Store) {
    let gw = fake_gateway(store, &["--max-running-jobs", "1"]).await;
    let mut client = gw.client().await;
    let blocker = submit(&mut client, fake("block")).await;
    wait_state(&client, &blocker.id, S::Running).await;
    // Queued behind it, in this order; the first will find the database
    // gone before it gets a connection.
    let mut queued = vec![submit(&mut client, fake("unreachable_once")).await];
    for _ in 0..3 {
        queued.push(submit(&mut client, fake("ok")).await);
    }
    client
        .cancel_job(pb::CancelJobRequest { id: blocker.id })
        .await
        .unwrap();
    let mut ended = Vec::new();
    for job in &queued {
        let done = wait_state(&client, &job.id, S::Completed).await;
        assert!(done.error.is_none(), "{done:?}");
        ended.push(done);
    }
    // It never failed: it stayed PENDING and still started first.
    let starts: Vec<std::time::SystemTime> = ended
        .iter()
        .map(|j| j.start_time.unwrap().try_into().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "jobs did not start in submission order: {starts:?}"
    );
}

async fn a_watcher_sees_every_state_change_of_jobs_that_end_at_once(store: Store) {
    let gw = fake_gateway(store, &[]).await;
    let mut client = gw.client().await;
    let mut events = client
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let synced = events.next().await.unwrap().unwrap();
    assert_eq!(synced.r#type, E::Synced as i32);
    let mut ids = HashSet::new();
    for _ in 0..20 {
        ids.insert(submit(&mut client, fake("ok")).await.id);
    }
    let mut states: std::collections::HashMap<String, Vec<S>> = Default::default();
    let mut revisions = vec![synced.revision];
    let mut ended = 0;
    while ended < ids.len() {
        let event = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        revisions.push(event.revision);
        let job = event.job.unwrap();
        let seen = states.entry(job.id.clone()).or_default();
        if seen.last() != Some(&state_of(&job)) {
            seen.push(state_of(&job));
        }
        if state_of(&job) == S::Completed {
            ended += 1;
        }
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    for id in &ids {
        assert_eq!(
            states[id],
            [S::Pending, S::Running, S::Completed],
            "job {id} ({store:?})"
        );
    }
}
