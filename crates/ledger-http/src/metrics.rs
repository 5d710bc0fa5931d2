//! Prometheus metrics: every crate registers its own in the default registry;
//! `GET /metrics` on both listeners renders them in the text exposition format.

use std::sync::LazyLock;
use std::time::Instant;

use tracing::Instrument;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, http::header};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, TextEncoder};

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "ledger_http_requests_total",
            "HTTP requests by listener, route and status",
        ),
        &["listener", "route", "status"],
    ))
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(HistogramVec::new(
        HistogramOpts::new("ledger_http_request_seconds", "HTTP request latency").buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
        ]),
        &["listener", "route"],
    ))
});

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

/// Middleware: counts and times every request by its route pattern.
pub async fn observe(
    listener: &'static str,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let span = tracing::info_span!(
        "http request",
        listener,
        method = %req.method(),
        path = %req.path(),
        status = tracing::field::Empty,
    );
    crate::trace::adopt_request_parent(&span, req.headers());
    let response = next.call(req).instrument(span.clone()).await?;
    span.record("status", response.status().as_u16());
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    REQUESTS
        .with_label_values(&[listener, &route, &status])
        .inc();
    LATENCY
        .with_label_values(&[listener, &route])
        .observe(start.elapsed().as_secs_f64());
    Ok(response)
}

/// `GET /metrics`.
pub async fn handler() -> HttpResponse {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buffer) {
        return HttpResponse::InternalServerError().body(format!("metrics: {e}"));
    }
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, encoder.format_type()))
        .body(buffer)
}
