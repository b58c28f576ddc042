//! Scenarios 7 and 8: the WatchJobs feed fanned out to many dashboards,
//! and what following a job of another instance costs the database.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use procgate::proto::{self as pb};
use serde::Serialize;
use tokio::sync::Notify;

use crate::gateway::Gateway;
use crate::load::{channels, percentile};

/// Scenario 7: WatchJobs streams while jobs run.
#[derive(Debug, Clone, Serialize)]
pub struct FeedFanOut {
    pub watchers: usize,
    pub jobs: usize,
    /// From each job's end to its COMPLETED event, at every watcher.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rss_kib_per_watcher: f64,
}

/// Scenario 8: database transactions while a job of instance A reports 20
/// progress notices, with its watchers on instance B.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteWatchers {
    pub window_ms: f64,
    /// Transactions in a window with no job (leases, polls): subtracted.
    pub idle_xacts: i64,
    pub one_watcher_xacts: i64,
    pub many_watchers: usize,
    pub many_watchers_xacts: i64,
    /// (many − idle) ÷ (one − idle).
    pub ratio: f64,
}

fn call(procedure: &str, params: Vec<pb::Param>) -> pb::ProcedureCall {
    pb::ProcedureCall {
        procedure: procedure.into(),
        params,
        returns: 0,
        overload: String::new(),
    }
}

fn int(name: &str, value: i64) -> pb::Param {
    pb::Param {
        name: name.into(),
        value: Some(pb::Value {
            kind: Some(pb::value::Kind::IntegerValue(value)),
        }),
        ..Default::default()
    }
}

/// A job of `steps` progress notices over `total_ms`.
fn progress_job(steps: i64, total_ms: i64) -> pb::SubmitAsyncRequest {
    pb::SubmitAsyncRequest {
        call: Some(call(
            "bench_progress",
            vec![int("p_steps", steps), int("p_total_ms", total_ms)],
        )),
        request_id: String::new(),
        ..Default::default()
    }
}

fn ended_lag_us(job: &pb::Job) -> u64 {
    let received = SystemTime::now();
    let ended: SystemTime = job
        .end_time
        .and_then(|t| t.try_into().ok())
        .unwrap_or(received);
    received
        .duration_since(ended)
        .unwrap_or_default()
        .as_micros() as u64
}

/// `watchers` WatchJobs streams of the bench jobs, then `jobs` jobs of a
/// few progress notices each: how late each job's end reaches each watcher,
/// and what an idle stream costs in RSS.
pub async fn feed_fan_out(
    gateway: &Gateway,
    watchers: usize,
    jobs: usize,
) -> Result<FeedFanOut, String> {
    let clients = channels(&gateway.url(), watchers.div_ceil(100)).await?;
    let rss_before = gateway.rss_kib();
    let opened = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(Notify::new());
    let mut tasks = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let mut client = clients[i % clients.len()].clone();
        let (opened, all_open) = (opened.clone(), all_open.clone());
        tasks.push(tokio::spawn(async move {
            let request = pb::WatchJobsRequest {
                procedure: "bench_progress".into(),
                ..Default::default()
            };
            let mut events = client.watch_jobs(request).await?.into_inner();
            let mut lags = Vec::with_capacity(jobs);
            let mut ended = HashSet::with_capacity(jobs);
            while let Some(event) = events.message().await? {
                if event.r#type == pb::JobEventType::Synced as i32
                    && opened.fetch_add(1, Ordering::SeqCst) + 1 == watchers
                {
                    all_open.notify_one();
                }
                let Some(job) = event.job else { continue };
                if job.state == pb::JobState::Completed as i32 && ended.insert(job.id.clone()) {
                    lags.push(ended_lag_us(&job));
                    if ended.len() == jobs {
                        return Ok(lags);
                    }
                }
            }
            Err(tonic::Status::internal("a WatchJobs stream ended"))
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), all_open.notified())
        .await
        .map_err(|_| {
            format!(
                "only {} of {watchers} WatchJobs streams opened",
                opened.load(Ordering::SeqCst)
            )
        })?;
    let rss_open = gateway.rss_kib();
    let mut submitter = clients[0].clone();
    for _ in 0..jobs {
        submitter
            .submit_async(progress_job(4, 400))
            .await
            .map_err(|s| s.message().to_string())?;
    }
    let mut lags = Vec::with_capacity(watchers * jobs);
    for task in tasks {
        lags.extend(
            task.await
                .map_err(|e| e.to_string())?
                .map_err(|s| s.message().to_string())?,
        );
    }
    lags.sort_unstable();
    Ok(FeedFanOut {
        watchers,
        jobs,
        p50_ms: percentile(&lags, 0.5) / 1000.0,
        p99_ms: percentile(&lags, 0.99) / 1000.0,
        rss_kib_per_watcher: rss_open.saturating_sub(rss_before) as f64 / watchers as f64,
    })
}

/// A database error with the server's own message (tokio-postgres's
/// Display says only "db error").
fn db(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

const BENCH_SQL: &str = include_str!("../../../docs/examples/postgres/bench.sql");
const REMOTE_DB: &str = "bench_remote";

/// Transactions committed or rolled back in the bench's own database so far,
/// read from another database so that reading them adds none.
async fn xacts(admin: &tokio_postgres::Client) -> Result<i64, String> {
    let row = admin
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            &[&REMOTE_DB],
        )
        .await
        .map_err(db)?;
    Ok(row.get(0))
}

/// PostgreSQL publishes a backend's statistics at most about once a second.
const SETTLE: Duration = Duration::from_millis(1500);

/// The transactions of `window` starting now, read once they settled.
async fn counted(
    admin: &tokio_postgres::Client,
    during: impl Future<Output = Result<(), String>>,
) -> Result<(i64, Duration), String> {
    tokio::time::sleep(SETTLE).await;
    let before = xacts(admin).await?;
    let started = Instant::now();
    during.await?;
    let window = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    Ok((xacts(admin).await? - before, window))
}

/// Instances A and B on a database used by nothing else: a job on A with
/// 20 progress notices, followed by 1 and then by `many` WatchJob streams
/// on B, against an idle window of the same length.
pub async fn remote_watchers(url: &str, many: usize) -> Result<RemoteWatchers, String> {
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(db)?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {REMOTE_DB}"))
        .await
        .map_err(db)?;
    admin
        .batch_execute(&format!("CREATE DATABASE {REMOTE_DB}"))
        .await
        .map_err(db)?;
    let remote_url = match url.rsplit_once('/') {
        Some((server, _database)) => format!("{server}/{REMOTE_DB}"),
        None => return Err(format!("cannot name a database in {url}")),
    };
    let (setup, connection) = tokio_postgres::connect(&remote_url, tokio_postgres::NoTls)
        .await
        .map_err(db)?;
    tokio::spawn(connection);
    setup.batch_execute(BENCH_SQL).await.map_err(db)?;
    drop(setup);
    procgate::jobs::store::migrate(&remote_url, "public")
        .await
        .map_err(|e| e.to_string())?;
    let flags = ["--job-store", "database", "--max-running-jobs", "1"];
    let a = Gateway::start(&remote_url, &flags).await?;
    let on_a = channels(&a.url(), 1).await?.remove(0);

    // One run: a job on A; once A runs it, B starts and follows it with
    // `watchers` streams until it ends.
    let run = |watchers: usize| {
        let (remote_url, mut on_a) = (remote_url.clone(), on_a.clone());
        async move {
            let job = on_a
                .submit_async(progress_job(20, 4000))
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            // Follow it on A until A runs it.
            let mut on_a_stream = on_a
                .watch_job(pb::WatchJobRequest {
                    id: job.id.clone(),
                    since_revision: 0,
                    ..Default::default()
                })
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            loop {
                let now = on_a_stream
                    .message()
                    .await
                    .map_err(|s| s.message().to_string())?
                    .ok_or("the job ended before it ran")?;
                if now.state == pb::JobState::Running as i32 {
                    break;
                }
            }
            drop(on_a_stream);
            let b = Gateway::start(&remote_url, &flags).await?;
            let clients = channels(&b.url(), watchers.div_ceil(100)).await?;
            let mut streams = Vec::with_capacity(watchers);
            for i in 0..watchers {
                let mut client = clients[i % clients.len()].clone();
                let id = job.id.clone();
                streams.push(tokio::spawn(async move {
                    let request = pb::WatchJobRequest {
                        id,
                        since_revision: 0,
                        ..Default::default()
                    };
                    let mut stream = client.watch_job(request).await?.into_inner();
                    let mut last = None;
                    while let Some(job) = stream.message().await? {
                        last = Some(job.state);
                    }
                    Ok::<_, tonic::Status>(last)
                }));
            }
            for stream in streams {
                let last = stream
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|s| s.message().to_string())?;
                if last != Some(pb::JobState::Completed as i32) {
                    return Err("a remote watcher did not see the job complete".to_string());
                }
            }
            drop(b);
            Ok(())
        }
    };
    let (one_watcher_xacts, one_window) = counted(&admin, run(1)).await?;
    let (many_watchers_xacts, _) = counted(&admin, run(many)).await?;
    // The same length with no job: B starting, leases, claims, polls.
    let (idle_xacts, _) = counted(&admin, async {
        let started = Instant::now();
        let b = Gateway::start(&remote_url, &flags).await?;
        tokio::time::sleep(one_window.saturating_sub(started.elapsed())).await;
        drop(b);
        Ok(())
    })
    .await?;
    drop(on_a);
    drop(a);
    let added = |x: i64| (x - idle_xacts).max(1) as f64;
    Ok(RemoteWatchers {
        window_ms: one_window.as_secs_f64() * 1000.0,
        idle_xacts,
        one_watcher_xacts,
        many_watchers: many,
        many_watchers_xacts,
        ratio: added(many_watchers_xacts) / added(one_watcher_xacts),
    })
}
