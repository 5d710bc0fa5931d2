//! The validator's listener: RFC 7662 introspection and revocation lookups.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ledger_core::{SessionId, Timestamp};
use ledger_http::metrics::register;
use ledger_http::{ApiError, Credentials, Form, Scope, no_store_json};
use prometheus::{IntCounterVec, Opts};
use serde_json::{Value, json};

use crate::{Introspection, Introspector};

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
}

/// Registers the validator's routes.
pub fn configure(state: ValidatorState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/oauth2/introspect", web::post().to(introspect))
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
    let outcome = state.introspector.introspect(token, Timestamp::now());
    INTROSPECTIONS.with_label_values(&[outcome.reason()]).inc();
    let body = match &outcome {
        Introspection::Active(claims) => {
            let mut body = json!({
                "active": true,
                "token_type": "Bearer",
                "iss": claims.iss,
                "aud": claims.aud,
                "sub": claims.sub,
                "sid": claims.sid,
                "jti": claims.jti,
                "iat": claims.iat,
                "exp": claims.exp,
            });
            if let (Some(client_id), Some(obj)) = (&claims.client_id, body.as_object_mut()) {
                obj.insert("client_id".into(), Value::from(client_id.clone()));
            }
            if let Some(obj) = body.as_object_mut() {
                for (k, v) in &claims.extra {
                    obj.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            body
        }
        other => {
            tracing::debug!(reason = other.reason(), detail = ?other, "token not active");
            if let Introspection::Stale(v) = other {
                tracing::warn!(verdict = ?v, "introspection failed closed: revocation view is stale");
            }
            json!({ "active": false })
        }
    };
    Ok(no_store_json(StatusCode::OK, &body))
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

async fn status(state: web::Data<ValidatorState>) -> HttpResponse {
    let view = state.introspector.view();
    let s = view.status();
    let now = Timestamp::now();
    let positions: Vec<Value> = s
        .positions
        .iter()
        .map(|p| json!({ "partition": p.partition, "next_offset": p.offset }))
        .collect();
    HttpResponse::Ok().json(json!({
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
    }))
}

async fn readyz(state: web::Data<ValidatorState>) -> HttpResponse {
    let view = state.introspector.view();
    let s = view.status();
    // Ready only once the view has provably read the log to the end it saw at start,
    // and while it stays within the staleness bound.
    let reason = if !s.bootstrapped {
        Some("bootstrapping")
    } else if view.staleness(Timestamp::now()).is_some() {
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
