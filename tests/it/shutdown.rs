//! SIGTERM (what Kubernetes, systemd and docker send) stops every role gracefully on
//! Kafka + CQL: exit code 0 within a bound, the projector's committed positions are
//! exactly what it wrote to the store, and every acknowledged event is in the log.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ledger_core::SessionId;
use ledger_core::ports::{LogSource, ProjectionStore, StartFrom};
use reqwest::StatusCode;

use crate::helpers::{Backend, Process, app_at, backend_env, store_of, str_field};

/// Sends SIGTERM and waits (bounded) for the exit code.
fn terminate(mut process: Process, role: &str) -> i32 {
    let pid = process.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "{role} still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every event in the topic, with its partition and offset.
async fn whole_log(env: &HashMap<String, String>) -> Vec<ledger_core::ports::LogRecord> {
    let mut kafka =
        ledger_kafka::KafkaConfig::new(&env["LEDGER_KAFKA_BROKERS"], &env["LEDGER_KAFKA_TOPIC"]);
    kafka.partitions = 3;
    let log = ledger_kafka::KafkaLog::connect(kafka).await.unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let batch = reader.poll(1000, Duration::from_millis(500)).await.unwrap();
        if batch.is_empty() && reader.lag() == Some(0) {
            return records;
        }
        records.extend(batch);
        assert!(
            Instant::now() < deadline,
            "the log was never read to its end"
        );
    }
}

/// Logs in as fast as it can until `stop`; returns the acknowledged sessions.
fn login_stream(
    api: &str,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<SessionId>> {
    let app = app_at(Some(api), None);
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let response = app
                .client
                .post(format!("{}/v1/sessions", app.api))
                .bearer_auth(crate::helpers::LOGIN_TOKEN)
                .json(&serde_json::json!({ "subject": format!("user{i}") }))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == StatusCode::CREATED => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    acknowledged.push(SessionId::parse(str_field(&body, "session_id")).unwrap());
                    count.fetch_add(1, Ordering::Relaxed);
                }
                // Refused or cut off while stopping: nothing was acknowledged.
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        acknowledged
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_role_cleanly_with_positions_committed() {
    let dir = tempfile::tempdir().unwrap();
    let env = backend_env(Backend::Kafka, dir.path());
    let api = Process::spawn("api", &env, &[]);
    let validator = Process::spawn("validator", &env, &[]);
    let projector = Process::spawn("projector", &env, &[]);
    let api_url = api.api.clone().unwrap();
    app_at(Some(&api_url), validator.validator.as_deref())
        .await_ready()
        .await;

    // The projector is stopped while logins stream in.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let stream = login_stream(&api_url, stop.clone(), count.clone());
    let status = format!("{}/v1/status", projector.projector.as_deref().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s: serde_json::Value = reqwest::get(&status).await.unwrap().json().await.unwrap();
        if s["events_applied"].as_u64().unwrap_or(0) >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projector applied nothing: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let code = tokio::task::spawn_blocking(move || terminate(projector, "projector"))
        .await
        .unwrap();
    assert_eq!(code, 0, "projector exit code after SIGTERM");

    // Then the API, still under load: every login it acknowledged is in the log.
    let more = count.load(Ordering::Relaxed) + 10;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::Relaxed) < more {
        assert!(
            Instant::now() < deadline,
            "the API stopped acknowledging logins"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let code = tokio::task::spawn_blocking(move || terminate(api, "api"))
        .await
        .unwrap();
    assert_eq!(code, 0, "api exit code after SIGTERM");
    stop.store(true, Ordering::Relaxed);
    let acknowledged = stream.await.unwrap();
    let code = tokio::task::spawn_blocking(move || terminate(validator, "validator"))
        .await
        .unwrap();
    assert_eq!(code, 0, "validator exit code after SIGTERM");

    let log = whole_log(&env).await;
    let in_log: HashSet<SessionId> = log.iter().filter_map(|r| r.event.session_id).collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|s| !in_log.contains(s))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not in the log: {lost:?}");

    // The projector's committed positions are exactly what it wrote: every login
    // before them is in the store, none after them (a batch written but not
    // committed would be applied again by the next projector).
    let mut kafka =
        ledger_kafka::KafkaConfig::new(&env["LEDGER_KAFKA_BROKERS"], &env["LEDGER_KAFKA_TOPIC"]);
    kafka.partitions = 3;
    let source = ledger_kafka::KafkaLog::connect(kafka).await.unwrap();
    let group = format!(
        "{}.{}.{}",
        ledger_projector::DEFAULT_GROUP,
        env["LEDGER_KAFKA_TOPIC"],
        env["LEDGER_SCYLLA_KEYSPACE"]
    );
    let committed = source.committed(&group).await.unwrap();
    assert!(!committed.is_empty(), "the projector committed nothing");
    let store = store_of(&env, &env["LEDGER_SCYLLA_KEYSPACE"]).await;
    let (mut before, mut after) = (0, 0);
    for record in &log {
        let next = committed
            .iter()
            .find(|c| c.partition == record.position.partition)
            .map_or(0, |c| c.offset);
        let id = record.event.session_id.unwrap();
        let stored = store.family(id).await.unwrap().is_some();
        if record.position.offset < next {
            before += 1;
            assert!(
                stored,
                "{id} is before the committed position but not in the store"
            );
        } else {
            after += 1;
            assert!(
                !stored,
                "{id} is in the store but after the committed position"
            );
        }
    }
    assert!(
        before >= 20,
        "{before} events before the committed positions"
    );
    assert!(
        after > 0,
        "the API appended nothing after the projector stopped"
    );
}
