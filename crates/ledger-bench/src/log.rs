//! Rows 6 and 7: the projector folding the embedded log into the store, and a replay
//! folding the same log into a `ledger_core::Projection` (what an auditor or a new
//! validator does).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_core::ports::{EventLog, LogSource, Position, ProjectionStore, StartFrom};
use ledger_core::{
    Command, DecideContext, Event, FamilyState, Policy, Projection, RevokeReason, Subject, decide,
};
use ledger_embedded::Embedded;
use ledger_projector::{Projector, ProjectorConfig};
use tokio_util::sync::CancellationToken;

use crate::report::progress;

#[derive(Debug)]
pub struct LogFigures {
    pub events: usize,
    pub families: usize,
    pub projector: Duration,
    /// Read from SQLite + JSON decode + fold, one reader.
    pub replay: Duration,
    /// The same with the log split among `readers` threads, merged at the end.
    pub replay_parallel: Duration,
    /// `session-ledger replay` itself (`audit::replay`: one reader reading ahead).
    pub replay_tool: Duration,
    pub readers: usize,
    /// The fold alone.
    pub fold: Duration,
    /// Whether the replayed projection equals the projector's store.
    pub digests_match: bool,
}

/// Writes about `target` events (per family: login, two refreshes, every third
/// family a signout), then times the projector over them and a replay of them.
/// About `target` events: per family a login, two refreshes, and for every third
/// family a signout. Returns the events and the number of families.
pub fn generate(target: usize) -> anyhow::Result<(Vec<Event>, usize)> {
    let policy = Policy::default();
    let mut written = 0;
    let mut families = 0;
    let mut batch = Vec::with_capacity(target + 8);
    while written < target {
        let ctx = DecideContext {
            now: ledger_clock::now(),
            policy: &policy,
            region: "bench",
            trace_context: None,
            event_id: ledger_clock::new_event_id(),
        };
        let id = ledger_clock::new_session_id();
        let open = Command::Open {
            session_id: id,
            subject: Subject::parse(format!("user-{}", families % 10_000))?,
            client_id: Some("bench".into()),
            claims: serde_json::Map::from_iter([("scope".to_owned(), "orders:read".into())]),
            access_jti: ledger_clock::new_session_id().to_string(),
        };
        let mut history = decide(None, None, open, &ctx)?;
        let mut state =
            FamilyState::from_event(&history[0]).context("a login is a family event")?;
        for _ in 0..2 {
            let presented = state.head.map(|h| h.generation).unwrap_or_default();
            let refresh = Command::Refresh {
                session_id: id,
                presented,
                access_jti: ledger_clock::new_session_id().to_string(),
            };
            let events = decide(Some(&state), None, refresh, &ctx)?;
            for e in &events {
                if let Some(f) = FamilyState::from_event(e) {
                    state.merge(&f);
                }
            }
            history.extend(events);
        }
        if families % 3 == 0 {
            let revoke = Command::Revoke {
                session_id: id,
                reason: RevokeReason::Logout,
            };
            history.extend(decide(Some(&state), None, revoke, &ctx)?);
        }
        families += 1;
        written += history.len();
        batch.extend(history);
    }
    Ok((batch, families))
}

pub async fn projector_and_replay(target: usize, readers: usize) -> anyhow::Result<LogFigures> {
    let dir = tempfile::tempdir()?;
    let log = Embedded::open(dir.path())?;
    progress(&format!("writing about {target} events to an embedded log"));
    let (events, families) = generate(target)?;
    let written = events.len();
    for chunk in events.chunks(10_000) {
        log.append(chunk).await?;
    }
    drop(events);

    progress(&format!(
        "projector folding {written} events into the embedded store"
    ));
    let projector = Projector::new(
        Arc::new(log.clone()),
        Arc::new(log.clone()),
        ProjectorConfig::default(),
    );
    let projector_time = time_projector(projector, written).await?;

    progress(&format!(
        "replaying {written} events into a projection, one reader"
    ));
    let last = u64::try_from(log.last_offset())?;
    let started = Instant::now();
    let (single, fold, replayed) = replay_range(log.clone(), 1, last).await?;
    let replay = started.elapsed();
    anyhow::ensure!(
        replayed == written,
        "replayed {replayed} of {written} events"
    );

    progress(&format!(
        "replaying {written} events into a projection, {readers} readers on their own threads"
    ));
    let started = Instant::now();
    let parallel = replay_parallel(&log, last, readers)?;
    let replay_parallel = started.elapsed();

    progress(&format!(
        "replaying {written} events with session-ledger replay's own code"
    ));
    let data_dir = dir.path().display().to_string();
    let settings = session_ledger::Settings::from_lookup(|k| {
        (k == "LEDGER_DATA_DIR").then(|| data_dir.clone())
    })?;
    let tool = session_ledger::audit::replay(
        &settings,
        session_ledger::audit::Range::default(),
        None,
        None,
    )
    .await?;
    anyhow::ensure!(
        tool.events == written as u64,
        "replayed {} of {written} events",
        tool.events
    );

    let stored = log.snapshot().await?.digest();
    Ok(LogFigures {
        events: written,
        families,
        projector: projector_time,
        replay,
        replay_parallel,
        replay_tool: tool.elapsed,
        readers,
        fold,
        digests_match: stored == single.digest()
            && stored == parallel.digest()
            && stored == tool.projection.digest(),
    })
}

/// Folds offsets `from..=to` of the log into a projection: (projection, time spent
/// folding, events read).
async fn replay_range(
    log: Embedded,
    from: u64,
    to: u64,
) -> anyhow::Result<(Projection, Duration, usize)> {
    let start = StartFrom::Positions(vec![Position {
        partition: 0,
        offset: from,
    }]);
    let mut reader = log.reader(start).await?;
    let mut projection = Projection::new();
    let mut fold = Duration::ZERO;
    let mut replayed = 0;
    let mut next = from;
    while next <= to {
        let max = usize::try_from((to + 1 - next).min(10_000))?;
        let batch = reader.poll(max, Duration::ZERO).await?;
        let Some(last) = batch.last() else {
            break;
        };
        next = last.position.offset + 1;
        let t = Instant::now();
        for r in &batch {
            projection.apply(&r.event);
        }
        fold += t.elapsed();
        replayed += batch.len();
    }
    Ok((projection, fold, replayed))
}

/// The projection is a function of the set of events (I5), so a replay can split
/// the log into ranges, fold each on its own thread, and merge the results.
fn replay_parallel(log: &Embedded, last: u64, readers: usize) -> anyhow::Result<Projection> {
    let readers = readers.max(1) as u64;
    let per = last.div_ceil(readers);
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let log = log.clone();
                s.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let from = r * per + 1;
                    let to = ((r + 1) * per).min(last);
                    runtime.block_on(replay_range(log, from, to))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a replay thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut whole = Projection::new();
    for (part, _, _) in &parts {
        whole.merge(part);
    }
    Ok(whole)
}

/// Partitions of the topics the Kafka rows create.
pub const KAFKA_PARTITIONS: u32 = 6;

/// `--only replay`: how long `session-ledger replay`'s code took over the same events.
#[derive(Debug)]
pub struct ReplayFigures {
    pub events: usize,
    pub families: usize,
    pub embedded: Duration,
    /// Appending the events to a fresh topic (`acks=all`).
    pub kafka_append: Option<Duration>,
    pub kafka: Option<Duration>,
    /// Whether both replays folded to the same projection.
    pub same_state: bool,
}

/// Writes about `target` events to a fresh embedded log and, with `kafka`, to a fresh
/// topic, then replays each with `session-ledger replay`'s code (on Kafka its fold,
/// `ledger_audit::replay`, straight on the topic: the command itself would also open
/// the CQL store).
pub async fn replay_alone(target: usize, kafka: Option<&str>) -> anyhow::Result<ReplayFigures> {
    let (events, families) = generate(target)?;
    let dir = tempfile::tempdir()?;
    let log = Embedded::open(dir.path())?;
    progress(&format!(
        "writing {} events to an embedded log",
        events.len()
    ));
    for chunk in events.chunks(10_000) {
        log.append(chunk).await?;
    }
    progress("replaying them with session-ledger replay's own code");
    let data_dir = dir.path().display().to_string();
    let settings = session_ledger::Settings::from_lookup(|k| {
        (k == "LEDGER_DATA_DIR").then(|| data_dir.clone())
    })?;
    let embedded = session_ledger::audit::replay(
        &settings,
        session_ledger::audit::Range::default(),
        None,
        None,
    )
    .await?;
    anyhow::ensure!(
        embedded.events == events.len() as u64,
        "replayed {} of {} events",
        embedded.events,
        events.len()
    );
    let (mut kafka_append, mut kafka_replay, mut same_state) = (None, None, true);
    if let Some(brokers) = kafka {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let mut config = ledger_kafka::KafkaConfig::new(brokers, format!("bench-replay-{unique}"));
        config.partitions = i32::try_from(KAFKA_PARTITIONS)?;
        let topic = ledger_kafka::KafkaLog::connect(config).await?;
        progress(&format!(
            "appending {} events to Kafka (acks=all)",
            events.len()
        ));
        let started = Instant::now();
        for chunk in events.chunks(10_000) {
            topic.append(chunk).await?;
        }
        kafka_append = Some(started.elapsed());
        progress("replaying them from Kafka with session-ledger replay's own code");
        let replayed = ledger_audit::replay::replay(
            &topic,
            KAFKA_PARTITIONS,
            ledger_audit::Range::default(),
            None,
            None,
        )
        .await?;
        anyhow::ensure!(
            replayed.events == events.len() as u64,
            "replayed {} of {} events from Kafka",
            replayed.events,
            events.len()
        );
        kafka_replay = Some(replayed.elapsed);
        same_state = replayed.projection.digest() == embedded.projection.digest();
    }
    Ok(ReplayFigures {
        events: events.len(),
        families,
        embedded: embedded.elapsed,
        kafka_append,
        kafka: kafka_replay,
        same_state,
    })
}

/// Figures of the Kafka → CQL path.
#[derive(Debug)]
pub struct KafkaFigures {
    pub events: usize,
    /// Appending them all with `acks=all` (batches of 10 000 in flight).
    pub append: Duration,
    /// The projector folding them from the topic into a fresh keyspace.
    pub projector: Duration,
}

/// Appends about `target` events to a fresh topic, then times a projector folding them
/// into a fresh keyspace.
pub async fn kafka_projector(
    brokers: &str,
    cql_nodes: &str,
    target: usize,
) -> anyhow::Result<KafkaFigures> {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let mut config = ledger_kafka::KafkaConfig::new(brokers, format!("bench-{unique}"));
    config.partitions = i32::try_from(KAFKA_PARTITIONS)?;
    let log = ledger_kafka::KafkaLog::connect(config).await?;
    let nodes = cql_nodes.split(',').map(str::to_owned).collect();
    let store = ledger_scylla::ScyllaStore::connect(ledger_scylla::ScyllaConfig::new(
        nodes,
        format!("bench_{unique}"),
    ))
    .await?;
    let (events, _) = generate(target)?;
    let written = events.len();
    progress(&format!("appending {written} events to Kafka (acks=all)"));
    let started = Instant::now();
    for chunk in events.chunks(10_000) {
        log.append(chunk).await?;
    }
    let append = started.elapsed();
    drop(events);

    progress(&format!(
        "projector folding {written} events from Kafka into Cassandra"
    ));
    let projector = Projector::new(
        Arc::new(log),
        Arc::new(store),
        ProjectorConfig {
            group: format!("bench-{unique}"),
            ..ProjectorConfig::default()
        },
    );
    let projector_time = time_projector(projector, written).await?;
    Ok(KafkaFigures {
        events: written,
        append,
        projector: projector_time,
    })
}

/// Runs `projector` until it reports `events` applied (progress every 5 s); the time.
async fn time_projector(projector: Projector, events: usize) -> anyhow::Result<Duration> {
    let stats = projector.stats();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(projector.run(shutdown.clone()));
    let mut last_report = Instant::now();
    while stats.events_applied.load(Ordering::Relaxed) < events as u64 {
        anyhow::ensure!(!running.is_finished(), "the projector stopped early");
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!(
                "projector: {} of {events} events",
                stats.events_applied.load(Ordering::Relaxed)
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await??;
    Ok(elapsed)
}
