//! Hostile input, table-driven: more than sixty bad requests across every
//! RPC. Each must get its precise status and a message naming the culprit;
//! those that need no catalog lookup must not reach the database (counted in
//! pg_stat_statements); none may crash the server or echo a secret.

mod common;

use bytes::{Buf, BufMut};
use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use prost::Message;
use prost_types::Timestamp;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// One bad request and what it must get.
struct Case {
    what: &'static str,
    rpc: Rpc,
    code: Code,
    /// A piece of the message that names the culprit.
    culprit: &'static str,
    /// Whether refusing it needs the catalog (a database round-trip).
    needs_database: bool,
}

enum Rpc {
    Execute(pb::ExecuteSyncRequest),
    Submit(pb::SubmitAsyncRequest),
    Get(String),
    Watch(String),
    Cancel(String),
    Delete(String),
    List(pb::ListJobsRequest),
    Describe(String),
    /// Raw bytes to ExecuteSync: not a valid message at all.
    Raw(Vec<u8>),
}

fn sync(procedure: &str, params: Vec<pb::Param>) -> Rpc {
    Rpc::Execute(pb::ExecuteSyncRequest {
        call: Some(call(procedure, params)),
    })
}

fn typed(name: &str, value_type: pb::ValueType, kind: Kind) -> pb::Param {
    pb::Param {
        r#type: value_type as i32,
        ..p_in(name, kind)
    }
}

fn case(what: &'static str, rpc: Rpc, code: Code, culprit: &'static str) -> Case {
    Case {
        what,
        rpc,
        code,
        culprit,
        needs_database: false,
    }
}

fn needing_database(mut case: Case) -> Case {
    case.needs_database = true;
    case
}

/// An ExecuteSync request whose marker string is replaced by invalid UTF-8.
fn invalid_utf8(call: pb::ProcedureCall) -> Vec<u8> {
    let mut bytes = pb::ExecuteSyncRequest { call: Some(call) }.encode_to_vec();
    let marker = b"ZZZZ";
    let start = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the marker is in the message");
    bytes[start..start + 4].copy_from_slice(&[0xFF, 0xFE, 0xC0, 0x80]);
    bytes
}

fn cases() -> Vec<Case> {
    use Code::*;
    use pb::ValueType as T;
    let one = || p_in("a", Kind::IntegerValue(1));
    let ten_kb = "p".repeat(10_000);
    let ten_kb: &'static str = Box::leak(ten_kb.into_boxed_str());
    let uuid = "3f0c1b1e-8a4e-4c1e-9f57-6f2b8f3d2a10";
    let mut cases = vec![
        case(
            "no call at all",
            Rpc::Execute(pb::ExecuteSyncRequest { call: None }),
            InvalidArgument,
            "`call`",
        ),
        case(
            "no call in SubmitAsync",
            Rpc::Submit(pb::SubmitAsyncRequest::default()),
            InvalidArgument,
            "`call`",
        ),
    ];
    // Procedure names, through ExecuteSync, SubmitAsync and DescribeProcedure.
    let names: [(&'static str, &'static str); 16] = [
        ("statement injection", "x; drop table t"),
        (
            "injection after a valid name",
            "pkg_etl.sumar; DROP TABLE pkg_etl.ventas",
        ),
        ("four parts", "a.b.c.d"),
        ("empty", ""),
        ("empty part", "pkg_etl..sumar"),
        ("parentheses", "pkg_etl.sumar()"),
        ("comment", "pkg_etl.sumar--"),
        ("unterminated quote", "\"pkg_etl"),
        ("quote inside quotes", "\"a\"\"b\""),
        ("NUL", "pkg\0etl.sumar"),
        ("NUL in quotes", "\"pkg\0\".sumar"),
        ("tab", "pkg\tetl.sumar"),
        ("newline in quotes", "\"pkg\netl\".sumar"),
        ("non-ASCII", "pkg_etl.sümar"),
        ("leading digit", "1pkg.sumar"),
        ("10 kB", ten_kb),
    ];
    for (what, name) in names {
        cases.push(case(
            what,
            sync(name, vec![one()]),
            InvalidArgument,
            "procedure name",
        ));
        cases.push(case(
            what,
            Rpc::Submit(pb::SubmitAsyncRequest {
                call: Some(call(name, vec![one()])),
                request_id: String::new(),
                ..Default::default()
            }),
            InvalidArgument,
            "procedure name",
        ));
        cases.push(case(
            what,
            Rpc::Describe(name.into()),
            InvalidArgument,
            "procedure name",
        ));
    }
    let sumar = "pkg_etl.sumar";
    cases.extend([
        case(
            "duplicate parameter",
            sync(sumar, vec![one(), p_in("A", Kind::IntegerValue(2))]),
            InvalidArgument,
            "parameter A",
        ),
        case(
            "OUT with a value",
            sync(
                sumar,
                vec![pb::Param {
                    direction: pb::Direction::Out as i32,
                    ..one()
                }],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "IN without a value",
            sync(
                sumar,
                vec![pb::Param {
                    value: None,
                    ..one()
                }],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "type does not match the value",
            sync(sumar, vec![typed("a", T::Integer, Kind::BoolValue(true))]),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "number text that is not a number",
            sync(sumar, vec![p_in("a", Kind::NumberValue("12,5".into()))]),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "typed string that is not an integer",
            sync(
                sumar,
                vec![typed("a", T::Integer, Kind::StringValue("12x".into()))],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "impossible date",
            sync(sumar, vec![p_in("a", Kind::DateValue("2024-13-40".into()))]),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "year 10000",
            sync(
                sumar,
                vec![p_in("a", Kind::DateValue("10000-01-01".into()))],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "timestamp nanos out of range",
            sync(
                sumar,
                vec![p_in(
                    "a",
                    Kind::TimestampValue(Timestamp {
                        seconds: 0,
                        nanos: 2_000_000_000,
                    }),
                )],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "timestamp in year 20000",
            sync(
                sumar,
                vec![p_in(
                    "a",
                    Kind::TimestampValue(Timestamp {
                        seconds: 568_971_820_800,
                        nanos: 0,
                    }),
                )],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "NUL in a string",
            sync(sumar, vec![p_in("a", Kind::StringValue("a\0b".into()))]),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "JSON that is not JSON",
            sync(sumar, vec![p_in("a", Kind::JsonValue("{\"a\":".into()))]),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "a cursor as input",
            sync(
                sumar,
                vec![typed("a", T::Cursor, Kind::StringValue("x".into()))],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "rows as input",
            sync(
                sumar,
                vec![p_in("a", Kind::RowsValue(pb::ResultSet::default()))],
            ),
            InvalidArgument,
            "parameter a",
        ),
        case(
            "unknown direction",
            sync(
                sumar,
                vec![pb::Param {
                    direction: 9,
                    ..one()
                }],
            ),
            InvalidArgument,
            "direction",
        ),
        case(
            "unknown value type",
            sync(
                sumar,
                vec![pb::Param {
                    r#type: 99,
                    ..one()
                }],
            ),
            InvalidArgument,
            "value type",
        ),
        case(
            "unknown returns type",
            Rpc::Execute(pb::ExecuteSyncRequest {
                call: Some(pb::ProcedureCall {
                    returns: 77,
                    ..call(sumar, vec![])
                }),
            }),
            InvalidArgument,
            "returns",
        ),
        case(
            "parameter name injection",
            sync(sumar, vec![p_in("a; drop table t", Kind::IntegerValue(1))]),
            InvalidArgument,
            "parameter name",
        ),
        case(
            "empty parameter name",
            sync(sumar, vec![p_in("", Kind::IntegerValue(1))]),
            InvalidArgument,
            "parameter name",
        ),
        case(
            "dotted parameter name",
            sync(sumar, vec![p_in("a.b", Kind::IntegerValue(1))]),
            InvalidArgument,
            "parameter name",
        ),
        case(
            "10,000 parameters",
            sync(
                sumar,
                (0..10_000)
                    .map(|i| p_in(&format!("p{i}"), Kind::IntegerValue(i)))
                    .collect(),
            ),
            InvalidArgument,
            "parameters",
        ),
        case(
            "invalid UTF-8 in the procedure name",
            Rpc::Raw(invalid_utf8(call("ZZZZ", vec![]))),
            InvalidArgument,
            "decode",
        ),
        case(
            "invalid UTF-8 in a string value",
            Rpc::Raw(invalid_utf8(call(
                sumar,
                vec![p_in("a", Kind::StringValue("ZZZZ".into()))],
            ))),
            InvalidArgument,
            "decode",
        ),
        case(
            "bytes that are not protobuf",
            Rpc::Raw(vec![0xFF; 64]),
            InvalidArgument,
            "decode",
        ),
        case(
            "a 50 MB value",
            sync(
                sumar,
                vec![p_in("a", Kind::StringValue("x".repeat(50 << 20)))],
            ),
            ResourceExhausted,
            "too large",
        ),
        case(
            "request_id over 128 characters",
            Rpc::Submit(pb::SubmitAsyncRequest {
                call: Some(call(sumar, vec![one()])),
                request_id: "r".repeat(129),
                ..Default::default()
            }),
            InvalidArgument,
            "request_id",
        ),
        needing_database(case(
            "unknown parameter",
            sync(sumar, vec![one(), p_in("zz", Kind::IntegerValue(1))]),
            InvalidArgument,
            "no parameter zz",
        )),
        needing_database(case(
            "missing required parameter",
            sync(sumar, vec![one()]),
            InvalidArgument,
            "missing parameter b",
        )),
        needing_database(case(
            "integer out of range for smallint",
            sync(
                "narrow",
                vec![
                    p_in("small", Kind::IntegerValue(70_000)),
                    p_in("medium", Kind::IntegerValue(1)),
                ],
            ),
            InvalidArgument,
            "parameter small",
        )),
        needing_database(case(
            "OUT parameter sent as IN",
            sync(
                sumar,
                vec![
                    one(),
                    p_in("b", Kind::IntegerValue(1)),
                    p_in("total", Kind::IntegerValue(1)),
                ],
            ),
            InvalidArgument,
            "parameter total",
        )),
        needing_database(case(
            "unknown procedure",
            sync("pkg_etl.nope", vec![]),
            NotFound,
            "pkg_etl.nope",
        )),
        needing_database(case(
            "unknown procedure described",
            Rpc::Describe("pkg_etl.nope".into()),
            NotFound,
            "pkg_etl.nope",
        )),
    ]);
    // Job ids, through every RPC that takes one.
    let ids: [(&'static str, &'static str, Code, &'static str); 4] = [
        ("empty id", "", InvalidArgument, "job id"),
        ("malformed id", "not-a-uuid'; --", InvalidArgument, "job id"),
        ("10 kB id", ten_kb, InvalidArgument, "job id"),
        ("unknown id", uuid, NotFound, uuid),
    ];
    for (what, id, code, culprit) in ids {
        cases.push(case(what, Rpc::Get(id.into()), code, culprit));
        cases.push(case(what, Rpc::Watch(id.into()), code, culprit));
        cases.push(case(what, Rpc::Cancel(id.into()), code, culprit));
        cases.push(case(what, Rpc::Delete(id.into()), code, culprit));
    }
    cases.extend([
        case(
            "bad page token",
            Rpc::List(pb::ListJobsRequest {
                page_token: "xyz".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "page_token",
        ),
        case(
            "forged page token",
            Rpc::List(pb::ListJobsRequest {
                page_token: "before:zz".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "page_token",
        ),
        case(
            "unknown job state",
            Rpc::List(pb::ListJobsRequest {
                states: vec![42],
                ..Default::default()
            }),
            InvalidArgument,
            "job state",
        ),
    ]);
    cases
}

async fn send(client: &mut Client, channel: &Channel, rpc: Rpc) -> Result<(), tonic::Status> {
    match rpc {
        Rpc::Execute(r) => client.execute_sync(r).await.map(drop),
        Rpc::Submit(r) => client.submit_async(r).await.map(drop),
        Rpc::Get(id) => client
            .get_job(pb::GetJobRequest {
                id,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::Watch(id) => client
            .watch_job(pb::WatchJobRequest {
                id,
                since_revision: 0,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::Cancel(id) => client
            .cancel_job(pb::CancelJobRequest { id })
            .await
            .map(drop),
        Rpc::Delete(id) => client
            .delete_job(pb::DeleteJobRequest { id })
            .await
            .map(drop),
        Rpc::List(r) => client.list_jobs(r).await.map(drop),
        Rpc::Describe(procedure) => client
            .describe_procedure(pb::DescribeProcedureRequest {
                procedure,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::Raw(bytes) => {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let path =
                http::uri::PathAndQuery::from_static("/procgate.v1.ProcedureService/ExecuteSync");
            grpc.unary(tonic::Request::new(bytes), path, RawCodec)
                .await
                .map(drop)
        }
    }
}

async fn statements_run(gw: &Gateway) -> i64 {
    gw.sql(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
          WHERE query <> 'SELECT $1' AND query NOT LIKE '%pg_stat_%'",
    )
    .await[0]
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_status_and_names_its_culprit() {
    let gw = Gateway::start(&[]).await;
    let channel = gw.channel().await;
    let mut client = Client::new(channel.clone()).max_decoding_message_size(64 << 20);
    let password = password_of(&gw.db_url);
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());

    let (local, database): (Vec<Case>, Vec<Case>) =
        cases.into_iter().partition(|c| !c.needs_database);
    let before = statements_run(&gw).await;
    for case in local {
        check(&mut client, &channel, case, &password).await;
    }
    assert_eq!(
        statements_run(&gw).await,
        before,
        "a request refused before the database reached it"
    );
    for case in database {
        check(&mut client, &channel, case, &password).await;
    }

    // Still standing: a good call works.
    let ok = execute(
        &mut client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(1)),
                p_in("b", Kind::IntegerValue(2)),
            ],
        ),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    // Paging edge cases are not errors: 0 means the default, huge is capped.
    for page_size in [0, u32::MAX] {
        client
            .list_jobs(pb::ListJobsRequest {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

async fn check(client: &mut Client, channel: &Channel, case: Case, password: &str) {
    let status = send(client, channel, case.rpc).await.expect_err(case.what);
    assert_eq!(status.code(), case.code, "{}: {status:?}", case.what);
    assert!(
        status.message().contains(case.culprit),
        "{}: {:?} does not name {:?}",
        case.what,
        status.message(),
        case.culprit
    );
    assert!(status.message().len() < 1000, "{}: a long echo", case.what);
    assert!(
        !status.message().contains(password),
        "{}: the password leaked",
        case.what
    );
}

/// Sends and receives raw bytes, to put what no stub can build on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// A raw HTTP/2 ExecuteSync with the given grpc-timeout header: the
/// grpc-status and grpc-message it gets (from the headers of a
/// trailers-only answer, or from the trailers).
async fn raw_execute_with_timeout(gw: &Gateway, timeout: &str) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/procgate.v1.ProcedureService/ExecuteSync",
        gw.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", timeout)
    .body(())
    .unwrap();
    let message = pb::ExecuteSyncRequest {
        call: Some(call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(1)),
                p_in("b", Kind::IntegerValue(2)),
            ],
        )),
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(frame.into(), true).unwrap();
    let response = response
        .await
        .expect("an HTTP/2 answer, not a reset stream");
    let header = |headers: &http::HeaderMap, name: &str| {
        headers.get(name).map(|v| v.to_str().unwrap().to_string())
    };
    let (head, mut body) = response.into_parts();
    if let Some(status) = header(&head.headers, "grpc-status") {
        let message = header(&head.headers, "grpc-message").unwrap_or_default();
        return (status, message);
    }
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().expect("trailers");
    (
        header(&trailers, "grpc-status").unwrap(),
        header(&trailers, "grpc-message").unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_grpc_timeout_is_refused_not_a_panic() {
    let gw = Gateway::start(&[]).await;
    for bad in ["9999999999999999999S", "123456789m", "5x", "S", "1.5S"] {
        let (status, message) = raw_execute_with_timeout(&gw, bad).await;
        assert_eq!(
            status, "3",
            "{bad}: INVALID_ARGUMENT, got {status} {message}"
        );
        assert!(message.contains("grpc-timeout"), "{bad}: {message}");
    }
    // Deadlines too short to run and cancel a call in: procgate's
    // DEADLINE_EXCEEDED, unless tonic's own timer fires first, before the
    // request's body is read (then CANCELLED "Timeout expired"); either
    // way a status, never a reset stream, and nothing runs.
    for tiny in ["0S", "1m", "3m", "100n"] {
        let (status, message) = raw_execute_with_timeout(&gw, tiny).await;
        assert!(
            ["1", "4"].contains(&status.as_str()),
            "{tiny}: {status} {message}"
        );
    }
    // The longest legal value is a deadline far away, and the call works.
    let (status, message) = raw_execute_with_timeout(&gw, "99999999H").await;
    assert_eq!(status, "0", "{message}");
    let (status, message) = raw_execute_with_timeout(&gw, "5000m").await;
    assert_eq!(status, "0", "{message}");
}
