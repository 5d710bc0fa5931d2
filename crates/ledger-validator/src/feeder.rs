use std::sync::Arc;
use std::time::Duration;

use ledger_core::ports::{BackendError, LogSource, ProjectionStore, resume_after_projection};
use tokio_util::sync::CancellationToken;

use std::sync::LazyLock;

use ledger_telemetry::metrics::register;
use prometheus::{Gauge, IntCounter, IntGauge};

use crate::RevocationView;

static CAUGHT_UP: LazyLock<Gauge> = LazyLock::new(|| {
    register(Gauge::new(
        "ledger_validator_caught_up_timestamp_seconds",
        "when the validator's view last had applied the whole log (staleness = now - this)",
    ))
});
static TAIL_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_validator_tail_errors_total",
        "failed reads of the log (brokers unreachable, no metadata, fetch errors)",
    ))
});
static LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "ledger_validator_lag_events",
        "events in the log not yet applied",
    ))
});

#[derive(Clone, Debug)]
pub struct FeederConfig {
    /// The projector's consumer group: bootstrap resumes the log at its checkpoint.
    pub projector_group: String,
    pub batch_size: usize,
    /// How long one poll waits; bounds how stale an idle view can look.
    pub poll_wait: Duration,
    pub prune_every: Duration,
    /// Test only (`LEDGER_FAILPOINT=abort-before-commit`): once the view has been
    /// caught up, abort the process after applying the next batch's events to the
    /// view and before recording its positions or declaring it caught up.
    pub abort_before_commit: bool,
}

impl Default for FeederConfig {
    fn default() -> Self {
        FeederConfig {
            projector_group: "session-ledger-projector".to_owned(),
            batch_size: 1000,
            poll_wait: Duration::from_millis(500),
            prune_every: Duration::from_secs(60),
            abort_before_commit: false,
        }
    }
}

/// Bootstraps a [`RevocationView`] from the store, then tails the log into it.
#[derive(Debug)]
pub struct ViewFeeder {
    view: Arc<RevocationView>,
    log: Arc<dyn LogSource>,
    store: Arc<dyn ProjectionStore>,
    config: FeederConfig,
}

impl ViewFeeder {
    pub fn new(
        view: Arc<RevocationView>,
        log: Arc<dyn LogSource>,
        store: Arc<dyn ProjectionStore>,
        config: FeederConfig,
    ) -> Self {
        ViewFeeder {
            view,
            log,
            store,
            config,
        }
    }

    /// Runs until cancelled. Backend errors are retried; while they last the view
    /// ages and, past the bound, answers `Stale`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BackendError> {
        let mut reader = loop {
            match self.bootstrap().await {
                Ok(reader) => break reader,
                Err(e @ BackendError::Corrupt { .. }) => return Err(e),
                Err(e) => {
                    TAIL_ERRORS.inc();
                    self.view.set_tail_error(Some(e.to_string()));
                    tracing::warn!(error = %e, "validator bootstrap failed, retrying");
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
                polled = reader.poll(self.config.batch_size, self.config.poll_wait) => polled,
            };
            match polled {
                Ok(batch) => {
                    if self.config.abort_before_commit
                        && !batch.is_empty()
                        && self.view.status().caught_up_at.is_some()
                    {
                        self.view.apply_events(batch.iter().map(|r| &r.event));
                        tracing::error!(
                            events = batch.len(),
                            "failpoint abort-before-commit: aborting with the batch applied, its positions not recorded"
                        );
                        std::process::abort();
                    }
                    let lag = reader.lag();
                    // Fresh only by the reader's proof that it reached the end of the
                    // log: an empty poll from a reader cut off from the brokers is not.
                    let caught_up_at = reader.caught_up_at();
                    self.view
                        .apply(&batch, reader.positions(), lag, caught_up_at);
                    if let Some(at) = caught_up_at {
                        CAUGHT_UP.set(at.unix_micros() as f64 / 1e6);
                    }
                    LAG.set(lag.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)));
                    if failing {
                        tracing::info!(?caught_up_at, "validator reads the log again");
                        failing = false;
                        self.view.set_tail_error(None);
                    }
                }
                Err(e @ BackendError::Corrupt { .. }) => return Err(e),
                Err(e) => {
                    TAIL_ERRORS.inc();
                    // Once per outage at warn; the view goes stale by itself.
                    if failing {
                        tracing::debug!(error = %e, "validator tail failed, retrying");
                    } else {
                        tracing::warn!(error = %e, max_staleness = ?self.view.max_staleness(),
                            "validator cannot read the log, it fails closed once its view is older than max_staleness");
                    }
                    failing = true;
                    self.view.set_tail_error(Some(e.to_string()));
                    // The reader's proof holds whatever the error: publish it.
                    self.view
                        .apply(&[], reader.positions(), reader.lag(), reader.caught_up_at());
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
            if last_prune.elapsed() >= self.config.prune_every {
                let pruned = self.view.prune(ledger_clock::now());
                tracing::debug!(pruned, "validator pruned expired entries");
                last_prune = tokio::time::Instant::now();
            }
        }
    }

    /// The store's snapshot at the projector's checkpoint, and a reader from there
    /// ([`resume_after_projection`]).
    async fn bootstrap(&self) -> Result<Box<dyn ledger_core::ports::LogReader>, BackendError> {
        let (snapshot, reader, positions) = resume_after_projection(
            self.log.as_ref(),
            self.store.as_ref(),
            &self.config.projector_group,
        )
        .await?;
        let families = snapshot.families().len();
        self.view.bootstrap(snapshot);
        tracing::info!(
            families,
            ?positions,
            "validator bootstrapped from the store"
        );
        Ok(reader)
    }
}
