//! The reconcile engine: one task per target, each with its own queue, token buckets and concurrency
//! cap, so a slow or failing target never stalls another. Workers compare the latest desired value
//! with the live one (from the target's listing plus our own writes) and make at most the writes needed.

pub mod bucket;
pub mod controller;
pub mod decide;
pub mod governed;
mod live;
pub mod policy;
pub mod preflight;
pub mod queue;
mod target;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::Mode;
use crate::desired::{Origin, Outcome, Store};
use crate::event::{Event, TargetId};
use crate::provider::KmsAliases;
use crate::telemetry::metrics::metrics;
use queue::WorkQueue;

/// A reconcile that cannot succeed by retrying; the engine hands it to the dead-letter sink.
#[derive(Debug, Clone, Serialize)]
pub struct PermanentFailure {
    pub target: String,
    pub alias: String,
    pub key_id: Option<String>,
    pub action: &'static str,
    pub code: String,
    /// The dead-letter reason: `reconcile_failed`, or the pre-flight's `preflight_key_*` (see `preflight`).
    pub reason: &'static str,
    pub message: String,
    pub at_unix: u64,
}

/// Where permanent failures go (the dead-letter topic in the daemon). Must not block.
pub trait FailureSink: Send + Sync + 'static {
    fn permanent(&self, failure: PermanentFailure);
}

/// One change of an alias's desired state, as the owner of a target settled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub target: String,
    pub alias: String,
    pub revision: u64,
    /// The key the alias points at (None: absent there).
    pub key_id: Option<String>,
    /// None: applied; Some(code): failed for good (dead-lettered with that code).
    pub failed: Option<String>,
}

/// Where settled changes are recorded (the status topic in the daemon), so producers can wait for them. Must
/// not block.
pub trait ChangeLog: Send + Sync + 'static {
    fn settled(&self, change: Settled);
}

pub struct TargetSpec {
    pub id: TargetId,
    pub name: String,
    /// Already rate limited and instrumented (see `governed`).
    pub provider: Arc<dyn KmsAliases>,
    pub concurrency: usize,
    pub mode: Mode,
    /// Delete orphans (managed-prefix aliases with no desired state) found by drift scans.
    pub prune: bool,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub consistency_retries: u32,
    pub managed_prefixes: Vec<String>,
    /// Full listing of each owned target this often (jittered), for drift.
    pub scan_interval: Duration,
    /// Check the key before each create or re-point (`safety.preflight`, see `preflight`).
    pub preflight: bool,
}

impl EngineConfig {
    /// The ownership guard: only managed prefixes, never a reserved name, whatever an event says.
    pub fn may_touch(&self, alias: &str) -> bool {
        crate::event::is_managed(&self.managed_prefixes, alias)
    }
}

const RECENT_FAILURES: usize = 20;

struct Target {
    id: TargetId,
    name: String,
    provider: Arc<dyn KmsAliases>,
    concurrency: usize,
    mode: Mode,
    queue: Mutex<WorkQueue>,
    notify: Notify,
    owned: watch::Sender<bool>,
    /// What differs from the desired state in the cloud (see `live`).
    live: Mutex<live::LiveView>,
    listed_at: Mutex<Option<u64>>,
    failures: Mutex<VecDeque<PermanentFailure>>,
    prune: bool,
    drift: Mutex<Option<DriftStatus>>,
    /// The last scan's drifted aliases not yet repaired: the drift gauges count these, so a repair
    /// clears its drift at once instead of at the next scan.
    drifted: Mutex<HashMap<Box<str>, crate::drift::Kind>>,
    /// Aliases whose last reconcile failed permanently, and when: drift scans do not retry them
    /// (and dead-letter them again) more often than `FAILED_RETRY`; a new event always does.
    failed: Mutex<HashMap<Box<str>, tokio::time::Instant>>,
    /// Iterations of the worker loop: a stalled target must not spin (see `TargetStatus::loop_wakeups`).
    wakeups: AtomicU64,
    /// When this instance began working on the target (ms since the epoch): apply latency counts changes produced
    /// since, not older ones the first pass settles (their age is the downtime or a hand edit, not our latency).
    working_since_ms: std::sync::atomic::AtomicI64,
    /// Probe a paused target now (SIGHUP: the credentials may have been fixed).
    probe_now: Notify,
    /// The checks before a write, with this target's key-facts cache.
    preflight: preflight::Preflight,
    /// The lifecycle state, the pause and the lease gate, under one lock: a reconcile starts only while
    /// the lease is held, and a revocation waits for the ones in flight, so the next owner's writes
    /// never race this one's.
    ctl: controller::Controller,
}

/// One reconcile in flight, counted in its target's controller until dropped (finished or aborted).
struct CallGuard(Arc<Target>);

impl CallGuard {
    /// None when the target's lease is not held (or the daemon stops): no call may start.
    fn enter(t: &Arc<Target>) -> Option<CallGuard> {
        t.ctl.enter_call().then(|| CallGuard(t.clone()))
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.ctl.leave_call();
    }
}

const FAILED_RETRY: Duration = Duration::from_secs(3600);

/// The last scan's findings, for /status.
#[derive(Debug, Clone, Serialize)]
pub struct DriftStatus {
    pub scanned_at_unix: u64,
    pub duration_seconds: f64,
    pub missing: usize,
    pub wrong_key: usize,
    pub orphan: usize,
    /// At most `DRIFT_DETAILS` entries, by alias name.
    pub aliases: Vec<crate::drift::Drifted>,
    pub truncated: bool,
}

const DRIFT_DETAILS: usize = 500;

struct Inner {
    targets: Vec<Arc<Target>>,
    store: Arc<RwLock<Store>>,
    cfg: EngineConfig,
    sink: Arc<dyn FailureSink>,
    /// Set once the status topic is known (after the engine is built); before that nothing is settled.
    changes: std::sync::OnceLock<Arc<dyn ChangeLog>>,
    rebuilt: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    /// Listings in flight across all targets: a start with a thousand targets lists them a few at a time
    /// (each still paced by its own read quota) instead of opening a thousand listings at once.
    listings: tokio::sync::Semaphore,
}

/// Listings at once per instance.
pub const LISTINGS_AT_ONCE: usize = 16;

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// Targets whose desired key changed, with each one's count of desired aliases: queue them with `changed`.
    pub counts: Vec<(TargetId, usize)>,
    /// Targets the event names whose key stayed (see `unchanged`).
    pub unchanged: Vec<TargetId>,
}

#[derive(Debug, Serialize)]
pub struct AliasStatus {
    pub alias: String,
    /// The desired state's revision.
    pub revision: u64,
    pub targets: Vec<AliasTarget>,
}

#[derive(Debug, Serialize)]
pub struct AliasTarget {
    pub target: String,
    /// None: the alias must be absent there.
    pub desired_key: Option<String>,
    /// `applied`, `pending` (queued or in flight), `failed` (dead-lettered), `drifted`, `unknown` (the first
    /// listing is still running), or `not_owned` (another instance owns the target).
    pub state: &'static str,
    pub applied_revision: Option<u64>,
    /// What this owner knows the alias points at.
    pub live_key: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub owned: bool,
    pub mode: &'static str,
    pub desired: usize,
    pub queue_depth: usize,
    pub in_progress: usize,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub last_listing_unix: Option<u64>,
    pub prune: bool,
    pub drift: Option<DriftStatus>,
    pub recent_failures: Vec<PermanentFailure>,
    /// Where the target is in its lifecycle on this instance.
    pub state: controller::State,
    /// Why the target is paused (`credentials_expired`, `access_denied`, ...); absent when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<&'static str>,
    /// How often the target's worker loop woke (tests bound it by the calls made; not in /status).
    #[serde(skip)]
    pub loop_wakeups: u64,
}

impl Engine {
    pub fn new(
        specs: Vec<TargetSpec>,
        store: Arc<RwLock<Store>>,
        cfg: EngineConfig,
        sink: Arc<dyn FailureSink>,
    ) -> Self {
        // Info, not warn: the shipped default (60 s) is above the ceiling.
        if cfg.backoff_max > queue::RETRY_CEILING {
            tracing::info!(
                backoff_max_ms = cfg.backoff_max.as_millis() as u64,
                ceiling_ms = queue::RETRY_CEILING.as_millis() as u64,
                "reconcile.backoff_max_ms is above the retry ceiling; retries wait at most the ceiling, so a target converges within 30 s of its cloud returning"
            );
        }
        let targets = specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                assert_eq!(s.id as usize, i, "target ids are dense and ordered");
                Arc::new(Target {
                    id: s.id,
                    provider: s.provider,
                    concurrency: s.concurrency.max(1),
                    mode: s.mode,
                    queue: Mutex::new(WorkQueue::new(cfg.backoff_min, cfg.backoff_max)),
                    notify: Notify::new(),
                    owned: watch::channel(false).0,
                    live: Mutex::new(live::LiveView::default()),
                    listed_at: Mutex::new(None),
                    failures: Mutex::new(VecDeque::new()),
                    prune: s.prune,
                    drift: Mutex::new(None),
                    drifted: Mutex::new(HashMap::new()),
                    failed: Mutex::new(HashMap::new()),
                    wakeups: AtomicU64::new(0),
                    working_since_ms: std::sync::atomic::AtomicI64::new(i64::MAX),
                    probe_now: Notify::new(),
                    preflight: preflight::Preflight::new(cfg.preflight),
                    ctl: controller::Controller::new(&s.name),
                    name: s.name,
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            targets,
            store,
            cfg,
            sink,
            rebuilt: watch::channel(false).0,
            shutdown: watch::channel(false).0,
            listings: tokio::sync::Semaphore::new(LISTINGS_AT_ONCE),
            changes: std::sync::OnceLock::new(),
        });
        Engine { inner, tasks: Arc::new(Mutex::new(Vec::new())) }
    }

    /// One alias across the targets (`GET /status/alias/{alias}`); None if the desired state does not know it.
    /// Only the owner of a target knows its live state: other instances say `not_owned`.
    pub fn alias_status(&self, alias: &str) -> Option<AliasStatus> {
        let s = self.inner.store.read().unwrap_or_else(|e| e.into_inner());
        let revision = s.revision(alias)?;
        let targets = self
            .inner
            .targets
            .iter()
            .map(|t| {
                let desired = s.desired(alias, t.id).map(|k| k.to_string());
                let known = t.live.lock().unwrap().get(alias, desired.as_deref());
                let (pending, failed) =
                    (t.queue.lock().unwrap().contains(alias), t.failed.lock().unwrap().contains_key(alias));
                let live = match &known {
                    live::Known::Key(k) => k.clone(),
                    live::Known::Unknown => None,
                };
                let in_sync = match (&known, &desired) {
                    (live::Known::Key(Some(l)), Some(d)) => t.provider.key_matches(d, l),
                    (live::Known::Key(None), None) => true,
                    _ => false,
                };
                let state = match () {
                    _ if !*t.owned.borrow() => "not_owned",
                    _ if pending => "pending",
                    _ if failed => "failed",
                    _ if matches!(known, live::Known::Unknown) => "unknown",
                    _ if in_sync => "applied",
                    _ => "drifted",
                };
                AliasTarget {
                    target: t.name.clone(),
                    desired_key: desired,
                    state,
                    applied_revision: (state == "applied").then_some(revision),
                    live_key: if *t.owned.borrow() { live } else { None },
                }
            })
            .collect();
        Some(AliasStatus { alias: alias.to_string(), revision, targets })
    }

    /// Records settled changes from now on (once; later calls are ignored).
    pub fn set_change_log(&self, log: Arc<dyn ChangeLog>) {
        let _ = self.inner.changes.set(log);
    }

    /// Starts one task per target.
    pub fn start(&self) {
        let mut tasks = self.tasks.lock().unwrap();
        for t in &self.inner.targets {
            tasks.push(tokio::spawn(target::run(self.inner.clone(), t.clone())));
        }
    }

    /// The desired state of `alias` changed in `targets`.
    /// Applies an event to the desired state. The live views record the old keys under the same write lock, so
    /// no reconcile reads the new desired key with a view that still says "in sync". Returns the outcome and the
    /// targets whose desired key changed, with each one's count of desired aliases; queue them with `changed`.
    pub fn apply(&self, ev: Event, origin: Origin) -> Applied {
        let mut s = self.inner.store.write().unwrap_or_else(|e| e.into_inner());
        let alias = ev.alias.clone();
        let named: Vec<TargetId> = match &ev.body {
            crate::event::Body::Present(t) => t.iter().map(|(id, _)| *id).collect(),
            crate::event::Body::Absent => Vec::new(),
        };
        let (outcome, changes) = s.apply(ev, origin);
        for c in &changes {
            if let Some(t) = self.inner.targets.get(c.target as usize) {
                t.live.lock().unwrap().desired_changed(&alias, c.old.as_ref());
            }
        }
        let unchanged = match outcome {
            Outcome::Applied => named.into_iter().filter(|id| !changes.iter().any(|c| c.target == *id)).collect(),
            Outcome::Stale => Vec::new(),
        };
        Applied { outcome, counts: changes.iter().map(|c| (c.target, s.count(c.target))).collect(), unchanged }
    }

    /// A new revision of `alias` that left these targets' keys as they were: where this instance owns the
    /// target and the alias is in sync there (nothing queued), the revision is settled at once, with no call, so
    /// `wait` sees every target it names at the new revision.
    pub fn unchanged(&self, alias: &str, targets: &[TargetId]) {
        let Some(log) = self.inner.changes.get() else { return };
        if targets.is_empty() || !*self.inner.rebuilt.borrow() {
            return;
        }
        let s = self.inner.store.read().unwrap_or_else(|e| e.into_inner());
        let Some(revision) = s.revision(alias) else { return };
        for t in targets.iter().filter_map(|&id| self.inner.targets.get(id as usize)) {
            if !*t.owned.borrow() {
                continue;
            }
            let desired = s.desired(alias, t.id).map(|k| k.to_string());
            let in_sync = match t.live.lock().unwrap().get(alias, desired.as_deref()) {
                live::Known::Key(Some(l)) => desired.as_deref().is_some_and(|d| t.provider.key_matches(d, &l)),
                _ => false,
            };
            if in_sync && !t.queue.lock().unwrap().contains(alias) {
                log.settled(Settled {
                    target: t.name.clone(),
                    alias: alias.into(),
                    revision,
                    key_id: desired,
                    failed: None,
                });
            }
        }
    }

    /// Queues a change of `alias` in these targets; `produced_ms` is its record timestamp (apply latency).
    pub fn changed(&self, alias: &str, targets: &[TargetId], produced_ms: i64) {
        if !*self.inner.rebuilt.borrow() {
            // The first listing after the rebuild compares every alias with the rebuilt state.
            return;
        }
        let alias: Arc<str> = Arc::from(alias);
        let now = tokio::time::Instant::now();
        for &id in targets {
            let Some(t) = self.inner.targets.get(id as usize) else { continue };
            if *t.owned.borrow() {
                t.failed.lock().unwrap().remove(&*alias);
                t.queue.lock().unwrap().add(alias.clone(), now, Some(produced_ms));
                t.notify.notify_one();
            }
        }
    }

    /// The desired state is rebuilt: owned targets list, and their first listing's drift is the first pass.
    pub fn set_rebuilt(&self) {
        self.inner.rebuilt.send_replace(true);
    }

    /// The targets this instance now holds the lease for (the others are released without waiting).
    pub fn set_owned(&self, owned: &HashSet<TargetId>) {
        let (held, gone): (Vec<TargetId>, Vec<TargetId>) =
            self.inner.targets.iter().map(|t| t.id).partition(|id| owned.contains(id));
        self.acquire(&held);
        self.release(&gone, Duration::ZERO);
    }

    /// Leases gained: the targets list and work.
    pub fn acquire(&self, ids: &[TargetId]) {
        for t in ids.iter().filter_map(|&id| self.inner.targets.get(id as usize)) {
            set_lease(t, true);
        }
        self.count_owned();
    }

    /// Leases being revoked: no reconcile starts for these targets from now on, and this waits (at most
    /// `wait`; not at all once the daemon drains, which waited already) for the ones in flight, so the
    /// caller releases the leases only when this instance's writes have landed. Returns how many were
    /// still in flight when it gave up. Blocks the thread: librdkafka's rebalance callback calls it.
    pub fn release(&self, ids: &[TargetId], wait: Duration) -> usize {
        let targets: Vec<&Arc<Target>> = ids.iter().filter_map(|&id| self.inner.targets.get(id as usize)).collect();
        for t in &targets {
            set_lease(t, false);
        }
        self.count_owned();
        let wait = if *self.inner.shutdown.borrow() { Duration::ZERO } else { wait };
        let busy: usize = targets.iter().map(|t| t.ctl.calls()).sum();
        if busy == 0 {
            return 0;
        }
        tracing::info!(
            calls = busy,
            wait_ms = wait.as_millis() as u64,
            "lease revoked: waiting for in-flight reconciles before releasing it"
        );
        let deadline = std::time::Instant::now() + wait;
        let mut left = 0;
        for t in &targets {
            let calls = t.ctl.wait_idle(deadline);
            if calls > 0 {
                tracing::warn!(target_name = %t.name, calls, "drain timeout: releasing the lease with reconciles still in flight");
            }
            left += calls;
        }
        left
    }

    fn count_owned(&self) {
        let n = self.inner.targets.iter().filter(|t| *t.owned.borrow()).count();
        metrics().owned_targets.set(n as i64);
    }

    /// Paused targets probe at once instead of at their next backoff (SIGHUP: credentials were reloaded).
    pub fn probe_paused(&self) {
        for t in &self.inner.targets {
            if t.ctl.paused().is_some() {
                tracing::info!(target_name = %t.name, "probing the paused target now");
                t.probe_now.notify_one();
            }
        }
    }

    /// Stops taking work, lets in-flight reconciles finish within `timeout`, then returns.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shutdown.send_replace(true);
        for t in &self.inner.targets {
            t.ctl.stop();
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap());
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(timeout + Duration::from_secs(1), all).await.is_err() {
            tracing::warn!("drain timed out; in-flight reconciles abandoned (they are retried after restart)");
        }
    }

    pub fn status(&self) -> Vec<TargetStatus> {
        // The counts under the store lock, briefly; nothing else of /status needs it.
        let desired: Vec<usize> = {
            let store = self.inner.store.read().unwrap();
            self.inner.targets.iter().map(|t| store.count(t.id)).collect()
        };
        let now = tokio::time::Instant::now();
        self.inner
            .targets
            .iter()
            .zip(desired)
            .map(|(t, desired)| {
                let q = t.queue.lock().unwrap();
                let (lag_events, lag) = q.lag(now);
                TargetStatus {
                    name: t.name.clone(),
                    owned: *t.owned.borrow(),
                    mode: match t.mode {
                        Mode::Enforce => "enforce",
                        Mode::Observe => "observe",
                    },
                    desired,
                    queue_depth: q.len(),
                    in_progress: q.in_progress(),
                    lag_events,
                    lag_seconds: lag.as_secs_f64(),
                    last_listing_unix: *t.listed_at.lock().unwrap(),
                    prune: t.prune,
                    drift: t.drift.lock().unwrap().clone(),
                    recent_failures: t.failures.lock().unwrap().iter().cloned().collect(),
                    state: t.ctl.state(),
                    paused: t.ctl.paused().map(|r| r.as_str()),
                    loop_wakeups: t.wakeups.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// Flips a target's lease: the controller's gate first (calls start or stop), then the watch the target task
/// follows.
fn set_lease(t: &Target, owned: bool) {
    t.ctl.set_owned(owned);
    if t.owned.send_replace(owned) != owned {
        tracing::info!(target_name = %t.name, owned, "target lease {}", if owned { "acquired" } else { "released" });
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
