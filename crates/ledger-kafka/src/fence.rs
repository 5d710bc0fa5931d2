//! Read-after-write across API instances, and after arrival from other regions:
//! [`KafkaFence`] waits for the projector's checkpoint, [`KafkaLogEnd`] tells a reader
//! of this process how far it has to read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledger_core::ports::{BackendError, LogEnd, Position, ProjectionFence};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::context::LogContext;
use crate::{
    KafkaConfig, blocking, committed_offsets, lane_partition, topic_partitions, unavailable,
};

/// How often the projector's checkpoint is read again while waiting for it.
const RECHECK: Duration = Duration::from_millis(5);
/// How long [`KafkaLogEnd`] uses the earliest offsets it read before asking again.
const EARLIEST_REFRESH: Duration = Duration::from_secs(5);

/// Offsets per (topic, partition).
type Offsets = HashMap<(String, i32), i64>;
/// The earliest offsets [`KafkaLogEnd`] read, and when it asked for them.
type Earliest = Option<(Instant, Arc<Offsets>)>;

/// Waits until the projector's consumer group has committed past the end the key's
/// partition had when the call began, in the own topic and in every remote topic. The
/// projector commits only after the store acknowledged, so the projection then holds
/// every event with that key that any instance appended before, and every one that
/// had arrived from another region: a signout on one API instance is seen by a
/// refresh on another, and a revocation a region's validators enforce is seen by its
/// API. (MirrorMaker 2 keeps partition numbers, so a key has the same partition in a
/// remote topic.)
///
/// The partition of a key is librdkafka's `consistent_random` partitioner's choice
/// (CRC-32 of the key modulo the partition count, [`partition_for`]), which the
/// producer is pinned to; the partition count is read once, when the fence opens.
pub struct KafkaFence {
    /// A consumer of the projector's group that never joins it: it only reads the
    /// group's committed offsets and the partitions' watermarks.
    consumer: Arc<BaseConsumer<LogContext>>,
    /// Every topic the projector reads, in lane order.
    topics: Vec<String>,
    partitions: i32,
    group: String,
    wait: Duration,
    timeout: Duration,
    /// With [`KafkaFence::once_per_partition`]: the partitions proven projected since
    /// the fence opened, which it does not wait for again.
    proven: Option<Mutex<HashSet<i32>>>,
}

impl std::fmt::Debug for KafkaFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaFence")
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl KafkaFence {
    /// A fence on `config.topic` and the projector's `group`; a call waits at most
    /// `wait` for the projector, then fails with [`BackendError::Unavailable`].
    pub async fn open(
        config: &KafkaConfig,
        group: &str,
        wait: Duration,
    ) -> Result<Self, BackendError> {
        let consumer: BaseConsumer<LogContext> = config
            .consumer_config(group)
            .create_with_context(LogContext)
            .map_err(|e| BackendError::other(format!("kafka consumer: {e}")).with_source(e))?;
        let consumer = Arc::new(consumer);
        let (c, topic, timeout) = (
            consumer.clone(),
            config.topic.clone(),
            config.operation_timeout,
        );
        let partitions = blocking(move || topic_partitions(c.client(), &topic, timeout)).await??;
        Ok(KafkaFence {
            consumer,
            topics: config.topics().into_iter().map(str::to_owned).collect(),
            partitions: i32::try_from(partitions.len()).unwrap_or(i32::MAX),
            group: group.to_owned(),
            wait,
            timeout: config.operation_timeout,
            proven: None,
        })
    }

    /// Waits for each partition only until the projector has once passed the end it
    /// had when first asked, then never again: for one API instance that trusts the
    /// projection (`LEDGER_API_FENCE=off`) and has just started. What this instance
    /// appends from then on it remembers itself; what it appended before a restart it
    /// has forgotten, and the projection may not hold it yet (a signout acknowledged
    /// just before the restart).
    #[must_use]
    pub fn once_per_partition(mut self) -> Self {
        self.proven = Some(Mutex::default());
        self
    }

    fn proven(&self, partition: i32) -> bool {
        self.proven.as_ref().is_some_and(|p| {
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&partition)
        })
    }
}

impl Drop for KafkaFence {
    fn drop(&mut self) {
        let consumer = self.consumer.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || drop(consumer));
        }
    }
}

/// [`LogEnd`] on Kafka: the high watermarks of every partition of every topic read
/// (the own and the remote ones), each asked of the partition's leader. `acks=all`
/// answers a produce only once the high watermark has passed the record, so every
/// record acknowledged before the request lies below the watermarks it returns.
pub struct KafkaLogEnd {
    /// A consumer that never joins a group: it only asks for watermarks.
    consumer: Arc<BaseConsumer<LogContext>>,
    /// Per topic, in lane order: its partitions when the end was opened.
    topics: Vec<(String, Vec<i32>)>,
    timeout: Duration,
    /// The earliest offsets, and when they were asked for. They only grow, so older
    /// ones can only ask a reader to read more (a partition that retention emptied
    /// meanwhile looks unread until they are asked again): never less.
    earliest: Arc<Mutex<Earliest>>,
}

impl std::fmt::Debug for KafkaLogEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLogEnd")
            .field("topics", &self.topics)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaLogEnd {
    /// Reads the topics' partitions once; a call to [`LogEnd::end`] fails when a leader
    /// has not answered within `timeout`.
    pub async fn open(config: &KafkaConfig, timeout: Duration) -> Result<Self, BackendError> {
        let group = format!("session-ledger-end-{}", uuid::Uuid::new_v4().simple());
        let consumer: BaseConsumer<LogContext> = config
            .consumer_config(&group)
            .create_with_context(LogContext)
            .map_err(|e| BackendError::other(format!("kafka consumer: {e}")).with_source(e))?;
        let consumer = Arc::new(consumer);
        let (c, topics, metadata_timeout) = (
            consumer.clone(),
            config
                .topics()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            config.operation_timeout,
        );
        let topics = blocking(move || {
            topics
                .into_iter()
                .map(|topic| {
                    let partitions = topic_partitions(c.client(), &topic, metadata_timeout)?;
                    Ok((topic, partitions))
                })
                .collect::<Result<Vec<_>, BackendError>>()
        })
        .await??;
        Ok(KafkaLogEnd {
            consumer,
            topics,
            timeout,
            earliest: Arc::default(),
        })
    }
}

impl Drop for KafkaLogEnd {
    fn drop(&mut self) {
        let consumer = self.consumer.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || drop(consumer));
        }
    }
}

#[async_trait]
impl LogEnd for KafkaLogEnd {
    async fn end(&self) -> Result<Vec<Position>, BackendError> {
        let (consumer, topics, timeout) =
            (self.consumer.clone(), self.topics.clone(), self.timeout);
        let cached = self
            .earliest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|(at, _)| at.elapsed() < EARLIEST_REFRESH)
            .map(|(_, offsets)| offsets);
        let earliest = self.earliest.clone();
        blocking(move || {
            // Every partition in one request per leader: the latest offsets (the high
            // watermarks: no transactions, so the last stable offset is the high
            // watermark), and the earliest when the cached ones are old.
            let ask = |at: Offset| {
                let mut tpl = TopicPartitionList::new();
                for (topic, partitions) in &topics {
                    for &partition in partitions {
                        tpl.add_partition_offset(topic, partition, at)
                            .map_err(|e| {
                                BackendError::other(format!("kafka end: {e}")).with_source(e)
                            })?;
                    }
                }
                let answer = consumer
                    .offsets_for_times(tpl, timeout)
                    .map_err(|e| unavailable("end of the log", e))?;
                let mut offsets = HashMap::with_capacity(answer.count());
                for e in answer.elements() {
                    if let Err(error) = e.error() {
                        return Err(unavailable(
                            &format!("end of {}/{}", e.topic(), e.partition()),
                            error,
                        ));
                    }
                    let Offset::Offset(offset) = e.offset() else {
                        return Err(unavailable(
                            &format!("end of {}/{}", e.topic(), e.partition()),
                            format!("no offset in the answer: {:?}", e.offset()),
                        ));
                    };
                    offsets.insert((e.topic().to_owned(), e.partition()), offset);
                }
                Ok(offsets)
            };
            let high = ask(Offset::End)?;
            let low = match cached {
                Some(low) => low,
                None => {
                    let asked = Instant::now();
                    let low = Arc::new(ask(Offset::Beginning)?);
                    *earliest.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((asked, low.clone()));
                    low
                }
            };
            let mut end = Vec::new();
            for (lane, (topic, partitions)) in topics.iter().enumerate() {
                for &partition in partitions {
                    let key = (topic.clone(), partition);
                    let (Some(&high), Some(&low)) = (high.get(&key), low.get(&key)) else {
                        return Err(unavailable(
                            &format!("end of {topic}/{partition}"),
                            "no answer for the partition",
                        ));
                    };
                    // Nothing left to read when retention removed every event.
                    let offset = if high > low { high } else { 0 };
                    end.push(Position {
                        partition: lane_partition(lane, partition),
                        offset: u64::try_from(offset).unwrap_or_default(),
                    });
                }
            }
            Ok(end)
        })
        .await?
    }
}

/// The partition librdkafka's `consistent_random` partitioner picks for a non-empty
/// key: the key's CRC-32 (IEEE) modulo the partition count.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in key {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    let crc = !crc;
    i32::try_from(crc % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or_default()
}

#[async_trait]
impl ProjectionFence for KafkaFence {
    async fn await_projected(&self, key: &str) -> Result<(), BackendError> {
        let partition = partition_for(key.as_bytes(), self.partitions);
        if self.proven(partition) {
            return Ok(());
        }
        let started = Instant::now();
        let (consumer, topics, timeout) =
            (self.consumer.clone(), self.topics.clone(), self.timeout);
        // The end of the key's partition in every topic.
        let mut pending: Vec<(usize, i64)> = blocking(move || {
            topics
                .iter()
                .enumerate()
                .map(|(lane, topic)| {
                    consumer
                        .fetch_watermarks(topic, partition, timeout)
                        .map(|(_, end)| (lane, end))
                        .map_err(|e| unavailable("watermarks", e))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
        loop {
            let (consumer, topics, lanes) =
                (self.consumer.clone(), self.topics.clone(), pending.clone());
            let committed = blocking(move || {
                lanes
                    .iter()
                    .map(|&(lane, _)| {
                        let at = committed_offsets(
                            &*consumer,
                            lane,
                            &topics[lane],
                            &[partition],
                            timeout,
                        )?;
                        Ok(at
                            .first()
                            .map_or(0, |p| i64::try_from(p.offset).unwrap_or(i64::MAX)))
                    })
                    .collect::<Result<Vec<i64>, BackendError>>()
            })
            .await??;
            let mut at = committed.into_iter();
            pending.retain(|&(_, end)| at.next().is_none_or(|c| c < end));
            if pending.is_empty() {
                if let Some(proven) = &self.proven {
                    proven
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(partition);
                }
                return Ok(());
            }
            if started.elapsed() >= self.wait {
                tracing::warn!(topics = ?self.topics, partition, behind = ?pending,
                    "projection behind the log, answering retry");
                return Err(unavailable(
                    "projection",
                    format!(
                        "the projector has not reached the end of partition {partition} within {:?}",
                        self.wait
                    ),
                ));
            }
            tokio::time::sleep(RECHECK).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    #[test]
    fn crc32_matches_the_reference_check_value() {
        // CRC-32/ISO-HDLC of "123456789" is 0xCBF43926.
        assert_eq!(
            partition_for(b"123456789", i32::MAX),
            (0xcbf4_3926_u32 % i32::MAX as u32) as i32
        );
        assert!((0..12).contains(&partition_for(b"some family", 12)));
    }
}
