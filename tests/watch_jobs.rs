//! WatchJobs, revisions and resumption, run against both stores: the same
//! tests, once with jobs in memory and once in the database job store.
//! A real gateway, a real PostgreSQL and a real gRPC client each time.

mod common;

use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobEventType as E, JobState as S};
use tokio_stream::StreamExt;
use tonic::Code;

on_both_stores!(
    a_stream_starts_with_live_jobs_then_synced_then_follows_every_change,
    a_watcher_that_resumes_misses_nothing_that_happened_while_it_was_away,
    resuming_from_an_unknown_or_purged_revision_is_refused,
    filters_apply_and_a_watcher_sees_jobs_leave_its_states,
    callers_see_only_their_own_jobs_events,
    watch_job_since_a_revision_sends_only_what_is_newer,
    list_jobs_is_strictly_newest_first_by_submission,
    watch_streams_end_at_shutdown_instead_of_holding_it_up,
    nul_characters_in_a_request_id_or_a_filter_are_invalid_arguments,
);

type Events = tonic::Streaming<pb::JobEvent>;

fn nap(seconds: f64) -> pb::ProcedureCall {
    call("nap", vec![p_in("seconds", Kind::FloatValue(seconds))])
}

fn watch_request(states: &[S], procedure: &str, since: u64) -> pb::WatchJobsRequest {
    pb::WatchJobsRequest {
        states: states.iter().map(|s| *s as i32).collect(),
        procedure: procedure.into(),
        since_revision: since,
        ..Default::default()
    }
}

async fn watch_jobs(client: &mut Client, request: pb::WatchJobsRequest) -> Events {
    client.watch_jobs(request).await.unwrap().into_inner()
}

async fn next_event(events: &mut Events) -> pb::JobEvent {
    tokio::time::timeout(Duration::from_secs(15), events.next())
        .await
        .expect("an event within 15 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

fn kind(event: &pb::JobEvent) -> E {
    E::try_from(event.r#type).unwrap()
}

fn job_of(event: &pb::JobEvent) -> &pb::Job {
    event.job.as_ref().expect("the event carries a job")
}

/// Events up to and including SYNCED.
async fn until_synced(events: &mut Events) -> (Vec<pb::JobEvent>, u64) {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        if kind(&event) == E::Synced {
            assert!(event.job.is_none(), "SYNCED carries no job");
            return (seen, event.revision);
        }
        seen.push(event);
    }
}

/// Events until `done` holds for one, which is included.
async fn until(events: &mut Events, done: impl Fn(&pb::JobEvent) -> bool) -> Vec<pb::JobEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        let last = done(&event);
        seen.push(event);
        if last {
            return seen;
        }
    }
}

fn is_state(id: &str, state: S) -> impl Fn(&pb::JobEvent) -> bool + '_ {
    move |e| {
        e.job
            .as_ref()
            .is_some_and(|j| j.id == id && state_of(j) == state)
    }
}

fn assert_in_revision_order(events: &[pb::JobEvent]) {
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "events out of revision order: {revisions:?}"
    );
}

async fn a_stream_starts_with_live_jobs_then_synced_then_follows_every_change(store: Store) {
    let gw = gateway(store, &[]).await;
    let mut client = gw.client().await;
    let sleeper = submit(&mut client, nap(30.0)).await;
    let sleeper = wait_state(&client, &sleeper.id, S::Running).await;
    let finished = submit(&mut client, nap(0.0)).await;
    wait_state(&client, &finished.id, S::Completed).await;

    let mut events = watch_jobs(&mut client, watch_request(&[], "", 0)).await;
    let (existing, synced) = until_synced(&mut events).await;
    assert_eq!(
        existing.len(),
        1,
        "one EXISTING per live job, none for ended ones"
    );
    assert_eq!(kind(&existing[0]), E::Existing);
    assert_eq!(job_of(&existing[0]).id, sleeper.id);
    assert!(synced >= existing[0].revision && synced > 0);

    // A new job: its submit, start and end, in order, each with its revision.
    let staged = submit(
        &mut client,
        call("staged", vec![p_in("pause", Kind::FloatValue(0.1))]),
    )
    .await;
    assert!(staged.create_revision > 0 && staged.revision >= staged.create_revision);
    let seen = until(&mut events, is_state(&staged.id, S::Completed)).await;
    assert!(seen.iter().all(|e| kind(e) == E::Changed));
    assert_in_revision_order(&seen);
    assert!(seen[0].revision > synced);
    let states: Vec<S> = seen
        .iter()
        .filter(|e| job_of(e).id == staged.id)
        .map(|e| state_of(job_of(e)))
        .collect();
    let mut distinct = states.clone();
    distinct.dedup();
    // Every state change, in both stores: the database store's reader
    // replays a submit or a start it did not see from the revisions the
    // row keeps.
    assert_eq!(
        distinct,
        [S::Pending, S::Running, S::Completed],
        "{states:?} ({store:?})"
    );
    let last = seen.last().unwrap();
    assert_eq!(job_of(last).progress, 100);
    assert_eq!(job_of(last).revision, last.revision);

    // Cancel and delete reach the stream too; a DELETED names the job.
    client
        .cancel_job(pb::CancelJobRequest {
            id: sleeper.id.clone(),
        })
        .await
        .unwrap();
    until(&mut events, is_state(&sleeper.id, S::Cancelled)).await;
    client
        .delete_job(pb::DeleteJobRequest {
            id: staged.id.clone(),
        })
        .await
        .unwrap();
    let deleted = until(&mut events, |e| kind(e) == E::Deleted).await;
    let deleted = deleted.last().unwrap();
    let tomb = job_of(deleted);
    assert_eq!(
        (tomb.id.as_str(), tomb.procedure.as_str(), state_of(tomb)),
        (staged.id.as_str(), "staged", S::Completed)
    );
    assert_eq!(tomb.revision, deleted.revision);
}

async fn a_watcher_that_resumes_misses_nothing_that_happened_while_it_was_away(store: Store) {
    let gw = gateway(store, &[]).await;
    let mut client = gw.client().await;
    let old = submit(&mut client, nap(0.0)).await;
    wait_state(&client, &old.id, S::Completed).await;
    let unrelated = submit(&mut client, nap(0.0)).await;
    wait_state(&client, &unrelated.id, S::Completed).await;

    let mut events = watch_jobs(&mut client, watch_request(&[S::Running], "", 0)).await;
    let (_, synced) = until_synced(&mut events).await;
    drop(events); // the dashboard lost its network

    let new = submit(&mut client, nap(0.0)).await;
    wait_state(&client, &new.id, S::Completed).await;
    client
        .delete_job(pb::DeleteJobRequest { id: old.id.clone() })
        .await
        .unwrap();

    // Back: the states filter does not apply to the replay (the new job left
    // RUNNING while the watcher was away); the unchanged job is not resent.
    let mut events = watch_jobs(&mut client, watch_request(&[S::Running], "", synced)).await;
    let (replay, resynced) = until_synced(&mut events).await;
    assert_in_revision_order(&replay);
    let shape: Vec<(E, &str, S)> = replay
        .iter()
        .map(|e| (kind(e), job_of(e).id.as_str(), state_of(job_of(e))))
        .collect();
    assert_eq!(
        shape,
        [
            (E::Changed, new.id.as_str(), S::Completed),
            (E::Deleted, old.id.as_str(), S::Completed)
        ]
    );
    assert!(resynced >= replay.last().unwrap().revision);

    // Resuming from the newest revision replays nothing.
    let mut events = watch_jobs(&mut client, watch_request(&[], "", resynced)).await;
    let (replay, again) = until_synced(&mut events).await;
    assert!(replay.is_empty(), "{replay:?}");
    assert_eq!(again, resynced);
}

async fn resuming_from_an_unknown_or_purged_revision_is_refused(store: Store) {
    let gw = gateway(
        store,
        &["--tombstone-retention", "0s", "--sweep-interval", "100ms"],
    )
    .await;
    let mut client = gw.client().await;
    let job = submit(&mut client, nap(0.0)).await;
    let job = wait_state(&client, &job.id, S::Completed).await;

    let ahead = client
        .watch_jobs(watch_request(&[], "", job.revision + 1_000_000))
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), Code::FailedPrecondition, "{ahead:?}");
    assert_eq!(
        ahead.message(),
        "revision too old: resync without since_revision"
    );

    client
        .delete_job(pb::DeleteJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    // The tombstone is purged at the next sweep: resuming from before it
    // could miss the deletion, so it is refused.
    let refused = eventually(Duration::from_secs(10), "the tombstone purged", || {
        let mut client = client.clone();
        let since = job.revision;
        async move { client.watch_jobs(watch_request(&[], "", since)).await.err() }
    })
    .await;
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("resync without since_revision"));
}

async fn filters_apply_and_a_watcher_sees_jobs_leave_its_states(store: Store) {
    let gw = gateway(store, &[]).await;
    let mut client = gw.client().await;
    let mut running = watch_jobs(&mut client, watch_request(&[S::Running], "", 0)).await;
    let mut naps = watch_jobs(&mut client, watch_request(&[], "NAP", 0)).await;
    assert!(until_synced(&mut running).await.0.is_empty());
    assert!(until_synced(&mut naps).await.0.is_empty());

    let staged = submit(
        &mut client,
        call("staged", vec![p_in("pause", Kind::FloatValue(0.1))]),
    )
    .await;
    let nap = submit(&mut client, nap(0.2)).await;

    // RUNNING watchers see the jobs enter RUNNING and leave it, never their
    // PENDING submit.
    let mut ended = std::collections::HashSet::new();
    while ended.len() < 2 {
        let event = next_event(&mut running).await;
        let job = job_of(&event);
        assert_ne!(state_of(job), S::Pending, "{event:?}");
        if state_of(job) == S::Completed {
            ended.insert(job.id.clone());
        }
    }
    // The procedure filter is case-insensitive, and other jobs never show.
    let seen = until(&mut naps, is_state(&nap.id, S::Completed)).await;
    assert!(seen.iter().all(|e| job_of(e).id == nap.id), "{seen:?}");
    assert!(ended.contains(&staged.id));
}

async fn callers_see_only_their_own_jobs_events(store: Store) {
    let (_dir, path) = token_file(TOKENS);
    let gw = gateway(store, &["--token-file", &path]).await;
    let mut client = gw.client().await;
    let open = |token: &'static str| {
        let mut client = client.clone();
        async move {
            let mut events = client
                .watch_jobs(as_user(watch_request(&[], "", 0), token))
                .await
                .unwrap()
                .into_inner();
            until_synced(&mut events).await;
            events
        }
    };
    let mut bobs = open("bob-secret-22").await;
    let mut roots = open("root-secret-333").await;
    let submit_as = |token: &'static str| {
        let mut client = client.clone();
        async move {
            let request = pb::SubmitAsyncRequest {
                call: Some(nap(0.0)),
                request_id: String::new(),
                ..Default::default()
            };
            client
                .submit_async(as_user(request, token))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let alices = submit_as("alice-secret-1").await;
    let bobs_job = submit_as("bob-secret-22").await;

    let seen = until(&mut bobs, is_state(&bobs_job.id, S::Completed)).await;
    assert!(
        seen.iter().all(|e| job_of(e).owner == "bob"),
        "bob saw another owner's job: {seen:?}"
    );
    // The admin sees both.
    let mut done = std::collections::HashSet::new();
    while done.len() < 2 {
        let event = next_event(&mut roots).await;
        if state_of(job_of(&event)) == S::Completed {
            done.insert(job_of(&event).id.clone());
        }
    }
    assert!(done.contains(&alices.id) && done.contains(&bobs_job.id));
    let anonymous = client
        .watch_jobs(watch_request(&[], "", 0))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

async fn watch_job_since_a_revision_sends_only_what_is_newer(store: Store) {
    let gw = gateway(store, &[]).await;
    let mut client = gw.client().await;
    let done = submit(&mut client, nap(0.0)).await;
    let done = wait_state(&client, &done.id, S::Completed).await;
    let watcher = client.clone();
    let watch = |id: String, since: u64| {
        let mut client = watcher.clone();
        async move {
            client
                .watch_job(pb::WatchJobRequest {
                    id,
                    since_revision: since,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    // An ended job unchanged since then: the stream ends at once, empty.
    let mut unchanged = watch(done.id.clone(), done.revision).await;
    let first = tokio::time::timeout(Duration::from_secs(5), unchanged.next())
        .await
        .expect("the stream ends at once");
    assert!(first.is_none(), "{first:?}");
    // From an older revision it is sent.
    let mut older = watch(done.id.clone(), done.revision - 1).await;
    let sent = older.next().await.unwrap().unwrap();
    assert_eq!((sent.id, sent.revision), (done.id.clone(), done.revision));

    // A running job: nothing until it changes after the revision given.
    let staged = submit(
        &mut client,
        call("staged", vec![p_in("pause", Kind::FloatValue(0.3))]),
    )
    .await;
    let running = wait_state(&client, &staged.id, S::Running).await;
    let mut stream = watch(staged.id.clone(), running.revision).await;
    let next = stream.next().await.unwrap().unwrap();
    assert!(next.revision > running.revision, "{next:?}");
    while let Some(job) = stream.next().await {
        assert!(job.unwrap().revision > running.revision);
    }
    // From a revision the store never reached (another store's, or one
    // from before a memory store restarted): refused, as WatchJobs does.
    let refused = client
        .watch_job(pb::WatchJobRequest {
            id: staged.id.clone(),
            since_revision: 1_000_000_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("revision too old"),
        "{refused:?}"
    );
}

/// A WatchJobs stream ends at shutdown, after what it was owed, with
/// UNAVAILABLE (resume elsewhere with since_revision) instead of holding the
/// exit up until the grace period ends.
async fn watch_streams_end_at_shutdown_instead_of_holding_it_up(store: Store) {
    let gw = gateway(store, &["--grace-period", "20s"]).await;
    let mut client = gw.client().await;
    let mut events = watch_jobs(&mut client, watch_request(&[], "", 0)).await;
    until_synced(&mut events).await;
    let pending = submit(&mut client, nap(30.0)).await;
    let mut watcher = client.clone();
    let mut job_stream = watcher
        .watch_job(pb::WatchJobRequest {
            id: pending.id.clone(),
            since_revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    job_stream.next().await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(gw.shutdown());
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the WatchJobs stream ends at shutdown");
    let status = ended.expect("it ends with a status, not silently");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("since_revision"), "{status:?}");
    while let Some(Ok(_)) = job_stream.next().await {}
    shutdown.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// Input the database cannot hold is refused in both stores alike, with
/// INVALID_ARGUMENT, before it reaches the store.
async fn nul_characters_in_a_request_id_or_a_filter_are_invalid_arguments(store: Store) {
    let gw = gateway(store, &[]).await;
    let mut client = gw.client().await;
    let submitted = client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(nap(0.0)),
            request_id: "rq\0x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(submitted.code(), Code::InvalidArgument, "{submitted:?}");
    assert!(submitted.message().contains("NUL"), "{submitted:?}");
    let listed = client
        .list_jobs(pb::ListJobsRequest {
            procedure: "pkg\0etl".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::InvalidArgument, "{listed:?}");
    let watched = client
        .watch_jobs(watch_request(&[], "pkg\0etl", 0))
        .await
        .unwrap_err();
    assert_eq!(watched.code(), Code::InvalidArgument, "{watched:?}");
}

async fn list_jobs_is_strictly_newest_first_by_submission(store: Store) {
    let gw = gateway(store, &["--max-pending-jobs", "1000"]).await;
    let client = gw.client().await;
    let submits = (0..40).map(|_| {
        let mut client = client.clone();
        async move { submit(&mut client, nap(0.0)).await }
    });
    futures_util::future::join_all(submits).await;
    let mut client = client.clone();
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.jobs);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed.len(), 40);
    let order: Vec<u64> = listed.iter().map(|j| j.create_revision).collect();
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "not strictly newest first: {order:?}"
    );
}
