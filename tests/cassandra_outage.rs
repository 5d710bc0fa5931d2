//! A Cassandra (CQL store) outage under load, on the real binary: `api`, `projector`
//! and `validator` as separate processes on Kafka + Cassandra. This is a test binary
//! of its own because it stops the database every other test uses; cargo runs test
//! binaries one at a time.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_tests::helpers::{
    Backend, INTROSPECT_TOKEN, LOGIN_TOKEN, Process, TestApp, app_at, backend_env, jti_of,
    run_tool, services,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Starts Cassandra again however the test ends, so later test binaries find it up.
struct RestartCassandra;

impl Drop for RestartCassandra {
    fn drop(&mut self) {
        services("up");
    }
}

/// A session as its client holds it: the newest tokens it was given.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    subject: String,
    access_token: String,
    refresh_token: String,
}

/// What the clients were told, for the checks after the outage.
#[derive(Default)]
struct Record {
    /// Acknowledged logins (201), by session id.
    sessions: HashMap<String, Session>,
    /// Sessions whose signout was acknowledged (200), by a family or a subject revoke.
    signed_out: HashSet<String>,
    /// The `jti` of every access token handed out.
    jtis: Vec<String>,
    /// 503 answers (each checked for `Retry-After` and the absence of tokens).
    unavailable: usize,
}

/// A 503 must say when to retry and carry no token; anything else but `expected` is a
/// wrong answer. Returns the body when the status is `expected`, `None` on a 503.
async fn answer(
    response: reqwest::Response,
    expected: StatusCode,
    what: &str,
    record: &Mutex<Record>,
) -> Option<Value> {
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(retry_after, "{what}: 503 without Retry-After: {body}");
        assert_eq!(body["error"], "temporarily_unavailable", "{what}: {body}");
        assert!(
            body.get("access_token").is_none() && body.get("refresh_token").is_none(),
            "{what}: a token in a 503: {body}"
        );
        record.lock().unwrap().unavailable += 1;
        return None;
    }
    assert_eq!(status, expected, "{what}: {body}");
    Some(body)
}

/// One client: logs in, refreshes, signs out every other session, until `stop`.
async fn client(
    app: Arc<TestApp>,
    worker: usize,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
) {
    let pause = || tokio::time::sleep(Duration::from_millis(50));
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let subject = format!("w{worker}-u{i}");
        let response = app
            .client
            .post(format!("{}/v1/sessions", app.api))
            .bearer_auth(LOGIN_TOKEN)
            .json(&json!({ "subject": subject }))
            .send()
            .await
            .unwrap();
        let Some(login) = answer(response, StatusCode::CREATED, "login", &record).await else {
            pause().await;
            continue;
        };
        let mut session = Session {
            id: login["session_id"].as_str().unwrap().to_owned(),
            subject,
            access_token: login["access_token"].as_str().unwrap().to_owned(),
            refresh_token: login["refresh_token"].as_str().unwrap().to_owned(),
        };
        {
            let mut r = record.lock().unwrap();
            r.jtis.push(jti_of(&session.access_token));
            r.sessions.insert(session.id.clone(), session.clone());
        }
        // A refresh of the head of a live session: a new pair or 503, never a refusal.
        let response = app.try_refresh(&session.refresh_token).await.unwrap();
        if let Some(next) = answer(response, StatusCode::OK, "refresh", &record).await {
            session.access_token = next["access_token"].as_str().unwrap().to_owned();
            session.refresh_token = next["refresh_token"].as_str().unwrap().to_owned();
            let mut r = record.lock().unwrap();
            r.jtis.push(jti_of(&session.access_token));
            r.sessions.insert(session.id.clone(), session.clone());
        }
        if i % 2 == 1 {
            continue;
        }
        // Signout: retried until acknowledged; then its refresh token is refused.
        loop {
            let response = app.revoke(&session.refresh_token).await;
            if answer(response, StatusCode::OK, "signout", &record)
                .await
                .is_some()
            {
                break;
            }
            pause().await;
        }
        record.lock().unwrap().signed_out.insert(session.id.clone());
        let response = app.try_refresh(&session.refresh_token).await.unwrap();
        answer(
            response,
            StatusCode::BAD_REQUEST,
            "refresh after signout",
            &record,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cassandra_outage_under_load_loses_nothing_acknowledged_and_issues_nothing_unacknowledged()
{
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    let api = Process::spawn("api", &env, &[]);
    let projector = Process::spawn("projector", &env, &[]);
    let validator = Process::spawn("validator", &env, &[]);
    let mut app = app_at(api.api.as_deref(), validator.validator.as_deref());
    // Every answer comes in bounded time, outage or not.
    app.client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let app = Arc::new(app);
    app.await_ready().await;

    // Sessions of a subject that is signed out everywhere during the outage.
    let everywhere: Vec<Value> = futures::future::join_all((0..3).map(|_| app.login("erin"))).await;

    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(Mutex::new(Record::default()));
    let clients: Vec<_> = (0..3)
        .map(|w| tokio::spawn(client(app.clone(), w, stop.clone(), record.clone())))
        .collect();
    let acknowledged = |n: usize| {
        let record = record.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while record.lock().unwrap().signed_out.len() < n {
                assert!(Instant::now() < deadline, "the load never got going");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    acknowledged(10).await;
    let errors_before = projector_errors(&app, &projector).await;

    let restart = RestartCassandra;
    tokio::task::spawn_blocking(|| services("stop-cassandra"))
        .await
        .unwrap();

    // The API cannot read family state: it answers 503 + Retry-After, issuing nothing.
    let response = app.open(&json!({ "subject": "during-the-outage" })).await;
    assert!(
        answer(response, StatusCode::CREATED, "login", &record)
            .await
            .is_none()
    );
    // A subject-wide signout needs no state: acknowledged, and enforced at once by the
    // validator, which tails the log and does not need the store.
    let response = app
        .client
        .post(format!("{}/v1/subjects/erin/revoke", app.api))
        .bearer_auth(LOGIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for s in &everywhere {
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.introspect(s["access_token"].as_str().unwrap()).await["active"] == true {
            if Instant::now() > deadline {
                let status: Value = app
                    .client
                    .get(format!("{}/v1/status", app.validator))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let revocation: Value = app
                    .client
                    .get(format!(
                        "{}/v1/revocations/{}?subject=erin",
                        app.validator,
                        s["session_id"].as_str().unwrap()
                    ))
                    .bearer_auth(INTROSPECT_TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                panic!("the validator does not enforce the subject revoke: {status} {revocation}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    drop(restart);

    // Everyone recovers without a restart: logins succeed again.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = app.open(&json!({ "subject": "after-the-outage" })).await;
        if response.status() == StatusCode::CREATED {
            break;
        }
        assert!(
            answer(response, StatusCode::CREATED, "login", &record)
                .await
                .is_none()
        );
        assert!(Instant::now() < deadline, "the API never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let before = record.lock().unwrap().signed_out.len();
    acknowledged(before + 10).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let record = Arc::try_unwrap(record).ok().unwrap().into_inner().unwrap();
    assert!(
        record.unavailable > 0,
        "the outage was never seen by the clients"
    );
    assert!(
        projector_errors(&app, &projector).await > errors_before,
        "the outage never reached the projector"
    );
    let mut signed_out = record.signed_out.clone();
    signed_out.extend(
        everywhere
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned()),
    );

    // The projector lost nothing: the live projection is the replay's.
    let env2 = env.clone();
    let (code, out) = tokio::task::spawn_blocking(move || {
        run_tool(&env2, &["replay", "--verify", "--wait", "120s"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the live projection differs from a replay: {out}");

    // No token without an acknowledged event (I1): every jti handed out is in the log.
    let env2 = env.clone();
    let (code, exported) =
        tokio::task::spawn_blocking(move || run_tool(&env2, &["replay", "--export", "-"]))
            .await
            .unwrap();
    assert_eq!(code, 0);
    let logged: HashSet<String> = exported
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["data"]["access_jti"].as_str().map(str::to_owned))
        .collect();
    for jti in &record.jtis {
        assert!(
            logged.contains(jti),
            "access token {jti} has no event in the log"
        );
    }

    // Every acknowledged signout is enforced by the validator and in the projection;
    // every other session is still active (no wrong decision either way).
    for (id, session) in &record.sessions {
        let revoked = signed_out.contains(id);
        app.await_active(&session.access_token, !revoked).await;
        let status = app.status(id).await;
        let expected = if revoked { "revoked" } else { "active" };
        assert_eq!(
            status["status"], expected,
            "{} {id}: {status}",
            session.subject
        );
    }
    for s in &everywhere {
        let status = app.status(s["session_id"].as_str().unwrap()).await;
        assert_eq!(status["status"], "revoked", "{status}");
    }
    eprintln!(
        "{} sessions, {} signed out, {} answers 503 during the outage",
        record.sessions.len(),
        signed_out.len(),
        record.unavailable
    );
    drop((api, projector, validator));
}

/// The backend errors the projector retried so far (its status endpoint).
async fn projector_errors(app: &TestApp, projector: &Process) -> u64 {
    let url = format!("{}/v1/status", projector.projector.as_deref().unwrap());
    let status: Value = app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["backend_errors"].as_u64().unwrap()
}
