//! Memory bounded in bytes and given back: the real procgate binary (with
//! its allocator) holds a burst of jobs with 10 MB in and 10 MB out within
//! --max-retained-bytes, and once they are deleted its RSS comes back to
//! within 64 MiB of where it was before the burst.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};

fn rss_mib(child: &Child) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// copy_out with a big string in: the same string comes back out.
fn big_copy(text: &str) -> pb::ProcedureCall {
    let mut params = vec![p_in("s", Kind::StringValue(text.into()))];
    for name in ["i", "n", "f", "b", "d", "ts", "bin", "c", "j"] {
        params.push(p_in(name, Kind::NullValue(0)));
    }
    call("copy_out", params)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_big_jobs_stays_within_its_bound_and_memory_comes_back() {
    let db = start_db().await;
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args(["serve", "--database-url", &db.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--max-retained-bytes", "128MiB"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let mut client = connect_when_listening(port).await;
    let warm = submit(&mut client, big_copy("warm")).await;
    wait_state(&client, &warm.id, pb::JobState::Completed).await;
    // A settling moment before the baseline (RSS has no event to wait on).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib(&child.0);

    let text = "x".repeat(10_000_000);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&mut client, big_copy(&text)).await.id);
    }
    let mut peak = rss_mib(&child.0);
    for id in &ids {
        // Done, or already dropped to keep within the bound.
        eventually(Duration::from_secs(60), "the job ends or goes", || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                match client
                    .get_job(pb::GetJobRequest {
                        id,
                        view: pb::JobView::Basic as i32,
                    })
                    .await
                {
                    Ok(job) if state_of(job.get_ref()) == pb::JobState::Completed => Some(()),
                    Ok(_) => None,
                    Err(status) if status.code() == tonic::Code::NotFound => Some(()),
                    Err(status) => panic!("{status:?}"),
                }
            }
        })
        .await;
        peak = peak.max(rss_mib(&child.0));
    }
    let retained = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    // 20 MB each (10 in, 10 out) within 128 MiB: about 6 of the 20 stay.
    assert!(
        (2..20).contains(&retained.len()),
        "{} jobs retained",
        retained.len()
    );
    let held = rss_mib(&child.0);
    assert!(
        held < before + 3.0 * 128.0,
        "{held:.0} MiB held with --max-retained-bytes 128MiB (before: {before:.0} MiB)"
    );
    for job in &retained {
        client
            .delete_job(pb::DeleteJobRequest { id: job.id.clone() })
            .await
            .unwrap();
    }
    let after = eventually(Duration::from_secs(40), "memory to come back", || {
        let mut client = client.clone();
        let rss = rss_mib(&child.0);
        async move {
            // Some traffic, as a live gateway has.
            let _ = client.list_jobs(pb::ListJobsRequest::default()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (rss <= before + 64.0).then_some(rss)
        }
    })
    .await;
    eprintln!(
        "RSS before {before:.0} MiB, peak {peak:.0} MiB, with {} jobs retained {held:.0} MiB, \
         after deleting them {after:.0} MiB",
        retained.len()
    );
}
