//! `session-ledger explain` on the real binary, over a log the real service wrote.

use std::time::Duration;

use ledger_core::Timestamp;

use crate::helpers::{Process, app_at, run_tool, str_field, test_env};

const GRACE: &str = "200ms";

/// Runs the tool with the service's configuration; exit code and stdout.
fn explain(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut env = test_env(dir);
    env.insert("LEDGER_REFRESH_GRACE".into(), GRACE.into());
    run_tool(&env, &[&["explain"], args].concat())
}

/// When each event of the session occurred, from `history`.
fn event_times(dir: &std::path::Path, session: &str) -> Vec<Timestamp> {
    let (code, out) = run_tool(
        &test_env(dir),
        &["history", "--session", session, "--format", "json"],
    );
    assert_eq!(code, 0, "{out}");
    let events: Vec<ledger_core::Event> = serde_json::from_str(&out).unwrap();
    events.iter().map(|e| e.occurred_at).collect()
}

fn at(t: Timestamp) -> String {
    t.to_rfc3339()
}

fn plus(t: Timestamp, millis: u64) -> Timestamp {
    t.saturating_add(Duration::from_millis(millis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_gives_the_verdict_around_rotation_grace_and_signout() {
    let data = tempfile::tempdir().unwrap();
    let process = Process::spawn(
        "dev",
        &test_env(data.path()),
        &[("LEDGER_REFRESH_GRACE", GRACE)],
    );
    let app = app_at(process.api.as_deref(), process.validator.as_deref());
    app.await_ready().await;
    let login = app.login("explained").await;
    let first = str_field(&login, "refresh_token").to_owned();
    let access = str_field(&login, "access_token").to_owned();
    app.refresh_ok(&first).await;
    // The signout must come after the grace window, so that reuse has a moment of its
    // own between the two.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(app.revoke(&access).await.status().is_success());
    let id = str_field(&login, "session_id");
    app.await_history(id, 3).await;
    process.kill();
    let times = event_times(data.path(), id);
    let [issued, rotated, revoked] = times[..] else {
        panic!("{times:?}")
    };
    assert!(plus(rotated, 200) < revoked, "{times:?}");

    let refresh_cases = [
        (
            issued.saturating_sub(Duration::from_secs(60)),
            1,
            "not acceptable at",
            "not yet issued",
        ),
        (
            plus(issued, 1),
            0,
            "acceptable at",
            "rotate: generation 0 was the head",
        ),
        (
            plus(rotated, 100),
            0,
            "acceptable at",
            "grace retry of generation 0",
        ),
        (
            plus(rotated, 250),
            1,
            "not acceptable at",
            "reuse: generation 0 was rotated",
        ),
        (
            plus(revoked, 1),
            1,
            "not acceptable at",
            "family revoked at",
        ),
    ];
    for (instant, code, verdict, rule) in refresh_cases {
        let (got, out) = explain(data.path(), &["--token", &first, "--at", &at(instant)]);
        let first_line = out.lines().next().unwrap_or_default();
        assert_eq!(got, code, "{out}");
        assert!(
            first_line.starts_with(&format!("{verdict} {}: ", at(instant))),
            "{out}"
        );
        assert!(first_line.contains(rule), "{out}");
        assert!(out.contains("MAC verified with refresh key"), "{out}");
    }

    let (code, out) = explain(data.path(), &["--token", &access, "--at", &at(issued)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("acceptable at"), "{out}");
    assert!(out.contains("the current key at iat"), "{out}");
    assert!(out.contains("SessionIssued"), "{out}");

    let (code, out) = explain(
        data.path(),
        &[
            "--token",
            &access,
            "--at",
            &at(plus(revoked, 1)),
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["verdict"], "not_acceptable");
    assert_eq!(report["rule"], "family_revoked");
    assert_eq!(report["events"][1]["type"], "SessionRevokedAll");
    assert_eq!(report["token"]["session_id"], id);

    // A flipped bit in the MAC: forged, and nothing else decided.
    let mut forged = first.clone().into_bytes();
    let i = forged.len() - 5;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (code, out) = explain(data.path(), &["--token", &forged]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("forged or garbled: bad MAC"), "{out}");
    assert!(!out.contains("events:"), "{out}");

    let (code, _) = explain(data.path(), &["--token", "not-a-token"]);
    assert_eq!(code, 2);
    let (code, _) = explain(data.path(), &["--token", &first, "--at", "yesterday"]);
    assert_eq!(code, 2);
}
