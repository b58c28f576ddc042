//! The gRPC face of procgate: `procgate.v1.ProcedureService`.
//!
//! Each handler does the same four things: validate and convert the request
//! (`convert`), check the allowlist, call the engine (the backend for sync
//! calls and descriptions, the jobs service for jobs), and map any error to
//! a status through the one map in `status`. Handlers hold no state of their
//! own beyond shared handles.

mod catalog;
pub mod convert;
mod schedules;
pub mod status;
mod stream;
pub mod transport;
mod watch;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::{debug, info};

use crate::allow::AllowList;
use crate::auth::{Caller, caller_of};
use crate::backend::{Backend, SessionTag};
use crate::error::Error;
use crate::jobs::{JobState, Jobs, ListFilter, Submission, WatchFilter};
use crate::name::ProcedureName;
use crate::proto as pb;
use crate::proto::procedure_service_server::ProcedureService;
use crate::spool::Spool;
use crate::spool::read::{JobResult, Readers};
use crate::sync_call;
use crate::telemetry::metrics::{Metrics, Mode, ProcedureLabel};
use crate::telemetry::rpc::{RpcNotes, notes_of};
use convert::{
    View, call_from_proto, describe_call, duration_from_proto, job_to_proto, retry_from_proto,
    schedule_filter, sync_response, within,
};
use stream::ExecuteStream;

pub use watch::{JobEventStream, JobStream, Shape, job_events};

/// Shared handles the handlers work with.
pub struct ProcedureApi {
    pub backend: Arc<dyn Backend>,
    pub jobs: Jobs,
    pub allow: AllowList,
    pub max_messages: usize,
    /// The largest response sent (`--max-response-bytes`).
    pub max_response_bytes: usize,
    /// Log parameter values (`--log-params`); off by default.
    pub log_params: bool,
    /// One permit per ExecuteStream that may be open (`--max-streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    pub max_streams: usize,
    /// Where jobs' result rows past their inline part are kept.
    pub spool: Arc<dyn Spool>,
    pub readers: Readers,
    pub schedules: Arc<crate::schedules::Schedules>,
    pub metrics: Metrics,
}

impl ProcedureApi {
    /// The call of a request, checked; a call refused here is counted in
    /// the metrics under `<invalid>`, since its name was never resolved.
    fn accept_call(
        &self,
        call: Option<pb::ProcedureCall>,
        mode: Mode,
        caller: &Caller,
    ) -> Result<crate::call::ProcedureCall, Error> {
        let accepted = call_from_proto(call).and_then(|call| {
            self.allow.check(caller, &call.name)?;
            Ok(call)
        });
        match accepted {
            Ok(call) => {
                debug!(call = %describe_call(&call, self.log_params), "accepted");
                Ok(call)
            }
            Err(e) => {
                let code = status::code_of(&e);
                self.metrics
                    .call_ended(ProcedureLabel::invalid(), mode, code, Duration::ZERO);
                Err(e)
            }
        }
    }

    /// A job in the view asked for, if it fits in a response.
    fn job(&self, job: &crate::jobs::JobSnapshot, view: View) -> Result<pb::Job, Error> {
        within(job_to_proto(job, view), self.max_response_bytes, "the job")
    }

    /// The job SubmitAsync and CancelJob answer with: in full, unless that
    /// would pass what a gRPC client accepts by default, since the job was
    /// started (or cancelled) whatever the answer: then in the basic view.
    fn answer_job(&self, job: &crate::jobs::JobSnapshot) -> pb::Job {
        let full = job_to_proto(job, View::Full);
        if prost::Message::encoded_len(&full) <= DEFAULT_CLIENT_LIMIT.min(self.max_response_bytes) {
            full
        } else {
            job_to_proto(job, View::Basic)
        }
    }

    fn shape(&self, raw_view: i32, default: View) -> Result<Shape, Error> {
        Ok(Shape {
            view: View::from_proto(raw_view, default)?,
            max_bytes: self.max_response_bytes,
        })
    }
}

#[tonic::async_trait]
impl ProcedureService for ProcedureApi {
    async fn execute_sync(
        &self,
        request: Request<pb::ExecuteSyncRequest>,
    ) -> Result<Response<pb::ExecuteSyncResponse>, Status> {
        let deadline = grpc_timeout(request.metadata())?;
        let notes = notes_of(&request);
        let tag = sync_tag(&request);
        let caller = caller_of(&request);
        let call = noted(&notes, request.into_inner().call);
        let call = self.accept_call(call, Mode::Sync, &caller)?;
        let outcome = match sync_call::execute(
            self.backend.as_ref(),
            &call,
            deadline,
            self.max_messages,
            &self.metrics,
            &tag,
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                // The code and the database's code, never the message:
                // it may quote a parameter's value.
                info!(
                    procedure = %call.name,
                    session = %tag.action,
                    code = ?status::code_of(&e),
                    db_code = e.db_code().unwrap_or_default(),
                    "sync call failed"
                );
                return Err(e.into());
            }
        };
        info!(procedure = %call.name, session = %tag.action, elapsed = ?outcome.elapsed, "sync call completed");
        let response = sync_response(&outcome);
        // Checked here rather than left to tonic's encoder, so that the
        // caller learns that the work is done, not only that it failed.
        let size = prost::Message::encoded_len(&response);
        if size > self.max_response_bytes {
            return Err(Error::Exhausted(format!(
                "the procedure ran (what it did is done and committed), but its outputs take \
                 {size} bytes, over this gateway's --max-response-bytes of {}; do not simply \
                 retry: return less, or run it with SubmitAsync",
                self.max_response_bytes
            ))
            .into());
        }
        Ok(Response::new(response))
    }

    type ExecuteStreamStream = ExecuteStream;

    async fn execute_stream(
        &self,
        request: Request<pb::ExecuteSyncRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let deadline = grpc_timeout(request.metadata())?;
        let notes = notes_of(&request);
        let tag = sync_tag(&request);
        let caller = caller_of(&request);
        let call = noted(&notes, request.into_inner().call);
        let call = self.accept_call(call, Mode::Stream, &caller)?;
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Error::Exhausted(format!(
                "{} ExecuteStream calls are already open, this gateway's --max-streams; \
                 retry when one ends, or run the call with SubmitAsync",
                self.max_streams
            ))
        })?;
        Ok(Response::new(stream::execute_stream(
            self.backend.clone(),
            call,
            deadline,
            self.max_messages,
            permit,
            self.metrics.clone(),
            tag,
        )))
    }

    async fn submit_async(
        &self,
        request: Request<pb::SubmitAsyncRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller_of(&request);
        let notes = notes_of(&request);
        let mut request = request.into_inner();
        let call = noted(&notes, request.call.take());
        let call = self.accept_call(call, Mode::Job, &caller)?;
        let submission = Submission {
            request_id: (!request.request_id.is_empty()).then_some(request.request_id),
            retry: retry_from_proto(request.retry)?,
            trace_parent: crate::telemetry::trace::current_traceparent(),
            expire_after: duration_from_proto(
                request.expire_after,
                "expire_after",
                crate::jobs::plan::MAX_EXPIRE_AFTER,
            )?,
            ..Submission::default()
        };
        let job = self.jobs.submit(call, submission, &caller).await?;
        notes.job(&job.id.to_string());
        info!(job = %job.id, "job submitted");
        Ok(Response::new(self.answer_job(&job)))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller_of(&request);
        notes_of(&request).job(&request.get_ref().id);
        let request = request.into_inner();
        let view = View::from_proto(request.view, View::Full)?;
        let job = self.jobs.get(&request.id, &caller).await?;
        Ok(Response::new(self.job(&job, view)?))
    }

    type ReadJobResultStream = ExecuteStream;

    async fn read_job_result(
        &self,
        request: Request<pb::ReadJobResultRequest>,
    ) -> Result<Response<Self::ReadJobResultStream>, Status> {
        let caller = caller_of(&request);
        notes_of(&request).job(&request.get_ref().job_id);
        let request = request.into_inner();
        let job = self.jobs.get(&request.job_id, &caller).await?;
        let result = JobResult::open(
            &job,
            &request.output,
            request.start_row,
            &self.spool,
            &self.readers,
        )
        .await?;
        Ok(Response::new(stream::job_result(result)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let view = View::from_proto(request.view, View::Basic)?;
        let filter = ListFilter {
            states: job_states(&request.states)?,
            procedure: procedure_filter(request.procedure)?,
            schedule_id: schedule_filter(&request.schedule_id)?,
        };
        let page = self
            .jobs
            .list(
                &filter,
                request.page_size as usize,
                &request.page_token,
                &caller,
            )
            .await?;
        let response = pb::ListJobsResponse {
            jobs: page
                .jobs
                .iter()
                .map(|job| job_to_proto(job, view))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        };
        Ok(Response::new(within(
            response,
            self.max_response_bytes,
            "this page of jobs",
        )?))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = caller_of(&request);
        notes_of(&request).job(&request.get_ref().id);
        let request = request.into_inner();
        let shape = self.shape(request.view, View::Full)?;
        let since = (request.since_revision > 0).then_some(request.since_revision);
        let rx = self.jobs.watch(&request.id, &caller, since).await?;
        Ok(Response::new(JobStream::new(
            rx,
            request.since_revision,
            shape,
        )))
    }

    type WatchJobsStream = JobEventStream;

    async fn watch_jobs(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let shape = self.shape(request.view, View::Basic)?;
        let filter = WatchFilter {
            states: job_states(&request.states)?,
            procedure: procedure_filter(request.procedure)?,
            schedule_id: schedule_filter(&request.schedule_id)?,
            caller,
        };
        let since = (request.since_revision > 0).then_some(request.since_revision);
        let (subscription, first) = self.jobs.watch_jobs(filter, since).await?;
        Ok(Response::new(job_events(subscription, first, shape)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller_of(&request);
        notes_of(&request).job(&request.get_ref().id);
        let job = self.jobs.cancel(&request.into_inner().id, &caller).await?;
        info!(job = %job.id, state = job.state.name(), "cancel requested");
        Ok(Response::new(self.answer_job(&job)))
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let caller = caller_of(&request);
        notes_of(&request).job(&request.get_ref().id);
        let id = request.into_inner().id;
        self.jobs.delete(&id, &caller).await?;
        // At once, whoever still holds a copy of the job.
        if let Ok(id) = id.parse() {
            self.spool.forget(id);
        }
        Ok(Response::new(pb::DeleteJobResponse {}))
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let caller = caller_of(&request);
        let notes = notes_of(&request);
        let mut schedule = request.into_inner().schedule;
        if let Some(s) = schedule.as_mut() {
            s.call = noted(&notes, s.call.take());
        }
        let spec = schedules::spec_from_proto(schedule)?;
        let schedule = self.schedules.create(spec, &caller).await?;
        notes.schedule(&schedule.id.to_string());
        info!(schedule = %schedule.id, cron = %schedule.cron, "schedule created");
        Ok(Response::new(schedules::schedule_to_proto(&schedule)))
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let caller = caller_of(&request);
        notes_of(&request).schedule(&request.get_ref().id);
        let schedule = self
            .schedules
            .get(&request.into_inner().id, &caller)
            .await?;
        Ok(Response::new(schedules::schedule_to_proto(&schedule)))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let (page, next) = self
            .schedules
            .list(request.page_size as usize, &request.page_token, &caller)
            .await?;
        let response = pb::ListSchedulesResponse {
            schedules: page.iter().map(schedules::schedule_to_proto).collect(),
            next_page_token: next.unwrap_or_default(),
        };
        Ok(Response::new(within(
            response,
            self.max_response_bytes,
            "this page of schedules",
        )?))
    }

    async fn update_schedule(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let caller = caller_of(&request);
        let notes = notes_of(&request);
        let request = request.into_inner();
        let mask = schedules::mask_from_proto(request.update_mask)?;
        let id = request
            .schedule
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        notes.schedule(&id);
        let spec = schedules::spec_from_proto(request.schedule)?;
        let schedule = self.schedules.update(&id, spec, &mask, &caller).await?;
        info!(schedule = %schedule.id, paused = schedule.paused, "schedule updated");
        Ok(Response::new(schedules::schedule_to_proto(&schedule)))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let caller = caller_of(&request);
        notes_of(&request).schedule(&request.get_ref().id);
        let id = request.into_inner().id;
        self.schedules.delete(&id, &caller).await?;
        info!(schedule = %id, "schedule deleted");
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn list_procedures(
        &self,
        request: Request<pb::ListProceduresRequest>,
    ) -> Result<Response<pb::ListProceduresResponse>, Status> {
        let caller = caller_of(&request);
        let page = catalog::list(
            self.backend.as_ref(),
            &self.allow,
            &caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(page))
    }

    async fn describe_procedure(
        &self,
        request: Request<pb::DescribeProcedureRequest>,
    ) -> Result<Response<pb::ProcedureDescription>, Status> {
        let notes = notes_of(&request);
        let caller = caller_of(&request);
        let request = request.into_inner();
        notes.procedure(&request.procedure);
        let name = ProcedureName::parse(&request.procedure).map_err(Error::from)?;
        self.allow.check(&caller, &name)?;
        let overload = convert::overload_from_proto(request.overload)?;
        let description = self.backend.describe(&name, overload.as_deref()).await?;
        Ok(Response::new(convert::description_to_proto(&description)))
    }
}

/// The session tag of a sync call: its trace id when it is traced, else a
/// short random id; the call's log lines carry it too.
fn sync_tag<T>(request: &Request<T>) -> SessionTag {
    let id = crate::telemetry::trace::current_trace_id()
        .unwrap_or_else(|| format!("{:08x}", fastrand::u32(..)));
    SessionTag::sync(&id, caller_of(request).name)
}

/// The call, after noting the procedure it names for the RPC's audit event.
fn noted(notes: &RpcNotes, call: Option<pb::ProcedureCall>) -> Option<pb::ProcedureCall> {
    if let Some(call) = &call {
        notes.procedure(&call.procedure);
    }
    call
}

/// The largest message a gRPC client receives unless told otherwise.
const DEFAULT_CLIENT_LIMIT: usize = 4 << 20;

/// The states a ListJobs or WatchJobs request filters on (UNSPECIFIED
/// stands for none).
fn job_states(raw: &[i32]) -> Result<HashSet<JobState>, Error> {
    raw.iter()
        .filter_map(|raw| convert::job_state_from_proto(*raw).transpose())
        .collect()
}

/// A ListJobs or WatchJobs procedure filter (empty: every procedure). It is
/// compared with the names as submitted, so one longer than any valid name
/// (three parts of 128 characters, quoted) can match nothing and is refused
/// rather than kept by every stream that asks for it.
fn procedure_filter(procedure: String) -> Result<Option<String>, Error> {
    const LONGEST_NAME: usize = 3 * (2 * crate::name::MAX_IDENTIFIER_LEN + 2) + 2;
    if procedure.chars().count() > LONGEST_NAME {
        return Err(Error::InvalidArgument(format!(
            "the procedure filter is {} characters long; a procedure name has at most {LONGEST_NAME}",
            procedure.chars().count()
        )));
    }
    if procedure.contains('\0') {
        return Err(Error::InvalidArgument(
            "the procedure filter contains a NUL character, which no procedure name holds".into(),
        ));
    }
    Ok((!procedure.is_empty()).then_some(procedure))
}

/// The caller's deadline, from the `grpc-timeout` header: 1 to 8 ASCII
/// digits and a unit (H M S m u n), as the gRPC spec writes it. Anything
/// else is refused rather than guessed at: a caller whose deadline cannot
/// be read would otherwise run without one.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Result<Option<Duration>, Error> {
    let Some(raw) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let malformed = || {
        Error::InvalidArgument(format!(
            "the grpc-timeout header {} is malformed: the gRPC spec allows 1 to 8 digits \
             and a unit H, M, S, m, u or n, such as 1500m or 30S",
            crate::name::printable(&String::from_utf8_lossy(raw.as_bytes()))
        ))
    };
    let value = raw.to_str().map_err(|_| malformed())?;
    let Some((digits, unit)) = value.split_at_checked(value.len().saturating_sub(1)) else {
        return Err(malformed());
    };
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let amount: u64 = digits.parse().map_err(|_| malformed())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(malformed()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    #[test]
    fn reads_grpc_timeouts() {
        let parse = |v: &'static str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(parse("1500m"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(parse("2S"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse("1H"), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(
            parse("99999999H"),
            Ok(Some(Duration::from_secs(99_999_999 * 3600)))
        );
        assert_eq!(grpc_timeout(&MetadataMap::new()), Ok(None));
        for bad in [
            "x",
            "10q",
            "S",
            "",
            "9999999999999999999S",
            "123456789m",
            "-5S",
            "+5S",
            "1.5S",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("grpc-timeout"), "{bad}: {err}");
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}");
        }
    }
}
