//! Scenario 9: a big result through ExecuteStream, against psql's `COPY
//! (SELECT …) TO STDOUT` of the same rows from the same database in the
//! same run, with the gateway's peak RSS growth while it streams.

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
    let started = Instant::now();
    let request = pb::ExecuteSyncRequest {
        call: Some(pb::ProcedureCall {
            procedure: "bench_rows".into(),
            params: vec![pb::Param {
                name: "n".into(),
                value: Some(pb::Value {
                    kind: Some(pb::value::Kind::IntegerValue(rows as i64)),
                }),
                ..Default::default()
            }],
            returns: pb::ValueType::Cursor as i32,
        }),
    };
    let mut parts = client
        .execute_stream(request)
        .await
        .map_err(|e| format!("ExecuteStream: {e}"))?
        .into_inner();
    let mut streamed = 0u64;
    while let Some(part) = parts.next().await {
        let part = part.map_err(|e| format!("ExecuteStream: {e}"))?;
        if let Some(pb::execute_stream_response::Kind::Rows(batch)) = part.kind {
            streamed += batch.rows.len() as u64;
        }
    }
    let stream_rows_per_second = streamed as f64 / started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    sampler.await.map_err(|e| e.to_string())?;
    if streamed != rows {
        return Err(format!("ExecuteStream sent {streamed} rows of {rows}"));
    }
    Ok(BigResult {
        rows,
        copy_rows_per_second,
        stream_rows_per_second,
        ratio: stream_rows_per_second / copy_rows_per_second,
        rss_growth_mib: peak.load(Ordering::SeqCst).saturating_sub(before) as f64 / 1024.0,
    })
}
