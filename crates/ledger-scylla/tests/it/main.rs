#![allow(clippy::unwrap_used)]
//! Against a real CQL database (`LEDGER_SCYLLA_NODES`, comma-separated, default
//! 127.0.0.1:9042; `scripts/services.sh up` starts Apache Cassandra). Every test uses
//! its own keyspace and drops it at the end. With no database the tests fail; they
//! never skip.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ledger_core::ports::{BackendError, HistorySource, ProjectionStore, SealStore};
use ledger_core::{
    Command, DecideContext, Event, FamilyState, Generation, Policy, Projection, RevokeReason,
    SessionId, Subject, Timestamp, decide, decide_subject_revoke,
};
use ledger_scylla::{ScyllaConfig, ScyllaStore};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

fn nodes() -> Vec<String> {
    std::env::var("LEDGER_SCYLLA_NODES")
        .unwrap_or_else(|_| "127.0.0.1:9042".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A store on a keyspace of its own, and a plain session to look at the rows.
struct TestStore {
    store: ScyllaStore,
    raw: Session,
}

impl TestStore {
    async fn spawn() -> Self {
        let keyspace = format!("ledger_test_{}", uuid::Uuid::new_v4().simple());
        let store = ScyllaStore::connect(ScyllaConfig::new(nodes(), keyspace))
            .await
            .unwrap();
        let raw = SessionBuilder::new()
            .known_nodes(nodes())
            .build()
            .await
            .unwrap();
        TestStore { store, raw }
    }

    fn ks(&self) -> &str {
        self.store.keyspace()
    }

    /// How many rows of `table` the database still holds for `session_id`, expired or
    /// not by the store's clock: only the TTL removes them.
    async fn raw_rows(&self, table: &str, id: SessionId) -> usize {
        let result = self
            .raw
            .query_unpaged(
                format!(
                    "SELECT session_id FROM {}.{table} WHERE session_id = ?",
                    self.ks()
                ),
                (*id.as_uuid(),),
            )
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        result.rows_num()
    }

    async fn drop_keyspace(self) {
        self.raw
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.ks()), ())
            .await
            .unwrap();
    }
}

/// One family's events (issued, refreshed, revoked), 1 ms apart, starting at `now`.
fn family_history(subject: &str, now: Timestamp, policy: &Policy) -> (SessionId, Vec<Event>) {
    let id = ledger_clock::new_session_id();
    let mut state = Projection::new();
    let mut events = Vec::new();
    let commands = [
        Command::Open {
            session_id: id,
            subject: Subject::parse(subject).unwrap(),
            client_id: Some("web".into()),
            claims: Default::default(),
            access_jti: "j0".into(),
        },
        Command::Refresh {
            session_id: id,
            presented: Generation::INITIAL,
            access_jti: "j1".into(),
        },
        Command::Revoke {
            session_id: id,
            reason: RevokeReason::Logout,
        },
    ];
    for (i, command) in commands.into_iter().enumerate() {
        let ctx = DecideContext {
            now: now.saturating_add(Duration::from_millis(i as u64)),
            policy,
            region: "test",
            trace_context: None,
            event_id: ledger_clock::new_event_id(),
        };
        let produced = decide(state.family(&id), None, command, &ctx).unwrap();
        for e in &produced {
            state.apply(e);
        }
        events.extend(produced);
    }
    assert_eq!(events.len(), 3);
    (id, events)
}

fn subject_revocation(subject: &str, now: Timestamp, policy: &Policy) -> Event {
    let ctx = DecideContext {
        now,
        policy,
        region: "test",
        trace_context: None,
        event_id: ledger_clock::new_event_id(),
    };
    decide_subject_revoke(Subject::parse(subject).unwrap(), RevokeReason::Admin, &ctx)
}

fn projection_of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Projection {
    let mut p = Projection::new();
    for e in events {
        p.apply(e);
    }
    p
}

/// Polls `check` until it holds, failing after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn writes_merge_in_any_order_into_the_in_memory_projection() {
    let t = TestStore::spawn().await;
    let policy = Policy::default();
    let now = ledger_clock::now();
    let families: Vec<(SessionId, Vec<Event>)> = (0..5)
        .map(|i| family_history(&format!("user-{}", i % 2), now, &policy))
        .collect();
    let subject_events = [
        subject_revocation("user-0", now, &policy),
        subject_revocation(
            "user-0",
            now.saturating_add(Duration::from_secs(1)),
            &policy,
        ),
    ];
    let all: Vec<&Event> = families
        .iter()
        .flat_map(|(_, e)| e)
        .chain(&subject_events)
        .collect();
    let expected = projection_of(all.iter().copied());

    // One event per write: the first families newest first, the others in order, every
    // write twice; then all of it again as one batch.
    for (n, (_, events)) in families.iter().enumerate() {
        let ordered: Vec<&Event> = if n % 2 == 0 {
            events.iter().rev().collect()
        } else {
            events.iter().collect()
        };
        for e in ordered {
            let batch = projection_of([e]);
            t.store.write(&batch).await.unwrap();
            t.store.write(&batch).await.unwrap();
        }
    }
    for e in subject_events.iter().rev() {
        t.store.write(&projection_of([e])).await.unwrap();
    }
    for (id, _) in &families {
        assert_eq!(
            t.store.family(*id).await.unwrap().as_ref(),
            expected.family(id)
        );
    }
    let user0 = Subject::parse("user-0").unwrap();
    assert_eq!(
        t.store.subject_revocation(&user0).await.unwrap().as_ref(),
        expected.subject_revocation(&user0)
    );
    assert_eq!(
        t.store
            .subject_revocation(&Subject::parse("user-1").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(t.store.snapshot().await.unwrap(), expected);

    t.store.write(&expected).await.unwrap();
    let snapshot = t.store.snapshot().await.unwrap();
    assert_eq!(snapshot, expected);
    assert_eq!(snapshot.digest(), expected.digest());

    // The row lives as long as the state matters: TTL = seconds until retain_until.
    let (id, _) = &families[0];
    let retain_until = expected.family(id).unwrap().retain_until;
    let ttl: Option<i32> = t
        .raw
        .query_unpaged(
            format!(
                "SELECT TTL(state) FROM {}.families WHERE session_id = ?",
                t.ks()
            ),
            (*id.as_uuid(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(Option<i32>,)>()
        .unwrap()
        .0;
    let until = i64::from(ttl.unwrap());
    let expected_ttl = retain_until.unix_seconds_ceil() - ledger_clock::now().unix_seconds();
    assert!(
        (expected_ttl - 5..=expected_ttl + 1).contains(&until),
        "ttl {until}, expected about {expected_ttl}"
    );
    t.drop_keyspace().await;
}

#[tokio::test]
async fn state_past_its_retention_is_not_written_and_bad_rows_are_corrupt() {
    let t = TestStore::spawn().await;
    let policy = Policy::default();
    let (old, old_events) =
        family_history("bob", Timestamp::from_unix_seconds(1_000_000_000), &policy);
    t.store.write(&projection_of(&old_events)).await.unwrap();
    t.store.record_events(&old_events).await.unwrap();
    assert_eq!(t.store.family(old).await.unwrap(), None);
    assert_eq!(t.raw_rows("families", old).await, 0);
    assert_eq!(t.store.history(old).await.unwrap(), Vec::<Event>::new());
    assert!(t.store.snapshot().await.unwrap().is_empty());

    let id = ledger_clock::new_session_id();
    t.raw
        .query_unpaged(
            format!(
                "INSERT INTO {}.families (session_id, state) VALUES (?, 'not json')",
                t.ks()
            ),
            (*id.as_uuid(),),
        )
        .await
        .unwrap();
    let read = t.store.family(id).await;
    assert!(
        matches!(read, Err(BackendError::Corrupt { ref position, .. }) if position.contains(&id.to_string())),
        "{read:?}"
    );
    assert!(matches!(
        t.store.snapshot().await,
        Err(BackendError::Corrupt { .. })
    ));
    t.drop_keyspace().await;
}

#[tokio::test]
async fn history_returns_a_familys_recorded_events_in_order() {
    let t = TestStore::spawn().await;
    let policy = Policy::default();
    let now = ledger_clock::now();
    let (id, events) = family_history("carol", now, &policy);
    let (other, other_events) = family_history("carol", now, &policy);
    let subject_wide = subject_revocation("carol", now, &policy);

    // Out of order, duplicated, mixed with another family and a subject-wide event.
    let mut recorded: Vec<Event> = events.iter().rev().cloned().collect();
    recorded.extend(other_events.iter().cloned());
    recorded.push(subject_wide);
    recorded.extend(events.iter().cloned());
    let (head, tail) = recorded.split_at(4);
    t.store.record_events(head).await.unwrap();
    // The port the projector calls records the same way.
    t.store.record_history(tail).await.unwrap();

    assert_eq!(t.store.history(id).await.unwrap(), events);
    assert_eq!(t.store.history(other).await.unwrap(), other_events);
    assert_eq!(
        t.store
            .history(ledger_clock::new_session_id())
            .await
            .unwrap(),
        Vec::<Event>::new()
    );
    // The history is not part of the projection.
    assert!(t.store.snapshot().await.unwrap().is_empty());
    t.drop_keyspace().await;
}

#[tokio::test]
async fn a_family_is_gone_once_its_retention_passes() {
    let t = TestStore::spawn().await;
    // Tokens of a few seconds: the family's state is retained for about 2 s.
    let policy = Policy {
        access_ttl: Duration::from_secs(1),
        refresh_idle_ttl: Duration::from_secs(1),
        session_max_ttl: Duration::from_secs(2),
        refresh_grace: Duration::ZERO,
        clock_leeway: Duration::ZERO,
        skew_margin: Duration::from_secs(1),
    };
    let (id, events) = family_history("dave", ledger_clock::now(), &policy);
    let issued = projection_of(&events[..1]);
    let retain_until = issued.family(&id).unwrap().retain_until;
    assert!(retain_until <= ledger_clock::now().saturating_add(Duration::from_secs(3)));
    t.store.write(&issued).await.unwrap();
    t.store.record_events(&events[..1]).await.unwrap();

    assert_eq!(
        t.store.family(id).await.unwrap().as_ref(),
        issued.family(&id)
    );
    assert_eq!(t.store.snapshot().await.unwrap(), issued);
    assert_eq!(t.store.history(id).await.unwrap(), events[..1].to_vec());

    // Invisible as soon as its retain time passes…
    eventually(Duration::from_secs(10), "family invisible", || async {
        t.store.family(id).await.unwrap().is_none()
    })
    .await;
    assert!(ledger_clock::now() >= retain_until);
    assert!(t.store.snapshot().await.unwrap().is_empty());
    // …and removed from the database by its TTL (whole seconds, so a moment later).
    eventually(Duration::from_secs(30), "rows expired by ttl", || async {
        t.raw_rows("families", id).await == 0 && t.raw_rows("family_events", id).await == 0
    })
    .await;
    assert_eq!(t.store.history(id).await.unwrap(), Vec::<Event>::new());
    t.drop_keyspace().await;
}

#[tokio::test]
async fn connecting_twice_to_a_keyspace_keeps_its_schema_and_rows() {
    let t = TestStore::spawn().await;
    let policy = Policy::default();
    let (id, events) = family_history("erin", ledger_clock::now(), &policy);
    t.store.write(&projection_of(&events)).await.unwrap();
    let again = ScyllaStore::connect(ScyllaConfig::new(nodes(), t.ks()))
        .await
        .unwrap();
    assert_eq!(
        again.family(id).await.unwrap().as_ref(),
        projection_of(&events).family(&id)
    );
    let versions = t
        .raw
        .query_unpaged(format!("SELECT version FROM {}.schema_version", t.ks()), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num();
    // One row per migration, each applied once.
    assert_eq!(versions, 4);
    t.drop_keyspace().await;
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let mut config = ScyllaConfig::new(vec!["127.0.0.1:1".into()], "ledger_unreachable");
    config.request_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let connected = ScyllaStore::connect(config).await;
    assert!(
        matches!(connected, Err(BackendError::Unavailable { .. })),
        "{connected:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_batch_writes_each_familys_history_and_state_and_stays_a_merge() {
    let t = TestStore::spawn().await;
    let policy = Policy::default();
    let now = ledger_clock::now();
    let families: Vec<(SessionId, Vec<Event>)> = (0..120)
        .map(|i| family_history(&format!("user{i}"), now, &policy))
        .collect();
    let none = HashMap::new();

    // Logins first: every family is new (read back in chunks, none found).
    let logins: Vec<Event> = families.iter().map(|(_, e)| e[0].clone()).collect();
    let stored = t
        .store
        .write_batch(&projection_of(&logins), &logins, &none)
        .await
        .unwrap();
    assert_eq!(stored.len(), families.len());
    let expected = projection_of(&logins);
    for state in &stored {
        assert_eq!(Some(state), expected.family(&state.session_id));
    }

    // The rest of every history, the states just written passed as known.
    let known: HashMap<SessionId, FamilyState> =
        stored.into_iter().map(|f| (f.session_id, f)).collect();
    let rest: Vec<Event> = families.iter().flat_map(|(_, e)| e[1..].to_vec()).collect();
    let stored = t
        .store
        .write_batch(&projection_of(&rest), &rest, &known)
        .await
        .unwrap();
    let all: Vec<Event> = families.iter().flat_map(|(_, e)| e.clone()).collect();
    let whole = projection_of(&all);
    assert_eq!(t.store.snapshot().await.unwrap(), whole);
    for state in &stored {
        assert_eq!(Some(state), whole.family(&state.session_id));
    }
    for (id, events) in &families[..5] {
        assert_eq!(&t.store.history(*id).await.unwrap(), events);
    }

    // Without `known` an old batch is read back and merged: nothing regresses, and
    // the states returned are the stored ones.
    let stored = t
        .store
        .write_batch(&projection_of(&logins), &logins, &none)
        .await
        .unwrap();
    assert_eq!(t.store.snapshot().await.unwrap(), whole);
    for state in &stored {
        assert_eq!(Some(state), whole.family(&state.session_id));
    }
    t.drop_keyspace().await;
}

/// The futures the projector spawns must be `Send`.
#[allow(dead_code)]
fn futures_are_send(store: &ScyllaStore, batch: &Projection, events: &[Event]) {
    fn send<T: Send>(_: T) {}
    send(store.record_events(events));
    send(store.write(batch));
    send(store.write_batch(batch, events, &HashMap::new()));
    send(store.snapshot());
}

#[tokio::test]
async fn seals_are_kept_per_run_and_the_newest_is_found_per_partition() {
    use ledger_core::seal::{SealBuilder, SealSigner};

    #[derive(Debug)]
    struct Unsigned;
    impl SealSigner for Unsigned {
        fn kid(&self) -> &str {
            "test"
        }
        fn sign(&self, _: &[u8]) -> String {
            String::new()
        }
    }

    let t = TestStore::spawn().await;
    let events: Vec<_> = (0..4)
        .map(|i| ledger_core::testing::login(&format!("user{i}"), ledger_clock::now()).1)
        .collect();
    let mut p0 = SealBuilder::resume(0, None);
    p0.push(5, &events[0]);
    let first = p0.seal(&Unsigned, ledger_clock::now()).unwrap();
    t.store.put(&first).await.unwrap();
    // Written again (a sealer retrying): still one row.
    t.store.put(&first).await.unwrap();
    p0.push(6, &events[1]);
    p0.push(7, &events[2]);
    let second = p0.seal(&Unsigned, ledger_clock::now()).unwrap();
    assert_eq!(second.prev_chain, first.chain);
    t.store.put(&second).await.unwrap();
    let mut p2 = SealBuilder::resume(2, None);
    p2.push(1, &events[3]);
    let other = p2.seal(&Unsigned, ledger_clock::now()).unwrap();
    t.store.put(&other).await.unwrap();

    assert_eq!(
        t.store.seals().await.unwrap(),
        vec![first, second.clone(), other.clone()]
    );
    assert_eq!(t.store.newest().await.unwrap(), vec![second, other]);
    t.drop_keyspace().await;
}

mod ssf {
    use ledger_core::ports::{SsfStore, StoredStream};

    use super::*;

    fn stream(id: &str) -> StoredStream {
        StoredStream {
            stream_id: id.into(),
            receiver: "partner".into(),
            config: format!("{{\"stream_id\":\"{id}\"}}"),
        }
    }

    fn sets(jtis: &[&str]) -> Vec<(String, String)> {
        jtis.iter()
            .map(|j| ((*j).to_owned(), format!("set-of-{j}")))
            .collect()
    }

    async fn queued(store: &ScyllaStore, id: &str) -> Vec<String> {
        let pending = store.pending(id, 100).await.unwrap();
        let seqs: Vec<i64> = pending.iter().map(|q| q.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        for q in &pending {
            assert_eq!(q.set, format!("set-of-{}", q.jti));
        }
        pending.into_iter().map(|q| q.jti).collect()
    }

    #[tokio::test]
    async fn streams_are_kept_replaced_and_listed() {
        let t = TestStore::spawn().await;
        assert_eq!(t.store.stream("s1").await.unwrap(), None);
        t.store.put_stream(&stream("s2")).await.unwrap();
        t.store.put_stream(&stream("s1")).await.unwrap();
        let mut changed = stream("s1");
        changed.config = "{\"status\":\"paused\"}".into();
        t.store.put_stream(&changed).await.unwrap();
        assert_eq!(t.store.stream("s1").await.unwrap(), Some(changed.clone()));
        assert_eq!(
            t.store.streams().await.unwrap(),
            vec![changed, stream("s2")]
        );
        t.drop_keyspace().await;
    }

    #[tokio::test]
    async fn a_queue_is_ordered_and_idempotent_and_remembers_what_was_acknowledged() {
        let t = TestStore::spawn().await;
        let s = &t.store;
        s.put_stream(&stream("s1")).await.unwrap();
        s.put_stream(&stream("s2")).await.unwrap();

        s.enqueue("s1", &sets(&["c", "a", "b"])).await.unwrap();
        // A redelivered batch, a duplicate within a batch, and new SETs after.
        s.enqueue("s1", &sets(&["a", "d", "d", "c", "e"]))
            .await
            .unwrap();
        assert_eq!(queued(s, "s1").await, ["c", "a", "b", "d", "e"]);
        assert_eq!(s.pending("s1", 2).await.unwrap().len(), 2);
        assert_eq!(s.pending("s1", 0).await.unwrap(), vec![]);
        // Queues are per stream: the same jti is another SET on another stream.
        s.enqueue("s2", &sets(&["a"])).await.unwrap();
        assert_eq!(queued(s, "s2").await, ["a"]);

        // Acknowledged SETs leave the queue and never come back; unknown jtis are
        // ignored.
        s.ack("s1", &["a".into(), "c".into(), "nope".into()])
            .await
            .unwrap();
        assert_eq!(queued(s, "s1").await, ["b", "d", "e"]);
        s.enqueue("s1", &sets(&["c", "a", "f"])).await.unwrap();
        assert_eq!(queued(s, "s1").await, ["b", "d", "e", "f"]);
        s.ack("s1", &["a".into()]).await.unwrap();
        s.enqueue("nope", &sets(&[])).await.unwrap();
        s.enqueue("s1", &sets(&["nope"])).await.unwrap();
        assert_eq!(queued(s, "s1").await, ["b", "d", "e", "f", "nope"]);
        assert_eq!(queued(s, "s2").await, ["a"]);

        // Deleting a stream takes its queue and its memory of jtis with it.
        assert!(s.delete_stream("s1").await.unwrap());
        assert!(!s.delete_stream("s1").await.unwrap());
        assert_eq!(s.stream("s1").await.unwrap(), None);
        assert_eq!(queued(s, "s1").await, Vec::<String>::new());
        for table in ["ssf_jtis", "ssf_queue", "ssf_sequences"] {
            let rows = t
                .raw
                .query_unpaged(
                    format!("SELECT stream_id FROM {}.{table} ALLOW FILTERING", t.ks()),
                    (),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap()
                .rows::<(String,)>()
                .unwrap()
                .map(|r| r.unwrap().0)
                .collect::<Vec<_>>();
            assert!(rows.iter().all(|id| id == "s2"), "{table}: {rows:?}");
        }
        assert_eq!(s.streams().await.unwrap(), vec![stream("s2")]);
        assert_eq!(queued(s, "s2").await, ["a"]);
        t.drop_keyspace().await;
    }

    /// Several processes enqueueing the same SETs at once (a redelivery racing the
    /// first delivery, two fan-outs during a rebalance): each SET is queued once, by
    /// whichever claim won it.
    #[tokio::test]
    async fn concurrent_enqueues_of_the_same_sets_queue_each_once() {
        let t = TestStore::spawn().await;
        t.store.put_stream(&stream("s1")).await.unwrap();
        let others: Vec<ScyllaStore> = connect_many(3, t.ks()).await;
        let jtis: Vec<String> = (0..20).map(|i| format!("j{i:02}")).collect();
        let refs: Vec<&str> = jtis.iter().map(String::as_str).collect();
        let batch = sets(&refs);
        let runs = others.iter().map(|s| s.enqueue("s1", &batch));
        for r in futures::future::join_all(runs).await {
            r.unwrap();
        }
        let mut got = queued(&t.store, "s1").await;
        got.sort();
        assert_eq!(got, jtis);
        t.drop_keyspace().await;
    }

    #[tokio::test]
    async fn one_holder_at_a_time_pushes_a_stream_and_another_takes_over_when_it_stops() {
        let t = TestStore::spawn().await;
        t.store.put_stream(&stream("s1")).await.unwrap();
        let ttl = std::time::Duration::from_secs(2);
        let others = connect_many(2, t.ks()).await;
        // Two processes ask at once: exactly one gets it.
        let (a, b) = tokio::join!(
            others[0].hold_delivery("s1", "a", ttl),
            others[1].hold_delivery("s1", "b", ttl)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a ^ b, "a: {a}, b: {b}");
        let (holder, other, other_store) = if a {
            ("a", "b", &others[1])
        } else {
            ("b", "a", &others[0])
        };
        // The holder renews; the other is refused while it does; other streams are free.
        assert!(t.store.hold_delivery("s1", holder, ttl).await.unwrap());
        assert!(!other_store.hold_delivery("s1", other, ttl).await.unwrap());
        assert!(other_store.hold_delivery("s2", other, ttl).await.unwrap());
        // The holder stops renewing: the other takes over once the lease expired.
        tokio::time::sleep(ttl + std::time::Duration::from_millis(500)).await;
        assert!(other_store.hold_delivery("s1", other, ttl).await.unwrap());
        assert!(!t.store.hold_delivery("s1", holder, ttl).await.unwrap());
        t.drop_keyspace().await;
    }

    async fn connect_many(n: usize, ks: &str) -> Vec<ScyllaStore> {
        let mut stores = Vec::new();
        for _ in 0..n {
            stores.push(
                ScyllaStore::connect(ScyllaConfig::new(nodes(), ks))
                    .await
                    .unwrap(),
            );
        }
        stores
    }

    /// The fan-out runs the store's futures in spawned tasks.
    #[allow(dead_code)]
    fn futures_are_send(store: &ScyllaStore, batch: &[(String, String)]) {
        fn send<T: Send>(_: T) {}
        send(store.enqueue("s", batch));
        send(store.ack("s", &[]));
        send(store.pending("s", 1));
        send(store.delete_stream("s"));
        send(store.hold_delivery("s", "h", std::time::Duration::from_secs(1)));
    }
}
