//! `process_*` metrics, read from `/proc` at each scrape, by the names of
//! the Prometheus client libraries' process collectors (Go, Java, Python),
//! so that the usual "memory and CPU per instance" panels work.
//! `prometheus-client` has no such collector; on systems without `/proc`
//! these metrics are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

#[derive(Debug)]
pub struct ProcessCollector {
    clock_ticks: f64,
    page_size: f64,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        ProcessCollector {
            clock_ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: if page > 0 { page as f64 } else { 4096.0 },
        }
    }

    fn read(&self) -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name, in parentheses, may hold spaces: fields are
        // counted after its closing one (field 3 is the state).
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        let max_fds = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
            0 => i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX),
            _ => -1,
        };
        Some(Sample {
            cpu_seconds: (field(14)? + field(15)?) / self.clock_ticks,
            start_time: boot_time + field(22)? / self.clock_ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * self.page_size,
            open_fds,
            max_fds,
        })
    }
}

struct Sample {
    cpu_seconds: f64,
    start_time: f64,
    virtual_bytes: f64,
    resident_bytes: f64,
    open_fds: i64,
    max_fds: i64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = self.read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent, in seconds",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size, in bytes",
                Some(Unit::Bytes),
                sample.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size, in bytes",
                Some(Unit::Bytes),
                sample.virtual_bytes,
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch, in seconds",
                Some(Unit::Seconds),
                sample.start_time,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                sample.open_fds as f64,
            ),
            (
                "process_max_fds",
                "The most file descriptors the process may open",
                None,
                sample.max_fds as f64,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
