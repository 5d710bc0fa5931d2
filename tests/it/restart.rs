//! The `dev` process killed with SIGKILL and started again on the same data directory.

use reqwest::StatusCode;

use crate::helpers::{Process, TestApp, app_at, str_field, test_env};

/// Starts the real binary's `dev` and reads the addresses it printed.
fn start_binary(dir: &std::path::Path) -> (Process, TestApp) {
    let process = Process::spawn("dev", &test_env(dir), &[]);
    let app = app_at(process.api.as_deref(), process.validator.as_deref());
    (process, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_live_sessions_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let (child, app) = start_binary(data.path());
    app.await_ready().await;
    let live = app.login("live").await;
    let live = app.refresh_ok(str_field(&live, "refresh_token")).await;
    let dead = app.login("dead").await;
    assert_eq!(
        app.revoke(str_field(&dead, "refresh_token")).await.status(),
        StatusCode::OK
    );
    // SIGKILL right after the answers: nothing acknowledged may be lost.
    child.kill();

    let (child, app) = start_binary(data.path());
    app.await_ready().await;
    app.await_active(str_field(&dead, "access_token"), false)
        .await;
    assert_eq!(
        app.refresh(str_field(&dead, "refresh_token"))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    app.await_active(str_field(&live, "access_token"), true)
        .await;
    let next = app.refresh_ok(str_field(&live, "refresh_token")).await;
    app.await_active(str_field(&next, "access_token"), true)
        .await;
    let status = app.status(str_field(&dead, "session_id")).await;
    assert_eq!(status["status"], "revoked");
    child.kill();
}

/// A signing-key rotation reaches a validator in another process without restarting
/// it: the validator reads the API's JWKS and re-reads it when a token names a key it
/// does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_reaches_a_running_validator() {
    let data = tempfile::tempdir().unwrap();
    let env = test_env(data.path());
    let (dev, app) = start_binary(data.path());
    app.await_ready().await;
    let api = dev.api.clone().unwrap();
    let before = app.login("before").await;

    // A validator of its own, verifying with the API's published keys only.
    let jwks = format!("{api}/.well-known/jwks.json");
    let validator = Process::spawn("validator", &env, &[("LEDGER_JWKS_URL", &jwks)]);
    let remote = app_at(Some(&api), validator.validator.as_deref());
    remote
        .await_active(str_field(&before, "access_token"), true)
        .await;

    // Rotate, and restart the API (on the same address) so it signs with the new key.
    let (code, out) = crate::helpers::run_tool(&env, &["keys", "rotate-signing"]);
    assert_eq!(code, 0, "{out}");
    dev.kill();
    let address = api.trim_start_matches("http://");
    let dev = Process::spawn("dev", &env, &[("LEDGER_API_ADDR", address)]);
    let app = app_at(dev.api.as_deref(), dev.validator.as_deref());
    app.await_ready().await;
    let after = app.login("after").await;
    let kid = |token: &str| -> String {
        use base64::Engine;
        let header = token.split('.').next().unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    assert_ne!(
        kid(str_field(&after, "access_token")),
        kid(str_field(&before, "access_token"))
    );

    // The running validator accepts the new key's tokens, and still the old key's.
    remote
        .await_active(str_field(&after, "access_token"), true)
        .await;
    remote
        .await_active(str_field(&before, "access_token"), true)
        .await;
    // The refresher reports when it last read the keys, and that it reads them now.
    let status: serde_json::Value = remote
        .client
        .get(format!("{}/v1/status", remote.validator))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks = &status["jwks"];
    assert!(jwks["refreshed"].as_u64().unwrap() >= 1, "{status}");
    assert!(jwks["last_refreshed_at"].is_string(), "{status}");
    assert!(jwks["last_error"].is_null(), "{status}");
    validator.kill();
    dev.kill();
}
