//! The keyspace's schema as an ordered list of migrations.
//!
//! Each migration is a list of idempotent statements (`CREATE ... IF NOT EXISTS`,
//! `ALTER` guarded by its own version), applied once and then recorded in
//! `schema_version`. Two stores connecting at once may both run a migration; the
//! statements being idempotent, that is harmless. Later versions append migrations;
//! they never edit one already released.

use std::collections::BTreeSet;

use ledger_core::ports::BackendError;
use scylla::client::session::Session;
use tracing::{info, warn};

/// One schema step; `{ks}` in a statement stands for the keyspace.
struct Migration {
    version: i32,
    description: &'static str,
    statements: &'static [&'static str],
}

/// Time-window compaction for the TTL tables (D5): rows written in the same day expire
/// together, so whole SSTables are dropped instead of compacted. `gc_grace_seconds` is
/// short because rows die by TTL (no deletes whose tombstones must reach every replica).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "families, subjects and family_events",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.families (
            session_id uuid PRIMARY KEY,
            state text
        ) WITH compaction = {'class': 'TimeWindowCompactionStrategy',
                             'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}
          AND default_time_to_live = 0
          AND gc_grace_seconds = 3600",
            "CREATE TABLE IF NOT EXISTS {ks}.subjects (
            subject text PRIMARY KEY,
            state text
        ) WITH compaction = {'class': 'TimeWindowCompactionStrategy',
                             'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}
          AND default_time_to_live = 0
          AND gc_grace_seconds = 3600",
            "CREATE TABLE IF NOT EXISTS {ks}.family_events (
            session_id uuid,
            occurred_at bigint,
            event_id uuid,
            body text,
            PRIMARY KEY (session_id, occurred_at, event_id)
        ) WITH CLUSTERING ORDER BY (occurred_at ASC, event_id ASC)
          AND compaction = {'class': 'TimeWindowCompactionStrategy',
                            'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}
          AND default_time_to_live = 0
          AND gc_grace_seconds = 3600",
        ],
    },
    Migration {
        version: 2,
        description: "seals: signed hash chains over the log (tamper evidence)",
        statements: &["CREATE TABLE IF NOT EXISTS {ks}.seals (
            partition int,
            first_offset bigint,
            last_offset bigint,
            body text,
            PRIMARY KEY (partition, first_offset, last_offset)
        ) WITH CLUSTERING ORDER BY (first_offset ASC, last_offset ASC)"],
    },
    Migration {
        version: 3,
        description: "ssf_streams, ssf_sequences, ssf_jtis and ssf_queue: shared signals streams",
        // The queue's rows are deleted as receivers acknowledge them and `pending` reads
        // from the start of the partition, so its tombstones are collected after an
        // hour rather than ten days. A replica that misses an acknowledgement's delete
        // for longer than that (and is not repaired) may deliver that SET again, which
        // receivers tolerate (they deduplicate by `jti`).
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.ssf_streams (
            stream_id text PRIMARY KEY,
            receiver text,
            config text
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.ssf_sequences (
            stream_id text PRIMARY KEY,
            next_seq bigint
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.ssf_jtis (
            stream_id text,
            bucket int,
            jti text,
            seq bigint,
            written_at bigint,
            body text,
            acked boolean,
            PRIMARY KEY ((stream_id, bucket), jti)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.ssf_queue (
            stream_id text,
            seq bigint,
            jti text,
            body text,
            PRIMARY KEY (stream_id, seq)
        ) WITH CLUSTERING ORDER BY (seq ASC)
          AND gc_grace_seconds = 3600",
        ],
    },
    Migration {
        version: 4,
        description: "ssf_leases: one pusher per shared signals stream",
        statements: &["CREATE TABLE IF NOT EXISTS {ks}.ssf_leases (
            stream_id text PRIMARY KEY,
            holder text
        )"],
    },
];

/// The schema version this code expects.
pub(crate) const SCHEMA_VERSION: i32 = 4;

/// Creates the keyspace when absent and applies the migrations it has not seen.
pub(crate) async fn migrate(
    session: &Session,
    ks: &str,
    replication: &str,
) -> Result<(), BackendError> {
    run(
        session,
        &format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"),
    )
    .await?;
    run(
        session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_version (
                version int PRIMARY KEY,
                description text,
                applied_at timestamp
            )"
        ),
    )
    .await?;
    let applied = applied_versions(session, ks).await?;
    if let Some(&newest) = applied.last()
        && newest > SCHEMA_VERSION
    {
        warn!(
            keyspace = ks,
            stored = newest,
            expected = SCHEMA_VERSION,
            "cql schema is newer than this build"
        );
    }
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for statement in m.statements {
            run(session, &statement.replace("{ks}", ks)).await?;
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_version (version, description, applied_at) \
                     VALUES (?, ?, toTimestamp(now()))"
                ),
                (m.version, m.description),
            )
            .await
            .map_err(|e| migration_error(ks, m.version, e))?;
        info!(
            keyspace = ks,
            version = m.version,
            description = m.description,
            "cql schema migrated"
        );
    }
    Ok(())
}

async fn applied_versions(session: &Session, ks: &str) -> Result<BTreeSet<i32>, BackendError> {
    let rows = session
        .query_unpaged(format!("SELECT version FROM {ks}.schema_version"), ())
        .await
        .map_err(|e| {
            BackendError::unavailable(format!("cql: read schema version: {e}")).with_source(e)
        })?
        .into_rows_result()
        .map_err(|e| {
            BackendError::other(format!("cql: read schema version: {e}")).with_source(e)
        })?;
    rows.rows::<(i32,)>()
        .map_err(|e| BackendError::other(format!("cql: read schema version: {e}")).with_source(e))?
        .map(|r| {
            r.map(|(v,)| v).map_err(|e| {
                BackendError::other(format!("cql: read schema version: {e}")).with_source(e)
            })
        })
        .collect()
}

async fn run(session: &Session, cql: &str) -> Result<(), BackendError> {
    session
        .query_unpaged(cql, ())
        .await
        .map(drop)
        .map_err(|e| crate::execution_error("schema", e))
}

fn migration_error<E>(ks: &str, version: i32, e: E) -> BackendError
where
    E: std::error::Error + Send + Sync + 'static,
{
    BackendError::unavailable(format!("cql: record schema version {version} in {ks}: {e}"))
        .with_source(e)
}
