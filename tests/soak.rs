//! The soak: 10,000 jobs from 200 concurrent clients, mixing quick calls,
//! sleeps, failures and cancels, against the real binary. Every job must end
//! in exactly the state it should, with the right outputs, and the gateway's
//! memory must come back down once the retention sweep has removed them.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, JobState as S};
use tonic::Code;

const CLIENTS: usize = 200;
const JOBS_PER_CLIENT: usize = 50;

/// What a job must end as.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Sum(i64),
    Slept,
    Failed,
    Cancelled,
}

fn job_for(n: usize) -> (pb::ProcedureCall, Expect) {
    let i = n as i64;
    match n % 10 {
        0..=6 => (
            call(
                "bench_add",
                vec![
                    p_in("a", Kind::IntegerValue(i)),
                    p_in("b", Kind::IntegerValue(1)),
                    p_inout("c", Kind::IntegerValue(0)),
                ],
            ),
            Expect::Sum(i + 1),
        ),
        7 => (
            call("nap", vec![p_in("seconds", Kind::FloatValue(0.02))]),
            Expect::Slept,
        ),
        8 => (
            call(
                "pkg_etl.validar_lote",
                vec![p_in("p_lote", Kind::IntegerValue(-i))],
            ),
            Expect::Failed,
        ),
        _ => (
            call("nap", vec![p_in("seconds", Kind::FloatValue(5.0))]),
            Expect::Cancelled,
        ),
    }
}

/// Where the server's log goes, to explain a failure.
fn server_log() -> String {
    format!("{}/soak-server.log", env!("CARGO_TARGET_TMPDIR"))
}

fn rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn live_jobs(client: &mut Client) -> usize {
    client
        .list_jobs(pb::ListJobsRequest {
            states: vec![S::Pending as i32, S::Running as i32],
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len()
}

async fn all_jobs(client: &mut Client) -> usize {
    let mut count = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        count += page.jobs.len();
        if page.next_page_token.is_empty() {
            return count;
        }
        page_token = page.next_page_token;
    }
}

/// A terminal snapshot is the one its job must end with.
fn check(job: &pb::Job, expect: &Expect) {
    match expect {
        Expect::Sum(sum) => {
            assert_eq!(state_of(job), S::Completed, "{job:?}");
            assert_eq!(
                kind_of(job.outputs.get("c")),
                Some(&Kind::IntegerValue(*sum))
            );
        }
        Expect::Slept => assert_eq!(state_of(job), S::Completed, "{job:?}"),
        Expect::Failed => {
            assert_eq!(state_of(job), S::Failed, "{job:?}");
            let error = job.error.as_ref().unwrap();
            assert_eq!(
                (error.code, error.db_code.as_str()),
                (Code::FailedPrecondition as i32, "P0001")
            );
        }
        Expect::Cancelled => {
            assert_eq!(state_of(job), S::Cancelled, "{job:?}");
            assert!(job.end_time.is_some());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_all_accounted_for() {
    let db = start_db().await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args([
            "serve",
            "--database-url",
            &db.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--max-running-jobs",
            "10",
            "--pool-size",
            "10",
            "--max-pending-jobs",
            "20000",
        ])
        .args(["--job-retention", "5s", "--sweep-interval", "500ms"])
        .stderr(std::fs::File::create(server_log()).unwrap())
        .spawn()
        .unwrap();
    let mut client = connect_when_listening(port).await;

    // Warm up, then take the baseline once those jobs are swept.
    for n in 0..200 {
        submit(&mut client, job_for(n * 10).0).await;
    }
    eventually(Duration::from_secs(30), "the warm-up to be swept", || {
        let mut client = client.clone();
        async move { (all_jobs(&mut client).await == 0).then_some(()) }
    })
    .await;
    let baseline = rss_kib(&child);

    // Each client submits its jobs one after the other (cancelling those
    // meant to be cancelled) and follows each to its end: 200 jobs in flight.
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let mut client = client.clone();
        clients.push(tokio::spawn(async move {
            let mut ended = Vec::new();
            for j in 0..JOBS_PER_CLIENT {
                let (call, expect) = job_for(c * JOBS_PER_CLIENT + j);
                let job = submit(&mut client, call).await;
                if expect == Expect::Cancelled {
                    client
                        .cancel_job(pb::CancelJobRequest { id: job.id.clone() })
                        .await
                        .unwrap_or_else(|e| {
                            panic!("cancelling {} failed: {e:?}; see {}", job.id, server_log())
                        });
                }
                let seen = watch_to_end(&mut client, &job.id).await;
                let last = seen.last().expect("a terminal snapshot").clone();
                check(&last, &expect);
                let state = state_of(&last);
                ended.push((last.id, state));
            }
            ended
        }));
    }
    let mut ended: HashMap<String, S> = HashMap::new();
    for c in clients {
        ended.extend(c.await.unwrap());
    }
    assert_eq!(
        ended.len(),
        CLIENTS * JOBS_PER_CLIENT,
        "every job has its own id"
    );
    let mut by_state: HashMap<S, usize> = HashMap::new();
    for state in ended.values() {
        *by_state.entry(*state).or_default() += 1;
    }
    println!("ended: {by_state:?}");
    assert_eq!(by_state[&S::Completed], 8000);
    assert_eq!(by_state[&S::Failed], 1000);
    assert_eq!(by_state[&S::Cancelled], 1000);
    assert_eq!(live_jobs(&mut client).await, 0);
    let peak = rss_kib(&child);

    // Retention sweeps them all; the memory they held goes back.
    eventually(Duration::from_secs(30), "the jobs to be swept", || {
        let mut client = client.clone();
        async move { (all_jobs(&mut client).await == 0).then_some(()) }
    })
    .await;
    let after = rss_kib(&child);
    println!("RSS KiB: baseline {baseline}, with 10,000 jobs {peak}, after the sweep {after}");
    assert!(
        after <= baseline + (peak.saturating_sub(baseline)) / 2 + 8 * 1024,
        "RSS stayed high: baseline {baseline} KiB, peak {peak} KiB, after the sweep {after} KiB"
    );

    // SAFETY: kill with our child's pid and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
