//! The operator commands beside the daemon: plan (diff without changing anything), import (adopt
//! what targets have), publish (a desired-state file → events, after its plan is checked), wait (until a
//! revision is applied in its targets, from the status topic).

pub mod import;
pub mod publish;
pub mod publish_plan;
pub mod statefile;
pub mod wait;

use serde_json::json;

use crate::config::Config;
use crate::daemon::build_targets;
use crate::drift::{self, Kind};
use crate::event::{is_managed, Decoder};
use crate::source::{client_config, snapshot};

pub use import::import;
pub use publish::{prepare_publish, publish, send, Publication};
pub use wait::wait;

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
    let specs = build_targets(cfg).await.map_err(|e| e.to_string())?;
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
