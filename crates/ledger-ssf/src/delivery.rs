//! From the log to receivers. [`Fanout`] reads the log (its own consumer group) and
//! appends one SET per revocation to the queue of every stream that wants it;
//! [`Pusher`] delivers push streams' queues (RFC 8935), one task per stream, so a
//! slow or absent receiver holds back only its own stream. Poll streams are read by
//! the HTTP handler (RFC 8936).
//!
//! **Invariant**: the fan-out commits its log positions only after the SETs of what
//! it read are queued, and a SET leaves a queue only when acknowledged, so a receiver
//! that is away for a while gets everything afterwards, in queue order.
//!
//! Several processes may run a pusher on one store: each stream is pushed by the one
//! that holds its delivery lease ([`SsfStore::hold_delivery`], renewed while it
//! pushes), so a receiver gets its SETs in queue order from one sender; when that
//! process stops, another takes the stream over within [`DELIVERY_LEASE`]. A holder
//! that stalls past its lease mid-batch may overlap with its successor for that batch:
//! delivery is at least once, and receivers deduplicate by `jti`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ledger_core::ports::{BackendError, LogReader, LogSource, SsfStore, StartFrom, StoredStream};
use ledger_core::{Event, EventKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::stream::{Status, Stream};
use crate::{SESSION_REVOKED, Transmitter, set};

/// How long a pusher holds a stream's delivery without renewing it.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(10);

/// The fan-out's consumer group (its checkpoint in the log).
pub const FANOUT_GROUP: &str = "ssf-fanout";

/// Reads stored streams, skipping (and reporting) any that cannot be read.
pub(crate) fn parse_streams(stored: Vec<StoredStream>) -> Vec<(StoredStream, Stream)> {
    stored
        .into_iter()
        .filter_map(|s| match serde_json::from_str::<Stream>(&s.config) {
            Ok(stream) => Some((s, stream)),
            Err(e) => {
                warn!(stream_id = %s.stream_id, error = %e, "unreadable ssf stream skipped");
                None
            }
        })
        .collect()
}

/// The SETs of `events` for one stream, in log order.
pub fn sets_for(tx: &Transmitter, stream: &Stream, events: &[&Event]) -> Vec<(String, String)> {
    if stream.status == Status::Disabled || !stream.delivers(SESSION_REVOKED) {
        return Vec::new();
    }
    let aud = serde_json::Value::String(stream.aud.clone());
    events
        .iter()
        .filter(|e| {
            !stream
                .removed_subjects
                .iter()
                .any(|s| set::subject_matches(s, &tx.issuer, e))
        })
        .filter_map(|e| {
            let claims = set::session_revoked(&tx.issuer, &stream.stream_id, &aud, e)?;
            Some((set::jti(&stream.stream_id, e), tx.signer.sign(&claims)))
        })
        .collect()
}

/// Appends the SETs of the log's revocations to every stream's queue.
#[derive(Debug)]
pub struct Fanout {
    tx: Transmitter,
    source: Arc<dyn LogSource>,
    store: Arc<dyn SsfStore>,
    group: String,
}

impl Fanout {
    pub fn new(
        tx: Transmitter,
        source: Arc<dyn LogSource>,
        store: Arc<dyn SsfStore>,
        group: impl Into<String>,
    ) -> Self {
        Fanout {
            tx,
            source,
            store,
            group: group.into(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BackendError> {
        let mut reader = loop {
            match self
                .source
                .reader(StartFrom::Committed {
                    group: self.group.clone(),
                })
                .await
            {
                Ok(r) => break r,
                Err(e) => warn!(error = %e, "ssf fan-out: cannot open the log; retrying"),
            }
            if pause(&shutdown, Duration::from_secs(1)).await {
                return Ok(());
            }
        };
        info!(group = %self.group, "ssf fan-out started");
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                b = reader.poll(256, Duration::from_millis(500)) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "ssf fan-out: log read failed; retrying");
                    if pause(&shutdown, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            let revocations: Vec<&Event> = batch
                .iter()
                .map(|r| &r.event)
                .filter(|e| matches!(e.kind, EventKind::SessionRevokedAll(_)))
                .collect();
            if !revocations.is_empty() {
                // Store errors are retried, never skipped: positions move only after.
                while let Err(e) = self.enqueue(&revocations).await {
                    warn!(error = %e, "ssf fan-out: queueing failed; retrying");
                    if pause(&shutdown, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                }
                self.tx.queued.notify_waiters();
            }
            commit(reader.as_mut()).await;
        }
    }

    async fn enqueue(&self, events: &[&Event]) -> Result<(), BackendError> {
        for (stored, stream) in parse_streams(self.store.streams().await?) {
            let sets = sets_for(&self.tx, &stream, events);
            if !sets.is_empty() {
                self.store.enqueue(&stored.stream_id, &sets).await?;
                debug!(stream_id = %stored.stream_id, sets = sets.len(), "sets queued");
            }
        }
        Ok(())
    }
}

async fn commit(reader: &mut dyn LogReader) {
    let next = reader.positions();
    if let Err(e) = reader.commit(&next).await {
        // The next batch commits again; a crash meanwhile redelivers (same jtis).
        warn!(error = %e, "ssf fan-out: commit failed");
    }
}

/// Sleeps `d`; `true` when shutdown came first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// Push delivery settings.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Bound on one POST.
    pub timeout: Duration,
    /// First wait after a failed delivery; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How often queues are looked at when nothing woke the pusher.
    pub idle_poll: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            idle_poll: Duration::from_millis(250),
        }
    }
}

/// Counts of push outcomes.
#[derive(Debug, Default)]
pub struct PushStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub rejected: AtomicU64,
}

/// Delivers every push stream's queue, one task per stream.
#[derive(Debug)]
pub struct Pusher {
    tx: Transmitter,
    store: Arc<dyn SsfStore>,
    client: reqwest::Client,
    config: PushConfig,
    stats: Arc<PushStats>,
    /// This pusher's name in delivery leases.
    holder: String,
}

impl Pusher {
    pub fn new(tx: Transmitter, store: Arc<dyn SsfStore>, config: PushConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Pusher {
            tx,
            store,
            client,
            config,
            stats: Arc::default(),
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    pub fn stats(&self) -> Arc<PushStats> {
        self.stats.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BackendError> {
        let this = Arc::new(self);
        let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            let woken = this.tx.queued.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match this.store.streams().await {
                Ok(stored) => {
                    workers.retain(|_, w| !w.is_finished());
                    for (s, stream) in parse_streams(stored) {
                        if stream.is_push() && !workers.contains_key(&s.stream_id) {
                            let worker = this.clone();
                            let token = shutdown.clone();
                            let id = s.stream_id.clone();
                            workers.insert(
                                s.stream_id,
                                tokio::spawn(async move { worker.deliver(id, token).await }),
                            );
                        }
                    }
                }
                Err(e) => warn!(error = %e, "ssf push: cannot list streams"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = &mut woken => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        for (_, w) in workers {
            let _ = w.await;
        }
        Ok(())
    }

    /// Delivers one stream's queue in order until the stream is gone or no longer
    /// a push stream.
    async fn deliver(&self, stream_id: String, shutdown: CancellationToken) {
        let mut backoff = self.config.initial_backoff;
        let mut held_until: Option<tokio::time::Instant> = None;
        loop {
            let woken = self.tx.queued.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !self.holds(&stream_id, &mut held_until).await {
                // Another process pushes this stream (or the store cannot say): ask
                // again in a while.
                if pause(&shutdown, DELIVERY_LEASE / 4).await {
                    return;
                }
                continue;
            }
            let ready = match self.next_batch(&stream_id).await {
                Ok(Some((stream, pending))) if !pending.is_empty() => Some((stream, pending)),
                Ok(Some(_)) => None,
                Ok(None) => return,
                Err(e) => {
                    warn!(%stream_id, error = %e, "ssf push: cannot read the queue");
                    None
                }
            };
            let Some((stream, pending)) = ready else {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut woken => {}
                    () = tokio::time::sleep(self.config.idle_poll) => {}
                }
                continue;
            };
            for queued in pending {
                match self.post(&stream, &queued.set).await {
                    Outcome::Delivered | Outcome::Rejected => {
                        backoff = self.config.initial_backoff;
                        if let Err(e) = self.store.ack(&stream_id, &[queued.jti]).await {
                            warn!(%stream_id, error = %e, "ssf push: cannot record delivery");
                            break;
                        }
                    }
                    Outcome::Retry(reason) => {
                        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                        debug!(%stream_id, jti = %queued.jti, %reason, backoff_ms = backoff.as_millis() as u64, "ssf push failed; retrying");
                        if pause(&shutdown, backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(self.config.max_backoff);
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
                if held_until.is_none_or(|t| t <= tokio::time::Instant::now() + DELIVERY_LEASE / 2)
                {
                    // Renew before the next SET rather than push on an expiring lease.
                    break;
                }
            }
        }
    }

    /// Whether this pusher holds the stream's delivery lease, renewing it once half of
    /// it has run.
    async fn holds(&self, stream_id: &str, held_until: &mut Option<tokio::time::Instant>) -> bool {
        let now = tokio::time::Instant::now();
        if held_until.is_some_and(|t| t > now + DELIVERY_LEASE / 2) {
            return true;
        }
        match self
            .store
            .hold_delivery(stream_id, &self.holder, DELIVERY_LEASE)
            .await
        {
            Ok(true) => {
                if held_until.is_none() {
                    debug!(%stream_id, holder = %self.holder, "ssf push: this process delivers the stream");
                }
                *held_until = Some(now + DELIVERY_LEASE);
                true
            }
            Ok(false) => {
                if held_until.take().is_some() {
                    info!(%stream_id, "ssf push: another process took the stream over");
                }
                false
            }
            Err(e) => {
                warn!(%stream_id, error = %e, "ssf push: cannot take or renew the delivery lease");
                *held_until = None;
                false
            }
        }
    }

    /// The stream (when it still is a push stream) and, when enabled, its next SETs.
    async fn next_batch(
        &self,
        stream_id: &str,
    ) -> Result<Option<(Stream, Vec<ledger_core::ports::QueuedSet>)>, BackendError> {
        let Some(stored) = self.store.stream(stream_id).await? else {
            return Ok(None);
        };
        let stream: Stream = serde_json::from_str(&stored.config).map_err(|e| {
            BackendError::corrupt(format!("ssf stream {stream_id}"), e.to_string()).with_source(e)
        })?;
        if !stream.is_push() {
            return Ok(None);
        }
        if stream.status != Status::Enabled {
            return Ok(Some((stream, Vec::new())));
        }
        let pending = self.store.pending(stream_id, 8).await?;
        Ok(Some((stream, pending)))
    }

    async fn post(&self, stream: &Stream, set: &str) -> Outcome {
        let Some(url) = stream.delivery.endpoint_url.as_deref() else {
            return Outcome::Retry("no endpoint".into());
        };
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/secevent+jwt")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(set.to_owned());
        if let Some(auth) = &stream.delivery.authorization_header {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                Outcome::Delivered
            }
            Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                // RFC 8935 §2.3: the receiver refused this SET for what it is
                // (invalid_request, invalid_key, ...); sending it again cannot help,
                // except where its credential was refused.
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let err = body.get("err").and_then(|e| e.as_str()).unwrap_or("");
                if matches!(err, "authentication_failed" | "access_denied") {
                    return Outcome::Retry(format!("{status}: {err}"));
                }
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(stream_id = %stream.stream_id, err, description = %body.get("description").and_then(|d| d.as_str()).unwrap_or(""), "ssf push: receiver rejected a set");
                Outcome::Rejected
            }
            Ok(r) => Outcome::Retry(format!("status {}", r.status())),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

enum Outcome {
    Delivered,
    Rejected,
    Retry(String),
}
