//! One-shot read of the desired topic up to its current end, for the CLI (plan, publish): the same
//! decoding and store as the daemon, no leases, no dead letters.
//!
//! A partition is read once the consumer's position reaches its end offset: its last offsets may deliver
//! no record (a transaction's commit marker, a compaction gap), so the last record's offset cannot tell.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::desired::{Outcome, Store};
use crate::event::Decoder;

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub applied: u64,
    pub stale: u64,
    pub invalid: u64,
}

/// Blocking: call from a blocking context.
pub fn read_to_end(
    base: &ClientConfig,
    topic: &str,
    decoder: &Decoder,
    targets: usize,
) -> Result<(Store, Counts), String> {
    let c: BaseConsumer = base
        .clone()
        .set("group.id", "aliassync-cli")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("kafka consumer: {e}"))?;
    let md =
        c.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| format!("metadata for {topic}: {e}"))?;
    let t = md.topics().first().ok_or("no metadata")?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(format!("topic {topic} does not exist"));
    }
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .map_err(|e| format!("offsets of {topic}: {e}"))?;
        // low = high: empty, or every record deleted.
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).map_err(|e| e.to_string())?;
        }
    }
    let mut store = Store::new(targets);
    let mut counts = Counts::default();
    if ends.is_empty() {
        return Ok((store, counts));
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let mut last = Instant::now();
    while !ends.is_empty() {
        match c.poll(Duration::from_millis(100)) {
            None if last.elapsed() > Duration::from_secs(30) => {
                return Err(format!("no progress reading {topic} for 30 s"))
            }
            None => {}
            Some(m) => {
                let m = m.map_err(|e| format!("reading {topic}: {e}"))?;
                last = Instant::now();
                match decoder.decode(m.key(), m.payload()) {
                    Ok(ev) => match store.apply(ev, super::origin(&m)).0 {
                        Outcome::Applied => counts.applied += 1,
                        Outcome::Stale => counts.stale += 1,
                    },
                    Err(_) => counts.invalid += 1,
                }
            }
        }
        // After every poll: a poll that returns nothing may still have moved the position past a marker.
        let positions = c.position().map_err(|e| format!("position in {topic}: {e}"))?;
        ends.retain(|&p, end| !reached(&positions, topic, p, *end));
    }
    Ok((store, counts))
}

/// Whether the consumer's position in `partition` is at or past `end`.
fn reached(positions: &TopicPartitionList, topic: &str, partition: i32, end: i64) -> bool {
    positions.find_partition(topic, partition).is_some_and(|e| matches!(e.offset(), Offset::Offset(pos) if pos >= end))
}
