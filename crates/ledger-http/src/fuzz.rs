//! Property tests on random and structured-random input for the form parser (and the
//! other request parsing both listeners share): none may panic, and every refusal is
//! a 4xx in the error shape (I8). Bounded by `PROPTEST_CASES` (default [`CASES`]; set
//! it higher for a longer run).

use actix_web::http::header;
use actix_web::test::TestRequest;
use proptest::prelude::*;

use crate::{Credentials, Scope, trace};

const CASES: u32 = 4096;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `k=v&k=v…` with percent escapes (valid, truncated and bogus), `+`, empty pieces
/// and repeated names.
fn form_body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "[a-z_]{0,12}",
        "(%[0-9a-fA-F]{2}|%[0-9a-zA-Z]?|\\+|[^&=]){0,16}",
        prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    prop::collection::vec((piece.clone(), prop::option::of(piece)), 0..8).prop_map(|pairs| {
        let mut body = String::new();
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            if i > 0 {
                body.push('&');
            }
            body.push_str(&k);
            if let Some(v) = v {
                body.push('=');
                body.push_str(&v);
            }
        }
        body.into_bytes()
    })
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/x-www-form-urlencoded".to_owned()),
        Just("APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8".to_owned()),
        "[ -~]{0,48}",
    ]
}

/// [`crate::testing::form_holds`] as a property.
fn check_form(content_type: &str, body: &[u8]) -> Result<(), TestCaseError> {
    crate::testing::form_holds(Some(content_type), body).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn form_parser_survives_any_bytes(
        content_type in content_type(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_form(&content_type, &body)?;
    }

    #[test]
    fn form_parser_survives_structured_forms(
        content_type in content_type(),
        body in form_body(),
    ) {
        check_form(&content_type, &body)?;
    }

    #[test]
    fn form_pairs_read_every_body_as_form_urlencoded_does(
        body in prop_oneof![form_body(), prop::collection::vec(any::<u8>(), 0..128)],
    ) {
        let ours: Vec<_> = crate::form_pairs(&body).collect();
        let reference: Vec<_> = form_urlencoded::parse(&body).collect();
        prop_assert_eq!(ours, reference);
    }

    #[test]
    fn credentials_and_trace_headers_survive_any_values(
        authorization in prop::collection::vec(any::<u8>(), 0..64),
        traceparent in prop_oneof![
            "00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-9a-f]",
            "[ -~]{0,64}",
        ],
        tracestate in "[ -~]{0,64}",
    ) {
        let mut req = TestRequest::post();
        if let Ok(v) = header::HeaderValue::from_bytes(&authorization) {
            req = req.insert_header((header::AUTHORIZATION, v));
        }
        if let Ok(v) = header::HeaderValue::from_str(&traceparent) {
            req = req.insert_header(("traceparent", v));
        }
        if let Ok(v) = header::HeaderValue::from_str(&tracestate) {
            req = req.insert_header(("tracestate", v));
        }
        let req = req.to_http_request();
        let mut credentials = Credentials::new();
        credentials.grant("a-service-credential", Scope::Login);
        if let Err(e) = credentials.check(&req, Scope::Login) {
            prop_assert_eq!(e.status.as_u16(), 401);
        }
        let _ = trace::valid_traceparent(&traceparent);
        let _ = trace::request_trace_context(&req);
    }
}
