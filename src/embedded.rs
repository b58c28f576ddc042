//! A throwaway PostgreSQL for trying procgate out (and for its tests).
//!
//! `procgate serve` without `--database-url` and `procgate demo` start one
//! through pgtemp: a fresh cluster in a temp dir, removed when this value is
//! dropped. The example procedures of docs/examples/postgres are compiled
//! into the binary and loaded, so the command works from any directory.
//!
//! Two traps of Debian-like machines are handled here rather than left to a
//! panic inside pgtemp: the server binaries live under
//! `/usr/lib/postgresql/<version>/bin`, not on PATH, and as root pgtemp runs
//! them through `sudo -u postgres` (PostgreSQL refuses to run as root), so
//! `sudo` and a `postgres` user must exist.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgtemp::{PgTempDB, PgTempDBBuilder};

/// The example procedures, in load order.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "pkg_etl.sql",
        include_str!("../docs/examples/postgres/pkg_etl.sql"),
    ),
    (
        "bench.sql",
        include_str!("../docs/examples/postgres/bench.sql"),
    ),
];

const INSTALL_HINT: &str = "install the PostgreSQL server (Debian/Ubuntu: `apt-get install -y postgresql`), \
     or set PROCGATE_PG_BIN to the directory holding initdb and postgres";

pub struct EmbeddedPostgres {
    db: PgTempDB,
    bin_dir: PathBuf,
}

/// How to start an embedded PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Load docs/examples/postgres once it is up.
    pub load_examples: bool,
    /// Extra server settings (`-c name=value`).
    pub settings: Vec<(String, String)>,
}

impl EmbeddedPostgres {
    /// Starts a cluster and waits until it accepts connections.
    pub fn start(options: &EmbeddedOptions) -> Result<Self, String> {
        let bin = find_bin_dir().ok_or_else(|| {
            format!("PostgreSQL server binaries (initdb, postgres) were not found: {INSTALL_HINT}")
        })?;
        check_root_prerequisites()?;
        // pgtemp pipes the server's stderr and never reads it: once 64 KiB
        // of log lines (every ERROR a procedure raises) fill the pipe, every
        // backend blocks. The logging collector writes them to files in the
        // data directory instead.
        let mut builder = PgTempDBBuilder::new()
            .with_bin_path(&bin)
            .with_config_param("max_connections", "200")
            .with_config_param("logging_collector", "on")
            .with_config_param("log_directory", "log");
        for (name, value) in &options.settings {
            builder = builder.with_config_param(name, value);
        }
        let db = std::panic::catch_unwind(move || builder.start()).map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("starting PostgreSQL from {} failed: {why}", bin.display())
        })?;
        let embedded = Self { db, bin_dir: bin };
        let mut client = embedded.wait_ready(Duration::from_secs(30))?;
        if options.load_examples {
            for (file, sql) in EXAMPLES {
                client
                    .batch_execute(sql)
                    .map_err(|e| format!("loading docs/examples/postgres/{file} failed: {e}"))?;
            }
        }
        Ok(embedded)
    }

    /// postgresql://user:password@localhost:port/dbname
    pub fn url(&self) -> String {
        self.db.connection_uri()
    }

    /// Where the PostgreSQL programs (pgbench, psql…) of this server live.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's data directory (deleted on drop).
    pub fn data_dir(&self) -> PathBuf {
        self.db.data_dir()
    }

    pub fn port(&self) -> u16 {
        self.db.db_port()
    }

    fn wait_ready(&self, limit: Duration) -> Result<postgres::Client, String> {
        let started = Instant::now();
        loop {
            match postgres::Client::connect(&self.url(), postgres::NoTls) {
                Ok(client) => return Ok(client),
                Err(e) if started.elapsed() > limit => {
                    return Err(format!(
                        "PostgreSQL did not accept connections in time: {e}"
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// PROCGATE_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PROCGATE_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_server(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_server(dir))
}

fn check_root_prerequisites() -> Result<(), String> {
    // SAFETY: getuid has no preconditions and cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return Ok(());
    }
    let on_path = |program: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
            .unwrap_or(false)
    };
    if !on_path("sudo") {
        return Err(
            "running as root, the embedded PostgreSQL is started as the `postgres` user \
                    through sudo, which is not installed: install it (Debian/Ubuntu: \
                    `apt-get install -y sudo`, or run scripts/setup.sh), or run procgate as a \
                    non-root user"
                .into(),
        );
    }
    let has_postgres_user = std::fs::read_to_string("/etc/passwd")
        .map(|passwd| passwd.lines().any(|l| l.starts_with("postgres:")))
        .unwrap_or(false);
    if !has_postgres_user {
        return Err(format!(
            "running as root, the embedded PostgreSQL needs a `postgres` user: {INSTALL_HINT}"
        ));
    }
    Ok(())
}
