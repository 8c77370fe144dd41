//! The global table: every instance reads every partition of the desired topic from the earliest
//! offset and keeps tailing, applying events to the desired store and waking the engine.
//!
//! Dead-letter duty for desired partition p belongs to the owner of lease partition p mod P. Its
//! progress is committed as consumer-group offsets (`<group_id>.dead-letters`, never joined), so an
//! invalid event is dead-lettered once across restarts and hand-overs, not once per rebuild.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::dead_letter::{DeadLetters, Letter};
use super::lease_partition_of_desired;
use crate::desired::{Outcome, Store};
use crate::event::{Decoder, Invalid};
use crate::reconcile::Engine;
use crate::telemetry::metrics::metrics;

/// Invalid events seen on partitions whose dead-letter duty is elsewhere, kept in case the duty
/// moves here before the other instance got to them.
const REMEMBER_INVALID: usize = 10_000;

struct Remembered {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    invalid: Invalid,
}

pub struct Table {
    consumer: StreamConsumer,
    topic: String,
    decoder: Decoder,
    store: Arc<RwLock<Store>>,
    target_names: Vec<String>,
    engine: Engine,
    dlq: DeadLetters,
    lease_partitions: i32,
    leases: watch::Receiver<BTreeSet<i32>>,
    /// Desired partitions this instance dead-letters for → the next offset to dead-letter from.
    duty: HashMap<i32, i64>,
    remembered: HashMap<i32, VecDeque<Remembered>>,
    /// Per partition: the end offset at start; rebuilt once every position reaches it.
    rebuild_until: HashMap<i32, i64>,
    /// Next offset to read, per partition (for the source lag gauge).
    positions: HashMap<i32, i64>,
    ready: watch::Sender<bool>,
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
    pub fn new(base: &ClientConfig, a: TableArgs) -> Result<Table, String> {
        let consumer: StreamConsumer = base
            .clone()
            .set("group.id", format!("{}.dead-letters", a.group_id))
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
            dlq: a.dlq,
            lease_partitions: a.lease_partitions,
            leases: a.leases,
            duty: HashMap::new(),
            remembered: HashMap::new(),
            rebuild_until: HashMap::new(),
            positions: HashMap::new(),
            ready: a.ready,
        })
    }

    /// Finds the partitions and their end offsets, retrying until the topic exists.
    async fn assign(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut delay = Duration::from_millis(500);
        loop {
            match tokio::task::block_in_place(|| self.partitions_and_ends()) {
                Ok(ends) => {
                    let mut tpl = TopicPartitionList::new();
                    for &p in ends.keys() {
                        tpl.add_partition_offset(&self.topic, p, Offset::Beginning).expect("valid offset");
                    }
                    if let Err(e) = self.consumer.assign(&tpl) {
                        tracing::error!(error = %e, "assigning desired-topic partitions failed");
                    } else {
                        tracing::info!(topic = %self.topic, partitions = ends.len(), "reading the desired topic from the beginning");
                        self.positions = ends.keys().map(|&p| (p, 0)).collect();
                        self.rebuild_until = ends.into_iter().filter(|(_, end)| *end > 0).collect();
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

    fn partitions_and_ends(&self) -> Result<HashMap<i32, i64>, String> {
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
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p.id(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            ends.insert(p.id(), high);
        }
        Ok(ends)
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if !self.assign(&mut shutdown).await {
            return;
        }
        self.check_rebuilt();
        // The lease may have been assigned before this reader subscribed to changes.
        self.update_duty().await;
        let mut lag_tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = lag_tick.tick() => {
                    self.adopt_new_partitions().await;
                    self.update_lag();
                }
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        let (p, o) = (m.partition(), m.offset());
                        let (key, value) = (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec));
                        drop(m);
                        self.handle(p, o, key.as_deref(), value.as_deref()).await;
                    }
                    Err(e) => {
                        // Broker restarts surface here; librdkafka reconnects by itself.
                        tracing::warn!(error = %e, "desired-topic consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                r = self.leases.changed() => {
                    if r.is_err() { return; }
                    self.update_duty().await;
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
                self.update_duty().await;
            }
            Err(e) => tracing::warn!(error = %e, "assigning new desired-topic partitions failed; retrying"),
        }
    }

    fn update_lag(&self) {
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

    async fn handle(&mut self, partition: i32, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.positions.insert(partition, offset + 1);
        let m = metrics();
        match self.decoder.decode(key, value) {
            Ok(ev) => {
                let alias = ev.alias.clone();
                let (outcome, changed) = {
                    let mut s = self.store.write().unwrap();
                    let r = s.apply(ev);
                    for &t in &r.1 {
                        m.desired_aliases.with_label_values(&[&self.target_names[t as usize]]).set(s.count(t) as i64);
                    }
                    r
                };
                match outcome {
                    Outcome::Applied => {
                        m.events.with_label_values(&["applied"]).inc();
                        if !changed.is_empty() {
                            self.engine.changed(&alias, &changed);
                        }
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
                        self.dead_letter(partition, offset, key, value, &invalid).await;
                        self.commit(partition, offset + 1);
                        self.duty.insert(partition, offset + 1);
                    }
                } else {
                    let r = self.remembered.entry(partition).or_default();
                    if r.len() == REMEMBER_INVALID {
                        r.pop_front();
                    }
                    r.push_back(Remembered {
                        offset,
                        key: key.map(<[u8]>::to_vec),
                        value: value.map(<[u8]>::to_vec),
                        invalid,
                    });
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

    async fn dead_letter(&self, partition: i32, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>, inv: &Invalid) {
        tracing::warn!(partition, offset, reason = inv.reason.as_str(), detail = %inv.detail, key = ?key.map(String::from_utf8_lossy), "invalid event dead-lettered");
        self.dlq
            .send(Letter {
                key,
                value,
                reason: inv.reason.as_str(),
                headers: vec![
                    ("aliassync.detail", inv.detail.chars().take(500).collect()),
                    ("aliassync.source.topic", self.topic.clone()),
                    ("aliassync.source.partition", partition.to_string()),
                    ("aliassync.source.offset", offset.to_string()),
                ],
            })
            .await;
    }

    /// Records dead-letter progress. Synchronous and retried: a lost commit means duplicates after a
    /// restart (a new group's coordinator may still be loading on the first try). Invalid events are rare.
    fn commit(&self, partition: i32, next: i64) {
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next)).is_err() {
            return;
        }
        for attempt in 1..=10 {
            match tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync)) {
                Ok(()) => return,
                Err(e) if attempt == 10 => {
                    tracing::warn!(partition, error = %e, "committing dead-letter progress failed; a restart may repeat dead letters")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100 * attempt)),
            }
        }
    }

    /// Lease partitions changed: take up dead-letter duty for newly owned desired partitions, from
    /// their committed progress, sending what the previous owner had not yet sent.
    async fn update_duty(&mut self) {
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
            return;
        }
        let committed = self.committed(&gained);
        for p in gained {
            let from = committed.get(&p).copied().unwrap_or(0);
            self.duty.insert(p, from);
            let Some(list) = self.remembered.remove(&p) else { continue };
            let mut last = None;
            for r in list.iter().filter(|r| r.offset >= from) {
                self.dead_letter(p, r.offset, r.key.as_deref(), r.value.as_deref(), &r.invalid).await;
                last = Some(r.offset);
            }
            if let Some(o) = last {
                self.commit(p, o + 1);
                self.duty.insert(p, o + 1);
            }
        }
    }

    /// Committed dead-letter progress per partition (absent: nothing committed yet).
    fn committed(&self, parts: &[i32]) -> HashMap<i32, i64> {
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            let _ = tpl.add_partition(&self.topic, *p);
        }
        for attempt in 1..=10u64 {
            match tokio::task::block_in_place(|| self.consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)))
            {
                Ok(c) => {
                    return parts
                        .iter()
                        .filter_map(|&p| match c.find_partition(&self.topic, p)?.offset() {
                            Offset::Offset(o) => Some((p, o)),
                            _ => None,
                        })
                        .collect()
                }
                Err(e) if attempt == 10 => {
                    // Re-sending is safer than losing dead letters: duplicates are tolerable.
                    tracing::warn!(error = %e, "reading dead-letter progress failed; invalid events may be dead-lettered again");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100 * attempt)),
            }
        }
        HashMap::new()
    }
}
