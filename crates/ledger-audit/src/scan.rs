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

/// How long [`scan`] waits for a record while the reader knows the log holds more.
const PATIENCE: Duration = Duration::from_secs(30);

/// Reads the log from `start` to its end, handing every record to `each`, with a
/// progress line on standard error every second (`label` names the tool).
///
/// The end is a poll that brings nothing within half a second, once the reader
/// knows of no more events (its lag is zero or unknown). While it knows of more (a
/// Kafka broker slow to answer a fetch), it waits for them, up to [`PATIENCE`]
/// without a record, and then fails rather than report part of the log.
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
    let mut last_record = tokio::time::Instant::now();
    loop {
        let batch = reader.poll(10_000, Duration::from_millis(500)).await?;
        if batch.is_empty() {
            match reader.lag() {
                Some(lag) if lag > 0 => {
                    anyhow::ensure!(
                        last_record.elapsed() < PATIENCE,
                        "{label}: the log holds {lag} more events, but none arrived for {} s \
                         (read {read} so far)",
                        PATIENCE.as_secs()
                    );
                    continue;
                }
                _ => break,
            }
        }
        last_record = tokio::time::Instant::now();
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use async_trait::async_trait;
    use ledger_core::ports::{BackendError, LogReader};
    use ledger_core::testing::{at, login_and_logout, records};
    use ledger_core::{Event, Timestamp};

    use super::*;

    /// A log whose reader answers with the batches given, in turn (an empty one: a
    /// poll that waited in vain), and reports as lag what the batches still hold.
    #[derive(Debug)]
    struct Scripted(Vec<Vec<LogRecord>>);

    #[derive(Debug)]
    struct ScriptedReader(VecDeque<Vec<LogRecord>>);

    #[async_trait]
    impl LogSource for Scripted {
        async fn reader(&self, _: StartFrom) -> Result<Box<dyn LogReader>, BackendError> {
            Ok(Box::new(ScriptedReader(self.0.clone().into())))
        }

        async fn committed(&self, _: &str) -> Result<Vec<Position>, BackendError> {
            Ok(Vec::new())
        }
    }

    #[async_trait]
    impl LogReader for ScriptedReader {
        async fn poll(&mut self, _: usize, wait: Duration) -> Result<Vec<LogRecord>, BackendError> {
            let batch = self.0.pop_front().unwrap_or_default();
            if batch.is_empty() {
                tokio::time::sleep(wait).await;
            }
            Ok(batch)
        }

        async fn commit(&mut self, _: &[Position]) -> Result<(), BackendError> {
            Ok(())
        }

        fn positions(&self) -> Vec<Position> {
            Vec::new()
        }

        fn lag(&self) -> Option<u64> {
            Some(self.0.iter().map(|b| b.len() as u64).sum())
        }

        fn caught_up_at(&self) -> Option<Timestamp> {
            None
        }
    }

    fn events() -> Vec<Event> {
        login_and_logout("alice", at(0)).1
    }

    async fn count(log: &Scripted) -> anyhow::Result<usize> {
        let mut n = 0;
        scan(log, StartFrom::Beginning, "test", |_| {
            n += 1;
            Ok(Flow::Continue)
        })
        .await?;
        Ok(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_log_is_read_to_its_end() {
        let all = records(&events());
        let (first, second) = all.split_at(1);
        // The second batch comes after four polls that brought nothing.
        let mut batches = vec![first.to_vec()];
        batches.extend(std::iter::repeat_n(Vec::new(), 4));
        batches.push(second.to_vec());
        assert_eq!(count(&Scripted(batches)).await.unwrap(), all.len());
    }

    #[tokio::test(start_paused = true)]
    async fn events_the_log_holds_but_never_delivers_fail_the_scan() {
        let all = records(&events());
        let mut batches = vec![all[..1].to_vec()];
        batches.extend(std::iter::repeat_n(Vec::new(), 100));
        batches.push(all[1..].to_vec());
        let error = count(&Scripted(batches)).await.unwrap_err().to_string();
        assert!(error.contains("none arrived for 30 s"), "{error}");
    }
}
