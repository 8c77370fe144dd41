//! Target leases: membership of the consumer group `group_id` on `<topic>.leases` (nothing is ever
//! written there). Whoever holds lease partition hash(target) mod P owns the target; cooperative-sticky
//! assignment moves few partitions when an instance joins or leaves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::ClientConfig;
use tokio::sync::watch;

/// At most one lease-consumer error log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate-limits a log line (not the work): admits one per interval, counting the ones it suppressed.
struct ErrorLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn new(every: Duration) -> Self {
        ErrorLog { every, last: None, suppressed: 0 }
    }

    /// Some(errors suppressed since the last admitted one) if this one may be logged.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

pub struct LeaseContext {
    owned: watch::Sender<BTreeSet<i32>>,
}

impl ClientContext for LeaseContext {}

impl ConsumerContext for LeaseContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Incremental under the cooperative protocol: Assign adds partitions, Revoke removes them.
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.owned.send_modify(|s| s.extend(tpl.elements().iter().map(|e| e.partition())))
            }
            Rebalance::Revoke(tpl) => self.owned.send_modify(|s| {
                for e in tpl.elements() {
                    s.remove(&e.partition());
                }
            }),
            Rebalance::Error(e) => tracing::warn!(error = %e, "lease rebalance error"),
        }
        tracing::info!(lease_partitions = ?*self.owned.borrow(), "lease assignment changed");
    }
}

pub struct Leases {
    consumer: Arc<StreamConsumer<LeaseContext>>,
    pub owned: watch::Receiver<BTreeSet<i32>>,
}

impl Leases {
    pub fn join(base: &ClientConfig, group_id: &str, topic: &str, session_timeout_ms: u32) -> Result<Leases, String> {
        let (tx, rx) = watch::channel(BTreeSet::new());
        let consumer: StreamConsumer<LeaseContext> = base
            .clone()
            .set("group.id", group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (session_timeout_ms / 4).max(500).to_string())
            .set("enable.auto.commit", "false")
            .create_with_context(LeaseContext { owned: tx })
            .map_err(|e| format!("lease consumer: {e}"))?;
        consumer.subscribe(&[topic]).map_err(|e| format!("subscribe {topic}: {e}"))?;
        Ok(Leases { consumer: Arc::new(consumer), owned: rx })
    }

    /// Keeps the membership alive: rebalance callbacks run while the consumer is polled, so the loop
    /// never sleeps. Errors queue up while the broker is down (one per failed connection attempt);
    /// a pause per error would leave the rejoin behind that backlog after the broker returns.
    pub fn spawn_poller(&self) -> tokio::task::JoinHandle<()> {
        let c = self.consumer.clone();
        tokio::spawn(async move {
            let mut log = ErrorLog::new(LOG_EVERY);
            loop {
                match c.recv().await {
                    Ok(_) => {} // nothing is ever written to the lease topic
                    Err(e) => {
                        if let Some(suppressed) = log.admit(Instant::now()) {
                            tracing::warn!(error = %e, suppressed, "lease consumer error");
                        }
                    }
                }
            }
        })
    }

    /// Leaves the group so the targets move to another instance at once.
    pub async fn leave(self, poller: tokio::task::JoinHandle<()>) {
        poller.abort();
        let _ = poller.await;
        let c = self.consumer;
        // Dropping the last handle closes the consumer (LeaveGroup); it blocks while it polls.
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
    fn the_error_log_is_rate_limited_and_counts_what_it_suppressed() {
        let mut l = ErrorLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit(t0), Some(0));
        for i in 1..=99 {
            assert_eq!(l.admit(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(l.admit(t0 + Duration::from_secs(10)), Some(99));
        assert_eq!(l.admit(t0 + Duration::from_secs(11)), None);
    }
}
