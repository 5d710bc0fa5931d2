//! Reading the whole log for the auditors' tools: one loop, one progress line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use ledger_core::ports::{LogRecord, LogSource, Position, StartFrom};

/// What the callback of [`scan`] says about a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The record is past the range asked for: stop once the log is read up to here.
    PastEnd,
}

/// What [`scan`] read.
#[derive(Debug)]
pub struct Scanned {
    /// Until the last record arrived (the poll that finds the end is not counted).
    pub elapsed: Duration,
    /// Where the scan stopped: the next offset per partition.
    pub end: Vec<Position>,
}

/// Reads the log from `start` to its end, handing every record to `each`, with a
/// progress line on standard error every second (`label` names the tool).
pub async fn scan(
    source: &dyn LogSource,
    start: StartFrom,
    label: &str,
    mut each: impl FnMut(&LogRecord) -> anyhow::Result<Flow>,
) -> anyhow::Result<Scanned> {
    let mut reader = source.reader(start).await?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (mut read, mut elapsed) = (0u64, Duration::ZERO);
    loop {
        let batch = reader.poll(10_000, Duration::from_millis(500)).await?;
        if batch.is_empty() {
            break;
        }
        elapsed = started.elapsed();
        read += batch.len() as u64;
        let mut past_end = false;
        for record in &batch {
            past_end |= each(record)? == Flow::PastEnd;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            progress(label, read, reader.lag(), started.elapsed(), false);
            last_report = Instant::now();
        }
        if past_end && reader.lag() == Some(0) {
            break;
        }
    }
    if read > 0 && started.elapsed() >= Duration::from_secs(1) {
        progress(label, read, Some(0), elapsed, true);
    }
    Ok(Scanned {
        elapsed,
        end: reader.positions(),
    })
}

/// The progress line: a bar, events/s and the time left. On a terminal it redraws in
/// place; elsewhere (CI logs) it prints a line per second.
fn progress(label: &str, read: u64, lag: Option<u64>, elapsed: Duration, done: bool) {
    const WIDTH: usize = 30;
    let rate = read as f64 / elapsed.as_secs_f64().max(1e-9);
    let line = match lag {
        Some(lag) => {
            let total = read + lag;
            let fraction = read as f64 / total.max(1) as f64;
            let filled = ((fraction * WIDTH as f64) as usize).min(WIDTH);
            format!(
                "[{}{}] {:>3.0}% {read}/{total} events, {rate:.0} events/s, {:.0} s left",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                100.0 * fraction,
                lag as f64 / rate.max(1.0)
            )
        }
        None => format!("{read} events, {rate:.0} events/s"),
    };
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = write!(err, "\r{label}: {line}\x1b[K");
        if done {
            let _ = writeln!(err);
        }
    } else {
        let _ = writeln!(err, "{label}: {line}");
    }
}
