//! ExecuteStream against a real PostgreSQL through a real gRPC client:
//! results of any size arrive in bounded batches with no row cap, a client
//! that hangs up gets its statement cancelled, and a deadline or an error
//! part-way is the stream's status.

mod common;

use std::time::Duration;

use common::*;
use procgate::proto::execute_stream_response::Kind as Part;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, ValueType as T};
use tokio_stream::StreamExt;
use tonic::Code;

fn numbers(n: i64) -> pb::ProcedureCall {
    function("numbers", vec![p_in("n", Kind::IntegerValue(n))], T::Cursor)
}

async fn stream(
    client: &mut Client,
    call: pb::ProcedureCall,
) -> tonic::Streaming<pb::ExecuteStreamResponse> {
    client
        .execute_stream(pb::ExecuteSyncRequest { call: Some(call) })
        .await
        .unwrap()
        .into_inner()
}

/// A stream whose first message is its error.
async fn first_error(client: &mut Client, call: pb::ProcedureCall) -> tonic::Status {
    stream(client, call)
        .await
        .next()
        .await
        .unwrap()
        .unwrap_err()
}

fn integer(value: &pb::Value) -> i64 {
    match &value.kind {
        Some(Kind::IntegerValue(i)) => *i,
        other => panic!("an integer, not {other:?}"),
    }
}

/// Reads a stream to its end: the starts, the rows of each output, `done`.
struct Read {
    starts: Vec<pb::ResultSetStart>,
    batches: Vec<usize>,
    rows: Vec<pb::Row>,
    done: pb::ExecuteSyncResponse,
}

async fn read_all(mut parts: tonic::Streaming<pb::ExecuteStreamResponse>) -> Read {
    let (mut starts, mut batches, mut rows, mut done) = (Vec::new(), Vec::new(), Vec::new(), None);
    while let Some(part) = parts.next().await {
        assert!(done.is_none(), "nothing after done");
        match part.unwrap().kind.unwrap() {
            Part::Start(start) => starts.push(start),
            Part::Rows(batch) => {
                assert_eq!(starts.last().map(|s| &s.output), Some(&batch.output));
                batches.push(batch.rows.len());
                rows.extend(batch.rows);
            }
            Part::Done(last) => done = Some(last),
        }
    }
    Read {
        starts,
        batches,
        rows,
        done: done.expect("done comes last"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_set_streams_in_bounded_batches_with_no_row_cap() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let n = 300_000; // thirty times --max-cursor-rows
    let read = read_all(stream(&mut client, numbers(n)).await).await;
    assert_eq!(read.starts.len(), 1);
    let start = &read.starts[0];
    assert_eq!(start.output, "", "a function's result has no name");
    let names: Vec<_> = start.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["num", "label"]);
    assert_eq!(read.rows.len() as i64, n);
    assert!(
        read.batches.iter().all(|&b| b <= 10_000),
        "{:?}",
        read.batches
    );
    let sum: i64 = read.rows.iter().map(|r| integer(&r.values[0])).sum();
    assert_eq!(sum, n * (n + 1) / 2);
    assert!(read.done.return_value.is_none(), "the rows were streamed");
    // The sync call still caps and says so.
    let capped = execute(&mut client, numbers(n)).await.unwrap();
    let Some(Kind::RowsValue(set)) = capped.return_value.and_then(|v| v.kind) else {
        panic!("rows")
    };
    assert!(set.truncated);
    assert!(
        capped.messages.contains(
            &"the result truncated at 10000 rows (--max-cursor-rows): use ExecuteStream, or \
              SubmitAsync and ReadJobResult or Flight"
                .to_string()
        ),
        "{:?}",
        capped.messages
    );
    // ExecuteStream's own done says nothing of the kind: nothing was cut.
    assert!(read.done.messages.is_empty(), "{:?}", read.done.messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refcursor_output_streams_and_the_scalars_come_in_done() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let call = call(
        "open_numbers",
        vec![
            p_in("n", Kind::IntegerValue(25_000)),
            p_out("rows", T::Cursor),
        ],
    );
    let read = read_all(stream(&mut client, call).await).await;
    assert_eq!(read.starts.len(), 1);
    assert_eq!(read.starts[0].output, "rows");
    let names: Vec<_> = read.starts[0]
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["num", "half_more", "label"]);
    assert_eq!(read.rows.len(), 25_000);
    assert_eq!(integer(&read.rows[24_999].values[0]), 25_000);
    assert!(
        !read.done.outputs.contains_key("rows"),
        "streamed, not repeated"
    );
    // An empty cursor still announces its columns.
    let read = read_all(stream(&mut client, open_numbers(0)).await).await;
    assert_eq!(read.starts[0].columns.len(), 3);
    assert!(read.rows.is_empty());
    // And so does ExecuteSync's.
    let sync = execute(&mut client, open_numbers(0)).await.unwrap();
    let Some(Kind::RowsValue(empty)) = sync.outputs.get("rows").and_then(|v| v.kind.clone()) else {
        panic!("rows: {:?}", sync.outputs)
    };
    assert_eq!(empty.columns.len(), 3);
    assert!(empty.rows.is_empty());
}

fn open_numbers(n: i64) -> pb::ProcedureCall {
    call(
        "open_numbers",
        vec![p_in("n", Kind::IntegerValue(n)), p_out("rows", T::Cursor)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_part_way_gets_its_statement_cancelled() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let mut parts = stream(&mut client, numbers(200_000_000)).await;
    for _ in 0..3 {
        parts.next().await.unwrap().unwrap();
    }
    eventually(Duration::from_secs(5), "the statement running", || async {
        (gw.active_sessions("numbers").await >= 1).then_some(())
    })
    .await;
    drop(parts);
    eventually(
        Duration::from_secs(5),
        "the statement cancelled",
        || async { (gw.active_sessions("numbers").await == 0).then_some(()) },
    )
    .await;
    // The gateway serves on, on a clean session.
    let read = read_all(stream(&mut client, numbers(3)).await).await;
    assert_eq!(read.rows.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_or_an_error_part_way_is_the_streams_status() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let slow = function(
        "slow_numbers",
        vec![
            p_in("n", Kind::IntegerValue(1000)),
            p_in("pause", Kind::FloatValue(0.01)),
        ],
        T::Cursor,
    );
    let mut request = tonic::Request::new(pb::ExecuteSyncRequest { call: Some(slow) });
    request.set_timeout(Duration::from_millis(800));
    let started = std::time::Instant::now();
    let mut parts = client.execute_stream(request).await.unwrap().into_inner();
    let status = loop {
        match parts.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without its deadline"),
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let missing = client
        .execute_stream(pb::ExecuteSyncRequest {
            call: Some(numbers(-1)),
        })
        .await;
    // generate_series with a negative end is simply empty: a clean end.
    let read = read_all(missing.unwrap().into_inner()).await;
    assert!(read.rows.is_empty());
    let refused = first_error(&mut client, call("no_such_procedure", vec![])).await;
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cannot_stream_says_so_before_running_anything() {
    let gw = fake_gateway(Store::Memory, &[]).await;
    let mut client = gw.client().await;
    let refused = first_error(&mut client, call("fake.ok", vec![])).await;
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    assert!(refused.message().contains("nothing was run"), "{refused:?}");
}

/// A reader that stops reading does not make the gateway buffer the
/// result: the gateway stops reading too, and the database's session ends
/// up waiting to write to it (wait_event ClientWrite) with most rows unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_holds_the_database_back_not_the_gateway() {
    let gw = Gateway::start(&[]).await;
    let mut client = gw.client().await;
    let mut parts = stream(&mut client, numbers(50_000_000)).await;
    parts.next().await.unwrap().unwrap();
    eventually(
        Duration::from_secs(10),
        "the database waiting on the gateway",
        || async {
            let rows = gw
                .sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%numbers%' \
                     AND wait_event = 'ClientWrite' AND pid <> pg_backend_pid()",
                )
                .await;
            (rows[0].get::<_, i64>(0) == 1).then_some(())
        },
    )
    .await;
    // Still waiting a moment later: nothing drains it but the client.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.active_sessions("numbers").await, 1);
    let mut taken = 0;
    while taken < 3 {
        if let Some(Part::Rows(_)) = parts.next().await.unwrap().unwrap().kind {
            taken += 1;
        }
    }
}

/// A job's inline result keeps the cap, and says so where people look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_result_was_cut_says_so_in_its_messages() {
    let gw = Gateway::start(&["--max-cursor-rows", "100"]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, numbers(150)).await;
    let done = wait_state(&client, &job.id, pb::JobState::Completed).await;
    assert_eq!(
        done.messages,
        [
            "the result: the first 100 of its 150 rows are inline (--max-cursor-rows, \
             --max-inline-result-bytes): read every row with ReadJobResult or Flight"
        ]
    );
}

/// Streams whose clients stop reading hold their connections, but only
/// --max-streams of them: one more is refused, and ExecuteSync and the
/// health probe keep their connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_never_take_the_connections_of_sync_calls() {
    let gw = Gateway::start(&[
        "--max-streams",
        "2",
        "--pool-size",
        "1",
        "--sync-connections",
        "1",
        "--pool-timeout",
        "2s",
    ])
    .await;
    let mut client = gw.client().await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut parts = stream(&mut client, numbers(50_000_000)).await;
        parts.next().await.unwrap().unwrap();
        stalled.push(parts);
    }
    let refused = client
        .execute_stream(pb::ExecuteSyncRequest {
            call: Some(numbers(3)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("--max-streams"), "{refused:?}");
    for _ in 0..3 {
        let sum = execute(
            &mut client,
            call(
                "pkg_etl.sumar",
                vec![
                    p_in("a", Kind::NumberValue("1".into())),
                    p_in("b", Kind::NumberValue("2".into())),
                ],
            ),
        )
        .await;
        assert!(sum.is_ok(), "a sync call next to stalled streams: {sum:?}");
    }
    gw.health_becomes(tonic_health::pb::health_check_response::ServingStatus::Serving)
        .await;
    // One ends: its permit and its connection come back.
    drop(stalled.pop());
    eventually(Duration::from_secs(5), "a stream slot again", || async {
        let mut client = client.clone();
        let mut parts = client
            .execute_stream(pb::ExecuteSyncRequest {
                call: Some(numbers(3)),
            })
            .await
            .ok()?
            .into_inner();
        let mut rows = 0;
        while let Some(part) = parts.next().await {
            if let Part::Rows(batch) = part.ok()?.kind? {
                rows += batch.rows.len();
            }
        }
        (rows == 3).then_some(())
    })
    .await;
}
