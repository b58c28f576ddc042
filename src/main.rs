//! The `procgate` binary: parse the command line, set up logging, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use procgate::cli::demo::{self, DemoArgs};
use procgate::cli::{self, ClientCommand};
use procgate::config::{LogFormat, ServeConfig};
use procgate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use procgate::{backend, server};
use tracing::{error, info, warn};

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
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Demo(args) => demo::run(args),
        Command::Client(command) => {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            runtime.block_on(cli::run(command)).into()
        }
    }
}

fn serve(config: ServeConfig) -> ExitCode {
    init_tracing(config.log_format);
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

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        server::run(listener, config, &database_url, server::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
