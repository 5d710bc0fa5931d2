//! The interfaces the domain needs from the outside world (D7). The embedded backend
//! implements them with SQLite; Kafka and the CQL database implement them in production.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::seal::Seal;
use crate::{Event, FamilyState, Projection, SessionId, Subject, SubjectRevocation, Timestamp};

/// The cause of a [`BackendError`]: the client library's error (or a message standing
/// for one), kept so that logs and callers can walk the chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from a backend, kept opaque to the domain: the caller learns whether a retry
/// can help ([`BackendError::retryable`]) and, through `source`, what the backend said.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend did not acknowledge in time or is unreachable; nothing was promised.
    /// A retry can succeed.
    #[error("backend unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Stored data could not be read back. A retry reads the same bytes.
    #[error("corrupt record at {position}: {message}")]
    Corrupt {
        position: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A refused request, a misconfiguration, data that does not decode, a conflict or
    /// a broken local task: the same call fails the same way until someone acts.
    #[error("{message}")]
    Other {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl BackendError {
    /// The backend is unreachable or did not answer in time.
    pub fn unavailable(message: impl Into<String>) -> Self {
        BackendError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// The record at `position` does not decode.
    pub fn corrupt(position: impl Into<String>, message: impl Into<String>) -> Self {
        BackendError::Corrupt {
            position: position.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Anything a retry cannot fix.
    pub fn other(message: impl Into<String>) -> Self {
        BackendError::Other {
            message: message.into(),
            source: None,
        }
    }

    /// The same error, caused by `cause`.
    #[must_use]
    pub fn with_source(mut self, cause: impl Into<BoxError>) -> Self {
        let (BackendError::Unavailable { source, .. }
        | BackendError::Corrupt { source, .. }
        | BackendError::Other { source, .. }) = &mut self;
        *source = Some(cause.into());
        self
    }

    /// Whether the same call can succeed later without anyone acting: true for an
    /// unreachable or slow backend, false for corrupt data and refused requests.
    pub fn retryable(&self) -> bool {
        match self {
            BackendError::Unavailable { .. } => true,
            BackendError::Corrupt { .. } | BackendError::Other { .. } => false,
        }
    }
}

/// A place in the log: a partition and an offset within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// One event read from the log, with where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub position: Position,
    pub event: Event,
}

/// The write side of the log.
///
/// **Invariant** (I1): `append` returns `Ok` only once every event is durable
/// (fsync'd, or acknowledged by all in-sync replicas). The API answers only after it.
#[async_trait]
pub trait EventLog: Send + Sync + std::fmt::Debug {
    async fn append(&self, events: &[Event]) -> Result<(), BackendError>;
}

/// Where a reader starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The first event still in the log.
    Beginning,
    /// The next event after the given positions (per partition: the next offset).
    Positions(Vec<Position>),
    /// A consumer group's committed positions (the projector's checkpoint).
    Committed { group: String },
}

/// The read side of the log.
#[async_trait]
pub trait LogReader: Send + std::fmt::Debug {
    /// Up to `max` records after the reader's position, waiting at most `wait` for the
    /// first one. An empty batch proves nothing (the log may be unreachable): see
    /// [`LogReader::caught_up_at`]. An error says the log could not be read; the reader
    /// may be polled again.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, BackendError>;

    /// Records that everything up to `next` (the next offset to read, per partition)
    /// has been processed. Only a reader opened with [`StartFrom::Committed`] persists it.
    async fn commit(&mut self, next: &[Position]) -> Result<(), BackendError>;

    /// The next offset to read per partition.
    fn positions(&self) -> Vec<Position>;

    /// Events in the log not yet read, when known.
    fn lag(&self) -> Option<u64>;

    /// The latest instant before which every event the log had acknowledged has been
    /// returned by [`LogReader::poll`]; `None` until the reader has proven it. The
    /// proof is positive: a Kafka reader whose positions reached the high watermarks it
    /// fetched from a live broker at that instant, an embedded reader whose read,
    /// started at that instant, found no more rows. A reader cut off from the log
    /// proves nothing, so this stops advancing and a view fed by it goes stale.
    fn caught_up_at(&self) -> Option<Timestamp>;
}

/// Read-after-write for API instances that share one projection: several instances of
/// a region append to one log, but each reads the family state from the projection,
/// which a projector fills a moment later.
///
/// **Invariant**: once `await_projected(key)` returned `Ok`, the projection holds every
/// event with that partition key ([`Event::partition_key`]) that the log had
/// acknowledged when the call began, whichever instance appended it.
#[async_trait]
pub trait ProjectionFence: Send + Sync + std::fmt::Debug {
    async fn await_projected(&self, key: &str) -> Result<(), BackendError>;
}

/// Where the log ends, asked of the log itself: what a reader must have read to hold
/// every event the log had acknowledged when the call began.
#[async_trait]
pub trait LogEnd: Send + Sync + std::fmt::Debug {
    /// Per partition, the next offset a reader must have reached: every event the log
    /// acknowledged before the call lies below it (a partition with nothing left to
    /// read, retention having removed every event, needs nothing: offset 0). Always a
    /// live answer of the log, never a cached one: an error when the log cannot be
    /// reached, so that "caught up" is a proof.
    async fn end(&self) -> Result<Vec<Position>, BackendError>;
}

/// Opens readers on the log and knows consumer groups' checkpoints.
#[async_trait]
pub trait LogSource: Send + Sync + std::fmt::Debug {
    async fn reader(&self, start: StartFrom) -> Result<Box<dyn LogReader>, BackendError>;

    /// A consumer group's committed positions (next offset per partition); empty when
    /// the group never committed.
    async fn committed(&self, group: &str) -> Result<Vec<Position>, BackendError>;

    /// Where the log ends now: per partition, the offset after its newest event.
    /// `None` when the backend cannot tell without asking every partition's leader
    /// (a caller that needs it, such as the revocation stream, then serves nothing).
    async fn end(&self) -> Result<Option<Vec<Position>>, BackendError> {
        Ok(None)
    }
}

/// Where a reader that folds the log into a [`Projection`] starts: the store's snapshot
/// and a reader at the projector's (`group`'s) checkpoint, with those positions. The
/// checkpoint is read *before* the snapshot, so the snapshot holds at least everything
/// before it and the reader misses nothing; what both hold is applied twice, which
/// the join makes harmless.
pub async fn resume_after_projection(
    source: &dyn LogSource,
    store: &dyn ProjectionStore,
    group: &str,
) -> Result<(Projection, Box<dyn LogReader>, Vec<Position>), BackendError> {
    let positions = source.committed(group).await?;
    let snapshot = store.snapshot().await?;
    let start = if positions.is_empty() {
        StartFrom::Beginning
    } else {
        StartFrom::Positions(positions.clone())
    };
    let reader = source.reader(start).await?;
    Ok((snapshot, reader, positions))
}

/// The projected state (D4, D5): per-family state and per-subject revocations.
///
/// **Invariant**: `write` *merges* (joins) into what is stored; writing the same batch
/// twice, or batches in any order, leaves the same state.
#[async_trait]
pub trait ProjectionStore: Send + Sync + std::fmt::Debug {
    async fn write(&self, batch: &Projection) -> Result<(), BackendError>;
    async fn family(&self, id: SessionId) -> Result<Option<FamilyState>, BackendError>;
    async fn subject_revocation(
        &self,
        subject: &Subject,
    ) -> Result<Option<SubjectRevocation>, BackendError>;
    /// Everything still retained, for a validator's bootstrap.
    async fn snapshot(&self) -> Result<Projection, BackendError>;

    /// Keeps the events of a batch for [`HistorySource::history`], when the store is
    /// where history is read from. The embedded log is its own history: nothing to do.
    async fn record_history(&self, events: &[Event]) -> Result<(), BackendError> {
        let _ = events;
        Ok(())
    }

    /// What the projector calls per batch: keeps `events` for history and merges
    /// `batch`, like [`Self::record_history`] then [`Self::write`].
    ///
    /// `known` holds, for some families of the batch, the state the store holds for
    /// them now, as the caller last wrote it (the single writer of their log
    /// partition): a store may merge into those instead of reading the row back. It
    /// returns the states it now holds for the batch's families, when it knows them
    /// (empty when it does not), for the caller to pass as `known` next time.
    ///
    /// **Invariant**: as `write`, a merge: with `known` empty, or exactly what is
    /// stored, the stored state ends as stored ⊔ batch.
    async fn write_batch(
        &self,
        batch: &Projection,
        events: &[Event],
        known: &HashMap<SessionId, FamilyState>,
    ) -> Result<Vec<FamilyState>, BackendError> {
        let _ = known;
        self.record_history(events).await?;
        self.write(batch).await?;
        Ok(Vec::new())
    }
}

/// Reads one family's events back for the status endpoint and auditors.
#[async_trait]
pub trait HistorySource: Send + Sync + std::fmt::Debug {
    async fn history(&self, id: SessionId) -> Result<Vec<Event>, BackendError>;
}

/// Where the log's seals are kept (tamper evidence, see [`crate::seal`]).
///
/// **Invariant**: seals are append-only runs of new events; `put` of a seal with the
/// same (partition, first offset, last offset) replaces it, so a sealer that restarts
/// and seals a run again writes the same contents (the chain depends on the log alone).
#[async_trait]
pub trait SealStore: Send + Sync + std::fmt::Debug {
    async fn put(&self, seal: &Seal) -> Result<(), BackendError>;
    /// Every seal, ordered by partition and block.
    async fn seals(&self) -> Result<Vec<Seal>, BackendError>;
    /// The newest seal of each partition that has one.
    async fn newest(&self) -> Result<Vec<Seal>, BackendError>;
}

/// A Shared Signals stream as stored: its id, the receiver that owns it and its
/// configuration as the SSF crate wrote it (opaque here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStream {
    pub stream_id: String,
    pub receiver: String,
    pub config: String,
}

/// A Security Event Token waiting in a stream's queue, in delivery order (`seq`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedSet {
    pub seq: i64,
    pub jti: String,
    pub set: String,
}

/// Where Shared Signals streams and their undelivered events are kept (the projection
/// store). A queue is the durable position of its stream: a SET leaves it only when
/// the receiver acknowledged it (a 2xx to a push, an `ack` in a poll).
///
/// **Invariant**: `enqueue` of a `jti` already queued (or already acknowledged) for the
/// stream changes nothing, so redelivered log events never produce a second SET.
#[async_trait]
pub trait SsfStore: Send + Sync + std::fmt::Debug {
    async fn put_stream(&self, stream: &StoredStream) -> Result<(), BackendError>;
    async fn stream(&self, stream_id: &str) -> Result<Option<StoredStream>, BackendError>;
    async fn streams(&self) -> Result<Vec<StoredStream>, BackendError>;
    /// Deletes the stream and its queue; `false` when there was none.
    async fn delete_stream(&self, stream_id: &str) -> Result<bool, BackendError>;
    /// Appends SETs `(jti, set)` to the stream's queue, in order, skipping known jtis.
    async fn enqueue(&self, stream_id: &str, sets: &[(String, String)])
    -> Result<(), BackendError>;
    /// The oldest `max` SETs of the stream's queue.
    async fn pending(&self, stream_id: &str, max: usize) -> Result<Vec<QueuedSet>, BackendError>;
    /// Removes acknowledged SETs (unknown jtis are ignored).
    async fn ack(&self, stream_id: &str, jtis: &[String]) -> Result<(), BackendError>;

    /// Takes or renews, for `ttl`, the right to push the stream's queue: `true` when
    /// `holder` has it now. A store shared by several processes grants it to one
    /// holder at a time, so one process pushes each stream (in queue order); another
    /// takes over once the holder stopped renewing. A store only one process opens
    /// (the embedded one) grants it always.
    async fn hold_delivery(
        &self,
        _stream_id: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, BackendError> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_backend_error_says_whether_a_retry_can_help_and_keeps_its_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
        let e = BackendError::unavailable("kafka: delivery: no answer").with_source(cause);
        assert!(e.retryable());
        assert_eq!(
            e.to_string(),
            "backend unavailable: kafka: delivery: no answer"
        );
        let source = e.source().unwrap();
        assert_eq!(source.to_string(), "no answer");
        assert!(source.downcast_ref::<std::io::Error>().is_some());

        let corrupt = BackendError::corrupt("offset 7", "expected value");
        assert!(!corrupt.retryable());
        assert_eq!(
            corrupt.to_string(),
            "corrupt record at offset 7: expected value"
        );
        let refused = BackendError::other("cql: schema: invalid");
        assert!(!refused.retryable());
        assert_eq!(refused.to_string(), "cql: schema: invalid");
        assert!(refused.source().is_none());
    }
}
