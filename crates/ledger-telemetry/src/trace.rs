//! W3C trace context: a `traceparent`/`tracestate` pair checked and turned into an
//! OpenTelemetry context, and the current context written back as such a pair. With
//! no propagator installed (no exporter), nothing is extracted or injected.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};

/// Headers as the propagator reads and writes them.
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

/// The `traceparent`/`tracestate` of a context, when it names a valid span.
pub fn context_headers(cx: &opentelemetry::Context) -> Option<(String, Option<String>)> {
    use opentelemetry::trace::TraceContextExt;
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = Map(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut out));
    let parent = out.0.remove("traceparent")?;
    Some((parent, out.0.remove("tracestate").filter(|s| !s.is_empty())))
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
