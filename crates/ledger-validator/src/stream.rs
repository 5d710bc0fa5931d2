//! The public revocation stream over HTTP: Server-Sent Events carrying the same
//! records as the Kafka revocation topic, for deployments on the embedded backend.
//!
//! Each connection has a task of its own that reads the log from the consumer's
//! position (a reader of its own), turns each `SessionRevokedAll` into a
//! [`RevocationRecord`] and hands the framed events to the response through a bounded
//! channel: a slow consumer holds back only its own task, never the log or another
//! connection.
//!
//! **API boundary**: the wire format below (event names, `id` = position, `data` =
//! the record's JSON as `schemas/revocation.schema.json` pins it) is public.
//!
//! - `event: revocation`, `id: <offset>`, `data: <RevocationRecord JSON>`: a
//!   revocation in force when read. Records whose `keep_until` has already passed are
//!   skipped, so a consumer reading from the beginning ends with exactly the
//!   revocations in force (as a compacted topic would give it).
//! - `event: expired`, no `id`, `data: {"key": …, "keep_until": …}`: the `keep_until`
//!   of a record this connection sent has passed (the topic's tombstone). Sent for the
//!   latest `keep_until` of a key; after a reconnect only for records sent since.
//! - `: keep-alive` comment lines when nothing else was sent for a while.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix_web::web::Bytes;
use ledger_core::ports::{BackendError, LogReader, LogSource, Position, StartFrom};
use ledger_core::{RevocationRecord, Timestamp};
use ledger_telemetry::metrics::register;
use prometheus::{IntGauge, Opts};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

static OPEN_STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::with_opts(Opts::new(
        "ledger_revocation_streams",
        "revocation streams (Server-Sent Events) open now",
    )))
});

/// How a stream paces itself.
#[derive(Clone, Copy, Debug)]
pub struct StreamConfig {
    /// A `: keep-alive` comment goes out when nothing was sent for this long, so
    /// proxies do not cut an idle connection.
    pub keep_alive: Duration,
    /// Events framed but not yet taken by the connection, per connection.
    pub buffer: usize,
    /// Records read from the log at once.
    pub batch: usize,
    /// Pause after a failed read of the log.
    pub retry: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            keep_alive: Duration::from_secs(15),
            buffer: 64,
            batch: 256,
            retry: Duration::from_secs(1),
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("position {0:?} is not a position of this log (a decimal offset)")]
    Malformed(String),
    #[error("position {given} is beyond the end of the log (its newest event is at {newest})")]
    Beyond { given: u64, newest: u64 },
    #[error("this log cannot be streamed: its end is unknown")]
    Unsupported,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A position of the stream: the offset of the last event a consumer has seen (0:
/// none). Positions are opaque to consumers; they only send one back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPosition(u64);

impl StreamPosition {
    pub fn parse(s: &str) -> Result<Self, StreamError> {
        // Digits only: no sign, no blanks (`u64::from_str` would take a `+`).
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StreamError::Malformed(s.to_owned()));
        }
        s.parse()
            .map(StreamPosition)
            .map_err(|_| StreamError::Malformed(s.to_owned()))
    }

    pub fn offset(self) -> u64 {
        self.0
    }
}

/// Opens revocation streams on a log.
#[derive(Clone, Debug)]
pub struct RevocationStream {
    source: Arc<dyn LogSource>,
    /// Ends every stream (the process is stopping), so connections close at once.
    shutdown: CancellationToken,
    config: StreamConfig,
}

impl RevocationStream {
    pub fn new(
        source: Arc<dyn LogSource>,
        shutdown: CancellationToken,
        config: StreamConfig,
    ) -> Self {
        RevocationStream {
            source,
            shutdown,
            config,
        }
    }

    /// Starts a stream of the revocations after `after` (from the beginning of the
    /// log when `None`): the receiver yields framed events until the process stops.
    /// A position beyond the end of the log is refused rather than waited for: it
    /// was not handed out by this log (a consumer of another, or a reset, data
    /// directory) and waiting would skip everything appended up to it.
    pub async fn open(
        &self,
        after: Option<StreamPosition>,
    ) -> Result<mpsc::Receiver<Bytes>, StreamError> {
        let start = match after {
            None => StartFrom::Beginning,
            Some(p) => {
                let end = self
                    .source
                    .end()
                    .await?
                    .and_then(|ends| ends.iter().map(|e| e.offset).max())
                    .ok_or(StreamError::Unsupported)?;
                let newest = end.saturating_sub(1);
                if p.offset() > newest {
                    return Err(StreamError::Beyond {
                        given: p.offset(),
                        newest,
                    });
                }
                StartFrom::Positions(vec![Position {
                    partition: 0,
                    offset: p.offset() + 1,
                }])
            }
        };
        let reader = self.source.reader(start).await?;
        let (tx, rx) = mpsc::channel(self.config.buffer.max(1));
        let connection = Connection {
            tx,
            shutdown: self.shutdown.clone(),
            config: self.config,
            last_sent: Instant::now(),
            sent: Sent::default(),
        };
        tokio::spawn(connection.run(reader));
        Ok(rx)
    }
}

/// The comment that keeps an idle connection open.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// `event: revocation` for the record read at `offset`.
pub fn revocation_event(offset: u64, record: &RevocationRecord) -> Bytes {
    let json = record.to_json();
    let mut out = Vec::with_capacity(json.len() + 48);
    out.extend_from_slice(format!("id: {offset}\nevent: revocation\ndata: ").as_bytes());
    // Compact JSON escapes every line break, so the record is one `data` line.
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `event: expired`: the revocation under `key` no longer governs any token.
pub fn expired_event(key: &str, keep_until: Timestamp) -> Bytes {
    #[derive(serde::Serialize)]
    struct Expired<'a> {
        key: &'a str,
        keep_until: Timestamp,
    }
    let mut out = b"event: expired\ndata: ".to_vec();
    // A string and a timestamp: serialising cannot fail.
    let _ = serde_json::to_writer(&mut out, &Expired { key, keep_until });
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The records a connection sent and has not yet announced as expired: the latest
/// `keep_until` per key, ordered by it.
#[derive(Debug, Default)]
struct Sent {
    until: HashMap<String, Timestamp>,
    by_time: BTreeSet<(Timestamp, String)>,
}

impl Sent {
    fn insert(&mut self, key: String, keep_until: Timestamp) {
        match self.until.get(&key) {
            Some(&t) if t >= keep_until => {}
            Some(&t) => {
                self.by_time.remove(&(t, key.clone()));
                self.until.insert(key.clone(), keep_until);
                self.by_time.insert((keep_until, key));
            }
            None => {
                self.until.insert(key.clone(), keep_until);
                self.by_time.insert((keep_until, key));
            }
        }
    }

    fn next(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(t, _)| *t)
    }

    fn pop_due(&mut self, now: Timestamp) -> Option<(String, Timestamp)> {
        if self.next()? > now {
            return None;
        }
        let (t, key) = self.by_time.pop_first()?;
        self.until.remove(&key);
        Some((key, t))
    }
}

/// Counts an open stream for as long as it lives, however its task ends.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        OPEN_STREAMS.inc();
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.dec();
    }
}

/// One consumer's stream: reads the log, sends framed events.
struct Connection {
    tx: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
    config: StreamConfig,
    last_sent: Instant,
    sent: Sent,
}

impl Connection {
    async fn run(mut self, mut reader: Box<dyn LogReader>) {
        let _open = OpenStream::new();
        self.tail(reader.as_mut()).await;
    }

    /// Returns when the consumer went away or the process stops.
    async fn tail(&mut self, reader: &mut dyn LogReader) {
        loop {
            let now = ledger_clock::now();
            while let Some((key, until)) = self.sent.pop_due(now) {
                if !self.send(expired_event(&key, until)).await {
                    return;
                }
            }
            if self.last_sent.elapsed() >= self.config.keep_alive
                && !self.send(Bytes::from_static(KEEP_ALIVE)).await
            {
                return;
            }
            let mut wait = self
                .config
                .keep_alive
                .saturating_sub(self.last_sent.elapsed());
            if let Some(next) = self.sent.next() {
                wait = wait.min(next.duration_since(now));
            }
            let polled = tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.tx.closed() => return,
                polled = reader.poll(self.config.batch, wait) => polled,
            };
            let batch = match polled {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "revocation stream: log read failed; retrying");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = self.tx.closed() => return,
                        () = tokio::time::sleep(self.config.retry) => continue,
                    }
                }
            };
            let now = ledger_clock::now();
            for read in &batch {
                let Some(record) = RevocationRecord::from_event(&read.event) else {
                    continue;
                };
                // No longer governs any token: a consumer starting now needs none of
                // it, as the topic's tombstone would have told it.
                if !record.in_force(now) {
                    continue;
                }
                let event = revocation_event(read.position.offset, &record);
                self.sent.insert(record.key(), record.keep_until);
                if !self.send(event).await {
                    return;
                }
            }
        }
    }

    /// Waits for room in the connection's buffer: `false` once the consumer went away
    /// or the process stops.
    async fn send(&mut self, bytes: Bytes) -> bool {
        let sent = tokio::select! {
            () = self.shutdown.cancelled() => false,
            sent = self.tx.send(bytes) => sent.is_ok(),
        };
        self.last_sent = Instant::now();
        sent
    }
}

#[cfg(test)]
mod tests;
