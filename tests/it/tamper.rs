//! Tamper evidence on the real binary: the embedded log is edited behind the
//! service's back, and `replay --verify-chain` names what changed.

use std::path::Path;

use rusqlite::Connection;

use crate::helpers::{Process, app_at, run_tool, str_field, test_env};

/// A log of three families (login, refresh, signout each), fully sealed, in a data
/// directory no process uses any more.
async fn sealed_log() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let process = Process::spawn("dev", &test_env(data.path()), &[]);
    let app = app_at(process.api.as_deref(), process.validator.as_deref());
    app.await_ready().await;
    for subject in ["alice", "bob", "carol"] {
        let login = app.login(subject).await;
        let refreshed = app.refresh_ok(str_field(&login, "refresh_token")).await;
        app.revoke(str_field(&refreshed, "refresh_token")).await;
    }
    crate::helpers::await_sealed(&test_env(data.path()), 9).await;
    // Nothing writes to the database while it is tampered with (WAL keeps it whole).
    process.kill();
    data
}

fn check(dir: &Path) -> (i32, String) {
    run_tool(&test_env(dir), &["replay", "--verify-chain"])
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("ledger.db")).unwrap()
}

fn event_id(conn: &Connection, offset: i64) -> String {
    conn.query_row(
        "SELECT event_id FROM events WHERE offset = ?1",
        [offset],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_event_is_named() {
    let data = sealed_log().await;
    let conn = db(data.path());
    // Bob's signout becomes a signout of nobody in particular: the subject changes.
    let id = event_id(&conn, 6);
    conn.execute(
        "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), '\"bob\"', '\"mallory\"') AS BLOB)
         WHERE offset = 6",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, out) = check(data.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("EDITED: event {id} at partition 0 offset 6")),
        "{out}"
    );
    assert!(out.contains("TAMPERED: 1 finding\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_event_is_named() {
    let data = sealed_log().await;
    let conn = db(data.path());
    // Alice's signout disappears: her session would look alive again.
    let id = event_id(&conn, 3);
    conn.execute("DELETE FROM events WHERE offset = 3", [])
        .unwrap();
    drop(conn);
    let (code, out) = check(data.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "DROPPED: event {id}, sealed at partition 0 offset 3"
        )),
        "{out}"
    );
    assert!(out.contains("TAMPERED: 1 finding\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inserted_event_is_named() {
    let data = sealed_log().await;
    let conn = db(data.path());
    // A forged copy of Carol's login, with an id of its own, slipped in at offset 4:
    // every later event moves up by one.
    let forged = uuid::Uuid::new_v4().to_string();
    let original = event_id(&conn, 7);
    conn.execute_batch(
        "UPDATE events SET offset = offset + 1000 WHERE offset >= 4;
         UPDATE events SET offset = offset - 999 WHERE offset >= 1000;",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO events (offset, event_id, session_id, subject, occurred_at, body)
         SELECT 4, ?1, session_id, subject, occurred_at,
                CAST(replace(CAST(body AS TEXT), ?2, ?1) AS BLOB)
         FROM events WHERE offset = 8",
        [&forged, &original],
    )
    .unwrap();
    drop(conn);
    let (code, out) = check(data.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("INSERTED: event {forged} at partition 0 offset 4")),
        "{out}"
    );
    assert!(out.contains("TAMPERED: 1 finding\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_check_the_chain_with_the_public_keys_alone() {
    let data = sealed_log().await;
    let (code, jwks) = run_tool(&test_env(data.path()), &["keys", "export-seal-jwks"]);
    assert_eq!(code, 0, "{jwks}");
    assert!(
        !jwks.contains("\"d\""),
        "a private key was exported: {jwks}"
    );
    // The auditor's copy: the database and the public keys, no key directory.
    let audit = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(data.path()).unwrap() {
        let path = file.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, audit.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let public = audit.path().join("seal.jwks");
    std::fs::write(&public, &jwks).unwrap();
    let env = test_env(audit.path());
    let public = public.to_str().unwrap();
    let (code, out) = run_tool(&env, &["replay", "--verify-chain", "--seal-jwks", public]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain:         intact"), "{out}");
    // Without the public keys there is nothing to check against: an error, not a pass.
    let (code, _) = run_tool(&env, &["replay", "--verify-chain"]);
    assert_eq!(code, 2);

    // Someone else's seal key: every seal fails its signature.
    let other = tempfile::tempdir().unwrap();
    let (code, _) = run_tool(&test_env(other.path()), &["keys", "rotate-seal"]);
    assert_eq!(code, 0);
    let (_, wrong) = run_tool(&test_env(other.path()), &["keys", "export-seal-jwks"]);
    std::fs::write(audit.path().join("seal.jwks"), wrong).unwrap();
    let (code, out) = run_tool(&env, &["replay", "--verify-chain", "--seal-jwks", public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BAD SIGNATURE"), "{out}");
}

/// Starts a projector (with its sealer) on `dir` and waits until its status says
/// whether the sealer seals; returns the status.
async fn projector_status(dir: &Path) -> (Process, reqwest::StatusCode, serde_json::Value) {
    let process = Process::spawn("projector", &test_env(dir), &[]);
    let url = format!("{}/v1/status", process.projector.as_deref().unwrap());
    let start = std::time::Instant::now();
    loop {
        let response = reqwest::get(&url).await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        // Sealing once the newest seal checked out against the log, or refused.
        let settled = body["sealer"]["state"] != "checking";
        if settled {
            return (process, status, body);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the projector never settled: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn sealer_refused_metric(process: &Process) -> String {
    let metrics = reqwest::get(format!("{}/metrics", process.projector.as_deref().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("ledger_sealer_refused "))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealer_refuses_to_resume_over_a_tampered_log_or_seal() {
    let data = sealed_log().await;
    let conn = db(data.path());
    let body = |conn: &Connection| -> Vec<u8> {
        conn.query_row("SELECT body FROM events WHERE offset = 9", [], |r| r.get(0))
            .unwrap()
    };
    let original = body(&conn);
    // Carol's signout, the newest sealed event, now names someone else.
    conn.execute(
        "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), '\"carol\"', '\"mallory\"') AS BLOB)
         WHERE offset = 9",
        [],
    )
    .unwrap();
    assert_ne!(body(&conn), original);
    let (process, status, state) = projector_status(data.path()).await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{state}");
    assert_eq!(state["ready"], false, "{state}");
    assert!(
        state["sealer"]["reason"]
            .as_str()
            .unwrap()
            .contains("offset 9: the log's event differs"),
        "{state}"
    );
    let ready = reqwest::get(format!("{}/readyz", process.projector.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        sealer_refused_metric(&process).await,
        "ledger_sealer_refused 1"
    );
    process.kill();

    // The event put back: the sealer vouches for its seal and seals on.
    conn.execute("UPDATE events SET body = ?1 WHERE offset = 9", [&original])
        .unwrap();
    let (process, status, state) = projector_status(data.path()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{state}");
    assert_eq!(state["sealer"]["state"], "sealing", "{state}");
    assert_eq!(
        sealer_refused_metric(&process).await,
        "ledger_sealer_refused 0"
    );
    process.kill();

    // The newest seal itself rewritten (it claims another chain value).
    let zeros = "0".repeat(64);
    let changed = conn
        .execute(
            "UPDATE seals SET body = CAST(json_set(CAST(body AS TEXT), '$.chain', ?1) AS BLOB)
             WHERE first_offset = (SELECT max(first_offset) FROM seals)",
            [&zeros],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let (process, status, state) = projector_status(data.path()).await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{state}");
    assert!(
        state["sealer"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not verify with the seal keys"),
        "{state}"
    );
    process.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_catches_a_head_rewritten_and_sealed_again() {
    let data = sealed_log().await;
    let env = test_env(data.path());
    // The auditor records the anchors the check prints.
    let (code, out) = run_tool(&env, &["replay", "--verify-chain"]);
    assert_eq!(code, 0, "{out}");
    let anchors: String = out
        .lines()
        .filter_map(|l| l.strip_prefix("anchor:"))
        .map(|a| format!("{}\n", a.trim()))
        .collect();
    assert!(anchors.starts_with("0 9 "), "{out}");
    let file = data.path().join("anchors.txt");
    std::fs::write(&file, &anchors).unwrap();
    let anchored = [
        "replay",
        "--verify-chain",
        "--anchor",
        file.to_str().unwrap(),
    ];
    let (code, out) = run_tool(&env, &anchored);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 anchors checked against the log"), "{out}");

    // Someone holding the data directory (log and seal key alike) rewrites the head:
    // Carol's signout names someone else, the seals covering it are removed, and the
    // sealer seals the rewritten events afresh.
    let conn = db(data.path());
    conn.execute(
        "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), '\"carol\"', '\"mallory\"') AS BLOB)
         WHERE offset = 9",
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM seals WHERE last_offset >= 9", [])
        .unwrap();
    drop(conn);
    let projector = Process::spawn("projector", &env, &[]);
    crate::helpers::await_sealed(&env, 9).await;
    projector.kill();
    // The seals alone see nothing wrong...
    let (code, out) = run_tool(&env, &["replay", "--verify-chain"]);
    assert_eq!(code, 0, "{out}");
    // ...the anchor does.
    let (code, out) = run_tool(&env, &anchored);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ANCHOR MISMATCH: partition 0 offset 9"),
        "{out}"
    );
}
