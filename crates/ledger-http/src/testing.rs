//! What the form parser promises for any request (feature `testing`), shared by the
//! property tests and the fuzz target.

use actix_web::ResponseError;
use actix_web::http::header;
use actix_web::test::TestRequest;

use crate::Form;

/// Parses `body` as a form request with `content_type` (no header when `None`, or
/// when it is not a valid header value): a form whose parameters can be read, or a 4xx
/// in the error shape (I8). `Err` says what broke.
pub fn form_holds(content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
    let mut req = TestRequest::post();
    if let Some(Ok(value)) = content_type.map(header::HeaderValue::from_str) {
        req = req.insert_header((header::CONTENT_TYPE, value));
    }
    match Form::parse(&req.to_http_request(), body) {
        Ok(form) => {
            let _ = form.get("token");
            let _ = form.require("grant_type");
            Ok(())
        }
        Err(e) if e.status.is_client_error() => {
            let _ = e.error_response();
            Ok(())
        }
        Err(e) => Err(format!("a refusal that is not a 4xx: {} {e}", e.status)),
    }
}
