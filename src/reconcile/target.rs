//! One target's task: wait for the lease, then run workers (at most `concurrency`, never two for one alias)
//! beside the first listing, whose drift is the first pass, until the lease goes or the daemon stops.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::controller::Phase;
use super::decide::{decide, decide_unknown, Action};
use super::live::Known;
use super::policy::{self, PauseReason, Verdict};
use super::queue::Done;
use super::{
    unix_now, CallGuard, DriftStatus, Inner, PermanentFailure, Settled, Target, DRIFT_DETAILS, FAILED_RETRY,
    RECENT_FAILURES,
};
use crate::config::Mode;
use crate::drift::Kind;
use crate::drift::{Comparer, Report};
use crate::provider::{ErrorClass, ProviderError};
use crate::telemetry::metrics::metrics;

pub(super) async fn run(inner: Arc<Inner>, t: Arc<Target>) {
    let mut owned_rx = t.owned.subscribe();
    let mut rebuilt_rx = inner.rebuilt.subscribe();
    let mut shut_rx = inner.shutdown.subscribe();
    loop {
        t.ctl.set_phase(Phase::Waiting);
        // Wait for the lease and the rebuilt desired state.
        loop {
            if *shut_rx.borrow_and_update() {
                return;
            }
            if *owned_rx.borrow_and_update() && *rebuilt_rx.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = owned_rx.changed() => {}
                _ = rebuilt_rx.changed() => {}
                _ = shut_rx.changed() => {}
            }
        }
        seed_paused(&t);
        t.live.lock().unwrap().start();
        t.working_since_ms.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        // The workers start with the first listing, not after it: changes that arrive meanwhile are applied at
        // once, written first since their live state is unknown (the listing of a large account takes minutes).
        t.ctl.set_phase(Phase::Listing);
        let stopping = work(&inner, &t, &mut owned_rx, &mut shut_rx).await;
        t.queue.lock().unwrap().clear();
        t.live.lock().unwrap().stop();
        *t.listed_at.lock().unwrap() = None;
        clear_gauges(&t);
        if stopping {
            return;
        }
    }
}

/// One listing of the target, compared with the desired state as its pages stream in; with how many aliases
/// it showed.
async fn scan_once(inner: &Inner, t: &Target) -> Result<(Report, usize), ProviderError> {
    // Never closed, so acquire fails only if it were; then list without a permit rather than not at all.
    let _permit = inner.listings.acquire().await.ok();
    // Locks per alias, not across the scan: the reader needs the queue and the view meanwhile.
    let busy = |a: &str| {
        let changed = t.live.lock().unwrap().changed_during_scan(a);
        changed || t.queue.lock().unwrap().contains(a)
    };
    let mut c =
        Comparer::new(&inner.store, t.id, |a| inner.cfg.may_touch(a), busy, |d, l| t.provider.key_matches(d, l));
    t.provider.list_each(&inner.cfg.managed_prefixes, &mut |a| c.push(a)).await?;
    let listed = c.listed();
    Ok((c.finish(), listed))
}

/// The first listing of a target, retried with backoff while the target is unreachable; with how long it took.
async fn list_until_ok(inner: Arc<Inner>, t: Arc<Target>) -> (Report, Duration) {
    let (inner, t) = (&*inner, &*t);
    let started = Instant::now();
    let mut backoff = super::queue::retry_backoff(inner.cfg.backoff_min, inner.cfg.backoff_max).build();
    loop {
        match scan_once(inner, t).await {
            Ok((report, listed)) => {
                resume(t);
                tracing::info!(target_name = %t.name, live = listed, "listed target");
                return (report, started.elapsed());
            }
            Err(e) => {
                metrics().scans.with_label_values(&[&t.name, "failed"]).inc();
                // A target that cannot even list still shows its backlog (the lag alerts need it).
                update_gauges(t);
                // A listing names no key: a refusal is the target's (its retries are the pause's probe).
                if let Some(reason) = policy::on_keyless_call(e.class) {
                    pause(t, reason, &e);
                }
                let d = backoff.next().unwrap_or(super::queue::RETRY_CEILING);
                tracing::warn!(target_name = %t.name, error = %e, retry_in_ms = d.as_millis() as u64, "listing failed");
                if t.ctl.paused().is_some() {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = t.probe_now.notified() => {}
                    }
                } else {
                    tokio::time::sleep(d).await;
                }
            }
        }
    }
}

/// Starts the first listing (the live view records what changes meanwhile, see `LiveView::start`).
fn start_first_listing(inner: &Arc<Inner>, t: &Arc<Target>) -> tokio::task::JoinHandle<(Report, Duration)> {
    tokio::spawn(list_until_ok(inner.clone(), t.clone()))
}

/// Installs the first listing. It is also the first drift scan, and the scan is the first pass: it queues
/// what the listing shows differs (missing, wrong key, present where the desired state says absent, and
/// with `prune` the unknown orphans), never the aliases already in sync, so a million of those cost no
/// queue entry and no call.
fn install_listing(inner: &Inner, t: &Target, report: Report, took: Duration) {
    apply_scan(inner, t, report, took, true);
    *t.listed_at.lock().unwrap() = Some(unix_now());
    t.notify.notify_one();
}

/// A completed listing: the live view takes its drift (except for aliases changing right now), the drift is
/// reported, and in enforce mode the repairs are queued.
/// `first`: the listing that starts the target's work; its repairs settle changes nobody applied yet (consumed
/// before this instance held the lease), so they carry their record's timestamp like a change would.
fn apply_scan(inner: &Inner, t: &Target, report: Report, took: Duration, first: bool) {
    let m = metrics();
    t.live.lock().unwrap().install(
        &report,
        |a| t.queue.lock().unwrap().contains(a),
        || t.queue.lock().unwrap().aliases().cloned().collect::<Vec<_>>(),
    );
    let now_unix = unix_now();
    *t.drifted.lock().unwrap() = report.drifted.iter().map(|d| (d.alias.as_str().into(), d.kind)).collect();
    for kind in Kind::ALL {
        let n = report.count(kind);
        m.drift_aliases.with_label_values(&[&t.name, kind.as_str()]).set(n as i64);
        m.drift_detected.with_label_values(&[&t.name, kind.as_str()]).inc_by(n as u64);
    }
    m.last_scan_success.with_label_values(&[&t.name]).set(now_unix as f64);
    m.last_scan_duration.with_label_values(&[&t.name]).set(took.as_secs_f64());
    m.scans.with_label_values(&[&t.name, "ok"]).inc();
    // One summary line per scan (a first start against an empty target finds every alias missing);
    // each alias at debug, and by name in /status.
    if !report.drifted.is_empty() {
        let sample: Vec<&str> = report.drifted.iter().take(10).map(|d| d.alias.as_str()).collect();
        tracing::warn!(
            target_name = %t.name,
            missing = report.count(Kind::Missing),
            wrong_key = report.count(Kind::WrongKey),
            orphan = report.count(Kind::Orphan),
            ?sample,
            "drift found by scan"
        );
    }
    for d in &report.drifted {
        tracing::debug!(target_name = %t.name, alias = %d.alias, kind = d.kind.as_str(), desired = ?d.desired, live = ?d.live, "drift");
    }
    if t.mode == Mode::Enforce {
        let now = Instant::now();
        // Read before the queue is locked (lock order: the store before a target's locks).
        let produced: Vec<Option<i64>> = {
            let s = inner.store.read().unwrap();
            report.drifted.iter().map(|d| if first { s.produced_ms(&d.alias) } else { None }).collect()
        };
        let failed = t.failed.lock().unwrap();
        let mut q = t.queue.lock().unwrap();
        for (d, produced) in report.drifted.iter().zip(produced) {
            let recently_failed = failed.get(d.alias.as_str()).is_some_and(|at| now.duration_since(*at) < FAILED_RETRY);
            let unpruned_orphan = d.kind == Kind::Orphan && d.unknown && !t.prune;
            if !unpruned_orphan && !recently_failed {
                q.add(Arc::from(d.alias.as_str()), now, produced);
            }
        }
        t.notify.notify_one();
    }
    *t.drift.lock().unwrap() = Some(DriftStatus {
        scanned_at_unix: now_unix,
        duration_seconds: took.as_secs_f64(),
        missing: report.count(Kind::Missing),
        wrong_key: report.count(Kind::WrongKey),
        orphan: report.count(Kind::Orphan),
        truncated: report.drifted.len() > DRIFT_DETAILS,
        aliases: report.drifted.into_iter().take(DRIFT_DETAILS).collect(),
    });
}

/// The next scan: the interval ±10%, so many targets do not list in step.
fn next_scan(inner: &Inner) -> Instant {
    let f = 0.9 + rand::random::<f64>() * 0.2;
    Instant::now() + inner.cfg.scan_interval.mul_f64(f)
}

/// Runs workers until the lease is lost (false) or the daemon stops (true).
async fn work(
    inner: &Arc<Inner>,
    t: &Arc<Target>,
    owned_rx: &mut tokio::sync::watch::Receiver<bool>,
    shut_rx: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut inflight: JoinSet<(Arc<str>, Done)> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, Arc<str>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut scan_at = next_scan(inner);
    type Scan = Result<(Report, usize), ProviderError>;
    let mut scan: Option<(Instant, tokio::task::JoinHandle<Scan>)> = None;
    // The first listing runs beside the workers; until it is installed every alias's live state is unknown
    // (`reconcile_one` writes first).
    let mut first = Some(start_first_listing(inner, t));
    // While paused: the next probe (backing off) or the one in flight.
    let mut probe_backoff: Option<backon::ExponentialBackoff> = None;
    let mut probe_at: Option<Instant> = None;
    let mut probe: Option<tokio::task::JoinHandle<Result<(), ProviderError>>> = None;
    let stopping = loop {
        let paused = t.ctl.paused().is_some();
        // While the first listing runs, its retries are the paused target's probe.
        if !paused || first.is_some() {
            (probe_backoff, probe_at) = (None, None);
        } else if probe.is_none() && probe_at.is_none() {
            let b = probe_backoff
                .get_or_insert_with(|| super::queue::retry_backoff(PROBE_MIN, inner.cfg.backoff_max).build());
            probe_at = Some(Instant::now() + b.next().unwrap_or(super::queue::RETRY_CEILING));
        }
        // A paused target starts no call but its probe.
        if !paused {
            let mut q = t.queue.lock().unwrap();
            while inflight.len() < t.concurrency {
                // The lease is checked per call, under the gate a revocation closes and waits on.
                let Some(guard) = CallGuard::enter(t) else { break };
                let Some((alias, attempts, produced_ms)) = q.pop(Instant::now()) else { break };
                let (inner, t2, a) = (inner.clone(), t.clone(), alias.clone());
                let h = inflight.spawn(async move {
                    let done = reconcile_one(&inner, &t2, &a, attempts, produced_ms).await;
                    drop(guard);
                    (a, done)
                });
                running.insert(h.id(), alias);
            }
        }
        t.wakeups.fetch_add(1, Ordering::Relaxed);
        // With every permit taken, only a completed call can start work: waking for a due retry or a
        // new event would find nothing to do, again and again (a busy loop while calls hang). A
        // notification meanwhile stays stored in `notify`, and due items stay in the queue.
        let full = inflight.len() >= t.concurrency;
        let due = if full || paused { None } else { t.queue.lock().unwrap().next_due() };
        tokio::select! {
            _ = t.notify.notified(), if !full && !paused => {}
            Some(r) = inflight.join_next_with_id(), if !inflight.is_empty() => finish(t, &mut running, r),
            _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
            r = owned_rx.changed() => if r.is_err() || !*owned_rx.borrow_and_update() { break false },
            _ = shut_rx.changed() => break true,
            _ = tick.tick() => update_gauges(t),
            _ = sleep_until(probe_at.unwrap_or_else(Instant::now)), if probe_at.is_some() && probe.is_none() => {
                probe_at = None;
                probe = Some(start_probe(inner, t));
            }
            // During the first listing its retry loop takes the SIGHUP probe.
            _ = t.probe_now.notified(), if paused && probe.is_none() && first.is_none() => {
                probe_at = None;
                probe = Some(start_probe(inner, t));
            }
            r = async { probe.as_mut().unwrap().await }, if probe.is_some() => {
                probe = None;
                match r {
                    Ok(Ok(())) => resume(t),
                    Ok(Err(e)) => {
                        if let Some(reason) = policy::on_keyless_call(e.class) {
                            pause(t, reason, &e);
                        }
                        tracing::warn!(target_name = %t.name, error = %e, "probe failed; the target stays paused");
                    }
                    Err(e) => tracing::error!(target_name = %t.name, error = %e, "probe task failed"),
                }
            }
            r = async { first.as_mut().unwrap().await }, if first.is_some() => {
                first = None;
                match r {
                    Ok((report, took)) => {
                        install_listing(inner, t, report, took);
                        t.ctl.set_phase(Phase::Running);
                    }
                    // list_until_ok ends only with a listing; a panic in it is logged and the listing starts over.
                    Err(e) => {
                        tracing::error!(target_name = %t.name, error = %e, "first listing task failed; listing again");
                        first = Some(start_first_listing(inner, t));
                    }
                }
                scan_at = next_scan(inner);
            }
            _ = sleep_until(scan_at), if scan.is_none() && first.is_none() && !paused => {
                t.live.lock().unwrap().begin_scan();
                let (inner, t) = (inner.clone(), t.clone());
                scan = Some((Instant::now(), tokio::spawn(async move { scan_once(&inner, &t).await })));
            }
            r = async { (&mut scan.as_mut().unwrap().1).await }, if scan.is_some() => {
                let (started, _) = scan.take().unwrap();
                match r {
                    Ok(Ok((report, _))) => apply_scan(inner, t, report, started.elapsed(), false),
                    Ok(Err(e)) => {
                        t.live.lock().unwrap().abandon_scan();
                        metrics().scans.with_label_values(&[&t.name, "failed"]).inc();
                        tracing::warn!(target_name = %t.name, error = %e, "drift scan failed");
                        // An idle target learns of expired credentials from its scan.
                        if let Some(reason) = policy::on_keyless_call(e.class) {
                            pause(t, reason, &e);
                        }
                    }
                    Err(e) => {
                        t.live.lock().unwrap().abandon_scan();
                        tracing::error!(target_name = %t.name, error = %e, "drift scan task failed");
                    }
                }
                scan_at = next_scan(inner);
            }
        }
    };
    if let Some((_, h)) = scan {
        h.abort();
    }
    if let Some(h) = first {
        h.abort();
    }
    if let Some(h) = probe {
        h.abort();
    }
    // Let in-flight calls finish (their results stay valid); the engine bounds this on shutdown.
    while let Some(r) = inflight.join_next_with_id().await {
        finish(t, &mut running, r);
    }
    stopping
}

fn finish(
    t: &Target,
    running: &mut HashMap<tokio::task::Id, Arc<str>>,
    r: Result<(tokio::task::Id, (Arc<str>, Done)), tokio::task::JoinError>,
) {
    let (alias, done) = match r {
        Ok((id, (alias, done))) => {
            running.remove(&id);
            (alias, done)
        }
        Err(e) => {
            let Some(alias) = running.remove(&e.id()) else { return };
            tracing::error!(target_name = %t.name, alias = %alias, error = %e, "reconcile task failed; retrying");
            (alias, Done::Retry)
        }
    };
    t.queue.lock().unwrap().done(&alias, done, Instant::now());
}

fn update_gauges(t: &Target) {
    let m = metrics();
    let q = t.queue.lock().unwrap();
    let (events, age) = q.lag(Instant::now());
    m.queue_depth.with_label_values(&[&t.name]).set(q.len() as i64);
    m.target_lag_events.with_label_values(&[&t.name]).set(events as i64);
    m.target_lag_seconds.with_label_values(&[&t.name]).set(age.as_secs_f64());
}

fn clear_gauges(t: &Target) {
    let m = metrics();
    for kind in Kind::ALL {
        let _ = m.drift_aliases.remove_label_values(&[&t.name, kind.as_str()]);
    }
    *t.drift.lock().unwrap() = None;
    t.drifted.lock().unwrap().clear();
    let _ = m.queue_depth.remove_label_values(&[&t.name]);
    let _ = m.target_lag_events.remove_label_values(&[&t.name]);
    let _ = m.target_lag_seconds.remove_label_values(&[&t.name]);
    // Owner-only like the others: the next owner reports whether the target is paused.
    t.ctl.resume();
    for r in PauseReason::ALL {
        let _ = m.target_paused.remove_label_values(&[&t.name, r.as_str()]);
    }
}

/// The shortest wait before a paused target's first probe (then doubling, up to the retry ceiling).
const PROBE_MIN: Duration = Duration::from_secs(1);

/// The paused gauge of a target this instance starts working on: every reason at 0, so the alert rule
/// and dashboards see the series before the first pause.
fn seed_paused(t: &Target) {
    for r in PauseReason::ALL {
        metrics().target_paused.with_label_values(&[&t.name, r.as_str()]).set(0);
    }
}

/// Pauses the target for `reason` (or changes the reason): no writes, no dead letters, a probe resumes it.
fn pause(t: &Target, reason: PauseReason, e: &ProviderError) {
    let Some(old) = t.ctl.pause(reason) else { return };
    let m = metrics();
    if let Some(old) = old {
        m.target_paused.with_label_values(&[&t.name, old.as_str()]).set(0);
    } else {
        tracing::error!(
            target_name = %t.name,
            reason = reason.as_str(),
            error = %e,
            "target paused: the cloud refuses its credentials or permissions; no writes and no dead letters until a probe succeeds (SIGHUP probes at once)"
        );
    }
    m.target_paused.with_label_values(&[&t.name, reason.as_str()]).set(1);
}

/// A probe or listing succeeded: the target works again, parked aliases first.
fn resume(t: &Target) {
    let Some(reason) = t.ctl.resume() else { return };
    metrics().target_paused.with_label_values(&[&t.name, reason.as_str()]).set(0);
    tracing::info!(target_name = %t.name, reason = reason.as_str(), "target resumed: the cloud accepts its credentials again");
    t.notify.notify_one();
}

fn start_probe(inner: &Inner, t: &Target) -> tokio::task::JoinHandle<Result<(), ProviderError>> {
    let (p, prefixes) = (t.provider.clone(), inner.cfg.managed_prefixes.clone());
    tokio::spawn(async move { p.probe(&prefixes).await })
}

/// Reconciles one (target, alias): the latest desired value against the live one.
/// `produced_ms`: the record timestamp of the oldest change this settles (None: a repair a scan queued).
async fn reconcile_one(inner: &Inner, t: &Target, alias: &str, attempts: u32, produced_ms: Option<i64>) -> Done {
    let m = metrics();
    if !inner.cfg.may_touch(alias) {
        tracing::error!(target_name = %t.name, alias, "refused: alias outside the managed prefixes or reserved");
        m.reconcile.with_label_values(&[&t.name, "refused", "failed"]).inc();
        return Done::Drop;
    }
    // One store read lock across both reads: the reader records an old key in the view under its write lock.
    let (desired, known, revision) = {
        let s = inner.store.read().unwrap();
        let desired = s.desired(alias, t.id);
        let known = t.live.lock().unwrap().get(alias, desired.as_deref());
        (desired, known, s.revision(alias).unwrap_or(0))
    };
    // A change (not a repair) is settled once, applied or failed, on the status topic.
    let settle = |failed: Option<String>| {
        if let (Some(log), Some(_)) = (inner.changes.get(), produced_ms) {
            let key_id = desired.as_deref().map(str::to_string);
            log.settled(Settled { target: t.name.clone(), alias: alias.into(), revision, key_id, failed });
        }
    };
    let (action, live) = match known {
        Known::Unknown => (decide_unknown(desired.as_deref()), None),
        Known::Key(live) => (decide(desired.as_deref(), live.as_deref(), |d, l| t.provider.key_matches(d, l)), live),
    };
    if t.mode == Mode::Observe {
        if action != Action::Noop {
            tracing::info!(target_name = %t.name, alias, action = action.label(), "observe mode: not writing");
        }
        m.reconcile.with_label_values(&[&t.name, action.label(), "observed"]).inc();
        return Done::Success;
    }
    match execute(inner, t, alias, &action, live.as_deref()).await {
        Ok(done) => {
            if done != Action::Noop {
                tracing::info!(target_name = %t.name, alias, action = done.label(), key = ?desired.as_deref(), "reconciled");
            }
            m.reconcile.with_label_values(&[&t.name, done.label(), "ok"]).inc();
            t.failed.lock().unwrap().remove(alias);
            repaired(t, alias);
            if let Some(p) = produced_ms.filter(|&p| p >= t.working_since_ms.load(Ordering::Relaxed)) {
                let ms = chrono::Utc::now().timestamp_millis().saturating_sub(p).max(0);
                m.apply_latency.with_label_values(&[&t.name]).observe(ms as f64 / 1000.0);
            }
            settle(None);
            Done::Success
        }
        Err(e) => {
            let paused = t.ctl.paused().is_some();
            let (verdict, e) = match policy::on_call(e.class, attempts, inner.cfg.consistency_retries, paused) {
                Verdict::CheckAccess => match t.provider.probe(&inner.cfg.managed_prefixes).await {
                    // Denied for this key only (a key policy): the alias's problem.
                    Ok(()) if t.ctl.paused().is_none() => (Verdict::DeadLetter, e),
                    Ok(()) => (Verdict::Park, e),
                    Err(pe) => match policy::on_keyless_call(pe.class) {
                        Some(reason) => (Verdict::Pause(reason), pe),
                        None => (Verdict::Retry, e),
                    },
                },
                v => (v, e),
            };
            if let Verdict::Pause(reason) = verdict {
                pause(t, reason, &e);
            }
            if matches!(verdict, Verdict::Park | Verdict::Pause(_)) {
                tracing::debug!(target_name = %t.name, alias, action = action.label(), error = %e, "parked: the target is paused");
                m.reconcile.with_label_values(&[&t.name, action.label(), "parked"]).inc();
                Done::Park
            } else if verdict == Verdict::Retry {
                tracing::debug!(target_name = %t.name, alias, action = action.label(), error = %e, attempts, "retrying");
                m.reconcile.with_label_values(&[&t.name, action.label(), "retry"]).inc();
                Done::Retry
            } else {
                tracing::error!(target_name = %t.name, alias, action = action.label(), error = %e, "permanent failure; dead-lettered");
                m.reconcile.with_label_values(&[&t.name, action.label(), "failed"]).inc();
                let f = PermanentFailure {
                    target: t.name.clone(),
                    alias: alias.to_string(),
                    key_id: desired.as_deref().map(str::to_string),
                    action: action.label(),
                    code: e.code.clone(),
                    reason: super::preflight::dead_letter_reason(&e),
                    message: e.message.clone(),
                    at_unix: unix_now(),
                };
                {
                    let mut fl = t.failures.lock().unwrap();
                    if fl.len() == RECENT_FAILURES {
                        fl.pop_front();
                    }
                    fl.push_back(f.clone());
                }
                settle(Some(f.code.clone()));
                inner.sink.permanent(f);
                t.failed.lock().unwrap().insert(alias.into(), Instant::now());
                Done::Drop
            }
        }
    }
}

/// A reconcile succeeded: if the last scan reported the alias, its drift is gone now.
fn repaired(t: &Target, alias: &str) {
    let Some(kind) = t.drifted.lock().unwrap().remove(alias) else { return };
    metrics().drift_aliases.with_label_values(&[&t.name, kind.as_str()]).dec();
    if let Some(d) = t.drift.lock().unwrap().as_mut() {
        d.aliases.retain(|x| x.alias != alias);
        match kind {
            Kind::Missing => d.missing -= 1,
            Kind::WrongKey => d.wrong_key -= 1,
            Kind::Orphan => d.orphan -= 1,
        }
    }
}

/// Performs an action; returns what was actually done. Errors that reveal the live state are
/// followed through (AlreadyExists → read → update if needed; NotFound on update → create). A create
/// or re-point passes the pre-flight first: a violation is an error, and nothing is written.
async fn execute(
    inner: &Inner,
    t: &Target,
    alias: &str,
    action: &Action,
    live: Option<&str>,
) -> Result<Action, ProviderError> {
    let p = &t.provider;
    let remember = |key: Option<&str>| {
        let s = inner.store.read().unwrap();
        let desired = s.desired(alias, t.id);
        t.live.lock().unwrap().observed(alias, key, desired.as_deref(), |d, l| p.key_matches(d, l));
    };
    // `live` is None for a create: the alias is absent, or its live state unknown (then checked below).
    if let Action::Create(k) | Action::Update(k) = action {
        t.preflight.check(p, k, live).await?;
    }
    match action {
        Action::Noop => Ok(Action::Noop),
        Action::Create(k) => match p.create_alias(alias, k).await {
            Ok(()) => {
                remember(Some(k));
                Ok(action.clone())
            }
            Err(e) if e.class == ErrorClass::AlreadyExists => {
                let current = p.get_alias(alias).await?;
                remember(current.as_deref());
                match current {
                    Some(c) if p.key_matches(k, &c) => Ok(Action::Noop),
                    Some(c) => {
                        t.preflight.check(p, k, Some(&c)).await?;
                        p.update_alias(alias, k).await?;
                        remember(Some(k));
                        Ok(Action::Update(k.clone()))
                    }
                    // Deleted in between: retry from the top.
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        },
        Action::Update(k) => match p.update_alias(alias, k).await {
            Ok(()) => {
                remember(Some(k));
                Ok(action.clone())
            }
            Err(e) if e.class == ErrorClass::NotFound => {
                // Either the alias went away behind our back, or the key is not visible yet.
                let current = p.get_alias(alias).await?;
                remember(current.as_deref());
                if current.is_some() {
                    return Err(e);
                }
                p.create_alias(alias, k).await?;
                remember(Some(k));
                Ok(Action::Create(k.clone()))
            }
            Err(e) => Err(e),
        },
        Action::Delete => match p.delete_alias(alias, live).await {
            Ok(()) => {
                remember(None);
                Ok(Action::Delete)
            }
            Err(e) if e.class == ErrorClass::NotFound => {
                remember(None);
                Ok(Action::Noop)
            }
            Err(e) => Err(e),
        },
    }
}
