//! The operator commands beside the daemon: plan (diff without changing anything), import (adopt
//! what a target has), publish (a desired-state file → events).

pub mod statefile;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::config::Config;
use crate::daemon::build_targets;
use crate::drift::{self, Kind};
use crate::event::{is_managed, Decoder};
use crate::source::{client_config, snapshot};
use statefile::StateFile;

async fn read_desired(cfg: &Config) -> Result<(crate::desired::Store, snapshot::Counts), String> {
    let base = client_config(cfg).map_err(|e| e.to_string())?;
    let decoder = Decoder::from_config(cfg);
    let (topic, n) = (cfg.kafka.topic.clone(), cfg.targets.len());
    tokio::task::spawn_blocking(move || snapshot::read_to_end(&base, &topic, &decoder, n))
        .await
        .map_err(|e| e.to_string())?
}

/// Prints the diff between the desired state and the targets. Ok(true) when something drifted.
pub async fn plan(cfg: &Config, json_out: bool, only: Option<&str>) -> Result<bool, String> {
    if let Some(t) = only {
        if !cfg.targets.contains_key(t) {
            return Err(format!(
                "unknown target {t:?}; configured: {}",
                cfg.targets.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let (store, counts) = read_desired(cfg).await?;
    let specs = build_targets(cfg).map_err(|e| e.to_string())?;
    let prefixes = &cfg.ownership.managed_prefixes;
    let locked = std::sync::RwLock::new(store);
    let mut out = Vec::new();
    let mut drifted = false;
    let mut errors = Vec::new();
    for s in specs.iter().filter(|s| only.is_none_or(|o| o == s.name)) {
        let listing = match s.provider.list_aliases(prefixes).await {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!("{}: {e}", s.name));
                continue;
            }
        };
        let r = drift::compare(
            &locked,
            s.id,
            &listing,
            |a| is_managed(prefixes, a),
            |_| false,
            |d, l| s.provider.key_matches(d, l),
        );
        drifted |= !r.drifted.is_empty();
        out.push((s.name.clone(), cfg.targets[&s.name].prune, r));
    }
    let store = locked.into_inner().unwrap_or_else(|e| e.into_inner());
    if json_out {
        let targets: Vec<_> = out
            .iter()
            .map(|(name, prune, r)| {
                json!({"target": name, "in_sync": r.drifted.is_empty(), "prune": prune,
                       "missing": r.count(Kind::Missing), "wrong_key": r.count(Kind::WrongKey),
                       "orphan": r.count(Kind::Orphan), "drift": r.drifted})
            })
            .collect();
        let v = json!({"in_sync": !drifted && errors.is_empty(), "targets": targets, "errors": errors,
                       "events": {"applied": counts.applied, "stale": counts.stale, "invalid": counts.invalid}});
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!(
            "desired state: {} aliases ({} events applied, {} stale, {} invalid)",
            store.len(),
            counts.applied,
            counts.stale,
            counts.invalid
        );
        for (name, prune, r) in &out {
            if r.drifted.is_empty() {
                println!("\n{name}: in sync ({} desired)", store.count(cfg_id(cfg, name)));
                continue;
            }
            println!("\n{name}: {} to change", r.drifted.len());
            for d in &r.drifted {
                let (live, want) = (d.live.as_deref().unwrap_or("-"), d.desired.as_deref().unwrap_or("-"));
                match d.kind {
                    Kind::Missing => println!("  + {} -> {want}", d.alias),
                    Kind::WrongKey => println!("  ~ {}: {live} -> {want}", d.alias),
                    Kind::Orphan if d.unknown && !prune => {
                        println!("  ? {} -> {live} (orphan: no desired state; kept, prune = false)", d.alias)
                    }
                    Kind::Orphan => println!("  - {} -> {live}", d.alias),
                }
            }
        }
        for e in &errors {
            eprintln!("error: {e}");
        }
    }
    if !errors.is_empty() {
        return Err(format!("{} target(s) could not be listed", errors.len()));
    }
    Ok(drifted)
}

fn cfg_id(cfg: &Config, name: &str) -> u16 {
    cfg.targets.keys().position(|k| k == name).unwrap_or(0) as u16
}

/// The managed aliases of one target, as a desired-state file.
pub async fn import(cfg: &Config, target: &str, json_out: bool) -> Result<String, String> {
    let specs = build_targets(cfg).map_err(|e| e.to_string())?;
    let s = specs.iter().find(|s| s.name == target).ok_or_else(|| {
        format!("unknown target {target:?}; configured: {}", cfg.targets.keys().cloned().collect::<Vec<_>>().join(", "))
    })?;
    let prefixes = &cfg.ownership.managed_prefixes;
    let listing = s.provider.list_aliases(prefixes).await.map_err(|e| format!("{target}: {e}"))?;
    let mut f = StateFile::default();
    for a in listing {
        if let (true, Some(k)) = (is_managed(prefixes, &a.name), a.key_id) {
            f.aliases.insert(a.name, BTreeMap::from([(target.to_string(), k)]));
        }
    }
    Ok(if json_out { f.to_json() } else { f.to_yaml() })
}

/// What `publish` sends.
#[derive(Debug)]
pub struct Publication {
    pub events: Vec<(String, String)>,
    pub unchanged: usize,
}

/// Turns a desired-state file into events: only aliases whose targets differ from the topic, each
/// at the next revision; with `delete_missing`, `state: absent` for aliases the file no longer has.
pub async fn prepare_publish(cfg: &Config, file: &StateFile, delete_missing: bool) -> Result<Publication, String> {
    let (store, _) = read_desired(cfg).await?;
    let decoder = Decoder::from_config(cfg);
    let names: Vec<&String> = cfg.targets.keys().collect();
    let mut events = Vec::new();
    let mut unchanged = 0;
    let mut problems = Vec::new();
    let current_all: BTreeMap<&str, (u64, BTreeMap<String, String>)> = store
        .iter()
        .map(|(a, rev, t)| (a, (rev, t.iter().map(|(id, k)| (names[*id as usize].clone(), k.to_string())).collect())))
        .collect();
    for (alias, targets) in &file.aliases {
        let (rev, now) = current_all.get(alias.as_str()).cloned().unwrap_or((0, BTreeMap::new()));
        if current_all.contains_key(alias.as_str()) && &now == targets {
            unchanged += 1;
            continue;
        }
        let v = json!({"schema": 1, "alias": alias, "revision": rev + 1, "targets": targets}).to_string();
        match decoder.decode(Some(alias.as_bytes()), Some(v.as_bytes())) {
            Ok(_) => events.push((alias.clone(), v)),
            Err(e) => problems.push(format!("{alias}: {e}")),
        }
    }
    if delete_missing {
        for (alias, (rev, now)) in &current_all {
            if !now.is_empty() && !file.aliases.contains_key(*alias) {
                let v = json!({"schema": 1, "alias": alias, "revision": rev + 1, "state": "absent"}).to_string();
                events.push((alias.to_string(), v));
            }
        }
    }
    if !problems.is_empty() {
        return Err(format!("the file has invalid entries (nothing was published):\n  {}", problems.join("\n  ")));
    }
    Ok(Publication { events, unchanged })
}

pub async fn send(cfg: &Config, events: &[(String, String)]) -> Result<(), String> {
    let base = client_config(cfg).map_err(|e| e.to_string())?;
    let p: FutureProducer =
        base.clone().set("enable.idempotence", "true").create().map_err(|e| format!("kafka producer: {e}"))?;
    let sends = events.iter().map(|(k, v)| {
        let p = p.clone();
        async move {
            p.send(FutureRecord::to(&cfg.kafka.topic).key(k).payload(v), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| format!("{k}: {e}"))
        }
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    Ok(())
}
