//! The public revocation topic: one record per revocation, keyed by family id (or
//! `subject:<subject>`), the value a [`RevocationRecord`] in JSON
//! (`schemas/revocation.schema.json`), and a tombstone once its `keep_until` has
//! passed. The topic is log-compacted, so a consumer reading it from the start ends
//! with exactly the revocations in force.
//!
//! [`RevocationPublisher`] derives the records from the event log through its own
//! consumer group and commits only after the broker acknowledged them; a record is a
//! pure function of its event, so redelivery republishes the same key and value.
//! Which tombstones are still due is read back from the topic itself on start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::ports::{BackendError, LogSource, StartFrom};
use ledger_core::{RevocationRecord, Timestamp};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::LogContext;
use crate::{KafkaConfig, blocking, topic_partitions, unavailable};

/// Topic settings of the revocation topic: compacted, tombstones kept a day so a
/// consumer that was away sees the withdrawal.
const TOPIC_CONFIG: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("delete.retention.ms", "86400000"),
    ("min.cleanable.dirty.ratio", "0.1"),
    ("segment.ms", "3600000"),
];

/// Writes and reads the revocation topic.
pub struct RevocationTopic {
    config: KafkaConfig,
    producer: FutureProducer<LogContext>,
}

impl std::fmt::Debug for RevocationTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationTopic")
            .field("topic", &self.config.topic)
            .finish_non_exhaustive()
    }
}

impl RevocationTopic {
    /// Creates the compacted topic when absent (`config.topic`; partitions and
    /// replication as configured).
    pub async fn connect(config: KafkaConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let admin: AdminClient<LogContext> = config
            .admin_config()
            .create_with_context(LogContext)
            .map_err(|e| BackendError::other(format!("kafka admin client: {e}")).with_source(e))?;
        let mut topic = NewTopic::new(
            &config.topic,
            config.partitions,
            TopicReplication::Fixed(config.replication_factor),
        );
        for (k, v) in TOPIC_CONFIG {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().request_timeout(Some(config.operation_timeout));
        let created = tokio::time::timeout(
            config.operation_timeout,
            admin.create_topics([&topic], &options),
        )
        .await;
        tokio::task::spawn_blocking(move || drop(admin));
        let results = created
            .map_err(|_| unavailable("create topic", "no answer"))?
            .map_err(|e| unavailable("create topic", e))?;
        for result in results {
            match result {
                Ok(name) => info!(topic = %name, "created compacted revocation topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(unavailable(&format!("create topic {name}"), code));
                }
            }
        }
        let producer = config
            .producer_config()
            .create_with_context(LogContext)
            .map_err(|e| BackendError::other(format!("kafka producer: {e}")).with_source(e))?;
        Ok(RevocationTopic { config, producer })
    }

    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Publishes `value` (a tombstone when `None`) under `key`; returns once the
    /// broker acknowledged it (acks=all).
    pub async fn publish(&self, key: &str, value: Option<&[u8]>) -> Result<(), BackendError> {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.config.topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.producer
            .send(record, self.config.delivery_timeout)
            .await
            .map(drop)
            .map_err(|(e, _)| unavailable("publish revocation", e))
    }

    /// The topic's current content, read from the start to the end: key → record,
    /// tombstoned keys left out.
    pub async fn current(&self) -> Result<HashMap<String, RevocationRecord>, BackendError> {
        let config = self.config.clone();
        blocking(move || read_all(&config)).await?
    }
}

fn read_all(config: &KafkaConfig) -> Result<HashMap<String, RevocationRecord>, BackendError> {
    let mut c: ClientConfig = config.base();
    c.set("group.id", format!("{}.startup-read", config.topic))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| BackendError::other(format!("kafka consumer: {e}")).with_source(e))?;
    let timeout = config.operation_timeout;
    let partitions = topic_partitions(consumer.client(), &config.topic, timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&config.topic, p, timeout)
            .map_err(|e| unavailable("watermarks", e))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(&config.topic, p, Offset::Beginning)
                .map_err(|e| {
                    BackendError::other(format!("kafka assignment: {e}")).with_source(e)
                })?;
        }
    }
    let mut out = HashMap::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| BackendError::other(format!("kafka assignment: {e}")).with_source(e))?;
    let deadline = std::time::Instant::now() + timeout * 6;
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(unavailable(
                "read revocation topic",
                "did not reach its end in time",
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.map_err(|e| unavailable("read revocation topic", e))?;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        match message.payload() {
            None => {
                out.remove(&key);
            }
            Some(bytes) => match RevocationRecord::from_json(bytes) {
                Ok(r) => {
                    out.insert(key, r);
                }
                Err(e) => warn!(%key, error = %e, "unreadable revocation record ignored"),
            },
        }
        let p = message.partition();
        if ends
            .get(&p)
            .is_some_and(|high| message.offset() + 1 >= *high)
        {
            ends.remove(&p);
        }
    }
    Ok(out)
}

/// Publishes the log's revocations to the revocation topic and withdraws each once
/// its `keep_until` has passed.
#[derive(Debug)]
pub struct RevocationPublisher {
    topic: Arc<RevocationTopic>,
    source: Arc<dyn LogSource>,
    group: String,
}

impl RevocationPublisher {
    pub fn new(
        topic: RevocationTopic,
        source: Arc<dyn LogSource>,
        group: impl Into<String>,
    ) -> Self {
        RevocationPublisher {
            topic: Arc::new(topic),
            source,
            group: group.into(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BackendError> {
        // Until when each key still on the topic is in force.
        let mut live: HashMap<String, Timestamp> = loop {
            match self.topic.current().await {
                Ok(current) => {
                    break current
                        .into_iter()
                        .map(|(k, r)| (k, r.keep_until))
                        .collect();
                }
                Err(e) => warn!(error = %e, "revocation topic: cannot read it back; retrying"),
            }
            if pause(&shutdown, Duration::from_secs(1)).await {
                return Ok(());
            }
        };
        let mut reader = loop {
            match self
                .source
                .reader(StartFrom::Committed {
                    group: self.group.clone(),
                })
                .await
            {
                Ok(r) => break r,
                Err(e) => warn!(error = %e, "revocation topic: cannot open the log; retrying"),
            }
            if pause(&shutdown, Duration::from_secs(1)).await {
                return Ok(());
            }
        };
        info!(topic = %self.topic.topic(), in_force = live.len(), "revocation publisher started");
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                b = reader.poll(256, Duration::from_millis(250)) => b,
            };
            match batch {
                Ok(batch) => {
                    let now = ledger_clock::now();
                    for record in batch
                        .iter()
                        .filter_map(|r| RevocationRecord::from_event(&r.event))
                    {
                        let key = record.key();
                        let value = record.in_force(now).then(|| record.to_json());
                        // Retried until acknowledged: positions move only after.
                        while let Err(e) = self.topic.publish(&key, value.as_deref()).await {
                            warn!(%key, error = %e, "revocation topic: publish failed; retrying");
                            if pause(&shutdown, Duration::from_secs(1)).await {
                                return Ok(());
                            }
                        }
                        if value.is_some() {
                            let until = live.entry(key).or_insert(record.keep_until);
                            *until = (*until).max(record.keep_until);
                        }
                    }
                    if !batch.is_empty() {
                        let next = reader.positions();
                        if let Err(e) = reader.commit(&next).await {
                            warn!(error = %e, "revocation topic: commit failed");
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "revocation topic: log read failed; retrying");
                    if pause(&shutdown, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                }
            }
            // Withdraw what no longer governs any token.
            let now = ledger_clock::now();
            let due: Vec<String> = live
                .iter()
                .filter(|(_, u)| **u <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                match self.topic.publish(&key, None).await {
                    Ok(()) => {
                        live.remove(&key);
                        info!(%key, "revocation withdrawn (tombstone)");
                    }
                    Err(e) => {
                        warn!(%key, error = %e, "revocation topic: tombstone failed; will retry")
                    }
                }
            }
        }
    }
}

async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
