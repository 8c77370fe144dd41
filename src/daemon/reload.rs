//! SIGHUP: what a running daemon re-reads (credentials, log level) and what only a restart applies.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::Arc;

use tokio::sync::Notify;

use super::targets::TargetCredentials;
use crate::config::Config;
use crate::credentials::refresh::{self, Refresher};
use crate::provider::SharedCredentials;
use crate::telemetry::logging;

/// SIGHUP: re-reads the config file for what can change without a restart, i.e. every target's credentials
/// (`env:` / `file:`) and `log.level`. Everything else (Kafka settings, prefixes, targets added or removed,
/// endpoints, rate limits, …) is compared with the running configuration and reported as needing a restart.
pub struct Reloader {
    path: PathBuf,
    /// The configuration the daemon started with.
    running: Config,
    /// Targets on static keys: SIGHUP re-reads them here.
    credentials: BTreeMap<String, SharedCredentials>,
    /// Targets on a default chain or a role: their refreshers, which SIGHUP asks to resolve at once.
    refreshers: BTreeMap<String, Refresher>,
    /// Notified when new keys were installed (SIGHUP or a refresh): a target paused for its credentials is
    /// probed at once.
    pub credentials_changed: Arc<Notify>,
}

impl Reloader {
    /// Starts a refresher for every target whose credentials are temporary (must run inside the runtime).
    pub fn new(path: PathBuf, running: Config, targets: BTreeMap<String, TargetCredentials>) -> Self {
        let changed = Arc::new(Notify::new());
        let (mut credentials, mut refreshers) = (BTreeMap::new(), BTreeMap::new());
        for (name, t) in targets {
            if t.source.refreshes() {
                let r = refresh::spawn(name.clone(), t.source, t.shared, t.first, changed.clone());
                refreshers.insert(name, r);
            } else {
                credentials.insert(name, t.shared);
            }
        }
        Reloader { path, running, credentials, refreshers, credentials_changed: changed }
    }

    /// Applies what it can and logs what it did (never a secret); returns a one-line summary. A part that
    /// fails keeps its old value and logs an error naming the config key.
    pub fn reload(&self) -> String {
        tracing::info!(config = %self.path.display(), "SIGHUP: reloading credentials and log level");
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(config = %self.path.display(), error = %e, "reload failed: the config file is invalid; keeping the running credentials and log level");
                return "reload failed: invalid config (see log)".into();
            }
        };
        let mut failed = 0usize;
        match logging::set_level(&new.log.level) {
            Ok(logging::LevelChange::Changed { from, to }) => {
                tracing::info!(key = "log.level", %from, %to, "reload: log level changed")
            }
            Ok(logging::LevelChange::OverriddenByEnv) => {
                tracing::warn!(key = "log.level", "reload: RUST_LOG is set and wins over log.level; level unchanged")
            }
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                tracing::error!(key = "log.level", error = %e, "reload: cannot apply the log level; keeping the old one");
            }
        }
        let (mut reloaded, mut changed) = (0usize, 0usize);
        for (name, handle) in &self.credentials {
            let key = format!("targets.{name}.credentials");
            let Some(t) = new.targets.get(name) else {
                tracing::warn!(target_name = %name, "reload: target removed from the config; it keeps running until a restart");
                continue;
            };
            if t.credentials == "default" {
                tracing::warn!(target_name = %name, %key, "reload: switching a target to the default chain needs a restart; keeping its static keys");
                continue;
            }
            match crate::secret::SecretRef::parse(&t.credentials).and_then(|r| r.load_credentials()) {
                Ok(c) => {
                    let did_change = handle.replace(c);
                    reloaded += 1;
                    changed += usize::from(did_change);
                    // The reference (env:NAME / file:PATH) is not a secret; the values never appear.
                    tracing::info!(target_name = %name, %key, source = %t.credentials, changed = did_change, "reload: credentials reloaded");
                }
                Err(e) => {
                    failed += 1;
                    tracing::error!(target_name = %name, %key, error = %e, "reload: cannot load credentials; keeping the old ones");
                }
            }
        }
        for (name, r) in &self.refreshers {
            // Temporary credentials: resolve again now (a fixed trust policy or a rotated base key).
            tracing::info!(target_name = %name, "reload: refreshing temporary credentials now");
            r.refresh_now();
        }
        let restart = needs_restart(&self.running, &new);
        if !restart.is_empty() {
            tracing::warn!(keys = %restart.join(", "), "reload: these settings changed but only apply after a restart");
        }
        let mut summary = format!("reloaded credentials of {reloaded} targets ({changed} changed)");
        if !self.refreshers.is_empty() {
            summary.push_str(&format!(", refreshing {} with temporary credentials", self.refreshers.len()));
        }
        if failed > 0 {
            summary.push_str(&format!(", {failed} failed"));
        }
        if !restart.is_empty() {
            summary.push_str(&format!(", restart pending for {}", restart.join(", ")));
        }
        tracing::info!(reloaded, changed, failed, "reload done");
        summary
    }
}

/// Config keys (sections, or target tables) that differ between the running and the re-read config and can
/// only take effect through a restart. Credentials and `log.level` are excluded: SIGHUP applies them.
pub fn needs_restart(running: &Config, new: &Config) -> Vec<String> {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        // Debug shows every field (secret values are never in Config, only env:/file: references).
        format!("{a:?}") != format!("{b:?}")
    }
    let mut out = Vec::new();
    let k = (&running.kafka, &new.kafka);
    for (name, d) in [
        ("kafka.brokers", differs(&k.0.brokers, &k.1.brokers)),
        ("kafka.topic", differs(&k.0.topic, &k.1.topic)),
        ("kafka.group_id", differs(&k.0.group_id, &k.1.group_id)),
        ("kafka.properties", differs(&k.0.properties, &k.1.properties)),
        ("kafka (other settings)", {
            let strip = |c: &crate::config::KafkaConfig| {
                let mut c = c.clone();
                c.brokers.clear();
                c.topic.clear();
                c.group_id.clear();
                c.properties.clear();
                c
            };
            differs(&strip(k.0), &strip(k.1))
        }),
        ("ownership", differs(&running.ownership, &new.ownership)),
        ("metrics", differs(&running.metrics, &new.metrics)),
        ("drift", differs(&running.drift, &new.drift)),
        ("reconcile", differs(&running.reconcile, &new.reconcile)),
        ("log.format", differs(&running.log.format, &new.log.format)),
    ] {
        if d {
            out.push(name.to_string());
        }
    }
    for (name, t) in &running.targets {
        match new.targets.get(name) {
            None => out.push(format!("targets.{name} (removed)")),
            Some(n) => {
                let (mut a, mut b) = (t.clone(), n.clone());
                a.credentials.clear();
                b.credentials.clear();
                if differs(&a, &b) {
                    out.push(format!("targets.{name}"));
                }
            }
        }
    }
    for name in new.targets.keys().filter(|n| !running.targets.contains_key(*n)) {
        out.push(format!("targets.{name} (added)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(level: &str, brokers: &str, target_extra: &str, more_targets: &str) -> Config {
        let toml = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"t\"\n[ownership]\nmanaged_prefixes = [\"alias/app/\"]\n\
             [log]\nlevel = \"{level}\"\n[targets.a]\nprovider = \"aws\"\nregion = \"us-east-1\"\n\
             credentials = \"env:A\"\n{target_extra}\n{more_targets}"
        );
        Config::from_sources(&toml, Vec::new()).unwrap()
    }

    #[test]
    fn reloadable_changes_need_no_restart_and_the_rest_is_named() {
        let running = cfg("info", "k:9092", "", "");
        // Credentials and log.level are what SIGHUP applies.
        let same = cfg("debug", "k:9092", "", "").targets["a"].clone();
        let mut new = cfg("debug", "k:9092", "", "");
        new.targets.insert("a".into(), crate::config::TargetConfig { credentials: "file:other".into(), ..same });
        assert!(needs_restart(&running, &new).is_empty(), "{:?}", needs_restart(&running, &new));

        let new = cfg(
            "info",
            "k2:9092",
            "rate_limit_per_second = 2",
            "[targets.b]\nprovider = \"aws\"\nregion = \"x\"\ncredentials = \"env:B\"",
        );
        assert_eq!(needs_restart(&running, &new), ["kafka.brokers", "targets.a", "targets.b (added)"]);
        assert_eq!(needs_restart(&new, &running), ["kafka.brokers", "targets.a", "targets.b (removed)"]);
    }
}
