//! Test harness: a private PostgreSQL (procgate's embedded
//! launcher) loaded with the examples and tests/fixtures, and a real
//! procgate server on 127.0.0.1:0 reached by a real tonic client.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use procgate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use procgate::proto::procedure_service_client::ProcedureServiceClient;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use procgate::server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub mod fake;

pub type Client = ProcedureServiceClient<Channel>;

const FIXTURES: &str = include_str!("../fixtures/types.sql");

/// Starts a database with the examples and the fixtures loaded.
pub async fn start_db() -> EmbeddedPostgres {
    start_db_with(None).await
}

/// Same, with a given superuser password (one a gateway already holds).
async fn start_db_with(password: Option<String>) -> EmbeddedPostgres {
    tokio::task::spawn_blocking(move || {
        let db = EmbeddedPostgres::start(&EmbeddedOptions {
            load_examples: true,
            password,
            settings: vec![(
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            )],
        })
        .expect("starting the test PostgreSQL");
        let mut client = postgres::Client::connect(&db.url(), postgres::NoTls).unwrap();
        client.batch_execute(FIXTURES).expect("loading fixtures");
        db
    })
    .await
    .unwrap()
}

/// A running gateway and the database behind it.
pub struct Gateway {
    pub db: Option<EmbeddedPostgres>,
    /// Set by `bring_db_back`: what joins the gateway's port to the new cluster.
    forwarder: Option<tokio_util::task::AbortOnDropHandle<()>>,
    pub db_url: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<procgate::error::Result<()>>>,
}

impl Gateway {
    /// A fresh database and a gateway configured with `args` (serve flags).
    pub async fn start(args: &[&str]) -> Gateway {
        Self::start_on(start_db().await, args).await
    }

    pub async fn start_on(db: EmbeddedPostgres, args: &[&str]) -> Gateway {
        let mut gateway = Self::start_url(&db.url(), args).await;
        gateway.db = Some(db);
        gateway
    }

    /// A gateway in front of a database the test does not own.
    pub async fn start_url(db_url: &str, args: &[&str]) -> Gateway {
        Self::serve(db_url, args, None).await
    }

    /// A gateway whose calls go to `backend`; `db_url` is only for the
    /// database job store.
    pub async fn start_with(
        backend: std::sync::Arc<dyn procgate::backend::Backend>,
        db_url: &str,
        args: &[&str],
    ) -> Gateway {
        Self::serve(db_url, args, Some(backend)).await
    }

    async fn serve(
        db_url: &str,
        args: &[&str],
        backend: Option<std::sync::Arc<dyn procgate::backend::Backend>>,
    ) -> Gateway {
        let db_url = db_url.to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut all_args = vec!["--health-interval", "200ms"];
        all_args.extend_from_slice(args);
        let config = procgate::config::ServeConfig::parse_from(all_args).expect("serve flags");
        let (stop, stopped) = oneshot::channel::<()>();
        let url = db_url.clone();
        let server = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            match backend {
                Some(backend) => server::run_with(listener, config, backend, &url, stopped).await,
                None => server::run(listener, config, &url, stopped).await,
            }
        });
        Gateway {
            db: None,
            forwarder: None,
            db_url,
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub async fn client(&self) -> Client {
        ProcedureServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connecting to the gateway")
            .max_decoding_message_size(64 << 20)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Waits (up to 30 s) until grpc.health.v1 reports `wanted`.
    pub async fn health_becomes(&self, wanted: ServingStatus) {
        let health = HealthClient::new(self.channel().await);
        eventually(
            Duration::from_secs(30),
            &format!("health {wanted:?}"),
            || {
                let mut health = health.clone();
                async move {
                    let status = health
                        .check(HealthCheckRequest::default())
                        .await
                        .ok()?
                        .into_inner()
                        .status;
                    (status == wanted as i32).then_some(())
                }
            },
        )
        .await;
    }

    /// Ends an outage: a database is back on `port`, where the gateway
    /// looks for it, and answers there only once its examples and fixtures
    /// are loaded. A cluster started on `port` itself would answer before
    /// they are, and jobs queued during the outage would race the loading
    /// and find no procedure; so the new cluster takes another port, and a
    /// forwarder listens on this one once it is ready.
    pub async fn bring_db_back(&mut self, port: u16) {
        // The gateway signs in with the password its URL holds.
        let db = start_db_with(Some(password_of(&self.db_url))).await;
        let target = db.port();
        let mut listeners = vec![
            tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap(),
        ];
        // `localhost` may resolve to ::1 first, as PostgreSQL listens there too.
        listeners.extend(tokio::net::TcpListener::bind(("::1", port)).await.ok());
        let forwarders = futures_util::future::join_all(
            listeners
                .into_iter()
                .map(|listener| forward(listener, target)),
        );
        self.forwarder = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            async {
                forwarders.await;
            },
        )));
        self.db = Some(db);
    }

    /// Runs SQL on the test database from a separate admin connection.
    pub async fn sql(&self, query: &str) -> Vec<postgres::Row> {
        sql(&self.db_url, query).await
    }

    /// Sessions currently running a statement that contains `needle`.
    pub async fn active_sessions(&self, needle: &str) -> i64 {
        let rows = self
            .sql(&format!(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE state = 'active' AND pid <> pg_backend_pid()
                    AND query LIKE '%{}%'",
                needle.replace('\'', "''")
            ))
            .await;
        rows[0].get(0)
    }

    /// Stops the server the way SIGTERM does, and returns its result.
    pub async fn shutdown(mut self) -> procgate::error::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap()
    }
}

/// Joins each connection to `listener` to 127.0.0.1:`target`.
async fn forward(listener: tokio::net::TcpListener, target: u16) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Runs `procgate serve` in front of `db_url` with `flags`, which must stop
/// the start: returns what it logged.
pub async fn refused_start(db_url: &str, flags: &[&str]) -> String {
    let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--database-url", db_url]
        .map(String::from)
        .into();
    args.extend(flags.iter().map(|f| f.to_string()));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "it started: {logs}");
    logs
}

/// A port free on 127.0.0.1 right now, for a procgate process to take.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// A client of the procgate process on `port`, once it listens (30 s at most).
pub async fn connect_when_listening(port: u16) -> Client {
    let server = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(30), "procgate to listen", || {
        let server = server.clone();
        async move { Client::connect(server).await.ok() }
    })
    .await
}

/// The password in a `postgresql://user:password@host…` URL, to check that
/// it never shows up.
pub fn password_of(url: &str) -> String {
    let password = url.split(':').nth(2).unwrap().split('@').next().unwrap();
    assert!(!password.is_empty(), "no password in {url}");
    password.to_string()
}

pub async fn sql(url: &str, query: &str) -> Vec<postgres::Row> {
    let url = url.to_string();
    let query = query.to_string();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.query(query.as_str(), &[]).unwrap()
    })
    .await
    .unwrap()
}

/// Polls `check` until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---- building requests ----

pub fn value(kind: Kind) -> pb::Value {
    pb::Value { kind: Some(kind) }
}

pub fn p_in(name: &str, kind: Kind) -> pb::Param {
    pb::Param {
        name: name.into(),
        direction: pb::Direction::In as i32,
        value: Some(value(kind)),
        ..Default::default()
    }
}

pub fn p_inout(name: &str, kind: Kind) -> pb::Param {
    pb::Param {
        direction: pb::Direction::InOut as i32,
        ..p_in(name, kind)
    }
}

pub fn p_out(name: &str, value_type: pb::ValueType) -> pb::Param {
    pb::Param {
        name: name.into(),
        direction: pb::Direction::Out as i32,
        r#type: value_type as i32,
        ..Default::default()
    }
}

pub fn call(procedure: &str, params: Vec<pb::Param>) -> pb::ProcedureCall {
    pb::ProcedureCall {
        procedure: procedure.into(),
        params,
        ..Default::default()
    }
}

/// The Python of the project's environment (scripts/setup-python.sh
/// installs it, or finds it installed).
pub fn project_python() -> String {
    let setup = std::process::Command::new("./scripts/setup-python.sh")
        .output()
        .expect("running scripts/setup-python.sh");
    assert!(
        setup.status.success(),
        "scripts/setup-python.sh failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    String::from_utf8(setup.stdout).unwrap().trim().to_string()
}

/// pkg_etl.proceso_largo: a load that runs `steps` × `pause_ms`.
pub fn long_load(steps: i64, pause_ms: i64) -> pb::ProcedureCall {
    call(
        "pkg_etl.proceso_largo",
        vec![
            p_in("p_fecha", Kind::DateValue("2024-03-01".into())),
            p_in("p_pasos", Kind::IntegerValue(steps)),
            p_in("p_pausa_ms", Kind::IntegerValue(pause_ms)),
        ],
    )
}

pub fn function(
    procedure: &str,
    params: Vec<pb::Param>,
    returns: pb::ValueType,
) -> pb::ProcedureCall {
    pb::ProcedureCall {
        returns: returns as i32,
        ..call(procedure, params)
    }
}

pub async fn execute(
    client: &mut Client,
    call: pb::ProcedureCall,
) -> Result<pb::ExecuteSyncResponse, tonic::Status> {
    client
        .execute_sync(pb::ExecuteSyncRequest { call: Some(call) })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn submit(client: &mut Client, call: pb::ProcedureCall) -> pb::Job {
    client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(call),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("SubmitAsync")
        .into_inner()
}

/// Every snapshot WatchJob sends, until the stream ends.
pub async fn watch_to_end(client: &mut Client, id: &str) -> Vec<pb::Job> {
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            id: id.into(),
            since_revision: 0,
            ..Default::default()
        })
        .await
        .expect("WatchJob")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(job) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("WatchJob went quiet for a minute")
    {
        seen.push(job.expect("a WatchJob message"));
    }
    seen
}

/// Polls GetJob until the job is in `state`; a job that ends in another
/// state fails the test at once, with the job's error.
pub async fn wait_state(client: &Client, id: &str, state: pb::JobState) -> pb::Job {
    wait_job(client, id, &format!("{state:?}"), |job| {
        let ended = matches!(
            state_of(job),
            pb::JobState::Completed | pb::JobState::Failed | pb::JobState::Cancelled
        );
        assert!(
            !ended || job.state == state as i32,
            "job {id} ended {:?}, not {state:?}: {:?}",
            state_of(job),
            job.error
        );
        job.state == state as i32
    })
    .await
}

/// Polls GetJob until the job satisfies `done`.
pub async fn wait_job(
    client: &Client,
    id: &str,
    what: &str,
    done: impl Fn(&pb::Job) -> bool,
) -> pb::Job {
    let done = &done;
    eventually(
        Duration::from_secs(30),
        &format!("job {id}: {what}"),
        || {
            let mut client = client.clone();
            let id = id.to_string();
            async move {
                let job = client
                    .get_job(pb::GetJobRequest {
                        id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                done(&job).then_some(job)
            }
        },
    )
    .await
}

pub fn state_of(job: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(job.state).unwrap()
}

pub fn kind_of(value: Option<&pb::Value>) -> Option<&Kind> {
    value.and_then(|v| v.kind.as_ref())
}

/// Which job store a test of the shared suite runs against.
#[derive(Clone, Copy, Debug)]
pub enum Store {
    Memory,
    Database,
}

/// The serve flags of the database store, made quick for tests.
const DATABASE_STORE: [&str; 6] = [
    "--job-store",
    "database",
    "--job-store-poll-interval",
    "200ms",
    "--job-store-progress-interval",
    "50ms",
];

/// A fresh database with the job store's tables.
pub async fn migrated_db() -> EmbeddedPostgres {
    let db = start_db().await;
    procgate::jobs::store::migrate(&db.url(), "public")
        .await
        .expect("migrating the job store");
    db
}

/// A gateway on `store` in front of a real PostgreSQL, with `extra` flags.
pub async fn gateway(store: Store, extra: &[&str]) -> Gateway {
    match store {
        Store::Memory => Gateway::start(extra).await,
        Store::Database => {
            let args: Vec<&str> = DATABASE_STORE.iter().chain(extra).copied().collect();
            Gateway::start_on(migrated_db().await, &args).await
        }
    }
}

/// A gateway on `store` whose calls go to the scripted [`fake::FakeBackend`]
/// (the database store still lives in a real PostgreSQL).
pub async fn fake_gateway(store: Store, extra: &[&str]) -> Gateway {
    let backend = std::sync::Arc::new(fake::FakeBackend::default());
    match store {
        Store::Memory => {
            Gateway::start_with(backend, "postgres://unused@127.0.0.1:9/none", extra).await
        }
        Store::Database => {
            let db = migrated_db().await;
            let args: Vec<&str> = DATABASE_STORE.iter().chain(extra).copied().collect();
            let mut gateway = Gateway::start_with(backend, &db.url(), &args).await;
            gateway.db = Some(db);
            gateway
        }
    }
}

/// Runs each named `async fn(Store)` of the test file once per store.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Memory).await
                }
            )*
        }
        mod database {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Database).await
                }
            )*
        }
    };
}

/// Named tokens for ownership tests: two users and an admin.
pub const TOKENS: &str =
    "# name:secret[:admin]\nalice:alice-secret-1\nbob:bob-secret-22\nroot:root-secret-333:admin\n";

/// A request carrying `authorization: Bearer <token>`.
pub fn as_user<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// A token file holding `content`, and the directory that keeps it alive.
pub fn token_file(content: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, content).unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}
