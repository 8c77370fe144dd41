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

/// One alias and its desired key per target in a single allocation (1,000,000 aliases × 4 targets in well
/// under 200 MB, DESIGN §2.10): `[alias length: u16][alias][per target, sorted: id u16, key]`, a key being
/// `0` + 16 bytes (a UUID), `1` + 16 bytes (an `mrk-` id) or `2` + length u16 + bytes. Hashed and compared
/// by the alias alone, so a change of keys replaces it in place.
struct Packed(Box<[u8]>);

const TAG_UUID: u8 = 0;
const TAG_MRK: u8 = 1;
const TAG_STR: u8 = 2;

impl Packed {
    fn new(alias: &str, targets: &[(TargetId, KeyId)]) -> Packed {
        let other: Vec<Option<String>> = targets
            .iter()
            .map(|(_, k)| match k {
                KeyId::Uuid(_) | KeyId::Mrk(_) => None,
                k => Some(k.to_string()),
            })
            .collect();
        // Sized exactly: a shrinking realloc would leave a fragment behind every entry.
        let len = 2 + alias.len() + other.iter().map(|o| 3 + o.as_ref().map_or(16, |s| 2 + s.len())).sum::<usize>();
        let mut b = Vec::with_capacity(len);
        // Aliases are at most 256 bytes on every cloud; the event decoder bounds them well below u16.
        b.extend_from_slice(&(alias.len() as u16).to_le_bytes());
        b.extend_from_slice(alias.as_bytes());
        for ((t, k), o) in targets.iter().zip(&other) {
            b.extend_from_slice(&t.to_le_bytes());
            match (k, o) {
                (KeyId::Uuid(v), _) => {
                    b.push(TAG_UUID);
                    b.extend_from_slice(v);
                }
                (KeyId::Mrk(v), _) => {
                    b.push(TAG_MRK);
                    b.extend_from_slice(v);
                }
                (_, o) => {
                    let s = o.as_deref().unwrap_or_default();
                    b.push(TAG_STR);
                    b.extend_from_slice(&(s.len() as u16).to_le_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
            }
        }
        debug_assert_eq!(b.len(), len);
        Packed(b.into_boxed_slice())
    }

    fn alias(&self) -> &str {
        let n = u16::from_le_bytes([self.0[0], self.0[1]]) as usize;
        // Written from a &str by `new`.
        std::str::from_utf8(&self.0[2..2 + n]).unwrap_or_default()
    }

    /// The targets with their keys, in target order.
    fn targets(&self) -> Targets<'_> {
        let n = u16::from_le_bytes([self.0[0], self.0[1]]) as usize;
        Targets(&self.0[2 + n..])
    }

    fn key(&self, target: TargetId) -> Option<KeyId> {
        let mut ts = self.targets();
        // Skips the other targets' keys undecoded.
        while let Some((t, len)) = ts.head() {
            if t == target {
                return ts.next().map(|(_, k)| k);
            }
            ts.0 = &ts.0[2 + len..];
        }
        None
    }
}

/// Decodes a packed entry's targets.
#[derive(Clone)]
struct Targets<'a>(&'a [u8]);

impl Targets<'_> {
    /// The next target id and where its key is, with the key's encoded length.
    fn head(&self) -> Option<(TargetId, usize)> {
        let b = self.0;
        if b.len() < 3 {
            return None;
        }
        let len = match b[2] {
            TAG_UUID | TAG_MRK => 1 + 16,
            _ => 3 + u16::from_le_bytes([b[3], b[4]]) as usize,
        };
        Some((TargetId::from_le_bytes([b[0], b[1]]), len))
    }
}

impl Iterator for Targets<'_> {
    type Item = (TargetId, KeyId);
    fn next(&mut self) -> Option<(TargetId, KeyId)> {
        let (t, len) = self.head()?;
        let k = &self.0[2..2 + len];
        let key = match k[0] {
            TAG_UUID => KeyId::Uuid(k[1..17].try_into().ok()?),
            TAG_MRK => KeyId::Mrk(k[1..17].try_into().ok()?),
            _ => KeyId::new(std::str::from_utf8(&k[3..]).ok()?),
        };
        self.0 = &self.0[2 + len..];
        Some((t, key))
    }
}

impl std::hash::Hash for Packed {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.alias().hash(h)
    }
}

impl PartialEq for Packed {
    fn eq(&self, o: &Packed) -> bool {
        self.alias() == o.alias()
    }
}

impl Eq for Packed {}

/// Looks a packed entry up by its alias (hashes as `Packed` does).
#[derive(Hash)]
struct ByAlias<'a>(&'a str);

impl indexmap::Equivalent<Packed> for ByAlias<'_> {
    fn equivalent(&self, p: &Packed) -> bool {
        self.0 == p.alias()
    }
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    revision: u64,
    /// The last applied record's origin.
    timestamp_ms: i64,
    partition: i32,
    /// Whether that record was a tombstone (it then shadows older records of other partitions).
    tombstone: bool,
}

/// A target whose desired key an event changed, with the key it had before (None: it was absent there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub target: TargetId,
    pub old: Option<KeyId>,
}

pub struct Store {
    entries: Map<Packed, Meta>,
    per_target: Vec<Members>,
}

/// Which entries a target has a desired key in: one bit per entry, so a target's walk skips the others' entries
/// 64 at a time (1,000,000 aliases: 122 KiB per target).
#[derive(Debug, Default, Clone)]
struct Members {
    bits: Vec<u64>,
    count: usize,
}

impl Members {
    fn set(&mut self, i: usize, on: bool) {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits.len() <= w {
            if !on {
                return;
            }
            self.bits.resize(w + 1, 0);
        }
        let was = self.bits[w] & b != 0;
        if was != on {
            self.bits[w] ^= b;
            if on {
                self.count += 1;
            } else {
                self.count -= 1;
            }
        }
    }

    /// Members in `from..end`, in order.
    fn range(&self, from: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
        let words = (from / 64)..end.div_ceil(64).min(self.bits.len());
        words
            .flat_map(move |w| {
                let mut word = self.bits[w];
                std::iter::from_fn(move || {
                    if word == 0 {
                        return None;
                    }
                    let b = word.trailing_zeros() as usize;
                    word &= word - 1;
                    Some(w * 64 + b)
                })
            })
            .filter(move |&i| i >= from && i < end)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<usize> = self.per_target.iter().map(|m| m.count).collect();
        f.debug_struct("Store").field("aliases", &self.entries.len()).field("per_target", &counts).finish()
    }
}

impl Store {
    pub fn new(targets: usize) -> Self {
        Store { entries: Map::default(), per_target: vec![Members::default(); targets] }
    }

    /// Applies an event read at `origin`; returns the outcome and the targets whose desired key changed, with
    /// the key each had before.
    pub fn apply(&mut self, ev: Event, origin: Origin) -> (Outcome, Vec<Change>) {
        use indexmap::map::MutableKeys;
        let new_targets: Vec<(TargetId, KeyId)> = match ev.body {
            Body::Present(t) => t,
            Body::Absent => Vec::new(),
        };
        let tombstone = ev.revision.is_none();
        match self.entries.get_full_mut2(&ByAlias(&ev.alias)) {
            Some((index, packed, e)) => {
                let other_partition = e.partition != origin.partition;
                let revision = match ev.revision {
                    // Produced before a tombstone of another partition: that tombstone deleted it.
                    Some(_) if e.tombstone && other_partition && origin.timestamp_ms <= e.timestamp_ms => {
                        return (Outcome::Stale, Vec::new())
                    }
                    Some(r) if r < e.revision => return (Outcome::Stale, Vec::new()),
                    Some(r) => r,
                    // A tombstone never deletes a record of another partition produced after it.
                    None if !e.tombstone && other_partition && e.timestamp_ms > origin.timestamp_ms => {
                        return (Outcome::Stale, Vec::new())
                    }
                    // Two tombstones: the later one (by timestamp) shadows more, so it stays.
                    None if e.tombstone && e.timestamp_ms > origin.timestamp_ms => {
                        return (Outcome::Applied, Vec::new())
                    }
                    None => e.revision,
                };
                let old: Vec<(TargetId, KeyId)> = packed.targets().collect();
                let changed = diff(&old, &new_targets);
                if !changed.is_empty() {
                    for (t, _) in &old {
                        self.per_target[*t as usize].set(index, false);
                    }
                    for (t, _) in &new_targets {
                        self.per_target[*t as usize].set(index, true);
                    }
                    *packed = Packed::new(&ev.alias, &new_targets);
                }
                *e = Meta { revision, timestamp_ms: origin.timestamp_ms, partition: origin.partition, tombstone };
                (Outcome::Applied, changed)
            }
            None => {
                let changed: Vec<Change> = new_targets.iter().map(|(t, _)| Change { target: *t, old: None }).collect();
                let index = self.entries.len();
                for c in &changed {
                    self.per_target[c.target as usize].set(index, true);
                }
                let revision = ev.revision.unwrap_or(0);
                // A tombstone of an unknown alias is kept too: an older record read later stays deleted.
                let e = Meta { revision, timestamp_ms: origin.timestamp_ms, partition: origin.partition, tombstone };
                self.entries.insert(Packed::new(&ev.alias, &new_targets), e);
                (Outcome::Applied, changed)
            }
        }
    }

    /// The key `alias` must point at in `target`; None = must be absent.
    pub fn desired(&self, alias: &str, target: TargetId) -> Option<Arc<str>> {
        self.desired_key(alias, target).map(|k| Arc::from(k.to_string()))
    }

    /// As [`Store::desired`], unformatted.
    pub fn desired_key(&self, alias: &str, target: TargetId) -> Option<KeyId> {
        self.entries.get_key_value(&ByAlias(alias))?.0.key(target)
    }

    /// The alias's entry number (stable: entries are never removed) and its desired key in `target`.
    pub fn lookup(&self, alias: &str, target: TargetId) -> Option<(usize, Option<KeyId>)> {
        let (i, p, _) = self.entries.get_full(&ByAlias(alias))?;
        Some((i, p.key(target)))
    }

    /// The record timestamp (ms) of the alias's last applied record.
    pub fn produced_ms(&self, alias: &str) -> Option<i64> {
        self.entries.get(&ByAlias(alias)).map(|e| e.timestamp_ms)
    }

    pub fn revision(&self, alias: &str) -> Option<u64> {
        self.entries.get(&ByAlias(alias)).map(|e| e.revision)
    }

    /// Whether the desired state mentions the alias at all (present anywhere, or explicitly absent).
    pub fn knows(&self, alias: &str) -> bool {
        self.entries.contains_key(&ByAlias(alias))
    }

    /// Aliases with a desired key in `target` (walks hold the lock per chunk: [`walk_target`]).
    #[cfg(test)]
    fn aliases_in(&self, target: TargetId) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().filter(move |p| p.key(target).is_some()).map(Packed::alias)
    }

    /// From entry `from` on, at most `max` of the aliases desired in `target` (found through its member bits)
    /// with their entry number and key, and where the next chunk starts (None at the end).
    fn chunk_in(&self, target: TargetId, from: usize, max: usize) -> (Vec<Desired>, Option<usize>) {
        let Some(members) = self.per_target.get(target as usize) else { return (Vec::new(), None) };
        let out: Vec<Desired> = members
            .range(from, self.entries.len())
            .take(max)
            .filter_map(|i| {
                let (p, _) = self.entries.get_index(i)?;
                Some((i, Arc::from(p.alias()), p.key(target)?))
            })
            .collect();
        let next = out.last().map(|d| d.0 + 1).filter(|_| out.len() == max);
        (out, next)
    }

    /// Every alias with its revision and desired keys by target (empty: absent everywhere).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, Vec<(TargetId, KeyId)>)> + '_ {
        self.entries.iter().map(|(p, e)| (p.alias(), e.revision, p.targets().collect()))
    }

    pub fn count(&self, target: TargetId) -> usize {
        self.per_target.get(target as usize).map_or(0, |m| m.count)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An alias desired in a target: its entry number, name and key.
type Desired = (usize, Arc<str>, KeyId);

/// Walks the aliases desired in `target` (with their key) holding the lock one chunk at a time, so the
/// reader applies events meanwhile: a walk over a million aliases never stalls it. Entries added during
/// the walk may be missed or seen (their own change queues them anyway).
/// `f` gets each alias's entry number (see [`Store::lookup`]) too.
pub fn walk_target(store: &RwLock<Store>, target: TargetId, mut f: impl FnMut(usize, Arc<str>, KeyId)) {
    let mut from = Some(0);
    while let Some(i) = from {
        let (chunk, next) = store.read().unwrap_or_else(|e| e.into_inner()).chunk_in(target, i, WALK_CHUNK);
        for (n, a, k) in chunk {
            f(n, a, k);
        }
        from = next;
    }
}

/// Targets whose key differs between two sorted lists (added, removed or re-pointed), with the old key.
fn diff(old: &[(TargetId, KeyId)], new: &[(TargetId, KeyId)]) -> Vec<Change> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    out.push(Change { target: a.0, old: Some(a.1.clone()) });
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push(Change { target: a.0, old: Some(a.1.clone()) });
                i += 1;
            }
            (Some(a), None) => {
                out.push(Change { target: a.0, old: Some(a.1.clone()) });
                i += 1;
            }
            (_, Some(b)) => {
                out.push(Change { target: b.0, old: None });
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
            ids(self.apply(ev, Origin::default()))
        }
    }

    fn ids((o, c): (Outcome, Vec<Change>)) -> (Outcome, Vec<TargetId>) {
        (o, c.into_iter().map(|c| c.target).collect())
    }

    #[test]
    fn packed_entries_keep_every_key_shape_and_report_old_keys() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab-long-enough-for-heap";
        let keys = [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "key-hzz62f1cb66fa42qo3sb3",
            arn,
        ];
        let mut s = Store::new(300);
        let targets: Vec<(TargetId, &str)> = keys.iter().enumerate().map(|(i, k)| (i as TargetId * 97, *k)).collect();
        assert_eq!(s.apply0(ev("alias/app/x", Some(1), &targets)).1, vec![0, 97, 194, 291]);
        for (t, k) in &targets {
            assert_eq!(s.desired("alias/app/x", *t).as_deref(), Some(*k));
        }
        assert_eq!(s.desired("alias/app/x", 1), None);
        let (_, changes) = s.apply(ev("alias/app/x", Some(2), &[(97, "k2")]), Origin::default());
        let old: Vec<(TargetId, Option<String>)> =
            changes.into_iter().map(|c| (c.target, c.old.map(|k| k.to_string()))).collect();
        let expect: Vec<(TargetId, Option<String>)> = targets.iter().map(|(t, k)| (*t, Some(k.to_string()))).collect();
        assert_eq!(old, expect);
        assert_eq!(
            s.lookup("alias/app/x", 97).map(|(i, k)| (i, k.map(|k| k.to_string()))),
            Some((0, Some("k2".into())))
        );
        assert_eq!(
            s.iter().map(|(a, r, t)| (a.to_string(), r, t.len())).collect::<Vec<_>>(),
            vec![("alias/app/x".into(), 2, 1)]
        );
    }

    #[test]
    fn a_targets_walk_goes_through_its_members_only() {
        let store = RwLock::new(Store::new(2));
        // Target 1 holds every 1,000th alias of 10,000; target 0 all of them.
        for i in 0..10_000 {
            let t: &[(TargetId, &str)] = if i % 1000 == 7 { &[(0, "k"), (1, "k")] } else { &[(0, "k")] };
            store.write().unwrap().apply0(ev(&format!("a{i}"), Some(1), t));
        }
        // Alias 7 leaves target 1; alias 9 joins it.
        store.write().unwrap().apply0(ev("a7", Some(2), &[(0, "k")]));
        store.write().unwrap().apply0(ev("a9", Some(2), &[(0, "k"), (1, "k")]));
        let mut got = Vec::new();
        walk_target(&store, 1, |i, a, _| got.push((i, a.to_string())));
        let mut want: Vec<(usize, String)> = (1..10).map(|j| (j * 1000 + 7, format!("a{}", j * 1000 + 7))).collect();
        want.insert(0, (9, "a9".into()));
        assert_eq!(got, want);
        assert_eq!(store.read().unwrap().count(1), 10);
        let mut n = 0;
        walk_target(&store, 0, |_, _, _| n += 1);
        assert_eq!(n, 10_000);
        // Chunks end exactly where the members do.
        let s = store.read().unwrap();
        let (chunk, next) = s.chunk_in(1, 0, 3);
        assert_eq!((chunk.len(), next), (3, Some(2008)));
        assert_eq!(s.chunk_in(1, 9007, 3).1, None);
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
        assert_eq!(ids(s.apply(absent("a", None), at(10))), (Outcome::Applied, vec![0]));
        assert_eq!(ids(s.apply(ev("a", Some(2), &[(0, "k2")]), at(5))), (Outcome::Applied, vec![0]));
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
        walk_target(&store, 0, |_, a, k| {
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
