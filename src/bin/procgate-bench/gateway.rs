//! The gateway under test, as a child process of the bench.
//!
//! The bench re-executes itself with `--gateway <serve flags>`; that branch
//! runs `procgate::server::run` exactly as `procgate serve` does, so what is
//! measured is the release build of the library, and its memory is the
//! child's RSS alone.

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use procgate::config::ServeConfig;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub const FLAG: &str = "--gateway";

/// The `--gateway` branch: serve until SIGTERM.
pub fn serve(args: &[String]) -> ExitCode {
    let config = match ServeConfig::parse_from(args) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    let url = config.database_url.clone().expect("--database-url");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| e.to_string())?;
        procgate::server::run(listener, config, &url, procgate::server::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub address: String,
    /// From spawning the process to health SERVING.
    pub startup: Duration,
}

impl Gateway {
    pub async fn start(database_url: &str, extra: &[&str]) -> Result<Gateway, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .arg(FLAG)
            .args(["--database-url", database_url, "--listen", &address])
            .args(["--health-interval", "200ms"])
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the gateway: {e}"))?;
        let mut gateway = Gateway {
            child,
            address,
            startup: Duration::ZERO,
        };
        gateway.startup = gateway.wait_serving(started).await?;
        Ok(gateway)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    async fn wait_serving(&self, started: Instant) -> Result<Duration, String> {
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(self.url())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                && let Ok(answer) = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                return Err("the gateway did not report SERVING within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The gateway process's id, for reading its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The gateway's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    // /proc/PID/stat: fields 14 and 15 (after the ")" of the command) are
    // utime and stime in clock ticks.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// VmRSS of a process, in KiB (0 if unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
