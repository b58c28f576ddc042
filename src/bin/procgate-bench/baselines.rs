//! The baselines a gateway call is compared with, at the same concurrency:
//! pgbench (C/libpq, prepared statements: the database's own limit) and the
//! bare Rust driver (tokio-postgres, what procgate uses, without gRPC).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::load::Stats;

/// pgbench -n -M prepared -f call.sql -c N -j 2 -T secs: its tps, and
/// latencies from its per-transaction log (its average above 2 clients).
pub fn pgbench(
    bin_dir: &Path,
    url: &str,
    clients: usize,
    duration: Duration,
) -> Result<Stats, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = dir.path().join("call.sql");
    std::fs::write(&script, "CALL bench_add(1, 2, 0);\n").map_err(|e| e.to_string())?;
    let prefix = dir.path().join("pgbench");
    let output = Command::new(bin_dir.join("pgbench"))
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &clients.to_string()])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(&script)
        .arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run pgbench: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figure = |label: &str| -> Option<f64> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let tps = figure("tps = ").ok_or("pgbench printed no tps")?;
    let average_ms = figure("latency average = ").ok_or("pgbench printed no latency")?;
    // Each log line: client_id transaction_no latency_us script_no epoch epoch_us
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir.path())
        .map_err(|e| e.to_string())?
        .flatten()
    {
        if !entry.file_name().to_string_lossy().starts_with("pgbench.") {
            continue;
        }
        let log = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
        latencies.extend(
            log.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    let mut stats = Stats::from_latencies(latencies, duration.max(Duration::from_secs(1)));
    stats.per_second = tps;
    stats.mean_us = average_ms * 1000.0;
    if clients > 2 {
        // With several clients per thread pgbench stamps completions lazily
        // and logs many 0 µs latencies: only its average is meaningful.
        stats.p50_us = average_ms * 1000.0;
        stats.p99_us = f64::NAN;
    }
    Ok(stats)
}

/// N tasks calling bench_add, each on its own tokio-postgres connection
/// with a prepared statement.
pub async fn direct(url: &str, clients: usize, duration: Duration) -> Result<Stats, String> {
    let warm_up = Duration::from_millis(500);
    let measure_from = Instant::now() + warm_up;
    let stop_at = measure_from + duration;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        tasks.push(tokio::spawn(async move {
            let statement = client
                .prepare("CALL bench_add($1, $2, $3)")
                .await
                .map_err(|e| e.to_string())?;
            let mut latencies = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= stop_at {
                    return Ok::<_, String>(latencies);
                }
                client
                    .query(&statement, &[&1i32, &2i32, &0i32])
                    .await
                    .map_err(|e| e.to_string())?;
                if t0 >= measure_from {
                    latencies.push(t0.elapsed().as_micros() as u64);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.map_err(|e| e.to_string())??);
    }
    Ok(Stats::from_latencies(all, duration))
}
