//! Each component reports its own state on its listener's `/v1/status`.

use reqwest::StatusCode;
use serde_json::Value;
use session_ledger::{Roles, Settings, start};

use crate::helpers::{spawn_app, test_env};

async fn status(client: &reqwest::Client, base: &str) -> Value {
    let response = client
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The embedded store's pruner reports on the projector's listener: nothing pruned
/// yet, no pass yet (the first runs a minute after start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_on_the_embedded_store_reports_its_pruner() {
    let dir = tempfile::tempdir().unwrap();
    let env = test_env(dir.path());
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
    let projector_only = Roles {
        api: false,
        projector: true,
        validator: false,
    };
    let running = start(settings, projector_only).await.unwrap();
    let base = format!("http://{}", running.projector_addr.unwrap());
    let body = status(&reqwest::Client::new(), &base).await;
    let pruner = &body["pruner"];
    assert_eq!(pruner["pruned"], 0, "{body}");
    assert_eq!(pruner["failures"], 0, "{body}");
    assert!(pruner["last_pruned_at"].is_null(), "{body}");
    assert!(pruner["last_removed"].is_null(), "{body}");
    running.shutdown_token().cancel();
}

/// A validator that verifies with its own copy of the keys has no refresher to report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_with_local_keys_reports_no_jwks_refresher() {
    let app = spawn_app().await;
    let body = status(&app.client, &app.validator).await;
    assert!(body["bootstrapped"].is_boolean(), "{body}");
    assert!(body.get("jwks").is_none(), "{body}");
}
