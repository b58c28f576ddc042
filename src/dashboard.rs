//! The jobs dashboard's page, served at `/` on the gRPC port.
//!
//! The page is compiled into the binary (dashboard/public, built from the
//! TypeScript in dashboard/src and committed), so it needs no npm to build
//! and no network to load. It talks to ProcedureService through gRPC-Web on
//! the same origin.
//!
//! A layer in front of everything answers GET and HEAD requests itself (the
//! page's three assets, else 404): RPCs are POSTs, and gRPC-Web would refuse
//! a browser's plain request with a bare 400.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tower::{Layer, Service};

const INDEX: &str = include_str!("../dashboard/public/index.html");
const SCRIPT: &str = include_str!("../dashboard/public/app.js");
const STYLE: &str = include_str!("../dashboard/public/style.css");

/// Everything from this origin, nothing from anywhere else.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                      script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// The asset at `path`, with its content type.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/app.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/style.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// Wraps the gRPC routes so that the page's own GET requests are answered
/// before they reach them.
#[derive(Clone, Copy, Debug, Default)]
pub struct DashboardLayer;

impl<S> Layer<S> for DashboardLayer {
    type Service = Dashboard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dashboard { inner }
    }
}

/// The service [`DashboardLayer`] builds: the page's assets, or else `inner`.
#[derive(Clone, Debug)]
pub struct Dashboard<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for Dashboard<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // RPCs are POSTs; any GET or HEAD is a browser asking for a page.
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Box::pin(self.inner.call(request));
        }
        let response = match asset(request.uri().path()) {
            Some((body, content_type)) => page(StatusCode::OK, body.to_string(), content_type),
            None => page(
                StatusCode::NOT_FOUND,
                format!(
                    "procgate has no page at {}; the jobs dashboard is at /\n",
                    request.uri().path()
                ),
                "text/plain; charset=utf-8",
            ),
        };
        Box::pin(std::future::ready(Ok(response)))
    }
}

fn page(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<tonic::body::Body> {
    let mut response = Response::new(tonic::body::Body::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_assets_are_answered() {
        assert!(asset("/").is_some());
        assert!(asset("/app.js").unwrap().1.starts_with("text/javascript"));
        assert!(asset("/procgate.v1.ProcedureService/ListJobs").is_none());
        assert!(asset("/../etc/passwd").is_none());
    }
}
