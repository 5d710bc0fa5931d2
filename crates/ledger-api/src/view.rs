//! The API's own view of the log: every family's state, folded in memory from the log
//! by a reader of this process, so that a refresh decides without waiting for the
//! projector and without reading the store.
//!
//! A refresh first proves the view current: one request for the end of the log
//! ([`LogEnd`]), sent after the refresh arrived, then a wait until the view's reader
//! has read up to it. Every event any instance appended, or that arrived from another
//! region, before the refresh is then in the view. Requests that arrive while such a
//! request is in flight share the next one.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use ledger_core::ports::{
    BackendError, LogEnd, LogReader, LogSource, Position, ProjectionStore, resume_after_projection,
};
use ledger_core::{FamilyState, Projection, SessionId, Subject, SubjectRevocation};
use ledger_telemetry::metrics::register;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

static END_REQUESTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_api_view_end_requests_total",
        "requests for the end of the log, each shared by the refreshes that arrived before it",
    ))
});
static TAIL_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_api_view_tail_errors_total",
        "failed reads of the log by the api's view (refreshes answer 503 meanwhile)",
    ))
});
static FAMILIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "ledger_api_view_families",
        "families held in the api's view of the log",
    ))
});

/// Settings of a [`FamilyView`].
#[derive(Clone, Debug)]
pub struct FamilyViewConfig {
    /// The projector's consumer group: the view starts from the store at its checkpoint.
    pub projector_group: String,
    /// How long a refresh waits for the view to be current before answering 503.
    pub wait: Duration,
    pub batch_size: usize,
    pub prune_every: Duration,
}

impl FamilyViewConfig {
    pub fn new(projector_group: impl Into<String>, wait: Duration) -> Self {
        FamilyViewConfig {
            projector_group: projector_group.into(),
            wait,
            batch_size: 2000,
            prune_every: Duration::from_secs(60),
        }
    }
}

/// Where the view's reader is: `None` until the view has been bootstrapped.
#[derive(Debug, Default)]
struct Read {
    next: Option<HashMap<u32, u64>>,
}

impl Read {
    fn reached(&self, end: &[Position]) -> bool {
        let Some(next) = &self.next else {
            return false;
        };
        end.iter()
            .all(|e| e.offset == 0 || next.get(&e.partition).is_some_and(|&n| n >= e.offset))
    }
}

type EndAnswer = Result<Arc<Vec<Position>>, String>;

/// Every family's state and every subject revocation, from the store at the
/// projector's checkpoint and then from the log.
///
/// **Invariant**: once [`FamilyView::await_current`] returned `Ok`, the view holds
/// every event the log had acknowledged when the call began, whichever instance or
/// region appended it.
#[derive(Debug)]
pub struct FamilyView {
    source: Arc<dyn LogSource>,
    end: Arc<dyn LogEnd>,
    store: Arc<dyn ProjectionStore>,
    config: FamilyViewConfig,
    state: RwLock<Projection>,
    read: watch::Sender<Read>,
    /// Callers waiting for an end of the log asked after they arrived.
    waiting: Mutex<Vec<oneshot::Sender<EndAnswer>>>,
    wake: Notify,
}

impl FamilyView {
    pub fn new(
        source: Arc<dyn LogSource>,
        end: Arc<dyn LogEnd>,
        store: Arc<dyn ProjectionStore>,
        config: FamilyViewConfig,
    ) -> Self {
        FamilyView {
            source,
            end,
            store,
            config,
            state: RwLock::new(Projection::new()),
            read: watch::Sender::new(Read::default()),
            waiting: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Waits until the view holds every event the log acknowledged before this call;
    /// [`BackendError::Unavailable`] when that cannot be proven within the wait (the
    /// log unreachable, the reader behind).
    pub async fn await_current(&self) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + self.config.wait;
        let end = self.end_after_now(deadline).await?;
        self.await_read(&end, deadline).await
    }

    /// [`FamilyView::await_current`] in its two steps, for callers that time them: the
    /// end of the log, asked after this call (`deadline`: when to give up).
    pub(crate) async fn end_after_now(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<Vec<Position>>, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        self.wake.notify_one();
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(end))) => Ok(end),
            Ok(Ok(Err(e))) => Err(BackendError::unavailable(e)),
            Ok(Err(_)) => Err(BackendError::unavailable("the api's view stopped")),
            Err(_) => Err(BackendError::unavailable(format!(
                "the end of the log was not known within {:?}",
                self.config.wait
            ))),
        }
    }

    /// The second step: waits until the view's reader has read up to `end`.
    pub(crate) async fn await_read(
        &self,
        end: &[Position],
        deadline: tokio::time::Instant,
    ) -> Result<(), BackendError> {
        let mut read = self.read.subscribe();
        match tokio::time::timeout_at(deadline, read.wait_for(|r| r.reached(end))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BackendError::unavailable("the api's view stopped")),
            Err(_) => {
                tracing::warn!(end = ?end, "the api's view is behind the log, answering retry");
                Err(BackendError::unavailable(format!(
                    "the api's view did not reach the end of the log within {:?}",
                    self.config.wait
                )))
            }
        }
    }

    /// How long a refresh may wait for the view to be current.
    pub(crate) fn wait(&self) -> Duration {
        self.config.wait
    }

    /// The family as the view holds it (after [`FamilyView::await_current`]: with
    /// every event acknowledged before that call).
    pub fn family(&self, id: SessionId) -> Option<FamilyState> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .family(&id)
            .cloned()
    }

    pub fn subject_revocation(&self, subject: &Subject) -> Option<SubjectRevocation> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .subject_revocation(subject)
            .cloned()
    }

    /// Runs until cancelled: bootstraps from the store, tails the log, and answers
    /// requests for the end of the log, one at a time, each shared by every caller
    /// that arrived before it was sent.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), BackendError> {
        let ends = self.clone();
        let token = shutdown.child_token();
        let answering = token.clone();
        let ends = tokio::spawn(async move { ends.answer_ends(answering).await });
        let fed = self.feed(&shutdown).await;
        token.cancel();
        let _ = ends.await;
        fed
    }

    async fn answer_ends(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
            }
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
            if waiting.is_empty() {
                continue;
            }
            END_REQUESTS.inc();
            let end = tokio::select! {
                () = shutdown.cancelled() => return,
                end = self.end.end() => end,
            };
            let end: EndAnswer = end.map(Arc::new).map_err(|e| e.to_string());
            for caller in waiting {
                let _ = caller.send(end.clone());
            }
        }
    }

    async fn feed(&self, shutdown: &CancellationToken) -> Result<(), BackendError> {
        let mut reader = loop {
            match self.bootstrap().await {
                Ok(reader) => break reader,
                Err(e @ BackendError::Corrupt { .. }) => return Err(e),
                Err(e) => {
                    TAIL_ERRORS.inc();
                    tracing::warn!(error = %e, "api view bootstrap failed, retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let mut last_prune = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            let polled = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                polled = reader.poll(self.config.batch_size, Duration::from_millis(500)) => polled,
            };
            match polled {
                Ok(batch) => {
                    if !batch.is_empty() {
                        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                        for record in &batch {
                            state.apply(&record.event);
                        }
                    }
                    // Only once the batch is in the state: a caller that sees the
                    // positions reach its end reads a state that holds the batch.
                    self.publish(reader.as_ref());
                    if failing {
                        tracing::info!("api view reads the log again");
                        failing = false;
                    }
                }
                Err(e @ BackendError::Corrupt { .. }) => return Err(e),
                Err(e) => {
                    TAIL_ERRORS.inc();
                    if !failing {
                        tracing::warn!(error = %e, "api view cannot read the log, refreshes answer retry until it can");
                    }
                    failing = true;
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
            if last_prune.elapsed() >= self.config.prune_every {
                let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                let pruned = state.prune(ledger_clock::now());
                FAMILIES.set(i64::try_from(state.families().len()).unwrap_or(i64::MAX));
                tracing::debug!(pruned, "api view pruned expired entries");
                last_prune = tokio::time::Instant::now();
            }
        }
    }

    fn publish(&self, reader: &dyn LogReader) {
        let next = reader
            .positions()
            .into_iter()
            .map(|p| (p.partition, p.offset))
            .collect();
        self.read.send_replace(Read { next: Some(next) });
    }

    /// The store's snapshot at the projector's checkpoint, and a reader from there
    /// ([`resume_after_projection`]).
    async fn bootstrap(&self) -> Result<Box<dyn LogReader>, BackendError> {
        let (snapshot, reader, positions) = resume_after_projection(
            self.source.as_ref(),
            self.store.as_ref(),
            &self.config.projector_group,
        )
        .await?;
        let families = snapshot.families().len();
        FAMILIES.set(i64::try_from(families).unwrap_or(i64::MAX));
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        self.publish(reader.as_ref());
        tracing::info!(families, ?positions, "api view bootstrapped from the store");
        Ok(reader)
    }
}

#[cfg(test)]
mod tests {
    use super::Read;
    use ledger_core::ports::Position;

    fn at(partition: u32, offset: u64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn the_view_is_current_only_once_every_partition_reached_its_end() {
        let end = [at(0, 5), at(1, 0), at(65536, 2)];
        assert!(!Read::default().reached(&end), "not bootstrapped");
        let read = |next: &[(u32, u64)]| Read {
            next: Some(next.iter().copied().collect()),
        };
        assert!(!read(&[(0, 4), (65536, 2)]).reached(&end));
        assert!(
            !read(&[(0, 5)]).reached(&end),
            "a remote partition not read"
        );
        assert!(read(&[(0, 5), (65536, 3)]).reached(&end));
        assert!(read(&[(0, 6), (1, 0), (65536, 2)]).reached(&end));
    }
}
