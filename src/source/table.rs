//! The global table: every instance reads every partition of the desired topic from the earliest
//! offset and keeps tailing, applying events to the desired store and waking the engine.
//!
//! Dead-letter duty for desired partition p belongs to the owner of lease partition p mod P. Its
//! progress is committed as consumer-group offsets (`<group_id>.dead-letters`, never joined), so an
//! invalid event is dead-lettered once across restarts and hand-overs, not once per rebuild. Letters go
//! through a queue bounded in bytes ([`DutyQueue`]): the reader never waits for Kafka to take one.
//!
//! Rebuilt means: every partition's consumer position (not its last record's offset + 1) has reached the
//! end offset seen at start. A partition may end in offsets no record is delivered for (transaction
//! markers, compaction gaps) or hold none at all (every record deleted: low watermark = high watermark).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::dead_letter::{DeadLetters, DutyQueue, Letter, QUEUE_BYTES};
use super::error_log::ErrorLog;
use super::lease_partition_of_desired;
use crate::desired::{Origin, Outcome, Store};
use crate::event::{Decoder, Invalid, TargetId};
use crate::reconcile::Engine;
use crate::telemetry::metrics::metrics;

/// Invalid events seen on partitions whose dead-letter duty is elsewhere, kept in case the duty
/// moves here before the other instance got to them: at most this many per partition, and at most
/// [`REMEMBER_BYTES`] in all (the oldest of the partition holding most goes first).
const REMEMBER_INVALID: usize = 10_000;
const REMEMBER_BYTES: usize = 16 << 20;
/// How often positions are compared with the end offsets while rebuilding (a local call, no round trip).
const REBUILD_CHECK: Duration = Duration::from_millis(100);
/// Reading dead-letter progress: how long one attempt may hold the reader, and the pause between attempts.
const DUTY_READ_TIMEOUT: Duration = Duration::from_secs(3);
const DUTY_RETRY: Duration = Duration::from_secs(1);
/// At most one consumer-error log line per this interval.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

struct Remembered {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    invalid: Invalid,
}

impl Remembered {
    fn bytes(&self) -> usize {
        // Plus the bookkeeping around the buffers.
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + self.invalid.detail.len() + 64
    }
}

/// Other instances' invalid events, bounded in count per partition and in bytes overall.
#[derive(Default)]
struct RememberedInvalid {
    by_partition: HashMap<i32, VecDeque<Remembered>>,
    bytes: usize,
    limit_bytes: usize,
    evicted: u64,
}

impl RememberedInvalid {
    fn new(limit_bytes: usize) -> Self {
        RememberedInvalid { limit_bytes, ..Default::default() }
    }

    fn push(&mut self, partition: i32, r: Remembered) {
        let size = r.bytes();
        if size > self.limit_bytes {
            self.evicted += 1;
            return;
        }
        let q = self.by_partition.entry(partition).or_default();
        if q.len() == REMEMBER_INVALID {
            let old = q.pop_front().expect("full");
            self.bytes -= old.bytes();
            self.evicted += 1;
        }
        q.push_back(r);
        self.bytes += size;
        while self.bytes > self.limit_bytes {
            let Some(q) = self.by_partition.values_mut().max_by_key(|q| q.iter().map(Remembered::bytes).sum::<usize>())
            else {
                break;
            };
            let Some(old) = q.pop_front() else { break };
            self.bytes -= old.bytes();
            self.evicted += 1;
        }
        if self.evicted > 0 && self.evicted.is_power_of_two() {
            tracing::debug!(
                evicted = self.evicted,
                limit_bytes = self.limit_bytes,
                "forgot other instances' oldest invalid events (memory bound)"
            );
        }
    }

    fn take(&mut self, partition: i32) -> Option<VecDeque<Remembered>> {
        let q = self.by_partition.remove(&partition)?;
        self.bytes -= q.iter().map(Remembered::bytes).sum::<usize>();
        Some(q)
    }
}

pub struct Table {
    consumer: StreamConsumer,
    topic: String,
    decoder: Decoder,
    store: Arc<RwLock<Store>>,
    target_names: Vec<String>,
    engine: Engine,
    dlq: DutyQueue,
    lease_partitions: i32,
    leases: watch::Receiver<BTreeSet<i32>>,
    /// Desired partitions this instance dead-letters for → the next offset to dead-letter from.
    duty: HashMap<i32, i64>,
    remembered: RememberedInvalid,
    /// Newly owned partitions wait for their dead-letter progress to be readable.
    duty_pending: bool,
    /// Per partition: the end offset at start; rebuilt once every position reaches it.
    rebuild_until: HashMap<i32, i64>,
    /// Next offset to read, per partition (for the source lag gauge).
    positions: HashMap<i32, i64>,
    ready: watch::Sender<bool>,
    /// The dead-letter task, until the daemon takes it to supervise it.
    duty_task: Option<tokio::task::JoinHandle<()>>,
    /// Targets whose desired count changed since the gauges were last set (once per batch, not per event:
    /// a rebuild of a million events would spend a label lookup per event and target).
    counts: HashMap<TargetId, usize>,
}

/// Records handled per wake of the reader before it looks at its other duties again.
const BATCH: usize = 1024;

/// A record copied out of the consumer's buffer (a borrowed message holds the consumer).
struct Copied {
    origin: Origin,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

fn copied(m: Result<BorrowedMessage<'_>, KafkaError>) -> Result<Copied, KafkaError> {
    m.map(|m| Copied {
        origin: super::origin(&m),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
    })
}

pub struct TableArgs {
    pub topic: String,
    pub group_id: String,
    pub decoder: Decoder,
    pub store: Arc<RwLock<Store>>,
    pub target_names: Vec<String>,
    pub engine: Engine,
    pub dlq: DeadLetters,
    pub lease_partitions: i32,
    pub leases: watch::Receiver<BTreeSet<i32>>,
    pub ready: watch::Sender<bool>,
}

impl Table {
    /// Starts the dead-letter task too: call within the runtime.
    pub fn new(base: &ClientConfig, a: TableArgs) -> Result<Table, String> {
        let group = format!("{}.dead-letters", a.group_id);
        // The task ends once the table (the queue's only sender) is dropped and the queue is drained.
        let (dlq, duty_task) = DutyQueue::spawn(base, a.dlq, &group, &a.topic, QUEUE_BYTES)?;
        let mut cfg = base.clone();
        // librdkafka prefetches up to 64 MiB of payload by default, and holds about three times that (fetch buffers,
        // per-message ops): over a third of the whole process's budget at 1 M aliases (DESIGN §2.10). 1 MiB, with the
        // fetch backoff cut from 1 s to 20 ms so the small queue refills at once, rebuilds faster than the default
        // (300 k events: 1.9 s and 104 MB at ready, against 2.9 s and 157 MB).
        // `[kafka.properties]` values win.
        for (k, v) in [("queued.max.messages.kbytes", "1024"), ("fetch.queue.backoff.ms", "20")] {
            if cfg.get(k).is_none() {
                cfg.set(k, v);
            }
        }
        let consumer: StreamConsumer = cfg
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| format!("desired-topic consumer: {e}"))?;
        Ok(Table {
            consumer,
            topic: a.topic,
            decoder: a.decoder,
            store: a.store,
            target_names: a.target_names,
            engine: a.engine,
            dlq,
            lease_partitions: a.lease_partitions,
            leases: a.leases,
            duty: HashMap::new(),
            remembered: RememberedInvalid::new(REMEMBER_BYTES),
            duty_pending: false,
            rebuild_until: HashMap::new(),
            positions: HashMap::new(),
            ready: a.ready,
            duty_task: Some(duty_task),
            counts: HashMap::new(),
        })
    }

    /// The dead-letter task (once): it ends only when the table is dropped, so its end before then is a failure.
    pub fn take_duty_task(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.duty_task.take()
    }

    /// Finds the partitions and their end offsets, retrying until the topic exists.
    async fn assign(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut delay = Duration::from_millis(500);
        loop {
            match tokio::task::block_in_place(|| self.partitions_and_ends()) {
                Ok(ends) => {
                    let mut tpl = TopicPartitionList::new();
                    for &p in ends.keys() {
                        // Beginning = the low watermark, which a deleted prefix has moved.
                        tpl.add_partition_offset(&self.topic, p, Offset::Beginning).expect("valid offset");
                    }
                    if let Err(e) = self.consumer.assign(&tpl) {
                        tracing::error!(error = %e, "assigning desired-topic partitions failed");
                    } else {
                        tracing::info!(topic = %self.topic, partitions = ends.len(), "reading the desired topic from the beginning");
                        self.positions = ends.iter().map(|(&p, &(low, _))| (p, low)).collect();
                        // Nothing to read where low = high (empty, or every record deleted).
                        self.rebuild_until = ends
                            .into_iter()
                            .filter(|(_, (low, high))| high > low)
                            .map(|(p, (_, high))| (p, high))
                            .collect();
                        return true;
                    }
                }
                Err(e) => tracing::error!(topic = %self.topic, error = %e, "desired topic unavailable; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Partition → (low, high) watermarks.
    fn partitions_and_ends(&self) -> Result<HashMap<i32, (i64, i64)>, String> {
        let md = self.consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(10)).map_err(|e| e.to_string())?;
        let t = md.topics().first().ok_or("no metadata")?;
        if let Some(e) = t.error() {
            return Err(format!("{e:?}"));
        }
        if t.partitions().is_empty() {
            return Err("topic has no partitions (does it exist?)".into());
        }
        let mut ends = HashMap::new();
        for p in t.partitions() {
            let marks = self
                .consumer
                .fetch_watermarks(&self.topic, p.id(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            ends.insert(p.id(), marks);
        }
        Ok(ends)
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if !self.assign(&mut shutdown).await {
            return;
        }
        self.check_rebuilt();
        // The lease may have been assigned before this reader subscribed to changes.
        self.update_duty();
        let mut lag_tick = tokio::time::interval(Duration::from_secs(10));
        let mut rebuild_tick = tokio::time::interval(REBUILD_CHECK);
        let mut duty_retry = tokio::time::interval(DUTY_RETRY);
        let mut errors = ErrorLog::new(ERROR_LOG_EVERY);
        loop {
            tokio::select! {
                // The position passes offsets that deliver nothing (a commit marker) without a message.
                _ = rebuild_tick.tick(), if !self.rebuild_until.is_empty() => self.check_positions(),
                _ = duty_retry.tick(), if self.duty_pending => self.update_duty(),
                _ = lag_tick.tick() => {
                    self.adopt_new_partitions().await;
                    self.update_lag();
                }
                m = self.consumer.recv() => {
                    self.received(copied(m), &mut errors);
                    // What is already fetched is handled without another trip through the select.
                    for _ in 1..BATCH {
                        let Some(m) = self.consumer.recv().now_or_never() else { break };
                        self.received(copied(m), &mut errors);
                    }
                    self.flush_counts();
                }
                r = self.leases.changed() => {
                    if r.is_err() { return; }
                    self.update_duty();
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Records not yet read, from the partitions' end offsets (one metadata round trip each).
    /// Partitions added to the desired topic while we run are read from their beginning too.
    async fn adopt_new_partitions(&mut self) {
        let md =
            tokio::task::block_in_place(|| self.consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(5)));
        let Ok(md) = md else { return };
        let Some(t) = md.topics().first() else { return };
        let new: Vec<i32> = t.partitions().iter().map(|p| p.id()).filter(|p| !self.positions.contains_key(p)).collect();
        if new.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &new {
            let _ = tpl.add_partition_offset(&self.topic, p, Offset::Beginning);
        }
        match self.consumer.incremental_assign(&tpl) {
            Ok(()) => {
                tracing::info!(topic = %self.topic, partitions = ?new, "reading new desired-topic partitions");
                self.positions.extend(new.iter().map(|&p| (p, 0)));
                // Dead-letter duty covers them once the lease map is recomputed.
                self.update_duty();
            }
            Err(e) => tracing::warn!(error = %e, "assigning new desired-topic partitions failed; retrying"),
        }
    }

    /// The consumer's positions (offset of the next record to fetch), past any marker it skipped.
    fn consumer_positions(&self) -> HashMap<i32, i64> {
        let Ok(tpl) = self.consumer.position() else { return HashMap::new() };
        tpl.elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    /// Ends the rebuild of partitions whose position reached their end offset.
    fn check_positions(&mut self) {
        let positions = self.consumer_positions();
        let before = self.rebuild_until.len();
        self.rebuild_until.retain(|p, end| positions.get(p).is_none_or(|pos| pos < end));
        if self.rebuild_until.len() < before {
            self.check_rebuilt();
        }
    }

    fn update_lag(&mut self) {
        for (p, pos) in self.consumer_positions() {
            let known = self.positions.entry(p).or_insert(pos);
            *known = (*known).max(pos);
        }
        let lag: i64 = tokio::task::block_in_place(|| {
            self.positions
                .iter()
                .filter_map(|(&p, &pos)| {
                    let (_, high) = self.consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(2)).ok()?;
                    Some((high - pos).max(0))
                })
                .sum()
        });
        metrics().source_lag.set(lag);
    }

    fn received(&mut self, m: Result<Copied, KafkaError>, errors: &mut ErrorLog) {
        match m {
            Ok(c) => self.handle(c.origin, c.offset, c.key.as_deref(), c.value.as_deref()),
            Err(e) => {
                // Broker restarts surface here; librdkafka reconnects by itself. No pause per error: errors
                // queued while the broker was down would hold the reader back after it returns.
                if let Some(suppressed) = errors.admit(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "desired-topic consumer error");
                }
            }
        }
    }

    fn flush_counts(&mut self) {
        let m = metrics();
        for (t, n) in self.counts.drain() {
            m.desired_aliases.with_label_values(&[&self.target_names[t as usize]]).set(n as i64);
        }
    }

    fn handle(&mut self, origin: Origin, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        let partition = origin.partition;
        self.positions.insert(partition, offset + 1);
        let m = metrics();
        match self.decoder.decode(key, value) {
            Ok(ev) => {
                let alias = ev.alias.clone();
                let applied = self.engine.apply(ev, origin);
                self.counts.extend(applied.counts.iter().copied());
                let changed: Vec<TargetId> = applied.counts.iter().map(|c| c.0).collect();
                match applied.outcome {
                    Outcome::Applied => {
                        m.events.with_label_values(&["applied"]).inc();
                        if !changed.is_empty() {
                            self.engine.changed(&alias, &changed, origin.timestamp_ms);
                        }
                        self.engine.unchanged(&alias, &applied.unchanged);
                    }
                    Outcome::Stale => {
                        m.events.with_label_values(&["stale"]).inc();
                        tracing::debug!(alias, partition, offset, "stale revision ignored");
                    }
                }
            }
            Err(invalid) => {
                m.events.with_label_values(&["invalid"]).inc();
                if let Some(&from) = self.duty.get(&partition) {
                    // Below `from`: dead-lettered before (by us before a restart, or a previous owner).
                    if offset >= from {
                        self.dead_letter(partition, offset, key, value, &invalid);
                        self.duty.insert(partition, offset + 1);
                    }
                } else {
                    self.remembered.push(
                        partition,
                        Remembered { offset, key: key.map(<[u8]>::to_vec), value: value.map(<[u8]>::to_vec), invalid },
                    );
                }
            }
        }
        if let Some(end) = self.rebuild_until.get(&partition) {
            if offset + 1 >= *end {
                self.rebuild_until.remove(&partition);
                self.check_rebuilt();
            }
        }
    }

    fn check_rebuilt(&self) {
        if self.rebuild_until.is_empty() && !*self.ready.borrow() {
            let n = self.store.read().unwrap().len();
            tracing::info!(aliases = n, "desired state rebuilt");
            metrics().ready.set(1);
            self.ready.send_replace(true);
            self.engine.set_rebuilt();
        }
    }

    /// Queues the letter (delivery and the progress commit happen in the background).
    fn dead_letter(&self, partition: i32, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>, inv: &Invalid) {
        tracing::warn!(partition, offset, reason = inv.reason.as_str(), detail = %inv.detail, key = ?key.map(String::from_utf8_lossy), "invalid event dead-lettered");
        let letter = Letter {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            reason: inv.reason.as_str(),
            headers: vec![
                ("aliassync.detail", inv.detail.chars().take(500).collect()),
                ("aliassync.source.topic", self.topic.clone()),
                ("aliassync.source.partition", partition.to_string()),
                ("aliassync.source.offset", offset.to_string()),
            ],
        };
        self.dlq.push(letter, partition, offset + 1);
    }

    /// Lease partitions changed: take up dead-letter duty for newly owned desired partitions, from
    /// their committed progress, sending what the previous owner had not yet sent.
    fn update_duty(&mut self) {
        let owned = self.leases.borrow_and_update().clone();
        let mine: BTreeSet<i32> = self
            .positions
            .keys()
            .copied()
            .filter(|p| owned.contains(&lease_partition_of_desired(*p, self.lease_partitions)))
            .collect();
        self.duty.retain(|p, _| mine.contains(p));
        let gained: Vec<i32> = mine.into_iter().filter(|p| !self.duty.contains_key(p)).collect();
        if gained.is_empty() {
            self.duty_pending = false;
            return;
        }
        // A failed read (broker down, coordinator loading) is retried from the loop: no stall here.
        let committed = match self.committed(&gained) {
            Ok(c) => {
                self.duty_pending = false;
                c
            }
            Err(e) => {
                if !self.duty_pending {
                    tracing::warn!(error = %e, partitions = ?gained, "reading dead-letter progress failed; taking up the duty once it can be read");
                }
                self.duty_pending = true;
                return;
            }
        };
        for p in gained {
            let from = committed.get(&p).copied().unwrap_or(0);
            self.duty.insert(p, from);
            let Some(list) = self.remembered.take(p) else { continue };
            let mut last = None;
            for r in list.iter().filter(|r| r.offset >= from) {
                self.dead_letter(p, r.offset, r.key.as_deref(), r.value.as_deref(), &r.invalid);
                last = Some(r.offset);
            }
            if let Some(o) = last {
                self.duty.insert(p, o + 1);
            }
        }
    }

    /// Committed dead-letter progress per partition (absent: nothing committed yet). One short attempt:
    /// it runs on the reader's task.
    fn committed(&self, parts: &[i32]) -> Result<HashMap<i32, i64>, String> {
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            let _ = tpl.add_partition(&self.topic, *p);
        }
        let c = tokio::task::block_in_place(|| self.consumer.committed_offsets(tpl, DUTY_READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(parts
            .iter()
            .filter_map(|&p| match c.find_partition(&self.topic, p)?.offset() {
                Offset::Offset(o) => Some((p, o)),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Reason;

    fn rec(offset: i64, value_len: usize) -> Remembered {
        Remembered {
            offset,
            key: Some(b"k".to_vec()),
            value: Some(vec![b'x'; value_len]),
            invalid: Invalid { reason: Reason::MalformedJson, detail: String::new() },
        }
    }

    #[test]
    fn other_instances_invalid_events_are_bounded_in_bytes() {
        let mut r = RememberedInvalid::new(100_000);
        for o in 0..50 {
            r.push(0, rec(o, 10_000));
        }
        r.push(1, rec(0, 10_000));
        assert!(r.bytes <= 100_000, "{}", r.bytes);
        let sum: usize = r.by_partition.values().flatten().map(Remembered::bytes).sum();
        assert_eq!(sum, r.bytes, "the running total matches");
        // The partition holding most gave way, oldest first; the newest records are kept.
        let p0 = r.take(0).unwrap();
        assert_eq!(p0.back().unwrap().offset, 49);
        assert!(p0.front().unwrap().offset > 40);
        assert_eq!(r.take(1).unwrap().len(), 1);
        assert_eq!(r.bytes, 0);
        // A record larger than the whole budget is not kept at all.
        r.push(2, rec(0, 200_000));
        assert!(r.take(2).is_none_or(|q| q.is_empty()));
    }
}
