//! Replaying the log: fold a range of it into a projection in memory, check it against
//! its seals in the same pass, and compare with the live projection once the
//! projector has caught up.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_core::ports::{LogRecord, LogSource, Position, ProjectionStore, SealStore, StartFrom};
use ledger_core::seal::{Anchor, ChainCheck};
use ledger_core::{FamilyStatus, Projection, Timestamp};
use ledger_token::{KeyDir, VerificationKeys};

use crate::scan::{Flow, scan};

/// What `replay` found.
#[derive(Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub projection: Projection,
    pub elapsed: Duration,
    /// Where the replay stopped: the next offset per partition.
    pub end: Vec<Position>,
}

impl ReplayReport {
    /// How many of the replayed families are revoked at `now`.
    pub fn revoked(&self, now: Timestamp) -> usize {
        self.projection
            .families()
            .filter(|f| {
                matches!(
                    FamilyStatus::of(f, self.projection.subject_revocation(&f.subject), now),
                    FamilyStatus::Revoked { .. }
                )
            })
            .count()
    }
}

/// One end of a replay: an offset (in every partition) or a time (`occurred_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Offset(u64),
    Time(Timestamp),
}

impl std::str::FromStr for Bound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(offset) = s.parse::<u64>() {
            return Ok(Bound::Offset(offset));
        }
        Timestamp::parse_rfc3339(s).map(Bound::Time).map_err(|e| {
            format!("expected an offset or an RFC 3339 time (2026-11-29T10:00:00Z): {e}")
        })
    }
}

/// Which events of the log a replay folds: both ends included.
#[derive(Clone, Copy, Debug, Default)]
pub struct Range {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
}

impl Range {
    fn contains(&self, record: &LogRecord) -> bool {
        let after_from = match self.from {
            None => true,
            Some(Bound::Offset(o)) => record.position.offset >= o,
            Some(Bound::Time(t)) => record.event.occurred_at >= t,
        };
        after_from && !self.past_end(record)
    }

    fn past_end(&self, record: &LogRecord) -> bool {
        match self.to {
            None => false,
            Some(Bound::Offset(o)) => record.position.offset > o,
            Some(Bound::Time(t)) => record.event.occurred_at > t,
        }
    }
}

/// Folds the events of the log in `range` into a projection in memory, reporting
/// progress on stderr; feeds them to `chain` and writes them to `export` (NDJSON) too.
/// `partitions` is how many partitions the log has (an offset bound starts in each).
pub async fn replay(
    source: &dyn LogSource,
    partitions: u32,
    range: Range,
    mut chain: Option<&mut ChainCheck>,
    mut export: Option<&mut dyn Write>,
) -> anyhow::Result<ReplayReport> {
    let start = match range.from {
        Some(Bound::Offset(offset)) => StartFrom::Positions(
            (0..partitions)
                .map(|partition| Position { partition, offset })
                .collect(),
        ),
        // Events are in log order, not time order (clocks of API instances differ):
        // a time bound filters the whole log.
        None | Some(Bound::Time(_)) => StartFrom::Beginning,
    };
    let mut projection = Projection::new();
    let mut events = 0u64;
    // The chain check needs every record; a replay range only its own.
    let stop_early = chain.is_none();
    let scanned = scan(source, start, "replay", |record| {
        if let Some(chain) = chain.as_deref_mut() {
            chain.observe(
                record.position.partition,
                record.position.offset,
                &record.event,
            );
        }
        if !range.contains(record) {
            return Ok(if range.past_end(record) && stop_early {
                Flow::PastEnd
            } else {
                Flow::Continue
            });
        }
        projection.apply(&record.event);
        if let Some(out) = export.as_deref_mut() {
            out.write_all(&record.event.to_json())?;
            out.write_all(b"\n")?;
        }
        events += 1;
        Ok(Flow::Continue)
    })
    .await?;
    Ok(ReplayReport {
        events,
        projection,
        elapsed: scanned.elapsed,
        end: scanned.end,
    })
}

/// Writes `projection` into `store`, which must be fresh: refuses a store that already
/// holds a projection. `into` names the store in errors.
pub async fn write_fresh(
    store: &dyn ProjectionStore,
    into: &str,
    projection: &Projection,
) -> anyhow::Result<()> {
    let existing = store
        .snapshot()
        .await
        .context("--into: reading the target")?;
    anyhow::ensure!(
        existing.families().len() == 0 && existing.subjects().len() == 0,
        "--into: {into} already holds a projection ({} families); name a fresh one",
        existing.families().len()
    );
    store
        .write(projection)
        .await
        .with_context(|| format!("--into: writing to {into}"))?;
    Ok(())
}

/// The public keys that check the seals: from `seal_jwks` (a JWK Set from `keys
/// export-seal-jwks`), else from the key directory's `seal/`.
pub fn seal_verifier(seal_jwks: Option<&Path>, keys: &KeyDir) -> anyhow::Result<VerificationKeys> {
    Ok(match seal_jwks {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("--seal-jwks: reading {}", path.display()))?;
            let jwks = serde_json::from_slice(&text)
                .with_context(|| format!("--seal-jwks: {} is not JSON", path.display()))?;
            VerificationKeys::from_jwks(&jwks)
                .with_context(|| format!("--seal-jwks: {}", path.display()))?
        }
        None => keys
            .seal_keys()
            .context("the seal keys are needed to check the chain (or pass --seal-jwks)")?
            .public_keys(),
    })
}

/// The seals and the keys to check them, ready to walk the log.
pub async fn chain_check(
    seals: &dyn SealStore,
    verifier: &VerificationKeys,
) -> anyhow::Result<ChainCheck> {
    let seals = seals.seals().await.context("reading the seals")?;
    Ok(ChainCheck::new(seals, verifier))
}

/// Anchors recorded on an earlier audit (`partition offset chain` lines).
pub fn read_anchors(path: &Path) -> anyhow::Result<Vec<Anchor>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--anchor: reading {}", path.display()))?;
    Anchor::parse_lines(&text).map_err(|e| anyhow::anyhow!("--anchor: {}: {e}", path.display()))
}

/// Waits (up to `wait`) until the committed positions of `group` (the projector's)
/// reach `end`; `Some(events still to commit)` when they did not.
pub async fn await_projector(
    source: &dyn LogSource,
    group: &str,
    end: &[Position],
    wait: Duration,
) -> anyhow::Result<Option<u64>> {
    let deadline = Instant::now() + wait;
    loop {
        let committed = source
            .committed(group)
            .await
            .context("reading the projector's checkpoint")?;
        let behind: u64 = end
            .iter()
            .map(|e| {
                let done = committed
                    .iter()
                    .find(|c| c.partition == e.partition)
                    .map_or(0, |c| c.offset);
                e.offset.saturating_sub(done)
            })
            .sum();
        if behind == 0 {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(behind));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
