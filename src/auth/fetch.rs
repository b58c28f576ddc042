//! One small HTTP(S) GET, for `--jwt-jwks-url`: hyper's client with rustls
//! (ring, the web's root certificates), a time limit and a size limit, so
//! that a slow or huge answer cannot hold up or swell the server.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The most a key set may weigh.
const MAX_BYTES: usize = 1 << 20;
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The body of `url` as text; errors say what went wrong, in words.
pub async fn get(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let request = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8 text".to_string())
    };
    tokio::time::timeout(TIME_LIMIT, fetch)
        .await
        .map_err(|_| format!("no answer within {TIME_LIMIT:?}"))?
}
