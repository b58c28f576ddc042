//! One place that sees every RPC from its first byte to its last: a tower
//! layer that counts it (go-grpc-prometheus families), keeps the watch
//! streams' gauge, and writes its audit event.
//!
//! The layer sits inside gRPC-Web, so it sees native gRPC: the status is in
//! the headers of a trailers-only answer (every error tonic sends at once)
//! or in the trailers at the end of the body. A stream is done when its
//! body ends; a body dropped before its trailers is a client that went
//! away (CANCELLED). What only a handler knows (the procedure, the job) it
//! writes into the request's [`RpcNotes`]; the authentication interceptor
//! writes the owner there.
//!
//! Only methods the server registers are counted: their set is read once
//! from the services' descriptors, so a client calling made-up paths adds
//! no label values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::Code;
use tonic::transport::server::TcpConnectInfo;

use super::audit::{Audit, AuditEvent};
use super::metrics::{GrpcLabels, Metrics, StreamGauge};

/// What the server knows of one of its methods.
#[derive(Debug, Clone)]
struct MethodInfo {
    labels: GrpcLabels,
    /// Its full name, `procgate.v1.ProcedureService/ExecuteSync`.
    name: &'static str,
    /// Whether it names a procedure, a job or a schedule: then it is audited.
    audited: bool,
}

/// The methods whose calls name a procedure, a job or a schedule.
const AUDITED: &[&str] = &[
    "procgate.v1.ProcedureService/ExecuteSync",
    "procgate.v1.ProcedureService/ExecuteStream",
    "procgate.v1.ProcedureService/SubmitAsync",
    "procgate.v1.ProcedureService/GetJob",
    "procgate.v1.ProcedureService/ReadJobResult",
    "procgate.v1.ProcedureService/WatchJob",
    "procgate.v1.ProcedureService/CancelJob",
    "procgate.v1.ProcedureService/DeleteJob",
    "procgate.v1.ProcedureService/DescribeProcedure",
    "procgate.v1.ProcedureService/CreateSchedule",
    "procgate.v1.ProcedureService/GetSchedule",
    "procgate.v1.ProcedureService/UpdateSchedule",
    "procgate.v1.ProcedureService/DeleteSchedule",
    "arrow.flight.protocol.FlightService/GetFlightInfo",
    "arrow.flight.protocol.FlightService/DoGet",
];

/// Arrow Flight ships no descriptor set: its methods and kinds, from
/// Flight.proto.
const FLIGHT: &[(&str, bool, bool)] = &[
    ("Handshake", true, true),
    ("ListFlights", false, true),
    ("GetFlightInfo", false, false),
    ("PollFlightInfo", false, false),
    ("GetSchema", false, false),
    ("DoGet", false, true),
    ("DoPut", true, true),
    ("DoExchange", true, true),
    ("DoAction", false, true),
    ("ListActions", false, true),
];

/// Every method served, by request path (`/package.Service/Method`).
fn methods() -> &'static HashMap<String, MethodInfo> {
    static METHODS: OnceLock<HashMap<String, MethodInfo>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods = Vec::new();
        for set in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(set)
                .expect("the compiled-in descriptor sets decode");
            for file in &set.file {
                for service in &file.service {
                    let full = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        methods.push((
                            full.clone(),
                            method.name().to_string(),
                            method.client_streaming(),
                            method.server_streaming(),
                        ));
                    }
                }
            }
        }
        for (method, client, server) in FLIGHT {
            let service = "arrow.flight.protocol.FlightService".to_string();
            methods.push((service, method.to_string(), *client, *server));
        }
        methods
            .into_iter()
            .map(|(service, method, client, server)| {
                let name: &'static str = Box::leak(format!("{service}/{method}").into_boxed_str());
                let (service, method) = name.split_once('/').expect("service/method");
                let kind = match (client, server) {
                    (false, false) => "unary",
                    (false, true) => "server_stream",
                    (true, false) => "client_stream",
                    (true, true) => "bidi_stream",
                };
                let info = MethodInfo {
                    labels: GrpcLabels {
                        grpc_service: service,
                        grpc_method: method,
                        grpc_type: kind,
                    },
                    name,
                    audited: AUDITED.contains(&name),
                };
                (format!("/{name}"), info)
            })
            .collect()
    })
}

/// What handlers learn about an RPC that the layer cannot see: who called
/// and what the call names. Shared through the request's extensions.
#[derive(Debug, Default)]
pub struct RpcNotes(Mutex<Notes>);

#[derive(Debug, Default, Clone)]
struct Notes {
    owner: Option<Arc<str>>,
    procedure: Option<String>,
    job_id: Option<String>,
    schedule_id: Option<String>,
}

impl RpcNotes {
    fn with(&self, write: impl FnOnce(&mut Notes)) {
        write(&mut self.0.lock().expect("rpc notes lock"));
    }

    pub fn owner(&self, owner: Arc<str>) {
        self.with(|n| n.owner = Some(owner));
    }

    /// The procedure as the client named it (shortened past the longest
    /// valid name).
    pub fn procedure(&self, name: &str) {
        self.with(|n| n.procedure = Some(shortened(name, 800)));
    }

    pub fn job(&self, id: &str) {
        self.with(|n| n.job_id = Some(shortened(id, 64)));
    }

    pub fn schedule(&self, id: &str) {
        self.with(|n| n.schedule_id = Some(shortened(id, 64)));
    }
}

/// Untrusted text as kept in an audit event: at most `max` characters.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The notes of a request, when it came through the layer.
pub fn notes_of<T>(request: &tonic::Request<T>) -> Arc<RpcNotes> {
    request
        .extensions()
        .get::<Arc<RpcNotes>>()
        .cloned()
        .unwrap_or_default()
}

/// The layer; see the module's documentation.
#[derive(Clone)]
pub struct RpcLayer {
    pub metrics: Metrics,
    pub audit: Audit,
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RpcService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(info) = methods().get(request.uri().path()) else {
            return Box::pin(async move {
                let response = inner.call(request).await?;
                Ok(response.map(ObservedBody::unobserved))
            });
        };
        let notes = Arc::new(RpcNotes::default());
        request.extensions_mut().insert(notes.clone());
        let metrics = &self.layer.metrics;
        metrics.rpc_started(&info.labels);
        let watch = match info.labels.grpc_method {
            rpc @ ("WatchJob" | "WatchJobs") => Some(metrics.watch_stream(rpc)),
            _ => None,
        };
        let mut finish = Finish {
            info,
            started: Instant::now(),
            notes,
            peer: peer_of(&request),
            header_status: None,
            layer: self.layer.clone(),
            _watch: watch,
        };
        Box::pin(async move {
            let response = match inner.call(request).await {
                Ok(response) => response,
                Err(e) => {
                    finish.done(Code::Unknown, None);
                    return Err(e);
                }
            };
            finish.header_status = status_of(response.headers());
            // The RPC's span closes when this returns, before the body
            // (and a status in its trailers) is sent: an error answered
            // at once is in the headers; anything else answered.
            let code = finish
                .header_status
                .as_ref()
                .map_or(Code::Ok, |(code, _)| *code);
            super::trace::record_outcome(&tracing::Span::current(), code);
            Ok(response.map(|body| ObservedBody {
                inner: body,
                finish: Some(finish),
            }))
        })
    }
}

fn peer_of<B>(request: &Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
                .map(|tls| tls.get_ref())
        })
        .and_then(TcpConnectInfo::remote_addr)
}

/// The gRPC status and the database's code in a header map.
fn status_of(headers: &HeaderMap) -> Option<(Code, Option<String>)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let db_code = headers
        .get(crate::api::status::DB_CODE_TRAILER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Some((Code::from_i32(code), db_code))
}

/// Everything needed to close an RPC's books once its status is known.
struct Finish {
    info: &'static MethodInfo,
    started: Instant,
    notes: Arc<RpcNotes>,
    peer: Option<SocketAddr>,
    /// The status of a trailers-only answer.
    header_status: Option<(Code, Option<String>)>,
    layer: RpcLayer,
    _watch: Option<StreamGauge>,
}

impl Finish {
    fn done(&mut self, code: Code, db_code: Option<String>) {
        let elapsed = self.started.elapsed();
        self.layer
            .metrics
            .rpc_handled(&self.info.labels, code, elapsed);
        if self.info.audited {
            let notes = self.notes.0.lock().expect("rpc notes lock").clone();
            self.layer.audit.record(&AuditEvent {
                owner: notes.owner.as_deref().unwrap_or_default(),
                peer: self.peer,
                method: self.info.name,
                procedure: notes.procedure.as_deref(),
                job_id: notes.job_id.as_deref(),
                schedule_id: notes.schedule_id.as_deref(),
                code,
                db_code: db_code.as_deref(),
                duration: elapsed,
            });
        }
    }
}

/// A response body that closes its RPC's books when it ends.
pub struct ObservedBody<B> {
    inner: B,
    finish: Option<Finish>,
}

impl<B> ObservedBody<B> {
    fn unobserved(inner: B) -> Self {
        ObservedBody {
            inner,
            finish: None,
        }
    }

    fn end(&mut self, status: Option<(Code, Option<String>)>) {
        if let Some(mut finish) = self.finish.take() {
            // No status at all: the stream was cut before its trailers.
            let (code, db_code) = status
                .or_else(|| finish.header_status.take())
                .unwrap_or((Code::Cancelled, None));
            finish.done(code, db_code);
        }
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.end(status_of(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(Some((Code::Internal, None))),
            Poll::Ready(None) => this.end(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.end(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_known_with_its_kind() {
        let methods = methods();
        let kind = |path: &str| methods[path].labels.grpc_type;
        assert_eq!(kind("/procgate.v1.ProcedureService/ExecuteSync"), "unary");
        assert_eq!(
            kind("/procgate.v1.ProcedureService/WatchJobs"),
            "server_stream"
        );
        assert_eq!(kind("/grpc.health.v1.Health/Watch"), "server_stream");
        assert_eq!(
            kind("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "bidi_stream"
        );
        assert_eq!(
            kind("/arrow.flight.protocol.FlightService/DoGet"),
            "server_stream"
        );
        for audited in AUDITED {
            assert!(methods[&format!("/{audited}")].audited, "{audited}");
        }
        assert!(!methods["/procgate.v1.ProcedureService/ListJobs"].audited);
        assert!(!methods.contains_key("/procgate.v1.ProcedureService/Nope"));
    }
}
