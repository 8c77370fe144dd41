//! Pre-flight before a write (DESIGN §2.9): before an alias is created on, or re-pointed to, key K, K must exist
//! and be Enabled, and a re-point from a known live key L must keep L's spec and usage (a symmetric
//! ENCRYPT_DECRYPT alias stays symmetric ENCRYPT_DECRYPT: an application decrypting through the alias would
//! otherwise break). Deletes need none.
//!
//! A violation is an error of its own code (`preflight_key_missing` / `_disabled` / `_mismatch`, also the
//! dead-letter reason) and class, so the error policy treats it as it would the cloud's own answer: a missing
//! key is NotFound and a disabled one InvalidState (both retried `consistency_retries` times, as right after a key
//! was created or enabled, then dead-lettered), a mismatch is Permanent (spec and usage never change). Errors
//! of the describe call itself (throttling, outages, credentials) go through the policy unchanged.
//!
//! Key facts are cached per target by key id, so a re-point to a key already seen costs no call; the describe
//! calls go through the target's governed provider and spend its read quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use crate::provider::{ErrorClass, KeyFacts, KeyState, KmsAliases, ProviderError};
use crate::telemetry::metrics::metrics;

/// The key does not exist in the target.
pub const KEY_MISSING: &str = "preflight_key_missing";
/// The key exists but is not Enabled (Disabled, PendingDeletion, PendingImport, …).
pub const KEY_DISABLED: &str = "preflight_key_disabled";
/// A re-point would change the alias's key spec or usage.
pub const KEY_MISMATCH: &str = "preflight_key_mismatch";
/// The dead-letter reason of every other permanent reconcile failure.
pub const RECONCILE_FAILED: &str = "reconcile_failed";

/// How long an Enabled key's facts are trusted. A key's spec and usage never change and its state changes
/// rarely, by an operator; 5 minutes keeps steady-state re-points free of calls while bounding how long a
/// key disabled meanwhile still passes (the cloud may refuse the write then; the next check after that sees it).
pub const ENABLED_TTL: Duration = Duration::from_secs(300);
/// How long a "no" (missing, or not Enabled) is trusted: long enough that a burst of aliases naming one bad key
/// costs one call, short enough that the consistency retries (which back off over seconds) ask again and see a
/// key just created or enabled, and that a fixed key is seen by the next event.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Keys cached per target. Re-points move many aliases to few keys (a rotation), so a small working set gets
/// the hits; the bound keeps a thousand owned targets' caches within a few tens of MB (DESIGN §2.10).
pub const CAPACITY: usize = 256;
/// Distinct spec/usage strings shared between entries (clouds have a dozen or so); more are stored unshared.
const INTERNED: usize = 64;

/// What the check needs of a key, compact: spec and usage strings are shared between entries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Facts {
    state: KeyState,
    spec: Arc<str>,
    usage: Arc<str>,
}

type Lookup = Shared<BoxFuture<'static, Result<Option<KeyFacts>, ProviderError>>>;

enum Slot {
    /// An answer (None: no such key), trusted until `until`.
    Known { facts: Option<Facts>, until: Instant },
    /// A describe in flight: concurrent checks of the key wait for it instead of asking again.
    Pending(Lookup),
}

#[derive(Default)]
struct Cache {
    slots: HashMap<Box<str>, Slot>,
    interned: Vec<Arc<str>>,
}

impl Cache {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.iter().find(|a| &***a == s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        if self.interned.len() < INTERNED {
            self.interned.push(a.clone());
        }
        a
    }

    fn facts(&mut self, k: &KeyFacts) -> Facts {
        Facts { state: k.state.clone(), spec: self.intern(&k.spec), usage: self.intern(&k.usage) }
    }

    /// Makes room for one more slot: expired answers go first, then the answer that expires soonest. Lookups in
    /// flight stay (at most one per worker, so `concurrency` bounds them).
    fn make_room(&mut self, now: Instant) {
        if self.slots.len() < CAPACITY {
            return;
        }
        self.slots.retain(|_, s| !matches!(s, Slot::Known { until, .. } if *until <= now));
        if self.slots.len() < CAPACITY {
            return;
        }
        let soonest = self
            .slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Known { until, .. } => Some((*until, k)),
                Slot::Pending(_) => None,
            })
            .min_by_key(|(until, _)| *until)
            .map(|(_, k)| k.clone());
        if let Some(k) = soonest {
            self.slots.remove(&k);
        }
    }
}

/// One target's pre-flight: the switch and the key-facts cache.
pub(super) struct Preflight {
    enabled: bool,
    cache: Mutex<Cache>,
}

impl Preflight {
    pub fn new(enabled: bool) -> Self {
        // The reasons start at 0, so increase() and alert rules see the first dead letter.
        for r in [KEY_MISSING, KEY_DISABLED, KEY_MISMATCH] {
            metrics().dead_letters.with_label_values(&[r]);
        }
        Preflight { enabled, cache: Mutex::new(Cache::default()) }
    }

    /// Before writing `key` to an alias that now points at `live` (None: absent, or not known). Ok: write.
    pub async fn check(&self, p: &Arc<dyn KmsAliases>, key: &str, live: Option<&str>) -> Result<(), ProviderError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(k) = self.facts(p, key).await? else {
            return Err(violation(
                ErrorClass::NotFound,
                KEY_MISSING,
                format!("key {key} does not exist in the target"),
            ));
        };
        if k.state != KeyState::Enabled {
            return Err(violation(
                ErrorClass::InvalidState,
                KEY_DISABLED,
                format!("key {key} is {}, not Enabled; the alias is left as it is", k.state),
            ));
        }
        let Some(l) = live.filter(|l| !p.key_matches(key, l)) else { return Ok(()) };
        // The old key gone: there is nothing to stay compatible with.
        let Some(old) = self.facts(p, l).await? else { return Ok(()) };
        let differs = |a: &str, b: &str| !a.is_empty() && !b.is_empty() && a != b;
        if differs(&k.spec, &old.spec) || differs(&k.usage, &old.usage) {
            return Err(violation(
                ErrorClass::Permanent,
                KEY_MISMATCH,
                format!(
                    "key {key} is {}/{} but the alias's current key {l} is {}/{}: a re-point must keep the key spec \
                     and usage; the alias is left as it is",
                    k.spec, k.usage, old.spec, old.usage
                ),
            ));
        }
        Ok(())
    }

    /// `key`'s facts: from the cache, from a describe already in flight, or from a new one.
    async fn facts(&self, p: &Arc<dyn KmsAliases>, key: &str) -> Result<Option<Facts>, ProviderError> {
        let lookup = {
            let mut c = self.cache.lock().unwrap();
            let now = Instant::now();
            match c.slots.get(key) {
                Some(Slot::Known { facts, until }) if now < *until => return Ok(facts.clone()),
                Some(Slot::Pending(l)) => l.clone(),
                _ => {
                    let (p, k) = (p.clone(), key.to_string());
                    let l = async move { p.describe_key(&k).await }.boxed().shared();
                    c.slots.remove(key);
                    c.make_room(now);
                    c.slots.insert(key.into(), Slot::Pending(l.clone()));
                    l
                }
            }
        };
        let res = lookup.clone().await;
        let mut c = self.cache.lock().unwrap();
        let facts = res.map(|f| f.map(|f| c.facts(&f)));
        // The first waiter to finish stores the answer; an error is not cached (the retry asks again).
        if matches!(c.slots.get(key), Some(Slot::Pending(l)) if l.ptr_eq(&lookup)) {
            match &facts {
                Ok(f) => {
                    let ttl = if f.as_ref().is_some_and(|f| f.state == KeyState::Enabled) {
                        ENABLED_TTL
                    } else {
                        NEGATIVE_TTL
                    };
                    let until = Instant::now() + ttl;
                    c.slots.insert(key.into(), Slot::Known { facts: f.clone(), until });
                }
                Err(_) => {
                    c.slots.remove(key);
                }
            }
        }
        facts
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.lock().unwrap().slots.len()
    }
}

fn violation(class: ErrorClass, reason: &'static str, message: String) -> ProviderError {
    ProviderError::new(class, reason, reason, message)
}

/// The dead-letter reason of a reconcile that failed permanently with `e`.
pub fn dead_letter_reason(e: &ProviderError) -> &'static str {
    match e.code.as_str() {
        KEY_MISSING => KEY_MISSING,
        KEY_DISABLED => KEY_DISABLED,
        KEY_MISMATCH => KEY_MISMATCH,
        _ => RECONCILE_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::LiveAlias;
    use async_trait::async_trait;

    #[derive(Default)]
    struct Keys {
        facts: Mutex<HashMap<String, KeyFacts>>,
        calls: Mutex<Vec<String>>,
        fail: Mutex<Option<ErrorClass>>,
        delay: Duration,
    }

    impl Keys {
        fn with(keys: &[(&str, KeyState, &str, &str)]) -> Arc<Keys> {
            let k = Keys::default();
            for (id, state, spec, usage) in keys {
                k.set(id, state.clone(), spec, usage);
            }
            Arc::new(k)
        }
        fn set(&self, id: &str, state: KeyState, spec: &str, usage: &str) {
            let f = KeyFacts { key_id: id.into(), state, spec: spec.into(), usage: usage.into() };
            self.facts.lock().unwrap().insert(id.into(), f);
        }
        fn calls(&self) -> usize {
            self.calls.lock().unwrap().len()
        }
    }

    #[async_trait]
    impl KmsAliases for Keys {
        async fn list_each(&self, _: &[String], _: &mut (dyn FnMut(LiveAlias) + Send)) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn get_alias(&self, _: &str) -> Result<Option<String>, ProviderError> {
            Ok(None)
        }
        async fn create_alias(&self, _: &str, _: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn update_alias(&self, _: &str, _: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn delete_alias(&self, _: &str, _: Option<&str>) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn describe_key(&self, key_id: &str) -> Result<Option<KeyFacts>, ProviderError> {
            self.calls.lock().unwrap().push(key_id.into());
            tokio::time::sleep(self.delay).await;
            if let Some(c) = *self.fail.lock().unwrap() {
                return Err(ProviderError::new(c, "ThrottlingException", "throttling", "injected"));
            }
            Ok(self.facts.lock().unwrap().get(key_id).cloned())
        }
    }

    const SYM: (&str, &str) = ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT");

    fn sym(id: &str, state: KeyState) -> (&str, KeyState, &'static str, &'static str) {
        (id, state, SYM.0, SYM.1)
    }

    fn dyn_p(k: &Arc<Keys>) -> Arc<dyn KmsAliases> {
        k.clone()
    }

    #[tokio::test(start_paused = true)]
    async fn the_check_refuses_missing_disabled_and_mismatched_keys() {
        let keys = Keys::with(&[
            sym("k1", KeyState::Enabled),
            sym("k2", KeyState::Enabled),
            sym("off", KeyState::Disabled),
            sym("dying", KeyState::PendingDeletion),
            sym("importing", KeyState::PendingImport),
            ("hmac", KeyState::Enabled, "HMAC_256", "GENERATE_VERIFY_MAC"),
            ("rsa-enc", KeyState::Enabled, "RSA_2048", "ENCRYPT_DECRYPT"),
            ("sym-sign", KeyState::Enabled, "SYMMETRIC_DEFAULT", "SIGN_VERIFY"),
            ("unreported", KeyState::Enabled, "", ""),
        ]);
        let p = dyn_p(&keys);
        let pf = Preflight::new(true);
        let code = |r: Result<(), ProviderError>| r.map_err(|e| (e.class, e.code));
        assert_eq!(code(pf.check(&p, "k1", None).await), Ok(()));
        assert_eq!(code(pf.check(&p, "k2", Some("k1")).await), Ok(()), "same spec and usage");
        assert_eq!(
            code(pf.check(&p, "nope", None).await),
            Err((ErrorClass::NotFound, KEY_MISSING.to_string())),
            "missing: NotFound, so the consistency retries apply"
        );
        for k in ["off", "dying", "importing"] {
            assert_eq!(
                code(pf.check(&p, k, Some("k1")).await),
                Err((ErrorClass::InvalidState, KEY_DISABLED.to_string())),
                "{k}"
            );
        }
        for k in ["hmac", "rsa-enc", "sym-sign"] {
            let e = pf.check(&p, k, Some("k1")).await.unwrap_err();
            assert_eq!((e.class, e.code.as_str()), (ErrorClass::Permanent, KEY_MISMATCH), "{k}");
            assert!(e.message.contains("SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT") && e.message.contains(k), "{e}");
        }
        // A create (no live key), or a re-point from a key that is gone, has nothing to stay compatible with.
        assert_eq!(code(pf.check(&p, "hmac", None).await), Ok(()));
        assert_eq!(code(pf.check(&p, "hmac", Some("deleted-long-ago")).await), Ok(()));
        // A spec or usage the cloud does not report is not a mismatch.
        assert_eq!(code(pf.check(&p, "unreported", Some("k1")).await), Ok(()));
        // The disabled new key is refused before the old key is described.
        let before = keys.calls();
        pf.check(&p, "off", Some("never-described")).await.unwrap_err();
        assert_eq!(keys.calls(), before);
        assert!(!keys.calls.lock().unwrap().iter().any(|k| k == "never-described"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_repoint_to_a_known_key_costs_no_call_and_answers_expire() {
        let keys = Keys::with(&[sym("k1", KeyState::Enabled), sym("k2", KeyState::Enabled)]);
        let p = dyn_p(&keys);
        let pf = Preflight::new(true);
        pf.check(&p, "k2", Some("k1")).await.unwrap();
        assert_eq!(keys.calls(), 2, "new key and old key");
        for _ in 0..10 {
            pf.check(&p, "k2", Some("k1")).await.unwrap();
            pf.check(&p, "k1", Some("k2")).await.unwrap();
        }
        assert_eq!(keys.calls(), 2, "steady state: cache hits");
        // Enabled facts expire after ENABLED_TTL: a key disabled meanwhile is then seen.
        keys.set("k2", KeyState::Disabled, SYM.0, SYM.1);
        tokio::time::advance(ENABLED_TTL - Duration::from_secs(1)).await;
        pf.check(&p, "k2", None).await.unwrap();
        assert_eq!(keys.calls(), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(pf.check(&p, "k2", None).await.unwrap_err().code, KEY_DISABLED);
        assert_eq!(keys.calls(), 3);
        // A "no" is trusted for NEGATIVE_TTL only: an enabled key (or one just created) is seen soon after.
        keys.set("k2", KeyState::Enabled, SYM.0, SYM.1);
        pf.check(&p, "k2", None).await.unwrap_err();
        assert_eq!(keys.calls(), 3, "a burst naming a bad key costs one call");
        tokio::time::advance(NEGATIVE_TTL).await;
        pf.check(&p, "k2", None).await.unwrap();
        assert_eq!(keys.calls(), 4);
        assert_eq!(pf.check(&p, "k3", None).await.unwrap_err().code, KEY_MISSING);
        keys.set("k3", KeyState::Enabled, SYM.0, SYM.1);
        pf.check(&p, "k3", None).await.unwrap_err();
        tokio::time::advance(NEGATIVE_TTL).await;
        pf.check(&p, "k3", None).await.unwrap();
        assert_eq!(keys.calls(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_checks_share_one_describe_and_errors_are_not_cached() {
        let keys = Arc::new(Keys { delay: Duration::from_millis(50), ..Keys::default() });
        keys.set("k1", KeyState::Enabled, SYM.0, SYM.1);
        let p = dyn_p(&keys);
        let pf = Arc::new(Preflight::new(true));
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let (pf, p) = (pf.clone(), p.clone());
                tokio::spawn(async move { pf.check(&p, "k1", None).await })
            })
            .collect();
        for c in checks {
            c.await.unwrap().unwrap();
        }
        assert_eq!(keys.calls(), 1, "eight workers re-pointing to one key: one describe");

        *keys.fail.lock().unwrap() = Some(ErrorClass::Throttled);
        let e = pf.check(&p, "k2", None).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Throttled, "ThrottlingException"), "passed on as is");
        assert_eq!(dead_letter_reason(&e), RECONCILE_FAILED);
        *keys.fail.lock().unwrap() = None;
        keys.set("k2", KeyState::Enabled, SYM.0, SYM.1);
        pf.check(&p, "k2", None).await.unwrap();
        assert_eq!(keys.calls(), 3, "the failed describe was asked again");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded() {
        let keys = Keys::with(&[]);
        for i in 0..CAPACITY * 3 {
            keys.set(&format!("k{i}"), KeyState::Enabled, SYM.0, SYM.1);
        }
        let p = dyn_p(&keys);
        let pf = Preflight::new(true);
        for i in 0..CAPACITY * 3 {
            pf.check(&p, &format!("k{i}"), None).await.unwrap();
            assert!(pf.len() <= CAPACITY);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(pf.len(), CAPACITY);
        // The most recent keys stayed: the answers that expire soonest (the oldest) went first.
        {
            let c = pf.cache.lock().unwrap();
            assert!((CAPACITY * 2..CAPACITY * 3).all(|i| c.slots.contains_key(format!("k{i}").as_str())));
        }
        let before = keys.calls();
        pf.check(&p, &format!("k{}", CAPACITY * 2), None).await.unwrap();
        assert_eq!(keys.calls(), before);
        // Expired answers make room before live ones are evicted.
        tokio::time::advance(ENABLED_TTL).await;
        pf.check(&p, "k0", None).await.unwrap();
        assert_eq!(pf.len(), 1);
        // Spec and usage strings are shared, not copied per entry.
        let c = pf.cache.lock().unwrap();
        assert_eq!(c.interned.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn switched_off_it_asks_nothing() {
        let keys = Keys::with(&[]);
        let pf = Preflight::new(false);
        pf.check(&dyn_p(&keys), "missing", Some("other")).await.unwrap();
        assert_eq!(keys.calls(), 0);
    }

    #[test]
    fn violations_are_their_own_dead_letter_reasons() {
        for r in [KEY_MISSING, KEY_DISABLED, KEY_MISMATCH] {
            assert_eq!(dead_letter_reason(&violation(ErrorClass::Permanent, r, String::new())), r);
        }
        let cloud = ProviderError::new(ErrorClass::NotFound, "NotFoundException", "not_found", "gone");
        assert_eq!(dead_letter_reason(&cloud), RECONCILE_FAILED);
    }
}
