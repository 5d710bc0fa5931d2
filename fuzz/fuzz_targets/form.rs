//! The form parser on any body and content type: a form or a 4xx in the error shape.
#![no_main]

use actix_web::ResponseError;
use actix_web::http::header;
use actix_web::test::TestRequest;
use ledger_http::Form;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 4] = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "application/json",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let mut req = TestRequest::post();
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    if !content_type.is_empty() {
        req = req.insert_header((header::CONTENT_TYPE, content_type));
    }
    match Form::parse(&req.to_http_request(), body) {
        Ok(form) => {
            let _ = form.get("token");
            let _ = form.require("grant_type");
        }
        Err(e) => {
            assert!(e.status.is_client_error(), "{e}");
            let _ = e.error_response();
        }
    }
});
