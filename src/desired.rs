//! The desired-state store: alias → revision + per-target key, rebuilt from the compacted topic.
//! Pure data: `apply` returns which targets an event changed; it knows nothing of queues or clouds.

use std::sync::{Arc, RwLock};

use crate::event::{Body, Event, TargetId};
use crate::keyid::KeyId;

// aHash: randomly keyed like std's SipHash (no hash flooding from producers), several times faster.
// Insertion-ordered (entries are never removed, so an index stays valid): walks resume at an index, which
// lets them release the lock between chunks.
type Map<K, V> = indexmap::IndexMap<K, V, ahash::RandomState>;

/// Entries a walk reads per lock hold: the reader (the only writer) waits at most this long.
pub const WALK_CHUNK: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Revision below the one already held: ignored.
    Stale,
}

/// Where and when a record was written. A tombstone carries no revision: within its partition Kafka's
/// order makes it the latest word, and against records of other partitions (one alias's records sit in
/// two after partitions were added) the record timestamps decide, so the outcome does not depend on the
/// order in which partitions are read. The rule: a tombstone deletes what was produced before it (by
/// timestamp, ties included) and never a record produced after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    pub partition: i32,
    /// The record's timestamp (CreateTime or LogAppendTime), in ms since the epoch.
    pub timestamp_ms: i64,
}

#[derive(Debug)]
struct Entry {
    revision: u64,
    /// Sorted by target; empty = absent everywhere (kept so a later stale event stays stale).
    targets: Box<[(TargetId, KeyId)]>,
    /// The last applied record's origin.
    origin: Origin,
    /// Whether that record was a tombstone (it then shadows older records of other partitions).
    tombstone: bool,
}

#[derive(Debug)]
pub struct Store {
    entries: Map<Box<str>, Entry>,
    per_target: Vec<usize>,
}

impl Store {
    pub fn new(targets: usize) -> Self {
        Store { entries: Map::default(), per_target: vec![0; targets] }
    }

    /// Applies an event read at `origin`; returns the outcome and the targets whose desired key changed.
    pub fn apply(&mut self, ev: Event, origin: Origin) -> (Outcome, Vec<TargetId>) {
        let new_targets: Box<[(TargetId, KeyId)]> = match ev.body {
            Body::Present(t) => t.into_boxed_slice(),
            Body::Absent => Box::new([]),
        };
        let tombstone = ev.revision.is_none();
        match self.entries.get_mut(ev.alias.as_str()) {
            Some(e) => {
                let other_partition = e.origin.partition != origin.partition;
                let revision = match ev.revision {
                    // Produced before a tombstone of another partition: that tombstone deleted it.
                    Some(_) if e.tombstone && other_partition && origin.timestamp_ms <= e.origin.timestamp_ms => {
                        return (Outcome::Stale, Vec::new())
                    }
                    Some(r) if r < e.revision => return (Outcome::Stale, Vec::new()),
                    Some(r) => r,
                    // A tombstone never deletes a record of another partition produced after it.
                    None if !e.tombstone && other_partition && e.origin.timestamp_ms > origin.timestamp_ms => {
                        return (Outcome::Stale, Vec::new())
                    }
                    // Two tombstones: the later one (by timestamp) shadows more, so it stays.
                    None if e.tombstone && e.origin.timestamp_ms > origin.timestamp_ms => {
                        return (Outcome::Applied, Vec::new())
                    }
                    None => e.revision,
                };
                let changed = diff(&e.targets, &new_targets);
                for (t, _) in e.targets.iter() {
                    self.per_target[*t as usize] -= 1;
                }
                for (t, _) in new_targets.iter() {
                    self.per_target[*t as usize] += 1;
                }
                e.targets = new_targets;
                e.revision = revision;
                e.origin = origin;
                e.tombstone = tombstone;
                (Outcome::Applied, changed)
            }
            None => {
                let changed: Vec<TargetId> = new_targets.iter().map(|(t, _)| *t).collect();
                for t in &changed {
                    self.per_target[*t as usize] += 1;
                }
                let revision = ev.revision.unwrap_or(0);
                // A tombstone of an unknown alias is kept too: an older record read later stays deleted.
                let e = Entry { revision, targets: new_targets, origin, tombstone };
                self.entries.insert(ev.alias.into_boxed_str(), e);
                (Outcome::Applied, changed)
            }
        }
    }

    /// The key `alias` must point at in `target`; None = must be absent.
    pub fn desired(&self, alias: &str, target: TargetId) -> Option<Arc<str>> {
        let e = self.entries.get(alias)?;
        e.targets.binary_search_by_key(&target, |(t, _)| *t).ok().map(|i| Arc::from(e.targets[i].1.to_string()))
    }

    pub fn revision(&self, alias: &str) -> Option<u64> {
        self.entries.get(alias).map(|e| e.revision)
    }

    /// Whether the desired state mentions the alias at all (present anywhere, or explicitly absent).
    pub fn knows(&self, alias: &str) -> bool {
        self.entries.contains_key(alias)
    }

    /// Aliases with a desired key in `target` (walks hold the lock per chunk: [`walk_target`]).
    #[cfg(test)]
    fn aliases_in(&self, target: TargetId) -> impl Iterator<Item = &str> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| e.targets.binary_search_by_key(&target, |(t, _)| *t).is_ok())
            .map(|(a, _)| a.as_ref())
    }

    /// From entry `from` on, at most `max` entries: the aliases desired in `target` with their key, and
    /// where the next chunk starts (None at the end).
    fn chunk_in(&self, target: TargetId, from: usize, max: usize) -> (Vec<(Arc<str>, KeyId)>, Option<usize>) {
        let end = from.saturating_add(max).min(self.entries.len());
        let out = self.entries.get_range(from..end).into_iter().flat_map(|s| s.iter()).filter_map(|(a, e)| {
            let i = e.targets.binary_search_by_key(&target, |(t, _)| *t).ok()?;
            Some((Arc::from(&**a), e.targets[i].1.clone()))
        });
        (out.collect(), (end < self.entries.len()).then_some(end))
    }

    /// Every alias with its revision and desired keys by target (empty: absent everywhere).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, &[(TargetId, KeyId)])> + '_ {
        self.entries.iter().map(|(a, e)| (a.as_ref(), e.revision, &e.targets[..]))
    }

    pub fn count(&self, target: TargetId) -> usize {
        self.per_target.get(target as usize).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Walks the aliases desired in `target` (with their key) holding the lock one chunk at a time, so the
/// reader applies events meanwhile: a walk over a million aliases never stalls it. Entries added during
/// the walk may be missed or seen (their own change queues them anyway).
pub fn walk_target(store: &RwLock<Store>, target: TargetId, mut f: impl FnMut(Arc<str>, KeyId)) {
    let mut from = Some(0);
    while let Some(i) = from {
        let (chunk, next) = store.read().unwrap_or_else(|e| e.into_inner()).chunk_in(target, i, WALK_CHUNK);
        for (a, k) in chunk {
            f(a, k);
        }
        from = next;
    }
}

/// Targets whose key differs between two sorted lists (added, removed or re-pointed).
fn diff(old: &[(TargetId, KeyId)], new: &[(TargetId, KeyId)]) -> Vec<TargetId> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    out.push(a.0);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push(a.0);
                i += 1;
            }
            (Some(_), Some(b)) => {
                out.push(b.0);
                j += 1;
            }
            (Some(a), None) => {
                out.push(a.0);
                i += 1;
            }
            (None, Some(b)) => {
                out.push(b.0);
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(alias: &str, rev: Option<u64>, t: &[(TargetId, &str)]) -> Event {
        Event {
            alias: alias.into(),
            revision: rev,
            body: Body::Present(t.iter().map(|(a, b)| (*a, KeyId::new(b))).collect()),
        }
    }
    fn absent(alias: &str, rev: Option<u64>) -> Event {
        Event { alias: alias.into(), revision: rev, body: Body::Absent }
    }

    impl Store {
        /// One partition, no timestamps: Kafka's order alone.
        fn apply0(&mut self, ev: Event) -> (Outcome, Vec<TargetId>) {
            self.apply(ev, Origin::default())
        }
    }

    #[test]
    fn revisions_and_changes() {
        let mut s = Store::new(3);
        assert_eq!(s.apply0(ev("a", Some(1), &[(0, "k1"), (1, "k1")])), (Outcome::Applied, vec![0, 1]));
        assert_eq!(s.count(0), 1);
        // Same content again (a replay): applied, nothing changed.
        assert_eq!(s.apply0(ev("a", Some(1), &[(0, "k1"), (1, "k1")])), (Outcome::Applied, vec![]));
        assert_eq!(s.apply0(ev("a", Some(0), &[(0, "k9")])), (Outcome::Stale, vec![]));
        assert_eq!(s.desired("a", 0).as_deref(), Some("k1"));
        // Re-point target 1, drop target 0, add target 2.
        assert_eq!(s.apply0(ev("a", Some(5), &[(1, "k2"), (2, "k3")])), (Outcome::Applied, vec![0, 1, 2]));
        assert_eq!(s.desired("a", 0), None);
        assert_eq!(s.desired("a", 1).as_deref(), Some("k2"));
        assert_eq!((s.count(0), s.count(1), s.count(2)), (0, 1, 1));
        // Absent at revision 6: every target changes; a later stale event stays ignored.
        assert_eq!(s.apply0(absent("a", Some(6))), (Outcome::Applied, vec![1, 2]));
        assert!(s.knows("a"));
        assert_eq!(s.apply0(ev("a", Some(4), &[(0, "k1")])), (Outcome::Stale, vec![]));
        assert_eq!(s.apply0(ev("a", Some(7), &[(0, "k1")])), (Outcome::Applied, vec![0]));
        // Tombstone: no revision, always applies.
        assert_eq!(s.apply0(absent("a", None)), (Outcome::Applied, vec![0]));
        assert_eq!(s.revision("a"), Some(7));
        assert_eq!(s.aliases_in(0).count(), 0);
    }

    /// Every order of reading two partitions (each in its own order) ends in the same desired state.
    fn same_outcome_in_every_interleaving(p0: &[(Event, i64)], p1: &[(Event, i64)]) -> Option<String> {
        fn walk(
            p0: &[(Event, i64)],
            p1: &[(Event, i64)],
            seq: &mut Vec<(Event, Origin)>,
            out: &mut Vec<Vec<(Event, Origin)>>,
        ) {
            if p0.is_empty() && p1.is_empty() {
                out.push(seq.clone());
                return;
            }
            for (part, rest, other) in [(0, p0, p1), (1, p1, p0)] {
                if let Some(((e, ts), tail)) = rest.split_first() {
                    seq.push((e.clone(), Origin { partition: part, timestamp_ms: *ts }));
                    if part == 0 {
                        walk(tail, other, seq, out)
                    } else {
                        walk(other, tail, seq, out)
                    }
                    seq.pop();
                }
            }
        }
        let mut orders = Vec::new();
        walk(p0, p1, &mut Vec::new(), &mut orders);
        let outcomes: std::collections::BTreeSet<Option<String>> = orders
            .into_iter()
            .map(|seq| {
                let mut s = Store::new(1);
                for (e, o) in seq {
                    s.apply(e, o);
                }
                s.desired("a", 0).map(|k| k.to_string())
            })
            .collect();
        assert_eq!(outcomes.len(), 1, "the outcome depends on the read order: {outcomes:?}");
        outcomes.into_iter().next().unwrap()
    }

    #[test]
    fn a_tombstone_deletes_what_was_produced_before_it_whatever_the_read_order() {
        let rec = |rev, k: &str| ev("a", Some(rev), &[(0, k)]);
        // A record on partition 0, then (later) a tombstone on partition 1: deleted.
        assert_eq!(same_outcome_in_every_interleaving(&[(rec(1, "k1"), 10)], &[(absent("a", None), 20)]), None);
        // The tombstone first, then a record produced after it: present.
        assert_eq!(
            same_outcome_in_every_interleaving(&[(rec(1, "k1"), 30)], &[(absent("a", None), 20)]).as_deref(),
            Some("k1")
        );
        // A record before the tombstone and one after it on the same partition.
        assert_eq!(
            same_outcome_in_every_interleaving(&[(rec(1, "k1"), 10), (rec(2, "k2"), 30)], &[(absent("a", None), 20)])
                .as_deref(),
            Some("k2")
        );
        // Both partitions hold records and tombstones.
        assert_eq!(
            same_outcome_in_every_interleaving(
                &[(rec(1, "k1"), 10), (absent("a", None), 40)],
                &[(rec(2, "k2"), 20), (absent("a", None), 25), (rec(3, "k3"), 30)]
            ),
            None
        );
        assert_eq!(
            same_outcome_in_every_interleaving(
                &[(rec(1, "k1"), 10), (absent("a", None), 25)],
                &[(rec(2, "k2"), 20), (rec(3, "k3"), 30)]
            )
            .as_deref(),
            Some("k3")
        );
        // Ties go to the tombstone (it deletes what was produced up to its timestamp).
        assert_eq!(same_outcome_in_every_interleaving(&[(rec(1, "k1"), 20)], &[(absent("a", None), 20)]), None);
    }

    #[test]
    fn within_one_partition_kafka_order_wins_over_timestamps() {
        let mut s = Store::new(1);
        let at = |timestamp_ms| Origin { partition: 3, timestamp_ms };
        assert_eq!(s.apply(ev("a", Some(1), &[(0, "k1")]), at(50)).0, Outcome::Applied);
        // A producer clock behind the last record's: the tombstone still supersedes it.
        assert_eq!(s.apply(absent("a", None), at(10)), (Outcome::Applied, vec![0]));
        assert_eq!(s.apply(ev("a", Some(2), &[(0, "k2")]), at(5)), (Outcome::Applied, vec![0]));
        assert_eq!(s.desired("a", 0).as_deref(), Some("k2"));
    }

    #[test]
    fn a_walk_sees_every_alias_of_its_target_and_lets_writers_in_between_chunks() {
        let store = RwLock::new(Store::new(2));
        let n = WALK_CHUNK * 2 + 17;
        for i in 0..n {
            let t: &[(TargetId, &str)] = if i % 3 == 0 { &[(0, "k"), (1, "k")] } else { &[(1, "k")] };
            store.write().unwrap().apply(ev(&format!("a{i}"), Some(1), t), Origin::default());
        }
        let mut seen = 0;
        let mut chunks_with_writes = 0;
        walk_target(&store, 0, |a, k| {
            assert!(a.starts_with('a') && k.to_string() == "k");
            seen += 1;
            // The lock is free between entries of the callback: a writer gets in.
            if let Ok(mut w) = store.try_write() {
                w.apply0(ev(&format!("late{seen}"), Some(1), &[(1, "k")]));
                chunks_with_writes += 1;
            }
        });
        assert_eq!(seen, n.div_ceil(3));
        assert_eq!(chunks_with_writes, seen);
    }
}
