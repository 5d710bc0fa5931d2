//! The API listener. Only this module knows HTTP, forms and JSON bodies.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use ledger_core::{Event, FamilyStatus, SessionId, TraceContext};
use ledger_http::{ApiError, Credentials, Form, Scope, no_store_json};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Grant, OpenSession, SessionError, SessionService};

/// Largest JSON body accepted by `POST /v1/sessions`.
const MAX_JSON_BYTES: usize = 16 * 1024;

/// What the API's handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub service: Arc<SessionService>,
    /// The login service's credential ([`Scope::Login`]).
    pub credentials: Credentials,
}

/// Registers the API's routes.
pub fn configure(state: ApiState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .app_data(ledger_http::json_config(MAX_JSON_BYTES))
            .route("/v1/sessions", web::post().to(open_session))
            .route("/v1/sessions/{session_id}", web::get().to(session_status))
            .route(
                "/v1/subjects/{subject}/revoke",
                web::post().to(revoke_subject),
            )
            .route("/oauth2/token", web::post().to(token))
            .route("/oauth2/revoke", web::post().to(revoke))
            .route("/.well-known/jwks.json", web::get().to(jwks))
            .route("/metrics", web::get().to(ledger_http::metrics::handler))
            .route("/healthz", web::get().to(ledger_http::healthz))
            .route("/readyz", web::get().to(readyz));
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::InvalidRequest(m) => ApiError::invalid_request(m),
            SessionError::InvalidGrant(m) => ApiError::invalid_grant(m),
            SessionError::NotFound => ApiError::not_found("unknown session"),
            SessionError::Unavailable(m) => ApiError::unavailable(m),
            SessionError::Internal(m) => ApiError::server_error(m),
        }
    }
}

/// The W3C trace context of the request, carried into the events it causes.
fn trace_context(req: &HttpRequest) -> Option<TraceContext> {
    ledger_http::trace::request_trace_context(req).map(|(traceparent, tracestate)| TraceContext {
        traceparent,
        tracestate,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    subject: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    claims: Option<serde_json::Value>,
}

/// RFC 6749 §5.1, plus the session id and the session's deadline.
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: &'a str,
    refresh_expires_in: u64,
    session_id: SessionId,
    session_expires_at: ledger_core::Timestamp,
}

fn token_response(status: StatusCode, grant: &Grant) -> HttpResponse {
    no_store_json(
        status,
        &TokenResponse {
            access_token: &grant.access_token,
            token_type: "Bearer",
            expires_in: grant.expires_in,
            refresh_token: &grant.refresh_token,
            refresh_expires_in: grant.refresh_expires_in,
            session_id: grant.session_id,
            session_expires_at: grant.session_expires_at,
        },
    )
}

async fn open_session(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    // The caller first; the body is read only for the login service.
    state.credentials.check(&req, Scope::Login)?;
    let body: OpenRequest = ledger_http::read_json(&req, payload, MAX_JSON_BYTES).await?;
    let grant = state
        .service
        .open(
            OpenSession {
                subject: body.subject,
                client_id: body.client_id,
                claims: body.claims,
            },
            trace_context(&req),
        )
        .await?;
    Ok(token_response(StatusCode::CREATED, &grant))
}

async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let form = Form::read(&req, payload).await?;
    match form.require("grant_type")? {
        "refresh_token" => {}
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {} is not supported; use refresh_token",
                    other.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    let refresh_token = form.require("refresh_token")?;
    let grant = state
        .service
        .refresh(refresh_token, trace_context(&req))
        .await?;
    Ok(token_response(StatusCode::OK, &grant))
}

async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let form = Form::read(&req, payload).await?;
    let token = form.require("token")?;
    state
        .service
        .revoke_token(token, form.get("token_type_hint"), trace_context(&req))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

async fn revoke_subject(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    state.credentials.check(&req, Scope::Login)?;
    let revocation = state
        .service
        .revoke_subject(&path, trace_context(&req))
        .await?;
    Ok(no_store_json(
        StatusCode::OK,
        &json!({
            "subject": revocation.subject,
            "revoked_at": revocation.revoked_at,
            "reason": revocation.reason,
            "keep_until": revocation.keep_until,
        }),
    ))
}

async fn session_status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    state.credentials.check(&req, Scope::Login)?;
    let id = SessionId::parse(&path)
        .map_err(|e| ApiError::invalid_request(format!("session id: {e}")))?;
    let view = state.service.session(id).await?;
    let s = &view.state;
    let revocation = match view.status {
        FamilyStatus::Revoked { at, reason } => json!({ "at": at, "reason": reason }),
        _ => serde_json::Value::Null,
    };
    let history: Vec<&Event> = view.history.iter().collect();
    Ok(no_store_json(
        StatusCode::OK,
        &json!({
            "session_id": s.session_id,
            "subject": s.subject,
            "client_id": s.client_id,
            "status": view.status.as_str(),
            "generation": s.head.map(|h| h.generation),
            "started_at": s.window.started_at,
            "deadline": s.window.expires_at,
            "refresh_expires_at": s.head.map(|h| h.refresh_expires_at),
            "access_expires_at": s.access_expires_at,
            "revocation": revocation,
            "history": history,
        }),
    ))
}

async fn jwks(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.service.jwks())
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    if state.service.ready().await {
        HttpResponse::Ok().json(json!({ "ready": true }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "ready": false }))
    }
}
