//! Drift: a target's full listing compared with the desired state. Pure; the target's task runs the
//! scans (jittered, through the target's read quota) and feeds repairs to its work queue.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::desired::{walk_target, Store, WALK_CHUNK};
use crate::event::TargetId;
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

/// Compares a listing with the desired state of `target`. `may_touch` is the ownership guard;
/// `skip` holds aliases changing right now (queued, in flight, or written since the listing began),
/// whose listed value may be stale; `matches` is the provider's key-id equality. The store is locked one
/// chunk at a time (the reader applies events in between), the callbacks run outside its lock.
pub fn compare(
    store: &RwLock<Store>,
    target: TargetId,
    listing: &[LiveAlias],
    may_touch: impl Fn(&str) -> bool,
    skip: impl Fn(&str) -> bool,
    matches: impl Fn(&str, &str) -> bool,
) -> Report {
    let mut drifted = Vec::new();
    let mut seen = HashSet::with_capacity(listing.len());
    for chunk in listing.chunks(WALK_CHUNK) {
        let desired: Vec<(Option<Arc<str>>, bool)> = {
            let s = store.read().unwrap_or_else(|e| e.into_inner());
            chunk.iter().map(|a| (s.desired(&a.name, target), s.knows(&a.name))).collect()
        };
        for (a, (desired, knows)) in chunk.iter().zip(desired) {
            if !may_touch(&a.name) {
                continue;
            }
            seen.insert(a.name.as_str());
            if skip(&a.name) {
                continue;
            }
            let live = a.key_id.as_deref();
            match (desired, live) {
                (Some(d), Some(l)) if matches(&d, l) => {}
                (Some(d), _) => drifted.push(Drifted {
                    alias: a.name.clone(),
                    kind: Kind::WrongKey,
                    desired: Some(d.to_string()),
                    live: live.map(str::to_string),
                    unknown: false,
                }),
                (None, _) => drifted.push(Drifted {
                    alias: a.name.clone(),
                    kind: Kind::Orphan,
                    desired: None,
                    live: live.map(str::to_string),
                    unknown: !knows,
                }),
            }
        }
    }
    walk_target(store, target, |alias, key| {
        if !seen.contains(&*alias) && may_touch(&alias) && !skip(&alias) {
            drifted.push(Drifted {
                alias: alias.to_string(),
                kind: Kind::Missing,
                desired: Some(key.to_string()),
                live: None,
                unknown: false,
            });
        }
    });
    drifted.sort_by(|a, b| a.alias.cmp(&b.alias));
    Report { drifted }
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
