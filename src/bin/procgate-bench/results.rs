//! Scenario 9: a big result through ExecuteStream, and as a job read back
//! with ReadJobResult and with Arrow Flight's DoGet, each against psql's
//! `COPY (SELECT …) TO STDOUT` of the same rows from the same database in
//! the same run, with the gateway's peak RSS growth while it streams and
//! while the job spools.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procgate::proto::{self as pb};
use serde::Serialize;
use tokio_stream::StreamExt;

use crate::gateway::{Gateway, rss_kib};
use crate::load::channels;

#[derive(Debug, Clone, Serialize)]
pub struct BigResult {
    pub rows: u64,
    pub copy_rows_per_second: f64,
    pub stream_rows_per_second: f64,
    /// stream ÷ COPY.
    pub ratio: f64,
    /// The gateway's peak RSS while streaming, less its RSS before.
    pub rss_growth_mib: f64,
    /// The same rows as a job: submit → COMPLETED, every row spooled.
    pub job_seconds: f64,
    /// The gateway's peak RSS while the job ran and spooled, less before.
    pub spool_rss_growth_mib: f64,
    pub read_rows_per_second: f64,
    /// ReadJobResult ÷ COPY.
    pub read_ratio: f64,
    pub flight_rows_per_second: f64,
    /// Flight DoGet ÷ COPY.
    pub flight_ratio: f64,
}

/// The gateway's peak RSS while something runs.
struct PeakRss {
    before: u64,
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn watch(gateway: &Gateway) -> PeakRss {
        let (peak, done) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let before = gateway.rss_kib();
        let sampler = {
            let (peak, done, pid) = (peak.clone(), done.clone(), gateway.pid());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        PeakRss {
            before,
            peak,
            done,
            sampler,
        }
    }

    /// The growth over the RSS before, in MiB.
    async fn growth_mib(self) -> Result<f64, String> {
        self.done.store(true, Ordering::SeqCst);
        self.sampler.await.map_err(|e| e.to_string())?;
        Ok(self.peak.load(Ordering::SeqCst).saturating_sub(self.before) as f64 / 1024.0)
    }
}

/// The rows of every batch of a stream.
async fn count_rows(
    mut parts: tonic::Streaming<pb::ExecuteStreamResponse>,
    what: &str,
) -> Result<u64, String> {
    let mut rows = 0u64;
    while let Some(part) = parts.next().await {
        let part = part.map_err(|e| format!("{what}: {e}"))?;
        if let Some(pb::execute_stream_response::Kind::Rows(batch)) = part.kind {
            rows += batch.rows.len() as u64;
        }
    }
    Ok(rows)
}

pub async fn big_result(
    gateway: &Gateway,
    db_url: &str,
    bin_dir: &Path,
    rows: u64,
) -> Result<BigResult, String> {
    let copy = format!("COPY (SELECT * FROM bench_rows({rows})) TO STDOUT");
    let started = Instant::now();
    let status = Command::new(bin_dir.join("psql"))
        .args([db_url, "-X", "-q", "-c", &copy])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !status.success() {
        return Err(format!("psql COPY failed: {status}"));
    }
    let copy_rows_per_second = rows as f64 / started.elapsed().as_secs_f64();

    let mut client = channels(&gateway.url(), 1).await?.remove(0);
    let call = pb::ProcedureCall {
        procedure: "bench_rows".into(),
        params: vec![pb::Param {
            name: "n".into(),
            value: Some(pb::Value {
                kind: Some(pb::value::Kind::IntegerValue(rows as i64)),
            }),
            ..Default::default()
        }],
        returns: pb::ValueType::Cursor as i32,
        overload: String::new(),
    };

    let streaming = PeakRss::watch(gateway);
    let started = Instant::now();
    let parts = client
        .execute_stream(pb::ExecuteSyncRequest {
            call: Some(call.clone()),
        })
        .await
        .map_err(|e| format!("ExecuteStream: {e}"))?
        .into_inner();
    let streamed = count_rows(parts, "ExecuteStream").await?;
    let stream_rows_per_second = streamed as f64 / started.elapsed().as_secs_f64();
    let rss_growth_mib = streaming.growth_mib().await?;
    if streamed != rows {
        return Err(format!("ExecuteStream sent {streamed} rows of {rows}"));
    }

    let spooling = PeakRss::watch(gateway);
    let started = Instant::now();
    let job = client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(call),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("SubmitAsync: {e}"))?
        .into_inner();
    let mut watch = client
        .watch_job(pb::WatchJobRequest {
            id: job.id.clone(),
            view: pb::JobView::Basic as i32,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("WatchJob: {e}"))?
        .into_inner();
    let mut last = job;
    while let Some(snapshot) = watch.next().await {
        last = snapshot.map_err(|e| format!("WatchJob: {e}"))?;
    }
    if last.state != pb::JobState::Completed as i32 {
        return Err(format!("the job ended {:?}: {:?}", last.state, last.error));
    }
    let job_seconds = started.elapsed().as_secs_f64();
    let spool_rss_growth_mib = spooling.growth_mib().await?;

    let started = Instant::now();
    let parts = client
        .read_job_result(pb::ReadJobResultRequest {
            job_id: last.id.clone(),
            output: String::new(),
            start_row: 0,
        })
        .await
        .map_err(|e| format!("ReadJobResult: {e}"))?
        .into_inner();
    let read = count_rows(parts, "ReadJobResult").await?;
    let read_rows_per_second = read as f64 / started.elapsed().as_secs_f64();
    if read != rows {
        return Err(format!("ReadJobResult sent {read} rows of {rows}"));
    }

    let started = Instant::now();
    let channel = tonic::transport::Endpoint::from_shared(gateway.url())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting for Flight: {e}"))?;
    let mut flight = arrow_flight::FlightClient::new(channel);
    let mut batches = flight
        .do_get(arrow_flight::Ticket::new(format!("{}/", last.id)))
        .await
        .map_err(|e| format!("DoGet: {e}"))?;
    let mut fetched = 0u64;
    while let Some(batch) = batches.next().await {
        fetched += batch.map_err(|e| format!("DoGet: {e}"))?.num_rows() as u64;
    }
    let flight_rows_per_second = fetched as f64 / started.elapsed().as_secs_f64();
    if fetched != rows {
        return Err(format!("DoGet sent {fetched} rows of {rows}"));
    }
    Ok(BigResult {
        rows,
        copy_rows_per_second,
        stream_rows_per_second,
        ratio: stream_rows_per_second / copy_rows_per_second,
        rss_growth_mib,
        job_seconds,
        spool_rss_growth_mib,
        read_rows_per_second,
        read_ratio: read_rows_per_second / copy_rows_per_second,
        flight_rows_per_second,
        flight_ratio: flight_rows_per_second / copy_rows_per_second,
    })
}
