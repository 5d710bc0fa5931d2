//! The auditors' tools on the real binary: `replay --verify` and `history`.

use std::process::Command;

use crate::helpers::{Process, app_at, str_field, test_env};

fn tool(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_session-ledger"))
        .args(args)
        .envs(test_env(dir))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_matches_the_live_projection_and_history_tells_the_story() {
    let data = tempfile::tempdir().unwrap();
    let process = Process::spawn(
        "dev",
        &test_env(data.path()),
        &[("LEDGER_REFRESH_GRACE", "0s")],
    );
    let app = app_at(process.api.as_deref(), process.validator.as_deref());
    app.await_ready().await;
    let login = app.login("auditee").await;
    let first = str_field(&login, "refresh_token");
    app.refresh_ok(first).await;
    // Reuse: the family is revoked, and history must say which generation came back.
    assert!(!app.refresh(first).await.status().is_success());
    let other = app.login("bystander").await;
    app.await_active(str_field(&other, "access_token"), true)
        .await;
    let id = str_field(&login, "session_id");
    app.await_history(id, 3).await;

    // Beside the running service: verify waits for the projector to catch up.
    let dir = data.path().to_owned();
    let (code, out) = tokio::task::spawn_blocking(move || tool(&dir, &["replay", "--verify"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("events:        4"), "{out}");
    assert!(out.contains("families:      2 (1 revoked)"), "{out}");
    assert!(out.contains("the live projection matches"), "{out}");
    process.kill();

    let (code, out) = tool(data.path(), &["history", "--session", id]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[1].contains("SessionIssued"), "{out}");
    assert!(lines[3].contains("revoked (reuse_detected)"), "{out}");
    assert!(lines[3].contains("generation 0 presented again"), "{out}");

    let (code, out) = tool(
        data.path(),
        &["history", "--session", id, "--format", "ndjson"],
    );
    assert_eq!(code, 0);
    for line in out.lines() {
        ledger_core::Event::from_json(line.as_bytes()).unwrap();
    }
    let (code, _) = tool(data.path(), &["history", "--session", "not-an-id"]);
    assert_eq!(code, 2);
}
