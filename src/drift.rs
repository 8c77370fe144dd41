//! Drift: a target's full listing compared with the desired state. Pure; the target's task runs the
//! scans (jittered, through the target's read quota) and feeds repairs to its work queue.

use std::sync::RwLock;

use serde::Serialize;

use crate::desired::{walk_target, Store, WALK_CHUNK};
use crate::event::TargetId;
use crate::keyid::KeyId;
use crate::provider::LiveAlias;

/// Drift kinds, as the `kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Desired here, absent in the cloud.
    Missing,
    /// Present, pointing at another key than desired.
    WrongKey,
    /// Present under a managed prefix with no desired key here: either the desired state never
    /// mentions it (pruned only with `prune = true`), or it says absent here (always repaired).
    Orphan,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Missing, Kind::WrongKey, Kind::Orphan];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::WrongKey => "wrong_key",
            Kind::Orphan => "orphan",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drifted {
    pub alias: String,
    pub kind: Kind,
    pub desired: Option<String>,
    pub live: Option<String>,
    /// Orphan the desired state does not know at all (vs. one it says must be absent here).
    pub unknown: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub drifted: Vec<Drifted>,
}

impl Report {
    pub fn count(&self, kind: Kind) -> usize {
        self.drifted.iter().filter(|d| d.kind == kind).count()
    }
}

/// Compares a listing with the desired state of `target` as it streams in, page by page: the listing is never
/// held whole, and which desired aliases it showed is one bit per store entry. `may_touch` is the ownership
/// guard; `skip` holds aliases changing right now (queued, in flight, or written since the listing began),
/// whose listed value may be stale; `matches` is the provider's key-id equality. The store is locked one
/// chunk at a time (the reader applies events in between), the callbacks run outside its lock.
pub struct Comparer<'a, M, S, K> {
    store: &'a RwLock<Store>,
    target: TargetId,
    may_touch: M,
    skip: S,
    matches: K,
    buf: Vec<LiveAlias>,
    /// Store entries the listing showed (by entry number).
    seen: Vec<u64>,
    drifted: Vec<Drifted>,
    listed: usize,
}

impl<'a, M, S, K> Comparer<'a, M, S, K>
where
    M: Fn(&str) -> bool,
    S: Fn(&str) -> bool,
    K: Fn(&str, &str) -> bool,
{
    pub fn new(store: &'a RwLock<Store>, target: TargetId, may_touch: M, skip: S, matches: K) -> Self {
        Comparer {
            store,
            target,
            may_touch,
            skip,
            matches,
            buf: Vec::new(),
            seen: Vec::new(),
            drifted: Vec::new(),
            listed: 0,
        }
    }

    /// One listed alias.
    pub fn push(&mut self, a: LiveAlias) {
        self.listed += 1;
        self.buf.push(a);
        if self.buf.len() >= WALK_CHUNK {
            self.flush();
        }
    }

    /// Aliases listed so far.
    pub fn listed(&self) -> usize {
        self.listed
    }

    fn flush(&mut self) {
        let chunk = std::mem::take(&mut self.buf);
        let desired: Vec<Option<(usize, Option<KeyId>)>> = {
            let s = self.store.read().unwrap_or_else(|e| e.into_inner());
            chunk.iter().map(|a| s.lookup(&a.name, self.target)).collect()
        };
        for (a, found) in chunk.into_iter().zip(desired) {
            if !(self.may_touch)(&a.name) {
                continue;
            }
            let (index, desired) = match found {
                Some((i, d)) => (Some(i), d),
                None => (None, None),
            };
            if let Some(i) = index {
                if self.seen.len() <= i / 64 {
                    self.seen.resize(i / 64 + 1, 0);
                }
                self.seen[i / 64] |= 1 << (i % 64);
            }
            if (self.skip)(&a.name) {
                continue;
            }
            let live = a.key_id;
            match (desired, live) {
                (Some(d), Some(l)) if (self.matches)(&d.to_string(), &l) => {}
                (Some(d), live) => self.drifted.push(Drifted {
                    alias: a.name,
                    kind: Kind::WrongKey,
                    desired: Some(d.to_string()),
                    live,
                    unknown: false,
                }),
                (None, live) => self.drifted.push(Drifted {
                    alias: a.name,
                    kind: Kind::Orphan,
                    desired: None,
                    live,
                    unknown: index.is_none(),
                }),
            }
        }
    }

    /// The listing is complete: what it did not show is missing.
    pub fn finish(mut self) -> Report {
        self.flush();
        let (seen, may_touch, skip) = (&self.seen, &self.may_touch, &self.skip);
        let drifted = &mut self.drifted;
        walk_target(self.store, self.target, |i, alias, key| {
            let shown = seen.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
            if !shown && may_touch(&alias) && !skip(&alias) {
                drifted.push(Drifted {
                    alias: alias.to_string(),
                    kind: Kind::Missing,
                    desired: Some(key.to_string()),
                    live: None,
                    unknown: false,
                });
            }
        });
        self.drifted.sort_by(|a, b| a.alias.cmp(&b.alias));
        Report { drifted: self.drifted }
    }
}

/// A whole listing compared at once (see [`Comparer`]).
pub fn compare(
    store: &RwLock<Store>,
    target: TargetId,
    listing: &[LiveAlias],
    may_touch: impl Fn(&str) -> bool,
    skip: impl Fn(&str) -> bool,
    matches: impl Fn(&str, &str) -> bool,
) -> Report {
    let mut c = Comparer::new(store, target, may_touch, skip, matches);
    for a in listing {
        c.push(a.clone());
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Event};

    fn live(name: &str, key: &str) -> LiveAlias {
        LiveAlias { name: name.into(), key_id: Some(key.into()) }
    }

    #[test]
    fn kinds() {
        let mut s = Store::new(2);
        let ev = |a: &str, t: Vec<(u16, &str)>| Event {
            alias: a.into(),
            revision: Some(1),
            body: Body::Present(t.into_iter().map(|(i, k)| (i, crate::keyid::KeyId::new(k))).collect()),
        };
        s.apply(ev("alias/app/ok", vec![(0, "k1")]), Default::default());
        s.apply(ev("alias/app/missing", vec![(0, "k1")]), Default::default());
        s.apply(ev("alias/app/wrong", vec![(0, "k1")]), Default::default());
        s.apply(ev("alias/app/elsewhere", vec![(1, "k1")]), Default::default());
        s.apply(ev("alias/app/busy", vec![(0, "k1")]), Default::default());
        let listing = vec![
            live("alias/app/ok", "k1"),
            live("alias/app/wrong", "k2"),
            live("alias/app/elsewhere", "k1"),
            live("alias/app/stray", "k3"),
            live("alias/other/x", "k3"),
        ];
        let s = RwLock::new(s);
        let r = compare(&s, 0, &listing, |a| a.starts_with("alias/app/"), |a| a == "alias/app/busy", |a, b| a == b);
        let got: Vec<(&str, Kind, bool)> = r.drifted.iter().map(|d| (d.alias.as_str(), d.kind, d.unknown)).collect();
        assert_eq!(
            got,
            vec![
                ("alias/app/elsewhere", Kind::Orphan, false),
                ("alias/app/missing", Kind::Missing, false),
                ("alias/app/stray", Kind::Orphan, true),
                ("alias/app/wrong", Kind::WrongKey, false),
            ]
        );
        assert_eq!((r.count(Kind::Missing), r.count(Kind::WrongKey), r.count(Kind::Orphan)), (1, 1, 2));
    }
}
