//! The sealer: reads the log and writes signed seals over its hash chain (see
//! [`ledger_core::seal`]), so auditors can tell whether the log was edited.
//!
//! It keeps no checkpoint of its own: the newest seal of each partition is where it
//! resumes. Re-sealing is idempotent (a block's seal is replaced by one covering the
//! same events or more), so a crash, or two sealers on the same log, leave the same
//! seals behind.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use ledger_core::Timestamp;
use ledger_core::ports::{BackendError, LogSource, Position, SealStore, StartFrom};
use ledger_core::seal::{SealBuilder, SealSigner};
use ledger_http::metrics::register;
use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

use crate::{ProjectorStats, backoff, retry};

static SEALED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_sealer_events_total",
        "events hashed into the log's seals",
    ))
});

#[derive(Clone, Debug)]
pub struct SealerConfig {
    /// How often the open block of each partition is re-sealed: the longest an event
    /// stays unsealed while the sealer runs.
    pub interval: Duration,
    /// Most events read per poll.
    pub batch_size: usize,
}

impl Default for SealerConfig {
    fn default() -> Self {
        SealerConfig {
            interval: Duration::from_secs(1),
            batch_size: 5000,
        }
    }
}

#[derive(Debug)]
pub struct Sealer {
    log: Arc<dyn LogSource>,
    seals: Arc<dyn SealStore>,
    signer: Arc<dyn SealSigner>,
    config: SealerConfig,
    stats: Arc<ProjectorStats>,
}

impl Sealer {
    pub fn new(
        log: Arc<dyn LogSource>,
        seals: Arc<dyn SealStore>,
        signer: Arc<dyn SealSigner>,
        config: SealerConfig,
    ) -> Self {
        Sealer {
            log,
            seals,
            signer,
            config,
            stats: Arc::default(),
        }
    }

    /// Seals until `shutdown`, then seals what it has read and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BackendError> {
        let Some(newest) = retry(&shutdown, &self.stats, || self.seals.newest()).await? else {
            return Ok(());
        };
        let mut builders: BTreeMap<u32, SealBuilder> = newest
            .iter()
            .map(|s| (s.partition, SealBuilder::resume(s.partition, Some(s))))
            .collect();
        let resume: Vec<Position> = builders
            .iter()
            .filter_map(|(&partition, b)| {
                b.next_offset().map(|offset| Position { partition, offset })
            })
            .collect();
        let start = if resume.is_empty() {
            StartFrom::Beginning
        } else {
            StartFrom::Positions(resume)
        };
        let Some(mut reader) =
            retry(&shutdown, &self.stats, || self.log.reader(start.clone())).await?
        else {
            return Ok(());
        };
        tracing::info!(positions = ?reader.positions(), kid = self.signer.kid(), "sealer started");
        let mut open: BTreeSet<u32> = BTreeSet::new();
        let mut last_flush = Instant::now();
        loop {
            let polled = tokio::select! {
                () = shutdown.cancelled() => break,
                polled = reader.poll(self.config.batch_size, self.config.interval) => polled,
            };
            let batch = match polled {
                Ok(batch) => batch,
                Err(e @ BackendError::Corrupt { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "sealer poll failed, retrying");
                    backoff(&shutdown, 1).await;
                    continue;
                }
            };
            for record in &batch {
                let Position { partition, offset } = record.position;
                let builder = builders
                    .entry(partition)
                    .or_insert_with(|| SealBuilder::resume(partition, None));
                if builder.next_offset().is_some_and(|next| offset < next) {
                    continue; // already sealed (a reader may start before its position)
                }
                if let Some(done) = builder.push(offset, &record.event) {
                    let seal = done.sign(self.signer.as_ref(), Timestamp::now());
                    if retry(&shutdown, &self.stats, || self.seals.put(&seal))
                        .await?
                        .is_none()
                    {
                        return Ok(());
                    }
                }
                open.insert(partition);
            }
            SEALED.inc_by(batch.len() as u64);
            if last_flush.elapsed() >= self.config.interval {
                if !self.flush(&builders, &mut open, &shutdown).await? {
                    return Ok(());
                }
                last_flush = Instant::now();
            }
        }
        // Shutting down: one attempt to seal what was read, no retries.
        for partition in std::mem::take(&mut open) {
            if let Some(b) = builders.get(&partition) {
                let seal = b.sign(self.signer.as_ref(), Timestamp::now());
                if let Err(e) = self.seals.put(&seal).await {
                    tracing::warn!(error = %e, partition, "sealing at shutdown failed");
                }
            }
        }
        Ok(())
    }

    /// Re-seals the open block of every partition that moved; false on shutdown.
    async fn flush(
        &self,
        builders: &BTreeMap<u32, SealBuilder>,
        open: &mut BTreeSet<u32>,
        shutdown: &CancellationToken,
    ) -> Result<bool, BackendError> {
        for partition in std::mem::take(open) {
            let Some(b) = builders.get(&partition).filter(|b| !b.is_empty()) else {
                continue;
            };
            let seal = b.sign(self.signer.as_ref(), Timestamp::now());
            if retry(shutdown, &self.stats, || self.seals.put(&seal))
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
