//! A target's view of its live aliases, kept to the exceptions. Once a listing is installed, an alias with no
//! entry points at its desired key: the listing showed it in sync, or our write made it so. Entries are what
//! differs: the drift the listing found, what our writes and reads left where it is not the desired key, and
//! the old key of an alias whose desired key changed (recorded under the store's write lock, as the reader
//! applies the change). So a million aliases in sync cost nothing here. Before the first listing is
//! installed an alias with no entry is unknown (written first, `decide_unknown`).
//!
//! Lock order: the store, then this view; never the store while holding this.

use std::collections::{HashMap, HashSet};

use crate::drift::Report;
use crate::keyid::KeyId;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Live {
    Key(String),
    Absent,
    /// Changed while the first listing ran: the listed value may predate a write (a previous owner's during
    /// a hand-over), and there is no earlier view.
    Unknown,
}

/// What a reconcile knows of an alias's live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Known {
    Unknown,
    /// The key it points at; None: absent.
    Key(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// The target is not worked on here: nothing is recorded.
    #[default]
    Off,
    /// Worked on, the first listing not installed yet.
    Listing,
    Listed,
}

#[derive(Debug, Default)]
pub(super) struct LiveView {
    phase: Phase,
    exceptions: HashMap<Box<str>, Live>,
    /// While a listing runs: aliases changed since it began (we wrote them, or their desired key changed);
    /// their listed value may be stale, so what this view holds for them wins over it.
    changed: Option<HashSet<Box<str>>>,
}

impl LiveView {
    /// Work on the target begins (the lease is held): nothing is known until the first listing.
    pub fn start(&mut self) {
        *self = LiveView { phase: Phase::Listing, exceptions: HashMap::new(), changed: Some(HashSet::new()) };
    }

    /// Work ends (the lease is gone): forget everything.
    pub fn stop(&mut self) {
        *self = LiveView::default();
    }

    /// A periodic scan's listing begins.
    pub fn begin_scan(&mut self) {
        if self.phase == Phase::Listed {
            self.changed = Some(HashSet::new());
        }
    }

    /// A periodic scan failed (the first listing keeps collecting across its retries).
    pub fn abandon_scan(&mut self) {
        if self.phase == Phase::Listed {
            self.changed = None;
        }
    }

    /// Whether `alias` changed since the running listing began.
    pub fn changed_during_scan(&self, alias: &str) -> bool {
        self.changed.as_ref().is_some_and(|c| c.contains(alias))
    }

    fn note_change(&mut self, alias: &str) {
        if let Some(c) = self.changed.as_mut() {
            c.insert(alias.into());
        }
    }

    /// The desired key of `alias` changed; `old` was the key before (None: absent). Called under the store's
    /// write lock, so no reconcile sees the new desired key with a view that still says "in sync".
    pub fn desired_changed(&mut self, alias: &str, old: Option<&KeyId>) {
        match self.phase {
            Phase::Off => return,
            Phase::Listing => {}
            Phase::Listed => {
                if !self.exceptions.contains_key(alias) {
                    let live = old.map_or(Live::Absent, |k| Live::Key(k.to_string()));
                    self.exceptions.insert(alias.into(), live);
                }
            }
        }
        self.note_change(alias);
    }

    /// A call of ours left `live` in the cloud (None: absent); `desired` is the store's desired key now (read
    /// under the store lock held across this call).
    pub fn observed(
        &mut self,
        alias: &str,
        live: Option<&str>,
        desired: Option<&str>,
        same: impl Fn(&str, &str) -> bool,
    ) {
        if self.phase == Phase::Off {
            return;
        }
        self.note_change(alias);
        let in_sync = match (desired, live) {
            (Some(d), Some(l)) => same(d, l),
            (None, None) => true,
            _ => false,
        };
        if self.phase == Phase::Listed && in_sync {
            self.exceptions.remove(alias);
        } else {
            self.exceptions.insert(alias.into(), live.map_or(Live::Absent, |k| Live::Key(k.to_string())));
        }
    }

    /// What is known of `alias`, whose desired key is `desired` (read under the store lock held across this).
    pub fn get(&self, alias: &str, desired: Option<&str>) -> Known {
        match self.exceptions.get(alias) {
            Some(Live::Key(k)) => Known::Key(Some(k.clone())),
            Some(Live::Absent) => Known::Key(None),
            Some(Live::Unknown) => Known::Unknown,
            None if self.phase == Phase::Listed => Known::Key(desired.map(str::to_string)),
            None => Known::Unknown,
        }
    }

    /// Installs a completed listing's findings: its drift, except for aliases changed since it began (what
    /// this view holds for them stays) and for `busy` ones (queued or in flight before it began, which the
    /// comparison skipped). `queued` lists the queued aliases; asked only for the first listing, whose busy
    /// aliases with nothing recorded are unknown (queued before this view started).
    pub fn install<Q>(&mut self, report: &Report, busy: impl Fn(&str) -> bool, queued: impl FnOnce() -> Q)
    where
        Q: IntoIterator<Item = std::sync::Arc<str>>,
    {
        if self.phase == Phase::Off {
            return;
        }
        let changed = self.changed.take().unwrap_or_default();
        let old = std::mem::take(&mut self.exceptions);
        let mut fresh: HashMap<Box<str>, Live> = report
            .drifted
            .iter()
            .filter(|d| !changed.contains(d.alias.as_str()))
            .map(|d| (Box::from(d.alias.as_str()), d.live.clone().map_or(Live::Absent, Live::Key)))
            .collect();
        for a in &changed {
            match old.get(a) {
                Some(v) => fresh.insert(a.clone(), v.clone()),
                // Changed during the first listing with nothing recorded: unknown, not in sync.
                None if self.phase == Phase::Listing => fresh.insert(a.clone(), Live::Unknown),
                None => None,
            };
        }
        if self.phase == Phase::Listing {
            for a in queued() {
                if !changed.contains(&*a) && !old.contains_key(&*a) {
                    fresh.insert(Box::from(&*a), Live::Unknown);
                }
            }
        }
        for (a, v) in old {
            if !changed.contains(&a) && busy(&a) {
                fresh.insert(a, v);
            }
        }
        self.exceptions = fresh;
        self.phase = Phase::Listed;
    }

    #[cfg(test)]
    fn exceptions(&self) -> usize {
        self.exceptions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{Drifted, Kind};

    fn eq(a: &str, b: &str) -> bool {
        a == b
    }

    fn report(drifted: &[(&str, Option<&str>)]) -> Report {
        Report {
            drifted: drifted
                .iter()
                .map(|(a, live)| Drifted {
                    alias: a.to_string(),
                    kind: Kind::WrongKey,
                    desired: Some("k".into()),
                    live: live.map(str::to_string),
                    unknown: false,
                })
                .collect(),
        }
    }

    #[test]
    fn before_the_first_listing_everything_is_unknown_and_changes_during_it_stay_unknown() {
        let mut v = LiveView::default();
        v.desired_changed("a", None);
        assert_eq!(v.exceptions(), 0, "off: nothing recorded");
        v.start();
        assert_eq!(v.get("a", Some("k1")), Known::Unknown);
        v.desired_changed("a", Some(&KeyId::new("k0")));
        v.observed("b", Some("k1"), Some("k1"), eq);
        // "q" was queued before the view started (the event came first): unknown too.
        let queued = || vec![std::sync::Arc::<str>::from("q")];
        v.install(&report(&[("a", Some("k0")), ("c", Some("k9"))]), |a| a == "q", queued);
        assert_eq!(v.get("q", Some("k1")), Known::Unknown);
        // Changed during the listing: its listed value may be stale.
        assert_eq!(v.get("a", Some("k1")), Known::Unknown);
        // Written during the listing: what the write left.
        assert_eq!(v.get("b", Some("k1")), Known::Key(Some("k1".into())));
        assert_eq!(v.get("c", Some("k1")), Known::Key(Some("k9".into())));
        // Listed in sync.
        assert_eq!(v.get("d", Some("k1")), Known::Key(Some("k1".into())));
        assert_eq!(v.get("e", None), Known::Key(None));
    }

    #[test]
    fn after_the_listing_only_exceptions_are_held() {
        let mut v = LiveView::default();
        v.start();
        v.install(&report(&[]), |_| false, Vec::new);
        // The desired key changes: the live one is still the old one until our write lands.
        v.desired_changed("a", Some(&KeyId::new("k1")));
        assert_eq!(v.get("a", Some("k2")), Known::Key(Some("k1".into())));
        // A second change before the write: the live key is still k1.
        v.desired_changed("a", Some(&KeyId::new("k2")));
        assert_eq!(v.get("a", Some("k3")), Known::Key(Some("k1".into())));
        v.observed("a", Some("k3"), Some("k3"), eq);
        assert_eq!(v.exceptions(), 0, "in sync again: nothing held");
        // A new alias: absent until written.
        v.desired_changed("n", None);
        assert_eq!(v.get("n", Some("k")), Known::Key(None));
        // Our write landed but the desired key moved on meanwhile: the written key is held.
        v.observed("n", Some("k"), Some("k2"), eq);
        assert_eq!(v.get("n", Some("k2")), Known::Key(Some("k".into())));
    }

    #[test]
    fn a_periodic_scan_keeps_what_changed_and_what_is_busy() {
        let mut v = LiveView::default();
        v.start();
        v.install(&report(&[("x", Some("old"))]), |_| false, Vec::new);
        v.desired_changed("q", Some(&KeyId::new("k0")));
        v.begin_scan();
        v.desired_changed("a", Some(&KeyId::new("k0")));
        // The scan lists "a" before the change and "x" as repaired meanwhile by someone else.
        v.install(&report(&[("a", Some("stale"))]), |a| a == "q", Vec::new);
        assert_eq!(v.get("a", Some("k1")), Known::Key(Some("k0".into())));
        assert_eq!(v.get("x", Some("k")), Known::Key(Some("k".into())));
        assert_eq!(v.get("q", Some("k1")), Known::Key(Some("k0".into())), "queued before the scan: kept");
        v.stop();
        assert_eq!(v.get("a", None), Known::Unknown);
    }
}
