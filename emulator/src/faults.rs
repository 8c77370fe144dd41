//! Fault injection, configured through the admin API: added latency, errors at a rate, throttling
//! above a request rate, and outages. A rule applies to one cloud, optionally narrowed to a region
//! and/or an account (Huawei: project); several rules may match one call, the most specific first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::wire::{ApiError, CallInfo, Cloud, OpClass};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outage {
    /// Read the request, then close the connection without a response (a crashed frontend). Clients
    /// see "connection closed before message completed": a transport error, retried as transient.
    Drop,
    /// Never answer (until the outage is lifted); clients hit their own timeout.
    Hang,
    /// HTTP 503 in the cloud's error shape.
    #[serde(rename = "503", alias = "unavailable")]
    Unavailable,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// The cloud's error code, e.g. `KMSInternalException`, `Rejected.Throttling`, `KMS.0101`.
    pub code: String,
    /// HTTP status; defaults per code (see [`default_status`]).
    #[serde(default)]
    pub status: Option<u16>,
    /// Probability per matching call, 0..=1.
    #[serde(default = "one")]
    pub rate: f64,
    /// Operation names as the cloud spells them (`CreateAlias`, Huawei `CreateAlias`/`AssociateAlias`/…);
    /// empty = every operation.
    #[serde(default)]
    pub operations: Vec<String>,
    /// Inject at most this many times (then the rule is spent); absent = no limit.
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub cloud: Cloud,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub latency_ms: u64,
    /// Extra random latency, uniform in 0..=jitter_ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Operations the latency applies to (as the cloud spells them); empty = every operation.
    #[serde(default)]
    pub latency_operations: Vec<String>,
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// Requests per second allowed per operation class, per account+region (the clouds' quota unit).
    #[serde(default)]
    pub throttle: BTreeMap<OpClass, f64>,
    /// Bucket size; default = the rate (one second's worth), at least 1.
    #[serde(default)]
    pub throttle_burst: Option<f64>,
    #[serde(default)]
    pub outage: Option<Outage>,
}

impl FaultRule {
    fn matches(&self, info: &CallInfo) -> bool {
        self.cloud == info.cloud
            && self.region.as_ref().is_none_or(|r| *r == info.region)
            && self.account.as_ref().is_none_or(|a| *a == info.account)
    }

    fn specificity(&self) -> u8 {
        u8::from(self.region.is_some()) + u8::from(self.account.is_some())
    }

    fn same_selector(&self, other: &FaultRule) -> bool {
        self.cloud == other.cloud && self.region == other.region && self.account == other.account
    }

    pub fn validate(&self) -> Result<(), String> {
        for e in &self.errors {
            if !(0.0..=1.0).contains(&e.rate) {
                return Err(format!("errors[].rate must be within 0..=1, got {}", e.rate));
            }
            if e.code.is_empty() {
                return Err("errors[].code must not be empty".into());
            }
            if e.status.is_some_and(|s| !(400..=599).contains(&s)) {
                return Err("errors[].status must be a 4xx or 5xx".into());
            }
        }
        // Written to refuse NaN and infinities too.
        let bad_rate = |r: f64| !r.is_finite() || r <= 0.0;
        if self.throttle.values().any(|r| bad_rate(*r))
            || self.throttle_burst.is_some_and(|b| !b.is_finite() || b < 1.0)
        {
            return Err("throttle rates must be > 0 and throttle_burst >= 1".into());
        }
        Ok(())
    }
}

/// Status for an injected code when the rule gives none: the clouds' documented statuses.
pub fn default_status(code: &str) -> u16 {
    match code {
        "KMSInternalException" | "InternalFailure" | "InternalError" | "KMS.0101" | "KMS.0102" => 500,
        "DependencyTimeoutException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "ServiceUnavailableTemporary" => 503,
        "Rejected.Throttling" | "APIGW.0308" => 429,
        "InvalidAccessKeyId.NotFound" | "Forbidden.KeyNotFound" | "Forbidden.AliasNotFound" | "KMS.0207" => 404,
        c if c.starts_with("Rejected.") && c != "Rejected.LimitExceeded" => 409,
        _ => 400,
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct RuleState {
    rule: FaultRule,
    /// Remaining injections per error rule (None = unlimited).
    remaining: Vec<Option<u64>>,
    buckets: HashMap<(String, String, OpClass), Bucket>,
}

/// Decided before authentication (a dead frontend does not check signatures).
pub struct Early {
    pub outage: Option<Outage>,
    pub latency: Duration,
}

/// Decided after authentication, in the clouds' order: throttling, then server errors.
pub enum Late {
    Pass,
    Throttled,
    Inject(ApiError),
}

#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<RuleState>>,
}

impl Faults {
    /// Adds a rule, replacing one with the same cloud/region/account selector.
    pub fn set(&self, rule: FaultRule) {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|r| !r.rule.same_selector(&rule));
        let remaining = rule.errors.iter().map(|e| e.count).collect();
        rules.push(RuleState { rule, remaining, buckets: HashMap::new() });
        rules.sort_by_key(|r| std::cmp::Reverse(r.rule.specificity()));
    }

    /// Removes the rules of a cloud (and selector, when given); all rules when `cloud` is None.
    pub fn clear(&self, cloud: Option<Cloud>, region: Option<&str>, account: Option<&str>) -> usize {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let before = rules.len();
        rules.retain(|r| {
            let hit = cloud.is_none_or(|c| c == r.rule.cloud)
                && region.is_none_or(|x| r.rule.region.as_deref() == Some(x))
                && account.is_none_or(|x| r.rule.account.as_deref() == Some(x));
            !hit
        });
        before - rules.len()
    }

    pub fn list(&self) -> Vec<serde_json::Value> {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(&r.rule).unwrap_or_default();
                v["remaining"] = serde_json::json!(r.remaining);
                v
            })
            .collect()
    }

    pub fn early(&self, info: &CallInfo) -> Early {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut early = Early { outage: None, latency: Duration::ZERO };
        let mut rng = rand::rng();
        for r in rules.iter().filter(|r| r.rule.matches(info)) {
            early.outage = early.outage.or(r.rule.outage);
            if !r.rule.latency_operations.is_empty() && !r.rule.latency_operations.contains(&info.operation) {
                continue;
            }
            let jitter = if r.rule.jitter_ms > 0 { rng.random_range(0..=r.rule.jitter_ms) } else { 0 };
            // The largest delay of the matching rules, not their sum: a region rule refines a cloud rule.
            early.latency = early.latency.max(Duration::from_millis(r.rule.latency_ms + jitter));
        }
        early
    }

    pub fn late(&self, info: &CallInfo) -> Late {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for r in rules.iter_mut().filter(|r| r.rule.matches(info)) {
            if let Some(&rate) = r.rule.throttle.get(&info.class) {
                let burst = r.rule.throttle_burst.unwrap_or(rate).max(1.0);
                let b = r
                    .buckets
                    .entry((info.account.clone(), info.region.clone(), info.class))
                    .or_insert(Bucket { tokens: burst, last: now });
                b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
                b.last = now;
                if b.tokens < 1.0 {
                    return Late::Throttled;
                }
                b.tokens -= 1.0;
            }
        }
        let mut rng = rand::rng();
        for r in rules.iter_mut().filter(|r| r.rule.matches(info)) {
            for (i, e) in r.rule.errors.iter().enumerate() {
                if !e.operations.is_empty() && !e.operations.contains(&info.operation) {
                    continue;
                }
                if r.remaining[i] == Some(0) {
                    continue;
                }
                if e.rate < 1.0 && rng.random::<f64>() >= e.rate {
                    continue;
                }
                if let Some(n) = r.remaining[i].as_mut() {
                    *n -= 1;
                }
                let status = e.status.unwrap_or_else(|| default_status(&e.code));
                let message = e.message.clone().unwrap_or_else(|| format!("injected by kms-emulator: {}", e.code));
                return Late::Inject(ApiError::new(status, e.code.clone(), message));
            }
        }
        Late::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(op: &str, class: OpClass, region: &str) -> CallInfo {
        CallInfo { cloud: Cloud::Aws, operation: op.into(), class, account: "1".into(), region: region.into() }
    }

    fn rule(json: serde_json::Value) -> FaultRule {
        let r: FaultRule = serde_json::from_value(json).unwrap();
        r.validate().unwrap();
        r
    }

    #[test]
    fn throttle_per_class_and_scope() {
        let f = Faults::default();
        f.set(rule(serde_json::json!({"cloud": "aws", "throttle": {"write": 1}, "throttle_burst": 2})));
        let w = info("CreateAlias", OpClass::Write, "r1");
        assert!(matches!(f.late(&w), Late::Pass));
        assert!(matches!(f.late(&w), Late::Pass));
        assert!(matches!(f.late(&w), Late::Throttled));
        assert!(matches!(f.late(&info("ListAliases", OpClass::Read, "r1")), Late::Pass));
        // Another region has its own bucket.
        assert!(matches!(f.late(&info("CreateAlias", OpClass::Write, "r2")), Late::Pass));
    }

    #[test]
    fn error_count_and_operations() {
        let f = Faults::default();
        f.set(rule(serde_json::json!({"cloud": "aws", "region": "r1",
            "errors": [{"code": "KMSInternalException", "operations": ["CreateAlias"], "count": 1}]})));
        assert!(matches!(f.late(&info("DeleteAlias", OpClass::Write, "r1")), Late::Pass));
        assert!(matches!(f.late(&info("CreateAlias", OpClass::Write, "r2")), Late::Pass));
        match f.late(&info("CreateAlias", OpClass::Write, "r1")) {
            Late::Inject(e) => assert_eq!((e.status, e.code.as_str()), (500, "KMSInternalException")),
            _ => panic!("expected an injected error"),
        }
        assert!(matches!(f.late(&info("CreateAlias", OpClass::Write, "r1")), Late::Pass));
    }

    #[test]
    fn latency_can_be_narrowed_to_operations() {
        let f = Faults::default();
        f.set(rule(serde_json::json!({"cloud": "aws", "latency_ms": 700, "latency_operations": ["UpdateAlias"]})));
        assert_eq!(f.early(&info("UpdateAlias", OpClass::Write, "r1")).latency, Duration::from_millis(700));
        assert_eq!(f.early(&info("ListAliases", OpClass::Read, "r1")).latency, Duration::ZERO);
    }

    #[test]
    fn selectors_replace_and_latency_is_the_largest() {
        let f = Faults::default();
        f.set(rule(serde_json::json!({"cloud": "aws", "latency_ms": 10})));
        f.set(rule(serde_json::json!({"cloud": "aws", "latency_ms": 20})));
        f.set(rule(serde_json::json!({"cloud": "aws", "region": "r1", "latency_ms": 5, "outage": "503"})));
        assert_eq!(f.list().len(), 2);
        let e = f.early(&info("X", OpClass::Read, "r1"));
        assert_eq!((e.latency, e.outage), (Duration::from_millis(20), Some(Outage::Unavailable)));
        assert_eq!(f.early(&info("X", OpClass::Read, "r2")).outage, None);
        assert_eq!(f.clear(Some(Cloud::Aws), Some("r1"), None), 1);
    }

    #[test]
    fn invalid_rules() {
        for bad in [
            serde_json::json!({"cloud": "aws", "errors": [{"code": "X", "rate": 1.5}]}),
            serde_json::json!({"cloud": "aws", "throttle": {"write": 0}}),
        ] {
            let r: FaultRule = serde_json::from_value(bad).unwrap();
            assert!(r.validate().is_err());
        }
        assert!(serde_json::from_value::<FaultRule>(serde_json::json!({"cloud": "aws", "bogus": 1})).is_err());
    }
}
