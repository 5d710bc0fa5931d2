use std::time::Duration;

use ledger_core::ports::ProjectionStore;

use super::*;

fn history(now: Timestamp) -> (SessionId, Vec<Event>) {
    ledger_core::testing::login_and_logout("alice", now)
}

#[tokio::test]
async fn appended_events_are_read_back_in_order_and_duplicates_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let (id, events) = history(ledger_clock::now());
    log.append(&events).await.unwrap();
    log.append(&events[..1]).await.unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let batch = reader.poll(10, Duration::ZERO).await.unwrap();
    let read: Vec<&Event> = batch.iter().map(|r| &r.event).collect();
    assert_eq!(read, events.iter().collect::<Vec<_>>());
    assert_eq!(reader.lag(), Some(0));
    assert_eq!(log.history(id).await.unwrap(), events);
}

#[tokio::test]
async fn the_end_of_the_log_is_the_offset_after_the_newest_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let end = |offset| {
        Some(vec![Position {
            partition: 0,
            offset,
        }])
    };
    assert_eq!(LogSource::end(&log).await.unwrap(), end(1));
    assert_eq!(LogEnd::end(&log).await.unwrap(), end(1).unwrap());
    let (_, events) = history(ledger_clock::now());
    log.append(&events).await.unwrap();
    let after = events.len() as u64 + 1;
    assert_eq!(LogSource::end(&log).await.unwrap(), end(after));
    assert_eq!(LogEnd::end(&log).await.unwrap(), end(after).unwrap());

    // Another process appending to the same file moves the end too.
    let other = Embedded::open(dir.path()).unwrap();
    let (_, more) = history(ledger_clock::now());
    other.append(&more).await.unwrap();
    let after = after + more.len() as u64;
    assert_eq!(LogEnd::end(&log).await.unwrap(), end(after).unwrap());
}

#[tokio::test]
async fn a_waiting_reader_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let (_, events) = history(ledger_clock::now());
    let writer = log.clone();
    let appended = events.clone();
    let task = tokio::spawn(async move {
        tokio::task::yield_now().await;
        writer.append(&appended).await.unwrap();
    });
    // Waits (up to a generous bound) for the append instead of sleeping.
    let batch = reader.poll(10, Duration::from_secs(10)).await.unwrap();
    task.await.unwrap();
    assert!(!batch.is_empty());
}

#[tokio::test]
async fn checkpoints_and_state_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (id, events) = history(ledger_clock::now());
    {
        let log = Embedded::open(dir.path()).unwrap();
        log.append(&events).await.unwrap();
        let mut reader = log
            .reader(StartFrom::Committed { group: "p".into() })
            .await
            .unwrap();
        let batch = reader.poll(1, Duration::ZERO).await.unwrap();
        assert_eq!(batch.len(), 1);
        let mut p = Projection::new();
        p.apply(&batch[0].event);
        ProjectionStore::write(&log, &p).await.unwrap();
        reader.commit(&reader.positions()).await.unwrap();
    }
    let log = Embedded::open(dir.path()).unwrap();
    assert_eq!(log.last_offset(), 2);
    let mut reader = log
        .reader(StartFrom::Committed { group: "p".into() })
        .await
        .unwrap();
    let rest = reader.poll(10, Duration::ZERO).await.unwrap();
    assert_eq!(rest.len(), 1, "resumes after the committed offset");
    assert_eq!(rest[0].event, events[1]);
    assert!(log.family(id).await.unwrap().is_some());
}

#[tokio::test]
async fn writes_merge_and_expired_rows_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let (id, events) = history(ledger_clock::now());
    let mut issued = Projection::new();
    issued.apply(&events[0]);
    let mut revoked = Projection::new();
    revoked.apply(&events[1]);
    // Newer first, then older: the merge keeps the revocation.
    ProjectionStore::write(&log, &revoked).await.unwrap();
    ProjectionStore::write(&log, &issued).await.unwrap();
    ProjectionStore::write(&log, &issued).await.unwrap();
    let stored = log.family(id).await.unwrap().unwrap();
    let mut expected = Projection::new();
    expected.apply(&events[0]);
    expected.apply(&events[1]);
    assert_eq!(Some(&stored), expected.family(&id));
    assert_eq!(log.snapshot().await.unwrap(), expected);

    // An old history: already past retention.
    let (old, old_events) = history(Timestamp::from_unix_seconds(1_000_000_000));
    let mut p = Projection::new();
    p.apply(&old_events[0]);
    ProjectionStore::write(&log, &p).await.unwrap();
    assert_eq!(log.family(old).await.unwrap(), None);
    assert_eq!(log.prune(ledger_clock::now()).await.unwrap(), 1);
}

#[tokio::test]
async fn reading_ahead_loses_nothing_when_the_log_grows_or_the_batch_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let logins = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| ledger_core::testing::login(&format!("user{i}"), ledger_clock::now()).1)
            .collect()
    };
    let first = logins(20);
    log.append(&first).await.unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let mut read = Vec::new();
    // Full batches read ahead; the read-ahead at the end finds nothing...
    for _ in 0..2 {
        read.extend(reader.poll(10, Duration::ZERO).await.unwrap());
    }
    // ...and then the log grows: the events appended since are read, not skipped.
    let second = logins(7);
    log.append(&second).await.unwrap();
    // A smaller batch than the read-ahead's discards it and reads again.
    read.extend(reader.poll(5, Duration::ZERO).await.unwrap());
    read.extend(reader.poll(10, Duration::ZERO).await.unwrap());
    assert!(reader.poll(10, Duration::ZERO).await.unwrap().is_empty());
    let offsets: Vec<u64> = read.iter().map(|r| r.position.offset).collect();
    assert_eq!(offsets, (1..=27).collect::<Vec<_>>());
    let events: Vec<Event> = read.into_iter().map(|r| r.event).collect();
    assert_eq!(events, [first, second].concat());
}

#[tokio::test]
async fn batch_after_batch_every_body_is_read_whole_and_a_corrupt_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    // Bodies of many lengths, so that a batch's buffer, reused, holds shorter and
    // longer ones than the batch before it did.
    let events: Vec<Event> = (0..95)
        .map(|i| {
            let subject = "u".repeat(1 + (i * 37) % 200);
            ledger_core::testing::login(&subject, ledger_clock::now()).1
        })
        .collect();
    log.append(&events).await.unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let mut read = Vec::new();
    loop {
        let batch = reader.poll(10, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        read.extend(batch);
    }
    let offsets: Vec<u64> = read.iter().map(|r| r.position.offset).collect();
    assert_eq!(offsets, (1..=95).collect::<Vec<_>>());
    let read: Vec<Event> = read.into_iter().map(|r| r.event).collect();
    assert_eq!(read, events);

    // A body that is not an event stops the reader at its offset.
    let conn = connect(log.path()).unwrap();
    conn.execute("UPDATE events SET body = X'7B7D' WHERE offset = 57", [])
        .unwrap();
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let mut error = None;
    for _ in 0..10 {
        match reader.poll(10, Duration::ZERO).await {
            Ok(batch) => assert!(batch.iter().all(|r| r.position.offset < 51)),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let error = error.expect("the corrupt row is refused");
    assert!(error.contains("offset 57"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed_each_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    // 64 appends at once, each a whole family's history: they share commits, and
    // every one is answered only once its events are in the log.
    let appends: Vec<Vec<Event>> = (0..64)
        .map(|i| {
            ledger_core::testing::login_and_logout(&format!("user-{i}"), ledger_clock::now()).1
        })
        .collect();
    let tasks: Vec<_> = appends
        .iter()
        .cloned()
        .map(|events| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(&events).await.unwrap();
                // Acknowledged means readable: the events are in the log now.
                let id = events[0].session_id.unwrap();
                assert_eq!(log.history(id).await.unwrap(), events);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut reader = log.reader(StartFrom::Beginning).await.unwrap();
    let mut read = Vec::new();
    loop {
        let batch = reader.poll(1000, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        read.extend(batch.into_iter().map(|r| r.event));
    }
    // Every append's events are contiguous and in their order; none is lost.
    assert_eq!(read.len(), appends.iter().map(Vec::len).sum::<usize>());
    let mut at = 0;
    while at < read.len() {
        let append = appends
            .iter()
            .find(|a| a[0].event_id == read[at].event_id)
            .unwrap();
        assert_eq!(&read[at..at + append.len()], append.as_slice());
        at += append.len();
    }
}

/// The projector stored the login and committed past it; the signout after it is in
/// the log only (the projector crashed). The store says live, the log's end revoked.
#[tokio::test]
async fn the_current_projection_joins_the_store_with_the_unprojected_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = Embedded::open(dir.path()).unwrap();
    let (id, events) = history(ledger_clock::now());
    let subject = Subject::parse("alice").unwrap();
    log.append(&events).await.unwrap();
    let mut reader = log
        .reader(StartFrom::Committed { group: "p".into() })
        .await
        .unwrap();
    let batch = reader.poll(1, Duration::ZERO).await.unwrap();
    let mut p = Projection::new();
    p.apply(&batch[0].event);
    ProjectionStore::write(&log, &p).await.unwrap();
    reader.commit(&reader.positions()).await.unwrap();

    let stored = log.family(id).await.unwrap().unwrap();
    assert!(stored.revoked.is_none());
    let current = CurrentProjection::new(log.clone(), "p");
    let family = current.family(id).await.unwrap().unwrap();
    assert!(family.revoked.is_some(), "{family:?}");
    // A group that committed nothing folds every event of the family.
    let from_scratch = log.current_family("another", id).await.unwrap().unwrap();
    assert_eq!(from_scratch, family);
    // Nothing revoked the subject as a whole.
    assert!(
        current
            .subject_revocation(&subject)
            .await
            .unwrap()
            .is_none()
    );
}
