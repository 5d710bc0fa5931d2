//! I8: bad input gets a clear 4xx in the standard shape; never a 5xx.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{INTROSPECT_TOKEN, LOGIN_TOKEN, spawn_app, str_field};

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refuses_bad_input_in_the_rfc_6749_shape() {
    let app = spawn_app().await;
    let url = format!("{}/oauth2/token", app.api);
    let c = &app.client;
    let login = app.login("ivan").await;
    let good = str_field(&login, "refresh_token");

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "json body",
            c.post(&url)
                .json(&json!({"grant_type": "refresh_token", "refresh_token": good})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "empty body",
            c.post(&url)
                .header("content-type", "application/x-www-form-urlencoded"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "missing refresh_token",
            c.post(&url).form(&[("grant_type", "refresh_token")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown grant",
            c.post(&url)
                .form(&[("grant_type", "password"), ("username", "x")]),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "repeated parameter",
            c.post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=refresh_token&refresh_token=a&refresh_token=b"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "1 MB token",
            c.post(&url).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &"A".repeat(1 << 20)),
            ]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
        ),
        (
            "forged refresh token",
            c.post(&url).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &forge(good)),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "garbage refresh token",
            c.post(&url).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt1.x.y.z"),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
    ];
    for (name, request, status, code) in cases {
        let (got, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"], code, "{name}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name}"
        );
    }
    // The forged token revoked nothing: the real one still works.
    app.refresh_ok(good).await;
}

/// The same family and generation with a different MAC.
fn forge(token: &str) -> String {
    let (signed, _) = token.rsplit_once('.').unwrap();
    format!("{signed}.{}", "A".repeat(43))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_endpoint_checks_credentials_and_body() {
    let app = spawn_app().await;
    let url = format!("{}/v1/sessions", app.api);
    let c = &app.client;
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "no credential",
            c.post(&url).json(&json!({"subject": "a"})),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "wrong credential",
            c.post(&url)
                .bearer_auth("not-the-token-at-all")
                .json(&json!({"subject": "a"})),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "malformed json",
            c.post(&url)
                .bearer_auth(LOGIN_TOKEN)
                .header("content-type", "application/json")
                .body("{\"subject\":"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "empty subject",
            c.post(&url)
                .bearer_auth(LOGIN_TOKEN)
                .json(&json!({"subject": ""})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "missing subject",
            c.post(&url).bearer_auth(LOGIN_TOKEN).json(&json!({})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown field",
            c.post(&url)
                .bearer_auth(LOGIN_TOKEN)
                .json(&json!({"subject": "a", "subjekt": "b"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "reserved claim",
            c.post(&url)
                .bearer_auth(LOGIN_TOKEN)
                .json(&json!({"subject": "a", "claims": {"sub": "root"}})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "claims not an object",
            c.post(&url)
                .bearer_auth(LOGIN_TOKEN)
                .json(&json!({"subject": "a", "claims": [1]})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "huge body",
            c.post(&url)
                .bearer_auth(LOGIN_TOKEN)
                .json(&json!({"subject": "a".repeat(1 << 20)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
        ),
    ];
    for (name, request, status, code) in cases {
        let (got, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"], code, "{name}: {body}");
    }
    // Custom claims go into the access token.
    let response = app
        .open(&json!({"subject": "judy", "claims": {"scope": "read write", "tenant": 7}}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let claims = app.introspect(str_field(&body, "access_token")).await;
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["tenant"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_endpoints_refuse_bad_input_without_5xx() {
    let app = spawn_app().await;
    let c = &app.client;
    let introspect = format!("{}/oauth2/introspect", app.validator);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "introspect without credential",
            c.post(&introspect).form(&[("token", "x")]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "introspect without token",
            c.post(&introspect)
                .bearer_auth(INTROSPECT_TOKEN)
                .form(&[("x", "y")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "revoke without token",
            c.post(format!("{}/oauth2/revoke", app.api))
                .form(&[("x", "y")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "revoke with json",
            c.post(format!("{}/oauth2/revoke", app.api))
                .json(&json!({"token": "x"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad session id",
            c.get(format!("{}/v1/sessions/nope", app.api))
                .bearer_auth(LOGIN_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown session",
            c.get(format!("{}/v1/sessions/{}", app.api, uuid::Uuid::nil()))
                .bearer_auth(LOGIN_TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            "session without credential",
            c.get(format!("{}/v1/sessions/{}", app.api, uuid::Uuid::nil())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "subject revoke without credential",
            c.post(format!("{}/v1/subjects/a/revoke", app.api)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "revocation lookup bad id",
            c.get(format!("{}/v1/revocations/x", app.validator))
                .bearer_auth(INTROSPECT_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown route",
            c.get(format!("{}/v2/everything", app.api)),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (name, request, status) in cases {
        let (got, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(body["error"].is_string(), "{name}: {body}");
    }
    // RFC 7009: an unknown or garbage token is not an error.
    for token in ["garbage", "rt1.a.b.c", "a.b.c"] {
        assert_eq!(app.revoke(token).await.status(), StatusCode::OK, "{token}");
    }
    // Introspecting garbage is simply inactive.
    for token in ["garbage", "a.b.c", &"x".repeat(10_000)] {
        assert_eq!(app.introspect(token).await, json!({"active": false}));
    }
    let huge = c
        .post(&introspect)
        .bearer_auth(INTROSPECT_TOKEN)
        .form(&[("token", "x".repeat(1 << 20))])
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_lookup_reports_when_why_and_until_when() {
    let app = spawn_app().await;
    let login = app.login("kim").await;
    let id = str_field(&login, "session_id");
    app.revoke(str_field(&login, "refresh_token")).await;
    app.await_active(str_field(&login, "access_token"), false)
        .await;
    let body: Value = app
        .client
        .get(format!("{}/v1/revocations/{id}", app.validator))
        .bearer_auth(INTROSPECT_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["revoked"], true, "{body}");
    assert_eq!(body["reason"], "logout");
    assert!(body["keep_until"].as_str().unwrap() > body["revoked_at"].as_str().unwrap());
}
