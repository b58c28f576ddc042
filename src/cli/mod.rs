//! The terminal client: `procgate call | submit | watch | jobs | job |
//! result | cancel | delete | describe | schedule`, talking gRPC to a
//! procgate server.
//!
//! Exit codes say how things went, so scripts can branch on them:
//! 0 done (a job COMPLETED), 1 the RPC failed, 2 bad command line,
//! 3 a job FAILED, 4 a job was CANCELLED. Errors print the gRPC code, the
//! message and the database's code on one line.

pub mod demo;
mod export;
mod params;
pub mod render;
mod schedule;
mod watch;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Request, Status};

use crate::proto::procedure_service_client::ProcedureServiceClient;
use crate::proto::{self as pb};
use render::{
    describe_text, job_json, job_text, jobs_table, outputs_text, signature_text, status_line,
    value_json,
};
use schedule::{RetryArgs, ScheduleCommand};

pub type Client = ProcedureServiceClient<InterceptedService<Channel, BearerToken>>;

/// Where the server is and how to prove who we are.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// The procgate server.
    #[arg(
        long,
        env = "PROCGATE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "PROCGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an https:// server: a PEM CA certificate to trust besides the
    /// public roots (a self-signed or private CA).
    #[arg(long, env = "PROCGATE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Run a procedure and wait for its outputs (ExecuteSync).
    Call {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        call: CallArgs,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
        /// Stream the call (ExecuteStream) and write its result set's rows,
        /// every one of them, to this CSV file as they arrive; the scalar
        /// outputs are printed as usual.
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// With --output: which result set to write (a cursor parameter's
        /// name); default the first one.
        #[arg(long, value_name = "NAME", requires = "output")]
        result_set: Option<String>,
    },
    /// Write a COMPLETED job's result set, every row, as it streams
    /// (ReadJobResult): JSON lines by default, CSV with --csv.
    Result {
        #[command(flatten)]
        server: ServerArgs,
        /// The job id.
        job: String,
        /// The result set: a cursor parameter's name; empty (the default)
        /// for a function's result.
        #[arg(default_value = "")]
        output: String,
        /// CSV with a header of column names (NULL is an empty field).
        #[arg(long)]
        csv: bool,
        /// Write to this file instead of standard output.
        #[arg(long = "output", value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// Start at this row (0-based), to resume a broken export.
        #[arg(long, default_value_t = 0)]
        start_row: u64,
    },
    /// Start a procedure as a background job (SubmitAsync).
    Submit {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        call: CallArgs,
        /// Follow the job until it ends.
        #[arg(long)]
        watch: bool,
        /// Idempotency key: the same id returns the job it first started.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        retry: RetryArgs,
        /// Fail the job (DEADLINE_EXCEEDED, EXPIRED) if it has not started
        /// this long after it was submitted: yesterday's batch must not run
        /// tomorrow.
        #[arg(long, value_name = "DURATION", value_parser = proto_duration)]
        expire_after: Option<std::time::Duration>,
    },
    /// Follow jobs live until they end (WatchJob).
    Watch {
        #[command(flatten)]
        server: ServerArgs,
        /// One or more job ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List jobs, newest first (ListJobs); with --watch, follow every
    /// change of the jobs that match, one line per event (WatchJobs).
    Jobs {
        #[command(flatten)]
        server: ServerArgs,
        /// Only these states, comma-separated: pending,running,completed,failed,cancelled.
        #[arg(long, value_delimiter = ',', ignore_case = true,
              value_parser = ["pending", "running", "completed", "failed", "cancelled"])]
        state: Vec<String>,
        /// Only this procedure.
        #[arg(long)]
        procedure: Option<String>,
        /// Only the jobs of this schedule (its id).
        #[arg(long)]
        schedule: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Follow the matching jobs live (until interrupted) instead of
        /// listing them.
        #[arg(long)]
        watch: bool,
        /// With --watch: resume after this revision (the one a SYNCED line
        /// showed) instead of starting with the live jobs.
        #[arg(long, requires = "watch")]
        since_revision: Option<u64>,
        /// Each job in full (params, outputs, messages), not only its
        /// state and timings.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one job in full (GetJob).
    Job {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job (CancelJob).
    Cancel {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
    /// Forget a job that ended (DeleteJob).
    Delete {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
    /// Show a procedure's parameters (DescribeProcedure).
    Describe {
        #[command(flatten)]
        server: ServerArgs,
        procedure: String,
        /// Which overload, by id (as `procedures` shows them).
        #[arg(long)]
        overload: Option<String>,
    },
    /// List the procedures and functions you may call, with their
    /// signatures (ListProcedures, every page).
    Procedures {
        #[command(flatten)]
        server: ServerArgs,
        /// Only this schema (or Oracle package).
        #[arg(long)]
        schema: Option<String>,
        /// Only names matching this glob (`report_*`, `pkg_etl.*`).
        #[arg(long, value_name = "GLOB")]
        like: Option<String>,
    },
    /// Submit a procedure on a cron expression, and manage those schedules.
    #[command(subcommand)]
    Schedule(Box<ScheduleCommand>),
}

impl ClientCommand {
    /// The server this command talks to.
    pub fn server(&self) -> &ServerArgs {
        match self {
            ClientCommand::Call { server, .. }
            | ClientCommand::Result { server, .. }
            | ClientCommand::Submit { server, .. }
            | ClientCommand::Watch { server, .. }
            | ClientCommand::Jobs { server, .. }
            | ClientCommand::Job { server, .. }
            | ClientCommand::Cancel { server, .. }
            | ClientCommand::Delete { server, .. }
            | ClientCommand::Describe { server, .. }
            | ClientCommand::Procedures { server, .. } => server,
            ClientCommand::Schedule(command) => command.server(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct CallArgs {
    /// The procedure: proc, schema.proc, pkg.proc, schema.pkg.proc.
    pub procedure: String,
    /// Parameters: name=value, name:TYPE=value, name:out:TYPE,
    /// name:inout:TYPE=value, name:null. TYPE: string, integer, number, float,
    /// boolean, date, timestamp, bytes (hex), clob, json, cursor.
    #[arg(value_parser = params::parse_param)]
    pub params: Vec<pb::Param>,
    /// Call it as a function returning this type (its value is the result).
    #[arg(long, value_name = "TYPE")]
    pub returns: Option<String>,
    /// Which overload, by id (`procgate procedures` shows them), when the
    /// parameters' names fit several.
    #[arg(long, value_name = "ID")]
    pub overload: Option<String>,
}

impl CallArgs {
    fn to_proto(&self) -> Result<pb::ProcedureCall, String> {
        let returns = match &self.returns {
            None => None,
            Some(name) => Some(
                crate::call::ValueType::from_name(name)
                    .ok_or_else(|| format!("--returns {name:?} is not a type"))?,
            ),
        };
        Ok(pb::ProcedureCall {
            procedure: self.procedure.clone(),
            params: self.params.clone(),
            returns: crate::api::convert::value_type_to_proto(returns) as i32,
            overload: self.overload.clone().unwrap_or_default(),
        })
    }
}

/// Adds `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub async fn connect(server: &ServerArgs) -> Result<Client, String> {
    let token = server
        .token
        .as_ref()
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .map_err(|_| "the token must be printable ASCII".to_string())?;
    let mut endpoint = Channel::from_shared(server.server.clone())
        .map_err(|e| format!("invalid --server {:?}: {e}", server.server))?;
    if server.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(path) = &server.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("invalid TLS settings: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach procgate at {}: {e}", server.server))?;
    Ok(
        ProcedureServiceClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(256 << 20),
    )
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    RpcFailed,
    JobFailed,
    JobCancelled,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> ExitCode {
        ExitCode::from(match outcome {
            Outcome::Done => 0,
            Outcome::RpcFailed => 1,
            Outcome::JobFailed => 3,
            Outcome::JobCancelled => 4,
        })
    }
}

/// Parses a client command line (`call pkg.proc a=1`), as the demo types it.
pub fn parse_command(words: &[&str]) -> Result<ClientCommand, clap::Error> {
    #[derive(clap::Parser)]
    #[command(name = "procgate")]
    struct Line {
        #[command(subcommand)]
        command: ClientCommand,
    }
    let words = std::iter::once("procgate").chain(words.iter().copied());
    <Line as clap::Parser>::try_parse_from(words).map(|line| line.command)
}

/// Runs one client command and says how it ended.
pub async fn run(command: ClientCommand) -> Outcome {
    let mut client = match connect(command.server()).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: UNAVAILABLE: {e}");
            return Outcome::RpcFailed;
        }
    };
    run_on(&mut client, command).await
}

/// Runs one client command on an open client.
pub async fn run_on(client: &mut Client, command: ClientCommand) -> Outcome {
    match execute(client, command).await {
        Ok(outcome) => outcome,
        Err(status) => {
            eprintln!("{}", status_line(&status));
            Outcome::RpcFailed
        }
    }
}

async fn execute(client: &mut Client, command: ClientCommand) -> Result<Outcome, Status> {
    match command {
        ClientCommand::Call {
            call,
            json,
            output: Some(path),
            result_set,
            ..
        } => {
            let call = call.to_proto().map_err(Status::invalid_argument)?;
            let parts = client
                .execute_stream(pb::ExecuteSyncRequest { call: Some(call) })
                .await?
                .into_inner();
            let file = create(&path)?;
            let (done, rows) =
                export::write_rows(parts, file, export::Format::Csv, result_set.as_deref()).await?;
            eprintln!("wrote {rows} rows to {}", path.display());
            if let Some(done) = done {
                print_call(&done, json);
            }
            Ok(Outcome::Done)
        }
        ClientCommand::Result {
            job,
            output,
            csv,
            file,
            start_row,
            ..
        } => {
            let parts = client
                .read_job_result(pb::ReadJobResultRequest {
                    job_id: job,
                    output: output.clone(),
                    start_row,
                })
                .await?
                .into_inner();
            let format = if csv {
                export::Format::Csv
            } else {
                export::Format::JsonLines
            };
            let written = match &file {
                Some(path) => export::write_rows(parts, create(path)?, format, Some(&output)).await,
                None => {
                    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
                    export::write_rows(parts, stdout, format, Some(&output)).await
                }
            };
            let (_, rows) = written?;
            if let Some(path) = file {
                eprintln!("wrote {rows} rows to {}", path.display());
            }
            Ok(Outcome::Done)
        }
        ClientCommand::Call { call, json, .. } => {
            let call = call.to_proto().map_err(Status::invalid_argument)?;
            let response = client
                .execute_sync(pb::ExecuteSyncRequest { call: Some(call) })
                .await?
                .into_inner();
            print_call(&response, json);
            Ok(Outcome::Done)
        }
        ClientCommand::Submit {
            call,
            watch,
            request_id,
            retry,
            expire_after,
            ..
        } => {
            let job = submit(client, &call, request_id, &retry, expire_after).await?;
            if !watch {
                println!("{}", job.id);
                return Ok(Outcome::Done);
            }
            follow_and_report(client, &[job.id]).await
        }
        ClientCommand::Watch { ids, .. } => follow_and_report(client, &ids).await,
        ClientCommand::Jobs {
            state,
            procedure,
            schedule,
            watch: true,
            since_revision,
            full,
            json,
            ..
        } => {
            let request = pb::WatchJobsRequest {
                states: parse_states(&state)?,
                procedure: procedure.unwrap_or_default(),
                since_revision: since_revision.unwrap_or_default(),
                view: view_of(full) as i32,
                schedule_id: schedule.unwrap_or_default(),
            };
            let mut events = client.watch_jobs(request).await?.into_inner();
            while let Some(event) = events.message().await? {
                if json {
                    println!("{}", render::event_json(&event));
                } else {
                    println!("{}", render::event_line(&event));
                }
            }
            Ok(Outcome::Done)
        }
        ClientCommand::Jobs {
            state,
            procedure,
            schedule,
            limit,
            full,
            json,
            ..
        } => {
            let filter = JobFilter {
                states: state,
                procedure,
                schedule,
            };
            let jobs = list(client, &filter, limit, view_of(full)).await?;
            if json {
                let all: Vec<_> = jobs.iter().map(job_json).collect();
                println!("{}", serde_json::to_string_pretty(&all).expect("JSON"));
            } else {
                println!("{}", jobs_table(&jobs));
            }
            Ok(Outcome::Done)
        }
        ClientCommand::Job { id, json, .. } => {
            let job = client
                .get_job(pb::GetJobRequest {
                    id,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&job_json(&job)).expect("JSON")
                );
            } else {
                print!("{}", job_text(&job));
            }
            Ok(Outcome::Done)
        }
        ClientCommand::Delete { id, .. } => {
            client
                .delete_job(pb::DeleteJobRequest { id: id.clone() })
                .await?;
            println!("{id} deleted");
            Ok(Outcome::Done)
        }
        ClientCommand::Cancel { id, .. } => {
            let job = client
                .cancel_job(pb::CancelJobRequest { id })
                .await?
                .into_inner();
            println!(
                "{} {}{}",
                job.id,
                render::state_name(job.state),
                if job.cancel_requested && job.state == pb::JobState::Running as i32 {
                    " (cancel requested)"
                } else {
                    ""
                }
            );
            Ok(Outcome::Done)
        }
        ClientCommand::Schedule(command) => schedule::execute(client, *command).await,
        ClientCommand::Procedures { schema, like, .. } => {
            let mut page_token = String::new();
            let mut shown = 0;
            loop {
                let page = client
                    .list_procedures(pb::ListProceduresRequest {
                        schema: schema.clone().unwrap_or_default(),
                        name_like: like.clone().unwrap_or_default(),
                        page_size: 500,
                        page_token,
                    })
                    .await?
                    .into_inner();
                for procedure in &page.procedures {
                    println!("{}", signature_text(procedure));
                }
                shown += page.procedures.len();
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if shown == 0 {
                eprintln!("no procedure you may call matches");
            }
            Ok(Outcome::Done)
        }
        ClientCommand::Describe {
            procedure,
            overload,
            ..
        } => {
            let description = client
                .describe_procedure(pb::DescribeProcedureRequest {
                    procedure,
                    overload: overload.unwrap_or_default(),
                })
                .await?
                .into_inner();
            println!("{}", describe_text(&description));
            Ok(Outcome::Done)
        }
    }
}

/// A duration of the command line (`90s`, `2h 30m`) that a protobuf
/// Duration can carry; the server decides whether it is too long.
pub fn proto_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    prost_types::Duration::try_from(duration)
        .map_err(|_| format!("{text} is longer than any duration procgate accepts"))?;
    Ok(duration)
}

/// A duration [`proto_duration`] accepted.
pub fn to_proto_duration(duration: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).expect("checked by proto_duration")
}

/// SubmitAsync of a command-line call.
pub async fn submit(
    client: &mut Client,
    call: &CallArgs,
    request_id: Option<String>,
    retry: &RetryArgs,
    expire_after: Option<std::time::Duration>,
) -> Result<pb::Job, Status> {
    let call = call.to_proto().map_err(Status::invalid_argument)?;
    Ok(client
        .submit_async(pb::SubmitAsyncRequest {
            call: Some(call),
            request_id: request_id.unwrap_or_default(),
            retry: retry.to_proto(),
            expire_after: expire_after.map(to_proto_duration),
        })
        .await?
        .into_inner())
}

/// A file to write rows to, buffered.
fn create(path: &std::path::Path) -> Result<std::io::BufWriter<std::fs::File>, Status> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| Status::invalid_argument(format!("cannot write {}: {e}", path.display())))
}

pub fn print_call(response: &pb::ExecuteSyncResponse, json: bool) {
    if json {
        let outputs: serde_json::Map<String, serde_json::Value> = response
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), value_json(Some(v))))
            .collect();
        let body = serde_json::json!({
            "outputs": outputs,
            "return_value": response.return_value.as_ref().map(|v| value_json(Some(v))),
            "implicit_results": response.implicit_results.iter().map(|s| value_json(Some(&pb::Value {
                kind: Some(pb::value::Kind::RowsValue(s.clone())),
            }))).collect::<Vec<_>>(),
            "messages": response.messages,
            "elapsed_seconds": response.elapsed.and_then(|d| std::time::Duration::try_from(d).ok()).map(|d| d.as_secs_f64()),
        });
        println!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
        return;
    }
    print!(
        "{}",
        outputs_text(
            &response.outputs,
            response.return_value.as_ref(),
            &response.implicit_results
        )
    );
    for message in &response.messages {
        println!("message: {message}");
    }
}

/// Watches jobs to their end, prints each one's outputs or error, and turns
/// the worst end into the outcome.
pub async fn follow_and_report(client: &Client, ids: &[String]) -> Result<Outcome, Status> {
    let ended = watch::follow(client, ids).await?;
    let mut outcome = Outcome::Done;
    for job in &ended {
        let state = pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified);
        println!(
            "{} {} {}",
            job.id,
            job.procedure,
            render::state_name(job.state)
        );
        if let Some(error) = &job.error {
            println!("error: {}", render::job_error_text(error));
        }
        print!(
            "{}",
            outputs_text(
                &job.outputs,
                job.return_value.as_ref(),
                &job.implicit_results
            )
        );
        outcome = match (state, outcome) {
            (pb::JobState::Failed, _) => Outcome::JobFailed,
            (pb::JobState::Cancelled, Outcome::Done) => Outcome::JobCancelled,
            (_, current) => current,
        };
    }
    Ok(outcome)
}

/// `--state` values as protobuf states.
fn parse_states(states: &[String]) -> Result<Vec<i32>, Status> {
    states
        .iter()
        .map(|s| {
            pb::JobState::from_str_name(&format!("JOB_STATE_{}", s.to_ascii_uppercase()))
                .map(|s| s as i32)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "--state {s:?} is not a job state \
                         (pending, running, completed, failed, cancelled)"
                    ))
                })
        })
        .collect()
}

fn view_of(full: bool) -> pb::JobView {
    if full {
        pb::JobView::Full
    } else {
        pb::JobView::Basic
    }
}

/// Which jobs `jobs` lists.
#[derive(Debug, Default)]
pub struct JobFilter {
    pub states: Vec<String>,
    pub procedure: Option<String>,
    pub schedule: Option<String>,
}

/// Up to `limit` jobs, following pages.
pub async fn list(
    client: &mut Client,
    filter: &JobFilter,
    limit: usize,
    view: pb::JobView,
) -> Result<Vec<pb::Job>, Status> {
    let states = parse_states(&filter.states)?;
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    while jobs.len() < limit {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                states: states.clone(),
                procedure: filter.procedure.clone().unwrap_or_default(),
                page_size: (limit - jobs.len()).min(1000) as u32,
                page_token,
                view: view as i32,
                schedule_id: filter.schedule.clone().unwrap_or_default(),
            })
            .await?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_no_protobuf_duration_can_carry_is_a_usage_error() {
        assert_eq!(
            proto_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        let error = proto_duration("300000000000y").unwrap_err();
        assert!(error.contains("longer than any duration"), "{error}");
        assert!(proto_duration("soon").is_err());
    }
}
