//! `aliassync publish FILE`: a desired-state file → events. The plan (per target: creates, re-points,
//! removals) is printed before anything is sent, and a file that would take aliases away from a target is
//! refused unless the operator allows removals: a file that lists fewer targets than the topic (say, the
//! output of `import T`) would otherwise silently delete the aliases everywhere else. With `--wait`, it then
//! waits on the status topic for what it published (see `wait`).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use super::publish_plan::{self, OnTopic, Plan, Topic, Update};
use super::read_desired;
use super::statefile::StateFile;
use super::wait::{self, End, Goal};
use crate::config::Config;
use crate::desired::Store;
use crate::event::Decoder;
use crate::source::client_config;

/// The command line's choices.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Print the plan (and the events), send nothing.
    pub dry_run: bool,
    /// Mark aliases the topic has but the file lacks as absent.
    pub delete_missing: bool,
    /// Publish even when aliases lose their key in a target.
    pub allow_removals: bool,
    /// The plan and the events as one JSON document on stdout.
    pub json: bool,
    /// Once published, wait this long for every published alias to be applied in its targets.
    pub wait: Option<Duration>,
}

/// How a publish ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published,
    DryRun,
    /// The file removes aliases and removals were not allowed: nothing was sent.
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Published => "publish",
            Outcome::DryRun => "dry_run",
            Outcome::Refused => "refused",
        }
    }
}

/// How a publish ended, and with `--wait` (once something was sent) how the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub outcome: Outcome,
    pub waited: Option<End>,
}

/// What `publish` would send (topic key, value), and what that changes.
#[derive(Debug)]
pub struct Publication {
    pub events: Vec<(String, String)>,
    pub plan: Plan,
}

/// Reads the topic, prints the plan, and sends the events unless it is a dry run or refused; with
/// `opts.wait`, then waits for them to be applied.
pub async fn publish(cfg: &Config, file: &StateFile, opts: Options) -> Result<Finished, String> {
    let p = prepare_publish(cfg, file, opts.delete_missing).await?;
    let outcome = match (p.plan.removes() && !opts.allow_removals, opts.dry_run) {
        (true, _) => Outcome::Refused,
        (false, true) => Outcome::DryRun,
        (false, false) => Outcome::Published,
    };
    report(cfg, &p, opts, outcome);
    let mut waited = None;
    match outcome {
        Outcome::Refused => eprintln!("{}", p.plan.refusal()),
        Outcome::DryRun => {
            eprintln!("dry run: {} events would be published, {} aliases unchanged", p.events.len(), p.plan.unchanged)
        }
        Outcome::Published => {
            send(cfg, &p.events).await?;
            eprintln!(
                "published {} events to {}, {} aliases unchanged",
                p.events.len(),
                cfg.kafka.topic,
                p.plan.unchanged
            );
            if let Some(timeout) = opts.wait {
                waited = Some(if p.events.is_empty() {
                    eprintln!("nothing published: nothing to wait for");
                    End::Applied
                } else {
                    // With --json, stdout keeps the one document: the wait's lines go to stderr.
                    wait::wait_for(cfg, goals(cfg, &p.events)?, timeout, opts.json).await?
                });
            }
        }
    }
    Ok(Finished { outcome, waited })
}

/// What `--wait` waits for: every published alias at the revision its event carries, with its key in each
/// configured target (None where the event leaves it absent). Read back from the events as built (schema 1),
/// so the names and key spellings are the ones the targets' owners record.
fn goals(cfg: &Config, events: &[(String, String)]) -> Result<Vec<Goal>, String> {
    events
        .iter()
        .map(|(alias, v)| {
            let e: Value = serde_json::from_str(v).map_err(|e| format!("{alias}: {e}"))?;
            let revision = e["revision"].as_u64().ok_or_else(|| format!("{alias}: event without a revision"))?;
            // `state: absent` carries no targets: absent everywhere.
            let keys: BTreeMap<&str, &str> = e["targets"]
                .as_object()
                .map(|t| t.iter().filter_map(|(n, k)| Some((n.as_str(), k.as_str()?))).collect())
                .unwrap_or_default();
            let targets =
                cfg.targets.keys().map(|n| (n.clone(), keys.get(n.as_str()).map(|k| k.to_string()))).collect();
            Ok(Goal { alias: alias.clone(), revision, targets })
        })
        .collect()
}

/// The plan, before anything is sent: text on stderr (stdout keeps the events of a dry run, one per line),
/// or with `--json` one document on stdout.
fn report(cfg: &Config, p: &Publication, opts: Options, outcome: Outcome) {
    if opts.json {
        let events: Vec<Value> =
            p.events.iter().map(|(_, v)| serde_json::from_str(v).expect("built as JSON")).collect();
        let v = json!({"topic": cfg.kafka.topic, "decision": outcome.as_str(), "plan": p.plan.to_json(),
                       "events": events});
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return;
    }
    eprint!("{}", p.plan.to_text());
    if opts.dry_run {
        for (_, v) in &p.events {
            println!("{v}");
        }
    }
}

/// Turns a desired-state file into events: only aliases whose targets differ from the topic, each at the
/// next revision; with `delete_missing`, `state: absent` for aliases the file no longer has. Refuses the
/// whole file if any of its entries is invalid.
pub async fn prepare_publish(cfg: &Config, file: &StateFile, delete_missing: bool) -> Result<Publication, String> {
    let (store, _) = read_desired(cfg).await?;
    let topic = topic_state(cfg, &store);
    // The plain copy replaces the store: don't hold both for a large topic.
    drop(store);
    let (updates, unchanged) = publish_plan::updates(&topic, file, delete_missing);
    let events = validated_events(cfg, &updates)?;
    Ok(Publication { events, plan: Plan::new(&topic, &updates, unchanged) })
}

/// The store with target names and key ids spelled out, as the file spells them.
fn topic_state(cfg: &Config, store: &Store) -> Topic {
    let names: Vec<&String> = cfg.targets.keys().collect();
    store
        .iter()
        .map(|(alias, revision, t)| {
            let targets = t.iter().map(|(id, k)| (names[*id as usize].clone(), k.to_string())).collect();
            (alias.to_string(), OnTopic { revision, targets })
        })
        .collect()
}

/// The events as (key, value), each of the file's entries checked by the daemon's own decoder, so that
/// nothing is published that the daemon would dead-letter.
fn validated_events(cfg: &Config, updates: &[Update]) -> Result<Vec<(String, String)>, String> {
    let decoder = Decoder::from_config(cfg);
    let mut problems = Vec::new();
    let mut events = Vec::with_capacity(updates.len());
    for u in updates {
        let v = u.event();
        // Absent events name aliases the topic already holds: only the file's entries need checking.
        if u.targets.is_some() {
            if let Err(e) = decoder.decode(Some(u.alias.as_bytes()), Some(v.as_bytes())) {
                problems.push(format!("{}: {e}", u.alias));
                continue;
            }
        }
        events.push((u.alias.clone(), v));
    }
    if !problems.is_empty() {
        return Err(format!("the file has invalid entries (nothing was published):\n  {}", problems.join("\n  ")));
    }
    Ok(events)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_goals_are_the_published_revisions_with_every_configured_target() {
        let cfg = Config::from_sources(
            "[kafka]\nbrokers = \"x:9092\"\ntopic = \"t\"\n[ownership]\nmanaged_prefixes = [\"alias/app/\"]\n\
             [targets.use1]\nprovider = \"aws\"\nregion = \"us-east-1\"\ncredentials = \"env:X\"\n\
             [targets.euw1]\nprovider = \"aws\"\nregion = \"eu-west-1\"\ncredentials = \"env:X\"\n",
            [],
        )
        .unwrap();
        let targets = BTreeMap::from([("use1".to_string(), "k1".to_string())]);
        let updates = [
            Update { alias: "alias/app/a".into(), revision: 3, targets: Some(targets) },
            Update { alias: "alias/app/b".into(), revision: 8, targets: None },
        ];
        let events: Vec<(String, String)> = updates.iter().map(|u| (u.alias.clone(), u.event())).collect();
        let g = goals(&cfg, &events).unwrap();
        let t = |pairs: &[(&str, Option<&str>)]| -> BTreeMap<String, Option<String>> {
            pairs.iter().map(|(n, k)| (n.to_string(), k.map(str::to_string))).collect()
        };
        assert_eq!(
            g,
            [
                Goal { alias: "alias/app/a".into(), revision: 3, targets: t(&[("euw1", None), ("use1", Some("k1"))]) },
                Goal { alias: "alias/app/b".into(), revision: 8, targets: t(&[("euw1", None), ("use1", None)]) },
            ]
        );
    }
}
