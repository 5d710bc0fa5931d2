//! The projector: reads the log, folds events into per-family state and writes it to
//! the store (D4, D5). The same code runs on the embedded backend and on Kafka + CQL.
//!
//! **Invariant**: at-least-once. A batch's positions are committed only after the store
//! acknowledged the batch's writes, so a crash re-delivers, and the monotone merge
//! makes re-delivery harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::LazyLock;

use std::collections::HashMap;

use ledger_core::ports::{
    BackendError, LogReader, LogRecord, LogSource, ProjectionStore, StartFrom,
};
use ledger_core::{FamilyState, Projection, SessionId};
use ledger_telemetry::metrics::register;
use prometheus::{IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;

mod sealer;

pub use sealer::{Sealer, SealerConfig, SealerHealth};

static EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_projector_events_total",
        "events folded into the store",
    ))
});
static LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "ledger_projector_lag_events",
        "events in the log not yet projected",
    ))
});
static ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_projector_backend_errors_total",
        "store or log calls that failed and were retried",
    ))
});

/// How long a poll waits for the first event while a batch is being written.
const IN_FLIGHT_POLL_WAIT: Duration = Duration::from_millis(2);

/// The consumer group the projector commits its checkpoint under.
pub const DEFAULT_GROUP: &str = "session-ledger-projector";

#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    pub group: String,
    /// Most events folded into one store write.
    pub batch_size: usize,
    /// How long one poll waits for the first event.
    pub poll_wait: Duration,
    /// Test only (`LEDGER_FAILPOINT=abort-before-commit`): abort the process right
    /// after the store acknowledged the first batch, before its positions are
    /// committed, the worst moment for a crash.
    pub abort_before_commit: bool,
    /// Families whose last written state is remembered (0: every batch reads the
    /// families it changes back from the store).
    pub written_families: usize,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            group: DEFAULT_GROUP.to_owned(),
            batch_size: 2000,
            poll_wait: Duration::from_millis(500),
            abort_before_commit: false,
            written_families: 200_000,
        }
    }
}

/// Progress, shared with the HTTP status endpoints.
#[derive(Debug, Default)]
pub struct ProjectorStats {
    pub events_applied: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_errors: AtomicU64,
    /// Events in the log not yet applied (`u64::MAX` until known).
    pub lag: AtomicU64,
}

#[derive(Debug)]
pub struct Projector {
    log: Arc<dyn LogSource>,
    store: Arc<dyn ProjectionStore>,
    config: ProjectorConfig,
    stats: Arc<ProjectorStats>,
}

impl Projector {
    pub fn new(
        log: Arc<dyn LogSource>,
        store: Arc<dyn ProjectionStore>,
        config: ProjectorConfig,
    ) -> Self {
        let stats = Arc::new(ProjectorStats {
            lag: AtomicU64::new(u64::MAX),
            ..ProjectorStats::default()
        });
        Projector {
            log,
            store,
            config,
            stats,
        }
    }

    pub fn stats(&self) -> Arc<ProjectorStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled. Store and log errors are retried with
    /// backoff (nothing is skipped); a corrupt record stops the projector.
    ///
    /// One batch is written while the next is read and folded (a window of one
    /// batch in flight: a family's writes never overlap, and positions are committed
    /// in log order, each after its own batch was acknowledged).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BackendError> {
        let group = self.config.group.clone();
        let mut reader = retry(&shutdown, &self.stats, || {
            self.log.reader(StartFrom::Committed {
                group: group.clone(),
            })
        })
        .await?;
        let Some(mut reader) = reader.take() else {
            return Ok(());
        };
        tracing::info!(group = %self.config.group, positions = ?reader.positions(), "projector started");
        let mut written = Written::new(self.config.written_families);
        let mut in_flight: Option<InFlight> = None;
        loop {
            // With a batch being written, only what is already there is read: an
            // idle log must not hold back that batch's commit.
            let wait = if in_flight.is_some() {
                IN_FLIGHT_POLL_WAIT
            } else {
                self.config.poll_wait
            };
            let polled = tokio::select! {
                () = shutdown.cancelled() => None,
                polled = reader.poll(self.config.batch_size, wait) => Some(polled),
            };
            let Some(polled) = polled else {
                // A stop finishes the batch being written and commits it, so the
                // committed positions are exactly where the store is.
                if let Some(previous) = in_flight.take() {
                    self.finish(previous, reader.as_mut(), &mut written).await?;
                }
                return Ok(());
            };
            let batch = match polled {
                Ok(batch) => batch,
                Err(e @ BackendError::Corrupt { .. }) => {
                    // What was read before the corrupt record is still written.
                    if let Some(previous) = in_flight.take() {
                        self.finish(previous, reader.as_mut(), &mut written).await?;
                    }
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "projector poll failed, retrying");
                    backoff(&shutdown, 1).await;
                    continue;
                }
            };
            let next = (!batch.is_empty()).then(|| {
                written.observe(&batch);
                (fold(&batch), batch, reader.positions())
            });
            // The batch before this one must be acknowledged (and committed) before
            // this one is written: its families' states are this batch's `known`.
            if let Some(previous) = in_flight.take()
                && !self.finish(previous, reader.as_mut(), &mut written).await?
            {
                return Ok(());
            }
            if let Some((delta, batch, positions)) = next {
                let known = written.known(&delta);
                let store = self.store.clone();
                let stats = self.stats.clone();
                let token = shutdown.clone();
                let events = batch.len();
                let task = tokio::spawn(async move {
                    let events: Vec<ledger_core::Event> =
                        batch.into_iter().map(|r| r.event).collect();
                    // One span per traced event, child of the request that caused
                    // it, open for the duration of the write: the trace runs from
                    // the HTTP request through the log to the store.
                    let spans = write_spans(&events, events.len());
                    let stored = retry(&token, &stats, || {
                        store.write_batch(&delta, &events, &known)
                    })
                    .await;
                    drop(spans);
                    stored
                });
                in_flight = Some(InFlight {
                    task,
                    positions,
                    events,
                });
            }
            if let Some(lag) = reader.lag() {
                self.stats.lag.store(lag, Ordering::Relaxed);
                LAG.set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
    }

    /// Waits for a batch's write, then commits its positions. False when shutdown
    /// came first (nothing committed).
    async fn finish(
        &self,
        batch: InFlight,
        reader: &mut dyn LogReader,
        written: &mut Written,
    ) -> Result<bool, BackendError> {
        let stored = batch.task.await.map_err(|e| {
            BackendError::other(format!("projector write task: {e}")).with_source(e)
        })??;
        let Some(stored) = stored else {
            return Ok(false);
        };
        written.remember(stored);
        if self.config.abort_before_commit {
            tracing::error!(
                positions = ?batch.positions,
                events = batch.events,
                "failpoint abort-before-commit: aborting with the batch written, its positions not committed"
            );
            std::process::abort();
        }
        if let Err(e) = reader.commit(&batch.positions).await {
            // Not fatal: the batch is re-delivered and merges to the same state.
            tracing::warn!(error = %e, "projector commit failed");
        }
        self.stats
            .events_applied
            .fetch_add(batch.events as u64, Ordering::Relaxed);
        EVENTS.inc_by(batch.events as u64);
        self.stats.batches_written.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

/// A batch being written: its task, and the positions to commit once it is done.
struct InFlight {
    task: tokio::task::JoinHandle<Result<Option<Vec<FamilyState>>, BackendError>>,
    positions: Vec<ledger_core::ports::Position>,
    events: usize,
}

/// The states this projector wrote last, by family, so the next batch of the same
/// families merges into them instead of reading them back from the store.
///
/// Sound only while this instance is the single writer of those families: of their
/// log partitions. When a partition's records resume past the next offset this
/// projector expected (another instance projected that partition meanwhile, after a
/// rebalance), everything is forgotten. Records resuming *before* it (re-delivery)
/// are harmless: what they add is already in the remembered state.
#[derive(Debug)]
struct Written {
    states: HashMap<SessionId, FamilyState>,
    capacity: usize,
    /// The next offset expected per partition.
    expected: HashMap<u32, u64>,
}

impl Written {
    fn new(capacity: usize) -> Self {
        Written {
            states: HashMap::new(),
            capacity,
            expected: HashMap::new(),
        }
    }

    /// Notes a batch's positions; forgets everything when a partition jumped ahead.
    fn observe(&mut self, batch: &[LogRecord]) {
        for record in batch {
            let p = record.position;
            if let Some(&next) = self.expected.get(&p.partition)
                && p.offset > next
                && !self.states.is_empty()
            {
                tracing::info!(
                    partition = p.partition,
                    expected = next,
                    offset = p.offset,
                    "partition resumed further on (another projector wrote it): forgetting the families written"
                );
                self.states.clear();
            }
            self.expected
                .insert(p.partition, p.offset.saturating_add(1));
        }
    }

    /// The remembered states of the batch's families.
    fn known(&self, delta: &Projection) -> HashMap<SessionId, FamilyState> {
        delta
            .families()
            .filter_map(|f| {
                self.states
                    .get(&f.session_id)
                    .map(|s| (f.session_id, s.clone()))
            })
            .collect()
    }

    fn remember(&mut self, stored: Vec<FamilyState>) {
        if self.capacity == 0 {
            return;
        }
        if self.states.len() + stored.len() > self.capacity {
            // Bounded: start over rather than track recency; a miss only costs a read.
            self.states.clear();
        }
        self.states
            .extend(stored.into_iter().map(|f| (f.session_id, f)));
    }
}

fn write_spans(events: &[ledger_core::Event], batch_size: usize) -> Vec<tracing::Span> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    events
        .iter()
        .filter_map(|e| {
            let tc = e.trace_context.as_ref()?;
            let span = tracing::info_span!(
                "projector write",
                event_id = %e.event_id,
                event_type = e.event_type(),
                batch_size,
            );
            let parent =
                ledger_telemetry::trace::remote_context(&tc.traceparent, tc.tracestate.as_deref());
            let _ = span.set_parent(parent);
            Some(span)
        })
        .collect()
}

/// One batch folded into the state it adds (events of one family collapse to one row).
pub fn fold(batch: &[LogRecord]) -> Projection {
    let mut delta = Projection::new();
    for record in batch {
        delta.apply(&record.event);
    }
    delta
}

/// Runs `op` until it succeeds or shutdown is requested (`Ok(None)`).
async fn retry<T, F, Fut>(
    shutdown: &CancellationToken,
    stats: &ProjectorStats,
    mut op: F,
) -> Result<Option<T>, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(Some(v)),
            Err(e @ BackendError::Corrupt { .. }) => return Err(e),
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                ERRORS.inc();
                attempt += 1;
                tracing::warn!(error = %e, attempt, "projector backend call failed, retrying");
                if !backoff(shutdown, attempt).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Sleeps 100 ms × 2^attempt (at most 10 s); false when shutdown came first.
async fn backoff(shutdown: &CancellationToken, attempt: u32) -> bool {
    let delay = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(7)))
        .min(Duration::from_secs(10));
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ledger_core::Projection;
    use ledger_core::ports::{EventLog, LogSource, ProjectionStore};
    use ledger_embedded::Embedded;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn logins(n: usize) -> Vec<ledger_core::Event> {
        (0..n)
            .map(|i| ledger_core::testing::login(&format!("user{i}"), ledger_clock::now()).1)
            .collect()
    }

    /// Runs a projector until the store holds what `expected` holds.
    async fn project_until(store: &Embedded, expected: &Projection) {
        let shutdown = CancellationToken::new();
        let projector = Projector::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            ProjectorConfig {
                batch_size: 7,
                ..ProjectorConfig::default()
            },
        );
        let task = tokio::spawn(projector.run(shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.snapshot().await.unwrap() != *expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "projector never caught up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn projects_everything_and_resumes_from_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        let first = logins(20);
        store.append(&first).await.unwrap();
        let mut expected = Projection::new();
        first.iter().for_each(|e| expected.apply(e));
        project_until(&store, &expected).await;
        let committed = store.committed(DEFAULT_GROUP).await.unwrap();
        assert_eq!(committed[0].offset, 21, "checkpoint after the last event");

        let second = logins(5);
        store.append(&second).await.unwrap();
        second.iter().for_each(|e| expected.apply(e));
        project_until(&store, &expected).await;
        assert_eq!(store.committed(DEFAULT_GROUP).await.unwrap()[0].offset, 26);
    }

    /// Runs a projector of `group` until it has committed `next` (the offset after the
    /// log's last event), watching that every snapshot of the store on the way holds at
    /// least `floor` (the store only moves forward). Returns the events it applied.
    async fn project_watching(store: &Embedded, group: &str, next: u64, floor: &Projection) -> u64 {
        let shutdown = CancellationToken::new();
        let projector = Projector::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            ProjectorConfig {
                group: group.to_owned(),
                batch_size: 4,
                ..ProjectorConfig::default()
            },
        );
        let stats = projector.stats();
        let task = tokio::spawn(projector.run(shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let snapshot = store.snapshot().await.unwrap();
            let mut joined = snapshot.clone();
            joined.merge(floor);
            assert_eq!(joined, snapshot, "the store lost state it held");
            if store
                .committed(group)
                .await
                .unwrap()
                .first()
                .map(|p| p.offset)
                == Some(next)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "projector never committed offset {next}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
        stats
            .events_applied
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn batch_at(partition: u32, offsets: std::ops::Range<u64>) -> Vec<LogRecord> {
        offsets
            .map(|offset| LogRecord {
                position: ledger_core::ports::Position { partition, offset },
                event: logins(1).remove(0),
            })
            .collect()
    }

    #[test]
    fn written_states_are_forgotten_when_a_partition_resumes_further_on() {
        let mut written = Written::new(100);
        let first = batch_at(0, 10..13);
        written.observe(&first);
        let delta = fold(&first);
        written.remember(delta.families().cloned().collect());
        assert_eq!(written.known(&delta).len(), 3);

        // In order, another partition, and re-delivery from before: kept.
        written.observe(&batch_at(0, 13..15));
        written.observe(&batch_at(1, 500..501));
        written.observe(&batch_at(0, 11..16));
        assert_eq!(written.known(&delta).len(), 3);

        // Partition 0 resumes past offset 16: another projector wrote it meanwhile.
        written.observe(&batch_at(0, 20..21));
        assert!(written.known(&delta).is_empty());
    }

    #[test]
    fn written_states_are_bounded() {
        let mut written = Written::new(4);
        let first = fold(&batch_at(0, 0..3));
        written.remember(first.families().cloned().collect());
        assert_eq!(written.known(&first).len(), 3);
        let second = fold(&batch_at(0, 3..6));
        written.remember(second.families().cloned().collect());
        assert!(written.states.len() <= 4);
        assert_eq!(written.known(&second).len(), 3);
        let mut off = Written::new(0);
        off.remember(second.families().cloned().collect());
        assert!(off.known(&second).is_empty());
    }

    #[tokio::test]
    async fn redelivery_after_a_lost_checkpoint_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        // Families opened in early batches and signed out in later ones, so that
        // re-delivering the openings after the signouts would undo them if the store
        // did not merge.
        let now = ledger_clock::now();
        let leavers: Vec<_> = (0..6)
            .map(|i| ledger_core::testing::login_and_logout(&format!("leaver{i}"), now).1)
            .collect();
        let mut events: Vec<_> = leavers.iter().map(|e| e[0].clone()).collect();
        events.extend(logins(8));
        events.extend(leavers.iter().map(|e| e[1].clone()));
        store.append(&events).await.unwrap();
        let mut expected = Projection::new();
        events.iter().for_each(|e| expected.apply(e));
        let end = events.len() as u64 + 1;

        // A first projector projects the log and commits its checkpoint.
        let applied = project_watching(&store, "first", end, &Projection::new()).await;
        assert_eq!(applied, events.len() as u64);
        let before = store.snapshot().await.unwrap();
        assert_eq!(before.digest(), expected.digest(), "the log is projected");

        // The checkpoint is lost (a projector under a fresh group starts from the
        // beginning): everything is re-delivered into a store that already holds it,
        // while new events arrive. Nothing held may regress, the new events land, and
        // the checkpoint reaches the end.
        let later = logins(3);
        store.append(&later).await.unwrap();
        later.iter().for_each(|e| expected.apply(e));
        let end = end + later.len() as u64;
        let applied = project_watching(&store, "second", end, &before).await;
        assert_eq!(
            applied,
            (events.len() + later.len()) as u64,
            "everything was re-delivered and applied again"
        );
        assert_eq!(store.snapshot().await.unwrap().digest(), expected.digest());
    }
}
