//! The sealer: reads the log and writes signed seals over its hash chain (see
//! [`ledger_core::seal`]), so auditors can tell whether the log was edited.
//!
//! Every second (or every [`MAX_SEAL_RUN`] events of a partition) it seals what it
//! read since its last seal: the cost follows the rate of new events, not the size of
//! the log. It keeps no checkpoint of its own: the newest seal of each partition is
//! where it resumes. Chain values depend on the log alone, so a crash, or two sealers
//! on the same log, leave seals that agree.
//!
//! It resumes only from a seal it can vouch for: signed by one of its own keys, and
//! matching the log it covers (every event, and the chain value recomputed from the
//! log). Otherwise it refuses to seal, loudly (`ledger_sealer_refused`, an error log,
//! [`SealerHealth`] for the status endpoint): signing on would bless the edit.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use ledger_core::ports::{BackendError, LogSource, Position, SealStore, StartFrom};
use ledger_core::seal::{
    MAX_SEAL_RUN, ResumeCheck, ResumeRefused, SealBuilder, SealSigner, SealVerifier,
};
use ledger_telemetry::metrics::register;
use prometheus::{IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;

use crate::{ProjectorStats, backoff, retry};

static SEALED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_sealer_events_total",
        "events hashed into the log's seals",
    ))
});

static REFUSED: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "ledger_sealer_refused",
        "1 while the sealer refuses to seal: its newest seal disagrees with its keys or the log",
    ))
});

/// Whether the sealer is sealing, for the projector's status endpoint.
#[derive(Debug, Default)]
pub struct SealerHealth {
    refused: std::sync::Mutex<Option<String>>,
    /// Set once the seals it resumes from checked out against the log.
    sealing: std::sync::atomic::AtomicBool,
}

impl SealerHealth {
    /// `checking` (its newest seals against the log), `sealing` or `refused`.
    pub fn state(&self) -> &'static str {
        if self.refused().is_some() {
            "refused"
        } else if self.sealing.load(std::sync::atomic::Ordering::Relaxed) {
            "sealing"
        } else {
            "checking"
        }
    }

    /// Why the sealer refuses to seal, when it does.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().map_or(None, |r| r.clone())
    }
}

#[derive(Clone, Debug)]
pub struct SealerConfig {
    /// How often what was read is sealed: the longest an event stays unsealed while
    /// the sealer runs.
    pub interval: Duration,
    /// Most events read per poll.
    pub batch_size: usize,
    /// The log keeps every event (the embedded log: no retention). Then a newest seal
    /// whose events are all missing is a cut; on Kafka it may be retention.
    pub log_keeps_everything: bool,
}

impl Default for SealerConfig {
    fn default() -> Self {
        SealerConfig {
            interval: Duration::from_secs(1),
            batch_size: 5000,
            log_keeps_everything: false,
        }
    }
}

pub struct Sealer {
    log: Arc<dyn LogSource>,
    seals: Arc<dyn SealStore>,
    signer: Arc<dyn SealSigner>,
    /// The public halves of the sealer's own keys: what its newest seal must verify with.
    verifier: Arc<dyn SealVerifier + Send + Sync>,
    config: SealerConfig,
    stats: Arc<ProjectorStats>,
    health: Arc<SealerHealth>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("signer", &self.signer)
            .field("config", &self.config)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(
        log: Arc<dyn LogSource>,
        seals: Arc<dyn SealStore>,
        signer: Arc<dyn SealSigner>,
        verifier: Arc<dyn SealVerifier + Send + Sync>,
        config: SealerConfig,
    ) -> Self {
        Sealer {
            log,
            seals,
            signer,
            verifier,
            config,
            stats: Arc::default(),
            health: Arc::default(),
        }
    }

    pub fn health(&self) -> Arc<SealerHealth> {
        self.health.clone()
    }

    /// Stops sealing, loudly, until shutdown.
    async fn refuse(
        &self,
        why: &ResumeRefused,
        shutdown: &CancellationToken,
    ) -> Result<(), BackendError> {
        tracing::error!(reason = %why, "sealer refuses to seal: its newest seal disagrees with its keys or the log; check with `replay --verify-chain`");
        REFUSED.set(1);
        if let Ok(mut refused) = self.health.refused.lock() {
            *refused = Some(why.to_string());
        }
        shutdown.cancelled().await;
        Ok(())
    }

    /// Seals until `shutdown`, then seals what it has read and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BackendError> {
        REFUSED.set(0);
        let Some(newest) = retry(&shutdown, &self.stats, || self.seals.newest()).await? else {
            return Ok(());
        };
        // The seal it resumes from must be its own and agree with the log.
        let mut checks: BTreeMap<u32, ResumeCheck> = BTreeMap::new();
        for seal in &newest {
            match ResumeCheck::new(seal, self.verifier.as_ref()) {
                Ok(check) => {
                    checks.insert(seal.partition, check);
                }
                Err(why) => return self.refuse(&why, &shutdown).await,
            }
        }
        let mut builders: BTreeMap<u32, SealBuilder> = newest
            .iter()
            .map(|s| (s.partition, SealBuilder::resume(s.partition, Some(s))))
            .collect();
        // Read from just before the newest seal, to check it against the log.
        let resume: Vec<Position> = checks
            .iter()
            .map(|(&partition, check)| Position {
                partition,
                offset: check.read_from(),
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
            if batch.is_empty() && !checks.is_empty() {
                // Caught up with seals still unchecked: the log ends before them.
                for (&partition, check) in &checks {
                    if check.nothing_seen() && !self.config.log_keeps_everything {
                        tracing::warn!(
                            partition,
                            "the newest seal's events are no longer in the log (retention, or a cut: `replay --verify-chain` tells)"
                        );
                    } else {
                        return self.refuse(&check.log_ended(), &shutdown).await;
                    }
                }
                checks.clear();
            }
            if checks.is_empty() {
                self.health
                    .sealing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            for record in &batch {
                let Position { partition, offset } = record.position;
                if let Some(check) = checks.get_mut(&partition) {
                    match check.observe(offset, &record.event) {
                        Ok(false) => continue,
                        Ok(true) => {
                            tracing::info!(partition, "newest seal checked against the log");
                            checks.remove(&partition);
                            continue;
                        }
                        Err(why) => return self.refuse(&why, &shutdown).await,
                    }
                }
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
            if let Some(seal) = builder.seal(self.signer.as_ref(), ledger_clock::now())
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
        let Some(seal) = builder.seal(self.signer.as_ref(), ledger_clock::now()) else {
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
            Arc::new(TestKey),
            SealerConfig {
                interval: Duration::from_millis(20),
                batch_size: 7,
                log_keeps_everything: true,
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
    async fn a_sealer_refuses_to_resume_from_a_seal_it_cannot_vouch_for() {
        let dir = tempfile::tempdir().unwrap();
        let log = Embedded::open(dir.path()).unwrap();
        let events: Vec<_> = (0..10)
            .map(|i| ledger_core::testing::login(&format!("user{i}"), ledger_clock::now()).1)
            .collect();
        log.append(&events).await.unwrap();
        seal_through(&log, 10).await;
        // The newest seal is rewritten in the store: it claims another chain value.
        let mut forged = log.newest().await.unwrap().remove(0);
        forged.chain = Hash::of(b"a rewritten head");
        log.put(&forged).await.unwrap();

        let shutdown = CancellationToken::new();
        let sealer = Sealer::new(
            Arc::new(log.clone()),
            Arc::new(log.clone()),
            Arc::new(TestKey),
            Arc::new(TestKey),
            SealerConfig::default(),
        );
        let health = sealer.health();
        let task = tokio::spawn(sealer.run(shutdown.clone()));
        let started = Instant::now();
        while health.refused().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the sealer did not refuse"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let why = health.refused().unwrap();
        assert!(why.contains("does not verify"), "{why}");
        assert_eq!(
            log.newest().await.unwrap(),
            vec![forged],
            "nothing sealed over it"
        );
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_restarted_sealer_continues_the_chain_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = Embedded::open(dir.path()).unwrap();
        let events: Vec<_> = (0..40)
            .map(|i| ledger_core::testing::login(&format!("user{i}"), ledger_clock::now()).1)
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
