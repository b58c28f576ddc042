//! Schedules through a real gRPC client, on both job stores, against a real
//! PostgreSQL: ticks exactly once across two instances, validation and its
//! codes, pause, resume and delete, the overlap policies, ownership, and the
//! catch-up after downtime. Every cron here has seconds, so nothing waits
//! for minutes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S};
use tokio_stream::StreamExt;
use tonic::Code;

fn sum() -> pb::ProcedureCall {
    call(
        "pkg_etl.sumar",
        vec![
            p_in("a", Kind::IntegerValue(1)),
            p_in("b", Kind::IntegerValue(2)),
        ],
    )
}

fn schedule(name: &str, cron: &str, call: pb::ProcedureCall) -> pb::Schedule {
    pb::Schedule {
        name: name.into(),
        cron: cron.into(),
        call: Some(call),
        ..Default::default()
    }
}

async fn create(
    client: &mut Client,
    schedule: pb::Schedule,
) -> Result<pb::Schedule, tonic::Status> {
    client
        .create_schedule(pb::CreateScheduleRequest {
            schedule: Some(schedule),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get(client: &mut Client, id: &str) -> Result<pb::Schedule, tonic::Status> {
    client
        .get_schedule(pb::GetScheduleRequest { id: id.into() })
        .await
        .map(tonic::Response::into_inner)
}

async fn update(
    client: &mut Client,
    schedule: pb::Schedule,
    paths: &[&str],
) -> Result<pb::Schedule, tonic::Status> {
    client
        .update_schedule(pb::UpdateScheduleRequest {
            schedule: Some(schedule),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn set_paused(client: &mut Client, id: &str, paused: bool) -> pb::Schedule {
    let change = pb::Schedule {
        id: id.into(),
        paused,
        ..Default::default()
    };
    update(client, change, &["paused"]).await.unwrap()
}

/// Every job of `schedule_id`, newest first.
async fn jobs_of(client: &mut Client, schedule_id: &str) -> Vec<pb::Job> {
    client
        .list_jobs(pb::ListJobsRequest {
            schedule_id: schedule_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
}

async fn wait_jobs_of(client: &mut Client, schedule_id: &str, at_least: usize) -> Vec<pb::Job> {
    eventually(
        Duration::from_secs(30),
        &format!("{at_least} jobs of schedule {schedule_id}"),
        || {
            let mut client = client.clone();
            async move {
                let jobs = jobs_of(&mut client, schedule_id).await;
                (jobs.len() >= at_least).then_some(jobs)
            }
        },
    )
    .await
}

fn time_of(t: &Option<prost_types::Timestamp>) -> SystemTime {
    (*t).expect("a timestamp").try_into().unwrap()
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("an error");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{needle:?} not in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_schedule_on_two_instances_makes_one_job_per_tick() {
    let db = migrated_db().await;
    let args = [
        "--job-store",
        "database",
        "--job-store-poll-interval",
        "200ms",
    ];
    let one = Gateway::start_url(
        &db.url(),
        &[&args[..], &["--instance-name", "one"]].concat(),
    )
    .await;
    let two = Gateway::start_url(
        &db.url(),
        &[&args[..], &["--instance-name", "two"]].concat(),
    )
    .await;
    let mut client = one.client().await;
    let created = create(&mut client, schedule("every-2s", "*/2 * * * * *", sum()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut other = two.client().await;
    other
        .delete_schedule(pb::DeleteScheduleRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap();
    let jobs = jobs_of(&mut client, &created.id).await;
    assert!(
        (5..=7).contains(&jobs.len()),
        "12 s of a 2 s schedule make 6±1 jobs, not {}",
        jobs.len()
    );
    let ticks: HashSet<SystemTime> = jobs.iter().map(|j| time_of(&j.scheduled_time)).collect();
    assert_eq!(ticks.len(), jobs.len(), "no tick ran twice: {jobs:#?}");
    for job in &jobs {
        assert_eq!(job.schedule_id, created.id);
        let tick = time_of(&job.scheduled_time)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(
            (tick.as_secs() % 2, tick.subsec_nanos()),
            (0, 0),
            "scheduled_time is the exact tick */2 gives"
        );
    }
    // Both instances see the same jobs, and they all ran.
    for job in jobs_of(&mut other, &created.id).await {
        wait_state(&other, &job.id, S::Completed).await;
    }
}

async fn schedules_are_checked_and_their_errors_say_why(store: Store) {
    let gateway = gateway(store, &[]).await;
    let mut client = gateway.client().await;
    let created = create(&mut client, schedule("nightly", "0 2 * * *", sum()))
        .await
        .unwrap();
    assert!(uuid::Uuid::try_parse(&created.id).is_ok(), "{created:?}");
    assert_eq!(created.cron, "0 2 * * *", "kept as written");
    assert_eq!(created.time_zone, "UTC");
    assert_eq!(created.owner, "", "no tokens: no owner");
    assert!(created.create_time.is_some());
    let next = time_of(&created.next_run_time);
    assert!(
        next > SystemTime::now(),
        "next_run_time is set, in the future"
    );
    let next_utc = chrono::DateTime::<chrono::Utc>::from(next);
    assert_eq!(next_utc.format("%H:%M:%S").to_string(), "02:00:00");
    assert_eq!(get(&mut client, &created.id).await.unwrap().name, "nightly");

    assert_code(
        create(&mut client, schedule("nightly", "0 3 * * *", sum())).await,
        Code::AlreadyExists,
        "nightly",
    );
    for (cron, why) in [
        ("0 0 2 * * * 2030", "7 fields"),
        ("0 0 L * *", "L"),
        ("0 0 * * 1#2", "#"),
        ("0 0 15W * *", "W"),
        ("61 * * * *", "cron"),
        ("", "cron"),
    ] {
        assert_code(
            create(&mut client, schedule("bad", cron, sum())).await,
            Code::InvalidArgument,
            why,
        );
    }
    for alias in ["@hourly", "@daily", "@weekly", "@monthly", "@yearly"] {
        let made = create(&mut client, schedule(alias, alias, sum()))
            .await
            .unwrap();
        assert_eq!(made.cron, alias);
        assert!(made.next_run_time.is_some(), "{alias}");
    }
    let mut bad_zone = schedule("zone", "0 2 * * *", sum());
    bad_zone.time_zone = "Mars/Olympus_Mons".into();
    assert_code(
        create(&mut client, bad_zone).await,
        Code::InvalidArgument,
        "IANA",
    );
    assert_code(
        create(
            &mut client,
            schedule("ghost", "0 2 * * *", call("pkg_etl.no_such", vec![])),
        )
        .await,
        Code::NotFound,
        "no_such",
    );
    let mut wrong_param = sum();
    wrong_param.params[0].name = "p_nope".into();
    assert_code(
        create(&mut client, schedule("param", "0 2 * * *", wrong_param)).await,
        Code::InvalidArgument,
        "p_nope",
    );
    assert_code(
        create(
            &mut client,
            schedule("inject", "0 2 * * *", call("x; drop table t", vec![])),
        )
        .await,
        Code::InvalidArgument,
        "",
    );
    let mut bad_retry = schedule("retry", "0 2 * * *", sum());
    bad_retry.retry = Some(pb::RetryPolicy {
        max_attempts: 1000,
        ..Default::default()
    });
    assert_code(
        create(&mut client, bad_retry).await,
        Code::InvalidArgument,
        "max_attempts",
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_code(get(&mut client, &unknown).await, Code::NotFound, &unknown);
    assert_code(
        get(&mut client, "not-a-uuid").await,
        Code::InvalidArgument,
        "UUID",
    );
    let ghost = pb::Schedule {
        id: unknown.clone(),
        paused: true,
        ..Default::default()
    };
    assert_code(
        update(&mut client, ghost, &["paused"]).await,
        Code::NotFound,
        &unknown,
    );
    assert_code(
        client
            .delete_schedule(pb::DeleteScheduleRequest {
                id: unknown.clone(),
            })
            .await,
        Code::NotFound,
        &unknown,
    );
    let change = pb::Schedule {
        id: created.id.clone(),
        name: "renamed".into(),
        cron: "30 4 * * *".into(),
        ..Default::default()
    };
    assert_code(
        update(&mut client, change.clone(), &[]).await,
        Code::InvalidArgument,
        "empty",
    );
    assert_code(
        update(&mut client, change.clone(), &["colour"]).await,
        Code::InvalidArgument,
        "colour",
    );
    assert_code(
        update(&mut client, change.clone(), &["name"]).await,
        Code::InvalidArgument,
        "name",
    );
    let bad_cron = pb::Schedule {
        cron: "every day".into(),
        ..change.clone()
    };
    assert_code(
        update(&mut client, bad_cron, &["cron"]).await,
        Code::InvalidArgument,
        "cron",
    );
    let updated = update(&mut client, change, &["cron"]).await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.cron.as_str()),
        ("nightly", "30 4 * * *")
    );
    let next_utc = chrono::DateTime::<chrono::Utc>::from(time_of(&updated.next_run_time));
    assert_eq!(next_utc.format("%H:%M:%S").to_string(), "04:30:00");
    assert_eq!(
        get(&mut client, &created.id).await.unwrap().cron,
        "30 4 * * *"
    );
}

async fn list_schedules_pages_as_list_jobs_does(store: Store) {
    let gateway = gateway(store, &[]).await;
    let mut client = gateway.client().await;
    let mut made = Vec::new();
    for n in 0..5 {
        let created = create(&mut client, schedule(&format!("s{n}"), "0 2 * * *", sum()))
            .await
            .unwrap();
        made.push(created.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_schedules(pb::ListSchedulesRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.schedules.len() <= 2);
        seen.extend(page.schedules.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    made.reverse();
    assert_eq!(seen, made, "every schedule once, newest first");
    assert_code(
        client
            .list_schedules(pb::ListSchedulesRequest {
                page_size: 2,
                page_token: "junk".into(),
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
}

async fn pause_stops_the_ticks_resume_skips_the_missed_ones_and_delete_keeps_the_jobs(
    store: Store,
) {
    let gateway = gateway(store, &[]).await;
    let mut client = gateway.client().await;
    let mut feed = client
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let unrelated = submit(&mut client, sum()).await;
    let created = create(&mut client, schedule("every-second", "* * * * * *", sum()))
        .await
        .unwrap();
    let mut filtered = client
        .watch_jobs(pb::WatchJobsRequest {
            schedule_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait_jobs_of(&mut client, &created.id, 2).await;

    let paused = set_paused(&mut client, &created.id, true).await;
    assert!(
        paused.paused && paused.next_run_time.is_none(),
        "{paused:?}"
    );
    let count = jobs_of(&mut client, &created.id).await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = jobs_of(&mut client, &created.id).await;
    assert!(
        still.len() <= count + 1,
        "a paused schedule starts no job ({count} → {})",
        still.len()
    );
    let count = still.len();

    let resumed = set_paused(&mut client, &created.id, false).await;
    let next = time_of(&resumed.next_run_time);
    assert!(
        next > SystemTime::now() - Duration::from_millis(500),
        "resuming starts at the next tick, not at the ones missed: {resumed:?}"
    );
    let after = wait_jobs_of(&mut client, &created.id, count + 1).await;
    assert!(
        after.len() <= count + 2,
        "resume ran the missed ticks: {count} → {}",
        after.len()
    );
    let newest = time_of(&after[0].scheduled_time);
    assert!(
        newest >= next,
        "the first job after resuming is at its next tick"
    );

    client
        .delete_schedule(pb::DeleteScheduleRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap();
    assert_code(
        get(&mut client, &created.id).await,
        Code::NotFound,
        &created.id,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept = jobs_of(&mut client, &created.id).await;
    assert!(
        kept.len() >= after.len() && kept.len() <= after.len() + 1,
        "delete stops future ticks and keeps the jobs: {} → {}",
        after.len(),
        kept.len()
    );
    for job in &kept {
        assert_eq!(job.schedule_id, created.id, "{job:?}");
        assert!(job.scheduled_time.is_some());
    }
    let all = client
        .list_jobs(pb::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(
        all.iter()
            .any(|j| j.id == unrelated.id && j.schedule_id.is_empty())
    );
    assert_eq!(
        all.len(),
        kept.len() + 1,
        "the filter holds the schedule's jobs only"
    );

    // WatchJobs: the unfiltered feed sees the unrelated job, the filtered
    // one only the schedule's.
    let mut feed_ids = HashSet::new();
    while feed_ids.len() < kept.len() + 1 {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("WatchJobs went quiet")
            .unwrap()
            .unwrap();
        if let Some(job) = event.job {
            feed_ids.insert(job.id);
        }
    }
    assert!(feed_ids.contains(&unrelated.id));
    let mut filtered_ids = HashSet::new();
    while filtered_ids.len() < kept.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), filtered.next())
            .await
            .expect("the filtered WatchJobs went quiet")
            .unwrap()
            .unwrap();
        // SYNCED, between the existing jobs and the changes, has none.
        if let Some(job) = event.job {
            assert_eq!(job.schedule_id, created.id, "{job:?}");
            filtered_ids.insert(job.id);
        }
    }
}

async fn overlap_skip_starts_nothing_while_the_last_job_is_live_and_queue_waits(store: Store) {
    let gateway = gateway(store, &["--max-running-jobs", "4"]).await;
    let mut client = gateway.client().await;
    let mut skip = schedule("skip", "* * * * * *", long_load(10, 300));
    skip.overlap = pb::OverlapPolicy::Skip as i32;
    let skip = create(&mut client, skip).await.unwrap();
    let mut queue = schedule("queue", "* * * * * *", long_load(6, 300));
    queue.overlap = pb::OverlapPolicy::Queue as i32;
    let queue = create(&mut client, queue).await.unwrap();
    // Three seconds: the first job of each is still running.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for id in [&skip.id, &queue.id] {
        set_paused(&mut client, id, true).await;
    }

    let skipped = jobs_of(&mut client, &skip.id).await;
    assert_eq!(skipped.len(), 1, "SKIP started one job: {skipped:#?}");
    let skip = get(&mut client, &skip.id).await.unwrap();
    assert!(
        skip.skipped_ticks >= 2,
        "the skipped ticks are counted: {skip:?}"
    );
    assert_eq!(skip.last_job_id, skipped[0].id);

    let queued = jobs_of(&mut client, &queue.id).await;
    assert!(
        queued.len() >= 3,
        "QUEUE started one job per tick: {}",
        queued.len()
    );
    let running: Vec<&pb::Job> = queued
        .iter()
        .filter(|j| state_of(j) == S::Running)
        .collect();
    assert_eq!(running.len(), 1, "one runs at a time: {queued:#?}");
    let waiting = &queued[0];
    assert_eq!(state_of(waiting), S::Pending);
    assert!(
        waiting.progress_message.contains("OVERLAP_POLICY_QUEUE"),
        "{waiting:?}"
    );
    // They run one after the other, oldest first.
    let mut done: Vec<pb::Job> = Vec::new();
    for job in queued.iter().rev() {
        done.push(wait_state(&client, &job.id, S::Completed).await);
    }
    for pair in done.windows(2) {
        assert!(time_of(&pair[1].start_time) >= time_of(&pair[0].end_time));
    }
}

async fn cancel_previous_cancels_the_live_job_before_the_next_starts(store: Store) {
    let gateway = gateway(store, &["--max-running-jobs", "4"]).await;
    let mut client = gateway.client().await;
    let mut replace = schedule("replace", "*/2 * * * * *", long_load(40, 250));
    replace.overlap = pb::OverlapPolicy::CancelPrevious as i32;
    let replace = create(&mut client, replace).await.unwrap();
    let jobs = wait_jobs_of(&mut client, &replace.id, 2).await;
    set_paused(&mut client, &replace.id, true).await;
    let first = wait_state(&client, &jobs[1].id, S::Cancelled).await;
    assert_eq!(first.schedule_id, replace.id);
    let second = wait_state(&client, &jobs[0].id, S::Running).await;
    assert!(time_of(&second.start_time) >= time_of(&first.end_time));
    client
        .cancel_job(pb::CancelJobRequest { id: second.id })
        .await
        .unwrap();
}

async fn schedules_belong_to_their_owner(store: Store) {
    let (_dir, tokens) = token_file(TOKENS);
    let gateway = gateway(store, &["--token-file", &tokens]).await;
    let mut client = gateway.client().await;
    let made = client
        .create_schedule(as_user(
            pb::CreateScheduleRequest {
                schedule: Some(schedule("mine", "0 2 * * *", sum())),
            },
            "alice-secret-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.owner, "alice");
    let as_bob = client
        .get_schedule(as_user(
            pb::GetScheduleRequest {
                id: made.id.clone(),
            },
            "bob-secret-22",
        ))
        .await;
    assert_code(as_bob, Code::NotFound, &made.id);
    let bob_deletes = client
        .delete_schedule(as_user(
            pb::DeleteScheduleRequest {
                id: made.id.clone(),
            },
            "bob-secret-22",
        ))
        .await;
    assert_code(bob_deletes, Code::NotFound, &made.id);
    let bobs = client
        .list_schedules(as_user(
            pb::ListSchedulesRequest::default(),
            "bob-secret-22",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.schedules.is_empty(), "{bobs:?}");
    // Names are unique per owner.
    let bobs_own = client
        .create_schedule(as_user(
            pb::CreateScheduleRequest {
                schedule: Some(schedule("mine", "0 3 * * *", sum())),
            },
            "bob-secret-22",
        ))
        .await
        .unwrap()
        .into_inner();
    let all = client
        .list_schedules(as_user(
            pb::ListSchedulesRequest::default(),
            "root-secret-333",
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: HashSet<String> = all.schedules.into_iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        HashSet::from([made.id.clone(), bobs_own.id]),
        "an admin sees all"
    );
    let anonymous = client
        .list_schedules(pb::ListSchedulesRequest::default())
        .await;
    assert_code(anonymous, Code::Unauthenticated, "");
}

on_both_stores!(
    schedules_are_checked_and_their_errors_say_why,
    list_schedules_pages_as_list_jobs_does,
    pause_stops_the_ticks_resume_skips_the_missed_ones_and_delete_keeps_the_jobs,
    overlap_skip_starts_nothing_while_the_last_job_is_live_and_queue_waits,
    cancel_previous_cancels_the_live_job_before_the_next_starts,
    schedules_belong_to_their_owner,
);

/// Downtime: ticks missed within --schedule-catch-up run once, as one job
/// that says how many it stands for; older ones are skipped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_the_recent_missed_ticks_run_once_and_older_ones_are_skipped() {
    let db = migrated_db().await;
    let args = [
        "--job-store",
        "database",
        "--job-store-poll-interval",
        "200ms",
        "--schedule-catch-up",
        "30s",
    ];
    let before = Gateway::start_url(&db.url(), &args).await;
    let mut client = before.client().await;
    let created = create(&mut client, schedule("every-10s", "*/10 * * * * *", sum()))
        .await
        .unwrap();
    before.shutdown().await.unwrap();
    // As if nothing had ticked for 90 s: ten ticks due, the last three (or
    // four, on a boundary) within the last 30 s.
    sql(
        &db.url(),
        &format!(
            "UPDATE procgate_schedules
                SET next_run_time = to_timestamp(floor(extract(epoch FROM now()) / 10) * 10 - 90)
              WHERE id = '{}'",
            created.id
        ),
    )
    .await;
    let after = Gateway::start_url(&db.url(), &args).await;
    let mut client = after.client().await;
    let restored = get(&mut client, &created.id).await.unwrap();
    assert_eq!(
        restored.name, "every-10s",
        "the schedule survived the restart"
    );
    let jobs = wait_jobs_of(&mut client, &created.id, 1).await;
    // ListJobs answers the basic view; the messages are in the full one.
    let job = &client
        .get_job(pb::GetJobRequest {
            id: jobs[0].id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let catch_up = job
        .messages
        .iter()
        .find(|m| m.contains("catch-up"))
        .unwrap_or_else(|| panic!("the catch-up job says so: {job:?}"));
    assert!(
        catch_up.contains("stands for 3 ticks") || catch_up.contains("stands for 4 ticks"),
        "{catch_up}"
    );
    let tick = time_of(&job.scheduled_time);
    let age = SystemTime::now().duration_since(tick).unwrap_or_default();
    assert!(
        age < Duration::from_secs(12),
        "its scheduled_time is the latest missed tick: {age:?}"
    );
    let schedule = get(&mut client, &created.id).await.unwrap();
    assert!(
        (6..=8).contains(&schedule.skipped_ticks),
        "the ticks older than 30 s are skipped and counted: {schedule:?}"
    );
    assert!(time_of(&schedule.next_run_time) > tick);
    after.shutdown().await.unwrap();
}

/// `--schedule-catch-up 0s` skips what downtime missed, never the tick an
/// instance meets a few milliseconds late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_catch_up_still_runs_the_ticks_met_on_time() {
    let gateway = Gateway::start(&["--schedule-catch-up", "0s"]).await;
    let mut client = gateway.client().await;
    let created = create(&mut client, schedule("every-second", "* * * * * *", sum()))
        .await
        .unwrap();
    let jobs = wait_jobs_of(&mut client, &created.id, 3).await;
    assert!(jobs.iter().all(|j| j.schedule_id == created.id));
    let schedule = get(&mut client, &created.id).await.unwrap();
    assert_eq!(schedule.skipped_ticks, 0, "{schedule:?}");
    gateway.shutdown().await.unwrap();
}
