//! The public revocation topic read by a consumer the project did not write: the
//! Java console consumer of the Kafka distribution `scripts/services.sh` fetched.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, LOGIN_TOKEN, spawn_app_on, str_field};

/// Reads the whole topic from the start with `ConsoleConsumer`; applies each record
/// (a value adds the key, `null` removes it) and returns what is in force.
fn console_consume(topic: &str) -> (usize, BTreeMap<String, Value>) {
    let jars = std::env::var("LEDGER_SERVICES_JARS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/session-ledger/services",
            std::env::var("HOME").unwrap()
        )
    });
    let brokers = std::env::var("LEDGER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let out = std::process::Command::new("java")
        .args([
            "-cp",
            &format!("{jars}/kafka/lib/*"),
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            &brokers,
            "--topic",
            topic,
            "--from-beginning",
            "--timeout-ms",
            "4000",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=|",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut state = BTreeMap::new();
    let mut records = 0;
    for line in text.lines().filter(|l| l.contains('|')) {
        let (key, value) = line.split_once('|').unwrap();
        records += 1;
        if value == "null" {
            state.remove(key);
        } else {
            state.insert(key.to_owned(), serde_json::from_str(value).unwrap());
        }
    }
    (records, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_consumer_reads_exactly_the_revocations_in_force() {
    let topic = format!("revocations-{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_on(
        Backend::Kafka,
        &[
            ("LEDGER_KAFKA_REVOCATIONS_TOPIC", &topic),
            // Tokens live seconds, so the entries' keep_until (and the tombstones)
            // come within the test, yet after the first read of the topic.
            ("LEDGER_ACCESS_TTL", "3s"),
            ("LEDGER_REFRESH_IDLE_TTL", "20s"),
            ("LEDGER_REFRESH_GRACE", "1s"),
            ("LEDGER_SESSION_MAX_TTL", "1h"),
            ("LEDGER_CLOCK_LEEWAY", "0s"),
            ("LEDGER_CLOCK_SKEW_MARGIN", "1s"),
        ],
    )
    .await;
    let alice = app.login("alice").await;
    app.login("bob").await;
    assert_eq!(
        app.revoke(str_field(&alice, "refresh_token"))
            .await
            .status(),
        StatusCode::OK
    );
    let response = app
        .client
        .post(format!("{}/v1/subjects/bob/revoke", app.api))
        .bearer_auth(LOGIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Both revocations are in force: one record each, keyed by family and subject.
    let start = std::time::Instant::now();
    let state = loop {
        let t = topic.clone();
        let (_, state) = tokio::task::spawn_blocking(move || console_consume(&t))
            .await
            .unwrap();
        if state.len() == 2 {
            break state;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "in force: {state:?}"
        );
    };
    let family = state
        .get(str_field(&alice, "session_id"))
        .expect("alice's family");
    assert_eq!(family["reason"], "logout");
    assert_eq!(family["scope"], "family");
    let subject = state
        .get("subject:bob")
        .expect("bob's subject-wide revocation");
    assert_eq!(subject["reason"], "admin");
    assert_eq!(subject["family_id"], Value::Null);

    // Once keep_until has passed, tombstones withdraw both: nothing is in force.
    let start = std::time::Instant::now();
    loop {
        let t = topic.clone();
        let (records, state) = tokio::task::spawn_blocking(move || console_consume(&t))
            .await
            .unwrap();
        // Nothing read at all is a consumer that gave up before its first fetch (its
        // 4 s idle timeout, on a loaded machine), not an empty topic: read again.
        if state.is_empty() && records > 0 {
            assert!(
                records >= 4,
                "two records and two tombstones, read {records}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still in force: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
