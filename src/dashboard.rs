//! The jobs dashboard's page, served at `/` on the gRPC port.
//!
//! The page is compiled into the binary (dashboard/public, built from the
//! TypeScript in dashboard/src and committed), so it needs no npm to build
//! and no network to load. It talks to ProcedureService through gRPC-Web on
//! the same origin.
//!
//! A layer in front of everything answers the page's three GET requests
//! itself: gRPC-Web refuses plain HTTP/1.1 requests, and these are not RPCs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response};
use tower::{Layer, Service};

const INDEX: &str = include_str!("../dashboard/public/index.html");
const SCRIPT: &str = include_str!("../dashboard/public/app.js");
const STYLE: &str = include_str!("../dashboard/public/style.css");

/// Everything from this origin, nothing from anywhere else.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                      script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// The asset for a request, if it asks for one.
fn asset(method: &Method, path: &str) -> Option<(&'static str, &'static str)> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
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
        let Some((body, content_type)) = asset(request.method(), request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let mut response = Response::new(tonic::body::Body::new(body.to_string()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
        Box::pin(std::future::ready(Ok(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_assets_are_answered() {
        assert!(asset(&Method::GET, "/").is_some());
        assert!(
            asset(&Method::GET, "/app.js")
                .unwrap()
                .1
                .starts_with("text/javascript")
        );
        assert!(asset(&Method::POST, "/").is_none());
        assert!(asset(&Method::GET, "/procgate.v1.ProcedureService/ListJobs").is_none());
        assert!(asset(&Method::GET, "/../etc/passwd").is_none());
    }
}
