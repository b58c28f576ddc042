//! OpenTelemetry traces over OTLP/gRPC (`--otlp-endpoint`), through the
//! `tracing` spans procgate already makes.
//!
//! - Each RPC's span (`procgate.v1.ProcedureService/<Method>`, kind server)
//!   continues the client's trace when the request carries a W3C
//!   `traceparent`.
//! - Each database call is a child span with the semantic conventions'
//!   `db.system`, `db.operation.name` = `CALL` and the procedure.
//! - A job's run is a span of its own from its start to its end, linked to
//!   the span of the SubmitAsync that queued it (when this instance took
//!   that call: the link lives in memory).
//!
//! With no endpoint configured no exporter exists, and the spans are the
//! plain `tracing` spans of before: no attributes are built, and database
//! calls get no span, since the sync path's cost is counted in
//! microseconds (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::call::ProcedureCall;

/// The service name, unless `OTEL_SERVICE_NAME` says another.
const SERVICE_NAME: &str = "procgate";

/// Whether spans are exported: set once, when the exporter starts.
static EXPORTING: AtomicBool = AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Starts exporting to `endpoint` (`http://collector:4317`). Call inside
/// the tokio runtime: the exporter's channel lives on it. Shut the
/// returned provider down before the runtime, so the last spans leave.
pub fn exporter(endpoint: &str) -> Result<SdkTracerProvider, String> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "--otlp-endpoint {endpoint:?} is not an OTLP/gRPC URL; write http://host:4317, or \
             https://host:4317 for a collector behind TLS"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("procgate"))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one RPC, continuing the caller's trace if it sent one.
pub fn rpc_span(request: &http::Request<()>) -> Span {
    let path = request.uri().path();
    if !exporting() {
        return tracing::info_span!("rpc", method = path);
    }
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!("rpc", otel.name = name, otel.kind = "server");
    // Attributes for the exporter only, kept out of the log lines.
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service.to_string());
    span.set_attribute("rpc.method", method.to_string());
    if request.headers().contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&Headers(request.headers()))
        });
        // Fails only without the OpenTelemetry layer: nothing to continue.
        let _ = span.set_parent(parent);
    }
    span
}

/// The span of one database call, a child of the current one; none when
/// nothing is exported.
pub fn db_span(backend_kind: &str, call: &ProcedureCall) -> Span {
    if !exporting() {
        return Span::none();
    }
    let system = match backend_kind {
        "postgres" => "postgresql",
        other => other,
    };
    let procedure = call.name.normalised();
    let span = tracing::info_span!(
        "db",
        otel.name = format!("CALL {procedure}"),
        otel.kind = "client",
    );
    span.set_attribute("db.system", system.to_string());
    span.set_attribute("db.operation.name", "CALL");
    span.set_attribute("db.stored_procedure.name", procedure.clone());
    span.set_attribute("procedure", procedure);
    span
}

/// Records how an RPC or a job ended on its span: `rpc.grpc.status_code`,
/// and an error status for any code but OK, so a trace backend finds the
/// failed calls.
pub fn record_outcome(span: &Span, code: tonic::Code) {
    if !exporting() {
        return;
    }
    span.set_attribute("rpc.grpc.status_code", code as i64);
    if code != tonic::Code::Ok {
        span.set_status(opentelemetry::trace::Status::error(
            crate::api::status::code_name(code),
        ));
    }
}

/// The current span's trace id, when it is traced.
pub fn current_trace_id() -> Option<String> {
    if !exporting() {
        return None;
    }
    let context = Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The current span as a W3C traceparent, for a job to link back to.
pub fn current_traceparent() -> Option<String> {
    current_trace_id()?;
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Links `span` to the span a traceparent names.
pub fn link(span: &Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoint_must_be_an_http_or_https_url() {
        for bad in ["ftp://x:1", "garbage", "collector:4317"] {
            let error = super::exporter(bad).unwrap_err();
            assert!(error.contains("not an OTLP/gRPC URL"), "{bad}: {error}");
        }
    }
}
