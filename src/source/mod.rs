//! Kafka: the global-table reader of the desired topic, target leases through consumer-group
//! membership, the dead-letter producer, and the start-up connection check.

pub mod admin;
pub mod dead_letter;
mod error_log;
pub mod leases;
pub mod probe;
pub mod snapshot;
pub mod status;
pub mod table;

use rdkafka::ClientConfig;

use crate::config::{Config, ConfigError};
use crate::desired::Origin;

/// Where and when a record was written (tombstones are ordered across partitions by it).
pub fn origin<M: rdkafka::message::Message>(m: &M) -> Origin {
    Origin { partition: m.partition(), timestamp_ms: m.timestamp().to_millis().unwrap_or(0) }
}

/// The client settings every Kafka client of the daemon shares: brokers plus pass-through properties.
pub fn client_config(cfg: &Config) -> Result<ClientConfig, ConfigError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in cfg.kafka_properties()? {
        c.set(k, v.expose());
    }
    // librdkafka logs through the context; keep its default level quiet unless asked.
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    Ok(c)
}

/// Stable across processes and Rust versions (unlike std's hasher): FNV-1a, 32 bit.
pub fn stable_hash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// The lease partition that decides who owns a target.
pub fn lease_partition_of_target(target: &str, partitions: i32) -> i32 {
    (stable_hash(target) % partitions as u32) as i32
}

/// The lease partition whose owner dead-letters invalid events of a desired-topic partition.
pub fn lease_partition_of_desired(partition: i32, partitions: i32) -> i32 {
    partition.rem_euclid(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // FNV-1a reference values.
        assert_eq!(stable_hash(""), 0x811c9dc5);
        assert_eq!(stable_hash("a"), 0xe40c292c);
        assert_eq!(stable_hash("foobar"), 0xbf9cf968);
        let spread: std::collections::HashSet<i32> =
            (0..100).map(|i| lease_partition_of_target(&format!("aws-{i}"), 12)).collect();
        assert!(spread.len() >= 10, "targets spread over lease partitions");
    }
}
