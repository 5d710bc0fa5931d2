//! The embedded backend: the event log and the projection in one SQLite database
//! (`<data dir>/ledger.db`, WAL, `synchronous=FULL`), so one process runs the whole
//! service with nothing else installed and survives `kill -9`.
//!
//! It implements the same ports as Kafka and the CQL database: [`EventLog`] and
//! [`LogSource`] (one partition; offsets are row ids), [`ProjectionStore`] and
//! [`HistorySource`]. Having no TTL, it is pruned by the [`Pruner`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ledger_core::ports::{
    BackendError, EventLog, HistorySource, LogEnd, LogReader, LogRecord, LogSource, Position,
    ProjectionStore, QueuedSet, SealStore, SsfStore, StartFrom, StoredStream,
};
use ledger_core::seal::Seal;
use ledger_core::{
    Event, FamilyState, Projection, SessionId, Subject, SubjectRevocation, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

mod current;
mod pruner;
pub use current::CurrentProjection;
pub use pruner::{Pruner, PrunerStatus};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    offset      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    session_id  TEXT,
    subject     TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_session ON events (session_id);
CREATE TABLE IF NOT EXISTS families (
    session_id   TEXT PRIMARY KEY,
    retain_until INTEGER NOT NULL,
    state        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS families_by_expiry ON families (retain_until);
CREATE TABLE IF NOT EXISTS subjects (
    subject    TEXT PRIMARY KEY,
    keep_until INTEGER NOT NULL,
    state      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer_group TEXT PRIMARY KEY,
    next_offset    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seals (
    partition    INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset  INTEGER NOT NULL,
    body         BLOB NOT NULL,
    PRIMARY KEY (partition, first_offset, last_offset)
);
CREATE TABLE IF NOT EXISTS ssf_streams (
    stream_id TEXT PRIMARY KEY,
    receiver  TEXT NOT NULL,
    config    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ssf_queue (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id TEXT NOT NULL,
    jti       TEXT NOT NULL,
    body      TEXT NOT NULL,
    acked     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (stream_id, jti)
);
CREATE INDEX IF NOT EXISTS ssf_queue_pending ON ssf_queue (stream_id, acked, seq);
";

/// The embedded log and store. Cheap to clone; all clones share one database.
#[derive(Clone, Debug)]
pub struct Embedded {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Appends and projection writes.
    writer: Mutex<Connection>,
    /// Reads; WAL lets them run beside a write.
    reader: Mutex<Connection>,
    /// The end of the log ([`LogEnd`]), asked before every refresh decides: on a
    /// connection of its own, so it never waits for a longer read.
    end: Mutex<Connection>,
    /// The highest offset appended so far; readers wait on it.
    appended: watch::Sender<i64>,
    /// Appends waiting for the next group commit.
    commits: Mutex<GroupCommit>,
}

/// One event as an `events` row: id, session, subject, time, JSON body.
type EventRow = (String, Option<String>, String, i64, Vec<u8>);

/// Group commit: concurrent appends share one transaction, so one fsync (I1) answers
/// all of them. The first append that finds no commit running starts one on the
/// blocking pool; that commit takes every append waiting, writes them in one
/// transaction, answers each, and goes on while more arrived meanwhile.
#[derive(Debug, Default)]
struct GroupCommit {
    waiting: Vec<Waiting>,
    /// A commit loop runs (and will take what is waiting).
    running: bool,
}

/// An append waiting for its commit: its rows, and where to say how it went.
#[derive(Debug)]
struct Waiting {
    rows: Vec<EventRow>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// SQLite errors: a busy or locked database can succeed later; anything else (a full
/// disk, a corrupt file, a refused statement) needs someone to act.
fn backend(e: rusqlite::Error) -> BackendError {
    let message = format!("sqlite: {e}");
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let error = if busy {
        BackendError::unavailable(message)
    } else {
        BackendError::other(message)
    };
    error.with_source(e)
}

impl Embedded {
    /// Opens (creating when absent) `<dir>/ledger.db`.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            BackendError::other(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
            .with_source(e)
        })?;
        let path = dir.join("ledger.db");
        let writer = connect(&path)?;
        writer.execute_batch(SCHEMA).map_err(backend)?;
        let reader = connect(&path)?;
        let end = connect(&path)?;
        let last: i64 = writer
            .query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| {
                r.get(0)
            })
            .map_err(backend)?;
        let (appended, _) = watch::channel(last);
        Ok(Embedded {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                end: Mutex::new(end),
                appended,
                commits: Mutex::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The offset of the newest event (0 when the log is empty).
    pub fn last_offset(&self) -> i64 {
        *self.inner.appended.borrow()
    }

    /// A family as of the end of the log: what `group` (the projector) stored,
    /// joined with the family's events from its checkpoint on, which it has not
    /// stored yet (all of them after a crash that left it behind).
    pub async fn current_family(
        &self,
        group: &str,
        id: SessionId,
    ) -> Result<Option<FamilyState>, BackendError> {
        let now = ledger_clock::now();
        let (stored, tail) = self
            .stored_and_unprojected(
                group,
                id.to_string(),
                "SELECT state FROM families WHERE session_id = ?1",
                "SELECT offset, body FROM events
                 WHERE session_id = ?1 AND offset >= ?2 ORDER BY offset",
            )
            .await?;
        let mut projection = Projection::new();
        if let Some(stored) = stored {
            projection.merge_family(&decode_or_corrupt(&stored, &id.to_string())?);
        }
        fold_rows(&mut projection, tail)?;
        Ok(projection
            .family(&id)
            .filter(|f| f.retain_until > now)
            .cloned())
    }

    /// A subject's revocation as of the end of the log, as [`Embedded::current_family`].
    pub async fn current_subject_revocation(
        &self,
        group: &str,
        subject: &Subject,
    ) -> Result<Option<SubjectRevocation>, BackendError> {
        let now = ledger_clock::now();
        let (stored, tail) = self
            .stored_and_unprojected(
                group,
                subject.as_str().to_owned(),
                "SELECT state FROM subjects WHERE subject = ?1",
                "SELECT offset, body FROM events
                 WHERE subject = ?1 AND offset >= ?2 ORDER BY offset",
            )
            .await?;
        let mut projection = Projection::new();
        if let Some(stored) = stored {
            projection.merge_subject(&decode_or_corrupt(&stored, subject.as_str())?);
        }
        fold_rows(&mut projection, tail)?;
        Ok(projection
            .subject_revocation(subject)
            .filter(|s| s.keep_until > now)
            .cloned())
    }

    /// The stored row `stored_sql` selects for `key`, and the `(offset, body)` event
    /// rows `tail_sql` selects for it from `group`'s checkpoint on.
    async fn stored_and_unprojected(
        &self,
        group: &str,
        key: String,
        stored_sql: &'static str,
        tail_sql: &'static str,
    ) -> Result<(Option<Vec<u8>>, Vec<(i64, Vec<u8>)>), BackendError> {
        let group = group.to_owned();
        self.read(move |c| {
            // The checkpoint first: the row read after it holds at least what the
            // projector had stored when it committed it.
            let next: i64 = c
                .query_row(
                    "SELECT next_offset FROM checkpoints WHERE consumer_group = ?1",
                    [&group],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            let stored: Option<Vec<u8>> =
                c.query_row(stored_sql, [&key], |r| r.get(0)).optional()?;
            let mut tail = c.prepare_cached(tail_sql)?;
            let tail = tail
                .query_map(params![key, next], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((stored, tail))
        })
        .await
    }

    /// Deletes projection rows past their retention (the CQL store does this by TTL).
    /// Reads already ignore them; this only reclaims space.
    pub async fn prune(&self, now: Timestamp) -> Result<usize, BackendError> {
        let now = now.unix_micros();
        self.write(move |c| {
            let f = c.execute("DELETE FROM families WHERE retain_until <= ?1", [now])?;
            let s = c.execute("DELETE FROM subjects WHERE keep_until <= ?1", [now])?;
            Ok(f + s)
        })
        .await
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::other(format!("storage task failed: {e}")).with_source(e))?
        .map_err(backend)
}

fn connect(path: &Path) -> Result<Connection, BackendError> {
    let conn = Connection::open(path).map_err(|e| {
        BackendError::other(format!("cannot open {}: {e}", path.display())).with_source(e)
    })?;
    // FULL: a transaction is on disk (fsync'd) when COMMIT returns, which is what
    // lets the API answer after `append` (I1).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(backend)?;
    Ok(conn)
}

impl Inner {
    /// Commits what is waiting, again and again until nothing is: one transaction (one
    /// fsync) per round, every append of the round answered with its outcome. Appends
    /// keep their order, and their events stay together.
    fn commit_waiting(&self) {
        /// Should a round panic, the next append starts a commit loop again (the
        /// round's appends get an error: their answer channels are dropped).
        struct Restartable<'a>(&'a Mutex<GroupCommit>);
        impl Drop for Restartable<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.lock().unwrap_or_else(|p| p.into_inner()).running = false;
                }
            }
        }
        let _restartable = Restartable(&self.commits);
        loop {
            let round = {
                let mut commits = self.commits.lock().unwrap_or_else(|p| p.into_inner());
                if commits.waiting.is_empty() {
                    commits.running = false;
                    return;
                }
                std::mem::take(&mut commits.waiting)
            };
            let written = {
                let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
                insert_events(&mut conn, round.iter().flat_map(|w| &w.rows))
            };
            let outcome = match written {
                Ok(last) => {
                    self.appended.send_if_modified(|v| {
                        let changed = last > *v;
                        *v = (*v).max(last);
                        changed
                    });
                    Ok(())
                }
                Err(e) => Err(format!("sqlite: {e}")),
            };
            for waiting in round {
                // An append that gave up waiting (its task was dropped) needs no answer.
                let _ = waiting.done.send(outcome.clone());
            }
        }
    }
}

/// Inserts the rows in one transaction; the newest offset once committed.
fn insert_events<'a>(
    conn: &mut Connection,
    rows: impl Iterator<Item = &'a EventRow>,
) -> rusqlite::Result<i64> {
    let tx = conn.transaction()?;
    {
        // A duplicate event id (a retried append) is already in the log.
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO events (event_id, session_id, subject, occurred_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (id, session, subject, at, body) in rows {
            insert.execute(params![id, session, subject, at, body])?;
        }
    }
    let last: i64 = tx.query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| {
        r.get(0)
    })?;
    tx.commit()?;
    Ok(last)
}

#[async_trait]
impl EventLog for Embedded {
    /// Waits for the group commit that takes these events (see [`GroupCommit`]).
    async fn append(&self, events: &[Event]) -> Result<(), BackendError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<EventRow> = events
            .iter()
            .map(|e| {
                (
                    e.event_id.to_string(),
                    e.session_id.map(|s| s.to_string()),
                    e.subject.as_str().to_owned(),
                    e.occurred_at.unix_micros(),
                    e.to_json(),
                )
            })
            .collect();
        let (done, outcome) = tokio::sync::oneshot::channel();
        let start = {
            let mut commits = self.inner.commits.lock().unwrap_or_else(|p| p.into_inner());
            commits.waiting.push(Waiting { rows, done });
            !std::mem::replace(&mut commits.running, true)
        };
        if start {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.commit_waiting());
        }
        outcome
            .await
            .map_err(|_| BackendError::other("the group commit stopped"))?
            .map_err(BackendError::other)
    }
}

#[async_trait]
impl LogSource for Embedded {
    async fn reader(&self, start: StartFrom) -> Result<Box<dyn LogReader>, BackendError> {
        let (next, group) = match start {
            StartFrom::Beginning => (1, None),
            StartFrom::Positions(p) => (p.iter().map(|p| p.offset).max().unwrap_or(1), None),
            StartFrom::Committed { group } => {
                let committed = self.committed(&group).await?;
                (committed.first().map_or(1, |p| p.offset), Some(group))
            }
        };
        // Each reader reads on a connection of its own: readers in WAL mode never wait
        // for each other, nor for the API's reads.
        let conn = Arc::new(Mutex::new(connect(&self.inner.path)?));
        Ok(Box::new(EmbeddedReader {
            conn,
            log: self.clone(),
            next: i64::try_from(next).unwrap_or(i64::MAX).max(1),
            group,
            appended: self.inner.appended.subscribe(),
            prefetch: None,
            spare: None,
            caught_up_at: None,
        }))
    }

    async fn committed(&self, group: &str) -> Result<Vec<Position>, BackendError> {
        let group = group.to_owned();
        let next: Option<i64> = self
            .read(move |c| {
                c.query_row(
                    "SELECT next_offset FROM checkpoints WHERE consumer_group = ?1",
                    [group],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        Ok(next
            .map(|n| Position {
                partition: 0,
                offset: u64::try_from(n).unwrap_or_default(),
            })
            .into_iter()
            .collect())
    }

    async fn end(&self) -> Result<Option<Vec<Position>>, BackendError> {
        LogEnd::end(self).await.map(Some)
    }
}

#[async_trait]
impl LogEnd for Embedded {
    async fn end(&self) -> Result<Vec<Position>, BackendError> {
        // Read from the database, not the in-process counter: another process may
        // append to the same file.
        let inner = self.inner.clone();
        let last: i64 = blocking(move || {
            let conn = inner.end.lock().unwrap_or_else(|p| p.into_inner());
            let mut max = conn.prepare_cached("SELECT COALESCE(MAX(offset), 0) FROM events")?;
            max.query_row([], |r| r.get(0))
        })
        .await?;
        Ok(vec![Position {
            partition: 0,
            offset: u64::try_from(last + 1).unwrap_or_default(),
        }])
    }
}

/// Reads the embedded log from a position, waking when something is appended.
#[derive(Debug)]
pub struct EmbeddedReader {
    conn: Arc<Mutex<Connection>>,
    log: Embedded,
    /// The next offset to read.
    next: i64,
    group: Option<String>,
    appended: watch::Receiver<i64>,
    /// While catching up (the last batch was full), the next batch's rows are read on
    /// the blocking pool as the caller processes the current one.
    prefetch: Option<Prefetch>,
    /// The buffer of the batch decoded last, for the next read to fill.
    spare: Option<Rows>,
    /// When the latest read that found the end of the log started.
    caught_up_at: Option<Timestamp>,
}

/// Rows of the log read in one go: their offsets, and their bodies end to end in one
/// buffer. A reader keeps two and reuses them batch after batch (one filled on the
/// blocking pool while the other is decoded), rather than allocating every body.
#[derive(Debug, Default)]
struct Rows {
    offsets: Vec<i64>,
    /// Where each body ends in `bodies`.
    ends: Vec<usize>,
    bodies: Vec<u8>,
}

impl Rows {
    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    fn last_offset(&self) -> Option<i64> {
        self.offsets.last().copied()
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.offsets
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(&offset, (start, &end))| (offset, &self.bodies[start..end]))
    }
}

#[derive(Debug)]
struct Prefetch {
    from: i64,
    limit: usize,
    /// When the read started: a short read proves the end of the log as of then.
    started: Timestamp,
    rows: tokio::task::JoinHandle<rusqlite::Result<Rows>>,
}

impl Drop for EmbeddedReader {
    fn drop(&mut self) {
        if let Some(p) = self.prefetch.take() {
            p.rows.abort();
        }
    }
}

impl EmbeddedReader {
    /// Reads up to `limit` rows from offset `from` into `rows` (emptied first).
    fn read_rows(
        conn: &Mutex<Connection>,
        from: i64,
        limit: usize,
        mut rows: Rows,
    ) -> rusqlite::Result<Rows> {
        rows.offsets.clear();
        rows.ends.clear();
        rows.bodies.clear();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut q = c.prepare_cached(
            "SELECT offset, body FROM events WHERE offset >= ?1 ORDER BY offset LIMIT ?2",
        )?;
        let mut found = q.query([from, limit])?;
        while let Some(row) = found.next()? {
            rows.offsets.push(row.get(0)?);
            // Copied straight from SQLite's row into the batch's buffer.
            match row.get_ref(1)? {
                rusqlite::types::ValueRef::Blob(body) => rows.bodies.extend_from_slice(body),
                other => {
                    return Err(rusqlite::Error::InvalidColumnType(
                        1,
                        "body".to_owned(),
                        other.data_type(),
                    ));
                }
            }
            rows.ends.push(rows.bodies.len());
        }
        Ok(rows)
    }

    async fn read_batch(&mut self, max: usize) -> Result<Vec<LogRecord>, BackendError> {
        let from = self.next;
        let prefetched = match self.prefetch.take() {
            Some(p) if p.from == from && p.limit <= max => Some((
                p.rows
                    .await
                    .map_err(|e| {
                        BackendError::other(format!("storage task failed: {e}")).with_source(e)
                    })?
                    .map_err(backend)?,
                p.started,
            )),
            Some(p) => {
                p.rows.abort();
                None
            }
            None => None,
        };
        let (rows, started) = match prefetched {
            // An empty prefetch may predate an append: read again.
            Some((rows, started)) if !rows.is_empty() => (rows, started),
            _ => {
                let conn = self.conn.clone();
                let started = ledger_clock::now();
                let spare = self.spare.take().unwrap_or_default();
                let rows = blocking(move || Self::read_rows(&conn, from, max, spare)).await?;
                (rows, started)
            }
        };
        // Fewer rows than asked for: the read reached the end of the log.
        if rows.len() < max {
            self.caught_up_at = self.caught_up_at.max(Some(started));
        }
        if rows.len() == max
            && let Some(last) = rows.last_offset()
        {
            let conn = self.conn.clone();
            let spare = self.spare.take().unwrap_or_default();
            self.prefetch = Some(Prefetch {
                from: last + 1,
                limit: max,
                started: ledger_clock::now(),
                rows: tokio::task::spawn_blocking(move || {
                    Self::read_rows(&conn, last + 1, max, spare)
                }),
            });
        }
        let mut records = Vec::with_capacity(rows.len());
        for (offset, body) in rows.iter() {
            let event = Event::from_json(body).map_err(|e| {
                BackendError::corrupt(format!("offset {offset}"), e.to_string()).with_source(e)
            })?;
            records.push(LogRecord {
                position: Position {
                    partition: 0,
                    offset: u64::try_from(offset).unwrap_or_default(),
                },
                event,
            });
        }
        self.spare = Some(rows);
        Ok(records)
    }
}

#[async_trait]
impl LogReader for EmbeddedReader {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Mark the current value seen before reading, so an append that lands
            // after the read still wakes us.
            self.appended.borrow_and_update();
            let batch = self.read_batch(max).await?;
            if let Some(last) = batch.last() {
                self.next = i64::try_from(last.position.offset).unwrap_or(i64::MAX) + 1;
                return Ok(batch);
            }
            match tokio::time::timeout_at(deadline, self.appended.changed()).await {
                Ok(Ok(())) => continue,
                // Timed out, or the log was dropped: nothing new.
                Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn commit(&mut self, next: &[Position]) -> Result<(), BackendError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        let Some(next) = next.iter().map(|p| p.offset).max() else {
            return Ok(());
        };
        let next = i64::try_from(next).unwrap_or(i64::MAX);
        self.log
            .write(move |c| {
                c.execute(
                    "INSERT INTO checkpoints (consumer_group, next_offset) VALUES (?1, ?2)
                     ON CONFLICT (consumer_group) DO UPDATE
                     SET next_offset = MAX(next_offset, excluded.next_offset)",
                    params![group, next],
                )
                .map(drop)
            })
            .await
    }

    fn positions(&self) -> Vec<Position> {
        vec![Position {
            partition: 0,
            offset: u64::try_from(self.next).unwrap_or_default(),
        }]
    }

    fn lag(&self) -> Option<u64> {
        let last = *self.appended.borrow();
        u64::try_from(last + 1 - self.next).ok()
    }

    fn caught_up_at(&self) -> Option<Timestamp> {
        self.caught_up_at
    }
}

#[async_trait]
impl ProjectionStore for Embedded {
    async fn write(&self, batch: &Projection) -> Result<(), BackendError> {
        let families: Vec<FamilyState> = batch.families().cloned().collect();
        let subjects: Vec<SubjectRevocation> = batch.subjects().cloned().collect();
        self.write(move |c| {
            let tx = c.transaction()?;
            {
                let mut get =
                    tx.prepare_cached("SELECT state FROM families WHERE session_id = ?1")?;
                let mut put = tx.prepare_cached(
                    "INSERT INTO families (session_id, retain_until, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (session_id) DO UPDATE
                     SET retain_until = excluded.retain_until, state = excluded.state",
                )?;
                for mut family in families {
                    let id = family.session_id.to_string();
                    let stored: Option<Vec<u8>> = get.query_row([&id], |r| r.get(0)).optional()?;
                    if let Some(stored) = stored {
                        family.merge(&decode_in_sql::<FamilyState>(&stored)?);
                    }
                    put.execute(params![
                        id,
                        family.retain_until.unix_micros(),
                        encode(&family)
                    ])?;
                }
                let mut get = tx.prepare_cached("SELECT state FROM subjects WHERE subject = ?1")?;
                let mut put = tx.prepare_cached(
                    "INSERT INTO subjects (subject, keep_until, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (subject) DO UPDATE
                     SET keep_until = excluded.keep_until, state = excluded.state",
                )?;
                for mut subject in subjects {
                    let key = subject.subject.as_str().to_owned();
                    let stored: Option<Vec<u8>> = get.query_row([&key], |r| r.get(0)).optional()?;
                    if let Some(stored) = stored {
                        subject.merge(&decode_in_sql::<SubjectRevocation>(&stored)?);
                    }
                    put.execute(params![
                        key,
                        subject.keep_until.unix_micros(),
                        encode(&subject)
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn family(&self, id: SessionId) -> Result<Option<FamilyState>, BackendError> {
        let now = ledger_clock::now().unix_micros();
        let bytes: Option<Vec<u8>> = self
            .read(move |c| {
                c.query_row(
                    "SELECT state FROM families WHERE session_id = ?1 AND retain_until > ?2",
                    params![id.to_string(), now],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        bytes
            .map(|b| decode_or_corrupt(&b, &id.to_string()))
            .transpose()
    }

    async fn subject_revocation(
        &self,
        subject: &Subject,
    ) -> Result<Option<SubjectRevocation>, BackendError> {
        let now = ledger_clock::now().unix_micros();
        let key = subject.as_str().to_owned();
        let bytes: Option<Vec<u8>> = self
            .read(move |c| {
                c.query_row(
                    "SELECT state FROM subjects WHERE subject = ?1 AND keep_until > ?2",
                    params![key, now],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        bytes
            .map(|b| decode_or_corrupt(&b, subject.as_str()))
            .transpose()
    }

    async fn snapshot(&self) -> Result<Projection, BackendError> {
        let now = ledger_clock::now().unix_micros();
        let (families, subjects) = self
            .read(move |c| {
                let mut q = c.prepare("SELECT state FROM families WHERE retain_until > ?1")?;
                let families: Vec<Vec<u8>> = q
                    .query_map([now], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut q = c.prepare("SELECT state FROM subjects WHERE keep_until > ?1")?;
                let subjects: Vec<Vec<u8>> = q
                    .query_map([now], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok((families, subjects))
            })
            .await?;
        let mut projection = Projection::new();
        for b in families {
            projection.merge_family(&decode_or_corrupt(&b, "families")?);
        }
        for b in subjects {
            projection.merge_subject(&decode_or_corrupt(&b, "subjects")?);
        }
        Ok(projection)
    }
}

#[async_trait]
impl HistorySource for Embedded {
    async fn history(&self, id: SessionId) -> Result<Vec<Event>, BackendError> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .read(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT offset, body FROM events WHERE session_id = ?1 ORDER BY offset",
                )?;
                let rows = q.query_map([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(offset, body)| {
                Event::from_json(&body).map_err(|e| {
                    BackendError::corrupt(format!("offset {offset}"), e.to_string()).with_source(e)
                })
            })
            .collect()
    }
}

/// Folds event rows into `projection`.
fn fold_rows(projection: &mut Projection, rows: Vec<(i64, Vec<u8>)>) -> Result<(), BackendError> {
    for (offset, body) in rows {
        let event = Event::from_json(&body).map_err(|e| {
            BackendError::corrupt(format!("offset {offset}"), e.to_string()).with_source(e)
        })?;
        projection.apply(&event);
    }
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A stored row that does not decode stops the write: merging into it blindly would
/// lose state.
fn decode_in_sql<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> rusqlite::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn decode_or_corrupt<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, BackendError> {
    serde_json::from_slice(bytes)
        .map_err(|e| BackendError::corrupt(what.to_owned(), e.to_string()).with_source(e))
}

#[cfg(test)]
mod tests;

#[async_trait]
impl SealStore for Embedded {
    async fn put(&self, seal: &Seal) -> Result<(), BackendError> {
        let (first, last) = seal.range();
        let (first, last) = (
            i64::try_from(first).unwrap_or(i64::MAX),
            i64::try_from(last).unwrap_or(i64::MAX),
        );
        let (partition, body) = (seal.partition, seal.to_json());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO seals (partition, first_offset, last_offset, body)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![partition, first, last, body])
            .map(drop)
        })
        .await
    }

    async fn seals(&self) -> Result<Vec<Seal>, BackendError> {
        self.read_seals(
            "SELECT first_offset, body FROM seals ORDER BY partition, first_offset, last_offset",
        )
        .await
    }

    async fn newest(&self) -> Result<Vec<Seal>, BackendError> {
        self.read_seals(
            "SELECT first_offset, body FROM seals AS s
             WHERE first_offset = (SELECT max(first_offset) FROM seals WHERE partition = s.partition)
             ORDER BY partition, last_offset DESC",
        )
        .await
        .map(|mut seals| {
            // Two sealers may have sealed from the same offset: the longer is newest.
            seals.dedup_by_key(|s| s.partition);
            seals
        })
    }
}

impl Embedded {
    async fn read_seals(&self, query: &'static str) -> Result<Vec<Seal>, BackendError> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .read(move |c| {
                let mut q = c.prepare_cached(query)?;
                let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(first, body)| {
                Seal::from_json(&body).map_err(|e| {
                    BackendError::corrupt(format!("seal from offset {first}"), e.to_string())
                        .with_source(e)
                })
            })
            .collect()
    }
}

/// Shared Signals streams and their queues. An acknowledged SET keeps its row (body
/// cleared) so a redelivered log event cannot queue it again; rows go with the stream.
#[async_trait]
impl SsfStore for Embedded {
    async fn put_stream(&self, stream: &StoredStream) -> Result<(), BackendError> {
        let stream = stream.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO ssf_streams (stream_id, receiver, config) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stream_id) DO UPDATE SET receiver = ?2, config = ?3",
                params![stream.stream_id, stream.receiver, stream.config],
            )
            .map(drop)
        })
        .await
    }

    async fn stream(&self, stream_id: &str) -> Result<Option<StoredStream>, BackendError> {
        let id = stream_id.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT stream_id, receiver, config FROM ssf_streams WHERE stream_id = ?1",
                [id],
                |r| {
                    Ok(StoredStream {
                        stream_id: r.get(0)?,
                        receiver: r.get(1)?,
                        config: r.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn streams(&self) -> Result<Vec<StoredStream>, BackendError> {
        self.read(|c| {
            let mut q = c.prepare(
                "SELECT stream_id, receiver, config FROM ssf_streams ORDER BY stream_id",
            )?;
            let rows = q.query_map([], |r| {
                Ok(StoredStream {
                    stream_id: r.get(0)?,
                    receiver: r.get(1)?,
                    config: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn delete_stream(&self, stream_id: &str) -> Result<bool, BackendError> {
        let id = stream_id.to_owned();
        self.write(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM ssf_queue WHERE stream_id = ?1", [&id])?;
            let n = tx.execute("DELETE FROM ssf_streams WHERE stream_id = ?1", [&id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn enqueue(
        &self,
        stream_id: &str,
        sets: &[(String, String)],
    ) -> Result<(), BackendError> {
        let id = stream_id.to_owned();
        let sets = sets.to_vec();
        self.write(move |c| {
            let tx = c.transaction()?;
            {
                let mut q = tx.prepare(
                    "INSERT INTO ssf_queue (stream_id, jti, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (stream_id, jti) DO NOTHING",
                )?;
                for (jti, set) in &sets {
                    q.execute(params![id, jti, set])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn pending(&self, stream_id: &str, max: usize) -> Result<Vec<QueuedSet>, BackendError> {
        let id = stream_id.to_owned();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut q = c.prepare(
                "SELECT seq, jti, body FROM ssf_queue
                 WHERE stream_id = ?1 AND acked = 0 ORDER BY seq LIMIT ?2",
            )?;
            let rows = q.query_map(params![id, max], |r| {
                Ok(QueuedSet {
                    seq: r.get(0)?,
                    jti: r.get(1)?,
                    set: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn ack(&self, stream_id: &str, jtis: &[String]) -> Result<(), BackendError> {
        let id = stream_id.to_owned();
        let jtis = jtis.to_vec();
        self.write(move |c| {
            let tx = c.transaction()?;
            {
                let mut q = tx.prepare(
                    "UPDATE ssf_queue SET acked = 1, body = '' WHERE stream_id = ?1 AND jti = ?2",
                )?;
                for jti in &jtis {
                    q.execute(params![id, jti])?;
                }
            }
            tx.commit()
        })
        .await
    }
}
