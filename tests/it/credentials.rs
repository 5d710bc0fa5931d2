//! One credential per caller: the login service's (`LEDGER_LOGIN_TOKEN`) opens
//! sessions, resource servers' (`LEDGER_INTROSPECT_TOKENS`) only look tokens up; the
//! caller is checked before its body is read.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{INTROSPECT_TOKEN, LOGIN_TOKEN, app_at, spawn_app, str_field, test_env};

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_servers_credential_cannot_open_sessions() {
    let app = spawn_app().await;
    let c = &app.client;
    let login = app.login("erin").await;
    let id = str_field(&login, "session_id");
    let sessions = format!("{}/v1/sessions", app.api);
    let introspect = format!("{}/oauth2/introspect", app.validator);
    let forbidden: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "open a session",
            c.post(&sessions)
                .bearer_auth(INTROSPECT_TOKEN)
                .json(&json!({"subject": "mallory"})),
        ),
        (
            "read a session",
            c.get(format!("{sessions}/{id}"))
                .bearer_auth(INTROSPECT_TOKEN),
        ),
        (
            "revoke a subject",
            c.post(format!("{}/v1/subjects/erin/revoke", app.api))
                .bearer_auth(INTROSPECT_TOKEN),
        ),
        (
            "introspect with the login credential",
            c.post(&introspect)
                .bearer_auth(LOGIN_TOKEN)
                .form(&[("token", str_field(&login, "access_token"))]),
        ),
        (
            "revocation lookup with the login credential",
            c.get(format!("{}/v1/revocations/{id}", app.validator))
                .bearer_auth(LOGIN_TOKEN),
        ),
    ];
    for (name, request) in forbidden {
        let (status, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {body}");
        assert_eq!(body["error"], "insufficient_scope", "{name}: {body}");
        assert!(body["error_description"].is_string(), "{name}: {body}");
    }
    // The caller is checked before the body is read: no credential, or the wrong one,
    // gets its 401/403 whatever the body is.
    for (credential, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("not-a-credential-at-all"), StatusCode::UNAUTHORIZED),
        (Some(INTROSPECT_TOKEN), StatusCode::FORBIDDEN),
    ] {
        for body in ["{\"subject\":".to_owned(), "x".repeat(1 << 20)] {
            let mut request = c
                .post(&sessions)
                .header("content-type", "application/json")
                .body(body);
            if let Some(token) = credential {
                request = request.bearer_auth(token);
            }
            let (status, body) = error_of(request.send().await.unwrap()).await;
            assert_eq!(status, expected, "{credential:?}: {body}");
        }
    }
    // Nothing was opened for mallory; erin's session is untouched and both
    // credentials still do what they are for.
    assert_eq!(app.status(id).await["status"], "active");
    assert_eq!(
        app.introspect(str_field(&login, "access_token")).await["active"],
        true
    );
}

/// Runs `session-ledger dev` with `env`; returns it, its addresses and what it printed
/// before `ready`, and its standard error in a file.
fn spawn_dev(
    env: &HashMap<String, String>,
) -> (
    crate::helpers::Process,
    Vec<String>,
    tempfile::NamedTempFile,
) {
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(crate::helpers::ledger_bin())
        .arg("dev")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .env("LEDGER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        printed.push(line);
    }
    let field = |prefix: &str| {
        printed
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
    };
    let process = crate::helpers::Process {
        api: field("api listening on "),
        validator: field("validator listening on "),
        projector: None,
        child,
    };
    (process, printed, stderr)
}

fn generated(printed: &[String], what: &str) -> String {
    printed
        .iter()
        .find(|l| l.starts_with(what))
        .and_then(|l| l.rsplit_once(": "))
        .map(|(_, token)| token.to_owned())
        .unwrap_or_else(|| panic!("no {what} printed: {printed:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_generates_both_credentials_and_the_deprecated_one_grants_both() {
    // No credential set: `dev` makes up one of each and prints them.
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_env(dir.path());
    env.remove("LEDGER_LOGIN_TOKEN");
    env.remove("LEDGER_INTROSPECT_TOKENS");
    let (dev, printed, _) = spawn_dev(&env);
    let app = app_at(dev.api.as_deref(), dev.validator.as_deref());
    app.await_ready().await;
    let login_token = generated(&printed, "login token");
    let introspect_token = generated(&printed, "introspect token");
    assert_ne!(login_token, introspect_token);
    let open = |token: &str| {
        app.client
            .post(format!("{}/v1/sessions", app.api))
            .bearer_auth(token)
            .json(&json!({"subject": "dora"}))
            .send()
    };
    let introspect = |credential: &str, token: &str| {
        app.client
            .post(format!("{}/oauth2/introspect", app.validator))
            .bearer_auth(credential)
            .form(&[("token", token)])
            .send()
    };
    assert_eq!(
        open(&introspect_token).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let login: Value = open(&login_token).await.unwrap().json().await.unwrap();
    let access = str_field(&login, "access_token");
    let answer: Value = introspect(&introspect_token, access)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(
        introspect(&login_token, access).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    drop(dev);

    // The deprecated alias still grants both, and says so at start-up.
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_env(dir.path());
    env.remove("LEDGER_LOGIN_TOKEN");
    env.remove("LEDGER_INTROSPECT_TOKENS");
    let legacy = "legacy-service-token-0123456789";
    env.insert("LEDGER_SERVICE_TOKEN".into(), legacy.into());
    let (dev, printed, stderr) = spawn_dev(&env);
    assert!(
        !printed.iter().any(|l| l.contains("generated")),
        "nothing to generate: {printed:?}"
    );
    let app = app_at(dev.api.as_deref(), dev.validator.as_deref());
    app.await_ready().await;
    let login: Value = app
        .client
        .post(format!("{}/v1/sessions", app.api))
        .bearer_auth(legacy)
        .json(&json!({"subject": "dora"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer: Value = app
        .client
        .post(format!("{}/oauth2/introspect", app.validator))
        .bearer_auth(legacy)
        .form(&[("token", str_field(&login, "access_token"))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["active"], true, "{answer}");
    let log = std::fs::read_to_string(stderr.path()).unwrap();
    assert!(
        log.contains("LEDGER_SERVICE_TOKEN is deprecated"),
        "no deprecation warning: {log}"
    );

    // A role serving endpoints needs its own credential given.
    let mut env = test_env(dir.path());
    env.remove("LEDGER_LOGIN_TOKEN");
    let out = Command::new(crate::helpers::ledger_bin())
        .arg("api")
        .env_clear()
        .envs(&env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LEDGER_LOGIN_TOKEN is required"), "{err}");
}
