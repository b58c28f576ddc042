//! Who sees what: named tokens from a file (reloaded on SIGHUP), job
//! ownership, admin tokens, and TLS.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_see_only_their_own_jobs_unless_admin() {
    let (_dir, path) = token_file(TOKENS);
    let gw = Gateway::start(&["--token-file", &path]).await;
    let mut client = gw.client().await;
    let nap = || pb::SubmitAsyncRequest {
        call: Some(call("nap", vec![p_in("seconds", Kind::FloatValue(30.0))])),
        request_id: "nightly".into(),
        ..Default::default()
    };
    let alices = client
        .submit_async(as_user(nap(), "alice-secret-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alices.owner, "alice");

    // Bob cannot see, follow, cancel or delete it: to him it does not exist.
    let id = alices.id.clone();
    let denied = [
        client
            .get_job(as_user(
                pb::GetJobRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                "bob-secret-22",
            ))
            .await
            .map(drop),
        client
            .watch_job(as_user(
                pb::WatchJobRequest {
                    id: id.clone(),
                    since_revision: 0,
                    ..Default::default()
                },
                "bob-secret-22",
            ))
            .await
            .map(drop),
        client
            .cancel_job(as_user(
                pb::CancelJobRequest { id: id.clone() },
                "bob-secret-22",
            ))
            .await
            .map(drop),
        client
            .delete_job(as_user(
                pb::DeleteJobRequest { id: id.clone() },
                "bob-secret-22",
            ))
            .await
            .map(drop),
    ];
    for result in denied {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let lister = client.clone();
    let list = |token: &'static str| {
        let mut client = lister.clone();
        async move {
            client
                .list_jobs(as_user(pb::ListJobsRequest::default(), token))
                .await
                .unwrap()
                .into_inner()
                .jobs
        }
    };
    assert!(list("bob-secret-22").await.is_empty());
    assert_eq!(list("alice-secret-1").await.len(), 1);

    // The same request_id is Bob's own key, not a way into Alice's job.
    let bobs = client
        .submit_async(as_user(nap(), "bob-secret-22"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.id, alices.id);
    assert_eq!(bobs.owner, "bob");
    let again = client
        .submit_async(as_user(nap(), "alice-secret-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, alices.id);

    // An admin sees and manages everyone's jobs.
    assert_eq!(list("root-secret-333").await.len(), 2);
    for id in [alices.id, bobs.id] {
        client
            .cancel_job(as_user(pb::CancelJobRequest { id }, "root-secret-333"))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_is_reloaded_on_sighup_and_never_logged() {
    let db = start_db().await;
    let url = db.url();
    let password = password_of(&url);
    let (dir, path) = token_file("alice:alice-secret-1\n");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_procgate"))
        .args(["serve", "--database-url", &url, "--token-file", &path])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--log-params"])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = connect_when_listening(port).await;
    let lister = client.clone();
    let list = |token: &'static str| {
        let mut client = lister.clone();
        async move {
            client
                .list_jobs(as_user(pb::ListJobsRequest::default(), token))
                .await
                .map(drop)
        }
    };
    list("alice-secret-1").await.unwrap();
    assert_eq!(
        list("carol-secret-4444").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    std::fs::write(dir.path().join("tokens"), "carol:carol-secret-4444\n").unwrap();
    // SAFETY: kill with our child's pid and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    eventually(Duration::from_secs(10), "the new token to work", || async {
        list("carol-secret-4444").await.ok()
    })
    .await;
    assert_eq!(
        list("alice-secret-1").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A broken file keeps the tokens that work.
    std::fs::write(dir.path().join("tokens"), "no colon here\n").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    list("carol-secret-4444").await.unwrap();

    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{logs}");
    assert!(logs.contains("reloaded the token file"), "{logs}");
    assert!(logs.contains("kept the previous tokens"), "{logs}");
    for secret in [password.as_str(), "alice-secret-1", "carol-secret-4444"] {
        assert!(!logs.contains(secret), "{secret} leaked:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_encrypted_and_refuses_plaintext() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let gw = Gateway::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(certified.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", gw.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection");
    let mut client = Client::new(channel);
    let response = execute(
        &mut client,
        call(
            "pkg_etl.sumar",
            vec![
                p_in("a", Kind::IntegerValue(1)),
                p_in("b", Kind::IntegerValue(2)),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        kind_of(response.outputs.get("total")),
        Some(&Kind::NumberValue("3".into()))
    );

    let mut plaintext = gw.client().await;
    let refused = plaintext.list_jobs(pb::ListJobsRequest::default()).await;
    assert!(refused.is_err(), "a plaintext client was served");

    // The terminal client trusts the certificate with --ca-cert.
    let server = format!("https://localhost:{}", gw.addr.port());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_procgate"))
            .args([
                "jobs",
                "--server",
                &server,
                "--ca-cert",
                cert.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
