//! Shared Signals streams and their queues ([`SsfStore`]), with the contract of the
//! embedded store, in four tables:
//!
//! - `ssf_streams`: one row per stream (receiver, configuration).
//! - `ssf_sequences`: the next sequence number of each stream, moved forward only by
//!   compare-and-set (a lightweight transaction), so numbers are never handed out
//!   twice and a block taken later is always higher: the queue keeps the order in
//!   which SETs were enqueued, whichever process enqueued them.
//! - `ssf_jtis`: every SET ever queued for a stream, keyed by (stream, `jti`) and
//!   claimed with `INSERT ... IF NOT EXISTS`. The row is the SET's identity: it holds
//!   its sequence number, its body until acknowledged, the write time of its queue row
//!   and `acked`. Spread over [`JTI_BUCKETS`] partitions per stream, so a long-lived
//!   stream makes no huge partition and concurrent claims rarely contend.
//! - `ssf_queue`: the undelivered SETs of a stream, clustered by sequence number.
//!
//! **Invariant**: one `jti` is at most one queue row, ever, for a stream. A claim is a
//! Paxos round, so of two processes (or a redelivered log event) enqueueing the same
//! `jti` exactly one claims it with its sequence number; every other enqueue of that
//! `jti` finds the claim and only (re)writes the queue row the claim describes — same
//! sequence number, same body, same write timestamp (`USING TIMESTAMP written_at`) —
//! which finishes the work of a claimer that stopped between the claim and the queue
//! write, and otherwise changes nothing. Acknowledging marks the claim `acked` and
//! then deletes the queue row at `written_at + 1`, a timestamp that shadows every
//! rewrite of that row whatever the clocks of the processes say; a claim marked
//! `acked` is never queued again.
//!
//! One enqueuer's new SETs get consecutive numbers in the order given (the fan-out
//! enqueues in log order). When several enqueue the same SETs at once, each SET keeps
//! the number of whichever claim won it, so their order may interleave.

use std::collections::HashSet;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use ledger_core::ports::{BackendError, QueuedSet, SsfStore, StoredStream};
use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Row;

use crate::{MAX_IN_FLIGHT, ScyllaStore, prepare};

/// Partitions per stream in `ssf_jtis` (a stable hash of the `jti` picks one).
const JTI_BUCKETS: i32 = 16;

/// Compare-and-set attempts on a stream's sequence before giving up (contention: many
/// processes enqueueing to one stream at the same instant).
const MAX_CAS_ATTEMPTS: usize = 32;

/// The statements of the Shared Signals tables.
#[derive(Debug)]
pub(crate) struct Statements {
    put_stream: PreparedStatement,
    get_stream: PreparedStatement,
    scan_streams: PreparedStatement,
    delete_stream: PreparedStatement,
    get_sequence: PreparedStatement,
    create_sequence: PreparedStatement,
    advance_sequence: PreparedStatement,
    delete_sequence: PreparedStatement,
    get_jti: PreparedStatement,
    claim_jti: PreparedStatement,
    ack_jti: PreparedStatement,
    delete_jtis: PreparedStatement,
    put_queued: PreparedStatement,
    delete_queued: PreparedStatement,
    pending: PreparedStatement,
    delete_queue: PreparedStatement,
    take_lease: PreparedStatement,
    renew_lease: PreparedStatement,
    delete_lease: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(session: &Session, ks: &str) -> Result<Self, BackendError> {
        Ok(Statements {
            put_stream: prepare(
                session,
                format!("INSERT INTO {ks}.ssf_streams (stream_id, receiver, config) VALUES (?, ?, ?)"),
            )
            .await?,
            get_stream: prepare(
                session,
                format!("SELECT stream_id, receiver, config FROM {ks}.ssf_streams WHERE stream_id = ?"),
            )
            .await?,
            scan_streams: prepare(
                session,
                format!("SELECT stream_id, receiver, config FROM {ks}.ssf_streams"),
            )
            .await?,
            delete_stream: prepare(
                session,
                format!("DELETE FROM {ks}.ssf_streams WHERE stream_id = ?"),
            )
            .await?,
            get_sequence: prepare(
                session,
                format!("SELECT next_seq FROM {ks}.ssf_sequences WHERE stream_id = ?"),
            )
            .await?,
            create_sequence: prepare(
                session,
                format!(
                    "INSERT INTO {ks}.ssf_sequences (stream_id, next_seq) VALUES (?, ?) IF NOT EXISTS"
                ),
            )
            .await?,
            advance_sequence: prepare(
                session,
                format!(
                    "UPDATE {ks}.ssf_sequences SET next_seq = ? WHERE stream_id = ? IF next_seq = ?"
                ),
            )
            .await?,
            delete_sequence: prepare(
                session,
                format!("DELETE FROM {ks}.ssf_sequences WHERE stream_id = ?"),
            )
            .await?,
            take_lease: prepare(
                session,
                format!(
                    "INSERT INTO {ks}.ssf_leases (stream_id, holder) VALUES (?, ?) IF NOT EXISTS USING TTL ?"
                ),
            )
            .await?,
            renew_lease: prepare(
                session,
                format!(
                    "UPDATE {ks}.ssf_leases USING TTL ? SET holder = ? WHERE stream_id = ? IF holder = ?"
                ),
            )
            .await?,
            delete_lease: prepare(
                session,
                format!("DELETE FROM {ks}.ssf_leases WHERE stream_id = ?"),
            )
            .await?,
            get_jti: prepare(
                session,
                format!(
                    "SELECT seq, written_at, body, acked FROM {ks}.ssf_jtis \
                     WHERE stream_id = ? AND bucket = ? AND jti = ?"
                ),
            )
            .await?,
            claim_jti: prepare(
                session,
                format!(
                    "INSERT INTO {ks}.ssf_jtis (stream_id, bucket, jti, seq, written_at, body) \
                     VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
            )
            .await?,
            ack_jti: prepare(
                session,
                format!(
                    "UPDATE {ks}.ssf_jtis SET acked = true, body = null \
                     WHERE stream_id = ? AND bucket = ? AND jti = ?"
                ),
            )
            .await?,
            delete_jtis: prepare(
                session,
                format!("DELETE FROM {ks}.ssf_jtis WHERE stream_id = ? AND bucket IN ?"),
            )
            .await?,
            put_queued: prepare(
                session,
                format!(
                    "INSERT INTO {ks}.ssf_queue (stream_id, seq, jti, body) VALUES (?, ?, ?, ?) \
                     USING TIMESTAMP ?"
                ),
            )
            .await?,
            delete_queued: prepare(
                session,
                format!(
                    "DELETE FROM {ks}.ssf_queue USING TIMESTAMP ? WHERE stream_id = ? AND seq = ?"
                ),
            )
            .await?,
            pending: prepare(
                session,
                format!(
                    "SELECT seq, jti, body FROM {ks}.ssf_queue WHERE stream_id = ? \
                     ORDER BY seq ASC LIMIT ?"
                ),
            )
            .await?,
            delete_queue: prepare(
                session,
                format!("DELETE FROM {ks}.ssf_queue WHERE stream_id = ?"),
            )
            .await?,
        })
    }
}

/// A claimed `jti` as `ssf_jtis` holds it.
#[derive(Debug)]
struct Claim {
    seq: i64,
    /// The write timestamp of its queue row (microseconds).
    written_at: i64,
    /// Cleared once acknowledged.
    body: Option<String>,
    acked: bool,
}

/// The `ssf_jtis` partition of a `jti` within its stream: FNV-1a, stable across
/// builds and processes (the standard library's hasher is not).
fn bucket(jti: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in jti.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::try_from(hash % JTI_BUCKETS.unsigned_abs()).unwrap_or(0)
}

impl ScyllaStore {
    fn ssf(&self) -> &Statements {
        &self.inner.st.ssf
    }

    /// Runs a lightweight transaction and says whether it was applied (the first
    /// column of its answer, `[applied]`, in Cassandra and ScyllaDB alike).
    async fn applied(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<bool, BackendError> {
        let rows = self
            .execute(what, statement, values)
            .await?
            .into_rows_result()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        let row: Row = rows
            .first_row()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        row.columns
            .first()
            .and_then(|c| c.as_ref())
            .and_then(|v| v.as_boolean())
            .ok_or_else(|| BackendError::other(format!("cql: {what}: no [applied] column")))
    }

    async fn claim_of(&self, stream_id: &str, jti: &str) -> Result<Option<Claim>, BackendError> {
        let what = "read ssf jti";
        let rows = self
            .execute(what, &self.ssf().get_jti, (stream_id, bucket(jti), jti))
            .await?
            .into_rows_result()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        type Columns = (Option<i64>, Option<i64>, Option<String>, Option<bool>);
        let Some((seq, written_at, body, acked)) = rows
            .maybe_first_row::<Columns>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
        else {
            return Ok(None);
        };
        match (seq, written_at) {
            (Some(seq), Some(written_at)) => Ok(Some(Claim {
                seq,
                written_at,
                body,
                acked: acked.unwrap_or(false),
            })),
            // An acknowledgement racing `delete_stream` can leave a bare row: as good
            // as acknowledged.
            _ if acked == Some(true) => Ok(Some(Claim {
                seq: 0,
                written_at: 0,
                body: None,
                acked: true,
            })),
            _ => Err(BackendError::corrupt(
                format!("ssf_jtis/{stream_id}/{jti}"),
                "claim without a sequence number",
            )),
        }
    }

    /// Takes `n` consecutive sequence numbers of the stream, returning the first: a
    /// compare-and-set on `ssf_sequences`, retried while other enqueues win.
    async fn allocate(&self, stream_id: &str, n: usize) -> Result<i64, BackendError> {
        let n = i64::try_from(n)
            .map_err(|_| BackendError::other(format!("cannot queue {n} sets at once")))?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let what = "read ssf sequence";
            let current = self
                .execute(what, &self.ssf().get_sequence, (stream_id,))
                .await?
                .into_rows_result()
                .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
                .maybe_first_row::<(Option<i64>,)>()
                .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
                .and_then(|(next,)| next);
            let (applied, first) = match current {
                None => (
                    self.applied(
                        "create ssf sequence",
                        &self.ssf().create_sequence,
                        (stream_id, 1 + n),
                    )
                    .await?,
                    1,
                ),
                Some(next) => (
                    self.applied(
                        "advance ssf sequence",
                        &self.ssf().advance_sequence,
                        (next + n, stream_id, next),
                    )
                    .await?,
                    next,
                ),
            };
            if applied {
                return Ok(first);
            }
        }
        Err(BackendError::unavailable(format!(
            "cql: ssf sequence of stream {stream_id}: still contended after {MAX_CAS_ATTEMPTS} attempts"
        )))
    }

    /// Claims `jti` with `seq` and queues it; when another enqueue claimed it first,
    /// queues what that claim says (see the module's invariant).
    async fn claim(
        &self,
        stream_id: &str,
        jti: &str,
        set: &str,
        seq: i64,
    ) -> Result<(), BackendError> {
        let written_at = ledger_clock::now().unix_micros();
        let claimed = self
            .applied(
                "claim ssf jti",
                &self.ssf().claim_jti,
                (stream_id, bucket(jti), jti, seq, written_at, set),
            )
            .await?;
        if claimed {
            return self.put_queued(stream_id, jti, seq, set, written_at).await;
        }
        match self.claim_of(stream_id, jti).await? {
            Some(claim) => self.requeue(stream_id, jti, claim).await,
            // Deleted with its stream meanwhile.
            None => Ok(()),
        }
    }

    /// Writes the queue row a claim describes, unless it was acknowledged.
    async fn requeue(&self, stream_id: &str, jti: &str, claim: Claim) -> Result<(), BackendError> {
        match (claim.acked, claim.body) {
            (false, Some(body)) => {
                self.put_queued(stream_id, jti, claim.seq, &body, claim.written_at)
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn put_queued(
        &self,
        stream_id: &str,
        jti: &str,
        seq: i64,
        set: &str,
        written_at: i64,
    ) -> Result<(), BackendError> {
        self.execute(
            "queue ssf set",
            &self.ssf().put_queued,
            (stream_id, seq, jti, set, written_at),
        )
        .await
        .map(drop)
    }

    async fn ack_one(&self, stream_id: &str, jti: &str) -> Result<(), BackendError> {
        let Some(claim) = self.claim_of(stream_id, jti).await? else {
            return Ok(());
        };
        if !claim.acked {
            self.execute(
                "acknowledge ssf jti",
                &self.ssf().ack_jti,
                (stream_id, bucket(jti), jti),
            )
            .await?;
        }
        if claim.written_at > 0 {
            self.execute(
                "dequeue ssf set",
                &self.ssf().delete_queued,
                (claim.written_at + 1, stream_id, claim.seq),
            )
            .await?;
        }
        Ok(())
    }
}

fn stored_stream((stream_id, receiver, config): (String, String, String)) -> StoredStream {
    StoredStream {
        stream_id,
        receiver,
        config,
    }
}

/// Shared Signals streams and queues; see the module documentation for how
/// [`SsfStore::enqueue`] stays idempotent across processes.
#[async_trait]
impl SsfStore for ScyllaStore {
    async fn put_stream(&self, stream: &StoredStream) -> Result<(), BackendError> {
        self.execute(
            "write ssf stream",
            &self.ssf().put_stream,
            (&stream.stream_id, &stream.receiver, &stream.config),
        )
        .await
        .map(drop)
    }

    async fn stream(&self, stream_id: &str) -> Result<Option<StoredStream>, BackendError> {
        let what = "read ssf stream";
        let row = self
            .execute(what, &self.ssf().get_stream, (stream_id,))
            .await?
            .into_rows_result()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
            .maybe_first_row::<(String, String, String)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        Ok(row.map(stored_stream))
    }

    async fn streams(&self) -> Result<Vec<StoredStream>, BackendError> {
        let what = "scan ssf streams";
        let pager = self
            .inner
            .session
            .execute_iter(self.ssf().scan_streams.clone(), ())
            .await
            .map_err(|e| BackendError::unavailable(format!("cql: {what}: {e}")).with_source(e))?;
        let mut streams: Vec<StoredStream> = pager
            .rows_stream::<(String, String, String)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
            .map_ok(stored_stream)
            .try_collect()
            .await
            .map_err(|e| BackendError::unavailable(format!("cql: {what}: {e}")).with_source(e))?;
        streams.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        Ok(streams)
    }

    /// The stream row first (the fan-out and the pusher stop seeing it), then its
    /// queue, its claims and its sequence.
    async fn delete_stream(&self, stream_id: &str) -> Result<bool, BackendError> {
        let existed = self.stream(stream_id).await?.is_some();
        let st = self.ssf();
        self.execute("delete ssf stream", &st.delete_stream, (stream_id,))
            .await?;
        self.execute("delete ssf queue", &st.delete_queue, (stream_id,))
            .await?;
        let buckets: Vec<i32> = (0..JTI_BUCKETS).collect();
        self.execute("delete ssf jtis", &st.delete_jtis, (stream_id, buckets))
            .await?;
        self.execute("delete ssf sequence", &st.delete_sequence, (stream_id,))
            .await?;
        self.execute("delete ssf lease", &st.delete_lease, (stream_id,))
            .await?;
        Ok(existed)
    }

    /// Reads the claims of `sets` (many at once), takes one block of sequence numbers
    /// for those not yet claimed, then claims and queues them one after the other, in
    /// order; claimed ones are only re-queued as claimed (nothing changes unless a
    /// claimer stopped half-way), acknowledged ones are skipped.
    async fn enqueue(
        &self,
        stream_id: &str,
        sets: &[(String, String)],
    ) -> Result<(), BackendError> {
        let mut seen = HashSet::new();
        let sets: Vec<&(String, String)> = sets
            .iter()
            .filter(|(jti, _)| seen.insert(jti.as_str()))
            .collect();
        // Collected first, as in `merge_batch`, so that the future stays `Send`.
        let reads: Vec<_> = sets
            .iter()
            .map(|(jti, _)| self.claim_of(stream_id, jti))
            .collect();
        let claims: Vec<Option<Claim>> = stream::iter(reads)
            .buffered(MAX_IN_FLIGHT)
            .try_collect()
            .await?;
        let unclaimed = claims.iter().filter(|c| c.is_none()).count();
        let mut seq = match unclaimed {
            0 => 0,
            n => self.allocate(stream_id, n).await?,
        };
        for ((jti, set), claim) in sets.into_iter().zip(claims) {
            match claim {
                Some(claim) => self.requeue(stream_id, jti, claim).await?,
                None => {
                    self.claim(stream_id, jti, set, seq).await?;
                    seq += 1;
                }
            }
        }
        Ok(())
    }

    async fn pending(&self, stream_id: &str, max: usize) -> Result<Vec<QueuedSet>, BackendError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let what = "read ssf queue";
        let limit = i32::try_from(max).unwrap_or(i32::MAX);
        let rows = self
            .execute(what, &self.ssf().pending, (stream_id, limit))
            .await?
            .into_rows_result()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        rows.rows::<(i64, String, String)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
            .map(|row| {
                row.map(|(seq, jti, set)| QueuedSet { seq, jti, set })
                    .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))
            })
            .collect()
    }

    async fn ack(&self, stream_id: &str, jtis: &[String]) -> Result<(), BackendError> {
        let acks: Vec<_> = jtis
            .iter()
            .map(|jti| self.ack_one(stream_id, jti))
            .collect();
        crate::bounded(acks).await
    }

    /// A lease row per stream, written with a TTL: the holder renews it with a
    /// compare-and-set on itself; anyone takes it with `IF NOT EXISTS` once it expired.
    async fn hold_delivery(
        &self,
        stream_id: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, BackendError> {
        let ttl = i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX);
        let st = self.ssf();
        if self
            .applied(
                "renew ssf lease",
                &st.renew_lease,
                (ttl, holder, stream_id, holder),
            )
            .await?
        {
            return Ok(true);
        }
        self.applied("take ssf lease", &st.take_lease, (stream_id, holder, ttl))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_always_lands_in_the_same_bucket_within_range() {
        // Fixed values: the bucket is part of the stored key, it must never change.
        assert_eq!(
            bucket(""),
            i32::try_from(0x811c_9dc5_u32 % 16).unwrap_or(-1)
        );
        assert_eq!(
            bucket("a"),
            i32::try_from(0xe40c_292c_u32 % 16).unwrap_or(-1)
        );
        for i in 0..1000 {
            let b = bucket(&format!("jti-{i}"));
            assert!((0..JTI_BUCKETS).contains(&b));
        }
    }
}
