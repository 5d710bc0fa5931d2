//! Kafka outages. This is a test binary of its own because it stops the broker every
//! other Kafka test uses; cargo runs test binaries one at a time, and the tests here
//! take turns (`SERIAL`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ledger_tests::helpers::{self, Backend, services, spawn_app_on, str_field};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "outage/fails_closed.rs"]
mod fails_closed;

/// Starts Kafka again however the test ends, so later test binaries find it up.
struct RestartKafka;

impl Drop for RestartKafka {
    fn drop(&mut self) {
        services("up");
    }
}

/// The tests here each stop the one broker: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_to_issue_while_kafka_is_down_and_recovers() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app_on(Backend::Kafka, &[("LEDGER_KAFKA_DELIVERY_TIMEOUT", "3s")]).await;
    let login = app.login("olivia").await;
    let refresh_token = str_field(&login, "refresh_token").to_owned();

    let restart = RestartKafka;
    services("stop-kafka");

    // No token without an acknowledged event (I1): 503, Retry-After, no token.
    let response = app.open(&json!({"subject": "peter"})).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(body.get("access_token").is_none());
    let response = app.refresh(&refresh_token).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");

    drop(restart);

    // Recovers once Kafka is back: logins work, and the refresh token presented
    // during the outage is still the head (nothing was issued for it).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = app.open(&json!({"subject": "peter"})).await;
        if response.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "the API never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A refresh also waits for the projector to be back (the projection fence): until
    // then it is a 503 with Retry-After, never a token.
    let next = loop {
        let response = app.refresh(&refresh_token).await;
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap();
        if status == StatusCode::OK {
            break body;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(retry_after && body.get("refresh_token").is_none(), "{body}");
        assert!(Instant::now() < deadline, "refresh never recovered: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_ne!(next["refresh_token"], login["refresh_token"]);
}
