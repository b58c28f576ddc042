//! `procgate demo`: the whole service on a fresh machine, in one command.
//!
//! It starts a throwaway PostgreSQL (src/embedded.rs) loaded with
//! docs/examples/postgres, starts the gateway on 127.0.0.1:50051, and runs a
//! short tour with the real client commands (each printed before it runs):
//! a sync call, a cursor, three jobs in parallel with live progress, a
//! cancel, a failing job and its error, the job list. With `--serve` the
//! gateway and database stay up for trying `buf curl` and the client;
//! Ctrl-C (or SIGTERM) stops everything and removes the database.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use tokio::sync::oneshot;

use super::{Client, Outcome, ServerArgs, connect, parse_command, run_on};
use crate::config::ServeConfig;
use crate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use crate::proto::{self as pb};
use crate::server;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the demo gateway listens.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Keep the gateway and its database running after the tour, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
}

pub fn run(args: DemoArgs) -> ExitCode {
    println!(
        "procgate demo: starting a throwaway PostgreSQL with the examples of docs/examples/postgres…"
    );
    let db = match EmbeddedPostgres::start(&EmbeddedOptions {
        load_examples: true,
        ..Default::default()
    }) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "procgate demo: PostgreSQL is up, its data in {} (removed on exit)",
        db.data_dir().display()
    );
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(demo(&args, &db.url()));
    drop(runtime);
    drop(db);
    match result {
        Ok(()) => {
            println!("\nprocgate demo: done; the gateway stopped and the database was removed.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: &DemoArgs, database_url: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e} (pass --listen 127.0.0.1:PORT)",
                args.listen
            )
        })?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let listen = address.to_string();
    let config =
        ServeConfig::parse_from(["--listen", listen.as_str()]).map_err(|e| e.to_string())?;
    let (stop, stopped) = oneshot::channel::<()>();
    let url = database_url.to_string();
    let gateway = tokio::spawn(async move {
        server::run(listener, config, &url, async {
            let _ = stopped.await;
        })
        .await
    });
    let server_url = format!("http://{address}");
    println!("procgate demo: the gateway listens on {server_url}\n");
    let mut client = connect(&ServerArgs {
        server: server_url.clone(),
        token: None,
        ca_cert: None,
    })
    .await?;

    // One signal listener for the whole demo: a Ctrl-C between the tour and
    // the --serve wait must not be lost.
    let shutdown = server::shutdown_signal();
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        toured = tour(&mut client) => toured,
        _ = &mut shutdown => Err("interrupted".to_string()),
    };
    if outcome.is_ok() && args.serve {
        println!(
            "\nprocgate is serving on {server_url}; Ctrl-C stops it and removes the database.\n\
             \nThe jobs dashboard: open {server_url}/ in a browser (no token needed here). Try:\n\
             \n  procgate call pkg_etl.sumar a=1.5 b=2.25\
             \n  procgate submit pkg_etl.proceso_largo p_fecha=2024-05-01 --watch\
             \n  procgate jobs\
             \n  npx -y @bufbuild/buf curl --protocol grpc --http2-prior-knowledge --list-methods {server_url}\n"
        );
        shutdown.await;
    }
    let _ = stop.send(());
    gateway
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    outcome
}

/// The tour: every step is a client command line and the outcome it must have.
async fn tour(client: &mut Client) -> Result<(), String> {
    step(
        client,
        "1. A synchronous call: exact decimals in, OUT parameters back",
        &["call", "pkg_etl.sumar", "a=12.50", "b=0.75"],
        Outcome::Done,
    )
    .await?;
    step(
        client,
        "2. A report returned as a cursor",
        &["call", "pkg_etl.reporte_ventas", "--returns", "cursor"],
        Outcome::Done,
    )
    .await?;

    heading("3. Three jobs in parallel, progress reported by the procedure itself");
    let mut ids = Vec::new();
    for (date, steps, pause) in [
        ("2024-05-01", "4", "500"),
        ("2024-05-02", "6", "400"),
        ("2024-05-03", "8", "300"),
    ] {
        let line = [
            "submit",
            "pkg_etl.proceso_largo",
            &format!("p_fecha={date}"),
            &format!("p_pasos={steps}"),
            &format!("p_pausa_ms={pause}"),
        ];
        ids.push(submit(client, &line).await?);
    }
    let mut watch = vec!["watch"];
    watch.extend(ids.iter().map(String::as_str));
    type_and_run(client, &watch, Outcome::Done).await?;

    heading("4. Cancelling a running job: its statement is interrupted in the database");
    let id = submit(
        client,
        &[
            "submit",
            "pkg_etl.proceso_largo",
            "p_fecha=2024-05-04",
            "p_pasos=100",
        ],
    )
    .await?;
    wait_running(client, &id).await?;
    type_and_run(client, &["cancel", &id], Outcome::Done).await?;
    type_and_run(client, &["watch", &id], Outcome::JobCancelled).await?;

    step(
        client,
        "5. A job that fails: the error and the database's own code",
        &["submit", "pkg_etl.validar_lote", "p_lote=-1", "--watch"],
        Outcome::JobFailed,
    )
    .await?;
    step(client, "6. Every job so far", &["jobs"], Outcome::Done).await?;
    Ok(())
}

fn heading(title: &str) {
    println!("\n── {title}");
}

async fn step(
    client: &mut Client,
    title: &str,
    words: &[&str],
    expected: Outcome,
) -> Result<(), String> {
    heading(title);
    type_and_run(client, words, expected).await
}

/// Prints the command line, runs it, and checks its outcome.
async fn type_and_run(
    client: &mut Client,
    words: &[&str],
    expected: Outcome,
) -> Result<(), String> {
    println!("$ procgate {}", words.join(" "));
    let command = parse_command(words).map_err(|e| e.to_string())?;
    let outcome = run_on(client, command).await;
    if outcome != expected {
        return Err(format!(
            "`procgate {}` ended {outcome:?}, expected {expected:?}",
            words.join(" ")
        ));
    }
    Ok(())
}

/// `procgate submit …` that also hands the new job's id to the tour.
async fn submit(client: &mut Client, words: &[&str]) -> Result<String, String> {
    println!("$ procgate {}", words.join(" "));
    let super::ClientCommand::Submit {
        call,
        request_id,
        retry,
        expire_after,
        ..
    } = parse_command(words).map_err(|e| e.to_string())?
    else {
        return Err("not a submit command".into());
    };
    let job = super::submit(client, &call, request_id, &retry, expire_after)
        .await
        .map_err(|s| super::render::status_line(&s))?;
    println!("{}", job.id);
    Ok(job.id)
}

/// Waits (on the job's own WatchJob stream) until it is RUNNING.
async fn wait_running(client: &mut Client, id: &str) -> Result<(), String> {
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            id: id.into(),
            since_revision: 0,
            ..Default::default()
        })
        .await
        .map_err(|s| super::render::status_line(&s))?
        .into_inner();
    while let Some(job) = stream
        .message()
        .await
        .map_err(|s| super::render::status_line(&s))?
    {
        if job.state == pb::JobState::Running as i32
            && job.progress >= crate::backend::INDETERMINATE_MAX
        {
            return Ok(());
        }
    }
    Err(format!("job {id} ended before it could be cancelled"))
}
