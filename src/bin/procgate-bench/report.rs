//! The results: one table on stdout, `summary.json` (stable top-level keys,
//! so runs can be compared over time) and `throughput.png` in the out dir.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::scenarios::{Floor, Results, SyncRow};

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
        }
    }
}

/// One headline figure with its target (None: a figure to follow, such as
/// the floor the targets are measured against).
struct Headline {
    key: &'static str,
    what: &'static str,
    value: f64,
    target: Option<f64>,
    /// True when bigger is better.
    at_least: bool,
}

impl Headline {
    fn met(&self) -> Option<bool> {
        let target = self.target?;
        Some(if self.at_least {
            self.value >= target
        } else {
            self.value <= target
        })
    }
}

fn headlines(r: &Results) -> Vec<Headline> {
    let at = |c: usize| r.sync.iter().find(|row| row.concurrency == c);
    let c32 = at(32);
    let c1 = at(1);
    let fan_10k = r.fan_out.iter().find(|f| f.watchers == 10_000);
    let max_rss_per_watcher = r
        .fan_out
        .iter()
        .map(|f| f.rss_kib_per_watcher)
        .fold(0.0, f64::max);
    vec![
        Headline {
            key: "h2load_c32_ratio_vs_pgbench",
            what: "ExecuteSync calls/s (h2load) at 32 callers ÷ pgbench",
            value: c32.map_or(0.0, |row| row.gateway.per_second / row.pgbench.per_second),
            target: Some(0.4),
            at_least: true,
        },
        Headline {
            key: "h2load_c1_added_mean_us",
            what: "mean latency added to pgbench's at 1 caller (µs)",
            value: c1.map_or(0.0, |row| row.gateway.mean_us - row.pgbench.mean_us),
            target: Some(60.0),
            at_least: false,
        },
        Headline {
            key: "gateway_cpu_us_per_call_c32",
            what: "gateway CPU per ExecuteSync at 32 callers (µs)",
            value: c32.map_or(0.0, |row| row.gateway_cpu_us_per_call),
            target: Some(r.floor.cpu_us_per_call + 10.0),
            at_least: false,
        },
        Headline {
            key: "health_cpu_us_per_call_c32",
            what: "the floor: gateway CPU per Health/Check at 32 callers (µs)",
            value: r.floor.cpu_us_per_call,
            target: None,
            at_least: false,
        },
        Headline {
            key: "async_ratio_vs_sync_c32",
            what: "submit+watch jobs/s ÷ ExecuteSync calls/s, 32 tonic clients",
            value: r.async_c32.per_second / r.sync_tonic_c32.per_second.max(1.0),
            target: Some(0.7),
            at_least: true,
        },
        Headline {
            key: "watch_10k_p99_ms",
            what: "end → terminal snapshot p99, 10k watchers (ms)",
            value: fan_10k.map_or(0.0, |f| f.p99_ms),
            target: Some(250.0),
            at_least: false,
        },
        Headline {
            key: "watch_rss_kib_per_watcher",
            what: "gateway RSS per watcher (KiB)",
            value: max_rss_per_watcher,
            target: Some(10.0),
            at_least: false,
        },
        Headline {
            key: "retained_bytes_per_job",
            what: "gateway RSS per retained job (bytes)",
            value: r.retained.bytes_per_job,
            target: Some(1024.0),
            at_least: false,
        },
        Headline {
            key: "list_deep_page_p50_ms",
            what: "ListJobs p50 on a deep page (ms)",
            value: r.retained.deep_page_p50_ms,
            target: Some(5.0),
            at_least: false,
        },
        Headline {
            key: "watch_jobs_p99_ms",
            what: "job end → its event at every WatchJobs stream, p99 (ms)",
            value: r.feed.p99_ms,
            target: Some(250.0),
            at_least: false,
        },
        Headline {
            key: "watch_jobs_rss_kib_per_watcher",
            what: "gateway RSS per WatchJobs stream (KiB)",
            value: r.feed.rss_kib_per_watcher,
            target: Some(16.0),
            at_least: false,
        },
        Headline {
            key: "remote_watchers_db_work_ratio",
            what: "database transactions, many remote watchers ÷ one",
            value: r.remote.ratio,
            target: Some(1.5),
            at_least: false,
        },
        Headline {
            key: "stream_rows_ratio_vs_copy",
            what: "ExecuteStream rows/s of a big result ÷ psql COPY of the same rows",
            value: r.big_result.ratio,
            target: Some(0.5),
            at_least: true,
        },
        Headline {
            key: "stream_rss_growth_mib",
            what: "gateway peak RSS growth while streaming it (MiB)",
            value: r.big_result.rss_growth_mib,
            target: Some(64.0),
            at_least: false,
        },
        Headline {
            key: "job_read_rows_ratio_vs_copy",
            what: "ReadJobResult rows/s of the same rows as a job ÷ psql COPY",
            value: r.big_result.read_ratio,
            target: Some(0.5),
            at_least: true,
        },
        Headline {
            key: "flight_rows_ratio_vs_copy",
            what: "Flight DoGet rows/s of the job's rows ÷ psql COPY",
            value: r.big_result.flight_ratio,
            target: Some(0.5),
            at_least: true,
        },
        Headline {
            key: "spool_rss_growth_mib",
            what: "gateway peak RSS growth while the job spools them (MiB)",
            value: r.big_result.spool_rss_growth_mib,
            target: Some(64.0),
            at_least: false,
        },
        Headline {
            key: "startup_ms",
            what: "process start → health SERVING (ms)",
            value: r.startup_ms,
            target: Some(150.0),
            at_least: false,
        },
    ]
}

pub fn write(out: &Path, machine: &Machine, quick: bool, r: &Results) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    print_sync_path(&r.sync, &r.floor);
    println!(
        "\nScenario 2: 32 tonic clients: ExecuteSync {:.0} calls/s; SubmitAsync + WatchJob {:.0} jobs/s (p50 {:.0} µs)",
        r.sync_tonic_c32.per_second, r.async_c32.per_second, r.async_c32.p50_us
    );
    for f in &r.fan_out {
        println!(
            "Scenario 3: {} watchers: p50 {:.1} ms, p99 {:.1} ms, {:.2} KiB RSS per watcher",
            f.watchers, f.p50_ms, f.p99_ms, f.rss_kib_per_watcher
        );
    }
    println!(
        "Scenario 4: {} retained jobs: {:.0} bytes each; ListJobs p50 first page {:.2} ms, deep page {:.2} ms",
        r.retained.jobs,
        r.retained.bytes_per_job,
        r.retained.first_page_p50_ms,
        r.retained.deep_page_p50_ms
    );
    println!(
        "Scenario 5: start-up {:.0} ms to SERVING, idle RSS {} KiB",
        r.startup_ms, r.idle_rss_kib
    );
    println!(
        "Scenario 6: database store: {:.0} jobs/s (memory: {:.0}); across instances p50 {:.1} ms, p99 {:.1} ms",
        r.store.async_c32.per_second,
        r.async_c32.per_second,
        r.store.cross_watch_p50_ms,
        r.store.cross_watch_p99_ms
    );

    println!(
        "Scenario 7: {} WatchJobs streams, {} jobs: end → event p50 {:.1} ms, p99 {:.1} ms, {:.2} KiB RSS per stream",
        r.feed.watchers, r.feed.jobs, r.feed.p50_ms, r.feed.p99_ms, r.feed.rss_kib_per_watcher
    );
    println!(
        "Scenario 8: a job on A followed from B over {:.0} ms: {} transactions with 1 watcher, {} with {}, {} idle; ratio {:.2}",
        r.remote.window_ms,
        r.remote.one_watcher_xacts,
        r.remote.many_watchers_xacts,
        r.remote.many_watchers,
        r.remote.idle_xacts,
        r.remote.ratio
    );
    println!(
        "Scenario 9: {} rows: ExecuteStream {:.0} rows/s, psql COPY {:.0} rows/s; ratio {:.2}; RSS +{:.1} MiB",
        r.big_result.rows,
        r.big_result.stream_rows_per_second,
        r.big_result.copy_rows_per_second,
        r.big_result.ratio,
        r.big_result.rss_growth_mib
    );
    println!(
        "Scenario 9, as a job: spooled in {:.1} s (RSS +{:.1} MiB); ReadJobResult {:.0} rows/s (ratio {:.2}); Flight DoGet {:.0} rows/s (ratio {:.2})",
        r.big_result.job_seconds,
        r.big_result.spool_rss_growth_mib,
        r.big_result.read_rows_per_second,
        r.big_result.read_ratio,
        r.big_result.flight_rows_per_second,
        r.big_result.flight_ratio
    );

    let headlines = headlines(r);
    println!(
        "\n{:<28} {:>12} {:>10}  {:<4} meaning",
        "figure", "value", "target", "met"
    );
    for h in &headlines {
        let (target, met) = match (h.target, h.met()) {
            (Some(t), Some(met)) => (
                format!("{}{t:.2}", if h.at_least { "≥" } else { "≤" }),
                if met { "yes" } else { "NO" },
            ),
            _ => ("–".to_string(), "–"),
        };
        println!(
            "{:<28} {:>12.2} {:>10}  {:<4} {}",
            h.key, h.value, target, met, h.what
        );
    }

    let mut summary = serde_json::Map::new();
    for h in &headlines {
        summary.insert(h.key.into(), json!(h.value));
    }
    summary.insert(
        "targets_met".into(),
        json!(headlines.iter().filter(|h| h.met() == Some(true)).count()),
    );
    summary.insert(
        "targets".into(),
        json!(headlines.iter().filter(|h| h.target.is_some()).count()),
    );
    // Scenario 6 has no target of its own: figures to follow over time.
    summary.insert(
        "store_async_ratio_vs_memory".into(),
        json!(r.store.async_c32.per_second / r.async_c32.per_second.max(1.0)),
    );
    summary.insert(
        "cross_instance_watch_p99_ms".into(),
        json!(r.store.cross_watch_p99_ms),
    );
    summary.insert("quick".into(), json!(quick));
    summary.insert("machine".into(), json!(machine));
    summary.insert("scenarios".into(), json!(r));
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary).expect("JSON"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\nwrote {}", path.display());
    match chart(&out.join("throughput.png"), r) {
        Ok(()) => println!("wrote {}", out.join("throughput.png").display()),
        Err(e) => println!("no chart: {e}"),
    }
    Ok(())
}

/// Scenario 1's table.
pub fn print_sync_path(sync: &[SyncRow], floor: &Floor) {
    println!(
        "\nScenario 1: ExecuteSync of bench_add from h2load vs pgbench calling it directly \
         (medians; mean and p99 latency in µs)"
    );
    println!(
        "{:>7} | {:>10} {:>7} {:>7} | {:>10} {:>7} | {:>10} {:>7} {:>7} | {:>6} | {:>8}",
        "callers",
        "pgbench/s",
        "mean",
        "p99",
        "driver/s",
        "mean",
        "gateway/s",
        "mean",
        "p99",
        "gw÷pgb",
        "gw CPU µs"
    );
    for row in sync {
        println!(
            "{:>7} | {:>10.0} {:>7.0} {:>7.0} | {:>10.0} {:>7.0} | {:>10.0} {:>7.0} {:>7.0} | {:>6.2} | {:>8.1}",
            row.concurrency,
            row.pgbench.per_second,
            row.pgbench.mean_us,
            row.pgbench.p99_us,
            row.direct.per_second,
            row.direct.mean_us,
            row.gateway.per_second,
            row.gateway.mean_us,
            row.gateway.p99_us,
            row.gateway.per_second / row.pgbench.per_second,
            row.gateway_cpu_us_per_call,
        );
    }
    println!(
        "  floor: Health/Check at 32 callers {:.0}/s, gateway CPU {:.1} µs per call",
        floor.health.per_second, floor.cpu_us_per_call
    );
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Calls/s per concurrency for pgbench, the bare driver and the gateway.
fn chart(path: &Path, r: &Results) -> Result<(), String> {
    let font =
        std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (install fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font could not be loaded".to_string())?;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let groups = r.sync.len();
    let top = r
        .sync
        .iter()
        .flat_map(|row| {
            [
                row.pgbench.per_second,
                row.direct.per_second,
                row.gateway.per_second,
            ]
        })
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "bench_add calls/s by concurrent callers",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups as f64, 0f64..top)
        .map_err(|e| e.to_string())?;
    let labels: Vec<String> = r
        .sync
        .iter()
        .map(|row| format!("{} callers", row.concurrency))
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("calls per second")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    type Series = (
        &'static str,
        RGBColor,
        fn(&crate::scenarios::SyncRow) -> f64,
    );
    let series: [Series; 3] = [
        (
            "pgbench (libpq, prepared)",
            RGBColor(120, 120, 120),
            |row| row.pgbench.per_second,
        ),
        (
            "tokio-postgres (no gateway)",
            RGBColor(70, 130, 180),
            |row| row.direct.per_second,
        ),
        (
            "procgate ExecuteSync (h2load)",
            RGBColor(220, 110, 40),
            |row| row.gateway.per_second,
        ),
    ];
    for (k, (name, color, value)) in series.into_iter().enumerate() {
        let bars = r.sync.iter().enumerate().map(move |(i, row)| {
            let x0 = i as f64 + 0.12 + k as f64 * 0.26;
            Rectangle::new([(x0, 0.0), (x0 + 0.24, value(row))], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
