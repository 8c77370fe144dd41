//! Call counters per cloud, account (Huawei: project), region and operation, so tests can assert
//! how many API calls the daemon made and how many were throttled.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{json, Value};

use crate::wire::{CallInfo, Cloud};

#[derive(Default, Serialize, Clone)]
pub struct Tally {
    pub calls: u64,
    pub ok: u64,
    /// Answered with the cloud's throttling error by a throttle rule.
    pub throttled: u64,
    /// Answered with an error injected by an error rule.
    pub injected: u64,
    /// Hit an outage rule (dropped, hung or 503).
    pub outages: u64,
    /// Rejected at authentication (bad signature, unknown key, clock skew).
    pub auth_failures: u64,
    /// Every error answer by code, injected or not.
    pub errors: BTreeMap<String, u64>,
}

pub enum Outcome<'a> {
    Ok,
    Outage,
    Error { code: &'a str, throttled: bool, injected: bool, auth: bool },
}

type CallKey = (Cloud, String, String, String);

#[derive(Default)]
pub struct Counters {
    tallies: Mutex<BTreeMap<CallKey, Tally>>,
}

impl Counters {
    pub fn record(&self, info: &CallInfo, outcome: Outcome<'_>) {
        let key = (info.cloud, info.account.clone(), info.region.clone(), info.operation.clone());
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let t = tallies.entry(key).or_default();
        t.calls += 1;
        match outcome {
            Outcome::Ok => t.ok += 1,
            Outcome::Outage => t.outages += 1,
            Outcome::Error { code, throttled, injected, auth } => {
                t.throttled += u64::from(throttled);
                t.injected += u64::from(injected);
                t.auth_failures += u64::from(auth);
                *t.errors.entry(code.to_string()).or_default() += 1;
            }
        }
    }

    pub fn reset(&self) {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// `{"calls": [{cloud, account, region, operation, calls, ok, …}], "totals": {cloud: Tally}}`.
    pub fn snapshot(&self, cloud: Option<Cloud>) -> Value {
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = Vec::new();
        let mut totals: BTreeMap<&'static str, Tally> = BTreeMap::new();
        for ((c, account, region, op), t) in tallies.iter() {
            if cloud.is_some_and(|x| x != *c) {
                continue;
            }
            let mut row = serde_json::to_value(t).unwrap_or_default();
            row["cloud"] = json!(c.as_str());
            row["account"] = json!(account);
            row["region"] = json!(region);
            row["operation"] = json!(op);
            rows.push(row);
            let total = totals.entry(c.as_str()).or_default();
            total.calls += t.calls;
            total.ok += t.ok;
            total.throttled += t.throttled;
            total.injected += t.injected;
            total.outages += t.outages;
            total.auth_failures += t.auth_failures;
            for (code, n) in &t.errors {
                *total.errors.entry(code.clone()).or_default() += n;
            }
        }
        json!({ "calls": rows, "totals": totals })
    }
}
