#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ledger_core::ports::EventLog;
use ledger_core::testing::{at, login_and_logout};
use ledger_embedded::Embedded;

use super::*;

const BOUND: Duration = Duration::from_secs(10);

fn config() -> StreamConfig {
    StreamConfig {
        keep_alive: Duration::from_millis(200),
        buffer: 4,
        ..StreamConfig::default()
    }
}

fn stream(log: &Embedded, config: StreamConfig) -> (RevocationStream, CancellationToken) {
    let shutdown = CancellationToken::new();
    let stream = RevocationStream::new(Arc::new(log.clone()), shutdown.clone(), config);
    (stream, shutdown)
}

/// The next chunk that is not a keep-alive.
async fn next_event(rx: &mut mpsc::Receiver<Bytes>) -> String {
    loop {
        let chunk = tokio::time::timeout(BOUND, rx.recv())
            .await
            .expect("an event in time")
            .expect("the stream is open");
        if chunk != KEEP_ALIVE {
            return String::from_utf8(chunk.to_vec()).unwrap();
        }
    }
}

/// How long the revocations of a logout at `now` stay in force.
fn in_force_for() -> Duration {
    let (_, events) = login_and_logout("probe", at(0));
    let record = RevocationRecord::from_event(&events[1]).unwrap();
    record.keep_until.duration_since(at(0))
}

#[test]
fn an_event_carries_the_position_and_the_topic_s_bytes() {
    let (_, events) = login_and_logout("alice", at(0));
    let record = RevocationRecord::from_event(&events[1]).unwrap();
    let json = String::from_utf8(record.to_json()).unwrap();
    assert_eq!(
        revocation_event(7, &record),
        format!("id: 7\nevent: revocation\ndata: {json}\n\n")
    );
    assert_eq!(
        expired_event("subject:bob", Timestamp::from_unix_seconds(1)),
        "event: expired\ndata: {\"key\":\"subject:bob\",\"keep_until\":\"1970-01-01T00:00:01Z\"}\n\n"
    );
}

#[test]
fn positions_are_plain_decimal_offsets() {
    assert_eq!(StreamPosition::parse("0").unwrap().offset(), 0);
    assert_eq!(StreamPosition::parse("42").unwrap().offset(), 42);
    for bad in [
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "0x10",
        "abc",
        "99999999999999999999",
        "184467440737095516160",
    ] {
        assert!(
            matches!(StreamPosition::parse(bad), Err(StreamError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn history_then_live_revocations_resumable_after_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let (alice, events) = login_and_logout("alice", ledger_clock::now());
    log.append(&events).await.unwrap();
    let (stream, _shutdown) = stream(&log, config());

    let mut rx = stream.open(None).await.unwrap();
    let first = next_event(&mut rx).await;
    assert!(first.starts_with("id: 2\nevent: revocation\n"), "{first}");
    assert!(first.contains(&alice.to_string()), "{first}");

    // Live: appended while the stream waits.
    let (bob, events) = login_and_logout("bob", ledger_clock::now());
    log.append(&events).await.unwrap();
    let second = next_event(&mut rx).await;
    assert!(second.starts_with("id: 4\n"), "{second}");
    assert!(second.contains(&bob.to_string()), "{second}");

    // Resumed after the first: only the second.
    let mut rx = stream.open(Some(StreamPosition(2))).await.unwrap();
    assert_eq!(next_event(&mut rx).await, second);
    // Resumed at the end: nothing but keep-alives.
    let mut rx = stream.open(Some(StreamPosition(4))).await.unwrap();
    for _ in 0..2 {
        let chunk = tokio::time::timeout(BOUND, rx.recv()).await.unwrap();
        assert_eq!(chunk.unwrap(), KEEP_ALIVE);
    }
}

#[tokio::test]
async fn a_position_beyond_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let (_, events) = login_and_logout("alice", ledger_clock::now());
    log.append(&events).await.unwrap();
    let (stream, _shutdown) = stream(&log, config());
    assert!(stream.open(Some(StreamPosition(2))).await.is_ok());
    let err = stream.open(Some(StreamPosition(3))).await.unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Beyond {
                given: 3,
                newest: 2
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn expired_revocations_are_skipped_and_announced_when_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let now = ledger_clock::now();
    let (_, stale) = login_and_logout("old", now.saturating_sub(in_force_for()));
    log.append(&stale).await.unwrap();
    let soon = now
        .saturating_sub(in_force_for())
        .saturating_add(Duration::from_millis(500));
    let (expiring, events) = login_and_logout("alice", soon);
    log.append(&events).await.unwrap();
    let (stream, _shutdown) = stream(&log, config());

    let mut rx = stream.open(None).await.unwrap();
    let first = next_event(&mut rx).await;
    assert!(first.starts_with("id: 4\nevent: revocation\n"), "{first}");
    let expired = next_event(&mut rx).await;
    assert!(
        expired.starts_with(&format!("event: expired\ndata: {{\"key\":\"{expiring}\"")),
        "{expired}"
    );
    assert!(ledger_clock::now() >= RevocationRecord::from_event(&events[1]).unwrap().keep_until);

    // A consumer starting now gets none of it.
    let mut rx = stream.open(None).await.unwrap();
    let chunk = tokio::time::timeout(BOUND, rx.recv()).await.unwrap();
    assert_eq!(chunk.unwrap(), KEEP_ALIVE);
}

#[tokio::test]
async fn a_consumer_that_does_not_read_holds_back_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let config = StreamConfig {
        buffer: 1,
        ..config()
    };
    let (stream, shutdown) = stream(&log, config);
    let stuck = stream.open(None).await.unwrap();
    let mut reading = stream.open(None).await.unwrap();
    for i in 0..20 {
        let (_, events) = login_and_logout(&format!("user-{i}"), ledger_clock::now());
        log.append(&events).await.unwrap();
    }
    for i in 0..20 {
        let event = next_event(&mut reading).await;
        assert!(
            event.starts_with(&format!("id: {}\n", 2 * i + 2)),
            "{event}"
        );
    }
    // The stuck one buffered what its buffer holds, no more.
    assert_eq!(stuck.len(), 1);
    // Stopping ends every stream, the stuck one included.
    shutdown.cancel();
    let mut stuck = stuck;
    let mut drained = 0;
    while tokio::time::timeout(BOUND, stuck.recv())
        .await
        .unwrap()
        .is_some()
    {
        drained += 1;
    }
    assert!(drained <= 2, "{drained}");
}
