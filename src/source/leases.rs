//! Target leases: membership of the consumer group `group_id` on `<topic>.leases` (nothing is ever
//! written there). Whoever holds lease partition hash(target) mod P owns the target; cooperative-sticky
//! assignment moves few partitions when an instance joins or leaves.
//!
//! Membership is static (`group.instance.id` = `kafka.instance_id`): a restarted instance rejoins under its
//! old identity and gets its old partitions back without a rebalance. The price: librdkafka sends no
//! LeaveGroup for a static member, so a stopped instance's targets move only after the session timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tokio::sync::watch;

use super::error_log::ErrorLog;

/// At most one lease-consumer error log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Who acts on lease changes, called on librdkafka's rebalance callbacks, in order.
pub trait LeaseListener: Send + Sync + 'static {
    fn assigned(&self, partitions: &[i32]);
    /// Stop work on these partitions and wait (bounded) for what is in flight: the partitions go to the
    /// next owner when this returns.
    fn revoking(&self, partitions: &[i32]);
    /// Already gone (fenced out): stop work on them now; there is nothing left to wait for.
    fn lost(&self, partitions: &[i32]);
}

pub struct LeaseContext {
    owned: watch::Sender<BTreeSet<i32>>,
    listener: Arc<dyn LeaseListener>,
}

impl ClientContext for LeaseContext {}

/// Runs a blocking wait from a rebalance callback: on a runtime worker (the poller's `recv`) other tasks,
/// the in-flight reconciles among them, move to other threads meanwhile.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ConsumerContext for LeaseContext {
    /// Before a revocation takes effect: the partitions are handed over only once this returns, so the
    /// listener's wait for in-flight calls keeps the next owner from writing before they land.
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions(tpl);
            self.owned.send_modify(|s| {
                for p in &parts {
                    s.remove(p);
                }
            });
            blocking(|| self.listener.revoking(&parts));
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Incremental under the cooperative protocol: Assign adds partitions, Revoke removed them (above).
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions(tpl);
                self.owned.send_modify(|s| s.extend(parts.iter().copied()));
                self.listener.assigned(&parts);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "lease rebalance error"),
        }
        tracing::info!(lease_partitions = ?*self.owned.borrow(), "lease assignment changed");
    }
}

/// Why the lease consumer stopped for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Another process joined the group under this `group.instance.id`; Kafka fenced this one out.
    #[error(
        "another instance joined lease group {group} with kafka.instance_id = {instance_id:?}, and Kafka fenced \
         this one out (FENCED_INSTANCE_ID): {reason}"
    )]
    Fenced { group: String, instance_id: String, reason: String },
    /// Any other fatal librdkafka error: the consumer cannot be used any more.
    #[error("lease consumer failed for good: {code:?}: {reason}")]
    Fatal { code: RDKafkaErrorCode, reason: String },
}

/// librdkafka's fatal error → why the leases are lost (FENCED_INSTANCE_ID is a configuration problem).
pub fn classify_fatal(group: &str, instance_id: &str, code: RDKafkaErrorCode, reason: String) -> LeaseError {
    if code == RDKafkaErrorCode::FencedInstanceId || reason.contains("FENCED_INSTANCE_ID") {
        LeaseError::Fenced { group: group.into(), instance_id: instance_id.into(), reason }
    } else {
        LeaseError::Fatal { code, reason }
    }
}

pub struct Leases {
    consumer: Arc<StreamConsumer<LeaseContext>>,
    group: String,
    instance_id: String,
    pub owned: watch::Receiver<BTreeSet<i32>>,
}

impl Leases {
    pub fn join(
        base: &ClientConfig,
        group_id: &str,
        instance_id: &str,
        topic: &str,
        session_timeout_ms: u32,
        listener: Arc<dyn LeaseListener>,
    ) -> Result<Leases, String> {
        let (tx, rx) = watch::channel(BTreeSet::new());
        let consumer: StreamConsumer<LeaseContext> = base
            .clone()
            .set("group.id", group_id)
            .set("group.instance.id", instance_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (session_timeout_ms / 4).max(500).to_string())
            .set("enable.auto.commit", "false")
            .create_with_context(LeaseContext { owned: tx, listener })
            .map_err(|e| format!("lease consumer: {e}"))?;
        consumer.subscribe(&[topic]).map_err(|e| format!("subscribe {topic}: {e}"))?;
        Ok(Leases { consumer: Arc::new(consumer), group: group_id.into(), instance_id: instance_id.into(), owned: rx })
    }

    /// Keeps the membership alive: rebalance callbacks run while the consumer is polled, so the loop
    /// never sleeps. Errors queue up while the broker is down (one per failed connection attempt);
    /// a pause per error would leave the rejoin behind that backlog after the broker returns.
    /// Ends only on a fatal error (e.g. fenced by a duplicate instance id): the leases are gone then.
    pub fn spawn_poller(&self) -> tokio::task::JoinHandle<Result<(), LeaseError>> {
        let c = self.consumer.clone();
        let (group, instance_id) = (self.group.clone(), self.instance_id.clone());
        tokio::spawn(async move {
            let mut log = ErrorLog::new(LOG_EVERY);
            // A fatal error (fenced) need not come out of recv as such: look for it every second too.
            let mut check = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    m = c.recv() => match m {
                        Ok(_) => {} // nothing is ever written to the lease topic
                        Err(e) => {
                            if c.client().fatal_error().is_none() {
                                if let Some(suppressed) = log.admit(Instant::now()) {
                                    tracing::warn!(error = %e, suppressed, "lease consumer error");
                                }
                            }
                        }
                    },
                    _ = check.tick() => {}
                }
                if let Some((code, reason)) = c.client().fatal_error() {
                    // The leases are gone: stop reconciling now, not when the daemon has shut down.
                    let gone: Vec<i32> = c.context().owned.send_replace(BTreeSet::new()).into_iter().collect();
                    c.context().listener.lost(&gone);
                    return Err(classify_fatal(&group, &instance_id, code, reason));
                }
            }
        })
    }

    /// Closes the lease consumer. A static member sends no LeaveGroup (librdkafka never does for one): its
    /// partitions stay assigned to this instance id until the session timeout, so a restart within it takes
    /// them back without a rebalance, and a stop for good hands them over after it.
    pub async fn leave<T>(self, poller: tokio::task::JoinHandle<T>) {
        poller.abort();
        let _ = poller.await;
        let c = self.consumer;
        // Dropping the last handle closes the consumer; it blocks while it polls.
        let _ = tokio::task::spawn_blocking(move || {
            c.unsubscribe();
            drop(c);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_instance_id_is_named_and_other_fatal_errors_are_not_called_fenced() {
        let e = classify_fatal("g", "host-1", RDKafkaErrorCode::FencedInstanceId, "fenced".into());
        let text = e.to_string();
        assert!(matches!(e, LeaseError::Fenced { .. }), "{e:?}");
        assert!(text.contains("kafka.instance_id = \"host-1\"") && text.contains("FENCED_INSTANCE_ID"), "{text}");
        // librdkafka reports the fence as a fatal error whose reason names the broker's code.
        let e = classify_fatal(
            "g",
            "h",
            RDKafkaErrorCode::Fatal,
            "Broker: Static consumer fenced by other consumer with same group.instance.id (FENCED_INSTANCE_ID)".into(),
        );
        assert!(matches!(e, LeaseError::Fenced { .. }), "{e:?}");
        let e = classify_fatal("g", "h", RDKafkaErrorCode::Fatal, "something else".into());
        assert!(matches!(e, LeaseError::Fatal { .. }), "{e:?}");
    }
}
