//! h2load, nghttp2's C load generator, sending raw gRPC frames to the
//! gateway: it costs a fraction of what a tonic client costs per call, so
//! what the gateway spends is not hidden behind its load generator (at one
//! caller, the tonic client used to cost more than the gateway itself).
//!
//! Each measurement is a warm-up run, then a timed run (`-D`) with a
//! per-request log for latency percentiles, and the gateway's CPU read from
//! /proc around the timed run. h2load counts HTTP statuses only, while a
//! gRPC error is an HTTP 200 too: [`check_grpc_ok`] sends requests
//! verbosely and checks that every one was answered with a message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use prost::Message;

use crate::gateway::cpu_time;
use crate::load::{Stats, percentile};

/// One gRPC method of the gateway and the request body h2load posts to it.
pub struct Target {
    pub url: String,
    pub body: PathBuf,
}

impl Target {
    /// `method` (`/package.Service/Method`) of the gateway at `base`, with
    /// `message` as its one length-prefixed gRPC frame.
    pub fn new(
        base: &str,
        method: &str,
        message: &impl Message,
        dir: &Path,
    ) -> Result<Target, String> {
        let encoded = message.encode_to_vec();
        let mut frame = Vec::with_capacity(5 + encoded.len());
        frame.push(0); // not compressed
        frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        frame.extend_from_slice(&encoded);
        let body = dir.join(format!("{}.bin", method.replace('/', "_")));
        std::fs::write(&body, frame).map_err(|e| format!("{}: {e}", body.display()))?;
        Ok(Target {
            url: format!("{base}{method}"),
            body,
        })
    }

    fn command(&self, clients: usize) -> Command {
        let mut command = Command::new("h2load");
        command
            .args(["-c", &clients.to_string(), "-m", "1", "-t", "1"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-d")
            .arg(&self.body)
            .arg(&self.url);
        command
    }
}

/// A timed h2load run: throughput, latencies, and the gateway's CPU.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub stats: Stats,
    /// CPU the gateway spent per request in the timed run (µs).
    pub gateway_cpu_us_per_call: f64,
}

/// Warms up, then runs `clients` callers for `duration`.
pub fn run(
    target: &Target,
    clients: usize,
    duration: Duration,
    gateway_pid: u32,
) -> Result<Run, String> {
    let warm_up = target
        .command(clients)
        .args(["-n", &(clients * 200).max(2_000).to_string()])
        .output()
        .map_err(|e| format!("cannot run h2load (install nghttp2-client): {e}"))?;
    expect_success(&warm_up)?;

    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let cpu_before = cpu_time(gateway_pid);
    let output = target
        .command(clients)
        .arg("-D")
        .arg(format!("{}", duration.as_secs().max(1)))
        .arg(format!("--log-file={}", log.path().display()))
        .output()
        .map_err(|e| format!("cannot run h2load: {e}"))?;
    let cpu = cpu_time(gateway_pid) - cpu_before;
    let stdout = expect_success(&output)?;

    let succeeded = figure(&stdout, "succeeded,", |line| {
        // requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, …
        line.strip_prefix("requests:")?
            .split(',')
            .find(|part| part.trim_end().ends_with("succeeded"))?
            .split_whitespace()
            .next()
    })?;
    let per_second = figure(&stdout, "req/s", |line| {
        // finished in 5.00s, 18358.20 req/s, 1.23MB/s
        line.strip_prefix("finished in")?
            .split(',')
            .nth(1)?
            .split_whitespace()
            .next()
    })?;
    let mean_us = stdout
        .lines()
        .find_map(|l| l.strip_prefix("time for request:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(microseconds)
        .ok_or_else(|| format!("h2load printed no request times:\n{stdout}"))?;
    let mut latencies: Vec<u64> = std::fs::read_to_string(log.path())
        .map_err(|e| e.to_string())?
        .lines()
        .filter_map(|l| {
            let mut columns = l.split('\t');
            let status = columns.nth(1)?;
            (status == "200").then(|| columns.next()?.trim().parse().ok())?
        })
        .collect();
    latencies.sort_unstable();
    let failed = latencies.is_empty() || succeeded < 1.0;
    if failed {
        return Err(format!("h2load got no successful answer:\n{stdout}"));
    }
    Ok(Run {
        stats: Stats {
            calls: succeeded as u64,
            per_second,
            mean_us,
            p50_us: percentile(&latencies, 0.50),
            p99_us: percentile(&latencies, 0.99),
        },
        gateway_cpu_us_per_call: cpu.as_secs_f64() * 1e6 / succeeded,
    })
}

/// Sends `requests` requests verbosely and checks that each got a gRPC
/// answer, not an error. h2load prints response headers but not trailers:
/// tonic answers an error "trailers-only", its `grpc-status` among the
/// headers and no message, while a success carries a message (at least a
/// 5-byte frame) and its `grpc-status: 0` in the trailers. So: no status
/// among the headers, and at least a frame's worth of data per request.
pub fn check_grpc_ok(target: &Target, requests: usize) -> Result<(), String> {
    let output = target
        .command(1)
        .args(["-n", &requests.to_string(), "-v"])
        .output()
        .map_err(|e| format!("cannot run h2load: {e}"))?;
    let stdout = expect_success(&output)?;
    if let Some(error) = stdout
        .lines()
        .find(|l| l.contains("grpc-status:") && !l.trim_end().ends_with("grpc-status: 0"))
    {
        let message = stdout
            .lines()
            .find(|l| l.contains("grpc-message:"))
            .unwrap_or_default();
        return Err(format!(
            "{} answered an error: {error} {message}",
            target.url
        ));
    }
    let answered = stdout.matches(":status: 200").count();
    let data_bytes = figure(&stdout, "data", |line| {
        // traffic: 133B (133) total, 38B (38) headers (…), 7B (7) data
        let data = line.strip_prefix("traffic:")?.split(',').nth(2)?;
        data.split(['(', ')']).nth(1)
    })?;
    if answered != requests || data_bytes < 5.0 * requests as f64 {
        return Err(format!(
            "{}: {answered} of {requests} requests answered, with {data_bytes} bytes of messages",
            target.url
        ));
    }
    Ok(())
}

fn expect_success(output: &std::process::Output) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "h2load failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

fn figure(stdout: &str, what: &str, find: impl Fn(&str) -> Option<&str>) -> Result<f64, String> {
    stdout
        .lines()
        .find_map(|l| find(l)?.parse().ok())
        .ok_or_else(|| format!("h2load printed no {what} figure:\n{stdout}"))
}

/// `123us`, `1.80ms`, `2.1s` in microseconds.
fn microseconds(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (text.strip_suffix('s')?, 1e6)
    };
    Some(number.parse::<f64>().ok()? * scale)
}

#[cfg(test)]
mod tests {
    use super::microseconds;

    #[test]
    fn reads_h2load_durations() {
        assert_eq!(microseconds("166us"), Some(166.0));
        assert_eq!(microseconds("1.80ms"), Some(1800.0));
        assert_eq!(microseconds("2s"), Some(2e6));
        assert_eq!(microseconds("fast"), None);
    }
}
