//! HTTP pieces both listeners share: the error body (RFC 6749 §5.2 shape everywhere),
//! bounded form parsing, the scoped service credentials, and `no-store` responses.
//!
//! **API boundary**: only the listener crates use this; the domain never sees HTTP.

#[cfg(test)]
mod fuzz;
pub mod metrics;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;
use subtle::ConstantTimeEq;

/// Largest request body accepted on form endpoints; a token is never near it.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// An error answered with `{"error": code, "error_description": text}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Seconds for `Retry-After` (503 only).
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "a valid service credential is required (Authorization: Bearer <token>)",
        )
    }

    /// A known credential that may not call this endpoint (RFC 6750 §3.1).
    pub fn forbidden(scope: Scope) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "this credential may not call this endpoint (it needs the {} scope)",
                scope.as_str()
            ),
        )
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", description)
    }

    /// The backend refused in a way a retry cannot fix: nothing was promised, and no
    /// `Retry-After` invites a client to try again.
    pub fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            description,
        )
    }

    /// The backend could not acknowledge: nothing was promised, retrying is safe.
    pub fn unavailable(description: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                description,
            )
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(ErrorBody {
            error: self.code,
            error_description: &self.description,
        })
    }
}

/// A JSON body with `Cache-Control: no-store` (RFC 6749 §5.1 for token responses).
pub fn no_store_json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// Parameters of an `application/x-www-form-urlencoded` body, each at most once
/// (RFC 6749 §3.2). Empty values count as absent.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

/// The `(name, value)` pairs of a form body, exactly as [`form_urlencoded::parse`]
/// reads them, but borrowed without decoding when there is nothing to decode (no `%`,
/// no `+`, valid UTF-8): a token's bytes are not copied, nor checked twice.
pub fn form_pairs(body: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let plain = !body.iter().any(|&b| b == b'%' || b == b'+');
    let borrowed = if plain {
        std::str::from_utf8(body).ok()
    } else {
        None
    };
    let (fast, slow) = match borrowed {
        Some(text) => (Some(text), None),
        None => (None, Some(form_urlencoded::parse(body))),
    };
    let fast = fast.into_iter().flat_map(|text| {
        text.split('&').filter(|p| !p.is_empty()).map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (Cow::Borrowed(name), Cow::Borrowed(value))
        })
    });
    fast.chain(slow.into_iter().flatten())
}

impl Form {
    pub fn parse(req: &HttpRequest, body: &[u8]) -> Result<Form, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(ApiError::invalid_request(
                "the request body must be application/x-www-form-urlencoded",
            ));
        }
        let mut params = HashMap::new();
        for (k, v) in form_pairs(body) {
            match params.entry(k.into_owned()) {
                Entry::Occupied(seen) => {
                    return Err(ApiError::invalid_request(format!(
                        "parameter {} is repeated",
                        seen.key()
                    )));
                }
                Entry::Vacant(new) => {
                    new.insert(v.into_owned());
                }
            }
        }
        params.retain(|_, v: &mut String| !v.is_empty());
        Ok(Form(params))
    }

    /// Reads a form endpoint's bounded body (see [`read_body`]) and parses it.
    pub async fn read(req: &HttpRequest, payload: web::Payload) -> Result<Form, ApiError> {
        let body = read_body(payload).await?;
        Form::parse(req, &body)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::invalid_request(format!("missing parameter {name}")))
    }
}

/// Reads a form endpoint's body, refusing more than [`MAX_FORM_BYTES`] in the error
/// shape (a 1 MB "token" gets a 413 `invalid_request`, never a 5xx).
pub async fn read_body(payload: web::Payload) -> Result<web::Bytes, ApiError> {
    match payload.to_bytes_limited(MAX_FORM_BYTES).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ApiError::invalid_request(format!(
            "unreadable request body: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("request body exceeds {MAX_FORM_BYTES} bytes"),
        )),
    }
}

/// Reads a JSON body of at most `limit` bytes into `T`, after the handler has checked
/// the caller (an extractor would parse it before any check). Errors as
/// [`json_config`] answers them.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::invalid_request(
            "the request body must be application/json",
        ));
    }
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return Err(ApiError::invalid_request(format!(
                "unreadable request body: {e}"
            )));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("request body exceeds {limit} bytes"),
            ));
        }
    };
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_request(format!("malformed JSON body: {e}")))
}

/// JSON bodies: bounded, and malformed ones answered with `invalid_request`.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| {
            use actix_web::error::JsonPayloadError as J;
            match err {
                J::OverflowKnownLength { .. } | J::Overflow { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    format!("request body exceeds {limit} bytes"),
                )
                .into(),
                J::ContentType => {
                    ApiError::invalid_request("the request body must be application/json").into()
                }
                other => ApiError::invalid_request(format!("malformed JSON body: {other}")).into(),
            }
        })
}

/// What a bearer credential may call. Each route names the one scope it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// The login service: open sessions, revoke a subject, read a session.
    Login,
    /// Resource servers: introspection and revocation lookups.
    Introspect,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Login => "login",
            Scope::Introspect => "introspect",
        }
    }
}

/// The bearer credentials a listener accepts, each granting one or more [`Scope`]s.
/// Checked in constant time against every credential.
#[derive(Clone, Default)]
pub struct Credentials {
    grants: Vec<(Vec<u8>, Scope)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.grants.iter().map(|(_, scope)| scope))
            .finish()
    }
}

impl Credentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `token` call the endpoints of `scope` (a token may hold several scopes).
    pub fn grant(&mut self, token: &str, scope: Scope) -> &mut Self {
        self.grants.push((token.as_bytes().to_vec(), scope));
        self
    }

    /// Whether any credential grants `scope`.
    pub fn grants(&self, scope: Scope) -> bool {
        self.grants.iter().any(|(_, s)| *s == scope)
    }

    /// `Authorization: Bearer <token>` must name a credential granting `scope`: `401
    /// invalid_client` for none or an unknown one, `403 insufficient_scope` for a
    /// known credential without the scope. Call it before reading the body.
    pub fn check(&self, req: &HttpRequest, scope: Scope) -> Result<(), ApiError> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .ok_or_else(ApiError::unauthorized)?;
        // Every credential is compared, so the time taken says nothing about which.
        let (mut known, mut allowed) = (subtle::Choice::from(0), subtle::Choice::from(0));
        for (token, granted) in &self.grants {
            let same = presented.ct_eq(token);
            known |= same;
            allowed |= same & subtle::Choice::from(u8::from(*granted == scope));
        }
        match (bool::from(known), bool::from(allowed)) {
            (_, true) => Ok(()),
            (true, false) => Err(ApiError::forbidden(scope)),
            (false, false) => Err(ApiError::unauthorized()),
        }
    }
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// A 404 in the error shape for unknown routes.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such endpoint"))
}
