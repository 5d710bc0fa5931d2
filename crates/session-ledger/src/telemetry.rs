//! Logs to stderr, and traces over OTLP/gRPC when `LEDGER_OTLP_ENDPOINT` is set
//! (nothing is exported, and nothing fails, when it is not).

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes exported spans on shutdown.
pub struct Telemetry(Option<SdkTracerProvider>);

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.0
            && let Err(e) = provider.shutdown()
        {
            eprintln!("session-ledger: flushing traces failed: {e}");
        }
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("LEDGER_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Colours only for a terminal: a log redirected to a file or a collector gets plain
/// `key=value` text (and the server formats no escape codes per request).
fn ansi() -> bool {
    std::io::stderr().is_terminal()
}

pub fn init_logs_only() {
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(ansi())
        .init();
}

/// Installs the log subscriber and, with an endpoint, the OTLP trace exporter and the
/// W3C trace-context propagator. Must run inside the tokio runtime.
pub fn init(otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi())
        .with_filter(filter());
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry(None));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("session-ledger")
                .build(),
        )
        .build();
    let tracer = provider.tracer("session-ledger");
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(Telemetry(Some(provider)))
}
