//! Prometheus metrics: every crate registers its own in the default registry;
//! `GET /metrics` on each listener renders them ([`render`]).

use prometheus::{Encoder, TextEncoder};

/// Registers a collector in the default registry, once.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(
    collector: prometheus::Result<C>,
) -> C {
    // The definitions are static (names, help texts and labels written in the code):
    // one that Prometheus refuses is a programming error caught by the first test
    // that touches the metric.
    let collector = collector.expect("a static metric definition is valid");
    // Registering twice (a second app in one process) is harmless: keep the first.
    let _ = prometheus::default_registry().register(Box::new(collector.clone()));
    collector
}

/// Every registered metric in the text exposition format: (content type, body).
pub fn render() -> Result<(String, Vec<u8>), prometheus::Error> {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    encoder.encode(&prometheus::gather(), &mut buffer)?;
    Ok((encoder.format_type().to_owned(), buffer))
}
