//! Crashes on the production path (Kafka + CQL): processes killed with SIGKILL at the
//! worst moments lose nothing that was acknowledged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ledger_core::ports::ProjectionStore;
use ledger_core::{Generation, SessionId};
use ledger_projector::{Projector, ProjectorConfig};
use reqwest::StatusCode;
use session_ledger::{Roles, Running, Settings, start};

use crate::helpers::{Backend, Process, app_at, backend_env, store_of, str_field};

async fn in_process(env: &HashMap<String, String>, roles: Roles) -> Running {
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
    start(settings, roles).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_killed_mid_stream_of_signouts_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    let running = in_process(
        &env,
        Roles {
            api: true,
            projector: false,
            validator: true,
        },
    )
    .await;
    let app = app_at(
        Some(&format!("http://{}", running.api_addr.unwrap())),
        Some(&format!("http://{}", running.validator_addr.unwrap())),
    );
    let projector = Process::spawn("projector", &env, &[]);
    app.await_ready().await;

    const N: usize = 60;
    let mut sessions = Vec::new();
    for i in 0..N {
        sessions.push(app.login(&format!("user{i}")).await);
    }
    // Sign everyone out; the projector dies (SIGKILL) half-way through the stream.
    let mut projector = Some(projector);
    for (i, s) in sessions.iter().enumerate() {
        if i == N / 2 {
            projector.take().unwrap().kill();
        }
        let response = app.revoke(str_field(s, "refresh_token")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let _projector = Process::spawn("projector", &env, &[]);

    // Every acknowledged revocation reaches the store...
    let store = store_of(&env, &env["LEDGER_SCYLLA_KEYSPACE"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lost = N;
    while lost > 0 {
        lost = 0;
        for s in &sessions {
            let id = SessionId::parse(str_field(s, "session_id")).unwrap();
            let revoked = store
                .family(id)
                .await
                .unwrap()
                .is_some_and(|f| f.revoked.is_some());
            lost += usize::from(!revoked);
        }
        assert!(
            Instant::now() < deadline,
            "{lost} of {N} revocations never reached the store"
        );
        if lost > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // ...and is enforced by the validator.
    for s in &sessions {
        app.await_active(str_field(s, "access_token"), false).await;
    }

    // Replay (I5): a fresh projector into a fresh keyspace from offset 0 reaches the
    // same state digest as the live projection.
    let live = store.snapshot().await.unwrap();
    let replay_keyspace = format!("{}_replay", env["LEDGER_SCYLLA_KEYSPACE"]);
    let replay = store_of(&env, &replay_keyspace).await;
    let mut kafka =
        ledger_kafka::KafkaConfig::new(&env["LEDGER_KAFKA_BROKERS"], &env["LEDGER_KAFKA_TOPIC"]);
    kafka.partitions = 3;
    let log = ledger_kafka::KafkaLog::connect(kafka).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let replayer = Projector::new(
        std::sync::Arc::new(log),
        std::sync::Arc::new(replay.clone()),
        ProjectorConfig {
            group: format!("replay-{}", uuid::Uuid::new_v4()),
            ..ProjectorConfig::default()
        },
    );
    let task = tokio::spawn(replayer.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while replay.snapshot().await.unwrap().digest() != live.digest() {
        assert!(
            Instant::now() < deadline,
            "replay never reached the live digest"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_killed_after_the_append_converges_on_the_same_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    let running = in_process(
        &env,
        Roles {
            api: false,
            projector: true,
            validator: false,
        },
    )
    .await;

    let first = Process::spawn("api", &env, &[]);
    let app = app_at(first.api.as_deref(), None);
    let login = app.login("mallory-proof").await;
    first.kill();

    // This API instance aborts after Kafka acknowledged the rotation, before answering.
    let crashing = Process::spawn("api", &env, &[("LEDGER_FAILPOINT", "abort-after-append")]);
    let app = app_at(crashing.api.as_deref(), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // 503 (the login is not projected yet) is a safe answer: retry it.
        match app.try_refresh(str_field(&login, "refresh_token")).await {
            Err(_) => break,
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().contains_key("retry-after"));
                assert!(Instant::now() < deadline, "the login was never projected");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(r) => panic!("the crashing instance must not answer: {r:?}"),
        }
    }
    drop(crashing);

    // The client retries on a healthy instance: it gets the one successor.
    let healthy = Process::spawn("api", &env, &[]);
    let app = app_at(healthy.api.as_deref(), None);
    let retried = app.refresh_ok(str_field(&login, "refresh_token")).await;
    let again = app.refresh_ok(str_field(&login, "refresh_token")).await;
    assert_eq!(retried["refresh_token"], again["refresh_token"]);
    let session = SessionId::parse(str_field(&login, "session_id")).unwrap();
    let keys = ledger_token::KeyDir::new(dir.path().join("keys"))
        .refresh_keys()
        .unwrap();
    assert_eq!(
        str_field(&retried, "refresh_token"),
        keys.mint(session, Generation::new(1)),
        "the successor is generation 1: the lost answer's token"
    );
    let status = app.status(str_field(&login, "session_id")).await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["status"], "active");
    running.stop().await.unwrap();
}

/// The projector's consumer group for `env` (as `session-ledger` names it).
fn projector_group(env: &HashMap<String, String>) -> String {
    format!(
        "session-ledger-projector.{}.{}",
        env["LEDGER_KAFKA_TOPIC"], env["LEDGER_SCYLLA_KEYSPACE"]
    )
}

async fn kafka_of(env: &HashMap<String, String>) -> ledger_kafka::KafkaLog {
    let mut kafka =
        ledger_kafka::KafkaConfig::new(&env["LEDGER_KAFKA_BROKERS"], &env["LEDGER_KAFKA_TOPIC"]);
    kafka.partitions = 3;
    ledger_kafka::KafkaLog::connect(kafka).await.unwrap()
}

/// Waits (bounded) until `child` exits, and checks that it aborted (SIGABRT): the
/// failpoint fired.
fn await_abort(child: &mut std::process::Child, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(
                status.signal(),
                Some(6),
                "{what} exited without the failpoint: {status}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the failpoint never fired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `replay --verify`: exits 0 once the projector's checkpoint reached the end of the log
/// and the live projection's digest equals the replay's.
async fn await_replay_verified(env: &HashMap<String, String>) {
    let env = env.clone();
    let (code, out) = tokio::task::spawn_blocking(move || {
        crate::helpers::run_tool(&env, &["replay", "--verify", "--wait", "120s"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the live projection is not the replay's: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_killed_after_the_store_write_before_the_commit_converges_on_the_replay_digest() {
    use ledger_core::ports::LogSource;
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    let running = in_process(
        &env,
        Roles {
            api: true,
            projector: false,
            validator: true,
        },
    )
    .await;
    let app = app_at(
        Some(&format!("http://{}", running.api_addr.unwrap())),
        Some(&format!("http://{}", running.validator_addr.unwrap())),
    );
    let projector = in_process(
        &env,
        Roles {
            api: false,
            projector: true,
            validator: false,
        },
    )
    .await;
    app.await_ready().await;
    let mut sessions = Vec::new();
    for i in 0..20 {
        sessions.push(app.login(&format!("user{i}")).await);
    }
    for s in &sessions[..5] {
        assert_eq!(
            app.revoke(str_field(s, "refresh_token")).await.status(),
            StatusCode::OK
        );
    }
    // Projected and committed; then the projector stops cleanly (leaving its group).
    await_replay_verified(&env).await;
    projector.stop().await.unwrap();
    let kafka = kafka_of(&env).await;
    let group = projector_group(&env);
    let committed = kafka.committed(&group).await.unwrap();
    let store = store_of(&env, &env["LEDGER_SCYLLA_KEYSPACE"]).await;
    let projected = store.snapshot().await.unwrap();

    // Signouts and logins with no projector running.
    for s in &sessions[5..15] {
        assert_eq!(
            app.revoke(str_field(s, "refresh_token")).await.status(),
            StatusCode::OK
        );
    }
    for i in 20..25 {
        sessions.push(app.login(&format!("user{i}")).await);
    }

    // This projector aborts right after the store acknowledged its first batch.
    let mut crashing = std::process::Command::new(crate::helpers::ledger_bin())
        .arg("projector")
        .envs(&env)
        .env("LEDGER_FAILPOINT", "abort-before-commit")
        .env("LEDGER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::task::spawn_blocking(move || await_abort(&mut crashing, "the projector"))
        .await
        .unwrap();
    // The worst moment: the batch is in the store, its positions are not committed.
    assert_ne!(
        store.snapshot().await.unwrap().digest(),
        projected.digest(),
        "the aborted projector wrote nothing"
    );
    assert_eq!(
        kafka.committed(&group).await.unwrap(),
        committed,
        "positions were committed"
    );

    // Restarted, it re-reads the batch; the projection ends equal to the replay's.
    let _projector = Process::spawn("projector", &env, &[]);
    await_replay_verified(&env).await;
    for (i, s) in sessions.iter().enumerate() {
        let id = SessionId::parse(str_field(s, "session_id")).unwrap();
        let revoked = store.family(id).await.unwrap().unwrap().revoked.is_some();
        assert_eq!(revoked, i < 15, "session {i} in the projection");
        app.await_active(str_field(s, "access_token"), i >= 15)
            .await;
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_killed_after_applying_a_batch_before_recording_it_answers_like_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    let running = in_process(
        &env,
        Roles {
            api: true,
            projector: true,
            validator: false,
        },
    )
    .await;
    let api = format!("http://{}", running.api_addr.unwrap());
    let mut sessions = Vec::new();
    let app = app_at(Some(&api), None);
    for i in 0..20 {
        sessions.push(app.login(&format!("user{i}")).await);
    }
    // Everything so far projected: the validator starts with nothing left to tail.
    await_replay_verified(&env).await;

    // This validator aborts after applying the first batch it tails once caught up,
    // before recording the batch's positions or declaring itself caught up.
    let crashing = Process::spawn(
        "validator",
        &env,
        &[("LEDGER_FAILPOINT", "abort-before-commit")],
    );
    let app = app_at(Some(&api), crashing.validator.as_deref());
    app.await_ready().await;
    for s in &sessions[..5] {
        app.await_active(str_field(s, "access_token"), true).await;
    }
    for s in &sessions[..10] {
        assert_eq!(
            app.revoke(str_field(s, "refresh_token")).await.status(),
            StatusCode::OK
        );
    }
    let mut crashing = crashing;
    tokio::task::spawn_blocking(move || await_abort(&mut crashing.child, "the validator"))
        .await
        .unwrap();
    // More signouts while it is down.
    for s in &sessions[10..15] {
        assert_eq!(
            app.revoke(str_field(s, "refresh_token")).await.status(),
            StatusCode::OK
        );
    }

    // Restarted: once ready, every answer is the log's, at once.
    await_replay_verified(&env).await;
    let restarted = Process::spawn("validator", &env, &[]);
    let app = app_at(Some(&api), restarted.validator.as_deref());
    app.await_ready().await;
    for (i, s) in sessions.iter().enumerate() {
        let answer = app.introspect(str_field(s, "access_token")).await;
        assert_eq!(answer["active"], i >= 15, "session {i}: {answer}");
    }
    running.stop().await.unwrap();
}
