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
