//! W3C trace context across the service: the incoming `traceparent` becomes the parent
//! of the request span, and the request span's context is what events carry into the
//! log (and so into Kafka headers and the projector's spans). Without an OpenTelemetry
//! exporter installed, the caller's `traceparent` is passed through unchanged. The
//! header-level pieces are in `ledger_telemetry::trace`.

use actix_web::HttpRequest;
pub use ledger_telemetry::trace::{remote_context, valid_traceparent};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` a child of the trace the request's headers name, if any.
pub fn adopt_request_parent(span: &tracing::Span, headers: &actix_web::http::header::HeaderMap) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(parent) = get("traceparent").filter(|t| valid_traceparent(t)) {
        let _ = span.set_parent(remote_context(parent, get("tracestate")));
    }
}

/// The trace context to record in events caused by this request: the current span's
/// when an exporter is installed, else the caller's own headers.
pub fn request_trace_context(req: &HttpRequest) -> Option<(String, Option<String>)> {
    if let Some(current) =
        ledger_telemetry::trace::context_headers(&tracing::Span::current().context())
    {
        return Some(current);
    }
    let get = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let parent = get("traceparent").filter(|t| valid_traceparent(t))?;
    Some((parent, get("tracestate").filter(|s| s.len() <= 512)))
}
