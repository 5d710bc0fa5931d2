//! With the fence off (`LEDGER_API_FENCE=off`: one API instance, trusting the
//! projection), a restarted API has forgotten its own recent writes. Until it has seen
//! the projector pass the end of a family's partition once, it does not decide on that
//! family: a signout acknowledged before the restart and not yet stored is never
//! undone by a refresh.

use std::time::{Duration, Instant};

use ledger_core::SessionId;
use ledger_core::ports::ProjectionStore;
use reqwest::StatusCode;

use crate::helpers::{Backend, Process, app_at, backend_env, store_of, str_field};

const PROJECTOR: [(&str, &str); 1] = [("LEDGER_INSTANCE_ID", "projector-0")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_without_the_fence_never_rotates_a_family_whose_signout_is_not_projected() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = backend_env(Backend::Kafka, dir.path());
    env.insert("LEDGER_API_FENCE".into(), "off".into());
    let api = Process::spawn("api", &env, &[]);
    let projector = Process::spawn("projector", &env, &PROJECTOR);
    let app = app_at(api.api.as_deref(), None);

    let signed_out = app.login("alice").await;
    let live = app.login("bob").await;
    let id = SessionId::parse(str_field(&signed_out, "session_id")).unwrap();
    let store = store_of(&env, &env["LEDGER_SCYLLA_KEYSPACE"]).await;
    let started = Instant::now();
    while store.family(id).await.unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never projected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The projector stops; the signout is acknowledged (in the log only); the API restarts.
    projector.kill();
    let refresh = str_field(&signed_out, "refresh_token");
    assert_eq!(app.revoke(refresh).await.status(), StatusCode::OK);
    assert!(
        store.family(id).await.unwrap().unwrap().revoked.is_none(),
        "the store must not hold the signout for this test to mean anything"
    );
    api.kill();
    let api = Process::spawn("api", &env, &[]);
    let app = app_at(api.api.as_deref(), None);

    // The store says the family is live; the API must not rotate it.
    let response = app.refresh(refresh).await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a restarted API decided on a projection it had not seen catch up"
    );
    assert!(response.headers().contains_key("retry-after"));

    // Once the projector has caught up, the signout is enforced and a live family rotates.
    let _projector = Process::spawn("projector", &env, &PROJECTOR);
    let started = Instant::now();
    loop {
        let status = app.refresh(refresh).await.status();
        if status == StatusCode::BAD_REQUEST {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the signout was not enforced after the projector came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.refresh_ok(str_field(&live, "refresh_token")).await;
    api.kill();
}
