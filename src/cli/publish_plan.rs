//! What a `publish` would change, computed before anything is sent: the events (changed aliases only, at
//! the next revision) and, per target, the creates, re-points and removals they cause. Pure: the topic's
//! state comes in as plain maps, so the rules are unit-tested without Kafka.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::statefile::StateFile;

/// Target name → key id.
pub type Targets = BTreeMap<String, String>;

/// An alias as the topic holds it: its revision and key per target (empty: absent everywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnTopic {
    pub revision: u64,
    pub targets: Targets,
}

/// The desired state read from the topic, by alias.
pub type Topic = BTreeMap<String, OnTopic>;

/// One event to publish: the alias at its next revision, with its new targets (None: `state: absent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub alias: String,
    pub revision: u64,
    pub targets: Option<Targets>,
}

impl Update {
    /// The event's value (schema 1).
    pub fn event(&self) -> String {
        match &self.targets {
            Some(t) => json!({"schema": 1, "alias": self.alias, "revision": self.revision, "targets": t}),
            None => json!({"schema": 1, "alias": self.alias, "revision": self.revision, "state": "absent"}),
        }
        .to_string()
    }
}

/// The file's aliases that differ from the topic, and with `delete_missing` an absent event for every alias
/// the topic has somewhere but the file lacks; plus how many of the file's aliases are unchanged.
pub fn updates(topic: &Topic, file: &StateFile, delete_missing: bool) -> (Vec<Update>, usize) {
    let mut out = Vec::new();
    let mut unchanged = 0;
    for (alias, targets) in &file.aliases {
        match topic.get(alias) {
            Some(now) if &now.targets == targets => unchanged += 1,
            now => out.push(Update {
                alias: alias.clone(),
                revision: now.map_or(0, |n| n.revision) + 1,
                targets: Some(targets.clone()),
            }),
        }
    }
    if delete_missing {
        let gone = topic.iter().filter(|(a, now)| !now.targets.is_empty() && !file.aliases.contains_key(*a));
        out.extend(gone.map(|(a, now)| Update { alias: a.clone(), revision: now.revision + 1, targets: None }));
    }
    (out, unchanged)
}

/// How one alias changes in one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It gets a key where it has none.
    Create,
    /// Its key changes.
    Repoint,
    /// It loses its key.
    Removal,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Repoint => "repoint",
            Action::Removal => "removal",
        }
    }

    /// Singular and plural, for the text plan.
    fn nouns(self) -> (&'static str, &'static str) {
        match self {
            Action::Create => ("create", "creates"),
            Action::Repoint => ("re-point", "re-points"),
            Action::Removal => ("removal", "removals"),
        }
    }

    fn of(from: Option<&String>, to: Option<&String>) -> Option<Action> {
        match (from, to) {
            (None, Some(_)) => Some(Action::Create),
            (Some(a), Some(b)) if a != b => Some(Action::Repoint),
            (Some(_), None) => Some(Action::Removal),
            _ => None,
        }
    }
}

const ACTIONS: [Action; 3] = [Action::Create, Action::Repoint, Action::Removal];

/// One alias's change in one target: the key before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub alias: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The changes in one target, by action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPlan {
    pub creates: Vec<Change>,
    pub repoints: Vec<Change>,
    pub removals: Vec<Change>,
}

impl TargetPlan {
    pub fn of(&self, action: Action) -> &[Change] {
        match action {
            Action::Create => &self.creates,
            Action::Repoint => &self.repoints,
            Action::Removal => &self.removals,
        }
    }

    fn push(&mut self, action: Action, change: Change) {
        match action {
            Action::Create => self.creates.push(change),
            Action::Repoint => self.repoints.push(change),
            Action::Removal => self.removals.push(change),
        }
    }
}

/// Everything a publish would change, per target (only targets with a change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub targets: BTreeMap<String, TargetPlan>,
    /// Events to send.
    pub events: usize,
    /// The file's aliases the topic already has as they are.
    pub unchanged: usize,
}

/// Aliases listed per action and target in the text plan; the rest are counted ("… and N more").
pub const TEXT_CAP: usize = 20;
/// Aliases named per target in a refusal.
const REFUSAL_CAP: usize = 3;

impl Plan {
    pub fn new(topic: &Topic, updates: &[Update], unchanged: usize) -> Plan {
        let mut plan = Plan { events: updates.len(), unchanged, ..Plan::default() };
        let none = Targets::new();
        for u in updates {
            let from = topic.get(&u.alias).map_or(&none, |t| &t.targets);
            let to = u.targets.as_ref().unwrap_or(&none);
            let names: BTreeSet<&String> = from.keys().chain(to.keys()).collect();
            for t in names {
                let (f, n) = (from.get(t), to.get(t));
                if let Some(action) = Action::of(f, n) {
                    let change = Change { alias: u.alias.clone(), from: f.cloned(), to: n.cloned() };
                    plan.targets.entry(t.clone()).or_default().push(action, change);
                }
            }
        }
        plan
    }

    pub fn count(&self, action: Action) -> usize {
        self.targets.values().map(|t| t.of(action).len()).sum()
    }

    /// Whether the publish would take an alias's key away in some target (refused without --allow-removals).
    pub fn removes(&self) -> bool {
        self.count(Action::Removal) > 0
    }

    /// Why the publish is refused: the targets that would lose aliases, the first of them, and what to do.
    pub fn refusal(&self) -> String {
        let per_target: Vec<String> = self
            .targets
            .iter()
            .filter(|(_, t)| !t.removals.is_empty())
            .map(|(name, t)| {
                let first: Vec<&str> = t.removals.iter().take(REFUSAL_CAP).map(|c| c.alias.as_str()).collect();
                let more = t.removals.len() - first.len();
                let more = if more > 0 { format!(", … and {more} more") } else { String::new() };
                format!("  {name}: {} ({}{more})", t.removals.len(), first.join(", "))
            })
            .collect();
        format!(
            "refused: the file would remove aliases from {} target(s) ({} removals); nothing was published:\n{}\n\
             If the removals are intended, run again with --allow-removals. If the file was meant to list \
             every target, build it with `aliassync import T1 T2 …` or `aliassync import --all`.",
            per_target.len(),
            self.count(Action::Removal),
            per_target.join("\n")
        )
    }

    /// The plan for people, in the style of `aliassync plan`.
    pub fn to_text(&self) -> String {
        let mut s = format!("publish plan: {} events, {} aliases unchanged\n", self.events, self.unchanged);
        if self.targets.is_empty() {
            s.push_str("nothing to change in any target\n");
        }
        for (name, t) in &self.targets {
            let counts: Vec<String> = ACTIONS.iter().map(|a| counted(t.of(*a).len(), a.nouns())).collect();
            s.push_str(&format!("\n{name}: {}\n", counts.join(", ")));
            for a in ACTIONS {
                s.push_str(&lines(t.of(a), a));
            }
        }
        s
    }

    /// The plan for machines: totals, and per target the counts and every change.
    pub fn to_json(&self) -> Value {
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|(name, t)| {
                let changes: Vec<Value> = ACTIONS
                    .iter()
                    .flat_map(|a| {
                        t.of(*a)
                            .iter()
                            .map(|c| json!({"alias": c.alias, "action": a.as_str(), "from": c.from, "to": c.to}))
                    })
                    .collect();
                json!({"target": name, "creates": t.creates.len(), "repoints": t.repoints.len(),
                       "removals": t.removals.len(), "changes": changes})
            })
            .collect();
        json!({"events": self.events, "unchanged": self.unchanged, "creates": self.count(Action::Create),
               "repoints": self.count(Action::Repoint), "removals": self.count(Action::Removal), "targets": targets})
    }
}

/// "1 create", "2 re-points".
fn counted(n: usize, (one, many): (&str, &str)) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line per change (`+` create, `~` re-point, `-` removal) up to [`TEXT_CAP`], then how many more.
fn lines(changes: &[Change], action: Action) -> String {
    let mut s = String::new();
    for c in changes.iter().take(TEXT_CAP) {
        let (from, to) = (c.from.as_deref().unwrap_or("-"), c.to.as_deref().unwrap_or("-"));
        s.push_str(&match action {
            Action::Create => format!("  + {} -> {to}\n", c.alias),
            Action::Repoint => format!("  ~ {}: {from} -> {to}\n", c.alias),
            Action::Removal => format!("  - {} (was {from})\n", c.alias),
        });
    }
    if changes.len() > TEXT_CAP {
        s.push_str(&format!("  … and {} more {}\n", changes.len() - TEXT_CAP, action.nouns().1));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (target, key) pairs.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn targets(pairs: Pairs) -> Targets {
        pairs.iter().map(|(t, k)| (t.to_string(), k.to_string())).collect()
    }

    fn topic(entries: &[(&str, u64, Pairs)]) -> Topic {
        entries.iter().map(|(a, r, t)| (a.to_string(), OnTopic { revision: *r, targets: targets(t) })).collect()
    }

    fn file(entries: &[(&str, Pairs)]) -> StateFile {
        StateFile { aliases: entries.iter().map(|(a, t)| (a.to_string(), targets(t))).collect() }
    }

    fn aliases(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|c| c.alias.as_str()).collect()
    }

    #[test]
    fn only_changed_aliases_become_events_at_the_next_revision() {
        let t = topic(&[("a", 4, &[("t1", "k1")]), ("b", 2, &[("t1", "k1")]), ("gone", 7, &[])]);
        let f = file(&[("a", &[("t1", "k1")]), ("b", &[("t1", "k2")]), ("new", &[("t1", "k1")]), ("gone", &[])]);
        let (u, unchanged) = updates(&t, &f, false);
        assert_eq!(unchanged, 2, "a as it is; gone absent on the topic and empty in the file");
        assert_eq!(u.iter().map(|u| (u.alias.as_str(), u.revision)).collect::<Vec<_>>(), [("b", 3), ("new", 1)]);
    }

    #[test]
    fn delete_missing_marks_aliases_absent_unless_already_absent() {
        let t = topic(&[("keep", 1, &[("t1", "k1")]), ("drop", 5, &[("t1", "k1")]), ("tomb", 3, &[])]);
        let (u, _) = updates(&t, &file(&[("keep", &[("t1", "k1")])]), true);
        assert_eq!(u, [Update { alias: "drop".into(), revision: 6, targets: None }]);
        assert_eq!(
            serde_json::from_str::<Value>(&u[0].event()).unwrap(),
            json!({"schema": 1, "alias": "drop", "revision": 6, "state": "absent"})
        );
        assert!(updates(&t, &file(&[("keep", &[("t1", "k1")])]), false).0.is_empty());
    }

    #[test]
    fn plan_counts_creates_repoints_and_removals_per_target() {
        let t = topic(&[
            ("repointed", 1, &[("t1", "k1"), ("t2", "k2")]),
            ("narrowed", 1, &[("t1", "k1"), ("t2", "k2")]),
            ("widened", 1, &[("t1", "k1")]),
            ("deleted", 1, &[("t1", "k1"), ("t2", "k2")]),
        ]);
        let f = file(&[
            ("repointed", &[("t1", "k9"), ("t2", "k2")]),
            ("narrowed", &[("t1", "k1")]),
            ("widened", &[("t1", "k1"), ("t2", "k2")]),
            ("fresh", &[("t2", "k2")]),
        ]);
        let (u, unchanged) = updates(&t, &f, true);
        let plan = Plan::new(&t, &u, unchanged);
        assert_eq!((plan.events, plan.unchanged), (5, 0));
        let (t1, t2) = (&plan.targets["t1"], &plan.targets["t2"]);
        assert!(t1.creates.is_empty());
        assert_eq!(aliases(&t1.repoints), ["repointed"]);
        assert_eq!(
            t1.repoints[0],
            Change { alias: "repointed".into(), from: Some("k1".into()), to: Some("k9".into()) }
        );
        assert_eq!(aliases(&t1.removals), ["deleted"]);
        assert_eq!(aliases(&t2.creates), ["fresh", "widened"]);
        assert!(t2.repoints.is_empty());
        assert_eq!(aliases(&t2.removals), ["narrowed", "deleted"]);
        assert_eq!((plan.count(Action::Create), plan.count(Action::Repoint), plan.count(Action::Removal)), (2, 1, 3));
        assert!(plan.removes());
        let v = plan.to_json();
        assert_eq!((v["creates"].as_u64(), v["removals"].as_u64()), (Some(2), Some(3)));
        assert_eq!(v["targets"][1]["target"], "t2");
        assert_eq!(
            v["targets"][1]["changes"][2],
            json!({"alias": "narrowed", "action": "removal", "from": "k2", "to": null})
        );
    }

    #[test]
    fn a_file_of_one_target_removes_the_others() {
        // The motivating bug: `import t1` then `publish` of that file takes every other target's key away.
        let t = topic(&[("a", 1, &[("t1", "k1"), ("t2", "k2"), ("t3", "k3")])]);
        let (u, unchanged) = updates(&t, &file(&[("a", &[("t1", "k1")])]), false);
        let plan = Plan::new(&t, &u, unchanged);
        assert_eq!(plan.targets.keys().collect::<Vec<_>>(), ["t2", "t3"]);
        assert!(plan.removes());
        let msg = plan.refusal();
        assert!(msg.contains("remove aliases from 2 target(s) (2 removals)"), "{msg}");
        assert!(msg.contains("t2: 1 (a)") && msg.contains("t3: 1 (a)") && msg.contains("--allow-removals"), "{msg}");
    }

    #[test]
    fn nothing_to_change_is_no_removal() {
        let t = topic(&[("a", 1, &[("t1", "k1")])]);
        let (u, unchanged) = updates(&t, &file(&[("a", &[("t1", "k1")])]), true);
        let plan = Plan::new(&t, &u, unchanged);
        assert!(!plan.removes() && plan.targets.is_empty());
        assert!(plan.to_text().contains("nothing to change"), "{}", plan.to_text());
    }

    #[test]
    fn text_lists_aliases_up_to_the_cap_and_counts_the_rest() {
        let n = TEXT_CAP + 5;
        let names: Vec<String> = (0..n).map(|i| format!("a{i:02}")).collect();
        let t: Topic =
            names.iter().map(|a| (a.clone(), OnTopic { revision: 1, targets: targets(&[("t1", "k1")]) })).collect();
        let (u, unchanged) = updates(&t, &StateFile::default(), true);
        let plan = Plan::new(&t, &u, unchanged);
        let text = plan.to_text();
        assert!(text.contains(&format!("t1: 0 creates, 0 re-points, {n} removals")), "{text}");
        assert_eq!(text.matches("  - a").count(), TEXT_CAP, "{text}");
        assert!(text.contains("  - a00 (was k1)") && text.contains("… and 5 more removals"), "{text}");
        let msg = plan.refusal();
        assert!(msg.contains(&format!("t1: {n} (a00, a01, a02, … and {} more)", n - 3)), "{msg}");
    }

    #[test]
    fn text_singular_and_symbols() {
        let t = topic(&[("b", 1, &[("t1", "k1")])]);
        let (u, unchanged) = updates(&t, &file(&[("a", &[("t1", "k1")]), ("b", &[("t1", "k2")])]), false);
        let text = Plan::new(&t, &u, unchanged).to_text();
        assert!(text.contains("t1: 1 create, 1 re-point, 0 removals"), "{text}");
        assert!(text.contains("  + a -> k1\n") && text.contains("  ~ b: k1 -> k2\n"), "{text}");
    }
}
