//! Acknowledged signouts stay enforced across a full restart of a Kafka + CQL
//! deployment whose roles run as separate processes, the projector having been killed
//! with SIGKILL mid-stream: a validator is never ready before it has read the log up
//! to the end it saw at start, and a restarted projector makes progress at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ledger_core::SessionId;
use ledger_core::ports::ProjectionStore;
use ledger_scylla::ScyllaStore;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, Process, TestApp, app_at, backend_env, store_of, str_field};

const SESSIONS: usize = 300;
const REVOKED: usize = 200;

/// The projector's stable instance name, as a StatefulSet gives each replica.
const PROJECTOR: [(&str, &str); 1] = [("LEDGER_INSTANCE_ID", "projector-0")];

struct Deployment {
    api: Process,
    projector: Process,
    validator: Process,
}

impl Deployment {
    /// Starts api, then projector and validator, as separate processes.
    fn start(env: &HashMap<String, String>) -> Deployment {
        let api = Process::spawn("api", env, &[]);
        let projector = Process::spawn("projector", env, &PROJECTOR);
        let validator = Process::spawn("validator", env, &[]);
        Deployment {
            api,
            projector,
            validator,
        }
    }

    fn app(&self) -> TestApp {
        app_at(self.api.api.as_deref(), self.validator.validator.as_deref())
    }

    fn kill(self) {
        self.api.kill();
        self.projector.kill();
        self.validator.kill();
    }
}

/// How many of `sessions` the store holds as revoked.
async fn revoked_in_store(store: &ScyllaStore, sessions: &[Value]) -> usize {
    let mut revoked = 0;
    for s in sessions {
        let id = SessionId::parse(str_field(s, "session_id")).unwrap();
        if store
            .family(id)
            .await
            .unwrap()
            .is_some_and(|f| f.revoked.is_some())
        {
            revoked += 1;
        }
    }
    revoked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_signouts_are_refused_the_moment_a_validator_is_ready_after_a_full_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    let deployment = Deployment::start(&env);
    let app = deployment.app();
    app.await_ready().await;

    let mut sessions = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        sessions.push(app.login(&format!("user{i}")).await);
    }
    let (revoked, live) = sessions.split_at(REVOKED);

    // Sign out 200; the projector is killed with SIGKILL half-way and started again.
    let Deployment {
        api,
        projector,
        validator,
    } = deployment;
    let mut projector = Some(projector);
    let mut restarted_at = Instant::now();
    for (i, s) in revoked.iter().enumerate() {
        if i == REVOKED / 2 {
            projector.take().unwrap().kill();
            projector = Some(Process::spawn("projector", &env, &PROJECTOR));
            restarted_at = Instant::now();
        }
        let response = app.revoke(str_field(s, "refresh_token")).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "signout {i} not acknowledged"
        );
    }
    let deployment = Deployment {
        api,
        projector: projector.unwrap(),
        validator,
    };

    // The validator tails the log: it refuses all 200 at once.
    for s in revoked {
        app.await_active(str_field(s, "access_token"), false).await;
    }
    // The restarted projector makes progress within seconds: it does not wait for the
    // killed member's session to time out before it owns its partitions again.
    let store = store_of(&env, &env["LEDGER_SCYLLA_KEYSPACE"]).await;
    loop {
        let projected = revoked_in_store(&store, revoked).await;
        if projected == REVOKED {
            break;
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(20),
            "the restarted projector projected {projected} of {REVOKED} signouts in {:?}",
            restarted_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "restarted projector projected every signout {:?} after its restart",
        restarted_at.elapsed()
    );

    // Every process killed with SIGKILL, then started again: api first.
    deployment.kill();
    let deployment = Deployment::start(&env);
    let app = deployment.app();
    let started = Instant::now();
    loop {
        let ready = app
            .client
            .get(format!("{}/readyz", app.validator))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ready {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the validator never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("validator ready {:?} after its start", started.elapsed());

    // The moment it is ready: every acknowledged signout refused, the others active.
    let mut accepted = Vec::new();
    for (i, s) in revoked.iter().enumerate() {
        if app.introspect(str_field(s, "access_token")).await["active"] != false {
            accepted.push(i);
        }
    }
    assert!(
        accepted.is_empty(),
        "a ready validator accepted {} of {REVOKED} revoked sessions (e.g. {:?})",
        accepted.len(),
        &accepted[..accepted.len().min(5)]
    );
    for s in live {
        assert_eq!(
            app.introspect(str_field(s, "access_token")).await["active"],
            true,
            "a live session was refused"
        );
    }
    // And the API, which reads the projection, refuses to refresh a signed-out family.
    app.await_ready().await;
    for s in revoked.iter().take(20) {
        let response = app.refresh(str_field(s, "refresh_token")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    deployment.kill();
}
