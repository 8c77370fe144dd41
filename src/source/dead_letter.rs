//! The dead-letter producer: invalid events (with the original key, partition, offset and a reason
//! header) and permanent reconcile failures.
//!
//! Delivery never blocks the reader: invalid events go through [`DutyQueue`], a queue bounded in bytes
//! that a background task drains (it also commits dead-letter progress). Transient failures (broker
//! down) are retried with backoff inside that task. A letter Kafka refuses for good (over the topic's
//! `max.message.bytes`, not authorised, …) is reduced (its value replaced by the original's size and
//! SHA-256 digest, headers kept) and tried once more; if that is refused too it is dropped. Every
//! refusal is counted (`aliassync_dead_letter_failures_total{reason}`) and logged once.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::reconcile::{FailureSink, PermanentFailure};
use crate::telemetry::metrics::metrics;

/// Bytes of letters waiting for delivery (a broker outage with a burst of invalid events); beyond it the
/// reader skips dead letters (counted as `queue_full`) rather than wait.
pub const QUEUE_BYTES: usize = 32 << 20;
/// Keys longer than this are replaced by their digest in a reduced letter.
const REDUCED_KEY_MAX: usize = 1024;

#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

/// One dead letter: the original record's key and value, and headers saying why.
#[derive(Debug, Clone)]
pub struct Letter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

/// Why Kafka refused a letter for good: the label values of `aliassync_dead_letter_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the dead-letter topic's `max.message.bytes` (or the client's `message.max.bytes`).
    TooLarge,
    /// Topic or cluster authorisation failed.
    NotAuthorized,
    /// Any other permanent refusal (invalid record, policy violation, …).
    Rejected,
    /// Not a refusal by Kafka: the delivery queue was full and the reader did not wait.
    QueueFull,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [Refusal::TooLarge, Refusal::NotAuthorized, Refusal::Rejected, Refusal::QueueFull];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::NotAuthorized => "not_authorized",
            Refusal::Rejected => "rejected",
            Refusal::QueueFull => "queue_full",
        }
    }

    /// Permanent refusals; None: transient (retry).
    pub fn classify(e: &KafkaError) -> Option<Refusal> {
        let code = e.rdkafka_error_code()?;
        use RDKafkaErrorCode as C;
        match code {
            C::MessageSizeTooLarge | C::MessageBatchTooLarge => Some(Refusal::TooLarge),
            C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => Some(Refusal::NotAuthorized),
            C::InvalidMessage | C::InvalidRecord | C::PolicyViolation => Some(Refusal::Rejected),
            _ => None,
        }
    }
}

/// What became of a letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The original was refused for good; its reduced form was sent.
    Reduced(Refusal),
    /// Refused for good, reduced form included.
    Dropped(Refusal),
}

impl Letter {
    fn size(&self) -> usize {
        let h: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + h
    }

    /// The letter without its value (replaced by the value's size and SHA-256 digest) and with a long key
    /// replaced by its digest; every header is kept, and three are added.
    pub fn reduce(&self, refusal: Refusal) -> Letter {
        let value = self.value.as_deref().unwrap_or_default();
        let digest = hex::encode(Sha256::digest(value));
        let mut headers = self.headers.clone();
        headers.push(("aliassync.reduced", refusal.as_str().to_string()));
        headers.push(("aliassync.original.size", value.len().to_string()));
        headers.push(("aliassync.original.sha256", digest.clone()));
        let key = self.key.as_ref().map(|k| {
            if k.len() <= REDUCED_KEY_MAX {
                k.clone()
            } else {
                headers.push(("aliassync.original.key_size", k.len().to_string()));
                format!("sha256:{}", hex::encode(Sha256::digest(k))).into_bytes()
            }
        });
        let doc = serde_json::json!({
            "reduced": refusal.as_str(),
            "original_size": value.len(),
            "original_sha256": digest,
        });
        Letter { key, value: Some(doc.to_string().into_bytes()), reason: self.reason, headers }
    }
}

impl DeadLetters {
    pub fn new(base: &ClientConfig, topic: &str) -> Result<Self, String> {
        let producer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| format!("dead-letter producer: {e}"))?;
        Ok(DeadLetters { producer, topic: topic.to_string() })
    }

    async fn send_once(&self, l: &Letter) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new().insert(Header { key: "aliassync.reason", value: Some(l.reason) });
        for (k, v) in &l.headers {
            headers = headers.insert(Header { key: k, value: Some(v.as_str()) });
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = &l.key {
            rec = rec.key(k);
        }
        if let Some(v) = &l.value {
            rec = rec.payload(v);
        }
        self.producer.send(rec, Duration::from_secs(5)).await.map(|_| ()).map_err(|(e, _)| e)
    }

    /// Delivers `l`: transient failures are retried with backoff (until the broker takes it); a permanent
    /// refusal reduces the letter and tries once more. Logs once per letter, never the value.
    pub async fn deliver(&self, l: &Letter) -> Delivery {
        let mut delay = Duration::from_millis(200);
        let mut reduced: Option<(Letter, Refusal)> = None;
        let mut transient_failures = 0u32;
        loop {
            let current = reduced.as_ref().map_or(l, |(r, _)| r);
            let err = match self.send_once(current).await {
                Ok(()) => {
                    metrics().dead_letters.with_label_values(&[l.reason]).inc();
                    if transient_failures > 0 {
                        tracing::info!(topic = %self.topic, attempts = transient_failures + 1, "dead letter delivered after retries");
                    }
                    return reduced.map_or(Delivery::Sent, |(_, why)| Delivery::Reduced(why));
                }
                Err(e) => e,
            };
            let Some(refusal) = Refusal::classify(&err) else {
                // One warning per letter; the rest of an outage at debug (librdkafka reports it too).
                if transient_failures == 0 {
                    tracing::warn!(error = %err, topic = %self.topic, "dead-letter delivery failed; retrying in the background");
                } else {
                    tracing::debug!(error = %err, attempt = transient_failures + 1, "dead-letter delivery failed again");
                }
                transient_failures += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            };
            metrics().dead_letter_failures.with_label_values(&[refusal.as_str()]).inc();
            let origin = origin(l);
            match reduced {
                None => {
                    tracing::warn!(error = %err, topic = %self.topic, reason = l.reason, refusal = refusal.as_str(), size = l.size(), %origin,
                        "Kafka refused the dead letter; sending it reduced (value replaced by its size and SHA-256)");
                    reduced = Some((l.reduce(refusal), refusal));
                }
                Some(_) => {
                    tracing::error!(error = %err, topic = %self.topic, reason = l.reason, refusal = refusal.as_str(), %origin,
                        "Kafka refused the reduced dead letter too; dropped");
                    return Delivery::Dropped(refusal);
                }
            }
        }
    }

    /// A sink for the engine's permanent failures, drained by a background task.
    pub fn failure_sink(&self) -> (ChannelSink, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<PermanentFailure>();
        let me = self.clone();
        let task = tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                let value = serde_json::to_vec(&f).unwrap_or_default();
                me.deliver(&Letter {
                    key: Some(f.alias.as_bytes().to_vec()),
                    value: Some(value),
                    reason: f.reason,
                    headers: vec![
                        ("aliassync.target", f.target.clone()),
                        ("aliassync.code", f.code.clone()),
                        ("aliassync.action", f.action.to_string()),
                    ],
                })
                .await;
            }
        });
        (ChannelSink(tx), task)
    }
}

/// Where a letter came from, for logs: the source partition and offset headers (never key or value).
fn origin(l: &Letter) -> String {
    let get = |name: &str| l.headers.iter().find(|(k, _)| *k == name).map_or("-", |(_, v)| v.as_str());
    format!(
        "{}/{}@{}",
        get("aliassync.source.topic"),
        get("aliassync.source.partition"),
        get("aliassync.source.offset")
    )
}

pub struct ChannelSink(mpsc::UnboundedSender<PermanentFailure>);

impl FailureSink for ChannelSink {
    fn permanent(&self, failure: PermanentFailure) {
        let _ = self.0.send(failure);
    }
}

/// An invalid event to dead-letter, and the dead-letter progress to commit once it is dealt with.
struct Job {
    letter: Letter,
    partition: i32,
    next: i64,
    _bytes: OwnedSemaphorePermit,
}

/// The reader's side of dead-letter duty: hands letters to the background task without waiting.
pub struct DutyQueue {
    tx: mpsc::UnboundedSender<Job>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

impl DutyQueue {
    /// Starts the task that delivers letters and commits progress (as offsets of `commit_group` on
    /// `source_topic`, a group nobody joins).
    pub fn spawn(
        base: &ClientConfig,
        dlq: DeadLetters,
        commit_group: &str,
        source_topic: &str,
        capacity: usize,
    ) -> Result<(DutyQueue, tokio::task::JoinHandle<()>), String> {
        let committer: BaseConsumer = base
            .clone()
            .set("group.id", commit_group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("dead-letter progress consumer: {e}"))?;
        let committer = Arc::new(committer);
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let topic = source_topic.to_string();
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                // Progress moves on whatever became of the letter: a dropped one is counted and logged.
                dlq.deliver(&job.letter).await;
                let (c, t) = (committer.clone(), topic.clone());
                let _ = tokio::task::spawn_blocking(move || commit(&c, &t, job.partition, job.next)).await;
            }
        });
        Ok((DutyQueue { tx, budget: Arc::new(Semaphore::new(capacity)), capacity }, task))
    }

    /// Queues a letter for desired-topic `partition` (progress `next` once done). Never waits: with the
    /// queue full (in bytes) the letter is skipped, counted as `queue_full` and logged.
    pub fn push(&self, letter: Letter, partition: i32, next: i64) -> bool {
        // Overhead per letter; a letter larger than the whole queue still fits in an empty one.
        let cost = (letter.size() + 256).min(self.capacity) as u32;
        let Ok(permit) = self.budget.clone().try_acquire_many_owned(cost) else {
            metrics().dead_letter_failures.with_label_values(&[Refusal::QueueFull.as_str()]).inc();
            tracing::error!(
                partition,
                offset = next - 1,
                reason = letter.reason,
                queued_bytes_limit = self.capacity,
                "dead-letter queue full (Kafka slow or down); this invalid event is not dead-lettered"
            );
            return false;
        };
        self.tx.send(Job { letter, partition, next, _bytes: permit }).is_ok()
    }
}

/// Records dead-letter progress. Retried: a lost commit means duplicates after a restart (a new group's
/// coordinator may still be loading on the first try). Blocking: runs on the blocking pool.
fn commit(c: &BaseConsumer, topic: &str, partition: i32, next: i64) {
    let mut tpl = TopicPartitionList::new();
    if tpl.add_partition_offset(topic, partition, Offset::Offset(next)).is_err() {
        return;
    }
    for attempt in 1..=10 {
        match c.commit(&tpl, CommitMode::Sync) {
            Ok(()) => return,
            Err(e) if attempt == 10 => {
                tracing::warn!(partition, error = %e, "committing dead-letter progress failed; a restart may repeat dead letters")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100 * attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(value_len: usize, key_len: usize) -> Letter {
        Letter {
            key: Some(vec![b'k'; key_len]),
            value: Some(vec![b'v'; value_len]),
            reason: "malformed_json",
            headers: vec![("aliassync.source.offset", "7".into())],
        }
    }

    #[test]
    fn a_reduced_letter_keeps_headers_and_replaces_the_value_by_size_and_digest() {
        let l = letter(100_000, 10);
        let r = l.reduce(Refusal::TooLarge);
        let digest = hex::encode(Sha256::digest(vec![b'v'; 100_000]));
        assert_eq!(r.key, l.key);
        assert_eq!(r.reason, "malformed_json");
        let h = |k: &str| r.headers.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(h("aliassync.source.offset").as_deref(), Some("7"));
        assert_eq!(h("aliassync.original.size").as_deref(), Some("100000"));
        assert_eq!(h("aliassync.original.sha256"), Some(digest.clone()));
        assert_eq!(h("aliassync.reduced").as_deref(), Some("too_large"));
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["original_sha256"], digest.as_str());
        assert!(r.size() < 1024, "{}", r.size());
        // A long key gives way to its digest too.
        let r = letter(10, 5000).reduce(Refusal::TooLarge);
        assert!(r.key.as_ref().unwrap().starts_with(b"sha256:"));
        assert!(r.size() < 1024);
    }

    #[test]
    fn refusals_are_classified() {
        let p = |c| KafkaError::MessageProduction(c);
        assert_eq!(Refusal::classify(&p(RDKafkaErrorCode::MessageSizeTooLarge)), Some(Refusal::TooLarge));
        assert_eq!(Refusal::classify(&p(RDKafkaErrorCode::TopicAuthorizationFailed)), Some(Refusal::NotAuthorized));
        assert_eq!(Refusal::classify(&p(RDKafkaErrorCode::MessageTimedOut)), None);
        assert_eq!(Refusal::classify(&p(RDKafkaErrorCode::AllBrokersDown)), None);
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_skips_without_waiting() {
        // No broker at this address: the first letter stays in the task's retry loop.
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", "127.0.0.1:9");
        let dlq = DeadLetters::new(&base, "t.dlq").unwrap();
        let (q, task) = DutyQueue::spawn(&base, dlq, "g.dead-letters", "t", 4096).unwrap();
        assert!(q.push(letter(1000, 5), 0, 1));
        assert!(q.push(letter(1000, 5), 0, 2));
        let before = metrics().dead_letter_failures.with_label_values(&["queue_full"]).get();
        let t0 = std::time::Instant::now();
        assert!(!q.push(letter(5000, 5), 0, 3), "over the byte budget");
        assert!(t0.elapsed() < Duration::from_millis(100));
        assert_eq!(metrics().dead_letter_failures.with_label_values(&["queue_full"]).get(), before + 1);
        task.abort();
    }
}
