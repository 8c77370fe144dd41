//! `aliassync wait ALIAS` and `publish --wait` (DESIGN §2.9): read the status topic `<topic>.status` until
//! every awaited target shows the revision applied (exit 0), one shows it failed for good (1), or the timeout
//! passes (3). Needs Kafka and the config only, no cloud credentials: it reads what the targets' owners
//! recorded, never the clouds.
//!
//! The decision is pure ([`Tracker`]: records in, [`Verdict`] out) and unit-tested; [`watch`] feeds it from
//! Kafka. Only the partitions the awaited (alias, target) keys hash to are read
//! ([`status::partition_of`]), from the beginning (the topic is compacted: the last record per key is the
//! current word), then tailed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::read_desired;
use crate::config::Config;
use crate::source::client_config;
use crate::source::status::{self, Record, State};

/// `--timeout` when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One alias to wait for: its revision and what it must be in each target in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub alias: String,
    pub revision: u64,
    /// Target → the key the alias points at there at `revision` (None: absent there). Targets left out
    /// (by `--target`) are not awaited.
    pub targets: BTreeMap<String, Option<String>>,
}

/// Where one awaited target stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Its record shows the goal applied.
    Applied(Record),
    /// Its record shows the revision (or a later one) failed for good.
    Failed(Record),
    /// Not there yet: the last record seen for it, if any.
    Pending(Option<Record>),
}

/// One (alias, target) the verdict is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    pub alias: String,
    pub target: String,
    /// The revision awaited.
    pub revision: u64,
    /// The key awaited (None: absent).
    pub want: Option<String>,
    pub standing: Standing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every awaited target applied it (empty: nothing to wait for).
    Applied(Vec<TargetState>),
    /// These targets failed it (the others may be anything).
    Failed(Vec<TargetState>),
    /// These targets are still pending.
    Pending(Vec<TargetState>),
}

/// How a wait ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Applied,
    Failed,
    TimedOut,
}

/// Why `wait` could not start: nothing to wait for (its own exit code), or any other error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// The alias, or that revision of it, is not on the desired topic, or `--target` names a target that is
    /// not configured.
    Unknown(String),
    Other(String),
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Unknown(m) | WaitError::Other(m) => f.write_str(m),
        }
    }
}

/// The records seen for the awaited keys, and the decision they make.
#[derive(Debug)]
pub struct Tracker {
    goals: Vec<Goal>,
    /// Record key → the goal it belongs to (aliases are unique among the goals) and the target.
    wanted: HashMap<String, (usize, String)>,
    /// The last record read per awaited key (in offset order: what compaction keeps).
    last: HashMap<String, Record>,
}

impl Tracker {
    pub fn new(goals: Vec<Goal>) -> Tracker {
        let mut wanted = HashMap::new();
        for (i, g) in goals.iter().enumerate() {
            for t in g.targets.keys() {
                wanted.insert(status::key(&g.alias, t), (i, t.clone()));
            }
        }
        Tracker { goals, wanted, last: HashMap::new() }
    }

    /// The status-record keys this waits on.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.wanted.keys().map(String::as_str)
    }

    /// A record read from the status topic (key, value); other keys are ignored, a tombstone forgets the
    /// key, a value that does not decode is skipped (a record this version cannot read proves nothing).
    pub fn observe(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else { return };
        if !self.wanted.contains_key(key) {
            return;
        }
        match value {
            None => {
                self.last.remove(key);
            }
            Some(v) => {
                if let Ok(r) = serde_json::from_slice::<Record>(v) {
                    self.last.insert(key.to_string(), r);
                }
            }
        }
    }

    /// The decision on what has been read. Call it only once the partitions were read to their end (before
    /// that, a later record of a key may still overturn an earlier one).
    pub fn verdict(&self) -> Verdict {
        let (mut applied, mut failed, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        for g in &self.goals {
            for (target, want) in &g.targets {
                let last = self.last.get(&status::key(&g.alias, target));
                // A target where the alias is absent is awaited only if it ever recorded the alias: one that
                // never had it has nothing to remove, and its owner records nothing for it.
                if want.is_none() && last.is_none() {
                    continue;
                }
                let standing = standing(g.revision, want.as_deref(), last);
                let s = TargetState {
                    alias: g.alias.clone(),
                    target: target.clone(),
                    revision: g.revision,
                    want: want.clone(),
                    standing,
                };
                match s.standing {
                    Standing::Applied(_) => applied.push(s),
                    Standing::Failed(_) => failed.push(s),
                    Standing::Pending(_) => pending.push(s),
                }
            }
        }
        if !failed.is_empty() {
            Verdict::Failed(failed)
        } else if !pending.is_empty() {
            Verdict::Pending(pending)
        } else {
            Verdict::Applied(applied)
        }
    }
}

/// One target's standing for `revision` (wanting `want` there), from its last record.
///
/// A record at the revision or later decides. An older record decides only when it shows exactly the awaited
/// state, applied: the owner records a target only when the alias's desired value *there* changes, so a
/// target the revision left unchanged (a re-point in another region, an alias removed from it long ago) gets
/// no newer record, and its last one is the proof. A rotation's old record (another key) never counts. An
/// older failure with the same key stays pending: a later repair is not recorded, so it is no proof either way.
fn standing(revision: u64, want: Option<&str>, last: Option<&Record>) -> Standing {
    let Some(r) = last else { return Standing::Pending(None) };
    match r.state {
        State::Failed if r.revision >= revision => Standing::Failed(r.clone()),
        State::Applied if r.revision >= revision || r.key_id.as_deref() == want => Standing::Applied(r.clone()),
        _ => Standing::Pending(Some(r.clone())),
    }
}

/// How the watch on the status topic ended.
#[derive(Debug)]
pub enum Watched {
    Decided(Verdict),
    /// The deadline passed: who is pending, and why nothing more could be read (the topic missing, a
    /// broker error), if that is the case.
    TimedOut {
        pending: Vec<TargetState>,
        note: Option<String>,
    },
}

/// Reads the status topic's partitions of the awaited keys from the beginning, then tails them, until the
/// verdict is not pending or `deadline` passes. A status topic that does not exist (yet) means nothing was
/// applied yet: its metadata is asked again each second. Blocking: call from a blocking context.
pub fn watch(base: &ClientConfig, topic: &str, mut tracker: Tracker, deadline: Instant) -> Result<Watched, String> {
    let c: BaseConsumer = base
        .clone()
        .set("group.id", "aliassync-cli")
        .set("enable.auto.commit", "false")
        // Asking for the topic's metadata must not create it (with the daemon's settings) as a side effect.
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| format!("kafka consumer: {e}"))?;
    let timed_out = |t: &Tracker, note: Option<String>| {
        let pending = match t.verdict() {
            Verdict::Pending(p) => p,
            _ => Vec::new(),
        };
        Ok(Watched::TimedOut { pending, note })
    };
    let missing = format!("the status topic {topic} does not exist yet: no target has recorded anything");
    let (mut ends, tpl) = loop {
        let ask = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        let note = match start_reading(&c, topic, &tracker, ask) {
            Ok(Some(start)) => break start,
            // No records at all: decided already if nothing is awaited (absent everywhere, never recorded).
            Ok(None) => match tracker.verdict() {
                Verdict::Pending(_) => missing.clone(),
                v => return Ok(Watched::Decided(v)),
            },
            Err(Fatal(e)) => return Err(e),
            Err(Transient(e)) => e,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return timed_out(&tracker, Some(note));
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    };
    c.assign(&tpl).map_err(|e| format!("reading {topic}: {e}"))?;
    let mut note = None;
    loop {
        // Decide only once every partition was read to where it ended at the start: before that, a later
        // record of a key may overturn the one just read.
        if ends.is_empty() {
            match tracker.verdict() {
                Verdict::Pending(_) => {}
                v => return Ok(Watched::Decided(v)),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if !ends.is_empty() {
                note = Some(format!("{topic} was not read to its end before the timeout"));
            }
            return timed_out(&tracker, note);
        }
        match c.poll(left.min(Duration::from_millis(200))) {
            Some(Ok(m)) => tracker.observe(m.key(), m.payload()),
            // librdkafka retries on its own; the last error explains a timeout.
            Some(Err(e)) => note = Some(format!("reading {topic}: {e}")),
            None => {}
        }
        if !ends.is_empty() {
            // As in snapshot.rs: the position, not the last record's offset, tells the end was reached.
            let positions = c.position().map_err(|e| format!("position in {topic}: {e}"))?;
            ends.retain(|&p, end| {
                !positions
                    .find_partition(topic, p)
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(pos) if pos >= *end))
            });
        }
    }
}

enum MetadataError {
    /// Not worth waiting for (e.g. not authorized to read the topic).
    Fatal(String),
    /// May pass (the broker restarting): asked again until the deadline.
    Transient(String),
}
use MetadataError::{Fatal, Transient};

/// The end offset per partition with records, and the partitions to read.
type Start = (HashMap<i32, i64>, TopicPartitionList);

/// Where reading starts: the partitions the awaited keys hash to (all from the beginning) and the end offset of
/// each that holds records; None when the topic does not exist.
fn start_reading(
    c: &BaseConsumer,
    topic: &str,
    tracker: &Tracker,
    timeout: Duration,
) -> Result<Option<Start>, MetadataError> {
    let md = c.fetch_metadata(Some(topic), timeout).map_err(|e| Transient(format!("metadata for {topic}: {e}")))?;
    let Some(t) = md.topics().first() else { return Ok(None) };
    let partitions = match t.error().map(RDKafkaErrorCode::from) {
        None if !t.partitions().is_empty() => t.partitions().len() as i32,
        None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            return Err(Fatal(format!("not authorized to read {topic} (the ACLs must allow Describe and Read on it)")))
        }
        Some(e) => return Err(Transient(format!("metadata for {topic}: {e}"))),
    };
    let wanted: BTreeSet<i32> = tracker.keys().map(|k| status::partition_of(k, partitions)).collect();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &wanted {
        // A topic created a moment ago may have no leader yet: asked again, like a missing topic.
        let (low, high) = c
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| Transient(format!("offsets of {topic} partition {p}: {e}")))?;
        if high > low {
            ends.insert(p, high);
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| Fatal(e.to_string()))?;
    }
    Ok(Some((ends, tpl)))
}

/// `aliassync wait ALIAS`: the goal from the desired topic (the alias's latest revision unless `revision`
/// names one, the targets in `only` or all), then [`wait_for`].
pub async fn wait(
    cfg: &Config,
    alias: &str,
    revision: Option<u64>,
    only: &[String],
    timeout: Duration,
) -> Result<End, WaitError> {
    if let Some(t) = only.iter().find(|t| !cfg.targets.contains_key(*t)) {
        return Err(WaitError::Unknown(format!(
            "unknown target {t:?}; configured: {}",
            cfg.targets.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let (store, _) = read_desired(cfg).await.map_err(WaitError::Other)?;
    let latest = store
        .revision(alias)
        .ok_or_else(|| WaitError::Unknown(format!("{alias} is not on the desired topic {}", cfg.kafka.topic)))?;
    let revision = revision.unwrap_or(latest);
    // The topic holds only the latest revision; one above it was never published (or not yet: a wait is
    // meant to start after its publish).
    if revision > latest {
        return Err(WaitError::Unknown(format!(
            "{alias} is at revision {latest} on {}: revision {revision} has not been published",
            cfg.kafka.topic
        )));
    }
    // The latest desired state stands for every revision up to it (a later revision supersedes R).
    let targets = cfg
        .targets
        .keys()
        .enumerate()
        .filter(|(_, name)| only.is_empty() || only.contains(name))
        .map(|(id, name)| (name.clone(), store.desired(alias, id as u16).map(|k| k.to_string())))
        .collect();
    drop(store);
    let goal = Goal { alias: alias.to_string(), revision, targets };
    wait_for(cfg, vec![goal], timeout, false).await.map_err(WaitError::Other)
}

/// Waits for the goals on the status topic and prints the result: one line per target on stdout (on stderr
/// with `to_stderr`, so that a JSON document on stdout stays alone), a summary on stderr.
pub async fn wait_for(cfg: &Config, goals: Vec<Goal>, timeout: Duration, to_stderr: bool) -> Result<End, String> {
    let topic = cfg.status_topic();
    let aliases = goals.len();
    let base = client_config(cfg).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let t = topic.clone();
    let watched = tokio::task::spawn_blocking(move || watch(&base, &t, Tracker::new(goals), deadline))
        .await
        .map_err(|e| e.to_string())??;
    let (end, lines, summary) = describe(&watched, aliases, timeout);
    for l in lines {
        if to_stderr {
            eprintln!("{l}");
        } else {
            println!("{l}");
        }
    }
    eprintln!("{summary}");
    Ok(end)
}

/// The exit, the lines (one per target) and a summary of how a watch ended.
pub fn describe(w: &Watched, aliases: usize, timeout: Duration) -> (End, Vec<String>, String) {
    let what = if aliases == 1 { "the alias".to_string() } else { format!("{aliases} aliases") };
    match w {
        Watched::Decided(Verdict::Applied(done)) if done.is_empty() => (
            End::Applied,
            Vec::new(),
            format!("nothing to wait for: {what} absent in every target, and never recorded in any"),
        ),
        Watched::Decided(Verdict::Applied(done)) => {
            let n = done.len();
            (End::Applied, done.iter().map(line).collect(), format!("applied: {what} in {n} target(s)"))
        }
        Watched::Decided(Verdict::Failed(failed)) => {
            let n = failed.len();
            (End::Failed, failed.iter().map(line).collect(), format!("failed: {n} target(s) failed {what} for good"))
        }
        // A pending verdict is never returned as decided; treated as the timeout it would become.
        Watched::Decided(Verdict::Pending(pending)) | Watched::TimedOut { pending, .. } => {
            let mut lines: Vec<String> = pending.iter().map(line).collect();
            if let Watched::TimedOut { note: Some(n), .. } = w {
                lines.push(format!("note: {n}"));
            }
            let n = pending.len();
            (End::TimedOut, lines, format!("timed out after {}: {n} target(s) still pending", show(timeout)))
        }
    }
}

/// One target's line: `TARGET: ALIAS applied at revision R, key K` and the like.
fn line(s: &TargetState) -> String {
    let (t, a) = (&s.target, &s.alias);
    let key = |k: &Option<String>| k.as_deref().map_or("absent".to_string(), |k| format!("key {k}"));
    match &s.standing {
        Standing::Applied(r) => format!("{t}: {a} applied at revision {}, {}", r.revision, key(&r.key_id)),
        Standing::Failed(r) => format!(
            "{t}: {a} failed at revision {}, {}: {}",
            r.revision,
            key(&r.key_id),
            r.code.as_deref().unwrap_or("(no code)")
        ),
        Standing::Pending(last) => {
            let seen = match last {
                None => "no record yet".to_string(),
                Some(r) => {
                    let state = match r.state {
                        State::Applied => "applied",
                        State::Failed => "failed",
                    };
                    let code = r.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
                    format!("last record: {state} at revision {}, {}{code}, at {}", r.revision, key(&r.key_id), r.at)
                }
            };
            format!("{t}: {a} pending revision {} ({}); {seen}", s.revision, key(&s.want))
        }
    }
}

/// A duration as `--timeout` takes it: `2m`, `90s`, `1m30s`, `1500ms`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 120s, 2m, 1m30s, 1h, 500ms");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let one = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(one).ok_or_else(bad)?;
        rest = &rest[unit..];
    }
    Ok(total)
}

/// A duration as the user would write it back.
fn show(d: Duration) -> String {
    match (d.as_secs(), d.subsec_millis()) {
        (s, 0) if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(alias: &str, target: &str, revision: u64, state: State, key_id: Option<&str>, code: Option<&str>) -> Record {
        Record {
            alias: alias.into(),
            target: target.into(),
            revision,
            state,
            key_id: key_id.map(str::to_string),
            code: code.map(str::to_string),
            at: "2026-12-06T12:00:00Z".into(),
        }
    }

    fn applied(alias: &str, target: &str, revision: u64, key_id: Option<&str>) -> Record {
        rec(alias, target, revision, State::Applied, key_id, None)
    }

    fn goal(alias: &str, revision: u64, targets: &[(&str, Option<&str>)]) -> Goal {
        Goal {
            alias: alias.into(),
            revision,
            targets: targets.iter().map(|(t, k)| (t.to_string(), k.map(str::to_string))).collect(),
        }
    }

    fn feed(t: &mut Tracker, r: &Record) {
        let v = serde_json::to_vec(r).unwrap();
        t.observe(Some(status::key(&r.alias, &r.target).as_bytes()), Some(&v));
    }

    fn targets(states: &[TargetState]) -> Vec<&str> {
        states.iter().map(|s| s.target.as_str()).collect()
    }

    #[test]
    fn applied_once_every_target_has_the_revision_and_not_before() {
        let mut t = Tracker::new(vec![goal("a", 5, &[("use1", Some("k1")), ("euw1", Some("k2"))])]);
        assert!(matches!(t.verdict(), Verdict::Pending(p) if targets(&p) == ["euw1", "use1"]));
        feed(&mut t, &applied("a", "use1", 5, Some("k1")));
        assert!(matches!(t.verdict(), Verdict::Pending(p) if targets(&p) == ["euw1"]));
        // A later revision counts as well.
        feed(&mut t, &applied("a", "euw1", 6, Some("k3")));
        let Verdict::Applied(done) = t.verdict() else { panic!("{:?}", t.verdict()) };
        assert_eq!(targets(&done), ["euw1", "use1"]);
    }

    #[test]
    fn a_failure_at_the_revision_or_later_fails_the_wait() {
        let mut t = Tracker::new(vec![goal("a", 5, &[("use1", Some("k1")), ("euw1", Some("k2"))])]);
        feed(&mut t, &rec("a", "euw1", 5, State::Failed, Some("k2"), Some("preflight_key_disabled")));
        let Verdict::Failed(f) = t.verdict() else { panic!() };
        assert_eq!(targets(&f), ["euw1"]);
        let (end, lines, _) = describe(&Watched::Decided(Verdict::Failed(f)), 1, DEFAULT_TIMEOUT);
        assert_eq!(end, End::Failed);
        assert_eq!(lines, ["euw1: a failed at revision 5, key k2: preflight_key_disabled"]);
    }

    #[test]
    fn an_older_revision_counts_only_if_it_shows_the_awaited_state() {
        let mut t = Tracker::new(vec![goal("a", 5, &[("use1", Some("new")), ("euw1", Some("same"))])]);
        // use1: the rotation's old key, recorded at revision 4: stale.
        feed(&mut t, &applied("a", "use1", 4, Some("old")));
        // euw1: the revision left its key unchanged, so its owner records nothing newer: revision 3 is the proof.
        feed(&mut t, &applied("a", "euw1", 3, Some("same")));
        let Verdict::Pending(p) = t.verdict() else { panic!() };
        assert_eq!(targets(&p), ["use1"]);
        assert_eq!(p[0].standing, Standing::Pending(Some(applied("a", "use1", 4, Some("old")))));
        // An older failure decides nothing, even with the awaited key.
        feed(&mut t, &rec("a", "use1", 4, State::Failed, Some("new"), Some("x")));
        assert!(matches!(t.verdict(), Verdict::Pending(_)));
        feed(&mut t, &applied("a", "use1", 5, Some("new")));
        assert!(matches!(t.verdict(), Verdict::Applied(d) if d.len() == 2));
    }

    #[test]
    fn absent_targets_are_awaited_only_where_the_alias_was_ever_recorded() {
        // Absent in euw1 and hw at revision 7; use1 keeps k1.
        let g = goal("a", 7, &[("use1", Some("k1")), ("euw1", None), ("hw", None)]);
        let mut t = Tracker::new(vec![g]);
        feed(&mut t, &applied("a", "use1", 7, Some("k1")));
        // hw never had it: not awaited. euw1 had it at revision 6: its removal is awaited.
        feed(&mut t, &applied("a", "euw1", 6, Some("k2")));
        let Verdict::Pending(p) = t.verdict() else { panic!() };
        assert_eq!(targets(&p), ["euw1"]);
        feed(&mut t, &applied("a", "euw1", 7, None));
        let Verdict::Applied(d) = t.verdict() else { panic!() };
        assert_eq!(targets(&d), ["euw1", "use1"]);
        let (_, lines, _) = describe(&Watched::Decided(Verdict::Applied(d)), 1, DEFAULT_TIMEOUT);
        assert_eq!(lines, ["euw1: a applied at revision 7, absent", "use1: a applied at revision 7, key k1"]);
        // A removal recorded long ago still holds when a later revision changes another target only.
        let mut t = Tracker::new(vec![goal("a", 9, &[("use1", Some("k1")), ("euw1", None)])]);
        feed(&mut t, &applied("a", "use1", 9, Some("k1")));
        feed(&mut t, &applied("a", "euw1", 2, None));
        assert!(matches!(t.verdict(), Verdict::Applied(d) if d.len() == 2));
        // A failed removal fails the wait.
        let mut t = Tracker::new(vec![goal("a", 9, &[("euw1", None)])]);
        feed(&mut t, &rec("a", "euw1", 9, State::Failed, None, Some("AccessDenied")));
        assert!(matches!(t.verdict(), Verdict::Failed(_)));
    }

    #[test]
    fn absent_everywhere_and_never_recorded_is_nothing_to_wait_for() {
        let t = Tracker::new(vec![goal("a", 3, &[("use1", None), ("euw1", None)])]);
        let v = t.verdict();
        assert_eq!(v, Verdict::Applied(Vec::new()));
        let (end, lines, summary) = describe(&Watched::Decided(v), 1, DEFAULT_TIMEOUT);
        assert_eq!((end, lines.len()), (End::Applied, 0));
        assert!(summary.contains("nothing to wait for"), "{summary}");
    }

    #[test]
    fn the_last_record_of_a_key_wins_and_tombstones_and_strangers_are_ignored() {
        let mut t = Tracker::new(vec![goal("a", 5, &[("use1", Some("k1"))])]);
        // Failed, then applied by a later revision (read in offset order): applied.
        feed(&mut t, &rec("a", "use1", 5, State::Failed, Some("k1"), Some("x")));
        feed(&mut t, &applied("a", "use1", 6, Some("k1")));
        assert!(matches!(t.verdict(), Verdict::Applied(_)));
        // A tombstone forgets the key.
        t.observe(Some(status::key("a", "use1").as_bytes()), None);
        assert_eq!(
            t.verdict(),
            Verdict::Pending(vec![TargetState {
                alias: "a".into(),
                target: "use1".into(),
                revision: 5,
                want: Some("k1".into()),
                standing: Standing::Pending(None),
            }])
        );
        // Other aliases, other targets, undecodable values and keyless records change nothing.
        feed(&mut t, &applied("b", "use1", 9, Some("k1")));
        feed(&mut t, &applied("a", "euw1", 9, Some("k1")));
        t.observe(Some(status::key("a", "use1").as_bytes()), Some(b"{not json"));
        t.observe(None, Some(b"{}"));
        assert!(matches!(t.verdict(), Verdict::Pending(p) if p.len() == 1));
    }

    #[test]
    fn several_aliases_make_one_verdict() {
        let mut t = Tracker::new(vec![goal("a", 2, &[("use1", Some("k1"))]), goal("b", 4, &[("use1", Some("k2"))])]);
        feed(&mut t, &applied("a", "use1", 2, Some("k1")));
        assert!(matches!(t.verdict(), Verdict::Pending(p) if p[0].alias == "b"));
        feed(&mut t, &applied("b", "use1", 4, Some("k2")));
        let Verdict::Applied(d) = t.verdict() else { panic!() };
        let (_, _, summary) = describe(&Watched::Decided(Verdict::Applied(d)), 2, DEFAULT_TIMEOUT);
        assert_eq!(summary, "applied: 2 aliases in 2 target(s)");
        // Any failure fails the whole.
        feed(&mut t, &rec("a", "use1", 3, State::Failed, Some("k9"), Some("NotFoundException")));
        assert!(matches!(t.verdict(), Verdict::Failed(f) if f[0].alias == "a"));
    }

    #[test]
    fn a_timeout_names_the_pending_targets_and_their_last_record() {
        let pending = vec![
            TargetState {
                alias: "a".into(),
                target: "euw1".into(),
                revision: 5,
                want: Some("k2".into()),
                standing: Standing::Pending(Some(applied("a", "euw1", 4, Some("k1")))),
            },
            TargetState {
                alias: "a".into(),
                target: "use1".into(),
                revision: 5,
                want: None,
                standing: Standing::Pending(None),
            },
        ];
        let w = Watched::TimedOut { pending, note: Some("the status topic t.status does not exist yet".into()) };
        let (end, lines, summary) = describe(&w, 1, Duration::from_secs(120));
        assert_eq!(end, End::TimedOut);
        assert_eq!(
            lines,
            [
                "euw1: a pending revision 5 (key k2); last record: applied at revision 4, key k1, at 2026-12-06T12:00:00Z",
                "use1: a pending revision 5 (absent); no record yet",
                "note: the status topic t.status does not exist yet",
            ]
        );
        assert_eq!(summary, "timed out after 2m: 2 target(s) still pending");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "s", "2x", "1.5s", "-1s", "m2"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }
}
