//! The status topic `<topic>.status` (DESIGN §2.9): the owner of a target records each change it applied or
//! failed for good, one record per (alias, target), compacted, so `aliassync wait` (from any host with Kafka
//! access, no cloud credentials) learns when a change is live everywhere.
//!
//! A record's partition is chosen here from a stable hash of its key, not by librdkafka's partitioner, so a
//! reader looking for one alias reads only the partitions its targets' records live in.

use rdkafka::client::ClientContext;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::stable_hash;
use crate::reconcile::{ChangeLog, Settled};
use crate::telemetry::metrics::metrics;

/// Partitions of a status topic the daemon creates.
pub const PARTITIONS: i32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The target carries the revision: the alias points at `key_id` (None: absent there).
    Applied,
    /// The revision failed for good in the target (dead-lettered with `code`).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub alias: String,
    pub target: String,
    pub revision: u64,
    pub state: State,
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When it was recorded, RFC 3339.
    pub at: String,
}

/// The record key: `<alias>\0<target>`.
pub fn key(alias: &str, target: &str) -> String {
    format!("{alias}\u{0}{target}")
}

/// The partition of a record key in a topic of `partitions` partitions.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    (stable_hash(key) % partitions.max(1) as u32) as i32
}

/// The owner's side: records are queued to librdkafka and delivered by its thread (no task per record); a
/// record that cannot be delivered is counted and logged, never waited on (`wait` then times out visibly, and
/// the alias's next change records again).
#[derive(Clone)]
pub struct StatusLog {
    producer: std::sync::Arc<ThreadedProducer<Delivery>>,
    topic: String,
    partitions: i32,
}

/// Counts deliveries (librdkafka's thread calls it).
pub struct Delivery;

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let outcome = match r {
            Ok(_) => "ok",
            Err((e, m)) => {
                let topic = m.topic();
                tracing::warn!(topic, error = %e, "status record not delivered");
                "failed"
            }
        };
        metrics().status_records.with_label_values(&[outcome]).inc();
    }
}

impl StatusLog {
    pub fn new(base: &ClientConfig, topic: &str, partitions: i32) -> Result<StatusLog, String> {
        let producer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("message.timeout.ms", "60000")
            // Bounded: writes are paced by the clouds' quotas, so this fills only while Kafka is unreachable.
            .set("queue.buffering.max.kbytes", "16384")
            .create_with_context(Delivery)
            .map_err(|e| format!("status producer: {e}"))?;
        Ok(StatusLog { producer: std::sync::Arc::new(producer), topic: topic.into(), partitions })
    }

    /// Waits (bounded) for queued records to be delivered: call at shutdown.
    pub fn flush(&self, timeout: std::time::Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(topic = %self.topic, error = %e, "status records not all delivered at shutdown");
        }
    }

    pub fn record(&self, r: Record) {
        let key = key(&r.alias, &r.target);
        let partition = partition_of(&key, self.partitions);
        let Ok(value) = serde_json::to_string(&r) else { return };
        let rec = BaseRecord::to(&self.topic).key(&key).payload(&value).partition(partition);
        if let Err((e, _)) = self.producer.send(rec) {
            tracing::warn!(topic = %self.topic, alias = %r.alias, target_name = %r.target, error = %e, "status record not queued");
            metrics().status_records.with_label_values(&["failed"]).inc();
        }
    }
}

impl ChangeLog for StatusLog {
    fn settled(&self, c: Settled) {
        let state = if c.failed.is_some() { State::Failed } else { State::Applied };
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.record(Record {
            alias: c.alias,
            target: c.target,
            revision: c.revision,
            state,
            key_id: c.key_id,
            code: c.failed,
            at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_shape_and_partitions_are_stable() {
        let r = Record {
            alias: "alias/app/x".into(),
            target: "use1".into(),
            revision: 3,
            state: State::Failed,
            key_id: Some("k".into()),
            code: Some("preflight_key_disabled".into()),
            at: "2026-12-06T12:00:00Z".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["revision"], 3);
        assert_eq!(serde_json::from_value::<Record>(v).unwrap(), r);
        assert_eq!(key("a", "t"), "a\u{0}t");
        // FNV-1a: the same partition in every process and version.
        assert_eq!(partition_of("a\u{0}t", 6), (stable_hash("a\u{0}t") % 6) as i32);
        assert!((0..6).contains(&partition_of("alias/app/x\u{0}use1", 6)));
    }
}
