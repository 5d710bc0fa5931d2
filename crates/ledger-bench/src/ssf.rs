//! Row 8: Shared Signals push delivery. A receiver inside this program (hyper, HTTP/1.1
//! on loopback) takes the transmitter's RFC 8935 POSTs; for each of `samples`
//! signouts, the time from the signout response to the arrival of the
//! `session-revoked` SET naming that family.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::report::{Latencies, progress};
use crate::service::{self, App, Conn};

/// The receiver credential the benchmark's stream is created with.
pub const RECEIVER_TOKEN: &str = "bench-ssf-receiver-0123456789";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// The family id a `session-revoked` SET names, read without checking its signature
/// (the end-to-end test verifies SETs; this only times them).
fn revoked_family(set: &[u8]) -> Option<String> {
    let payload = std::str::from_utf8(set).ok()?.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?,
    )
    .ok()?;
    claims["events"].get(SESSION_REVOKED)?;
    claims["sub_id"]["session"]["id"]
        .as_str()
        .map(str::to_owned)
}

/// A push receiver on loopback: every SET naming a family is sent, with its arrival
/// instant, on the returned channel. Answers 202 to every well-formed POST.
async fn receiver() -> anyhow::Result<(SocketAddr, mpsc::UnboundedReceiver<(String, Instant)>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let arrived = Instant::now();
                        if let Some(family) = revoked_family(&body) {
                            let _ = tx.send((family, arrived));
                        }
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(StatusCode::ACCEPTED)
                                .body(Full::new(Bytes::new()))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, rx))
}

/// Creates a push stream for `session-revoked` to `endpoint` (SSF stream management,
/// as a receiver would).
async fn create_stream(app: &App, endpoint: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": endpoint},
        "events_requested": [SESSION_REVOKED],
    });
    let mut conn = Conn::open(app.api).await?;
    let (status, answer) = conn
        .send(
            Request::post("/ssf/stream")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {RECEIVER_TOKEN}")),
            body.to_string(),
        )
        .await?;
    if status != StatusCode::CREATED {
        bail!(
            "creating the SSF stream: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

/// Signout response → SET arrival at the push receiver, one signout at a time.
pub async fn push_latency(app: &App, samples: usize) -> anyhow::Result<Latencies> {
    let (addr, mut arrivals) = receiver().await?;
    create_stream(app, &format!("http://{addr}/events")).await?;
    let sessions = service::sessions(app, samples).await?;
    progress(&format!(
        "measuring SSF push delivery over {samples} signouts"
    ));
    let mut api = Conn::open(app.api).await?;
    let mut latencies = Latencies::with_capacity(samples);
    // SETs that arrived for another family than the one awaited (none are expected:
    // one signout at a time).
    let mut early: HashMap<String, Instant> = HashMap::new();
    for (family, _, refresh) in sessions {
        api.revoke(&refresh).await?;
        let signed_out = Instant::now();
        let arrived = loop {
            if let Some(at) = early.remove(&family) {
                break at;
            }
            let next = tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
                .await
                .context("no SET for a signout within 30 s")?
                .context("the receiver stopped")?;
            if next.0 == family {
                break next.1;
            }
            early.insert(next.0, next.1);
        };
        latencies.record(arrived.saturating_duration_since(signed_out));
    }
    Ok(latencies)
}
