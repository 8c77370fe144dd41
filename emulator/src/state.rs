//! Keys and aliases, per cloud, per account (Huawei: project) and per region, as each cloud scopes
//! them: an alias name is unique within one scope and the same name may exist in every other one.
//! Cloud-neutral: the rules of each API live in its wire module, which works on a `&mut Scope`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::wire::Cloud;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScopeKey {
    pub cloud: Cloud,
    pub account: String,
    pub region: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Key {
    pub id: String,
    pub state: KeyState,
    pub created: DateTime<Utc>,
    pub deletion_date: Option<DateTime<Utc>>,
    pub pending_days: Option<u32>,
    pub description: String,
    pub multi_region: bool,
    /// Huawei's legacy per-key name (`key_alias` of create-key); not an alias.
    pub legacy_alias: Option<String>,
    /// Huawei domain id of the creator (reported as `domain_id`); the account elsewhere.
    pub owner: String,
}

impl Key {
    pub fn new(id: String, owner: String) -> Key {
        Key {
            id,
            state: KeyState::Enabled,
            created: Utc::now(),
            deletion_date: None,
            pending_days: None,
            description: String::new(),
            multi_region: false,
            legacy_alias: None,
            owner,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Alias {
    /// None only for AWS predefined aliases whose managed key does not exist yet.
    pub key_id: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Huawei domain id of the creator (for `alias_urn`); unused elsewhere.
    pub owner: String,
}

#[derive(Default, Debug)]
pub struct Scope {
    pub keys: BTreeMap<String, Key>,
    /// Ordered by name: listings and paging markers rely on it. Changed only through `put_alias` and
    /// `remove_alias`, which keep `per_key` in step.
    pub aliases: BTreeMap<String, Alias>,
    /// Aliases per key id: the per-key quota is checked on every write, and counting a scope of a
    /// million aliases per call would make the emulator the bottleneck of a load test.
    per_key: HashMap<String, usize>,
}

impl Scope {
    /// Aliases pointing at `key_id` (for per-key quotas).
    pub fn alias_count(&self, key_id: &str) -> usize {
        self.per_key.get(key_id).copied().unwrap_or(0)
    }

    /// Creates or re-points an alias, keeping its creation time.
    pub fn put_alias(&mut self, name: &str, key_id: Option<String>, owner: &str) -> &Alias {
        let now = Utc::now();
        if let Some(k) = &key_id {
            *self.per_key.entry(k.clone()).or_default() += 1;
        }
        let entry = self.aliases.entry(name.to_string()).or_insert_with(|| Alias {
            key_id: None,
            created: now,
            updated: now,
            owner: owner.to_string(),
        });
        let old = std::mem::replace(&mut entry.key_id, key_id);
        entry.updated = now;
        if let Some(k) = old {
            uncount(&mut self.per_key, &k);
        }
        entry
    }

    pub fn remove_alias(&mut self, name: &str) -> Option<Alias> {
        let a = self.aliases.remove(name)?;
        if let Some(k) = &a.key_id {
            uncount(&mut self.per_key, k);
        }
        Some(a)
    }
}

fn uncount(per_key: &mut HashMap<String, usize>, key_id: &str) {
    if let Some(n) = per_key.get_mut(key_id) {
        *n -= 1;
        if *n == 0 {
            per_key.remove(key_id);
        }
    }
}

pub struct Store {
    scopes: Mutex<BTreeMap<ScopeKey, Scope>>,
    aws_managed_aliases: bool,
}

/// AWS lists these in every account+region even before the service has created its key.
const AWS_PREDEFINED: [&str; 2] = ["alias/aws/ebs", "alias/aws/s3"];

impl Store {
    pub fn new(aws_managed_aliases: bool) -> Store {
        Store { scopes: Mutex::new(BTreeMap::new()), aws_managed_aliases }
    }

    /// Runs `f` on one scope under the store lock (created on first use, as a cloud account has
    /// every region). One lock for everything: a test emulator's load is tiny, and a single lock
    /// makes every API call atomic, as the clouds' are.
    pub fn with<R>(&self, key: &ScopeKey, f: impl FnOnce(&mut Scope) -> R) -> R {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let scope = scopes.entry(key.clone()).or_insert_with(|| self.new_scope(key.cloud));
        f(scope)
    }

    fn new_scope(&self, cloud: Cloud) -> Scope {
        let mut scope = Scope::default();
        if cloud == Cloud::Aws && self.aws_managed_aliases {
            for name in AWS_PREDEFINED {
                scope.put_alias(name, None, "");
            }
        }
        scope
    }

    pub fn reset(&self) {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// `{cloud: {account: {region: {"keys": {id: state}, "aliases": {name: key_id|null}}}}}`,
    /// optionally narrowed; the shape tests assert on.
    pub fn snapshot(&self, cloud: Option<Cloud>, account: Option<&str>, region: Option<&str>) -> Value {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = json!({});
        for (k, s) in scopes.iter() {
            if cloud.is_some_and(|c| c != k.cloud)
                || account.is_some_and(|a| a != k.account)
                || region.is_some_and(|r| r != k.region)
            {
                continue;
            }
            let keys: serde_json::Map<String, Value> =
                s.keys.values().map(|key| (key.id.clone(), json!(key.state.as_str()))).collect();
            let aliases: serde_json::Map<String, Value> =
                s.aliases.iter().map(|(n, a)| (n.clone(), json!(a.key_id))).collect();
            out[k.cloud.as_str()][&k.account][&k.region] = json!({ "keys": keys, "aliases": aliases });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_key_counts_follow_puts_repoints_and_removals() {
        let mut s = Scope::default();
        s.put_alias("alias/a", Some("k1".into()), "");
        s.put_alias("alias/b", Some("k1".into()), "");
        s.put_alias("alias/c", None, "");
        assert_eq!((s.alias_count("k1"), s.alias_count("k2")), (2, 0));
        s.put_alias("alias/b", Some("k2".into()), "");
        s.put_alias("alias/a", Some("k1".into()), "");
        assert_eq!((s.alias_count("k1"), s.alias_count("k2")), (1, 1));
        assert!(s.remove_alias("alias/a").is_some());
        assert!(s.remove_alias("alias/a").is_none());
        s.put_alias("alias/c", Some("k2".into()), "");
        assert_eq!((s.alias_count("k1"), s.alias_count("k2")), (0, 2));
        s.put_alias("alias/b", None, "");
        assert_eq!(s.alias_count("k2"), 1);
        assert!(s.per_key.keys().all(|k| k == "k2"));
    }
}
