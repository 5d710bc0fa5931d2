//! The embedded store has no TTL: the [`Pruner`] reclaims expired projection rows now
//! and then (D5), in the process that runs the projector.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::Embedded;

/// How the pruner is doing: rows reclaimed and failed passes since start, and the
/// last pass that succeeded.
#[derive(Debug, Default)]
pub struct PrunerStatus {
    pruned: AtomicU64,
    failures: AtomicU64,
    /// When the last good pass ran, and the rows it deleted.
    last: Mutex<Option<(Timestamp, u64)>>,
}

impl PrunerStatus {
    /// Projection rows deleted since start.
    pub fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    /// Passes that failed (the next pass tries again).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// When the last good pass ran, and the rows it deleted.
    pub fn last_pass(&self) -> Option<(Timestamp, u64)> {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pruner's part of the projector's `/v1/status`.
    pub fn report(&self) -> serde_json::Value {
        let last = self.last_pass();
        serde_json::json!({
            "pruned": self.pruned(),
            "failures": self.failures(),
            "last_pruned_at": last.map(|(at, _)| at),
            "last_removed": last.map(|(_, removed)| removed),
        })
    }
}

/// Deletes the projection rows past their retention every `every`.
#[derive(Debug)]
pub struct Pruner {
    store: Embedded,
    every: Duration,
    status: Arc<PrunerStatus>,
}

impl Pruner {
    /// How often the projector's process prunes.
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

    pub fn new(store: Embedded, every: Duration) -> Self {
        Pruner {
            store,
            every,
            status: Arc::default(),
        }
    }

    pub fn status(&self) -> Arc<PrunerStatus> {
        self.status.clone()
    }

    /// Prunes every `every` until `shutdown`; a failed pass is logged and retried on
    /// the next one.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            let now = ledger_clock::now();
            match self.store.prune(now).await {
                Ok(n) => {
                    self.status.pruned.fetch_add(n as u64, Ordering::Relaxed);
                    *self
                        .status
                        .last
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((now, n as u64));
                    if n > 0 {
                        tracing::debug!(rows = n, "pruned expired projection rows");
                    }
                }
                Err(e) => {
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "pruning failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ledger_core::Projection;
    use ledger_core::ports::ProjectionStore;

    use super::*;

    #[tokio::test]
    async fn expired_rows_go_on_the_next_pass_and_a_stop_ends_the_loop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        // A login long past retention.
        let (_, login) =
            ledger_core::testing::login("alice", Timestamp::from_unix_seconds(1_000_000_000));
        let mut p = Projection::new();
        p.apply(&login);
        ProjectionStore::write(&store, &p).await.unwrap();
        let pruner = Pruner::new(store, Duration::from_millis(10));
        let status = pruner.status();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pruner.run(shutdown.clone()));
        tokio::time::timeout(Duration::from_secs(10), async {
            while status.pruned() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((status.pruned(), status.failures()), (1, 0));
        let report = status.report();
        assert_eq!(report["pruned"], 1, "{report}");
        assert_eq!(report["failures"], 0, "{report}");
        assert!(report["last_pruned_at"].is_string(), "{report}");
        assert!(report["last_removed"].is_u64(), "{report}");
    }
}
