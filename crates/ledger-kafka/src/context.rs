//! librdkafka callbacks, routed to `tracing` with structured fields.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::{debug, error, info, warn};

/// The context of the producer and the admin client: librdkafka's own log lines and
/// global errors go to `tracing` (target `librdkafka`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

impl ConsumerContext for LogContext {}

/// The context of a reader: logs as [`LogContext`] does, and logs rebalances. The
/// rebalance itself is librdkafka's default: an assigned partition resumes from the
/// group's committed offset (or the beginning), and nothing is committed on revoke.
#[derive(Debug)]
pub(crate) struct ReaderContext {
    pub(crate) group: String,
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

impl ConsumerContext for ReaderContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(group = %self.group, partitions = ?partition_ids(tpl), "kafka partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                info!(group = %self.group, partitions = ?partition_ids(tpl), "kafka partitions revoked");
            }
            Rebalance::Error(e) => warn!(group = %self.group, error = %e, "kafka rebalance failed"),
        }
    }
}

fn partition_ids(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(target: "librdkafka", facility, message),
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, message),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(target: "librdkafka", facility, message);
        }
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility, message),
    }
}

fn client_error(error: &KafkaError, reason: &str) {
    // Connection failures are reported here too; librdkafka retries them itself.
    warn!(target: "librdkafka", error = %error, reason, "kafka client error");
}
