#![allow(clippy::unwrap_used)]
//! Against a real Kafka broker (`LEDGER_KAFKA_BROKERS`, default 127.0.0.1:9092; start
//! it with `scripts/services.sh up`). Every test uses its own topic. With no broker
//! the tests fail; they never skip.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ledger_core::ports::{
    BackendError, EventLog, LogEnd as _, LogReader, LogRecord, LogSource, Position, StartFrom,
};
use ledger_core::{
    Command, DecideContext, Event, Generation, Policy, Projection, RevokeReason, Subject,
    TraceContext, decide,
};
use ledger_kafka::{KafkaConfig, KafkaLog};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE";

fn brokers() -> String {
    std::env::var("LEDGER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A configuration for a topic of its own, with 3 partitions.
fn config() -> KafkaConfig {
    let topic = format!("ledger-test-{}", uuid::Uuid::new_v4().simple());
    let mut config = KafkaConfig::new(brokers(), topic);
    config.partitions = 3;
    config
}

/// Connects to a fresh topic; deleted again by [`TestTopic::delete`].
async fn spawn_log() -> (KafkaLog, TestTopic) {
    let config = config();
    let log = KafkaLog::connect(config.clone()).await.unwrap();
    (log, TestTopic(config))
}

struct TestTopic(KafkaConfig);

impl TestTopic {
    async fn delete(self) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.0.brokers)
            .create()
            .unwrap();
        let results = admin
            .delete_topics(&[self.0.topic.as_str()], &AdminOptions::new())
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
}

/// The events of `n` families (issued, refreshed, revoked each), a family's events in
/// the order they happened.
fn histories(n: usize, trace_context: Option<TraceContext>) -> Vec<Event> {
    let policy = Policy::default();
    let mut events = Vec::new();
    for i in 0..n {
        let now = ledger_clock::now();
        let ctx = |offset_ms: u64| DecideContext {
            now: now.saturating_add(Duration::from_millis(offset_ms)),
            policy: &policy,
            region: "test",
            trace_context: trace_context.clone(),
            event_id: ledger_clock::new_event_id(),
        };
        let id = ledger_clock::new_session_id();
        let mut state = Projection::new();
        let mut step = |command, ms| {
            let produced = decide(state.family(&id), None, command, &ctx(ms)).unwrap();
            for e in &produced {
                state.apply(e);
            }
            events.extend(produced);
        };
        let open = Command::Open {
            session_id: id,
            subject: Subject::parse(format!("user-{i}")).unwrap(),
            client_id: None,
            claims: Default::default(),
            access_jti: format!("jti-{i}-0"),
        };
        step(open, 0);
        let refresh = Command::Refresh {
            session_id: id,
            presented: Generation::INITIAL,
            access_jti: format!("jti-{i}-1"),
        };
        step(refresh, 1);
        let revoke = Command::Revoke {
            session_id: id,
            reason: RevokeReason::Logout,
        };
        step(revoke, 2);
    }
    events
}

/// Polls until `n` records arrived (or fails after a generous bound).
async fn read_n(reader: &mut dyn LogReader, n: usize) -> Vec<LogRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while records.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} records",
            records.len()
        );
        records.extend(
            reader
                .poll(n - records.len(), Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    assert_eq!(records.len(), n);
    records
}

/// Polls (reading nothing more) until the reader knows its lag.
async fn settled_lag(reader: &mut dyn LogReader, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(reader.poll(0, Duration::ZERO).await.unwrap().is_empty());
        if reader.lag() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lag {:?}, expected Some({expected})",
            reader.lag()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.event.event_id.to_string())
        .collect()
}

/// Next offset per partition after `records`.
fn next_offsets(records: &[LogRecord]) -> BTreeMap<u32, u64> {
    let mut next = BTreeMap::new();
    for r in records {
        let n = next.entry(r.position.partition).or_insert(0);
        *n = (*n).max(r.position.offset + 1);
    }
    next
}

#[tokio::test]
async fn appended_events_are_read_from_the_beginning_in_order_per_partition() {
    let (log, topic) = spawn_log().await;
    let events = histories(6, None);
    log.append(&events).await.unwrap();

    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let started = Instant::now();
    let first = reader.poll(1000, Duration::from_secs(20)).await.unwrap();
    assert!(!first.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a flowing log is returned without waiting the full wait"
    );
    let mut records = first;
    let rest = events.len() - records.len();
    records.extend(read_n(reader.as_mut(), rest).await);

    // Every event once, and nothing else.
    let mut read: Vec<String> = ids(&records);
    let mut appended: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    read.sort();
    appended.sort();
    assert_eq!(read, appended);

    // Per partition: offsets 0, 1, 2, … in order; one family stays in one partition,
    // its events in the order appended.
    let mut by_partition: BTreeMap<u32, Vec<&LogRecord>> = BTreeMap::new();
    for r in &records {
        by_partition
            .entry(r.position.partition)
            .or_default()
            .push(r);
    }
    for (partition, records) in &by_partition {
        let offsets: Vec<u64> = records.iter().map(|r| r.position.offset).collect();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "partition {partition}");
    }
    let mut family_partition: HashMap<String, u32> = HashMap::new();
    for r in &records {
        let key = r.event.partition_key();
        let p = *family_partition.entry(key).or_insert(r.position.partition);
        assert_eq!(
            p, r.position.partition,
            "a family's events share a partition"
        );
    }
    for chunk in events.chunks(3) {
        let family = chunk[0].session_id;
        let read: Vec<&Event> = records
            .iter()
            .map(|r| &r.event)
            .filter(|e| e.session_id == family)
            .collect();
        assert_eq!(read, chunk.iter().collect::<Vec<_>>());
    }

    let positions: BTreeMap<u32, u64> = reader
        .positions()
        .iter()
        .map(|p| (p.partition, p.offset))
        .filter(|(_, o)| *o > 0)
        .collect();
    assert_eq!(positions, next_offsets(&records));
    settled_lag(reader.as_mut(), 0).await;
    drop(reader);
    topic.delete().await;
}

#[tokio::test]
async fn lag_counts_the_records_not_read_yet() {
    let (log, topic) = spawn_log().await;
    let events = histories(3, None);
    log.append(&events).await.unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    read_n(reader.as_mut(), 1).await;
    settled_lag(reader.as_mut(), events.len() as u64 - 1).await;
    read_n(reader.as_mut(), events.len() - 1).await;
    settled_lag(reader.as_mut(), 0).await;
    // New events show as lag again.
    log.append(&histories(1, None)).await.unwrap();
    settled_lag(reader.as_mut(), 3).await;
    drop(reader);
    topic.delete().await;
}

#[tokio::test]
async fn a_group_reader_resumes_after_its_commit() {
    let (log, topic) = spawn_log().await;
    let group = format!("projector-{}", uuid::Uuid::new_v4().simple());
    let committed = || StartFrom::Committed {
        group: group.clone(),
    };
    let first = histories(2, None);
    log.append(&first).await.unwrap();

    // Read but not committed: closing the reader (leaving the group) commits nothing.
    let mut reader = log.reader(committed()).await.unwrap();
    read_n(reader.as_mut(), first.len()).await;
    drop(reader);
    assert_eq!(log.committed(&group).await.unwrap(), Vec::<Position>::new());

    // Read again from the start, and committed this time.
    let mut reader = log.reader(committed()).await.unwrap();
    let records = read_n(reader.as_mut(), first.len()).await;
    let positions = reader.positions();
    reader.commit(&positions).await.unwrap();
    // Committing the same or older positions again is a no-op.
    reader.commit(&positions).await.unwrap();
    drop(reader);
    assert_eq!(log.committed(&group).await.unwrap(), positions);
    for (partition, next) in next_offsets(&records) {
        assert!(positions.contains(&Position {
            partition,
            offset: next
        }));
    }

    // A new member of the group resumes after the committed offsets.
    let second = histories(1, None);
    log.append(&second).await.unwrap();
    let mut reader = log.reader(committed()).await.unwrap();
    assert_eq!(
        reader.positions(),
        positions,
        "starts where the group left off"
    );
    let records = read_n(reader.as_mut(), second.len()).await;
    assert_eq!(
        ids(&records),
        second
            .iter()
            .map(|e| e.event_id.to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        reader
            .poll(10, Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty()
    );
    settled_lag(reader.as_mut(), 0).await;
    drop(reader);
    topic.delete().await;
}

#[tokio::test]
async fn a_reader_starts_at_the_given_positions() {
    let (log, topic) = spawn_log().await;
    let first = histories(3, None);
    log.append(&first).await.unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let records = read_n(reader.as_mut(), first.len()).await;
    let after_first = reader.positions();
    drop(reader);

    // One partition named at offset 1: it skips its first record; the others start at
    // the beginning.
    let partition = records[0].position.partition;
    let start = vec![Position {
        partition,
        offset: 1,
    }];
    let mut reader = log.reader(StartFrom::Positions(start)).await.unwrap();
    let read = read_n(reader.as_mut(), first.len() - 1).await;
    assert!(!read.iter().any(|r| r.position
        == Position {
            partition,
            offset: 0
        }));
    drop(reader);

    // Every partition named: only what was appended since.
    let second = histories(2, None);
    log.append(&second).await.unwrap();
    let mut reader = log
        .reader(StartFrom::Positions(after_first.clone()))
        .await
        .unwrap();
    assert_eq!(reader.positions(), after_first);
    let read = read_n(reader.as_mut(), second.len()).await;
    let mut read = ids(&read);
    let mut expected: Vec<String> = second.iter().map(|e| e.event_id.to_string()).collect();
    read.sort();
    expected.sort();
    assert_eq!(read, expected);
    settled_lag(reader.as_mut(), 0).await;
    drop(reader);
    topic.delete().await;
}

#[tokio::test]
async fn records_carry_the_event_type_id_and_trace_context_as_headers() {
    let (log, topic) = spawn_log().await;
    let trace = TraceContext {
        traceparent: TRACEPARENT.into(),
        tracestate: Some(TRACESTATE.into()),
    };
    let events = histories(1, Some(trace));
    log.append(&events[..1]).await.unwrap();

    // Read the raw record with a plain consumer.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("raw-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic.0.topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.key(), Some(events[0].partition_key().as_bytes()));
    assert_eq!(
        Event::from_json(message.payload().unwrap()).unwrap(),
        events[0]
    );
    let headers: HashMap<String, String> = message
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(headers["event_type"], "SessionIssued");
    assert_eq!(headers["event_id"], events[0].event_id.to_string());
    assert_eq!(headers["traceparent"], TRACEPARENT);
    assert_eq!(headers["tracestate"], TRACESTATE);
    drop(message);
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .unwrap();
    topic.delete().await;
}

#[tokio::test]
async fn polling_an_idle_log_returns_nothing_after_the_wait() {
    let (log, topic) = spawn_log().await;
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let wait = Duration::from_secs(1);
    let started = Instant::now();
    let batch = reader.poll(10, wait).await.unwrap();
    let took = started.elapsed();
    assert!(batch.is_empty());
    assert!(took >= wait - Duration::from_millis(50), "waited {took:?}");
    assert!(took < wait + Duration::from_secs(2), "waited {took:?}");
    settled_lag(reader.as_mut(), 0).await;
    drop(reader);
    topic.delete().await;
}

#[tokio::test]
async fn an_undecodable_record_stops_the_reader_with_corrupt() {
    let (log, topic) = spawn_log().await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic.0.topic)
                .key("k")
                .payload("not json")
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    for _ in 0..2 {
        match reader.poll(10, Duration::from_secs(20)).await {
            Err(BackendError::Corrupt { position, .. }) => {
                assert_eq!(position, format!("{}/0@0", topic.0.topic));
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
    }
    drop(reader);
    tokio::task::spawn_blocking(move || drop(producer))
        .await
        .unwrap();
    topic.delete().await;
}

#[tokio::test]
async fn append_to_an_unreachable_broker_fails_promptly() {
    let mut config = config();
    config.brokers = "127.0.0.1:1".into();
    config.delivery_timeout = Duration::from_secs(2);
    config.operation_timeout = Duration::from_secs(2);

    let started = Instant::now();
    let connected = KafkaLog::connect(config.clone()).await;
    assert!(
        matches!(connected, Err(BackendError::Unavailable { .. })),
        "{connected:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let log = KafkaLog::new(config).unwrap();
    let started = Instant::now();
    let appended = log.append(&histories(1, None)).await;
    let took = started.elapsed();
    match appended {
        Err(BackendError::Unavailable { message, .. }) => {
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test]
async fn records_land_in_the_partition_the_fence_computes() {
    let (log, topic) = spawn_log().await;
    let events = histories(12, None);
    log.append(&events).await.unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let records = read_n(reader.as_mut(), events.len()).await;
    for r in &records {
        let expected = ledger_kafka::partition_for(r.event.partition_key().as_bytes(), 3);
        assert_eq!(r.position.partition, u32::try_from(expected).unwrap());
    }
    drop(reader);
    topic.delete().await;
}

#[tokio::test]
async fn the_end_of_the_log_is_where_a_reader_has_read_every_acknowledged_event() {
    let (log, topic) = spawn_log().await;
    let end = ledger_kafka::KafkaLogEnd::open(log.config(), Duration::from_secs(5))
        .await
        .unwrap();
    // An empty log: nothing to read.
    let empty = end.end().await.unwrap();
    assert_eq!(empty.len(), 3);
    assert!(empty.iter().all(|p| p.offset == 0), "{empty:?}");

    let events = histories(12, None);
    log.append(&events).await.unwrap();
    let at = end.end().await.unwrap();
    let total: u64 = at.iter().map(|p| p.offset).sum();
    assert_eq!(total, events.len() as u64, "{at:?}");
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let records = read_n(reader.as_mut(), events.len()).await;
    let read = next_offsets(&records);
    for p in &at {
        assert_eq!(
            read.get(&p.partition).copied().unwrap_or(0),
            p.offset,
            "{at:?}"
        );
    }
    drop(reader);
    topic.delete().await;
}

#[tokio::test]
async fn a_reader_reads_the_own_topic_and_the_remote_ones_with_positions_per_topic() {
    // Two logs on two topics; the second is the "remote" one of a reader of the first.
    let (remote, remote_topic) = spawn_log().await;
    let mut config = config();
    config.remote_topics = vec![remote.config().topic.clone()];
    let local = KafkaLog::connect(config.clone()).await.unwrap();
    let (own, theirs) = (histories(4, None), histories(5, None));
    local.append(&own).await.unwrap();
    remote.append(&theirs).await.unwrap();

    let mut reader = local.reader(StartFrom::Beginning).await.unwrap();
    let records = read_n(reader.as_mut(), own.len() + theirs.len()).await;
    let (from_own, from_remote): (Vec<_>, Vec<_>) = records
        .iter()
        .partition(|r| ledger_kafka::split_partition(r.position.partition).0 == 0);
    assert_eq!(from_own.len(), own.len());
    assert_eq!(from_remote.len(), theirs.len());
    assert!(
        from_remote
            .iter()
            .all(|r| ledger_kafka::split_partition(r.position.partition).0 == 1)
    );
    settled_lag(reader.as_mut(), 0).await;

    // A group commits per (topic, partition) and resumes from there on both topics.
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let mut member = local
        .reader(StartFrom::Committed {
            group: group.clone(),
        })
        .await
        .unwrap();
    let read = read_n(member.as_mut(), own.len() + theirs.len()).await;
    member.commit(&member.positions()).await.unwrap();
    drop(member);
    let committed = local.committed(&group).await.unwrap();
    assert_eq!(
        committed.iter().map(|p| p.offset).sum::<u64>(),
        u64::try_from(read.len()).unwrap()
    );
    let (own_more, theirs_more) = (histories(1, None), histories(1, None));
    local.append(&own_more).await.unwrap();
    remote.append(&theirs_more).await.unwrap();
    let mut member = local.reader(StartFrom::Committed { group }).await.unwrap();
    let more = read_n(member.as_mut(), own_more.len() + theirs_more.len()).await;
    let mut expected = ids(&[]);
    expected.extend(
        own_more
            .iter()
            .chain(&theirs_more)
            .map(|e| e.event_id.to_string()),
    );
    let (mut got, mut expected) = (ids(&more), expected);
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "only the new events, from both topics");
    assert!(
        member
            .poll(100, Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty(),
        "nothing before the checkpoint is read again"
    );
    drop((reader, member));
    topic_of(config).delete().await;
    remote_topic.delete().await;
}

fn topic_of(config: KafkaConfig) -> TestTopic {
    TestTopic(config)
}
