//! The dead-letter producer: invalid events (with the original key, partition, offset and a reason
//! header) and permanent reconcile failures. Deliveries are retried until the broker takes them.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::mpsc;

use crate::reconcile::{FailureSink, PermanentFailure};
use crate::telemetry::metrics::metrics;

#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

/// One dead letter: the original record's key and value, and headers saying why.
pub struct Letter<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub reason: &'a str,
    pub headers: Vec<(&'a str, String)>,
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

    /// Sends and waits for the broker's acknowledgement, retrying through broker outages.
    pub async fn send(&self, l: Letter<'_>) {
        let mut headers = OwnedHeaders::new().insert(Header { key: "aliassync.reason", value: Some(l.reason) });
        for (k, v) in &l.headers {
            headers = headers.insert(Header { key: k, value: Some(v.as_str()) });
        }
        let mut delay = Duration::from_millis(200);
        loop {
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers.clone());
            if let Some(k) = l.key {
                rec = rec.key(k);
            }
            if let Some(v) = l.value {
                rec = rec.payload(v);
            }
            match self.producer.send(rec, Duration::from_secs(5)).await {
                Ok(_) => {
                    metrics().dead_letters.with_label_values(&[l.reason]).inc();
                    return;
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, topic = %self.topic, "dead-letter delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
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
                me.send(Letter {
                    key: Some(f.alias.as_bytes()),
                    value: Some(&value),
                    reason: "reconcile_failed",
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

pub struct ChannelSink(mpsc::UnboundedSender<PermanentFailure>);

impl FailureSink for ChannelSink {
    fn permanent(&self, failure: PermanentFailure) {
        let _ = self.0.send(failure);
    }
}
