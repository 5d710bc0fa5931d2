//! Telemetry every role shares, with no web framework: the Prometheus registry the
//! crates register their metrics in, its text rendering, and W3C trace context
//! (`traceparent`/`tracestate`). The HTTP side (the request middleware, `GET
//! /metrics`, reading a request's headers) is in `ledger-http`; the projector, which
//! serves no HTTP of its own, links this crate alone.

pub mod metrics;
pub mod trace;
