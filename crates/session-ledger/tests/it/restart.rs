//! The `dev` process killed with SIGKILL and started again on the same data directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, str_field, test_env};

/// Starts the real binary and reads the addresses it printed.
fn start_binary(dir: &std::path::Path) -> (Child, TestApp) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_session-ledger"))
        .arg("dev")
        .envs(test_env(dir))
        .env("LEDGER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut api = None;
    let mut validator = None;
    while api.is_none() || validator.is_none() {
        let line = lines
            .next()
            .expect("the process printed its addresses")
            .unwrap();
        if let Some(a) = line.strip_prefix("api listening on ") {
            api = Some(a.to_owned());
        } else if let Some(v) = line.strip_prefix("validator listening on ") {
            validator = Some(v.to_owned());
        }
    }
    let app = TestApp {
        api: api.unwrap(),
        validator: validator.unwrap(),
        client: reqwest::Client::new(),
        running: None,
        _data: None,
    };
    (child, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_live_sessions_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, app) = start_binary(data.path());
    app.await_ready().await;
    let live = app.login("live").await;
    let live = app.refresh_ok(str_field(&live, "refresh_token")).await;
    let dead = app.login("dead").await;
    assert_eq!(
        app.revoke(str_field(&dead, "refresh_token")).await.status(),
        StatusCode::OK
    );
    // SIGKILL right after the answers: nothing acknowledged may be lost.
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, app) = start_binary(data.path());
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
    let status: Value = app
        .session(str_field(&dead, "session_id"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "revoked");
    child.kill().unwrap();
    child.wait().unwrap();
}
