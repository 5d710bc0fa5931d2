//! The ScyllaDB (CQL) adapter: the projection (D4, D5) and the families' history.
//!
//! [`ScyllaStore`] implements [`ProjectionStore`], [`HistorySource`], [`SealStore`]
//! and `SsfStore` (module `ssf`) with the same
//! semantics as the embedded SQLite store: `write` *merges* into what is stored, reads
//! treat a row past its retain time as absent. Every row is written `USING TTL` the
//! seconds until its retain time (rounded up), so the database drops revocation state
//! exactly when no token it governs can be accepted any more (I6); the TTL tables use
//! time-window compaction.
//!
//! Only CQL that Apache Cassandra 4+/5 and ScyllaDB both accept is used (tests run
//! against Cassandra).

mod schema;
mod ssf;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use ledger_core::ports::{BackendError, HistorySource, ProjectionStore, SealStore};
use ledger_core::seal::Seal;
use ledger_core::{
    Event, EventKind, FamilyState, Projection, SessionId, Subject, SubjectRevocation, Timestamp,
};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tracing::{debug, info};
use uuid::Uuid;

/// The replication map used when none is configured: one copy, for development.
pub const DEFAULT_REPLICATION: &str = "{'class': 'SimpleStrategy', 'replication_factor': 1}";

/// How many requests (a read, a family's batch of writes) run at once.
const MAX_IN_FLIGHT: usize = 64;

/// Families read back per request (`WHERE session_id IN ?`).
const READ_CHUNK: usize = 50;

/// The largest TTL CQL accepts (20 years).
const MAX_TTL_SECONDS: i64 = 630_720_000;

/// How to reach the cluster and where the tables live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Created when absent; letters, digits and `_`, starting with a letter, at most
    /// 48 characters.
    pub keyspace: String,
    /// The CQL replication map of the keyspace when it is created, e.g.
    /// [`DEFAULT_REPLICATION`] or
    /// `{'class': 'NetworkTopologyStrategy', 'dc1': 3}`. Trusted configuration: it is
    /// spliced into the statement as is.
    pub replication: String,
    /// Bound on one request, retries included.
    pub request_timeout: Duration,
}

impl ScyllaConfig {
    /// A configuration with [`DEFAULT_REPLICATION`] and a 10 s request timeout.
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> Self {
        ScyllaConfig {
            nodes,
            keyspace: keyspace.into(),
            replication: DEFAULT_REPLICATION.to_owned(),
            request_timeout: Duration::from_secs(10),
        }
    }

    fn validate(&self) -> Result<(), BackendError> {
        if self.nodes.is_empty() {
            return Err(BackendError::other("cql nodes must not be empty"));
        }
        let ks = &self.keyspace;
        let valid = ks.len() <= 48
            && ks.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(BackendError::other(format!(
                "cql keyspace {ks:?} must be letters, digits and '_', start with a letter, at most 48 characters"
            )));
        }
        Ok(())
    }
}

/// The projection and the families' history in a CQL database. Cheap to clone; clones
/// share one session (a connection pool per node).
#[derive(Clone, Debug)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    session: Session,
    keyspace: String,
    st: Statements,
}

/// Every statement the store runs, prepared once at connect.
#[derive(Debug)]
struct Statements {
    get_family: PreparedStatement,
    get_families: PreparedStatement,
    put_family: PreparedStatement,
    scan_families: PreparedStatement,
    get_subject: PreparedStatement,
    put_subject: PreparedStatement,
    scan_subjects: PreparedStatement,
    put_event: PreparedStatement,
    family_events: PreparedStatement,
    put_seal: PreparedStatement,
    scan_seals: PreparedStatement,
    seal_partitions: PreparedStatement,
    newest_seal: PreparedStatement,
    ssf: ssf::Statements,
}

impl ScyllaStore {
    /// Connects, creates the keyspace and tables when absent (running the schema
    /// migrations not yet applied) and prepares the statements.
    pub async fn connect(config: ScyllaConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(config.request_timeout))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.request_timeout)
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(|e| BackendError::unavailable(format!("cql: connect: {e}")).with_source(e))?;
        schema::migrate(&session, &config.keyspace, &config.replication).await?;
        let st = Statements::prepare(&session, &config.keyspace).await?;
        info!(keyspace = %config.keyspace, nodes = ?config.nodes, "cql store ready");
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                keyspace: config.keyspace,
                st,
            }),
        })
    }

    pub fn keyspace(&self) -> &str {
        &self.inner.keyspace
    }

    /// Records family events for [`HistorySource::history`], each row kept until
    /// [`history_retain_until`] of its event. Subject-wide events are not recorded per
    /// family. Idempotent: an event recorded twice is one row.
    ///
    /// Not part of [`ProjectionStore::write`]: the projector calls it (through
    /// [`ProjectionStore::record_history`]) with the events of the batch it writes.
    pub async fn record_events(&self, events: &[Event]) -> Result<(), BackendError> {
        let now = ledger_clock::now();
        // Collected first, as in `write`, so that the future stays `Send`.
        let inserts: Vec<_> = events
            .iter()
            .map(|event| self.record_event(event, now))
            .collect();
        bounded(inserts).await
    }

    async fn record_event(&self, event: &Event, now: Timestamp) -> Result<(), BackendError> {
        let (Some(session_id), Some(until)) = (event.session_id, history_retain_until(event))
        else {
            return Ok(());
        };
        let Some(ttl) = ttl_seconds(until, now) else {
            return Ok(());
        };
        let body = String::from_utf8(event.to_json())
            .map_err(|e| BackendError::other(format!("event json: {e}")).with_source(e))?;
        let values = (
            *session_id.as_uuid(),
            event.occurred_at.unix_micros(),
            *event.event_id.as_uuid(),
            body,
            ttl,
        );
        self.execute("record event", &self.inner.st.put_event, values)
            .await
            .map(drop)
    }

    async fn execute(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<scylla::response::query_result::QueryResult, BackendError> {
        self.inner
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| execution_error(what, e))
    }

    /// The `state` column of the single row `statement` selects, if any.
    async fn state_of(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<String>, BackendError> {
        let rows = self
            .execute(what, statement, values)
            .await?
            .into_rows_result()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        let row = rows
            .maybe_first_row::<(String,)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        Ok(row.map(|(state,)| state))
    }

    /// Every `state` of a table (paged), decoded.
    async fn scan<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        statement: &PreparedStatement,
    ) -> Result<Vec<T>, BackendError> {
        let what = format!("scan {table}");
        let pager = self
            .inner
            .session
            .execute_iter(statement.clone(), ())
            .await
            .map_err(|e| BackendError::unavailable(format!("cql: {what}: {e}")).with_source(e))?;
        let rows: Vec<(String,)> = pager
            .rows_stream::<(String,)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
            .try_collect()
            .await
            .map_err(|e| BackendError::unavailable(format!("cql: {what}: {e}")).with_source(e))?;
        rows.iter().map(|(state,)| decode(state, table)).collect()
    }

    /// [`ProjectionStore::write_batch`]: reads the families not in `known` (many
    /// per request), merges, then writes each family's history rows and changed
    /// state as one unlogged batch (a single partition key, so a single mutation),
    /// at most [`MAX_IN_FLIGHT`] requests at once. Events of families not in `batch`
    /// are recorded too. Returns the state now stored for each family of `batch`.
    ///
    /// A plain read-modify-write, no lightweight transaction (a Paxos round per
    /// write): there is a single writer per family, the projector instance consuming
    /// that family's log partition (the log is keyed by family id), so no other write
    /// lands between the read and the write. This relies on a projector finishing its
    /// writes of a partition before the partition is handed to another instance; two
    /// writers racing on one family would be last-write-wins.
    async fn merge_batch(
        &self,
        batch: &Projection,
        events: &[Event],
        known: &HashMap<SessionId, FamilyState>,
    ) -> Result<Vec<FamilyState>, BackendError> {
        let now = ledger_clock::now();
        let unknown: Vec<Uuid> = batch
            .families()
            .filter(|f| !known.contains_key(&f.session_id))
            .map(|f| *f.session_id.as_uuid())
            .collect();
        let reads: Vec<_> = unknown
            .chunks(READ_CHUNK)
            .map(|ids| self.read_families(ids.to_vec()))
            .collect();
        let mut stored: HashMap<Uuid, FamilyState> = HashMap::with_capacity(unknown.len());
        let mut read = stream::iter(reads).buffer_unordered(MAX_IN_FLIGHT);
        while let Some(found) = read.next().await {
            stored.extend(found?);
        }
        drop(read);

        let mut history: HashMap<Uuid, Vec<Row>> = HashMap::new();
        for event in events {
            if let Some(row) = self.history_row(event, now)? {
                history.entry(row.0).or_default().push(row.1);
            }
        }
        let mut now_stored = Vec::with_capacity(batch.families().len());
        let mut writes: Vec<(Uuid, Vec<Row>)> = Vec::with_capacity(history.len() + unknown.len());
        for family in batch.families() {
            let id = *family.session_id.as_uuid();
            let before = known.get(&family.session_id).or_else(|| stored.get(&id));
            let merged = match before {
                None => Some(family.clone()),
                Some(before) => {
                    let mut joined = before.clone();
                    joined.merge(family);
                    // Nothing new (a duplicate or a replay): the row and its TTL stand.
                    (joined != *before).then_some(joined)
                }
            };
            let mut rows = history.remove(&id).unwrap_or_default();
            match merged {
                Some(merged) => {
                    // Past its retain time the row would be invisible: not written.
                    match ttl_seconds(merged.retain_until, now) {
                        Some(ttl) => rows.push(Row::Family((id, encode(&merged), ttl))),
                        None => debug!(session_id = %id, "family past its retention, not written"),
                    }
                    now_stored.push(merged);
                }
                None => now_stored.extend(before.cloned()),
            }
            if !rows.is_empty() {
                writes.push((id, rows));
            }
        }
        // History of families the batch does not change (none from a projector, whose
        // batch folds these very events; kept for other callers).
        writes.extend(history);
        let families = bounded(writes.into_iter().map(|(_, rows)| self.write_rows(rows)));
        let subjects: Vec<_> = batch
            .subjects()
            .map(|s| self.merge_subject(s, now))
            .collect();
        futures::try_join!(families, bounded(subjects))?;
        Ok(now_stored)
    }

    /// The stored states of these families (absent rows are left out).
    async fn read_families(
        &self,
        ids: Vec<Uuid>,
    ) -> Result<Vec<(Uuid, FamilyState)>, BackendError> {
        let what = "read families";
        let rows = self
            .execute(what, &self.inner.st.get_families, (ids,))
            .await?
            .into_rows_result()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        let rows = rows
            .rows::<(Uuid, String)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, state) =
                row.map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
            out.push((id, decode(&state, &format!("families/{id}"))?));
        }
        Ok(out)
    }

    /// The history row of a family event still worth keeping.
    fn history_row(
        &self,
        event: &Event,
        now: Timestamp,
    ) -> Result<Option<(Uuid, Row)>, BackendError> {
        let (Some(session_id), Some(until)) = (event.session_id, history_retain_until(event))
        else {
            return Ok(None);
        };
        let Some(ttl) = ttl_seconds(until, now) else {
            return Ok(None);
        };
        let body = String::from_utf8(event.to_json())
            .map_err(|e| BackendError::other(format!("event json: {e}")).with_source(e))?;
        let id = *session_id.as_uuid();
        Ok(Some((
            id,
            Row::Event((
                id,
                event.occurred_at.unix_micros(),
                *event.event_id.as_uuid(),
                body,
                ttl,
            )),
        )))
    }

    /// Writes rows of one family: a single statement, or an unlogged batch.
    async fn write_rows(&self, mut rows: Vec<Row>) -> Result<(), BackendError> {
        if rows.len() == 1
            && let Some(row) = rows.pop()
        {
            let statement = match &row {
                Row::Family(_) => &self.inner.st.put_family,
                Row::Event(_) => &self.inner.st.put_event,
            };
            return self.execute("write family", statement, row).await.map(drop);
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        // Upserts of whole rows: safe to retry.
        batch.set_is_idempotent(true);
        for row in &rows {
            batch.append_statement(match row {
                Row::Family(_) => self.inner.st.put_family.clone(),
                Row::Event(_) => self.inner.st.put_event.clone(),
            });
        }
        self.inner
            .session
            .batch(&batch, rows)
            .await
            .map(drop)
            .map_err(|e| execution_error("write family batch", e))
    }

    /// Merges one subject-wide revocation into its stored row (one writer per subject:
    /// the partition its key `subject:<sub>` maps to).
    async fn merge_subject(
        &self,
        subject: &SubjectRevocation,
        now: Timestamp,
    ) -> Result<(), BackendError> {
        let key = subject.subject.as_str();
        let stored = self
            .state_of("read subject", &self.inner.st.get_subject, (key,))
            .await?;
        let merged = match &stored {
            None => subject.clone(),
            Some(stored) => {
                let stored: SubjectRevocation = decode(stored, &format!("subjects/{key}"))?;
                let mut joined = stored.clone();
                joined.merge(subject);
                if joined == stored {
                    return Ok(());
                }
                joined
            }
        };
        let Some(ttl) = ttl_seconds(merged.keep_until, now) else {
            debug!(subject = %key, "subject revocation past its retention, not written");
            return Ok(());
        };
        self.execute(
            "write subject",
            &self.inner.st.put_subject,
            (key, encode(&merged), ttl),
        )
        .await
        .map(drop)
    }
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Self, BackendError> {
        let prepare = |cql: String| prepare(session, cql);
        Ok(Statements {
            get_family: prepare(format!(
                "SELECT state FROM {ks}.families WHERE session_id = ?"
            ))
            .await?,
            get_families: prepare(format!(
                "SELECT session_id, state FROM {ks}.families WHERE session_id IN ?"
            ))
            .await?,
            put_family: prepare(format!(
                "INSERT INTO {ks}.families (session_id, state) VALUES (?, ?) USING TTL ?"
            ))
            .await?,
            scan_families: prepare(format!("SELECT state FROM {ks}.families")).await?,
            get_subject: prepare(format!("SELECT state FROM {ks}.subjects WHERE subject = ?"))
                .await?,
            put_subject: prepare(format!(
                "INSERT INTO {ks}.subjects (subject, state) VALUES (?, ?) USING TTL ?"
            ))
            .await?,
            scan_subjects: prepare(format!("SELECT state FROM {ks}.subjects")).await?,
            put_event: prepare(format!(
                "INSERT INTO {ks}.family_events (session_id, occurred_at, event_id, body) \
                 VALUES (?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            family_events: prepare(format!(
                "SELECT body FROM {ks}.family_events WHERE session_id = ?"
            ))
            .await?,
            put_seal: prepare(format!(
                "INSERT INTO {ks}.seals (partition, first_offset, last_offset, body) \
                 VALUES (?, ?, ?, ?)"
            ))
            .await?,
            scan_seals: prepare(format!("SELECT body FROM {ks}.seals")).await?,
            seal_partitions: prepare(format!("SELECT DISTINCT partition FROM {ks}.seals")).await?,
            newest_seal: prepare(format!(
                "SELECT body FROM {ks}.seals WHERE partition = ? \
                 ORDER BY first_offset DESC, last_offset DESC LIMIT 1"
            ))
            .await?,
            ssf: ssf::Statements::prepare(session, ks).await?,
        })
    }
}

/// Prepares one statement, marked idempotent: every statement of the store is an
/// upsert of whole rows or cells, a delete or a read, or a lightweight transaction
/// whose caller reads what it finds when it was not applied (`ssf`), so all are safe
/// to retry.
async fn prepare(session: &Session, cql: String) -> Result<PreparedStatement, BackendError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|e| BackendError::unavailable(format!("cql: prepare: {e}")).with_source(e))?;
    statement.set_is_idempotent(true);
    Ok(statement)
}

/// Until when a family event is kept in the history: its own retain time
/// (`retain_until`, or `keep_until` for a revocation), and at least until the session's
/// absolute deadline. A family's retain time grows with every refresh, but rows already
/// written keep their TTL; the deadline is the one bound every event of the family
/// shares, so the first events stay readable while the family can still be active.
/// `None` for subject-wide events.
pub fn history_retain_until(event: &Event) -> Option<Timestamp> {
    event.session_id?;
    let (own, window) = match &event.kind {
        EventKind::SessionIssued(e) => (e.retain_until, Some(e.session)),
        EventKind::SessionRefreshed(e) => (e.retain_until, Some(e.session)),
        EventKind::SessionRevokedAll(e) => (e.keep_until, e.session),
    };
    Some(window.map_or(own, |w| own.max(w.expires_at)))
}

/// The TTL that makes a row vanish at `until`, never before: `None` when `until` has
/// passed, else at least 1 s.
///
/// The database counts a TTL from the *whole second* it processes the write in (its
/// local deletion time is `floor(now) + ttl`), so the TTL runs from `floor(now)` to
/// `ceil(until)`; `ceil(until - now)` would let a row written late in a second expire
/// up to a second early.
fn ttl_seconds(until: Timestamp, now: Timestamp) -> Option<i32> {
    if until <= now {
        return None;
    }
    let seconds = until.unix_seconds_ceil().saturating_sub(now.unix_seconds());
    i32::try_from(seconds.clamp(1, MAX_TTL_SECONDS)).ok()
}

/// One row of a family's partition: its state or one of its history events.
enum Row {
    /// `(session_id, state, ttl)` into `families`.
    Family((Uuid, String, i32)),
    /// `(session_id, occurred_at, event_id, body, ttl)` into `family_events`.
    Event((Uuid, i64, Uuid, String, i32)),
}

impl SerializeRow for Row {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        match self {
            Row::Family(values) => values.serialize(ctx, writer),
            Row::Event(values) => values.serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// Runs the operations, at most [`MAX_IN_FLIGHT`] at once; the first error wins.
async fn bounded<F>(operations: impl IntoIterator<Item = F>) -> Result<(), BackendError>
where
    F: Future<Output = Result<(), BackendError>>,
{
    stream::iter(operations)
        .buffer_unordered(MAX_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(json: &str, position: &str) -> Result<T, BackendError> {
    serde_json::from_str(json)
        .map_err(|e| BackendError::corrupt(position.to_owned(), e.to_string()).with_source(e))
}

/// Statements the database refused as invalid are bugs or misconfiguration
/// ([`BackendError::Other`]); everything else (timeouts, unavailable replicas, broken
/// connections, overload) can succeed later ([`BackendError::Unavailable`]).
fn execution_error(what: &str, e: ExecutionError) -> BackendError {
    let message = format!("cql: {what}: {e}");
    let error = match &e {
        ExecutionError::BadQuery(_)
        | ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::SyntaxError
            | DbError::Invalid
            | DbError::Unauthorized
            | DbError::AuthenticationError
            | DbError::ConfigError
            | DbError::AlreadyExists { .. },
            _,
        )) => BackendError::other(message),
        _ => BackendError::unavailable(message),
    };
    error.with_source(e)
}

#[async_trait]
impl ProjectionStore for ScyllaStore {
    async fn write(&self, batch: &Projection) -> Result<(), BackendError> {
        self.merge_batch(batch, &[], &HashMap::new())
            .await
            .map(drop)
    }

    /// One request per family: an unlogged batch (one partition key, one mutation)
    /// of its history rows and its merged state. Families not in `known` are read
    /// back first, many per request.
    async fn write_batch(
        &self,
        batch: &Projection,
        events: &[Event],
        known: &HashMap<SessionId, FamilyState>,
    ) -> Result<Vec<FamilyState>, BackendError> {
        self.merge_batch(batch, events, known).await
    }

    async fn family(&self, id: SessionId) -> Result<Option<FamilyState>, BackendError> {
        let uuid: Uuid = *id.as_uuid();
        let Some(state) = self
            .state_of("read family", &self.inner.st.get_family, (uuid,))
            .await?
        else {
            return Ok(None);
        };
        let family: FamilyState = decode(&state, &format!("families/{id}"))?;
        // The TTL fires on whole seconds, some time after: the retain time decides.
        Ok((family.retain_until > ledger_clock::now()).then_some(family))
    }

    async fn subject_revocation(
        &self,
        subject: &Subject,
    ) -> Result<Option<SubjectRevocation>, BackendError> {
        let Some(state) = self
            .state_of(
                "read subject",
                &self.inner.st.get_subject,
                (subject.as_str(),),
            )
            .await?
        else {
            return Ok(None);
        };
        let revocation: SubjectRevocation = decode(&state, &format!("subjects/{subject}"))?;
        Ok((revocation.keep_until > ledger_clock::now()).then_some(revocation))
    }

    async fn snapshot(&self) -> Result<Projection, BackendError> {
        let now = ledger_clock::now();
        let families: Vec<FamilyState> =
            self.scan("families", &self.inner.st.scan_families).await?;
        let subjects: Vec<SubjectRevocation> =
            self.scan("subjects", &self.inner.st.scan_subjects).await?;
        let mut projection = Projection::new();
        for f in families.iter().filter(|f| f.retain_until > now) {
            projection.merge_family(f);
        }
        for s in subjects.iter().filter(|s| s.keep_until > now) {
            projection.merge_subject(s);
        }
        Ok(projection)
    }

    /// The CQL store keeps the history the projector hands it: see
    /// [`ScyllaStore::record_events`].
    async fn record_history(&self, events: &[Event]) -> Result<(), BackendError> {
        self.record_events(events).await
    }
}

#[async_trait]
impl HistorySource for ScyllaStore {
    async fn history(&self, id: SessionId) -> Result<Vec<Event>, BackendError> {
        let what = "read history";
        let pager = self
            .inner
            .session
            .execute_iter(self.inner.st.family_events.clone(), (*id.as_uuid(),))
            .await
            .map_err(|e| BackendError::unavailable(format!("cql: {what}: {e}")).with_source(e))?;
        // Clustered by (occurred_at, event_id): the family's events in order.
        pager
            .rows_stream::<(String,)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
            .map_err(|e| BackendError::unavailable(format!("cql: {what}: {e}")).with_source(e))
            .and_then(|(body,)| async move {
                Event::from_json(body.as_bytes()).map_err(|e| {
                    BackendError::corrupt(format!("family_events/{id}"), e.to_string())
                        .with_source(e)
                })
            })
            .try_collect()
            .await
    }
}

#[async_trait]
impl SealStore for ScyllaStore {
    async fn put(&self, seal: &Seal) -> Result<(), BackendError> {
        let partition = i32::try_from(seal.partition).map_err(|_| {
            BackendError::other(format!("partition {} out of range", seal.partition))
        })?;
        let (first, last) = seal.range();
        let offset = |o: u64| {
            i64::try_from(o).map_err(|_| BackendError::other(format!("offset {o} out of range")))
        };
        let body = String::from_utf8_lossy(&seal.to_json()).into_owned();
        self.execute(
            "write seal",
            &self.inner.st.put_seal,
            (partition, offset(first)?, offset(last)?, body),
        )
        .await
        .map(drop)
    }

    async fn seals(&self) -> Result<Vec<Seal>, BackendError> {
        let mut seals: Vec<Seal> = self.scan("seals", &self.inner.st.scan_seals).await?;
        seals.sort_by_key(|s| (s.partition, s.range()));
        Ok(seals)
    }

    async fn newest(&self) -> Result<Vec<Seal>, BackendError> {
        let what = "read seal partitions";
        let partitions: Vec<(i32,)> = self
            .execute(what, &self.inner.st.seal_partitions, ())
            .await?
            .into_rows_result()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
            .rows::<(i32,)>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| BackendError::other(format!("cql: {what}: {e}")).with_source(e))?;
        let mut newest = Vec::new();
        for (partition,) in partitions {
            if let Some(body) = self
                .state_of("read newest seal", &self.inner.st.newest_seal, (partition,))
                .await?
            {
                newest.push(decode(&body, "seals")?);
            }
        }
        newest.sort_by_key(|s: &Seal| s.partition);
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_runs_from_the_whole_second_to_the_retain_time_rounded_up() {
        let at = |micros| Timestamp::from_unix_micros(micros);
        // Written at 10.9 s, retained until 13.4 s: the database expires at 10 + ttl.
        assert_eq!(ttl_seconds(at(13_400_000), at(10_900_000)), Some(4));
        assert_eq!(ttl_seconds(at(13_000_000), at(10_000_000)), Some(3));
        assert_eq!(ttl_seconds(at(10_000_001), at(10_000_000)), Some(1));
        assert_eq!(ttl_seconds(at(10_000_000), at(10_000_000)), None);
        assert_eq!(ttl_seconds(at(9_000_000), at(10_000_000)), None);
        assert_eq!(
            ttl_seconds(Timestamp::from_unix_seconds(i64::MAX / 2_000_000), at(0)),
            i32::try_from(MAX_TTL_SECONDS).ok()
        );
    }
}
