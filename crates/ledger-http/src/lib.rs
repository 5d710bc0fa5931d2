//! HTTP pieces both listeners share: the error body (RFC 6749 §5.2 shape everywhere),
//! bounded form parsing, the service credential check, and `no-store` responses.
//!
//! **API boundary**: only the listener crates use this; the domain never sees HTTP.

#[cfg(test)]
mod fuzz;
pub mod metrics;
pub mod trace;

use std::collections::HashMap;

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
            "a valid service credential is required (Authorization: Bearer <service token>)",
        )
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", description)
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
        for (k, v) in form_urlencoded::parse(body) {
            if params.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(ApiError::invalid_request(format!(
                    "parameter {k} is repeated"
                )));
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

/// Checks `Authorization: Bearer <token>` against the service token in constant time.
#[derive(Clone)]
pub struct ServiceCredential(Vec<u8>);

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceCredential(..)")
    }
}

impl ServiceCredential {
    pub fn new(token: &str) -> Self {
        ServiceCredential(token.as_bytes().to_vec())
    }

    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .ok_or_else(ApiError::unauthorized)?;
        if bool::from(presented.ct_eq(&self.0)) {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
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
