//! Arrow Flight (`arrow.flight.protocol.FlightService`) for data tools: a
//! COMPLETED job's result set as Arrow record batches, on the same port and
//! with the same tokens as ProcedureService.
//!
//! `DoGet` takes the ticket `<job_id>/<output>` (split at its first `/`;
//! the output is a cursor parameter's name, empty for a function's
//! result) and `GetFlightInfo` the path `[job_id, output]`; both read the
//! job as GetJob does (another owner's job is NOT_FOUND) and its rows as
//! ReadJobResult does, one batch at a time as the client takes them. The
//! other Flight RPCs are UNIMPLEMENTED. pyarrow, polars and DuckDB then read
//! a report in one line:
//! `pyarrow.flight.connect(url).do_get(Ticket(b"<id>/cur")).read_all()`.

mod arrow;

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::caller_of;
use crate::error::Error;
use crate::jobs::Jobs;
use crate::spool::Spool;
use crate::spool::read::{self, JobResult, Readers};
use crate::telemetry::rpc::notes_of;

pub use arrow::schema_of;

/// The Flight service's shared handles.
pub struct FlightApi {
    pub jobs: Jobs,
    pub spool: Arc<dyn Spool>,
    pub readers: Readers,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `<job_id>/<output>`, split at the first `/`.
fn parse_ticket(ticket: &[u8]) -> Result<(String, String), Error> {
    let text = std::str::from_utf8(ticket)
        .map_err(|_| Error::InvalidArgument("a ticket is <job_id>/<output> in UTF-8".into()))?;
    let (job, output) = text.split_once('/').ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the ticket {} has no '/': a ticket is <job_id>/<output> (the output is a cursor \
             parameter's name, empty for a function's result)",
            crate::name::printable(text)
        ))
    })?;
    Ok((job.to_string(), output.to_string()))
}

/// `[job_id, output]`.
fn parse_descriptor(descriptor: &FlightDescriptor) -> Result<(String, String), Error> {
    match (
        DescriptorType::try_from(descriptor.r#type),
        descriptor.path.as_slice(),
    ) {
        (Ok(DescriptorType::Path), [job, output]) => Ok((job.clone(), output.clone())),
        _ => Err(Error::InvalidArgument(
            "a flight descriptor here is a PATH of two parts: [job_id, output] (the output is a \
             cursor parameter's name, empty for a function's result)"
                .into(),
        )),
    }
}

fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not offered: procgate serves a COMPLETED job's result sets with DoGet \
         (ticket <job_id>/<output>) and GetFlightInfo (path [job_id, output])"
    ))
}

#[tonic::async_trait]
impl FlightService for FlightApi {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller_of(&request);
        let notes = notes_of(&request);
        let descriptor = request.into_inner();
        let (id, output) = parse_descriptor(&descriptor)?;
        notes.job(&id);
        let job = self.jobs.get(&id, &caller).await?;
        let set = read::find(&job, &output)?;
        let schema = schema_of(&set.columns);
        let ticket = Ticket::new(format!("{id}/{output}"));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("encoding the schema failed: {e}")))?
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_total_records(set.total_rows().min(i64::MAX as u64) as i64)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let caller = caller_of(&request);
        let notes = notes_of(&request);
        let (id, output) = parse_ticket(&request.into_inner().ticket)?;
        notes.job(&id);
        let job = self.jobs.get(&id, &caller).await?;
        let result = JobResult::open(&job, &output, 0, &self.spool, &self.readers).await?;
        let schema = Arc::new(schema_of(&result.columns));
        let batches = futures_util::stream::unfold(Some(result), {
            let schema = schema.clone();
            move |reading| {
                let schema = schema.clone();
                async move {
                    let mut result = reading?;
                    match result.next_batch().await {
                        Ok(Some(rows)) => {
                            let batch = arrow::record_batch(&schema, &rows)
                                .map_err(|e| FlightError::Tonic(Box::new(e.into())));
                            Some((batch, Some(result)))
                        }
                        Ok(None) => None,
                        Err(e) => Some((Err(FlightError::Tonic(Box::new(e.into()))), None)),
                    }
                }
            }
        });
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map(|data| data.map_err(Status::from));
        Ok(Response::new(Box::pin(data)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(unimplemented(
            "Handshake (send the bearer token in `authorization` instead)",
        ))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(unimplemented("ListFlights (list jobs with ListJobs)"))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(unimplemented("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(unimplemented("GetSchema (GetFlightInfo gives the schema)"))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(unimplemented("DoPut"))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(unimplemented("DoExchange"))
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(unimplemented("DoAction"))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(unimplemented("ListActions"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_split_at_their_first_slash() {
        let id = "0b5f6b1e-8d6a-4f4e-9d39-6a1f0f7b2c11";
        assert_eq!(
            parse_ticket(format!("{id}/cur").as_bytes()).unwrap(),
            (id.to_string(), "cur".to_string())
        );
        assert_eq!(
            parse_ticket(format!("{id}/").as_bytes()).unwrap().1,
            "",
            "a function's result"
        );
        assert_eq!(parse_ticket(b"j/a/b").unwrap(), ("j".into(), "a/b".into()));
        assert!(matches!(
            parse_ticket(b"nothing"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            parse_ticket(&[0xff, b'/']),
            Err(Error::InvalidArgument(_))
        ));
        let path = FlightDescriptor::new_path(vec![id.into(), "cur".into()]);
        assert_eq!(parse_descriptor(&path).unwrap().1, "cur");
        let cmd = FlightDescriptor::new_cmd("select 1");
        assert!(parse_descriptor(&cmd).is_err());
    }
}
