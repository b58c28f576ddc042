//! Arrow Flight against a real gateway and PostgreSQL, with arrow-flight's
//! own client: a job's whole result as record batches (DoGet), its schema
//! and row count (GetFlightInfo), the same tokens and ownership as GetJob,
//! and precise errors for everything else.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use common::*;
use futures_util::TryStreamExt;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, ValueType as T};
use tonic::Code;

fn numbers(n: i64) -> pb::ProcedureCall {
    function("numbers", vec![p_in("n", Kind::IntegerValue(n))], T::Cursor)
}

fn code_of(error: FlightError) -> (Code, String) {
    match error {
        FlightError::Tonic(status) => (status.code(), status.message().to_string()),
        other => panic!("a status, not {other:?}"),
    }
}

async fn flight_client(gw: &Gateway, token: Option<&str>) -> FlightClient {
    let mut client = FlightClient::new(gw.channel().await);
    if let Some(token) = token {
        client
            .add_header("authorization", &format!("Bearer {token}"))
            .unwrap();
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_get_streams_a_jobs_whole_result_as_record_batches() {
    let (_dir, path) = token_file(TOKENS);
    let gw = Gateway::start(&["--token-file", &path, "--max-cursor-rows", "1000"]).await;
    let alice = "alice-secret-1";
    let mut grpc = gw.client().await;
    let n = 50_000;
    let job = grpc
        .submit_async(as_user(
            pb::SubmitAsyncRequest {
                call: Some(numbers(n)),
                request_id: String::new(),
                ..Default::default()
            },
            alice,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut flight = flight_client(&gw, Some(alice)).await;
    let channel = gw.channel().await;
    let info = eventually(
        std::time::Duration::from_secs(30),
        "the job completes",
        || {
            let mut flight = FlightClient::new(channel.clone());
            let descriptor = FlightDescriptor::new_path(vec![job.id.clone(), String::new()]);
            async move {
                flight
                    .add_header("authorization", &format!("Bearer {alice}"))
                    .unwrap();
                flight.get_flight_info(descriptor).await.ok()
            }
        },
    )
    .await;
    assert_eq!(info.total_records, n);
    let schema = info.clone().try_decode_schema().unwrap();
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(fields, ["num:Int64", "label:Utf8"]);
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert_eq!(ticket.ticket, format!("{}/", job.id).as_bytes());

    let batches: Vec<_> = flight
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, n as usize);
    let sum: i64 = batches
        .iter()
        .map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>()
        })
        .sum();
    assert_eq!(sum, n * (n + 1) / 2);
    assert_eq!(batches[0].column(1).as_string::<i32>().value(0), "row 1");

    // The same tokens and ownership as GetJob.
    let ticket = || Ticket::new(format!("{}/", job.id));
    let mut bob = flight_client(&gw, Some("bob-secret-22")).await;
    assert_eq!(
        code_of(bob.do_get(ticket()).await.unwrap_err()).0,
        Code::NotFound
    );
    let mut nobody = flight_client(&gw, None).await;
    assert_eq!(
        code_of(nobody.do_get(ticket()).await.unwrap_err()).0,
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_says_what_is_wrong() {
    let gw = Gateway::start(&[]).await;
    let mut grpc = gw.client().await;
    let mut flight = flight_client(&gw, None).await;
    let (code, message) = code_of(flight.do_get(Ticket::new("no-slash")).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("<job_id>/<output>"), "{message}");
    let (code, _) = code_of(
        flight
            .do_get(Ticket::new(format!("{}/cur", uuid::Uuid::new_v4())))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::NotFound);

    let running = submit(
        &mut grpc,
        call("nap", vec![p_in("seconds", Kind::FloatValue(30.0))]),
    )
    .await;
    let (code, message) = code_of(
        flight
            .do_get(Ticket::new(format!("{}/", running.id)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("COMPLETED"), "{message}");

    let done = submit(&mut grpc, numbers(3)).await;
    wait_state(&grpc, &done.id, pb::JobState::Completed).await;
    let (code, message) = code_of(
        flight
            .get_flight_info(FlightDescriptor::new_path(vec![
                done.id.clone(),
                "cur".into(),
            ]))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::NotFound);
    assert!(message.contains("the function's result"), "{message}");
    let (code, _) = code_of(
        flight
            .get_flight_info(FlightDescriptor::new_cmd("SELECT 1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Code::InvalidArgument);
    let (code, _) = code_of(flight.list_actions().await.err().unwrap());
    assert_eq!(code, Code::Unimplemented);
}
