//! A signout is never dropped: on Kafka + CQL, with the projector not running, a
//! signout of a family the projection does not know is still appended to the log,
//! enforced by a validator tailing the log, and, once the projector runs, by the
//! store and every validator bootstrapped from it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, Process, app_at, backend_env, run_tool, str_field};

/// The `SessionRevokedAll` events of `session` in the log (`replay --export -`).
fn revocations_in_log(env: &std::collections::HashMap<String, String>, session: &str) -> usize {
    let (code, out) = run_tool(env, &["replay", "--export", "-"]);
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["session_id"] == session && e["type"] == "SessionRevokedAll")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signout_the_lagging_projection_does_not_know_is_appended_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    // The API trusts its own writes for 1 s; no projector runs.
    let window = [("LEDGER_READ_YOUR_WRITES", "1s")];
    let api = Process::spawn("api", &env, &window);
    let validator = Process::spawn("validator", &env, &window);
    let app = app_at(api.api.as_deref(), validator.validator.as_deref());
    app.await_ready().await;

    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    // Past the window, neither the API's memory nor the store knows the families.
    for s in [&alice, &bob] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.session(str_field(s, "session_id")).await.status() != StatusCode::NOT_FOUND {
            assert!(Instant::now() < deadline, "the API never forgot its write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Signout with the refresh token (names the family only) and with the access token.
    let response = app.revoke(str_field(&alice, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .client
        .post(format!("{}/oauth2/revoke", app.api))
        .form(&[
            ("token", str_field(&bob, "access_token")),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The acknowledged signouts are in the log...
    for s in [&alice, &bob] {
        let id = str_field(s, "session_id");
        let env = env.clone();
        let id = id.to_owned();
        let found = tokio::task::spawn_blocking(move || revocations_in_log(&env, &id))
            .await
            .unwrap();
        assert_eq!(
            found,
            1,
            "the signout of {} is not in the log",
            str_field(s, "session_id")
        );
    }
    // ...and the validator tailing the log enforces them at once.
    for s in [&alice, &bob] {
        app.await_active(str_field(s, "access_token"), false).await;
    }

    // The projector catches up: the store's join is revoked, with the real subject.
    let _projector = Process::spawn("projector", &env, &[]);
    for (s, subject) in [(&alice, "alice"), (&bob, "bob")] {
        let id = str_field(s, "session_id");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = app.session(id).await;
            if response.status() == StatusCode::OK {
                let status: Value = response.json().await.unwrap();
                if status["status"] == "revoked" && status["history"].as_array().unwrap().len() == 2
                {
                    assert_eq!(status["subject"], subject, "{status}");
                    assert_eq!(status["revocation"]["reason"], "logout", "{status}");
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "session {id} never projected as revoked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let refused = app.refresh(str_field(&alice, "refresh_token")).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");

    // A validator started now bootstraps from the store: it refuses them too.
    let second = Process::spawn("validator", &env, &[]);
    let fresh = app_at(None, second.validator.as_deref());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fresh
        .client
        .get(format!("{}/readyz", fresh.validator))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(
            Instant::now() < deadline,
            "the second validator never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in [&alice, &bob] {
        assert_eq!(
            fresh.introspect(str_field(s, "access_token")).await["active"],
            false
        );
    }
}
