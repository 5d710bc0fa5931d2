//! W3C trace context across the service: the incoming `traceparent` becomes the parent
//! of the request span, and the request span's context is what events carry into the
//! log (and so into Kafka headers and the projector's spans). Without an OpenTelemetry
//! exporter installed, the caller's `traceparent` is passed through unchanged.

use std::collections::HashMap;

use actix_web::HttpRequest;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Map(HashMap<String, String>);

impl Extractor for Map {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

impl Injector for Map {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// A syntactically valid `traceparent` (version 00), lower-case hex.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

/// The OpenTelemetry context named by a `traceparent`/`tracestate` pair.
pub fn remote_context(traceparent: &str, tracestate: Option<&str>) -> opentelemetry::Context {
    let mut headers = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    if let Some(state) = tracestate {
        headers.insert("tracestate".to_owned(), state.to_owned());
    }
    let headers = Map(headers);
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&headers))
}

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
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        let mut out = Map(HashMap::new());
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut out));
        if let Some(parent) = out.0.remove("traceparent") {
            return Some((parent, out.0.remove("tracestate").filter(|s| !s.is_empty())));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_syntax() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!valid_traceparent("garbage"));
    }
}
