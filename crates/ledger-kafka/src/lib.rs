//! The Apache Kafka adapter: the event log (D1) on a Kafka topic.
//!
//! [`KafkaLog`] implements [`EventLog`] with an idempotent producer (`acks=all`) that
//! answers only once every delivery report came back, and [`LogSource`] with readers
//! ([`KafkaReader`]) that either tail the topic from explicit positions (validators,
//! replays) or resume from a consumer group's committed offsets (the projector).
//!
//! Several regions: the log of a region is its own topic (appended to) plus the
//! topics replicated from the other regions ([`KafkaConfig::remote_topics`], e.g.
//! `west.session-events` as MirrorMaker 2 names it). Readers read them all; a
//! [`Position`]'s partition number names the topic too (see [`lane_partition`]).
//!
//! Records are keyed by [`Event::partition_key`] (the family id), so one family's
//! events stay in one partition, in order. The value is the event's JSON
//! ([`Event::to_json`]); headers carry `event_type`, `event_id` and, when the event has
//! one, the W3C trace context (`traceparent`, `tracestate`) of the request behind it
//! (D9).
//!
//! **Invariant** (I1): [`EventLog::append`] returns `Ok` only after the broker
//! acknowledged every event to all in-sync replicas.

mod context;
mod fence;
mod reader;
pub mod revocations;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use ledger_core::Event;
use ledger_core::ports::{
    BackendError, BoxError, EventLog, LogReader, LogSource, Position, StartFrom,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::context::LogContext;

pub use fence::{KafkaFence, KafkaLogEnd, partition_for};
pub use reader::KafkaReader;
pub use revocations::{RevocationPublisher, RevocationTopic};

/// How to reach the cluster and which topic holds the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// The topic holding the log; created by [`KafkaLog::connect`] when absent.
    pub topic: String,
    /// Topics replicated into this cluster from other regions, read after `topic`
    /// (never appended to). Order matters: a topic's place in this list is part of
    /// its positions ([`lane_partition`]), so new topics go at the end.
    pub remote_topics: Vec<String>,
    /// Partitions of the topic when it is created (an existing topic keeps its own).
    pub partitions: i32,
    /// Replication factor of the topic when it is created.
    pub replication_factor: i32,
    /// How long a record may take to be acknowledged (`message.timeout.ms`) before
    /// `append` gives up with [`BackendError::Unavailable`].
    pub delivery_timeout: Duration,
    /// Bound on metadata, admin, offset and commit requests.
    pub operation_timeout: Duration,
    /// Extra librdkafka settings for the producer and the admin client (applied last,
    /// so they override the adapter's own).
    pub producer_settings: Vec<(String, String)>,
    /// Extra librdkafka settings for readers and [`LogSource::committed`] (applied
    /// last).
    pub consumer_settings: Vec<(String, String)>,
    /// This instance's stable name (`group.instance.id`, static membership): a group
    /// member restarted under the same name takes its partitions back at once, instead
    /// of waiting for the killed member's session to time out. Unique per member of
    /// a group; `None` joins with a fresh identity each time.
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms` of group members: how long a member that stopped
    /// heartbeating (killed) keeps its partitions from the others.
    pub group_session_timeout: Duration,
}

impl KafkaConfig {
    /// A configuration with defaults suited to a single-broker development cluster:
    /// 12 partitions, replication factor 1, 10 s delivery and operation timeouts.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            remote_topics: Vec::new(),
            partitions: 12,
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(10),
            producer_settings: Vec::new(),
            consumer_settings: Vec::new(),
            group_instance_id: None,
            group_session_timeout: Duration::from_secs(10),
        }
    }

    fn validate(&self) -> Result<(), BackendError> {
        if self.brokers.trim().is_empty() {
            return Err(BackendError::other("kafka brokers must not be empty"));
        }
        if self.topic.trim().is_empty() || self.remote_topics.iter().any(|t| t.trim().is_empty()) {
            return Err(BackendError::other("kafka topic must not be empty"));
        }
        let topics = self.topics();
        if topics.len() >= LANES || (1..topics.len()).any(|i| topics[..i].contains(&topics[i])) {
            return Err(BackendError::other(format!(
                "kafka topics must be distinct and fewer than {LANES} (got {topics:?})"
            )));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err(BackendError::other(format!(
                "kafka topic needs at least one partition and one replica (got {} and {})",
                self.partitions, self.replication_factor
            )));
        }
        if self
            .group_instance_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty() || id.len() > 249)
        {
            return Err(BackendError::other(
                "kafka group instance id must be 1 to 249 characters",
            ));
        }
        if self.delivery_timeout.is_zero() || self.operation_timeout.is_zero() {
            return Err(BackendError::other(
                "kafka delivery and operation timeouts must be greater than zero",
            ));
        }
        Ok(())
    }

    /// Every topic a reader reads, in lane order: the topic appended to, then the
    /// remote topics.
    pub fn topics(&self) -> Vec<&str> {
        std::iter::once(self.topic.as_str())
            .chain(self.remote_topics.iter().map(String::as_str))
            .collect()
    }

    /// Settings every client shares.
    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "session-ledger")
            // Small requests on the request path: never hold them back for Nagle.
            .set("socket.nagle.disable", "true");
        c
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            // `delivery.timeout.ms` is librdkafka's alias of this one.
            .set("message.timeout.ms", millis(self.delivery_timeout))
            // Small: appends are on the request path; batching only what arrives together.
            .set("linger.ms", "2")
            // librdkafka's default, pinned: `KafkaFence` computes the same partitions.
            .set("partitioner", "consistent_random");
        for (k, v) in &self.producer_settings {
            c.set(k, v);
        }
        c
    }

    fn admin_config(&self) -> ClientConfig {
        let mut c = self.base();
        for (k, v) in &self.producer_settings {
            c.set(k, v);
        }
        c
    }

    /// A consumer of `group` that never commits by itself: offsets are committed only
    /// by [`LogReader::commit`], so a rebalance cannot commit past what the caller
    /// processed.
    fn consumer_config(&self, group: &str) -> ClientConfig {
        self.consumer_config_as(group, false)
    }

    /// [`KafkaConfig::consumer_config`], for a member that joins `group` when `member`
    /// is set: static membership when the instance has a name, and the session timeout.
    fn consumer_config_as(&self, group: &str, member: bool) -> ClientConfig {
        let mut c = self.base();
        if member {
            c.set("session.timeout.ms", millis(self.group_session_timeout));
            // librdkafka wants heartbeats well within the session timeout.
            c.set(
                "heartbeat.interval.ms",
                millis(self.group_session_timeout / 4),
            );
            if let Some(id) = &self.group_instance_id {
                c.set("group.instance.id", id);
            }
        }
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Validators tail the log: a quiet partition's fetch returns within this, so
            // a revocation that lands meanwhile is seen promptly (propagation bound).
            .set("fetch.wait.max.ms", "20")
            // A reader catching up (a replay, a projector after a restart) fills the
            // local queue faster than it folds; once the queue is full librdkafka
            // waits this long before fetching again (1 s by default, during which
            // the reader empties the queue and then idles).
            .set("fetch.queue.backoff.ms", "20");
        for (k, v) in &self.consumer_settings {
            c.set(k, v);
        }
        c
    }
}

/// Bits of a [`Position`]'s partition number that hold the Kafka partition; the
/// bits above name the topic (its lane: 0 = the topic appended to, 1.. the remote
/// topics in configuration order). A one-topic log's positions are thus the plain
/// Kafka partitions, as before regions existed.
const PARTITION_BITS: u32 = 16;
/// At most this many topics (lanes) per reader.
const LANES: usize = 1 << 15;

/// The partition number of a [`Position`] for Kafka partition `partition` of the
/// topic in `lane`.
pub fn lane_partition(lane: usize, partition: i32) -> u32 {
    let lane = u32::try_from(lane).unwrap_or(u32::MAX >> PARTITION_BITS);
    (lane << PARTITION_BITS) | (u32::try_from(partition).unwrap_or_default() & 0xffff)
}

/// The (lane, Kafka partition) a [`Position`]'s partition number stands for.
pub fn split_partition(partition: u32) -> (usize, i32) {
    (
        usize::try_from(partition >> PARTITION_BITS).unwrap_or(usize::MAX),
        i32::try_from(partition & 0xffff).unwrap_or_default(),
    )
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// The event log on a Kafka topic. Cheap to clone; clones share one producer.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    /// Replaced as a whole when librdkafka reports a fatal error (an idempotent
    /// producer cannot recover from one); appends in flight keep their own `Arc`.
    producer: RwLock<Arc<FutureProducer<LogContext>>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.inner.config.brokers)
            .field("topic", &self.inner.config.topic)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl Into<BoxError> + std::fmt::Display) -> BackendError {
    BackendError::unavailable(format!("kafka: {what}: {e}")).with_source(e)
}

impl KafkaLog {
    /// Builds the producer and creates the topic when it is absent (with the configured
    /// partitions and replication factor), waiting until the cluster reports it.
    pub async fn connect(config: KafkaConfig) -> Result<Self, BackendError> {
        let log = Self::new(config)?;
        log.ensure_topic().await?;
        Ok(log)
    }

    /// Builds the producer without contacting the cluster and without creating the
    /// topic (librdkafka connects lazily). [`KafkaLog::connect`] is the usual entry.
    pub fn new(config: KafkaConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let producer = build_producer(&config)?;
        Ok(KafkaLog {
            inner: Arc::new(Inner {
                config,
                producer: RwLock::new(Arc::new(producer)),
            }),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// Creates the topic when absent ("already exists" is fine), then waits until its
    /// partitions show in the cluster metadata.
    pub async fn ensure_topic(&self) -> Result<(), BackendError> {
        let config = &self.inner.config;
        let admin: AdminClient<LogContext> = config
            .admin_config()
            .create_with_context(LogContext)
            .map_err(|e| BackendError::other(format!("kafka admin client: {e}")).with_source(e))?;
        // Remote topics too: MirrorMaker creates them on its first replication, but
        // readers must be able to start before that. Same partition count as the
        // topic appended to (every region's), so MirrorMaker's partition-for-partition
        // copy fits.
        let topics: Vec<NewTopic<'_>> = config
            .topics()
            .into_iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    config.partitions,
                    TopicReplication::Fixed(config.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new().request_timeout(Some(config.operation_timeout));
        let created = tokio::time::timeout(
            config.operation_timeout,
            admin.create_topics(topics.iter(), &options),
        )
        .await;
        // The admin client joins its polling thread when dropped.
        tokio::task::spawn_blocking(move || drop(admin));
        let results = created
            .map_err(|_| {
                unavailable(
                    "create topic",
                    format!("no answer within {:?}", config.operation_timeout),
                )
            })?
            .map_err(|e| unavailable("create topic", e))?;
        for result in results {
            match result {
                Ok(name) => info!(topic = %name, partitions = config.partitions,
                    replication_factor = config.replication_factor, "created kafka topic"),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    debug!(topic = %name, "kafka topic already exists");
                }
                Err((name, code)) => {
                    return Err(unavailable(&format!("create topic {name}"), code));
                }
            }
        }
        // A topic just created takes a moment to show in every broker's metadata.
        let deadline = tokio::time::Instant::now() + config.operation_timeout;
        loop {
            match self.all_partitions().await {
                Ok(partitions) if partitions.iter().all(|p| !p.is_empty()) => return Ok(()),
                Ok(_) => {}
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => debug!(error = %e, "waiting for topic metadata"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(
                    "topic metadata",
                    format!("topic {} has no partitions", config.topic),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The topic's partition ids, from the cluster metadata.
    pub async fn partitions(&self) -> Result<Vec<i32>, BackendError> {
        let producer = self.producer();
        let topic = self.inner.config.topic.clone();
        let timeout = self.inner.config.operation_timeout;
        blocking(move || topic_partitions(producer.client(), &topic, timeout)).await?
    }

    /// The partition ids of every topic read, in lane order.
    async fn all_partitions(&self) -> Result<Vec<Vec<i32>>, BackendError> {
        let producer = self.producer();
        let config = self.inner.config.clone();
        blocking(move || {
            config
                .topics()
                .into_iter()
                .map(|t| topic_partitions(producer.client(), t, config.operation_timeout))
                .collect()
        })
        .await?
    }

    /// The current producer; a new one when the current one hit a fatal error.
    fn producer(&self) -> Arc<FutureProducer<LogContext>> {
        let current = self
            .inner
            .producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if current.client().fatal_error().is_some() {
            self.replace_if_fatal(&current)
        } else {
            current
        }
    }

    /// Replaces `failed` when librdkafka reports a fatal error on it, unless another
    /// caller already did; returns the producer to use from now on.
    fn replace_if_fatal(
        &self,
        failed: &Arc<FutureProducer<LogContext>>,
    ) -> Arc<FutureProducer<LogContext>> {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return failed.clone();
        };
        let mut slot = self
            .inner
            .producer
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&slot, failed) {
            return slot.clone();
        }
        let fresh = match build_producer(&self.inner.config) {
            Ok(fresh) => Arc::new(fresh),
            Err(e) => {
                warn!(%code, %reason, error = %e, "kafka producer hit a fatal error and could not be rebuilt");
                return slot.clone();
            }
        };
        warn!(%code, %reason, "kafka producer hit a fatal error, replaced it");
        let old = std::mem::replace(&mut *slot, fresh.clone());
        drop(slot);
        // Dropping a producer joins its polling thread: not on the runtime.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || drop(old));
        }
        fresh
    }
}

fn build_producer(config: &KafkaConfig) -> Result<FutureProducer<LogContext>, BackendError> {
    config
        .producer_config()
        .create_with_context(LogContext)
        .map_err(|e| BackendError::other(format!("kafka producer: {e}")).with_source(e))
}

/// Runs a blocking librdkafka call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::other(format!("kafka task failed: {e}")).with_source(e))
}

/// The partition ids of `topic` (blocking).
fn topic_partitions<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, BackendError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| unavailable("fetch metadata", e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(unavailable(
            "fetch metadata",
            format!("topic {topic} not found"),
        ));
    };
    if let Some(err) = t.error() {
        let code: RDKafkaErrorCode = err.into();
        return Err(unavailable(&format!("topic {topic}"), code));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Headers of an event's record: its type and id, and the W3C trace context (D9).
fn headers(event: &Event) -> OwnedHeaders {
    let event_id = event.event_id.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "event_type",
            value: Some(event.event_type()),
        })
        .insert(Header {
            key: "event_id",
            value: Some(event_id.as_str()),
        });
    if let Some(trace) = &event.trace_context {
        headers = headers.insert(Header {
            key: "traceparent",
            value: Some(trace.traceparent.as_str()),
        });
        if let Some(state) = &trace.tracestate {
            headers = headers.insert(Header {
                key: "tracestate",
                value: Some(state.as_str()),
            });
        }
    }
    headers
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn append(&self, events: &[Event]) -> Result<(), BackendError> {
        if events.is_empty() {
            return Ok(());
        }
        let config = &self.inner.config;
        let producer = self.producer();
        // librdkafka reports every record within `message.timeout.ms`; the extra
        // margin only guards against a report that never comes.
        let deadline =
            tokio::time::Instant::now() + config.delivery_timeout + Duration::from_secs(5);

        // Enqueue in order (one family's events keep their order within a partition),
        // then wait for every delivery report.
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let key = event.partition_key();
            let payload = event.to_json();
            let mut record = FutureRecord::to(&config.topic)
                .key(&key)
                .payload(&payload)
                .headers(headers(event));
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        self.replace_if_fatal(&producer);
                        warn!(topic = %config.topic, error = %e, "kafka append not enqueued");
                        return Err(unavailable("enqueue", e));
                    }
                }
            }
        }

        let reports = tokio::time::timeout_at(deadline, join_all(deliveries))
            .await
            .map_err(|_| {
                unavailable(
                    "delivery",
                    format!("not acknowledged within {:?}", config.delivery_timeout),
                )
            })?;
        let mut failure = None;
        for report in reports {
            match report {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failure.get_or_insert_with(|| unavailable("delivery", e));
                }
                Err(_canceled) => {
                    failure.get_or_insert_with(|| {
                        unavailable("delivery", "producer dropped the delivery report")
                    });
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(e) => {
                self.replace_if_fatal(&producer);
                warn!(topic = %config.topic, events = events.len(), error = %e, "kafka append failed");
                Err(e)
            }
        }
    }
}

#[async_trait]
impl LogSource for KafkaLog {
    async fn reader(&self, start: StartFrom) -> Result<Box<dyn LogReader>, BackendError> {
        Ok(Box::new(
            KafkaReader::open(&self.inner.config, start).await?,
        ))
    }

    async fn committed(&self, group: &str) -> Result<Vec<Position>, BackendError> {
        let config = self.inner.config.clone();
        let group = group.to_owned();
        blocking(move || {
            let consumer: BaseConsumer<LogContext> = config
                .consumer_config(&group)
                .create_with_context(LogContext)
                .map_err(|e| BackendError::other(format!("kafka consumer: {e}")).with_source(e))?;
            let mut positions = Vec::new();
            for (lane, topic) in config.topics().into_iter().enumerate() {
                let partitions =
                    topic_partitions(consumer.client(), topic, config.operation_timeout)?;
                positions.extend(committed_offsets(
                    &consumer,
                    lane,
                    topic,
                    &partitions,
                    config.operation_timeout,
                )?);
            }
            Ok(positions)
        })
        .await?
    }
}

/// The group's committed next offsets for `partitions` (blocking); partitions without
/// a commit are left out.
///
/// While the group's coordinator moves or loads (a fresh cluster creating its offsets
/// topic, a broker failing over), the broker answers "not coordinator" or "loading":
/// asked again until `timeout`, as librdkafka does not.
fn committed_offsets<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    lane: usize,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<Position>, BackendError> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let deadline = Instant::now() + timeout;
    let committed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.committed_offsets(tpl.clone(), left) {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotCoordinator
                            | RDKafkaErrorCode::CoordinatorLoadInProgress
                            | RDKafkaErrorCode::CoordinatorNotAvailable
                    )
                ) && !left.is_zero() =>
            {
                std::thread::sleep(Duration::from_millis(100).min(left));
            }
            result => break result.map_err(|e| unavailable("committed offsets", e))?,
        }
    };
    let mut positions: Vec<Position> = committed
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(Position {
                partition: lane_partition(lane, e.partition()),
                offset: u64::try_from(o).ok()?,
            }),
            _ => None,
        })
        .collect();
    positions.sort_unstable();
    Ok(positions)
}
