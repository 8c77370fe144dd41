//! The desired-state store: alias → revision + per-target key, rebuilt from the compacted topic.
//! Pure data: `apply` returns which targets an event changed; it knows nothing of queues or clouds.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Body, Event, TargetId};
use crate::keyid::KeyId;

// aHash: randomly keyed like std's SipHash (no hash flooding from producers), several times faster.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Revision below the one already held: ignored.
    Stale,
}

#[derive(Debug)]
struct Entry {
    revision: u64,
    /// Sorted by target; empty = absent everywhere (kept so a later stale event stays stale).
    targets: Box<[(TargetId, KeyId)]>,
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

    /// Applies an event; returns the outcome and the targets whose desired key changed.
    pub fn apply(&mut self, ev: Event) -> (Outcome, Vec<TargetId>) {
        let new_targets: Box<[(TargetId, KeyId)]> = match ev.body {
            Body::Present(t) => t.into_boxed_slice(),
            Body::Absent => Box::new([]),
        };
        match self.entries.get_mut(ev.alias.as_str()) {
            Some(e) => {
                // A tombstone has no revision: Kafka's per-key order makes it the latest word.
                let revision = match ev.revision {
                    Some(r) if r < e.revision => return (Outcome::Stale, Vec::new()),
                    Some(r) => r,
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
                (Outcome::Applied, changed)
            }
            None => {
                let changed: Vec<TargetId> = new_targets.iter().map(|(t, _)| *t).collect();
                for t in &changed {
                    self.per_target[*t as usize] += 1;
                }
                let revision = ev.revision.unwrap_or(0);
                self.entries.insert(ev.alias.into_boxed_str(), Entry { revision, targets: new_targets });
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

    /// Aliases with a desired key in `target`.
    pub fn aliases_in(&self, target: TargetId) -> impl Iterator<Item = &str> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| e.targets.binary_search_by_key(&target, |(t, _)| *t).is_ok())
            .map(|(a, _)| a.as_ref())
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

    #[test]
    fn revisions_and_changes() {
        let mut s = Store::new(3);
        assert_eq!(s.apply(ev("a", Some(1), &[(0, "k1"), (1, "k1")])), (Outcome::Applied, vec![0, 1]));
        assert_eq!(s.count(0), 1);
        // Same content again (a replay): applied, nothing changed.
        assert_eq!(s.apply(ev("a", Some(1), &[(0, "k1"), (1, "k1")])), (Outcome::Applied, vec![]));
        assert_eq!(s.apply(ev("a", Some(0), &[(0, "k9")])), (Outcome::Stale, vec![]));
        assert_eq!(s.desired("a", 0).as_deref(), Some("k1"));
        // Re-point target 1, drop target 0, add target 2.
        assert_eq!(s.apply(ev("a", Some(5), &[(1, "k2"), (2, "k3")])), (Outcome::Applied, vec![0, 1, 2]));
        assert_eq!(s.desired("a", 0), None);
        assert_eq!(s.desired("a", 1).as_deref(), Some("k2"));
        assert_eq!((s.count(0), s.count(1), s.count(2)), (0, 1, 1));
        // Absent at revision 6: every target changes; a later stale event stays ignored.
        assert_eq!(s.apply(absent("a", Some(6))), (Outcome::Applied, vec![1, 2]));
        assert!(s.knows("a"));
        assert_eq!(s.apply(ev("a", Some(4), &[(0, "k1")])), (Outcome::Stale, vec![]));
        assert_eq!(s.apply(ev("a", Some(7), &[(0, "k1")])), (Outcome::Applied, vec![0]));
        // Tombstone: no revision, always applies.
        assert_eq!(s.apply(absent("a", None)), (Outcome::Applied, vec![0]));
        assert_eq!(s.revision("a"), Some(7));
        assert_eq!(s.aliases_in(0).count(), 0);
    }
}
