//! `session-ledger replay` and `history`: they open the same ports as the services
//! (and never write to the serving path), hand them to `ledger_audit` and print what
//! it reports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ledger_audit::replay::{self as audit, ReplayReport};
use ledger_core::SessionId;
use ledger_core::seal::{ChainCheck, ChainReport};
use ledger_token::KeyDir;

pub use ledger_audit::{Bound, Range};

use crate::run::Ports;
use crate::{Backend, Settings};

/// How `history` prints: a table per family, a JSON array, or NDJSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryFormat {
    #[default]
    Table,
    Json,
    Ndjson,
}

/// How many partitions an offset bound starts in.
fn partitions(settings: &Settings) -> u32 {
    match &settings.backend {
        Backend::Embedded => 1,
        Backend::Kafka(k) => u32::try_from(k.partitions).unwrap_or(1),
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
    let ports = Ports::open(settings).await?;
    audit::replay(&*ports.source, partitions(settings), range, chain, export).await
}

/// Writes `projection` into a fresh store of the configured backend: the data
/// directory `into` (embedded) or the keyspace `into` (CQL). Refuses a store that
/// already holds a projection.
async fn write_into(
    settings: &Settings,
    into: &str,
    projection: &ledger_core::Projection,
) -> anyhow::Result<()> {
    let mut target = settings.clone();
    match &mut target.backend {
        Backend::Embedded => target.data_dir = PathBuf::from(into),
        Backend::Kafka(k) => k.keyspace = into.to_owned(),
    }
    let ports = Ports::open(&target)
        .await
        .with_context(|| format!("--into: opening {into}"))?;
    audit::write_fresh(&*ports.store, into, projection).await
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
        Some(path) => audit::read_anchors(path)?,
    };
    let mut chain = if options.verify_chain {
        let verifier = audit::seal_verifier(
            options.seal_jwks.as_deref(),
            &KeyDir::new(settings.data_dir.join("keys")),
        )?;
        Some(
            audit::chain_check(&*ports.seals, &verifier)
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
    let mut report = audit::replay(
        &*ports.source,
        partitions(settings),
        options.range,
        chain.as_mut(),
        export.as_mut().map(|w| w.as_mut() as &mut dyn Write),
    )
    .await?;
    if let Some(mut w) = export {
        w.flush().context("--export: writing the events")?;
    }
    // What the live store no longer keeps (past retention) is not compared.
    report.projection.prune(ledger_clock::now());
    let revoked = report.revoked(ledger_clock::now());
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
    let group = crate::run::projector_group(settings);
    if let Some(behind) =
        audit::await_projector(&*ports.source, &group, &report.end, options.wait).await?
    {
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
    match report.projection.first_difference(&live) {
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
            let ports = Ports::open(settings).await?;
            let events = ledger_audit::history::subject_events(&*ports.source, &subject).await?;
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
            let headings = matches!(of, HistoryOf::Subject(_));
            ledger_audit::history::write_table(&mut out, &events, headings)?;
        }
    }
    Ok(())
}
