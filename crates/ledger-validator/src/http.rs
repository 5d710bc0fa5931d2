//! The validator's listener: RFC 7662 introspection, revocation lookups and the
//! revocation stream (Server-Sent Events, embedded backend).

use std::sync::{Arc, LazyLock};

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use ledger_core::SessionId;
use ledger_http::{ApiError, Credentials, Form, Scope, no_store_json};
use ledger_telemetry::metrics::register;
use ledger_token::AccessClaims;
use prometheus::{IntCounterVec, Opts};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::stream::{RevocationStream, StreamError, StreamPosition};
use crate::{Introspection, Introspector, JwksStatus};

static INTROSPECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "ledger_introspections_total",
            "introspection answers by result (active, invalid_token, revoked, stale_view)",
        ),
        &["result"],
    ))
});

/// What the validator's handlers share.
#[derive(Clone, Debug)]
pub struct ValidatorState {
    pub introspector: Introspector,
    /// Resource servers' credentials ([`Scope::Introspect`]).
    pub credentials: Credentials,
    /// `GET /v1/revocations/stream`.
    pub revocation_stream: StreamEndpoint,
    /// The JWKS refresher's status, when the keys come from `LEDGER_JWKS_URL`.
    pub jwks: Option<Arc<JwksStatus>>,
}

/// Whether this listener serves the revocation stream.
#[derive(Clone, Debug)]
pub enum StreamEndpoint {
    /// Served from this log.
    Served(RevocationStream),
    /// Not served here: a `404` whose description says where the revocations are.
    Elsewhere(String),
}

/// Registers the validator's routes.
pub fn configure(state: ValidatorState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/oauth2/introspect", web::post().to(introspect))
            // Before `{session_id}`, which would take "stream" for an id.
            .route("/v1/revocations/stream", web::get().to(revocation_stream))
            .route("/v1/revocations/{session_id}", web::get().to(revocation))
            .route("/v1/status", web::get().to(status))
            .route("/metrics", web::get().to(ledger_http::metrics::handler))
            .route("/healthz", web::get().to(ledger_http::healthz))
            .route("/readyz", web::get().to(readyz));
    }
}

async fn introspect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ValidatorState>,
) -> Result<HttpResponse, ApiError> {
    state.credentials.check(&req, Scope::Introspect)?;
    let form = Form::read(&req, payload).await?;
    let token = form.require("token")?;
    let outcome = state.introspector.introspect(token, ledger_clock::now());
    INTROSPECTIONS.with_label_values(&[outcome.reason()]).inc();
    match &outcome {
        Introspection::Active(claims) => Ok(no_store_json(StatusCode::OK, &ActiveAnswer(claims))),
        other => {
            tracing::debug!(reason = other.reason(), detail = ?other, "token not active");
            if let Introspection::Stale(v) = other {
                tracing::warn!(verdict = ?v, "introspection failed closed: revocation view is stale");
            }
            Ok(no_store_json(
                StatusCode::OK,
                &InactiveAnswer { active: false },
            ))
        }
    }
}

/// The members an active answer sets itself; a login service's extra claim of the
/// same name is not echoed.
const ANSWER_MEMBERS: [&str; 10] = [
    "active",
    "token_type",
    "iss",
    "aud",
    "sub",
    "sid",
    "jti",
    "iat",
    "exp",
    "client_id",
];

/// The RFC 7662 answer for an active token, written straight from the verified
/// claims (every claim is echoed; extra claims after ours, never replacing them).
struct ActiveAnswer<'a>(&'a AccessClaims);

impl Serialize for ActiveAnswer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("active", &true)?;
        map.serialize_entry("token_type", "Bearer")?;
        map.serialize_entry("iss", &c.iss)?;
        map.serialize_entry("aud", &c.aud)?;
        map.serialize_entry("sub", &c.sub)?;
        map.serialize_entry("sid", &c.sid)?;
        map.serialize_entry("jti", &c.jti)?;
        map.serialize_entry("iat", &c.iat)?;
        map.serialize_entry("exp", &c.exp)?;
        if let Some(client_id) = &c.client_id {
            map.serialize_entry("client_id", client_id)?;
        }
        for (k, v) in &c.extra {
            if !ANSWER_MEMBERS.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct InactiveAnswer {
    active: bool,
}

async fn revocation(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ValidatorState>,
) -> Result<HttpResponse, ApiError> {
    state.credentials.check(&req, Scope::Introspect)?;
    let id = SessionId::parse(&path)
        .map_err(|e| ApiError::invalid_request(format!("session id: {e}")))?;
    let view = state.introspector.view();
    let status = view.status();
    // `?subject=…` lets a subject-wide revocation count too: the view keeps no
    // family's subject, only what token checks need.
    let subject = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "subject")
        .map(|(_, v)| v.into_owned());
    let revoked = match &subject {
        Some(s) => view.revocation_for(id, s),
        None => view.revocation(id),
    };
    let body = match revoked {
        Some(r) => json!({
            "session_id": id,
            "revoked": true,
            "revoked_at": r.at,
            "reason": r.reason,
            "keep_until": r.keep_until,
            "view_caught_up_at": status.caught_up_at,
        }),
        None => json!({
            "session_id": id,
            "revoked": false,
            "known": view.family(id).is_some(),
            "view_caught_up_at": status.caught_up_at,
        }),
    };
    Ok(no_store_json(StatusCode::OK, &body))
}

/// `GET /v1/revocations/stream[?from=<position>]`: the revocations after the
/// position, then live (`text/event-stream`, see [`crate::stream`]). `Last-Event-ID`,
/// which an `EventSource` sends when it reconnects to the same URL, wins over `from`.
async fn revocation_stream(
    req: HttpRequest,
    state: web::Data<ValidatorState>,
) -> Result<HttpResponse, ApiError> {
    state.credentials.check(&req, Scope::Introspect)?;
    let stream = match &state.revocation_stream {
        StreamEndpoint::Served(stream) => stream,
        StreamEndpoint::Elsewhere(hint) => return Err(ApiError::not_found(hint.clone())),
    };
    let after = resume_position(&req)?;
    let rx = stream.open(after).await.map_err(|e| match e {
        StreamError::Malformed(_) | StreamError::Beyond { .. } => {
            ApiError::invalid_request(e.to_string())
        }
        StreamError::Unsupported => ApiError::not_found(e.to_string()),
        StreamError::Backend(e) if e.retryable() => {
            tracing::warn!(error = %e, "revocation stream: cannot open the log");
            ApiError::unavailable("the log cannot be read now")
        }
        StreamError::Backend(e) => {
            tracing::error!(error = %e, "revocation stream: cannot open the log");
            ApiError::server_error("the log cannot be read")
        }
    })?;
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // nginx: pass events on as they come.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Where a consumer resumes: `Last-Event-ID`, else `?from=`, else the beginning.
fn resume_position(req: &HttpRequest) -> Result<Option<StreamPosition>, ApiError> {
    let invalid = |what: &str, e: StreamError| ApiError::invalid_request(format!("{what}: {e}"));
    if let Some(value) = req.headers().get("last-event-id") {
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid_request("Last-Event-ID: not a position of this log"))?
            .trim();
        // An empty id is what an EventSource holds before any event: no position.
        if !value.is_empty() {
            return StreamPosition::parse(value)
                .map(Some)
                .map_err(|e| invalid("Last-Event-ID", e));
        }
    }
    let mut from = None;
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        if k == "from" && from.replace(v).is_some() {
            return Err(ApiError::invalid_request("parameter from is repeated"));
        }
    }
    from.map(|v| StreamPosition::parse(&v).map_err(|e| invalid("from", e)))
        .transpose()
}

async fn status(state: web::Data<ValidatorState>) -> HttpResponse {
    let view = state.introspector.view();
    let s = view.status();
    let now = ledger_clock::now();
    let positions: Vec<Value> = s
        .positions
        .iter()
        .map(|p| json!({ "partition": p.partition, "next_offset": p.offset }))
        .collect();
    let mut body = json!({
        "bootstrapped": s.bootstrapped,
        "positions": positions,
        "lag": s.lag,
        "caught_up_at": s.caught_up_at,
        "staleness_ms": s.caught_up_at.map(|t| now.duration_since(t).as_millis()),
        "max_staleness_ms": view.max_staleness().as_millis(),
        "stale": view.staleness(now).is_some(),
        "tail_error": s.tail_error,
        "families": s.families,
        "subjects": s.subjects,
    });
    if let Some(jwks) = &state.jwks {
        body["jwks"] = jwks.report();
    }
    HttpResponse::Ok().json(body)
}

async fn readyz(state: web::Data<ValidatorState>) -> HttpResponse {
    let view = state.introspector.view();
    let s = view.status();
    // Ready only once the view has provably read the log to the end it saw at start,
    // and while it stays within the staleness bound.
    let reason = if !s.bootstrapped {
        Some("bootstrapping")
    } else if view.staleness(ledger_clock::now()).is_some() {
        Some("stale")
    } else {
        None
    };
    match reason {
        None => HttpResponse::Ok().json(json!({ "ready": true })),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "reason": reason, "tail_error": s.tail_error })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(extra: Value) -> AccessClaims {
        AccessClaims {
            iss: "https://issuer.test".into(),
            aud: "api".into(),
            sub: "alice".into(),
            sid: "01a22714-95f5-7569-9378-0e16f704cc02".into(),
            jti: "j1".into(),
            iat: 1_700_000_000,
            exp: 1_700_000_900,
            nbf: None,
            client_id: Some("web".into()),
            extra: extra.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn an_active_answer_echoes_every_claim() {
        let c = claims(json!({"scope": "read write", "tenant": 7}));
        let body = serde_json::to_value(ActiveAnswer(&c)).unwrap();
        assert_eq!(
            body,
            json!({
                "active": true, "token_type": "Bearer", "iss": "https://issuer.test",
                "aud": "api", "sub": "alice", "sid": "01a22714-95f5-7569-9378-0e16f704cc02",
                "jti": "j1", "iat": 1_700_000_000, "exp": 1_700_000_900, "client_id": "web",
                "scope": "read write", "tenant": 7,
            })
        );
        // Written with "active" first: clients may read the answer's start.
        let text = serde_json::to_string(&ActiveAnswer(&c)).unwrap();
        assert!(text.starts_with(r#"{"active":true,"#), "{text}");
    }

    #[test]
    fn extra_claims_never_replace_the_answers_own_members() {
        let mut c = claims(json!({"active": false, "token_type": "x", "scope": "s"}));
        c.client_id = None;
        let text = serde_json::to_string(&ActiveAnswer(&c)).unwrap();
        assert_eq!(text.matches("\"active\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"token_type\"").count(), 1, "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["active"], true);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "s");
        assert!(body.get("client_id").is_none());
    }
}
