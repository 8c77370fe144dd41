//! `aliassync import T1 T2 … | --all`: the managed aliases of several targets, merged into one
//! desired-state file (alias → target → key), so that publishing it keeps every one of those targets.

use std::collections::BTreeSet;

use futures::StreamExt;

use super::statefile::StateFile;
use crate::config::Config;
use crate::daemon::build_targets;
use crate::event::is_managed;

/// Listings run side by side up to this many targets (as the daemon's first listings do).
const CONCURRENT_LISTINGS: usize = 16;

/// The targets to read: every configured one with `all`, else `names` (deduplicated, each checked).
pub fn chosen(cfg: &Config, names: &[String], all: bool) -> Result<BTreeSet<String>, String> {
    if all {
        return Ok(cfg.targets.keys().cloned().collect());
    }
    let unknown: Vec<&str> = names.iter().filter(|n| !cfg.targets.contains_key(*n)).map(String::as_str).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown target(s) {}; configured: {}",
            unknown.join(", "),
            cfg.targets.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if names.is_empty() {
        return Err("name at least one target, or --all".into());
    }
    Ok(names.iter().cloned().collect())
}

/// The managed aliases of the chosen targets, as one desired-state file (YAML, or JSON). Fails whole, naming
/// every target that could not be listed: a partial file, published, would remove that target's aliases.
pub async fn import(cfg: &Config, names: &[String], all: bool, json_out: bool) -> Result<String, String> {
    let names = chosen(cfg, names, all)?;
    let specs = build_targets(cfg).await.map_err(|e| e.to_string())?;
    let prefixes = &cfg.ownership.managed_prefixes;
    let listings: Vec<_> = futures::stream::iter(specs.iter().filter(|s| names.contains(&s.name)))
        .map(|s| async move { (s.name.clone(), s.provider.list_aliases(prefixes).await) })
        .buffered(CONCURRENT_LISTINGS)
        .collect()
        .await;
    let mut merged = Vec::new();
    let mut errors = Vec::new();
    for (name, listing) in listings {
        match listing {
            Ok(l) => {
                let managed = l.into_iter().filter(|a| is_managed(prefixes, &a.name));
                merged.push((name, managed.filter_map(|a| Some((a.name, a.key_id?))).collect()));
            }
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(format!("could not list {} target(s):\n  {}", errors.len(), errors.join("\n  ")));
    }
    let f = merge(merged);
    Ok(if json_out { f.to_json() } else { f.to_yaml() })
}

/// Per target (name, [(alias, key)]) → alias → target → key.
pub fn merge(listings: Vec<(String, Vec<(String, String)>)>) -> StateFile {
    let mut f = StateFile::default();
    for (target, aliases) in listings {
        for (alias, key) in aliases {
            f.aliases.entry(alias).or_default().insert(target.clone(), key);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, k)| (a.to_string(), k.to_string())).collect()
    }

    #[test]
    fn merge_joins_targets_per_alias() {
        let f = merge(vec![
            ("t1".into(), pairs(&[("a", "k1"), ("b", "k2")])),
            ("t2".into(), pairs(&[("a", "k3")])),
            ("t3".into(), Vec::new()),
        ]);
        let want = StateFile::parse("aliases:\n  a: {t1: k1, t2: k3}\n  b: {t1: k2}\n").unwrap();
        assert_eq!(f, want);
    }

    #[test]
    fn chosen_checks_names_and_all_takes_every_target() {
        let cfg = Config::from_sources(
            "[kafka]\nbrokers = \"x:9092\"\ntopic = \"t\"\n[ownership]\nmanaged_prefixes = [\"alias/app/\"]\n\
             [targets.b]\nprovider = \"aws\"\nregion = \"us-east-1\"\ncredentials = \"env:X\"\n\
             [targets.a]\nprovider = \"aws\"\nregion = \"eu-west-1\"\ncredentials = \"env:X\"\n",
            [],
        )
        .unwrap();
        let ab = BTreeSet::from(["a".to_string(), "b".to_string()]);
        assert_eq!(chosen(&cfg, &[], true).unwrap(), ab);
        assert_eq!(chosen(&cfg, &["b".into(), "a".into(), "b".into()], false).unwrap(), ab);
        let e = chosen(&cfg, &["a".into(), "zz".into()], false).unwrap_err();
        assert!(e.contains("zz") && e.contains("configured: a, b"), "{e}");
        assert!(chosen(&cfg, &[], false).is_err());
    }
}
