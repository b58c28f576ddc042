//! The `procgate` binary: parse the command line, set up logging, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opentelemetry_sdk::trace::SdkTracerProvider;
use procgate::cli::demo::{self, DemoArgs};
use procgate::cli::{self, ClientCommand};
use procgate::config::{JobStoreKind, LogFormat, ServeConfig, StoreArgs};
use procgate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use procgate::jobs::store;
use procgate::telemetry::trace;
use procgate::{backend, server};
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A gRPC gateway to stored procedures (PostgreSQL, Oracle).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(Box<ServeConfig>),
    /// Start a throwaway database and a gateway, and tour the service.
    Demo(DemoArgs),
    /// Create or upgrade the database job store's tables (--job-store database).
    Migrate(MigrateArgs),
    #[command(flatten)]
    Client(Box<ClientCommand>),
}

/// jemalloc rather than glibc's malloc: a call's many short-lived driver
/// buffers share the tokio workers' threads with the long-lived snapshots of
/// retained jobs, and glibc's arenas fragmented around them (1,087 bytes of
/// RSS per retained job against 589; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Demo(args) => demo::run(args),
        Command::Migrate(args) => migrate(args),
        Command::Client(command) => {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            runtime.block_on(cli::run(*command)).into()
        }
    }
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The database that holds the job store (postgres:// or oracle://).
    #[arg(long, env = "PROCGATE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[command(flatten)]
    store: StoreArgs,
}

fn migrate(args: MigrateArgs) -> ExitCode {
    init_tracing(LogFormat::Text, None);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (url, schema) = (&args.database_url, &args.store.schema);
    let migrated = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("oracle") => runtime.block_on(store::oracle::migrate(url, schema)),
        _ => runtime.block_on(store::migrate(url, schema)),
    };
    match migrated {
        Ok(applied) if applied.is_empty() => {
            info!(schema = %args.store.schema, "the job store is up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            info!(schema = %args.store.schema, ?applied, "applied job store migrations");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: ServeConfig) -> ExitCode {
    // The trace exporter's channel lives on the runtime: it comes first.
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let traces = match &config.otlp_endpoint {
        Some(endpoint) => {
            let _inside = runtime.enter();
            match trace::exporter(endpoint) {
                Ok(provider) => Some(provider),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    init_tracing(config.log_format, traces.as_ref());
    if let Some(endpoint) = &config.otlp_endpoint {
        info!(%endpoint, "exporting traces over OTLP/gRPC");
    }
    let embedded = match &config.database_url {
        Some(_) => None,
        None => {
            warn!(
                "no --database-url: starting an EMBEDDED THROWAWAY PostgreSQL loaded with docs/examples/postgres; its data is deleted on exit"
            );
            match EmbeddedPostgres::start(&EmbeddedOptions {
                load_examples: true,
                ..Default::default()
            }) {
                Ok(db) => Some(db),
                Err(e) => {
                    error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let database_url = config
        .database_url
        .clone()
        .or_else(|| embedded.as_ref().map(EmbeddedPostgres::url))
        .expect("a database URL or an embedded database");
    info!(database = %backend::redact_url(&database_url), "using database");
    if let Some(db) = &embedded {
        info!(data_dir = %db.data_dir().display(), "the embedded database lives here until exit");
    }

    let result = runtime.block_on(async {
        if embedded.is_some() && config.job_store == JobStoreKind::Database {
            // A throwaway database gets its job store tables at once.
            store::migrate(&database_url, &config.store.schema)
                .await
                .map_err(|e| e.to_string())?;
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        server::run(listener, config, &database_url, server::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    if let Some(provider) = traces {
        // While the runtime still runs: the last spans leave now.
        if let Err(e) = provider.shutdown() {
            warn!(error = %e, "flushing the last traces failed");
        }
    }
    drop(runtime);
    drop(embedded);
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, as text or JSON lines, and spans to the trace exporter
/// when there is one.
fn init_tracing(format: LogFormat, traces: Option<&SdkTracerProvider>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let text = matches!(format, LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
    });
    let json = matches!(format, LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(traces.map(trace::layer))
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency check: no two flags of a command collide.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
