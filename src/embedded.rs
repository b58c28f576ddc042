//! A throwaway PostgreSQL for trying procgate out (and for its tests).
//!
//! `procgate serve` without `--database-url` and `procgate demo` start one:
//! a fresh cluster in a temp dir (initdb, then the server, with fsync off as
//! pgtemp does), removed when this value is dropped. The example procedures
//! of docs/examples/postgres are compiled into the binary and loaded, so the
//! command works from any directory. It listens on localhost only, on a free
//! port, and its superuser has a random password (scram-sha-256).
//!
//! This launcher replaced pgtemp, whose way of running as root (through
//! `sudo -u postgres`, PostgreSQL refuses to run as root) made `sudo` a
//! system requirement. As root, initdb and the server are started as the
//! `postgres` user directly: the child process's uid and gid are set
//! (`CommandExt::uid/gid`), so nothing but PostgreSQL itself must be
//! installed. The server binaries are found under
//! `/usr/lib/postgresql/<version>/bin` on Debian-like machines, not on PATH.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

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

/// The cluster's superuser.
const USER: &str = "postgres";

pub struct EmbeddedPostgres {
    server: Child,
    port: u16,
    password: String,
    bin_dir: PathBuf,
    /// Holds the data directory; removed last, once the server stopped.
    dir: TempDir,
}

/// How to start an embedded PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Load docs/examples/postgres once it is up.
    pub load_examples: bool,
    /// The superuser's password; a random one when None.
    pub password: Option<String>,
    /// Extra server settings (`-c name=value`).
    pub settings: Vec<(String, String)>,
}

/// Who the server runs as: this process's user, or `postgres` when root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Starts a cluster and waits until it accepts connections.
    pub fn start(options: &EmbeddedOptions) -> Result<Self, String> {
        let bin = find_bin_dir().ok_or_else(|| {
            format!("PostgreSQL server binaries (initdb, postgres) were not found: {INSTALL_HINT}")
        })?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("procgate-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for the embedded PostgreSQL: {e}"))?;
        // A v4 UUID: 122 bits from the operating system's generator.
        let password = options
            .password
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, &password)
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        if let Some(run_as) = run_as {
            for path in [dir.path(), &pwfile] {
                std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(
                    |e| format!("cannot give {} to the postgres user: {e}", path.display()),
                )?;
            }
        }
        let data = dir.path().join("data");
        let initdb = command(&bin.join("initdb"), dir.path(), run_as)
            .arg("-D")
            .arg(&data)
            .args([
                "-N",
                "--username",
                USER,
                "--auth",
                "scram-sha-256",
                "--pwfile",
            ])
            .arg(&pwfile)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr).trim()
            ));
        }
        let _ = std::fs::remove_file(&pwfile);
        let port = free_port()?;
        let mut server = command(&bin.join("postgres"), dir.path(), run_as);
        server.arg("-D").arg(&data);
        let fixed = [
            ("port", port.to_string()),
            ("listen_addresses", "localhost".into()),
            ("unix_socket_directories", data.display().to_string()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("autovacuum", "off".into()),
            ("max_connections", "200".into()),
            // The server's log goes to files in the data directory (a pipe
            // nobody reads would block every backend once full).
            ("logging_collector", "on".into()),
            ("log_directory", "log".into()),
        ];
        let extra = options
            .settings
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()));
        for (name, value) in fixed.into_iter().chain(extra) {
            server.arg("-c").arg(format!("{name}={value}"));
        }
        // Its own process group: a Ctrl-C at the terminal stops procgate,
        // which drains its jobs against the database before stopping it.
        let server = server
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.join("postgres").display()))?;
        let mut embedded = Self {
            server,
            port,
            password,
            bin_dir: bin,
            dir,
        };
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
        format!(
            "postgresql://{USER}:{}@localhost:{}/postgres",
            self.password, self.port
        )
    }

    /// Where the PostgreSQL programs (pgbench, psql…) of this server live.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's data directory (deleted on drop).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<postgres::Client, String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.server.try_wait() {
                return Err(format!(
                    "PostgreSQL stopped at start ({status}); its log is in {}",
                    self.data_dir().join("log").display()
                ));
            }
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

impl Drop for EmbeddedPostgres {
    /// A fast shutdown (SIGINT: sessions end, no checkpoint wait), then the
    /// directory goes with `dir`.
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our child's,
        // not yet reaped.
        unsafe { libc::kill(self.server.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.server.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.server.kill();
                let _ = self.server.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `program`, run in `dir`, as `run_as` when given.
fn command(program: &Path, dir: &Path, run_as: Option<RunAs>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir);
    if let Some(RunAs { uid, gid }) = run_as {
        // std drops the supplementary groups too when root sets a uid.
        command.uid(uid).gid(gid);
    }
    command
}

/// None when not root; as root, the `postgres` user (PostgreSQL refuses to
/// run as root).
fn run_as() -> Result<Option<RunAs>, String> {
    // SAFETY: getuid has no preconditions and cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: the name is a NUL-terminated literal; the entry getpwnam
    // returns is read at once, before any other call could reuse it.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if entry.is_null() {
        return Err(format!(
            "running as root, the embedded PostgreSQL runs as the `postgres` user, and there is none: {INSTALL_HINT}"
        ));
    }
    // SAFETY: not null, so it points at a passwd entry.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

/// A port free on localhost right now, for the server to take.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port for the embedded PostgreSQL: {e}"))
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
