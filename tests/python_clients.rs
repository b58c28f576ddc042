//! procgate as a data team's Python reaches it: grpcio stubs generated from
//! the .proto and pyarrow's Flight client (installed by
//! scripts/setup-python.sh) read a 1,000,000-row result in full, through
//! ExecuteStream, a job's ReadJobResult (whole and resumed) and Flight
//! DoGet, and each sum is compared with the database's own.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const ROWS: i64 = 1_000_000;

/// The Python of the project's environment, with the stubs generated into
/// `stubs`.
fn python_with_stubs(stubs: &Path) -> String {
    let python = project_python();
    let generated = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I", "proto"])
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg("proto/procgate/v1/procgate.proto")
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "grpc_tools.protoc failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_read_a_million_rows_in_full() {
    let stubs = tempfile::tempdir().unwrap();
    let python = python_with_stubs(stubs.path());
    let gw = Gateway::start(&[]).await;
    let expected: i64 = gw
        .sql(&format!(
            "SELECT sum(num)::bigint FROM public.numbers({ROWS})"
        ))
        .await[0]
        .get(0);
    let address = gw.addr.to_string();
    let stubs_dir = stubs.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("tests/python/big_result.py")
            .args([address, ROWS.to_string()])
            .arg(stubs_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("python read: {read}");
    assert_eq!(read["stream_rows"], ROWS);
    assert_eq!(read["stream_sum"], expected);
    assert_eq!(read["stream_columns"], serde_json::json!(["num", "label"]));
    assert_eq!(
        read["inline_rows"], 10_000,
        "the inline part keeps --max-cursor-rows"
    );
    assert_eq!(read["inline_truncated"], true);
    assert_eq!(read["total_rows"], ROWS);
    assert_eq!(read["read_rows"], ROWS);
    assert_eq!(read["read_sum"], expected);
    assert_eq!(read["resumed_rows"], 1234);
    assert_eq!(read["flight_total_records"], ROWS);
    assert_eq!(
        read["flight_schema"],
        serde_json::json!(["num:int64", "label:string"])
    );
    assert_eq!(read["flight_rows"], ROWS);
    assert_eq!(read["flight_sum"], expected);
}
