//! The browser side: the dashboard page and gRPC-Web on the gRPC port, CORS
//! for other origins, and the page itself driven in headless Chromium
//! (dashboard/e2e, playwright-core) against a real gateway and PostgreSQL.
//!
//! The HTTP/1.1 checks speak raw bytes over TCP, as a browser would send
//! them, so that nothing between the test and the server fills in for it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use procgate::proto as pb;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request and reads the whole response (the server
/// closes the connection after it: `Connection: close`).
async fn http1(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}Host: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    response
}

fn head_of(response: &[u8]) -> String {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    String::from_utf8_lossy(&response[..end]).to_ascii_lowercase()
}

fn body_of(response: &[u8]) -> &[u8] {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &response[end + 4..]
}

/// A gRPC-Web call over HTTP/1.1, as the page makes it.
async fn grpc_web(
    addr: std::net::SocketAddr,
    method: &str,
    message: &impl Message,
    token: Option<&str>,
) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /procgate.v1.ProcedureService/{method} HTTP/1.1\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n{auth}\
         content-length: {}\r\n",
        frame.len()
    );
    http1(addr, &head, &frame).await
}

/// Splits a chunked body back into its bytes.
fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap(), 16)
            .expect("a chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 2 + size + 2..];
    }
}

/// gRPC-Web frames: (is_trailer, bytes).
fn frames(mut body: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push((body[0] & 0x80 != 0, body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_from_the_binary_with_a_strict_policy() {
    let gw = Gateway::start(&[]).await;

    let page = http1(gw.addr, "GET / HTTP/1.1\r\n", b"").await;
    let head = head_of(&page);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    let html = String::from_utf8_lossy(body_of(&page));
    assert!(
        html.contains(r#"<script type="module" src="app.js">"#),
        "{html}"
    );
    assert!(
        !html.contains("https://"),
        "the page loads nothing from a CDN"
    );

    let script = http1(gw.addr, "GET /app.js HTTP/1.1\r\n", b"").await;
    assert!(head_of(&script).contains("content-type: text/javascript"));
    let committed = std::fs::read("dashboard/public/app.js").unwrap();
    assert_eq!(
        body_of(&script),
        committed.as_slice(),
        "the committed bundle"
    );

    // Any other page (a browser's /favicon.ico) is a plain 404.
    let missing = http1(gw.addr, "GET /favicon.ico HTTP/1.1\r\n", b"").await;
    assert!(
        head_of(&missing).starts_with("http/1.1 404"),
        "{}",
        head_of(&missing)
    );
    let text = String::from_utf8_lossy(body_of(&missing));
    assert!(text.contains("the jobs dashboard is at /"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_off_serves_no_page_but_still_grpc_web() {
    let gw = Gateway::start(&["--dashboard", "off", "--token", "s3cret"]).await;

    let page = http1(gw.addr, "GET / HTTP/1.1\r\n", b"").await;
    assert!(
        !head_of(&page).starts_with("http/1.1 200"),
        "{}",
        head_of(&page)
    );

    // Unauthenticated, in a trailers-only response's headers.
    let refused = grpc_web(gw.addr, "ListJobs", &pb::ListJobsRequest::default(), None).await;
    let head = head_of(&refused);
    assert!(head.contains("grpc-status: 16"), "{head}");

    // With the token: a data frame with the (empty) page, then trailers
    // saying OK, all over HTTP/1.1.
    let listed = grpc_web(
        gw.addr,
        "ListJobs",
        &pb::ListJobsRequest::default(),
        Some("s3cret"),
    )
    .await;
    let head = head_of(&listed);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/grpc-web"),
        "{head}"
    );
    let body = if head.contains("transfer-encoding: chunked") {
        unchunk(body_of(&listed))
    } else {
        body_of(&listed).to_vec()
    };
    let frames = frames(&body);
    assert_eq!(frames.len(), 2, "one message and the trailers");
    let page = pb::ListJobsResponse::decode(frames[0].1.as_slice()).unwrap();
    assert!(page.jobs.is_empty());
    assert!(frames[1].0, "the last frame is the trailers");
    let trailers = String::from_utf8_lossy(&frames[1].1).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /procgate.v1.ProcedureService/WatchJob HTTP/1.1\r\n\
         Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type,authorization,x-grpc-web\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let gw = Gateway::start(&["--cors-origin", "https://ops.example.com,https://b.example"]).await;

    let allowed = head_of(&http1(gw.addr, &preflight("https://ops.example.com"), b"").await);
    assert!(
        allowed.contains("access-control-allow-origin: https://ops.example.com"),
        "{allowed}"
    );
    assert!(allowed.contains("authorization"), "{allowed}");
    let also = head_of(&http1(gw.addr, &preflight("https://b.example"), b"").await);
    assert!(
        also.contains("access-control-allow-origin: https://b.example"),
        "{also}"
    );

    let other = head_of(&http1(gw.addr, &preflight("https://evil.example"), b"").await);
    assert!(!other.contains("access-control-allow-origin"), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_by_default() {
    let gw = Gateway::start(&[]).await;
    let head = head_of(&http1(gw.addr, &preflight("https://ops.example.com"), b"").await);
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_origin_must_be_a_valid_header() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = procgate::config::ServeConfig::parse_from(["--cors-origin", "https://a\nb"])
        .expect("flags");
    let db = start_db().await;
    let err = procgate::server::run(listener, config, &db.url(), std::future::pending())
        .await
        .expect_err("an origin with a newline");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("--cors-origin"),
        "{}",
        status.message()
    );
}

/// The page in headless Chromium: tokens, live progress, Cancel, the form,
/// filters, error states and a phone's width (dashboard/e2e).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    assert!(
        Path::new("/usr/bin/chromium").exists()
            && dashboard.join("node_modules/playwright-core").exists(),
        "Chromium or playwright-core is missing: run ./scripts/setup-dashboard.sh \
         (./scripts/test.sh does)"
    );
    let gw = Gateway::start(&["--token", "e2e-secret"]).await;
    let url = format!("http://{}", gw.addr);
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots");
    let status = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dashboard)
            .args([
                "e2e/dashboard.e2e.mjs",
                "--url",
                &url,
                "--token",
                "e2e-secret",
            ])
            .args(["--procgate", env!("CARGO_BIN_EXE_procgate")])
            .arg("--screenshots")
            .arg(&screenshots)
            .status()
            .expect("running node")
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "the browser test failed: see its output above"
    );
}
