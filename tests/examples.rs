//! The examples a client developer copies from: the Python client
//! (grpcio stubs generated from proto/) and the README's buf curl
//! walkthrough, each run for real against a server.

mod common;

use std::process::Command;

use common::*;

fn run_example(script: &str, address: String) {
    let script = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(&script).arg(&address).output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{out}\n{err}");
    assert!(out.contains("COMPLETED"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_calls_and_watches() {
    let gw = Gateway::start(&[]).await;
    let address = gw.addr.to_string();
    tokio::task::spawn_blocking(move || run_example("examples/python/run.sh", address))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buf_curl_walkthrough_runs() {
    let gw = Gateway::start(&[]).await;
    let address = gw.addr.to_string();
    tokio::task::spawn_blocking(move || run_example("examples/buf/walkthrough.sh", address))
        .await
        .unwrap();
}
