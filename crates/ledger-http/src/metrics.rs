//! HTTP metrics (requests by listener, route and status; latency) and `GET /metrics`,
//! which renders the registry of `ledger_telemetry::metrics` in the text exposition
//! format.

use std::sync::LazyLock;
use std::time::Instant;

use tracing::Instrument;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, http::header};
use ledger_telemetry::metrics::register;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

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
    match ledger_telemetry::metrics::render() {
        Ok((content_type, body)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, content_type))
            .body(body),
        Err(e) => HttpResponse::InternalServerError().body(format!("metrics: {e}")),
    }
}
