//! The transmitter's HTTP endpoints (SSF 1.0 §7, §8; RFC 8936 poll). Only this module
//! knows HTTP. Receivers authenticate with a bearer credential of their own
//! (`LEDGER_SSF_RECEIVER_TOKENS`), and see only their own streams.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use ledger_core::ports::{BackendError, SsfStore, StoredStream};
use ledger_http::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::stream::{Delivery, Status, Stream, StreamRequest, checked_delivery};
use crate::{POLL, PUSH, Transmitter, set};

/// Least time between two verification requests of a stream, in seconds.
pub const MIN_VERIFICATION_INTERVAL_SECS: i64 = 1;
/// Longest a poll without `returnImmediately` waits for a SET.
const LONG_POLL: Duration = Duration::from_secs(15);
/// Most SETs one poll returns.
const MAX_EVENTS: usize = 1000;

/// Receivers' bearer credentials: `name=token` pairs; the name is the streams' `aud`.
#[derive(Clone, Default)]
pub struct ReceiverCredentials(Vec<(String, Vec<u8>)>);

impl std::fmt::Debug for ReceiverCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_tuple("ReceiverCredentials").field(&names).finish()
    }
}

impl ReceiverCredentials {
    /// Parses `name=token[,name=token...]`: names unique, tokens at least 16 bytes.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, token) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not name=token"))?;
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!("receiver name {name:?} must be [A-Za-z0-9._-]+"));
            }
            if token.len() < 16 {
                return Err(format!(
                    "the token of {name} must be at least 16 characters"
                ));
            }
            if out.iter().any(|(n, _)| n == name) {
                return Err(format!("receiver {name} is named twice"));
            }
            out.push((name.to_owned(), token.as_bytes().to_vec()));
        }
        if out.is_empty() {
            return Err("no receiver given".into());
        }
        Ok(ReceiverCredentials(out))
    }

    /// The receiver presenting `Authorization: Bearer <token>` (constant time).
    fn receiver(&self, req: &HttpRequest) -> Result<String, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "a valid receiver credential is required (Authorization: Bearer <token>)",
            )
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .ok_or_else(unauthorized)?;
        let mut found = None;
        for (name, token) in &self.0 {
            if bool::from(presented.ct_eq(token)) {
                found = Some(name.clone());
            }
        }
        found.ok_or_else(unauthorized)
    }
}

/// What the SSF handlers share.
#[derive(Clone, Debug)]
pub struct SsfState {
    pub transmitter: Transmitter,
    pub store: Arc<dyn SsfStore>,
    pub receivers: ReceiverCredentials,
}

/// Registers discovery, the JWKS and the management and poll endpoints.
pub fn configure(state: SsfState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/.well-known/ssf-configuration", web::get().to(discovery))
            .route("/ssf/jwks.json", web::get().to(jwks))
            .route("/ssf/stream", web::get().to(read_stream))
            .route("/ssf/stream", web::post().to(create_stream))
            .route("/ssf/stream", web::patch().to(update_stream))
            .route("/ssf/stream", web::put().to(replace_stream))
            .route("/ssf/stream", web::delete().to(delete_stream))
            .route("/ssf/status", web::get().to(read_status))
            .route("/ssf/status", web::post().to(update_status))
            .route("/ssf/subjects:add", web::post().to(add_subject))
            .route("/ssf/subjects:remove", web::post().to(remove_subject))
            .route("/ssf/verify", web::post().to(verify))
            .route("/ssf/poll/{stream_id}", web::post().to(poll));
    }
}

fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// 503 with `Retry-After` when a retry can help, 500 when it cannot.
fn unavailable(e: BackendError) -> ApiError {
    if e.retryable() {
        ApiError::unavailable(e.to_string())
    } else {
        ApiError::server_error(e.to_string())
    }
}

async fn discovery(req: HttpRequest, state: web::Data<SsfState>) -> HttpResponse {
    let base = base_url(&req);
    HttpResponse::Ok().json(json!({
        "issuer": state.transmitter.issuer,
        "spec_version": "1_0",
        "jwks_uri": format!("{base}/ssf/jwks.json"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": format!("{base}/ssf/stream"),
        "status_endpoint": format!("{base}/ssf/status"),
        "add_subject_endpoint": format!("{base}/ssf/subjects:add"),
        "remove_subject_endpoint": format!("{base}/ssf/subjects:remove"),
        "verification_endpoint": format!("{base}/ssf/verify"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "ALL",
    }))
}

async fn jwks(state: web::Data<SsfState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/jwk-set+json")
        .json(state.transmitter.signer.jwks())
}

/// A JSON body of at most 16 KB.
async fn json_body<T: serde::de::DeserializeOwned>(payload: web::Payload) -> Result<T, ApiError> {
    let body = ledger_http::read_body(payload).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_request(format!("malformed JSON body: {e}")))
}

#[derive(Deserialize)]
struct StreamQuery {
    stream_id: Option<String>,
}

/// The caller's stream: 404 when unknown, 403 when another receiver's.
async fn owned_stream(
    state: &SsfState,
    receiver: &str,
    stream_id: &str,
) -> Result<Stream, ApiError> {
    let stored = state
        .store
        .stream(stream_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("no such stream"))?;
    if stored.receiver != receiver {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the stream belongs to another receiver",
        ));
    }
    serde_json::from_str(&stored.config)
        .map_err(|e| ApiError::server_error(format!("unreadable stream: {e}")))
}

async fn save(state: &SsfState, receiver: &str, stream: &Stream) -> Result<(), ApiError> {
    let config = serde_json::to_string(stream).unwrap_or_default();
    state
        .store
        .put_stream(&StoredStream {
            stream_id: stream.stream_id.clone(),
            receiver: receiver.to_owned(),
            config,
        })
        .await
        .map_err(unavailable)
}

fn required_id(id: Option<String>) -> Result<String, ApiError> {
    id.filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid_request("stream_id is required"))
}

async fn read_stream(
    req: HttpRequest,
    state: web::Data<SsfState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    if let Some(id) = query.into_inner().stream_id {
        let stream = owned_stream(&state, &receiver, &id).await?;
        return Ok(HttpResponse::Ok().json(stream.public()));
    }
    let streams: Vec<Value> =
        crate::delivery::parse_streams(state.store.streams().await.map_err(unavailable)?)
            .into_iter()
            .filter(|(s, _)| s.receiver == receiver)
            .map(|(_, stream)| stream.public())
            .collect();
    Ok(HttpResponse::Ok().json(streams))
}

async fn create_stream(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let request: StreamRequest = json_body(payload).await?;
    let stream_id = uuid::Uuid::new_v4().to_string();
    let poll_url = format!("{}/ssf/poll/{stream_id}", base_url(&req));
    let delivery = request.delivery.clone().unwrap_or(Delivery {
        method: POLL.into(),
        endpoint_url: None,
        authorization_header: None,
    });
    let delivery = checked_delivery(delivery, &poll_url)
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    if delivery.method == PUSH {
        let existing =
            crate::delivery::parse_streams(state.store.streams().await.map_err(unavailable)?);
        if existing.iter().any(|(s, other)| {
            s.receiver == receiver
                && other.is_push()
                && other.delivery.endpoint_url == delivery.endpoint_url
        }) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "a stream of this receiver already pushes to that endpoint",
            ));
        }
    }
    let stream = Stream {
        stream_id,
        iss: state.transmitter.issuer.clone(),
        aud: receiver.clone(),
        events_requested: request.events_requested.unwrap_or_default(),
        delivery,
        description: request.description,
        status: Status::Enabled,
        reason: None,
        removed_subjects: Vec::new(),
        last_verification: None,
    };
    save(&state, &receiver, &stream).await?;
    tracing::info!(stream_id = %stream.stream_id, %receiver, method = %stream.delivery.method, "ssf stream created");
    Ok(HttpResponse::Created().json(stream.public()))
}

async fn change_stream(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
    replace: bool,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let request: StreamRequest = json_body(payload).await?;
    let id = required_id(request.stream_id.clone())?;
    let mut stream = owned_stream(&state, &receiver, &id).await?;
    let poll_url = format!("{}/ssf/poll/{id}", base_url(&req));
    stream
        .apply(request, replace, &poll_url)
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    save(&state, &receiver, &stream).await?;
    state.transmitter.queued.notify_waiters();
    Ok(HttpResponse::Ok().json(stream.public()))
}

async fn update_stream(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    change_stream(req, state, payload, false).await
}

async fn replace_stream(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    change_stream(req, state, payload, true).await
}

async fn delete_stream(
    req: HttpRequest,
    state: web::Data<SsfState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let id = required_id(query.into_inner().stream_id)?;
    owned_stream(&state, &receiver, &id).await?;
    state.store.delete_stream(&id).await.map_err(unavailable)?;
    tracing::info!(stream_id = %id, %receiver, "ssf stream deleted");
    Ok(HttpResponse::NoContent().finish())
}

fn status_body(stream: &Stream) -> Value {
    let mut v = json!({"stream_id": stream.stream_id, "status": stream.status.as_str()});
    if let Some(r) = &stream.reason {
        v["reason"] = json!(r);
    }
    v
}

async fn read_status(
    req: HttpRequest,
    state: web::Data<SsfState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let id = required_id(query.into_inner().stream_id)?;
    let stream = owned_stream(&state, &receiver, &id).await?;
    Ok(HttpResponse::Ok().json(status_body(&stream)))
}

#[derive(Deserialize)]
struct StatusRequest {
    stream_id: Option<String>,
    status: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn update_status(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let request: StatusRequest = json_body(payload).await?;
    let id = required_id(request.stream_id)?;
    let status = request
        .status
        .as_deref()
        .and_then(Status::parse)
        .ok_or_else(|| ApiError::invalid_request("status must be enabled, paused or disabled"))?;
    let mut stream = owned_stream(&state, &receiver, &id).await?;
    stream.status = status;
    stream.reason = request.reason;
    save(&state, &receiver, &stream).await?;
    state.transmitter.queued.notify_waiters();
    tracing::info!(stream_id = %id, status = status.as_str(), "ssf stream status changed");
    Ok(HttpResponse::Ok().json(status_body(&stream)))
}

#[derive(Deserialize)]
struct SubjectRequest {
    stream_id: Option<String>,
    subject: Option<Value>,
}

async fn subject_change(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
    add: bool,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let request: SubjectRequest = json_body(payload).await?;
    let id = required_id(request.stream_id)?;
    let subject = request
        .subject
        .filter(set::subject_supported)
        .ok_or_else(|| {
            ApiError::invalid_request("subject must be an iss_sub or opaque subject identifier")
        })?;
    let mut stream = owned_stream(&state, &receiver, &id).await?;
    stream.removed_subjects.retain(|s| s != &subject);
    if !add {
        stream.removed_subjects.push(subject);
    }
    save(&state, &receiver, &stream).await?;
    Ok(if add {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::NoContent().finish()
    })
}

async fn add_subject(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    subject_change(req, state, payload, true).await
}

async fn remove_subject(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    subject_change(req, state, payload, false).await
}

#[derive(Deserialize)]
struct VerifyRequest {
    stream_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

async fn verify(
    req: HttpRequest,
    state: web::Data<SsfState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let request: VerifyRequest = json_body(payload).await?;
    let id = required_id(request.stream_id)?;
    let mut stream = owned_stream(&state, &receiver, &id).await?;
    let now = ledger_clock::now().unix_seconds();
    if stream
        .last_verification
        .is_some_and(|last| now - last < MIN_VERIFICATION_INTERVAL_SECS)
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "verification requested within min_verification_interval",
        ));
    }
    if stream.status == Status::Disabled {
        return Err(ApiError::invalid_request("the stream is disabled"));
    }
    stream.last_verification = Some(now);
    save(&state, &receiver, &stream).await?;
    let claims = set::verification(
        &state.transmitter.issuer,
        &id,
        &json!(stream.aud),
        request.state.as_deref(),
        now,
    );
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    let token = state.transmitter.signer.sign(&claims);
    state
        .store
        .enqueue(&id, &[(jti, token)])
        .await
        .map_err(unavailable)?;
    state.transmitter.queued.notify_waiters();
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollRequest {
    #[serde(default)]
    max_events: Option<usize>,
    #[serde(default)]
    return_immediately: bool,
    #[serde(default)]
    ack: Option<Vec<String>>,
    #[serde(default)]
    set_errs: Option<serde_json::Map<String, Value>>,
}

/// RFC 8936 §2.4: acknowledges, reports errors, and returns the next SETs (waiting
/// up to [`LONG_POLL`] unless `returnImmediately`).
async fn poll(
    req: HttpRequest,
    state: web::Data<SsfState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let receiver = state.receivers.receiver(&req)?;
    let id = path.into_inner();
    let request: PollRequest = json_body(payload).await?;
    let stream = owned_stream(&state, &receiver, &id).await?;
    if stream.delivery.method != POLL {
        return Err(ApiError::invalid_request("the stream is not a poll stream"));
    }
    let mut done = request.ack.unwrap_or_default();
    for (jti, err) in request.set_errs.iter().flatten() {
        tracing::warn!(stream_id = %id, %jti, error = %err, "receiver reported a set error");
        done.push(jti.clone());
    }
    if !done.is_empty() {
        state.store.ack(&id, &done).await.map_err(unavailable)?;
    }
    let max = request.max_events.unwrap_or(100).min(MAX_EVENTS);
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    loop {
        let woken = state.transmitter.queued.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let stream = owned_stream(&state, &receiver, &id).await?;
        let pending = if max == 0 || stream.status != Status::Enabled {
            Vec::new()
        } else {
            state
                .store
                .pending(&id, max + 1)
                .await
                .map_err(unavailable)?
        };
        if !pending.is_empty()
            || max == 0
            || request.return_immediately
            || tokio::time::Instant::now() >= deadline
        {
            let more = pending.len() > max;
            let sets: serde_json::Map<String, Value> = pending
                .into_iter()
                .take(max)
                .map(|q| (q.jti, Value::String(q.set)))
                .collect();
            return Ok(HttpResponse::Ok().json(json!({"sets": sets, "moreAvailable": more})));
        }
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
