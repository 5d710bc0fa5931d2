//! The behaviour contract: every test runs on every backend (see `main.rs`).

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, LOGIN_TOKEN, spawn_app_on, str_field};

pub async fn login_refresh_introspect_signout_introspect(backend: Backend) {
    let app = spawn_app_on(backend, &[]).await;
    let login = app.login("alice").await;
    assert_eq!(login["token_type"], "Bearer");
    assert!(login["expires_in"].as_u64().unwrap() > 800);
    let session_id = str_field(&login, "session_id");

    let refreshed = app.refresh_ok(str_field(&login, "refresh_token")).await;
    assert_eq!(refreshed["session_id"], session_id);
    assert_ne!(refreshed["refresh_token"], login["refresh_token"]);
    let access = str_field(&refreshed, "access_token");

    app.await_active(access, true).await;
    let claims = app.introspect(access).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], session_id);
    assert_eq!(claims["client_id"], "web");
    assert_eq!(claims["iss"], "https://ledger.test");
    assert_eq!(claims["aud"], "resource-servers");

    let revoked = app.revoke(str_field(&refreshed, "refresh_token")).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    app.await_active(access, false).await;

    // The API refuses at once: the newest refresh token is dead.
    let after = app.refresh(str_field(&refreshed, "refresh_token")).await;
    assert_eq!(after.status(), StatusCode::BAD_REQUEST);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");

    let status = app.status(session_id).await;
    assert_eq!(status["status"], "revoked");
    assert_eq!(status["revocation"]["reason"], "logout");
    assert_eq!(status["generation"], 1);
    // History is read from the projection: it follows the log within the projector's lag.
    let types = app.await_history(session_id, 3).await;
    assert_eq!(
        types,
        ["SessionIssued", "SessionRefreshed", "SessionRevokedAll"]
    );
}

pub async fn sixteen_concurrent_refreshes_yield_one_successor(backend: Backend) {
    let app = spawn_app_on(backend, &[]).await;
    let login = app.login("tabs").await;
    let token = str_field(&login, "refresh_token").to_owned();
    let requests = (0..16).map(|_| app.refresh(&token));
    let responses = futures::future::join_all(requests).await;
    let mut successors = BTreeSet::new();
    let mut access_tokens = BTreeSet::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        successors.insert(str_field(&body, "refresh_token").to_owned());
        access_tokens.insert(str_field(&body, "access_token").to_owned());
    }
    assert_eq!(successors.len(), 1, "{successors:?}");
    assert_eq!(
        access_tokens.len(),
        16,
        "each answer has its own access token"
    );
    let status = app.status(str_field(&login, "session_id")).await;
    assert_eq!(status["generation"], 1, "grace retries are not counted");
    assert_eq!(status["status"], "active");
    // The one successor works.
    app.refresh_ok(successors.first().unwrap()).await;
}

pub async fn signout_kills_every_generation(backend: Backend) {
    let app = spawn_app_on(backend, &[]).await;
    let login = app.login("carol").await;
    let mut access = vec![str_field(&login, "access_token").to_owned()];
    let mut refresh = str_field(&login, "refresh_token").to_owned();
    for _ in 0..3 {
        let next = app.refresh_ok(&refresh).await;
        access.push(str_field(&next, "access_token").to_owned());
        refresh = str_field(&next, "refresh_token").to_owned();
    }
    for token in &access {
        app.await_active(token, true).await;
    }
    // Sign out with the newest access token (RFC 7009 accepts either kind).
    let response = app
        .client
        .post(format!("{}/oauth2/revoke", app.api))
        .form(&[
            ("token", access[3].as_str()),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for token in &access {
        app.await_active(token, false).await;
    }
    assert_eq!(
        app.refresh(&refresh).await.status(),
        StatusCode::BAD_REQUEST
    );
}

pub async fn reuse_after_grace_revokes_the_family_and_says_why(backend: Backend) {
    let app = spawn_app_on(backend, &[("LEDGER_REFRESH_GRACE", "0s")]).await;
    let login = app.login("dave").await;
    let first = str_field(&login, "refresh_token");
    let second = app.refresh_ok(first).await;

    let replay = app.refresh(first).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        str_field(&body, "error_description").contains("already used"),
        "{body}"
    );

    // The legitimate holder of the newest token is out too, and validators agree.
    let newest = app.refresh(str_field(&second, "refresh_token")).await;
    assert_eq!(newest.status(), StatusCode::BAD_REQUEST);
    app.await_active(str_field(&second, "access_token"), false)
        .await;
    let status = app.status(str_field(&login, "session_id")).await;
    assert_eq!(status["revocation"]["reason"], "reuse_detected");
    app.await_history(str_field(&login, "session_id"), 3).await;
    let status = app.status(str_field(&login, "session_id")).await;
    let last = status["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["data"]["replayed_generation"], 0);
}

pub async fn retry_within_grace_gets_the_same_successor(backend: Backend) {
    let app = spawn_app_on(
        backend,
        &[
            ("LEDGER_REFRESH_GRACE", "1h"),
            ("LEDGER_REFRESH_IDLE_TTL", "2h"),
        ],
    )
    .await;
    let login = app.login("erin").await;
    let first = str_field(&login, "refresh_token");
    let a = app.refresh_ok(first).await;
    let b = app.refresh_ok(first).await;
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    assert_ne!(a["access_token"], b["access_token"]);
}

pub async fn subject_revoke_signs_out_everywhere_but_not_later_logins(backend: Backend) {
    let app = spawn_app_on(backend, &[]).await;
    let phone = app.login("frank").await;
    let laptop = app.login("frank").await;
    let other = app.login("grace").await;
    let response = app
        .client
        .post(format!("{}/v1/subjects/frank/revoke", app.api))
        .bearer_auth(LOGIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "admin");

    for session in [&phone, &laptop] {
        assert_eq!(
            app.refresh(str_field(session, "refresh_token"))
                .await
                .status(),
            StatusCode::BAD_REQUEST
        );
        app.await_active(str_field(session, "access_token"), false)
            .await;
    }
    app.await_active(str_field(&other, "access_token"), true)
        .await;
    let later = app.login("frank").await;
    app.refresh_ok(str_field(&later, "refresh_token")).await;
    app.await_active(str_field(&later, "access_token"), true)
        .await;
}

pub async fn jwks_publishes_the_signing_key(backend: Backend) {
    let app = spawn_app_on(backend, &[]).await;
    let jwks: Value = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login = app.login("heidi").await;
    let header = str_field(&login, "access_token")
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
}

pub async fn trace_context_reaches_the_log(backend: Backend) {
    let app = spawn_app_on(backend, &[]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .client
        .post(format!("{}/v1/sessions", app.api))
        .bearer_auth(LOGIN_TOKEN)
        .header("traceparent", traceparent)
        .json(&serde_json::json!({ "subject": "tracy" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let login: Value = response.json().await.unwrap();
    let id = str_field(&login, "session_id");
    app.await_history(id, 1).await;
    let status = app.status(id).await;
    let recorded = str_field(&status["history"][0]["trace_context"], "traceparent");
    // Same trace; the span id is the caller's, or this service's request span.
    assert_eq!(recorded.split('-').nth(1), traceparent.split('-').nth(1));
}

pub async fn the_log_is_sealed_and_its_chain_checks_out(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let env = crate::helpers::backend_env(backend, dir.path());
    let app = crate::helpers::spawn_app_with(dir, &env).await;
    for subject in ["alice", "bob"] {
        let login = app.login(subject).await;
        let refreshed = app.refresh_ok(str_field(&login, "refresh_token")).await;
        app.revoke(str_field(&refreshed, "refresh_token")).await;
    }
    crate::helpers::await_sealed(&env, 6).await;
}

/// The auditors' tools read the log of either backend with the services' own
/// configuration: on Kafka the history comes from the CQL copy, the rest from the topic.
pub async fn auditors_tools_read_the_same_log(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let env = crate::helpers::backend_env(backend, dir.path());
    let app = crate::helpers::spawn_app_with(dir, &env).await;
    let login = app.login("auditee").await;
    let refreshed = app.refresh_ok(str_field(&login, "refresh_token")).await;
    app.revoke(str_field(&refreshed, "refresh_token")).await;
    let id = str_field(&login, "session_id").to_owned();
    app.await_history(&id, 3).await;
    let tool = |args: Vec<String>| {
        let env = env.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::helpers::run_tool(&env, &args)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (code, out) = tool(args(&["history", "--session", &id])).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("revoked (logout)"), "{out}");

    let access = str_field(&refreshed, "access_token");
    let (code, out) = tool(args(&["explain", "--token", access])).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("not acceptable at "), "{out}");
    assert!(out.contains("family revoked at"), "{out}");

    let (code, out) = tool(args(&["backtest", "--grace", "1s"])).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("events:     3"), "{out}");
}
