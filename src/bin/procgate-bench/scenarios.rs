//! The scenarios of docs/benchmarks.md, run in order against one database
//! and one gateway, with the baselines measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use procgate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use serde::Serialize;
use tokio::sync::Notify;

use crate::Options;
use crate::baselines;
use crate::feeds::{self, FeedFanOut, RemoteWatchers};
use crate::gateway::Gateway;
use crate::h2load::{self, Target};
use crate::load::{self, Stats, channels, percentile};
use crate::report;
use crate::results::{self, BigResult};

/// The gateway's flags for the run: connections for every caller, room for
/// every retained job.
const GATEWAY_FLAGS: &[&str] = &[
    "--pool-size",
    "32",
    "--sync-connections",
    "140",
    "--max-running-jobs",
    "32",
    "--max-pending-jobs",
    "250000",
    "--max-retained-jobs",
    "250000",
];

/// How long and how big each scenario is.
struct Profile {
    window: Duration,
    /// Alternating runs of pgbench and h2load per concurrency; medians kept.
    rounds: usize,
    concurrencies: &'static [usize],
    watchers: &'static [usize],
    watched_job_ms: u64,
    retained_jobs: usize,
    cross_watches: usize,
    /// Scenario 7: WatchJobs streams, and jobs run while they watch.
    feed_watchers: usize,
    feed_jobs: usize,
    /// Scenario 8: remote watchers of one job, against one.
    remote_watchers: usize,
    /// Scenario 9: rows of the big result.
    big_result_rows: u64,
}

impl Profile {
    fn new(quick: bool) -> Profile {
        if quick {
            Profile {
                window: Duration::from_secs(2),
                rounds: 1,
                concurrencies: &[1, 8, 32, 128],
                watchers: &[1_000, 10_000],
                watched_job_ms: 3_000,
                retained_jobs: 10_000,
                cross_watches: 30,
                feed_watchers: 200,
                feed_jobs: 50,
                remote_watchers: 100,
                big_result_rows: 200_000,
            }
        } else {
            Profile {
                window: Duration::from_secs(5),
                rounds: 3,
                concurrencies: &[1, 8, 32, 128],
                watchers: &[1_000, 10_000],
                watched_job_ms: 5_000,
                retained_jobs: 100_000,
                cross_watches: 200,
                feed_watchers: 1_000,
                feed_jobs: 200,
                remote_watchers: 500,
                big_result_rows: 1_000_000,
            }
        }
    }
}

/// Scenario 1 at one concurrency: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRow {
    pub concurrency: usize,
    pub pgbench: Stats,
    /// The bare driver, tokio-postgres, without the gateway.
    pub direct: Stats,
    /// ExecuteSync through the gateway, driven by h2load.
    pub gateway: Stats,
    /// CPU the gateway process spent per call (µs).
    pub gateway_cpu_us_per_call: f64,
}

/// The floor: grpc.health.v1.Health/Check of the same gateway, driven by
/// h2load at 32 callers, is what HTTP/2 and tonic cost before any work.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub health: Stats,
    pub cpu_us_per_call: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanOut {
    pub watchers: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rss_kib_per_watcher: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Retained {
    pub jobs: usize,
    pub bytes_per_job: f64,
    pub first_page_p50_ms: f64,
    pub deep_page_p50_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub sync: Vec<SyncRow>,
    pub floor: Floor,
    /// ExecuteSync at 32 callers from the tonic client that scenario 2
    /// uses too, so that the async ratio compares like with like.
    pub sync_tonic_c32: Stats,
    pub async_c32: Stats,
    pub fan_out: Vec<FanOut>,
    pub retained: Retained,
    pub startup_ms: f64,
    pub idle_rss_kib: u64,
    pub store: StoreFigures,
    pub feed: FeedFanOut,
    pub remote: RemoteWatchers,
    pub big_result: BigResult,
}

/// Scenario 6: the database job store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreFigures {
    /// SubmitAsync + WatchJob, 32 clients, on the database store.
    pub async_c32: Stats,
    /// Latency from a job's end (on instance A) to its terminal snapshot
    /// at a watcher on instance B.
    pub cross_watch_p50_ms: f64,
    pub cross_watch_p99_ms: f64,
}

pub async fn run_all(options: &Options) -> Result<(), String> {
    let profile = Profile::new(options.quick);
    let machine = report::Machine::read();
    println!(
        "procgate-bench{} on {} ({} cores)",
        if options.quick { " --quick" } else { "" },
        machine.cpu_model,
        machine.cores
    );
    let db = tokio::task::spawn_blocking(|| {
        EmbeddedPostgres::start(&EmbeddedOptions {
            load_examples: true,
            settings: vec![("max_connections".into(), "400".into())],
            ..Default::default()
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    let url = db.url();
    let gateway = Gateway::start(&url, GATEWAY_FLAGS).await?;

    let (sync, floor) = sync_path(&db, &gateway, &profile).await?;
    if options.sync_only {
        report::print_sync_path(&sync, &floor);
        return Ok(());
    }

    println!("scenario 2: ExecuteSync, then SubmitAsync + WatchJob, 32 tonic clients");
    let sync_tonic_c32 =
        load::closed_loop(&gateway.url(), 32, profile.window, load::execute_sync).await?;
    let async_c32 =
        load::closed_loop(&gateway.url(), 32, profile.window, load::submit_and_watch).await?;

    let mut fan_out = Vec::new();
    for &watchers in profile.watchers {
        println!("scenario 3: one job watched by {watchers} streams");
        fan_out.push(watch_fan_out(&gateway, watchers, profile.watched_job_ms).await?);
    }

    drop(gateway);

    // Fresh gateways from here, so that RSS growth is the scenario's alone.
    println!(
        "scenario 7: {} WatchJobs streams while {} jobs run",
        profile.feed_watchers, profile.feed_jobs
    );
    let fresh = Gateway::start(&url, GATEWAY_FLAGS).await?;
    let feed = feeds::feed_fan_out(&fresh, profile.feed_watchers, profile.feed_jobs).await?;
    drop(fresh);

    println!("scenario 4: {} retained jobs", profile.retained_jobs);
    let fresh = Gateway::start(&url, GATEWAY_FLAGS).await?;
    let retained = retained_jobs(&fresh, profile.retained_jobs).await?;
    drop(fresh);

    println!("scenario 5: start-up");
    let fresh = Gateway::start(&url, &[]).await?;
    let startup_ms = fresh.startup.as_secs_f64() * 1000.0;
    let idle_rss_kib = fresh.rss_kib();
    drop(fresh);

    println!("scenario 6: the database job store, and watching across instances");
    let store = database_store(&url, profile.window, profile.cross_watches).await?;

    println!(
        "scenario 8: 1 and {} watchers on instance B of a job on instance A",
        profile.remote_watchers
    );
    let remote = feeds::remote_watchers(&url, profile.remote_watchers).await?;

    println!(
        "scenario 9: {} rows through ExecuteStream, as a job read with ReadJobResult and Flight, and through psql COPY",
        profile.big_result_rows
    );
    let fresh = Gateway::start(&url, GATEWAY_FLAGS).await?;
    let big_result =
        results::big_result(&fresh, &url, db.bin_dir(), profile.big_result_rows).await?;
    drop(fresh);

    let results = Results {
        sync,
        floor,
        sync_tonic_c32,
        async_c32,
        fan_out,
        retained,
        startup_ms,
        idle_rss_kib,
        store,
        feed,
        remote,
        big_result,
    };
    report::write(&options.out, &machine, options.quick, &results)
}

/// Scenario 1: ExecuteSync of bench_add from h2load against pgbench calling
/// the same procedure, alternating, at each concurrency; at 32 callers also
/// the floor (Health/Check). The bare driver is measured once per
/// concurrency.
async fn sync_path(
    db: &EmbeddedPostgres,
    gateway: &Gateway,
    profile: &Profile,
) -> Result<(Vec<SyncRow>, Floor), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let base = gateway.url();
    let execute = Target::new(
        &base,
        "/procgate.v1.ProcedureService/ExecuteSync",
        &pb::ExecuteSyncRequest {
            call: Some(load::bench_add()),
        },
        dir.path(),
    )?;
    let health = Target::new(
        &base,
        "/grpc.health.v1.Health/Check",
        &tonic_health::pb::HealthCheckRequest::default(),
        dir.path(),
    )?;
    h2load::check_grpc_ok(&execute, 50)?;
    h2load::check_grpc_ok(&health, 50)?;

    let (url, window, pid) = (db.url(), profile.window, gateway.pid());
    let mut rows = Vec::new();
    let mut floor_runs = Vec::new();
    for &concurrency in profile.concurrencies {
        println!("scenario 1: {concurrency} concurrent callers");
        let mut pgbench_runs = Vec::new();
        let mut gateway_runs = Vec::new();
        for _ in 0..profile.rounds {
            pgbench_runs.push(measure(|| {
                baselines::pgbench(db.bin_dir(), &url, concurrency, window)
            })?);
            gateway_runs.push(measure(|| h2load::run(&execute, concurrency, window, pid))?);
            if concurrency == 32 {
                floor_runs.push(measure(|| h2load::run(&health, concurrency, window, pid))?);
            }
        }
        let direct = baselines::direct(&url, concurrency, window).await?;
        rows.push(SyncRow {
            concurrency,
            pgbench: Stats::median(&pgbench_runs),
            direct,
            gateway: Stats::median(&runs_stats(&gateway_runs)),
            gateway_cpu_us_per_call: median_cpu(&gateway_runs),
        });
    }
    // The gateway was never idle between runs: recheck the answers.
    h2load::check_grpc_ok(&execute, 50)?;
    let floor = Floor {
        health: Stats::median(&runs_stats(&floor_runs)),
        cpu_us_per_call: median_cpu(&floor_runs),
    };
    Ok((rows, floor))
}

fn runs_stats(runs: &[h2load::Run]) -> Vec<Stats> {
    runs.iter().map(|r| r.stats).collect()
}

fn median_cpu(runs: &[h2load::Run]) -> f64 {
    let mut cpu: Vec<f64> = runs.iter().map(|r| r.gateway_cpu_us_per_call).collect();
    cpu.sort_by(f64::total_cmp);
    cpu.get(cpu.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs a measurement that waits on another process (pgbench, h2load),
/// letting the runtime move its other work elsewhere meanwhile.
fn measure<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    tokio::task::block_in_place(work)
}

/// One job reporting 100 progress notices, watched by `watchers` streams:
/// latency from the job's end to each watcher's terminal snapshot, and the
/// gateway's RSS growth per watcher.
async fn watch_fan_out(gateway: &Gateway, watchers: usize, job_ms: u64) -> Result<FanOut, String> {
    let clients = channels(&gateway.url(), watchers.div_ceil(100)).await?;
    let rss_before = gateway.rss_kib();
    let mut submitter = clients[0].clone();
    let job = submitter
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(pb::ProcedureCall {
                procedure: "bench_progress".into(),
                params: vec![
                    int_param("p_steps", 100),
                    int_param("p_total_ms", job_ms as i64),
                ],
                returns: 0,
                overload: String::new(),
            }),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let opened = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(Notify::new());
    let mut tasks = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let mut client = clients[i % clients.len()].clone();
        let (id, opened, all_open) = (job.id.clone(), opened.clone(), all_open.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = client
                .watch_job(pb::WatchJobRequest {
                    id,
                    since_revision: 0,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut first = true;
            while let Some(job) = stream.message().await? {
                if std::mem::take(&mut first)
                    && opened.fetch_add(1, Ordering::SeqCst) + 1 == watchers
                {
                    all_open.notify_one();
                }
                if job.state == pb::JobState::Completed as i32 {
                    let received = SystemTime::now();
                    let ended: SystemTime = job
                        .end_time
                        .and_then(|t| t.try_into().ok())
                        .unwrap_or(received);
                    let lag = received.duration_since(ended).unwrap_or_default();
                    return Ok(lag.as_micros() as u64);
                }
            }
            Err(tonic::Status::internal("a watch ended before the job"))
        }));
    }
    tokio::time::timeout(Duration::from_millis(job_ms), all_open.notified())
        .await
        .map_err(|_| {
            format!(
                "only {} of {watchers} watchers were open before the job ended",
                opened.load(Ordering::SeqCst)
            )
        })?;
    let rss_open = gateway.rss_kib();
    let mut lags = Vec::with_capacity(watchers);
    for task in tasks {
        lags.push(
            task.await
                .map_err(|e| e.to_string())?
                .map_err(|s| s.message().to_string())?,
        );
    }
    lags.sort_unstable();
    Ok(FanOut {
        watchers,
        p50_ms: percentile(&lags, 0.5) / 1000.0,
        p99_ms: percentile(&lags, 0.99) / 1000.0,
        rss_kib_per_watcher: rss_open.saturating_sub(rss_before) as f64 / watchers as f64,
    })
}

fn int_param(name: &str, value: i64) -> pb::Param {
    pb::Param {
        name: name.into(),
        value: Some(pb::Value {
            kind: Some(Kind::IntegerValue(value)),
        }),
        ..Default::default()
    }
}

/// `count` finished jobs without outputs: RSS per job, and ListJobs latency
/// on the first page and on a page near the end. The RSS per job is the
/// growth over the second half of the jobs, so that one-time costs (the
/// allocator's arenas, pooled connections, thread stacks) do not count.
async fn retained_jobs(gateway: &Gateway, count: usize) -> Result<Retained, String> {
    let clients = channels(&gateway.url(), 8).await?;
    let half = count / 2;
    submit_and_wait(&clients, half).await?;
    let rss_half = gateway.rss_kib();
    submit_and_wait(&clients, count - half).await?;
    let rss_all = gateway.rss_kib();
    let mut client = clients[0].clone();

    // A token near the end: page through with big pages.
    let mut token = String::new();
    let mut seen = 0;
    while seen < count * 9 / 10 {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        seen += page.jobs.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let first_page = list_latency(&mut client, String::new()).await?;
    let deep_page = list_latency(&mut client, token).await?;
    Ok(Retained {
        jobs: count,
        bytes_per_job: rss_all.saturating_sub(rss_half) as f64 * 1024.0 / (count - half) as f64,
        first_page_p50_ms: first_page,
        deep_page_p50_ms: deep_page,
    })
}

/// Submits `count` bench_noop jobs from 64 callers and waits until none is
/// pending or running.
async fn submit_and_wait(clients: &[load::Client], count: usize) -> Result<(), String> {
    let noop = pb::ProcedureCall {
        procedure: "bench_noop".into(),
        params: vec![],
        returns: 0,
        overload: String::new(),
    };
    let submitters = 64;
    let mut tasks = Vec::new();
    for i in 0..submitters {
        let mut client = clients[i % clients.len()].clone();
        let call = noop.clone();
        let share = count / submitters + usize::from(i < count % submitters);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                client
                    .submit_async(pb::SubmitAsyncRequest {
                        call: Some(call.clone()),
                        request_id: String::new(),
                        ..Default::default()
                    })
                    .await?;
            }
            Ok::<(), tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|s| s.message().to_string())?;
    }
    let mut client = clients[0].clone();
    loop {
        let live = client
            .list_jobs(pb::ListJobsRequest {
                states: vec![pb::JobState::Pending as i32, pb::JobState::Running as i32],
                page_size: 1,
                ..Default::default()
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        if live.jobs.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// p50 of 200 ListJobs calls of 50 jobs from `token`, in ms.
async fn list_latency(client: &mut load::Client, token: String) -> Result<f64, String> {
    let mut latencies = Vec::with_capacity(200);
    for _ in 0..200 {
        let t0 = Instant::now();
        client
            .list_jobs(pb::ListJobsRequest {
                page_size: 50,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| s.message().to_string())?;
        latencies.push(t0.elapsed().as_micros() as u64);
    }
    latencies.sort_unstable();
    Ok(percentile(&latencies, 0.5) / 1000.0)
}

/// Two gateways on the database store: jobs/s through the store, and how
/// long a job's end takes to reach a watcher on the other instance.
async fn database_store(
    url: &str,
    window: Duration,
    watches: usize,
) -> Result<StoreFigures, String> {
    procgate::jobs::store::migrate(url, "public")
        .await
        .map_err(|e| e.to_string())?;
    let flags = [GATEWAY_FLAGS, &["--job-store", "database"]].concat();
    let a = Gateway::start(url, &flags).await?;
    let b = Gateway::start(url, &flags).await?;
    let async_c32 = load::closed_loop(&a.url(), 32, window, load::submit_and_watch).await?;

    let mut on_a = channels(&a.url(), 1).await?.remove(0);
    let on_b = channels(&b.url(), 1).await?.remove(0);
    let mut lags = Vec::with_capacity(watches);
    for _ in 0..watches {
        let job = on_a
            .submit_async(pb::SubmitAsyncRequest {
                call: Some(load::bench_add()),
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let mut stream = on_b
            .clone()
            .watch_job(pb::WatchJobRequest {
                id: job.id,
                since_revision: 0,
                ..Default::default()
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        while let Some(job) = stream
            .message()
            .await
            .map_err(|s| s.message().to_string())?
        {
            if job.state == pb::JobState::Completed as i32 {
                let received = SystemTime::now();
                let ended: SystemTime = job
                    .end_time
                    .and_then(|t| t.try_into().ok())
                    .unwrap_or(received);
                lags.push(
                    received
                        .duration_since(ended)
                        .unwrap_or_default()
                        .as_micros() as u64,
                );
                break;
            }
        }
    }
    lags.sort_unstable();
    Ok(StoreFigures {
        async_c32,
        cross_watch_p50_ms: percentile(&lags, 0.5) / 1000.0,
        cross_watch_p99_ms: percentile(&lags, 0.99) / 1000.0,
    })
}
