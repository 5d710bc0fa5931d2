//! The revocation stream over Server-Sent Events on the embedded backend
//! (`GET /v1/revocations/stream` on the validator's listener), read with a plain HTTP
//! client and with `curl -N`.

use std::time::Duration;

use ledger_core::RevocationRecord;
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{
    Backend, INTROSPECT_TOKEN, LOGIN_TOKEN, Process, TestApp, spawn_app_on, str_field, test_env,
};

/// One SSE event as a consumer sees it.
#[derive(Debug)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads events off a streaming response, skipping comments (keep-alives).
struct Sse {
    response: Response,
    buffer: String,
}

impl Sse {
    async fn connect(app: &TestApp, query: &str, last_event_id: Option<&str>) -> Sse {
        let response = get_stream(app, query, last_event_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (bounded wait).
    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), Vec::new());
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => id = Some(value.to_owned()),
                        "event" => event = value.to_owned(),
                        "data" => data.push(value),
                        other => panic!("unexpected field {other} in {block:?}"),
                    }
                }
                if data.is_empty() {
                    continue; // a comment-only block
                }
                return Event {
                    id,
                    event,
                    data: data.join("\n"),
                };
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `revocation` event, as its position and record.
    async fn revocation(&mut self) -> (String, Value) {
        let e = self.next().await;
        assert_eq!(e.event, "revocation", "{e:?}");
        // The bytes the Kafka topic carries for the same event.
        let record = RevocationRecord::from_json(e.data.as_bytes()).unwrap();
        assert_eq!(record.to_json(), e.data.as_bytes());
        (
            e.id.expect("a position"),
            serde_json::from_str(&e.data).unwrap(),
        )
    }
}

async fn get_stream(app: &TestApp, query: &str, last_event_id: Option<&str>) -> Response {
    let mut request = app
        .client
        .get(format!("{}/v1/revocations/stream{query}", app.validator))
        .bearer_auth(INTROSPECT_TOKEN);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.unwrap()
}

async fn sign_out(app: &TestApp, subject: &str) -> String {
    let session = app.login(subject).await;
    let response = app.revoke(str_field(&session, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
    str_field(&session, "session_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_stream_shows_signouts_live_and_resumes_after_the_last_event_id() {
    let app = spawn_app_on(Backend::Embedded, &[]).await;
    let alice = sign_out(&app, "alice").await;

    // History first.
    let mut stream = Sse::connect(&app, "", None).await;
    let (alice_at, record) = stream.revocation().await;
    assert_eq!(record["family_id"], alice);
    assert_eq!(record["scope"], "family");
    assert_eq!(record["reason"], "logout");

    // Then live: a signout, and a subject-wide revocation.
    let bob = sign_out(&app, "bob").await;
    let (bob_at, record) = stream.revocation().await;
    assert_eq!(record["family_id"], bob);
    let response = app
        .client
        .post(format!("{}/v1/subjects/carol/revoke", app.api))
        .bearer_auth(LOGIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (carol_at, record) = stream.revocation().await;
    assert_eq!(record["scope"], "subject");
    assert_eq!(record["subject"], "carol");
    assert_eq!(record["family_id"], Value::Null);

    // A reconnect resumes strictly after its Last-Event-ID, which wins over `from`
    // (an EventSource reconnects to the URL it was opened with).
    let mut resumed = Sse::connect(&app, "?from=0", Some(&alice_at)).await;
    assert_eq!(resumed.revocation().await.0, bob_at);
    assert_eq!(resumed.revocation().await.0, carol_at);
    let mut resumed = Sse::connect(&app, &format!("?from={bob_at}"), None).await;
    assert_eq!(resumed.revocation().await.0, carol_at);
    // At the end: only what comes next.
    let mut resumed = Sse::connect(&app, "", Some(&carol_at)).await;
    let dave = sign_out(&app, "dave").await;
    assert_eq!(resumed.revocation().await.1["family_id"], dave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_stream_refuses_bad_positions_and_unknown_callers() {
    let app = spawn_app_on(Backend::Embedded, &[]).await;
    sign_out(&app, "alice").await;
    for (query, last_event_id, says) in [
        ("?from=abc", None, "from: position \"abc\""),
        ("?from=-1", None, "from: position \"-1\""),
        ("?from=", None, "from: position \"\""),
        ("?from=1&from=2", None, "parameter from is repeated"),
        ("?from=3", None, "beyond the end of the log"),
        (
            "?from=18446744073709551615",
            None,
            "beyond the end of the log",
        ),
        ("", Some("x1"), "Last-Event-ID: position \"x1\""),
        ("?from=1", Some("99"), "beyond the end of the log"),
    ] {
        let response = get_stream(&app, query, last_event_id).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(says), "{query}: {description}");
    }
    // The newest position is fine: the stream then waits for what comes next.
    assert_eq!(
        get_stream(&app, "?from=2", None).await.status(),
        StatusCode::OK
    );

    let url = format!("{}/v1/revocations/stream", app.validator);
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let login = app
        .client
        .get(&url)
        .bearer_auth(LOGIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_stream_announces_and_then_leaves_out_expired_revocations() {
    let app = spawn_app_on(
        Backend::Embedded,
        &[
            // Access tokens live seconds, so keep_until comes within the test.
            ("LEDGER_ACCESS_TTL", "2s"),
            ("LEDGER_REFRESH_IDLE_TTL", "20s"),
            ("LEDGER_REFRESH_GRACE", "1s"),
            ("LEDGER_SESSION_MAX_TTL", "1h"),
            ("LEDGER_CLOCK_LEEWAY", "0s"),
            ("LEDGER_CLOCK_SKEW_MARGIN", "1s"),
        ],
    )
    .await;
    let alice = sign_out(&app, "alice").await;
    let mut stream = Sse::connect(&app, "", None).await;
    let (alice_at, record) = stream.revocation().await;
    assert_eq!(record["family_id"], alice);

    // Once its keep_until has passed, the connection says so (the tombstone).
    let expired = stream.next().await;
    assert_eq!(expired.event, "expired", "{expired:?}");
    assert_eq!(expired.id, None);
    let data: Value = serde_json::from_str(&expired.data).unwrap();
    assert_eq!(data["key"], alice);
    assert_eq!(data["keep_until"], record["keep_until"]);

    // A consumer starting now is not told about it: its first event is a later one.
    let bob = sign_out(&app, "bob").await;
    let mut fresh = Sse::connect(&app, "", None).await;
    let (bob_at, record) = fresh.revocation().await;
    assert_eq!(record["family_id"], bob);
    assert!(
        bob_at.parse::<u64>().unwrap() > alice_at.parse::<u64>().unwrap(),
        "{bob_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_stream_on_kafka_points_at_the_topic() {
    let topic = format!("revocations-{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_on(
        Backend::Kafka,
        &[("LEDGER_KAFKA_REVOCATIONS_TOPIC", &topic)],
    )
    .await;
    let response = get_stream(&app, "", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains(&topic), "{description}");
}

/// `curl -N`, a client written elsewhere, reads the stream of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_stream_read_by_curl() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let env = test_env(dir.path());
    let process = Process::spawn("dev", &env, &[]);
    let app = crate::helpers::app_at(process.api.as_deref(), process.validator.as_deref());
    app.await_ready().await;
    let alice = sign_out(&app, "alice").await;

    let mut curl = std::process::Command::new("curl")
        .args(["-N", "--silent", "--show-error", "--max-time", "60"])
        .args(["-H", &format!("Authorization: Bearer {INTROSPECT_TOKEN}")])
        .arg(format!("{}/v1/revocations/stream", app.validator))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let stdout = curl.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // The records' `data` lines, in order.
    let next_data = || loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("curl printed the next event within 30 s");
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str::<Value>(data).unwrap();
        }
    };
    assert_eq!(tokio::task::block_in_place(next_data)["family_id"], alice);
    // Live, while curl is connected.
    let bob = sign_out(&app, "bob").await;
    let record = tokio::task::block_in_place(next_data);
    assert_eq!(record["family_id"], bob);
    assert_eq!(record["reason"], "logout");
    curl.kill().unwrap();
    curl.wait().unwrap();
    process.kill();
}
