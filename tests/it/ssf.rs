//! The Shared Signals transmitter against a receiver the project did not write the
//! JOSE side of: `tests/ssf-receiver` (Go, SETs verified with lestrrat-go/jwx
//! against our `jwks_uri`), built by `scripts/ssf-receiver.sh`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app_on, str_field};

const TOKEN: &str = "partner-receiver-token-0123456789";
const OTHER: &str = "other-receiver-token-0123456789";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

fn receiver_binary() -> PathBuf {
    let root = crate::helpers::workspace_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/ssf-receiver.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the receiver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

async fn ssf(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, format!("{}{path}", app.api));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `stream` without acknowledging: the SETs it would hand out now.
async fn peek(app: &TestApp, endpoint: &str) -> serde_json::Map<String, Value> {
    let resp = app
        .client
        .post(endpoint)
        .bearer_auth(TOKEN)
        .json(&json!({"maxEvents": 50, "returnImmediately": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert!(body["moreAvailable"].is_boolean(), "{body}");
    body["sets"].as_object().unwrap().clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_receiver_gets_verified_session_revoked_sets_by_push_and_poll_after_being_down() {
    go_receiver_gets_verified_sets(Backend::Embedded).await;
}

/// The same on Kafka + Cassandra: streams and queues in the CQL store, the fan-out
/// on its own consumer group. One partition, so that the log orders the signouts of
/// different families as the test made them (the push order it checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_receiver_gets_verified_session_revoked_sets_by_push_and_poll_on_kafka() {
    go_receiver_gets_verified_sets(Backend::Kafka).await;
}

async fn go_receiver_gets_verified_sets(backend: Backend) {
    let receivers = format!("partner={TOKEN},other={OTHER}");
    let app = spawn_app_on(
        backend,
        &[
            ("LEDGER_SSF_RECEIVER_TOKENS", &receivers),
            ("LEDGER_REFRESH_GRACE", "0s"),
            ("LEDGER_KAFKA_PARTITIONS", "1"),
        ],
    )
    .await;
    let binary = tokio::task::spawn_blocking(receiver_binary).await.unwrap();
    let port = free_port();
    let push_endpoint = format!("http://127.0.0.1:{port}/events");

    // Discovery and stream creation, by the receiver.
    let out = Command::new(&binary)
        .args([
            "create",
            "-transmitter",
            &app.api,
            "-token",
            TOKEN,
            "-push-endpoint",
            &push_endpoint,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["issuer"], "https://ledger.test");
    let push_id = str_field(&created, "push_stream_id").to_owned();
    let poll_id = str_field(&created, "poll_stream_id").to_owned();
    let poll_endpoint = str_field(&created, "poll_endpoint").to_owned();

    // Management errors in their RFC shapes.
    let get = reqwest::Method::GET;
    let q = format!("/ssf/stream?stream_id={push_id}");
    assert_eq!(
        ssf(&app, get.clone(), &q, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ssf(&app, get.clone(), &q, Some("wrong-token-0123456789"), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ssf(&app, get.clone(), &q, Some(OTHER), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ssf(
            &app,
            get.clone(),
            "/ssf/stream?stream_id=nope",
            Some(TOKEN),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (status, listed) = ssf(&app, get.clone(), "/ssf/stream", Some(TOKEN), None).await;
    assert_eq!(
        (status, listed.as_array().map(Vec::len)),
        (StatusCode::OK, Some(2))
    );
    let (status, _) = ssf(&app, get.clone(), "/ssf/stream", Some(OTHER), None).await;
    assert_eq!(status, StatusCode::OK);
    let post = reqwest::Method::POST;
    let bad = json!({"delivery": {"method": "urn:example:carrier-pigeon"}});
    assert_eq!(
        ssf(&app, post.clone(), "/ssf/stream", Some(TOKEN), Some(bad))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let dup = json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": push_endpoint}});
    assert_eq!(
        ssf(&app, post.clone(), "/ssf/stream", Some(TOKEN), Some(dup))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let (status, patched) = ssf(
        &app,
        reqwest::Method::PATCH,
        "/ssf/stream",
        Some(TOKEN),
        Some(json!({"stream_id": push_id, "description": "renamed"})),
    )
    .await;
    assert_eq!(
        (status, &patched["description"]),
        (StatusCode::OK, &json!("renamed"))
    );
    assert_eq!(patched["events_delivered"], json!([SESSION_REVOKED]));
    // A throwaway stream: replaced, then deleted.
    let (status, spare) = ssf(&app, post.clone(), "/ssf/stream", Some(TOKEN),
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [SESSION_REVOKED]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{spare}");
    let spare_id = str_field(&spare, "stream_id").to_owned();
    let (status, replaced) = ssf(
        &app,
        reqwest::Method::PUT,
        "/ssf/stream",
        Some(TOKEN),
        Some(json!({"stream_id": spare_id, "delivery": {"method": "urn:ietf:rfc:8936"}})),
    )
    .await;
    assert_eq!(
        (status, &replaced["events_requested"]),
        (StatusCode::OK, &json!([]))
    );
    let del = format!("/ssf/stream?stream_id={spare_id}");
    assert_eq!(
        ssf(&app, reqwest::Method::DELETE, &del, Some(TOKEN), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ssf(&app, get.clone(), &del, Some(TOKEN), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ssf(
            &app,
            post.clone(),
            "/ssf/subjects:add",
            Some(TOKEN),
            Some(json!({"stream_id": push_id, "subject": {"format": "email", "email": "a@b"}}))
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    // A removed subject gets nothing on that stream.
    let mallory = json!({"format": "iss_sub", "iss": "https://ledger.test", "sub": "mallory"});
    assert_eq!(
        ssf(
            &app,
            post.clone(),
            "/ssf/subjects:remove",
            Some(TOKEN),
            Some(json!({"stream_id": push_id, "subject": mallory}))
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );

    // The poll stream is paused: its events are held.
    let (status, body) = ssf(
        &app,
        post.clone(),
        "/ssf/status",
        Some(TOKEN),
        Some(json!({"stream_id": poll_id, "status": "paused"})),
    )
    .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("paused"))
    );

    // The push receiver is down (nothing listens on its port) while signouts and a
    // reuse detection happen: alice signs out of two sessions, in order; bob's
    // rotated-away refresh token is presented again.
    let a1 = app.login("alice").await;
    let a2 = app.login("alice").await;
    let m = app.login("mallory").await;
    assert_eq!(
        app.revoke(str_field(&a1, "refresh_token")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.revoke(str_field(&a2, "refresh_token")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.revoke(str_field(&m, "refresh_token")).await.status(),
        StatusCode::OK
    );
    let b = app.login("bob").await;
    let first = str_field(&b, "refresh_token");
    app.refresh_ok(first).await;
    assert_eq!(app.refresh(first).await.status(), StatusCode::BAD_REQUEST);
    let sessions = [
        str_field(&a1, "session_id"),
        str_field(&a2, "session_id"),
        str_field(&m, "session_id"),
        str_field(&b, "session_id"),
    ];

    // Held while paused; once enabled, all four are there (the SETs were queued for
    // the push stream in the same fan-out batches).
    let start = std::time::Instant::now();
    let mut held = 0;
    while held < 4 {
        assert!(
            peek(&app, &poll_endpoint).await.is_empty(),
            "a paused stream delivered"
        );
        let (_, status) = ssf(
            &app,
            get.clone(),
            &format!("/ssf/status?stream_id={poll_id}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status["status"], "paused");
        let _ = ssf(
            &app,
            post.clone(),
            "/ssf/status",
            Some(TOKEN),
            Some(json!({"stream_id": poll_id, "status": "enabled"})),
        )
        .await;
        held = peek(&app, &poll_endpoint).await.len();
        let _ = ssf(
            &app,
            post.clone(),
            "/ssf/status",
            Some(TOKEN),
            Some(json!({"stream_id": poll_id, "status": "paused"})),
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {held} sets were queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = ssf(
        &app,
        post.clone(),
        "/ssf/status",
        Some(TOKEN),
        Some(json!({"stream_id": poll_id, "status": "enabled"})),
    )
    .await;

    // The receiver comes up: push (3: mallory was removed) and poll (4) arrive,
    // verified, plus the verification event it asks for.
    let api = app.api.clone();
    let listen = format!("127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&binary)
            .args([
                "receive",
                "-transmitter",
                &api,
                "-token",
                TOKEN,
                "-listen",
                &listen,
                "-poll-endpoint",
                &poll_endpoint,
                "-push-stream",
                &push_id,
                "-expect",
                "3",
                "-verify-state",
                "state-42",
                "-timeout",
                "60s",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let revoked = |via: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["via"] == via && l["event"] == SESSION_REVOKED)
            .cloned()
            .collect()
    };
    let push = revoked("push");
    assert_eq!(push.len(), 3, "{lines:#?}");
    let order: Vec<&str> = push
        .iter()
        .map(|l| l["session"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [sessions[0], sessions[1], sessions[3]],
        "push order per subject: {lines:#?}"
    );
    for l in &push {
        assert_eq!(l["alg"], "RS256");
        assert!(!l["txn"].as_str().unwrap().is_empty());
    }
    assert_eq!(push[0]["user"], "alice");
    assert_eq!(push[0]["initiating_entity"], "user");
    assert_eq!(push[2]["user"], "bob");
    assert_eq!(push[2]["initiating_entity"], "policy");
    assert!(
        push[2]["reason_admin"].as_str().unwrap().contains("reuse"),
        "{:?}",
        push[2]
    );
    assert!(
        lines
            .iter()
            .any(|l| l["via"] == "push" && l["state"] == "state-42"),
        "{lines:#?}"
    );
    let polled: std::collections::BTreeSet<String> = revoked("poll")
        .iter()
        .map(|l| l["session"].as_str().unwrap().to_owned())
        .collect();
    assert!(polled.len() >= 3, "{lines:#?}");
    // Each transaction is one SET per stream, and the same txn on both.
    let push_txns: std::collections::BTreeSet<&str> =
        push.iter().map(|l| l["txn"].as_str().unwrap()).collect();
    assert_eq!(push_txns.len(), 3);

    // The poll receiver acknowledged what it got; only what it had not yet fetched
    // when it stopped may remain.
    let left = peek(&app, str_field(&created, "poll_endpoint")).await;
    assert!(
        left.len() + polled.len() == 4 && left.len() <= 1,
        "left {left:?}, polled {polled:?}"
    );
}
