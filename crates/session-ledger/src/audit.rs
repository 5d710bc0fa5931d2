//! Tools for auditors: they read the same log the projector reads, with the same
//! backend configuration as the services, and never write to the serving path.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_core::ports::{LogRecord, Position, StartFrom};
use ledger_core::seal::{Anchor, ChainCheck, ChainReport};
use ledger_core::{Event, FamilyStatus, Projection, SessionId, Timestamp};
use ledger_token::{KeyDir, VerificationKeys};

use crate::run::Ports;
use crate::scan::{Flow, scan};
use crate::{Backend, Settings};

/// What `replay` found.
#[derive(Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub projection: Projection,
    pub elapsed: Duration,
    /// Where the replay stopped: the next offset per partition.
    pub end: Vec<Position>,
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

/// How `history` prints: a table per family, a JSON array, or NDJSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryFormat {
    #[default]
    Table,
    Json,
    Ndjson,
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
pub async fn replay(
    settings: &Settings,
    range: Range,
    chain: Option<&mut ChainCheck>,
    export: Option<&mut dyn Write>,
) -> anyhow::Result<ReplayReport> {
    fold_log(
        &Ports::open(settings).await?,
        settings,
        range,
        chain,
        export,
    )
    .await
}

/// [`replay`] on ports already open.
async fn fold_log(
    ports: &Ports,
    settings: &Settings,
    range: Range,
    mut chain: Option<&mut ChainCheck>,
    mut export: Option<&mut dyn Write>,
) -> anyhow::Result<ReplayReport> {
    let start = match range.from {
        Some(Bound::Offset(offset)) => {
            let partitions = match &settings.backend {
                Backend::Embedded => 1,
                Backend::Kafka(k) => u32::try_from(k.partitions).unwrap_or(1),
            };
            StartFrom::Positions(
                (0..partitions)
                    .map(|partition| Position { partition, offset })
                    .collect(),
            )
        }
        // Events are in log order, not time order (clocks of API instances differ):
        // a time bound filters the whole log.
        None | Some(Bound::Time(_)) => StartFrom::Beginning,
    };
    let mut projection = Projection::new();
    let mut events = 0u64;
    // The chain check needs every record; a replay range only its own.
    let stop_early = chain.is_none();
    let scanned = scan(ports, start, "replay", |record| {
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

/// Writes `projection` into a fresh store of the configured backend: the data
/// directory `into` (embedded) or the keyspace `into` (CQL). Refuses a store that
/// already holds a projection.
async fn write_into(
    settings: &Settings,
    into: &str,
    projection: &Projection,
) -> anyhow::Result<()> {
    let mut target = settings.clone();
    match &mut target.backend {
        Backend::Embedded => target.data_dir = PathBuf::from(into),
        Backend::Kafka(k) => k.keyspace = into.to_owned(),
    }
    let ports = Ports::open(&target)
        .await
        .with_context(|| format!("--into: opening {into}"))?;
    let existing = ports
        .store
        .snapshot()
        .await
        .context("--into: reading the target")?;
    anyhow::ensure!(
        existing.families().len() == 0 && existing.subjects().len() == 0,
        "--into: {into} already holds a projection ({} families); name a fresh one",
        existing.families().len()
    );
    ports
        .store
        .write(projection)
        .await
        .with_context(|| format!("--into: writing to {into}"))?;
    Ok(())
}

/// The seals and the keys to check them, ready to walk the log.
///
/// The public keys come from `seal_jwks` (a JWK Set from `keys export-seal-jwks`),
/// else from the key directory's `seal/`.
async fn chain_check(
    ports: &Ports,
    settings: &Settings,
    seal_jwks: Option<&Path>,
) -> anyhow::Result<ChainCheck> {
    let verifier = match seal_jwks {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("--seal-jwks: reading {}", path.display()))?;
            let jwks = serde_json::from_slice(&text)
                .with_context(|| format!("--seal-jwks: {} is not JSON", path.display()))?;
            VerificationKeys::from_jwks(&jwks)
                .with_context(|| format!("--seal-jwks: {}", path.display()))?
        }
        None => KeyDir::new(settings.data_dir.join("keys"))
            .seal_keys()
            .context("the seal keys are needed to check the chain (or pass --seal-jwks)")?
            .public_keys(),
    };
    let seals = ports.seals.seals().await.context("reading the seals")?;
    Ok(ChainCheck::new(seals, &verifier))
}

/// Prints the chain check; true when nothing was found.
fn print_chain(out: &mut impl Write, report: ChainReport) -> anyhow::Result<bool> {
    /// Findings printed in full; the rest are counted.
    const SHOWN: usize = 50;
    writeln!(
        out,
        "chain:         {} events sealed, {} after the newest seal (seals read: {})",
        report.sealed, report.unsealed_tail, report.seals
    )?;
    if report.before_log_start > 0 {
        writeln!(
            out,
            "chain:         {} sealed events precede the log's first event (retention, or \
             the head was cut: see docs/THREAT_MODEL.md)",
            report.before_log_start
        )?;
    }
    for (partition, offset, chain) in &report.heads {
        writeln!(
            out,
            "chain:         partition {partition} sealed through offset {offset}: {}",
            chain.to_hex()
        )?;
    }
    if report.anchors_checked > 0 || report.anchors_before_log_start > 0 {
        writeln!(
            out,
            "chain:         {} anchors checked against the log, {} before its first event \
             (compared with the seals only)",
            report.anchors_checked, report.anchors_before_log_start
        )?;
    }
    // The log's own chain at its end, per partition: record these lines outside the
    // system and pass them back with --anchor FILE on the next audit.
    for anchor in &report.log_heads {
        writeln!(out, "anchor:        {anchor}")?;
    }
    for finding in report.findings.iter().take(SHOWN) {
        writeln!(out, "chain:         {finding}")?;
    }
    if report.findings.len() > SHOWN {
        writeln!(
            out,
            "chain:         … and {} more findings",
            report.findings.len() - SHOWN
        )?;
    }
    if report.findings.is_empty() {
        writeln!(out, "chain:         intact")?;
    } else {
        let n = report.findings.len();
        let plural = if n == 1 { "" } else { "s" };
        writeln!(out, "chain:         TAMPERED: {n} finding{plural}")?;
    }
    Ok(report.findings.is_empty())
}

/// Waits (up to `wait`) until the projector's committed positions reach `end`;
/// `Some(events still to commit)` when they did not.
async fn await_projector(
    ports: &Ports,
    settings: &Settings,
    end: &[Position],
    wait: Duration,
) -> anyhow::Result<Option<u64>> {
    let group = crate::run::projector_group(settings);
    let deadline = Instant::now() + wait;
    loop {
        let committed = ports
            .source
            .committed(&group)
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

/// The first family or subject where two projections differ, in words.
pub fn first_difference(replayed: &Projection, live: &Projection) -> Option<String> {
    for f in replayed.families() {
        match live.family(&f.session_id) {
            None => {
                return Some(format!(
                    "family {} is in the replay but not live",
                    f.session_id
                ));
            }
            Some(l) if l != f => {
                return Some(format!(
                    "family {} differs: replay {} vs live {}",
                    f.session_id,
                    serde_json::to_string(f).unwrap_or_default(),
                    serde_json::to_string(l).unwrap_or_default()
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(l) = live
        .families()
        .find(|l| replayed.family(&l.session_id).is_none())
    {
        return Some(format!(
            "family {} is live but not in the replay",
            l.session_id
        ));
    }
    for s in replayed.subjects() {
        if live.subject_revocation(&s.subject) != Some(s) {
            return Some(format!("subject revocation of {} differs", s.subject));
        }
    }
    if let Some(l) = live
        .subjects()
        .find(|l| replayed.subject_revocation(&l.subject).is_none())
    {
        return Some(format!(
            "subject revocation of {} is live but not in the replay",
            l.subject
        ));
    }
    None
}

/// What `session-ledger replay` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    pub range: Range,
    /// Compare with the live projection (I5).
    pub verify: bool,
    /// Check the log against its seals.
    pub verify_chain: bool,
    /// The seal keys' public JWK Set for `verify_chain` (default: the key directory).
    pub seal_jwks: Option<PathBuf>,
    /// Anchors recorded on an earlier audit (`partition offset chain` lines), checked
    /// by `verify_chain` against the log's chain values.
    pub anchors: Option<PathBuf>,
    /// How long `verify` waits for the projector to catch up.
    pub wait: Duration,
    /// Write the replayed events here as NDJSON (`-`: standard output).
    pub export: Option<PathBuf>,
    /// Write the replayed projection into this fresh store: a data directory on the
    /// embedded backend, a keyspace on the CQL database.
    pub into: Option<String>,
}

/// `session-ledger replay`: prints the digest and counts; with `verify`, compares with
/// the live projection and fails naming the first difference (I5); with
/// `verify_chain`, checks the seals. False when a check found something.
pub async fn run_replay(settings: &Settings, options: ReplayOptions) -> anyhow::Result<bool> {
    let ports = Ports::open(settings).await?;
    // The seals are read before the log: everything they list is already in it.
    let anchors = match &options.anchors {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--anchor: reading {}", path.display()))?;
            Anchor::parse_lines(&text)
                .map_err(|e| anyhow::anyhow!("--anchor: {}: {e}", path.display()))?
        }
    };
    let mut chain = if options.verify_chain {
        Some(
            chain_check(&ports, settings, options.seal_jwks.as_deref())
                .await?
                .with_anchors(&anchors),
        )
    } else {
        None
    };
    let to_stdout = options.export.as_deref() == Some(Path::new("-"));
    let mut export: Option<Box<dyn Write>> = match &options.export {
        None => None,
        Some(_) if to_stdout => Some(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create_new(path)
                .with_context(|| format!("--export: cannot create {}", path.display()))?,
        ))),
    };
    let mut report = fold_log(
        &ports,
        settings,
        options.range,
        chain.as_mut(),
        export.as_mut().map(|w| w.as_mut() as &mut dyn Write),
    )
    .await?;
    if let Some(mut w) = export {
        w.flush().context("--export: writing the events")?;
    }
    // What the live store no longer keeps (past retention) is not compared.
    report.projection.prune(Timestamp::now());
    let now = Timestamp::now();
    let revoked = report
        .projection
        .families()
        .filter(|f| {
            matches!(
                FamilyStatus::of(f, report.projection.subject_revocation(&f.subject), now),
                FamilyStatus::Revoked { .. }
            )
        })
        .count();
    // With the events on standard output, the report goes to standard error.
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr().lock())
    } else {
        Box::new(std::io::stdout().lock())
    };
    writeln!(out, "events:        {}", report.events)?;
    writeln!(
        out,
        "families:      {} ({revoked} revoked)",
        report.projection.families().len()
    )?;
    writeln!(
        out,
        "subject revocations: {}",
        report.projection.subjects().len()
    )?;
    writeln!(out, "digest:        {}", report.projection.digest())?;
    writeln!(
        out,
        "rate:          {:.0} events/s",
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    )?;
    if let Some(into) = &options.into {
        write_into(settings, into, &report.projection).await?;
        writeln!(
            out,
            "into:          {into} (a fresh store holding the replayed projection)"
        )?;
    }
    let mut intact = true;
    if let Some(chain) = chain {
        intact = print_chain(&mut out, chain.finish())?;
    }
    if !options.verify {
        return Ok(intact);
    }
    // The live projection is comparable once the projector has committed everything
    // the replay read (it writes before it commits, so then it holds all of it).
    if let Some(behind) = await_projector(&ports, settings, &report.end, options.wait).await? {
        writeln!(
            out,
            "verify:        NOT COMPARABLE: the projector is {behind} events behind the log \
             after {} s; run it and try again",
            options.wait.as_secs()
        )?;
        return Ok(false);
    }
    let live = ports
        .store
        .snapshot()
        .await
        .context("reading the live projection")?;
    match first_difference(&report.projection, &live) {
        None => {
            writeln!(
                out,
                "verify:        the live projection matches ({})",
                live.digest()
            )?;
            Ok(intact)
        }
        Some(difference) => {
            writeln!(out, "verify:        MISMATCH: {difference}")?;
            Ok(false)
        }
    }
}

/// Whose history `session-ledger history` prints.
#[derive(Clone, Debug)]
pub enum HistoryOf {
    Session(String),
    Subject(String),
}

/// `session-ledger history`: one family's events, or every event of a subject (each
/// family's timeline and the subject-wide revocations), as a table, a JSON array or
/// NDJSON (each line an event as in `schemas/`).
pub async fn run_history(
    settings: &Settings,
    of: HistoryOf,
    format: HistoryFormat,
) -> anyhow::Result<()> {
    let events = match &of {
        HistoryOf::Session(session) => {
            let id = SessionId::parse(session).context("--session must be a session id (UUID)")?;
            let ports = Ports::open(settings).await?;
            let events = ports.history.history(id).await?;
            anyhow::ensure!(!events.is_empty(), "no events for session {id}");
            events
        }
        HistoryOf::Subject(subject) => {
            let subject = ledger_core::Subject::parse(subject)
                .map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
            let events = subject_events(&Ports::open(settings).await?, &subject).await?;
            anyhow::ensure!(!events.is_empty(), "no events for subject {subject}");
            events
        }
    };
    let mut out = std::io::stdout().lock();
    match format {
        HistoryFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&events)?)?,
        HistoryFormat::Ndjson => {
            for e in &events {
                out.write_all(&e.to_json())?;
                writeln!(out)?;
            }
        }
        HistoryFormat::Table => {
            // One timeline per family, in order of login; subject-wide events last.
            let mut families: Vec<Option<SessionId>> = Vec::new();
            for e in &events {
                if !families.contains(&e.session_id) {
                    families.push(e.session_id);
                }
            }
            families.sort_by_key(|f| f.is_none());
            for (i, family) in families.iter().enumerate() {
                if matches!(of, HistoryOf::Subject(_)) {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    match family {
                        Some(id) => writeln!(out, "session {id}")?,
                        None => writeln!(out, "every session of the subject")?,
                    }
                }
                writeln!(
                    out,
                    "{:<32} {:<18} {:>4}  detail",
                    "occurred_at", "event", "gen"
                )?;
                for e in events.iter().filter(|e| e.session_id == *family) {
                    writeln!(
                        out,
                        "{:<32} {:<18} {:>4}  {}",
                        e.occurred_at.to_rfc3339(),
                        e.event_type(),
                        e.generation.map_or("-".into(), |g| g.to_string()),
                        detail(e)
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Every event of `subject`, in log order: the log is read from its start (an
/// auditor's scan; nothing indexes events by subject on the serving path).
pub(crate) async fn subject_events(
    ports: &Ports,
    subject: &ledger_core::Subject,
) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    scan(ports, StartFrom::Beginning, "history", |record| {
        if record.event.subject == *subject {
            events.push(record.event.clone());
        }
        Ok(Flow::Continue)
    })
    .await?;
    Ok(events)
}

fn detail(e: &Event) -> String {
    use ledger_core::EventKind;
    match &e.kind {
        EventKind::SessionIssued(i) => format!(
            "login{}, session until {}",
            i.client_id
                .as_deref()
                .map(|c| format!(" by {c}"))
                .unwrap_or_default(),
            i.session.expires_at
        ),
        EventKind::SessionRefreshed(r) if r.grace_retry => format!(
            "grace retry of generation {}, same successor (rotated at {})",
            r.previous_generation, r.rotated_at
        ),
        EventKind::SessionRefreshed(r) => {
            format!("rotated from generation {}", r.previous_generation)
        }
        EventKind::SessionRevokedAll(r) => {
            let mut text = format!(
                "revoked ({}), kept until {}",
                r.reason.as_str(),
                r.keep_until
            );
            if let Some(g) = r.replayed_generation {
                text.push_str(&format!("; generation {g} presented again"));
                if let Some(at) = r.replayed_rotated_at {
                    let after = e.occurred_at.duration_since(at);
                    text.push_str(&format!(" {:.1} s after its rotation", after.as_secs_f64()));
                }
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named() {
        let now = Timestamp::now();
        let (id, events) = ledger_core::testing::login_and_logout("alice", now);
        let mut live = Projection::new();
        events.iter().for_each(|e| live.apply(e));
        let mut replayed = Projection::new();
        replayed.apply(&events[0]);
        let difference = first_difference(&replayed, &live).unwrap();
        assert!(
            difference.starts_with(&format!("family {id} differs")),
            "{difference}"
        );
        replayed.apply(&events[1]);
        assert_eq!(first_difference(&replayed, &live), None);
        let (other, extra) = ledger_core::testing::login("bob", now);
        live.apply(&extra);
        let difference = first_difference(&replayed, &live).unwrap();
        assert_eq!(
            difference,
            format!("family {other} is live but not in the replay")
        );
    }
}
