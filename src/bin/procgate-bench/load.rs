//! Load generators against the gateway: many callers over several HTTP/2
//! connections, each recording its own latencies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procgate::proto::procedure_service_client::ProcedureServiceClient;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use serde::Serialize;
use tonic::transport::Channel;

pub type Client = ProcedureServiceClient<Channel>;

/// Throughput and latency of one measured run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    pub calls: u64,
    pub per_second: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    /// NaN (null in JSON) when the tool cannot measure it.
    pub p99_us: f64,
}

impl Stats {
    /// The median of each figure over several runs of the same thing.
    pub fn median(runs: &[Stats]) -> Stats {
        let median = |figure: fn(&Stats) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(figure).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
        };
        Stats {
            calls: median(|s| s.calls as f64) as u64,
            per_second: median(|s| s.per_second),
            mean_us: median(|s| s.mean_us),
            p50_us: median(|s| s.p50_us),
            p99_us: median(|s| s.p99_us),
        }
    }
}

impl Stats {
    pub fn from_latencies(mut latencies_us: Vec<u64>, elapsed: Duration) -> Stats {
        latencies_us.sort_unstable();
        let total: u64 = latencies_us.iter().sum();
        Stats {
            calls: latencies_us.len() as u64,
            per_second: latencies_us.len() as f64 / elapsed.as_secs_f64(),
            mean_us: total as f64 / latencies_us.len().max(1) as f64,
            p50_us: percentile(&latencies_us, 0.50),
            p99_us: percentile(&latencies_us, 0.99),
        }
    }
}

/// The `q` quantile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index] as f64
}

/// `connections` channels to the gateway.
pub async fn channels(url: &str, connections: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Channel::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to the gateway: {e}"))?;
        clients.push(ProcedureServiceClient::new(channel));
    }
    Ok(clients)
}

pub fn bench_add() -> pb::ProcedureCall {
    let int = |name: &str, value: i64| pb::Param {
        name: name.into(),
        direction: if name == "c" {
            pb::Direction::InOut as i32
        } else {
            pb::Direction::In as i32
        },
        value: Some(pb::Value {
            kind: Some(Kind::IntegerValue(value)),
        }),
        ..Default::default()
    };
    pb::ProcedureCall {
        procedure: "bench_add".into(),
        params: vec![int("a", 1), int("b", 2), int("c", 0)],
        returns: 0,
        overload: String::new(),
    }
}

/// `concurrency` callers running `one` in a loop for `duration` (after a
/// short warm-up), spread over up to 16 connections.
pub async fn closed_loop<F, Fut>(
    url: &str,
    concurrency: usize,
    duration: Duration,
    one: F,
) -> Result<Stats, String>
where
    F: Fn(Client) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let clients = channels(url, concurrency.clamp(1, 16)).await?;
    let one = Arc::new(one);
    let warm_up = Duration::from_millis(500);
    let started = Instant::now();
    let measure_from = started + warm_up;
    let stop_at = measure_from + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let client = clients[i % clients.len()].clone();
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= stop_at {
                    return Ok(latencies);
                }
                one(client.clone()).await?;
                if t0 >= measure_from {
                    latencies.push(t0.elapsed().as_micros() as u64);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let latencies: Vec<u64> = task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|s: tonic::Status| format!("a call failed: {}", s.message()))?;
        all.extend(latencies);
    }
    Ok(Stats::from_latencies(all, duration))
}

/// One ExecuteSync of bench_add.
pub async fn execute_sync(mut client: Client) -> Result<(), tonic::Status> {
    client
        .execute_sync(pb::ExecuteSyncRequest {
            call: Some(bench_add()),
        })
        .await
        .map(drop)
}

/// SubmitAsync of bench_add, then WatchJob until it ends.
pub async fn submit_and_watch(mut client: Client) -> Result<(), tonic::Status> {
    let job = client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(bench_add()),
            request_id: String::new(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            id: job.id,
            since_revision: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(job) = stream.message().await? {
        if job.state == pb::JobState::Completed as i32 {
            return Ok(());
        }
        if job.state == pb::JobState::Failed as i32 {
            return Err(tonic::Status::internal("a bench job failed"));
        }
    }
    Err(tonic::Status::internal("the watch ended early"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_are_taken_figure_by_figure() {
        let run = |per_second, mean_us| Stats {
            calls: 10,
            per_second,
            mean_us,
            p50_us: 1.0,
            p99_us: 2.0,
        };
        let median = Stats::median(&[run(3.0, 30.0), run(1.0, 50.0), run(2.0, 10.0)]);
        assert_eq!((median.per_second, median.mean_us), (2.0, 30.0));
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
