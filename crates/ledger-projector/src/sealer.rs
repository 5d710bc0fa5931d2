//! The sealer: reads the log and writes signed seals over its hash chain (see
//! [`ledger_core::seal`]), so auditors can tell whether the log was edited.
//!
//! Every second (or every [`MAX_SEAL_RUN`] events of a partition) it seals what it
//! read since its last seal: the cost follows the rate of new events, not the size of
//! the log. It keeps no checkpoint of its own: the newest seal of each partition is
//! where it resumes. Chain values depend on the log alone, so a crash, or two sealers
//! on the same log, leave seals that agree.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use ledger_core::Timestamp;
use ledger_core::ports::{BackendError, LogSource, Position, SealStore, StartFrom};
use ledger_core::seal::{MAX_SEAL_RUN, SealBuilder, SealSigner};
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
    /// How often what was read is sealed: the longest an event stays unsealed while
    /// the sealer runs.
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
                builder.push(offset, &record.event);
                if builder.pending() >= MAX_SEAL_RUN && !self.seal(builder, &shutdown).await? {
                    return Ok(());
                }
            }
            SEALED.inc_by(batch.len() as u64);
            if last_flush.elapsed() >= self.config.interval {
                for builder in builders.values_mut() {
                    if !self.seal(builder, &shutdown).await? {
                        return Ok(());
                    }
                }
                last_flush = Instant::now();
            }
        }
        // Shutting down: one attempt to seal what was read, no retries.
        for builder in builders.values_mut() {
            if let Some(seal) = builder.seal(self.signer.as_ref(), Timestamp::now())
                && let Err(e) = self.seals.put(&seal).await
            {
                tracing::warn!(error = %e, partition = seal.partition, "sealing at shutdown failed");
            }
        }
        Ok(())
    }

    /// Seals what `builder` read since its last seal, retrying until it is stored;
    /// false on shutdown.
    async fn seal(
        &self,
        builder: &mut SealBuilder,
        shutdown: &CancellationToken,
    ) -> Result<bool, BackendError> {
        let Some(seal) = builder.seal(self.signer.as_ref(), Timestamp::now()) else {
            return Ok(true);
        };
        Ok(retry(shutdown, &self.stats, || self.seals.put(&seal))
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use ledger_core::ports::{EventLog, SealStore};
    use ledger_core::seal::{ChainCheck, Hash, SealVerifier};
    use ledger_embedded::Embedded;

    use super::*;

    /// Signs with SHA-256(kid ‖ bytes); the service signs with Ed25519.
    #[derive(Debug)]
    struct TestKey;

    impl SealSigner for TestKey {
        fn kid(&self) -> &str {
            "test"
        }
        fn sign(&self, bytes: &[u8]) -> String {
            Hash::of(&[b"test", bytes].concat()).to_hex()
        }
    }

    impl SealVerifier for TestKey {
        fn verify(&self, kid: &str, bytes: &[u8], signature: &str) -> bool {
            kid == "test" && self.sign(bytes) == signature
        }
    }

    /// Runs a sealer until the newest seal reaches `last`, then stops it.
    async fn seal_through(log: &Embedded, last: u64) {
        let shutdown = CancellationToken::new();
        let sealer = Sealer::new(
            Arc::new(log.clone()),
            Arc::new(log.clone()),
            Arc::new(TestKey),
            SealerConfig {
                interval: Duration::from_millis(20),
                batch_size: 7,
            },
        );
        let task = tokio::spawn(sealer.run(shutdown.clone()));
        let started = Instant::now();
        while log
            .newest()
            .await
            .unwrap()
            .first()
            .is_none_or(|s| s.range().1 != last)
        {
            assert!(started.elapsed() < Duration::from_secs(10), "never sealed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_restarted_sealer_continues_the_chain_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = Embedded::open(dir.path()).unwrap();
        let events: Vec<_> = (0..40)
            .map(|i| ledger_core::testing::login(&format!("user{i}"), Timestamp::now()).1)
            .collect();
        log.append(&events[..30]).await.unwrap();
        seal_through(&log, 30).await;
        log.append(&events[30..]).await.unwrap();
        seal_through(&log, 40).await;

        let mut check = ChainCheck::new(log.seals().await.unwrap(), &TestKey);
        for (offset, event) in (1u64..).zip(&events) {
            check.observe(0, offset, event);
        }
        let report = check.finish();
        assert_eq!(report.findings, vec![]);
        assert_eq!((report.sealed, report.unsealed_tail), (40, 0));
    }
}
