//! The auditors' tools on the real binary: `replay --verify` and `history`.

use crate::helpers::{Process, app_at, run_tool, str_field, test_env};

fn tool(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    run_tool(&test_env(dir), args)
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

    // By subject: the auditee's one family (header, column names, three events).
    let (code, out) = tool(data.path(), &["history", "--subject", "auditee"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with(&format!("session {id}\n")), "{out}");
    assert_eq!(out.lines().count(), 5, "{out}");
    let (code, _) = tool(data.path(), &["history", "--subject", "nobody"]);
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_exports_filters_by_time_and_rebuilds_into_a_fresh_store() {
    let data = tempfile::tempdir().unwrap();
    let process = Process::spawn("dev", &test_env(data.path()), &[]);
    let app = app_at(process.api.as_deref(), process.validator.as_deref());
    app.await_ready().await;
    let first = app.login("early").await;
    let late = app.login("late").await;
    app.revoke(str_field(&late, "refresh_token")).await;
    // The bounds are the events' own times: the early login, and the late one.
    let occurred = |status: serde_json::Value| {
        status["history"][0]["occurred_at"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    app.await_history(str_field(&late, "session_id"), 2).await;
    let early_at = occurred(app.status(str_field(&first, "session_id")).await);
    let late_at = occurred(app.status(str_field(&late, "session_id")).await);
    process.kill();

    // Everything, as NDJSON: each line is an event exactly as `schemas/` describes
    // (the bytes the types write, which the schema tests validate).
    let export = data.path().join("events.ndjson");
    let (code, out) = tool(
        data.path(),
        &["replay", "--export", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("events:        3"), "{out}");
    let lines = std::fs::read_to_string(&export).unwrap();
    assert_eq!(lines.lines().count(), 3);
    for line in lines.lines() {
        let event = ledger_core::Event::from_json(line.as_bytes()).unwrap();
        assert_eq!(event.to_json(), line.as_bytes());
    }
    // The file is never overwritten.
    let (code, _) = tool(
        data.path(),
        &["replay", "--export", export.to_str().unwrap()],
    );
    assert_eq!(code, 2);

    // From a time: only the late family's two events.
    let (code, out) = tool(data.path(), &["replay", "--from", &late_at]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("events:        2"), "{out}");
    assert!(out.contains("families:      1 (1 revoked)"), "{out}");
    let (code, out) = tool(data.path(), &["replay", "--to", &early_at]);
    assert!(out.contains("events:        1"), "{out}");
    assert_eq!(code, 0);
    let (code, _) = tool(data.path(), &["replay", "--from", "yesterday"]);
    assert_eq!(code, 2);

    // Into a fresh store, whose projection is the replay's: same digest.
    let into = data.path().join("rebuilt");
    let (code, out) = tool(data.path(), &["replay", "--into", into.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("digest:"))
        .unwrap()
        .trim()
        .to_owned();
    let store = ledger_embedded::Embedded::open(&into).unwrap();
    let rebuilt = ledger_core::ports::ProjectionStore::snapshot(&store)
        .await
        .unwrap();
    assert_eq!(rebuilt.digest(), digest);
    // A store that already holds a projection is refused.
    let (code, _) = tool(data.path(), &["replay", "--into", into.to_str().unwrap()]);
    assert_eq!(code, 2);
}
