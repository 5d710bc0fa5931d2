//! Reading the log: [`KafkaReader`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt as _;
use ledger_core::ports::{BackendError, LogReader, LogRecord, Position, StartFrom};
use ledger_core::{Event, Timestamp};
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::context::ReaderContext;
use crate::{
    KafkaConfig, blocking, committed_offsets, lane_partition, split_partition, topic_partitions,
    unavailable,
};

/// How often, at most, a reader asks the brokers for the partitions' watermarks.
const WATERMARK_REFRESH: Duration = Duration::from_millis(500);
/// The longest a watermark request may take before the brokers count as unreachable.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// A watermark request unanswered for this long is reported as a read error.
const UNANSWERED: Duration = Duration::from_secs(2);

type Kafka = StreamConsumer<ReaderContext>;

/// Reads the log from a position (no commits) or as a member of a consumer group
/// (resuming from, and committing to, the group's offsets).
///
/// The log may span several topics (a region's own and the ones replicated from other
/// regions): positions, commits and watermarks are per (topic, partition), the topic
/// folded into the position's partition number ([`lane_partition`]).
///
/// Polling never blocks the async runtime: records come from librdkafka's queue, and
/// blocking calls (metadata, commits, watermarks) run on the blocking pool.
pub struct KafkaReader {
    /// `None` only while being dropped.
    consumer: Option<Arc<Kafka>>,
    /// Every topic read, in lane order (the lane is the index).
    topics: Vec<String>,
    /// The consumer group whose offsets this reader commits, for
    /// [`StartFrom::Committed`]; `None` for a reader that never commits.
    group: Option<String>,
    /// Every partition of the topics when the reader was opened ([`lane_partition`]).
    partitions: Vec<u32>,
    /// The next offset to read per partition (0 = the beginning, when nothing was read).
    next: BTreeMap<u32, i64>,
    /// What this reader knows to be committed for its group, per partition.
    committed: BTreeMap<u32, i64>,
    watermarks: Arc<Mutex<Watermarks>>,
    operation_timeout: Duration,
    /// A record that could not be decoded: the reader stops there, as the embedded log
    /// does, rather than skip an event.
    stuck: Option<(String, String)>,
    /// See [`LogReader::caught_up_at`].
    caught_up_at: Option<Timestamp>,
}

/// Cached low and high watermarks per partition, refreshed in the background.
#[derive(Debug, Default)]
struct Watermarks {
    by_partition: HashMap<u32, (i64, i64)>,
    refreshed_at: Option<Instant>,
    /// Since when a refresh has been running, if one is.
    refreshing: Option<Instant>,
    /// When the request behind `by_partition` was sent, if every partition answered:
    /// the log held no event acknowledged before then above these high watermarks.
    asked_at: Option<Timestamp>,
    /// Why the latest refresh failed (the brokers could not be reached, no metadata,
    /// no leader); cleared by the next complete one.
    error: Option<String>,
}

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("next", &self.next)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    pub(crate) async fn open(config: &KafkaConfig, start: StartFrom) -> Result<Self, BackendError> {
        let (group, commits) = match &start {
            StartFrom::Committed { group } => (group.clone(), true),
            // A throwaway group id: librdkafka wants one, nothing is ever committed
            // under it, and `assign` does not join the group.
            _ => (
                format!("session-ledger-reader-{}", uuid::Uuid::new_v4().simple()),
                false,
            ),
        };
        let consumer: Kafka = config
            .consumer_config_as(&group, commits)
            .create_with_context(ReaderContext {
                group: group.clone(),
            })
            .map_err(|e| BackendError::other(format!("kafka consumer: {e}")).with_source(e))?;
        // From here on, an early return drops the reader, which closes the consumer off
        // the runtime.
        let mut reader = KafkaReader {
            consumer: Some(Arc::new(consumer)),
            topics: config.topics().into_iter().map(str::to_owned).collect(),
            group: commits.then_some(group),
            partitions: Vec::new(),
            next: BTreeMap::new(),
            committed: BTreeMap::new(),
            watermarks: Arc::default(),
            operation_timeout: config.operation_timeout,
            stuck: None,
            caught_up_at: None,
        };
        let consumer = reader.consumer()?;
        let topics = reader.topics.clone();
        let timeout = reader.operation_timeout;
        let (partitions, committed) = blocking(move || {
            let (mut all, mut committed) = (Vec::new(), Vec::new());
            for (lane, topic) in topics.iter().enumerate() {
                let partitions = topic_partitions(consumer.client(), topic, timeout)?;
                if commits {
                    committed.extend(committed_offsets(
                        &*consumer,
                        lane,
                        topic,
                        &partitions,
                        timeout,
                    )?);
                }
                all.extend(partitions.into_iter().map(|p| lane_partition(lane, p)));
            }
            Ok::<_, BackendError>((all, committed))
        })
        .await??;
        reader.partitions = partitions;

        let consumer = reader.consumer()?;
        match start {
            StartFrom::Committed { .. } => {
                reader.committed = committed
                    .iter()
                    .map(|p| (p.partition, offset_value(p.offset)))
                    .collect();
                // Until records arrive, the reader is where the group left off; a
                // partition never committed starts at the beginning
                // (`auto.offset.reset=earliest`).
                reader.next = reader
                    .partitions
                    .iter()
                    .map(|&p| (p, reader.committed.get(&p).copied().unwrap_or(0)))
                    .collect();
                let topics: Vec<&str> = reader.topics.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&topics)
                    .map_err(|e| unavailable("subscribe", e))?;
            }
            StartFrom::Beginning => reader.assign(&consumer, &[])?,
            StartFrom::Positions(positions) => reader.assign(&consumer, &positions)?,
        }
        debug!(topics = ?reader.topics, group = ?reader.group, next = ?reader.next, "kafka reader opened");
        // The end of the log as of now: the first proof of being caught up needs it.
        reader.refresh_watermarks(consumer);
        Ok(reader)
    }

    /// Assigns every partition explicitly: from the given next offsets, the others from
    /// the beginning. An offset the partition no longer (or never) had falls back to the
    /// earliest one (`auto.offset.reset=earliest`): replaying is safe, skipping is not.
    fn assign(&mut self, consumer: &Kafka, positions: &[Position]) -> Result<(), BackendError> {
        let named: HashMap<u32, i64> = positions
            .iter()
            .map(|p| (p.partition, offset_value(p.offset)))
            .collect();
        for p in named.keys().filter(|p| !self.partitions.contains(p)) {
            let (lane, partition) = split_partition(*p);
            warn!(topic = ?self.topics.get(lane), partition, "start position names a partition the topics do not have");
        }
        let mut tpl = TopicPartitionList::with_capacity(self.partitions.len());
        for &p in &self.partitions {
            let (offset, next) = match named.get(&p) {
                Some(&o) => (Offset::Offset(o), o),
                None => (Offset::Beginning, 0),
            };
            let (topic, partition) = self.topic_partition(p)?;
            tpl.add_partition_offset(topic, partition, offset)
                .map_err(|e| {
                    BackendError::other(format!("kafka assignment: {e}")).with_source(e)
                })?;
            self.next.insert(p, next);
        }
        consumer
            .assign(&tpl)
            .map_err(|e| unavailable("assign partitions", e))
    }

    /// The topic and Kafka partition of a position's partition number.
    fn topic_partition(&self, p: u32) -> Result<(&str, i32), BackendError> {
        let (lane, partition) = split_partition(p);
        self.topics
            .get(lane)
            .map(|t| (t.as_str(), partition))
            .ok_or_else(|| {
                BackendError::other(format!("kafka reader has no topic for partition {p}"))
            })
    }

    /// The position's partition number of a record or an assignment element.
    fn lane_of(&self, topic: &str, partition: i32) -> Option<u32> {
        let lane = self.topics.iter().position(|t| t == topic)?;
        Some(lane_partition(lane, partition))
    }

    /// The partitions this group member owns now, as position partition numbers.
    fn assigned(&self, consumer: &Kafka) -> Result<BTreeSet<u32>, BackendError> {
        Ok(consumer
            .assignment()
            .map_err(|e| unavailable("assignment", e))?
            .elements()
            .iter()
            .filter_map(|e| self.lane_of(e.topic(), e.partition()))
            .collect())
    }

    fn consumer(&self) -> Result<Arc<Kafka>, BackendError> {
        self.consumer
            .clone()
            .ok_or_else(|| BackendError::other("kafka reader is closed"))
    }

    fn stuck_error(&self) -> Option<BackendError> {
        self.stuck
            .as_ref()
            .map(|(position, message)| BackendError::corrupt(position.clone(), message.clone()))
    }

    /// Decodes one record into `out`, or marks the reader stuck on it.
    fn take(&mut self, message: &BorrowedMessage<'_>, out: &mut Vec<LogRecord>) {
        let (topic, offset) = (message.topic(), message.offset());
        let Some(partition) = self.lane_of(topic, message.partition()) else {
            warn!(%topic, "record from a topic this reader does not read, skipped");
            return;
        };
        let decoded = match message.payload() {
            Some(bytes) => Event::from_json(bytes).map_err(|e| e.to_string()),
            None => Err("record has no value".to_owned()),
        };
        match decoded {
            Ok(event) => {
                self.next.insert(partition, offset.saturating_add(1));
                out.push(LogRecord {
                    position: Position {
                        partition,
                        offset: u64::try_from(offset).unwrap_or_default(),
                    },
                    event,
                });
            }
            Err(error) => {
                let position = format!("{topic}/{}@{offset}", message.partition());
                warn!(%position, %error, "undecodable record in the log, reader stops here");
                self.stuck = Some((position, error));
            }
        }
    }

    /// Starts a background refresh of the watermarks unless one ran recently or is
    /// running. `lag` reads the cache, so it never waits on the network.
    fn refresh_watermarks(&self, consumer: Arc<Kafka>) {
        {
            let mut cache = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = cache
                .refreshed_at
                .is_some_and(|t| t.elapsed() < WATERMARK_REFRESH);
            if cache.refreshing.is_some() || fresh {
                return;
            }
            cache.refreshing = Some(Instant::now());
        }
        let cache = self.watermarks.clone();
        let topics = self.topics.clone();
        let partitions: BTreeSet<u32> = self
            .partitions
            .iter()
            .chain(self.next.keys())
            .copied()
            .collect();
        let timeout = self.operation_timeout.min(WATERMARK_TIMEOUT);
        // Holding the consumer here is fine: if the reader goes away meanwhile, the
        // consumer is closed on this blocking thread.
        tokio::task::spawn_blocking(move || {
            let asked_at = ledger_clock::now();
            let mut fetched = HashMap::with_capacity(partitions.len());
            let mut error = None;
            for p in partitions {
                let (lane, partition) = split_partition(p);
                let Some(topic) = topics.get(lane) else {
                    continue;
                };
                match consumer.fetch_watermarks(topic, partition, timeout) {
                    Ok(w) => {
                        fetched.insert(p, w);
                    }
                    Err(e) => {
                        // The brokers are likely unreachable: the other partitions
                        // would only wait as long again.
                        debug!(%topic, partition, error = %e, "kafka watermarks unknown");
                        error = Some(format!("watermarks of {topic}/{partition}: {e}"));
                        break;
                    }
                }
            }
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if error.is_some() {
                // Unknown watermarks: an unknown lag, and nothing to prove progress by.
                cache.by_partition.clear();
                cache.asked_at = None;
            } else {
                cache.by_partition = fetched;
                cache.asked_at = Some(asked_at);
            }
            cache.error = error;
            cache.refreshed_at = Some(Instant::now());
            cache.refreshing = None;
        });
    }

    /// The partitions the reader must have read to the end: those it owns as a group
    /// member (none before its first assignment), every partition otherwise.
    fn owned(&self) -> Option<Vec<u32>> {
        if self.group.is_none() {
            return Some(self.partitions.clone());
        }
        let assigned = self.assigned(self.consumer.as_ref()?).ok()?;
        (!assigned.is_empty()).then(|| assigned.into_iter().collect())
    }

    /// Moves [`LogReader::caught_up_at`] forward when the positions reached the high
    /// watermarks of the latest complete watermark request.
    fn prove_caught_up(&mut self) {
        let Some(owned) = self.owned() else {
            return;
        };
        let cache = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(asked_at) = cache.asked_at else {
            return;
        };
        if self.caught_up_at >= Some(asked_at) {
            return;
        }
        let at_end = owned.iter().all(|p| {
            cache
                .by_partition
                .get(p)
                .is_some_and(|&(low, high)| self.next.get(p).copied().unwrap_or(0).max(low) >= high)
        });
        if at_end {
            self.caught_up_at = Some(asked_at);
        }
    }

    /// Why the brokers could not be read: the latest watermark request failed, or has
    /// had no answer for a while (a hung broker keeps its connections open).
    fn broker_error(&self) -> Option<BackendError> {
        let cache = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &cache.error {
            return Some(unavailable("read", e.clone()));
        }
        let waiting = cache.refreshing?.elapsed();
        (waiting >= UNANSWERED).then(|| {
            unavailable(
                "read",
                format!("no answer to a watermark request for {waiting:?}"),
            )
        })
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        // Closing a consumer leaves its group and waits for librdkafka: keep that off
        // the async runtime.
        // Without a runtime (dropped outside one), it is simply dropped here.
        if let Some(consumer) = self.consumer.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn_blocking(move || drop(consumer));
        }
    }
}

fn offset_value(o: u64) -> i64 {
    i64::try_from(o).unwrap_or(i64::MAX)
}

#[async_trait]
impl LogReader for KafkaReader {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, BackendError> {
        if let Some(e) = self.stuck_error() {
            return Err(e);
        }
        let consumer = self.consumer()?;
        self.prove_caught_up();
        let mut out = Vec::new();
        let mut failed = None;
        if max > 0 {
            // Wait (at most `wait`) for the first record only, then take what is
            // already queued, so a flowing log is returned without delay. Errors
            // librdkafka queued (brokers down, transport failures) are taken and
            // remembered until then, not returned one per poll: after an outage their
            // backlog would otherwise hold the reader back long after the brokers
            // are back.
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Err(_elapsed) => break,
                    Ok(Err(e)) => failed = Some(unavailable("poll", e)),
                    Ok(Ok(message)) => {
                        // Records are flowing: room for the whole batch at once, rather
                        // than the vector growing (and moving) a dozen times.
                        out.reserve(max);
                        self.take(&message, &mut out);
                        break;
                    }
                }
            }
            while !out.is_empty() && out.len() < max && self.stuck.is_none() {
                match consumer.recv().now_or_never() {
                    None => break,
                    Some(Ok(message)) => self.take(&message, &mut out),
                    Some(Err(e)) => {
                        // The records already taken are returned; the error shows
                        // again on the next poll if it persists.
                        warn!(topics = ?self.topics, error = %e, "kafka poll failed after a partial batch");
                        break;
                    }
                }
            }
        }
        self.refresh_watermarks(consumer);
        self.prove_caught_up();
        if out.is_empty() {
            // Nothing read and the brokers unreachable: say so rather than look idle.
            if let Some(e) = self
                .stuck_error()
                .or(failed)
                .or_else(|| self.broker_error())
            {
                return Err(e);
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, next: &[Position]) -> Result<(), BackendError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        let consumer = self.consumer()?;
        // Only partitions this member owns now: after a rebalance another member may
        // own (and have committed further on) a partition this reader once read.
        let assigned = self.assigned(&consumer)?;
        let mut wanted: Vec<(u32, i64)> = next
            .iter()
            .map(|p| (p.partition, offset_value(p.offset)))
            .collect();
        wanted.sort_unstable();
        let mut tpl = TopicPartitionList::with_capacity(wanted.len());
        let mut committing = Vec::with_capacity(wanted.len());
        for (p, offset) in wanted {
            if !assigned.contains(&p) {
                debug!(%group, partition = p, offset, "not committing a partition this member does not own");
                continue;
            }
            // Commits only move forward.
            if self.committed.get(&p).is_some_and(|&c| c >= offset) {
                continue;
            }
            let (topic, partition) = self.topic_partition(p)?;
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| BackendError::other(format!("kafka commit: {e}")).with_source(e))?;
            committing.push((p, offset));
        }
        if committing.is_empty() {
            return Ok(());
        }
        blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await?
            .map_err(|e| unavailable("commit", e))?;
        debug!(%group, offsets = ?committing, "kafka offsets committed");
        self.committed.extend(committing);
        Ok(())
    }

    fn positions(&self) -> Vec<Position> {
        self.next
            .iter()
            .map(|(&p, &o)| Position {
                partition: p,
                offset: u64::try_from(o).unwrap_or_default(),
            })
            .collect()
    }

    fn lag(&self) -> Option<u64> {
        // A group member lags only on what it owns; before its first assignment the lag
        // is unknown, not zero.
        let partitions = self.owned()?;
        let cache = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        cache.refreshed_at?;
        let mut lag = 0u64;
        for p in partitions {
            let &(low, high) = cache.by_partition.get(&p)?;
            let next = self.next.get(&p).copied().unwrap_or(0).max(low);
            lag = lag.saturating_add(u64::try_from(high.saturating_sub(next)).unwrap_or(0));
        }
        Some(lag)
    }

    fn caught_up_at(&self) -> Option<Timestamp> {
        self.caught_up_at
    }
}
