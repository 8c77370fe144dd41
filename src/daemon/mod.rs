//! `aliassync run`: wires the stages together (source → desired state → reconcile → provider) and
//! handles signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads credentials and the log level. It also
//! talks to systemd (READY/STATUS/RELOADING/STOPPING/WATCHDOG). Nothing here knows a wire format.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigError, Problem};
use crate::desired::Store;
use crate::event::{Decoder, TargetId};
use crate::reconcile::{Engine, EngineConfig, TargetSpec};
use crate::source::dead_letter::DeadLetters;
use crate::source::leases::{LeaseError, LeaseListener, Leases};
use crate::source::probe::{self, ProbeError};
use crate::source::table::{Table, TableArgs};
use crate::source::{admin, client_config, lease_partition_of_target, status};
use crate::telemetry::notify;

mod reload;
mod supervise;
mod targets;

pub use reload::{needs_restart, Reloader};
use supervise::{supervise, TaskEnd};
pub use targets::{build_reloadable_targets, build_targets};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Startup(String),
    /// A critical task (reader, leases, ownership, dead letters) ended or panicked while the daemon ran.
    #[error("{0}")]
    Failed(String),
}

/// `aliassync run`: the daemon on its own multi-threaded runtime until SIGTERM/SIGINT. `path` is the config
/// file `cfg` came from; SIGHUP re-reads it.
pub fn run_blocking(cfg: Config, path: &Path) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Startup(format!("tokio runtime: {e}")))?;
    let r = rt.block_on(run(cfg, path));
    // Never hang the exit on a blocking call that is still out (e.g. a broker that does not answer).
    rt.shutdown_timeout(Duration::from_secs(2));
    r
}

pub async fn run(cfg: Config, path: &Path) -> Result<(), RunError> {
    // Handlers first: SIGHUP's default action would end the process.
    let stop = shutdown_signal();
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("SIGHUP handler");
    let (specs, credentials) = build_reloadable_targets(&cfg).await?;
    let reloader = Reloader::new(path.to_owned(), cfg.clone(), credentials);
    run_inner(cfg, specs, stop, Some((reloader, hangup))).await
}

/// The daemon with given targets (one per configured target, in config order) until `stop` resolves.
/// Benchmarks use it with in-process targets. No SIGHUP handling.
pub async fn run_with(
    cfg: Config,
    specs: Vec<TargetSpec>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    run_inner(cfg, specs, stop, None).await
}

/// Lease partitions → the engine's targets, on the lease consumer's rebalance callbacks.
struct EngineLeases {
    engine: Engine,
    target_partition: Vec<i32>,
    drain: Duration,
}

impl EngineLeases {
    fn targets(&self, partitions: &[i32]) -> Vec<TargetId> {
        (0..self.target_partition.len())
            .filter(|&i| partitions.contains(&self.target_partition[i]))
            .map(|i| i as TargetId)
            .collect()
    }
}

impl LeaseListener for EngineLeases {
    fn assigned(&self, partitions: &[i32]) {
        self.engine.acquire(&self.targets(partitions));
    }

    fn revoking(&self, partitions: &[i32]) {
        self.engine.release(&self.targets(partitions), self.drain);
    }

    fn lost(&self, partitions: &[i32]) {
        self.engine.release(&self.targets(partitions), Duration::ZERO);
    }
}

fn status_line(aliases: usize, owned: usize, targets: usize) -> String {
    format!("ready: {aliases} desired aliases, owns {owned} of {targets} targets")
}

async fn run_inner(
    cfg: Config,
    specs: Vec<TargetSpec>,
    stop: impl std::future::Future<Output = ()>,
    reload: Option<(Reloader, tokio::signal::unix::Signal)>,
) -> Result<(), RunError> {
    let base = client_config(&cfg)?;
    tokio::pin!(stop);
    let names: Vec<String> = cfg.targets.keys().cloned().collect();
    let store = Arc::new(RwLock::new(Store::new(names.len())));
    // Pings run from the start: waiting for a broker at boot is not a hang.
    let watchdog = {
        let store = store.clone();
        notify::spawn_watchdog(move || store.read().is_ok())
    };
    notify::status("starting: connecting to Kafka");
    let dlq = DeadLetters::new(&base, &cfg.dead_letter_topic()).map_err(RunError::Startup)?;
    let (sink, sink_task) = dlq.failure_sink();
    let engine = Engine::new(
        specs,
        store.clone(),
        EngineConfig {
            backoff_min: Duration::from_millis(cfg.reconcile.backoff_min_ms),
            backoff_max: Duration::from_millis(cfg.reconcile.backoff_max_ms),
            consistency_retries: cfg.reconcile.consistency_retries,
            managed_prefixes: cfg.ownership.managed_prefixes.clone(),
            scan_interval: Duration::from_secs(cfg.drift.scan_interval_seconds),
            preflight: cfg.safety.preflight,
        },
        Arc::new(sink),
    );
    let (ready_tx, ready_rx) = watch::channel(false);
    let (shut_tx, shut_rx) = watch::channel(false);
    // The endpoints stay up until the very end, so /readyz answers 503 (not a refused connection) while the
    // daemon drains and closes its clients.
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let addr = cfg.metrics.listen.parse().expect("validated");
    let http = crate::telemetry::http::serve(addr, engine.clone(), ready_rx.clone(), http_stop_rx)
        .await
        .map_err(|e| RunError::Startup(format!("metrics.listen {addr}: {e}")))?;
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), targets = names.len(), "aliassync starting");

    // Topics the daemon owns; the broker may still be starting (or refusing us), so keep trying, and let
    // SIGTERM end the wait at any point. A TLS failure ends it too: no retry fixes an untrusted certificate.
    let mut delay = Duration::from_millis(500);
    let (lease_topic, dead_letter_topic, status_topic) =
        (cfg.lease_topic(), cfg.dead_letter_topic(), cfg.status_topic());
    let mut topic_partitions = BTreeMap::new();
    let halted = loop {
        let attempt = async {
            probe::check(&base, &cfg.kafka.topic).await?;
            // Metadata first, creation only of what is missing: a principal without CREATE starts fine
            // against topics made for it, and one that lacks it for a missing topic is told so at once.
            let specs = [
                admin::TopicSpec { name: &lease_topic, partitions: cfg.kafka.lease_partitions, configs: &[] },
                admin::TopicSpec { name: &dead_letter_topic, partitions: 1, configs: &[] },
                admin::TopicSpec {
                    name: &status_topic,
                    partitions: status::PARTITIONS,
                    configs: &[("cleanup.policy", "compact")],
                },
            ];
            admin::ensure_topics(&base, &specs).await.map_err(|e| match e {
                admin::TopicError::NotAuthorized(m) => ProbeError::Fatal(m),
                admin::TopicError::Unavailable(m) => ProbeError::Unavailable(m),
            })
        };
        let stopped = tokio::select! {
            r = attempt => match r {
                Ok(found) => {
                    topic_partitions = found;
                    break None;
                }
                Err(ProbeError::Fatal(e)) => {
                    notify::status(&format!("failed: {e}"));
                    break Some(Err(RunError::Startup(e)));
                }
                Err(ProbeError::Unavailable(e)) => {
                    tracing::error!(error = %e, "cannot create the lease / dead-letter topics; retrying");
                    notify::status(&format!("starting: Kafka unavailable ({e}); retrying"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => false,
                        _ = &mut stop => true,
                    }
                }
            },
            _ = &mut stop => true,
        };
        if stopped {
            notify::stopping("stopping: Kafka was never reached");
            tracing::info!("shutting down before Kafka was reached");
            break Some(Ok(()));
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    if let Some(result) = halted {
        shut_tx.send_replace(true);
        http_stop_tx.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        if let Some(w) = watchdog {
            w.abort();
        }
        if result.is_ok() {
            tracing::info!("stopped");
        }
        return result;
    }

    // Every instance hashes over the lease topic's real partition count: with the config's, targets hashing
    // above the topic's count would never be owned. Adopted rather than fatal: the topic is what all instances
    // share, and a stale config line on one host must not stop it.
    let lease_partitions = match topic_partitions.get(&lease_topic) {
        Some(&n) if n != cfg.kafka.lease_partitions => {
            tracing::warn!(
                key = "kafka.lease_partitions",
                configured = cfg.kafka.lease_partitions,
                topic = %lease_topic,
                partitions = n,
                "the lease topic exists with another partition count; using the topic's (set kafka.lease_partitions = {n} to silence this)"
            );
            n
        }
        Some(&n) => n,
        None => cfg.kafka.lease_partitions,
    };
    // Records go to the partition their key hashes to in the topic as it is (a reader computes the same).
    let status_partitions = topic_partitions.get(&status_topic).copied().unwrap_or(status::PARTITIONS);
    let status_log =
        Arc::new(status::StatusLog::new(&base, &status_topic, status_partitions).map_err(RunError::Startup)?);
    engine.set_change_log(status_log.clone());
    let instance_id = cfg.instance_id();
    tracing::info!(group = %cfg.kafka.group_id, %instance_id, lease_partitions, "joining the lease group (static membership)");
    let target_partition: Vec<i32> = names.iter().map(|n| lease_partition_of_target(n, lease_partitions)).collect();
    let listener = Arc::new(EngineLeases {
        engine: engine.clone(),
        target_partition: target_partition.clone(),
        drain: Duration::from_secs(cfg.reconcile.drain_timeout_seconds),
    });
    let leases = Leases::join(
        &base,
        &cfg.kafka.group_id,
        &instance_id,
        &lease_topic,
        cfg.kafka.lease_session_timeout_ms,
        listener,
    )
    .map_err(RunError::Startup)?;
    // Every task the daemon cannot run without reports its end here; any end before shutdown is a failure.
    let (ends_tx, mut ends) = mpsc::unbounded_channel::<TaskEnd>();
    let (group, fenced_id) = (cfg.kafka.group_id.clone(), instance_id.clone());
    let poller = supervise("lease consumer", leases.spawn_poller(), &ends_tx, move |r| match r {
        Ok(()) => None,
        Err(LeaseError::Fenced { reason, .. }) => Some(RunError::Config(ConfigError::Invalid(vec![Problem {
            key: "kafka.instance_id".into(),
            problem: format!(
                "{fenced_id:?} is in use by another instance of lease group {group}, and Kafka fenced this one \
                 out (FENCED_INSTANCE_ID: {reason})"
            ),
            fix: "give every instance its own kafka.instance_id (ALIASSYNC__KAFKA__INSTANCE_ID), e.g. the host \
                  name plus \"-2\" for a second instance on one host"
                .into(),
        }]))),
        Err(e) => Some(RunError::Failed(e.to_string())),
    });
    let sink_task = supervise("dead-letter sink", sink_task, &ends_tx, |()| None);
    let mut owned_rx = leases.owned.clone();
    let owned_count = Arc::new(AtomicUsize::new(0));
    let (oc, ready_now, st) = (owned_count.clone(), ready_rx.clone(), store.clone());
    let owner_task = tokio::spawn(async move {
        loop {
            let owned: HashSet<TargetId> = {
                let parts = owned_rx.borrow_and_update();
                (0..target_partition.len())
                    .filter(|&i| parts.contains(&target_partition[i]))
                    .map(|i| i as TargetId)
                    .collect()
            };
            // Leases are gained and released by the rebalance callbacks (EngineLeases); this only reports.
            oc.store(owned.len(), Ordering::Relaxed);
            if *ready_now.borrow() {
                let n = st.read().map(|s| s.len()).unwrap_or(0);
                notify::status(&status_line(n, owned.len(), target_partition.len()));
            }
            if owned_rx.changed().await.is_err() {
                return;
            }
        }
    });
    let owner_task = supervise("ownership", owner_task, &ends_tx, |()| None);
    engine.start();

    let total = names.len();
    let table_store = store.clone();
    let table = Table::new(
        &base,
        TableArgs {
            topic: cfg.kafka.topic.clone(),
            group_id: cfg.kafka.group_id.clone(),
            decoder: Decoder::from_config(&cfg),
            store: table_store,
            target_names: names,
            engine: engine.clone(),
            dlq: dlq.clone(),
            lease_partitions,
            leases: leases.owned.clone(),
            ready: ready_tx.clone(),
        },
    )
    .map_err(RunError::Startup)?;
    let mut table = table;
    let duty_task = table.take_duty_task().map(|t| supervise("dead-letter duty", t, &ends_tx, |()| None));
    let mut table_task =
        supervise("desired-topic reader", tokio::spawn(table.run(shut_rx.clone())), &ends_tx, |()| None);
    drop(ends_tx);
    notify::status(&format!("starting: rebuilding the desired state from {}", cfg.kafka.topic));

    // READY=1 once the desired state is rebuilt (the table flips `ready`).
    let ready_task = {
        let (mut ready, store, oc) = (ready_rx.clone(), store.clone(), owned_count.clone());
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                let n = store.read().map(|s| s.len()).unwrap_or(0);
                notify::ready(&status_line(n, oc.load(Ordering::Relaxed), total));
            }
        })
    };
    let reload_task = reload.map(|(reloader, mut hangup)| {
        let (ready, store, oc) = (ready_rx.clone(), store.clone(), owned_count.clone());
        let eng = engine.clone();
        tokio::spawn(async move {
            let changed = reloader.credentials_changed.clone();
            loop {
                tokio::select! {
                    sig = hangup.recv() => if sig.is_none() { break },
                    // A refresher installed new keys: a target paused for its credentials is probed at once.
                    () = changed.notified() => {
                        eng.probe_paused();
                        continue;
                    }
                }
                // RELOADING=1 … READY=1 only once started: a READY=1 before that would end start-up early.
                let started = *ready.borrow();
                if started {
                    notify::reloading();
                }
                let summary = reloader.reload();
                // New credentials may be what a paused target waits for: probe now, not at its next backoff.
                eng.probe_paused();
                if started {
                    let n = store.read().map(|s| s.len()).unwrap_or(0);
                    notify::ready(&format!("{}; {summary}", status_line(n, oc.load(Ordering::Relaxed), total)));
                }
            }
        })
    });

    // One shutdown path, for SIGTERM/SIGINT and for a critical task's end alike.
    let failure = tokio::select! {
        () = &mut stop => None,
        end = ends.recv() => Some(end.map_or_else(|| RunError::Failed("every critical task ended".into()), TaskEnd::into_error)),
    };
    let drain = Duration::from_secs(cfg.reconcile.drain_timeout_seconds);
    // Not ready from now on: /readyz answers 503 while the daemon drains.
    ready_tx.send_replace(false);
    tracing::info!("not ready: /readyz answers 503 from now on");
    if let Some(e) = &failure {
        // The exit is non-zero so that systemd restarts the daemon (78 for a configuration problem, which a
        // restart would not fix).
        tracing::error!(error = %e, "a critical task stopped; shutting down");
        notify::stopping(&format!("failed: {e}"));
    } else {
        notify::stopping("stopping: draining in-flight reconciles");
    }
    tracing::info!(drain_timeout_seconds = drain.as_secs(), "shutting down: draining in-flight reconciles");
    if let Some(t) = reload_task {
        t.abort();
    }
    ready_task.abort();
    shut_tx.send_replace(true);
    // The table stops reading (it holds nothing that the topic does not) while in-flight reconciles drain.
    let table_stop = async {
        if tokio::time::timeout(drain, &mut table_task).await.is_err() {
            table_task.abort();
        }
    };
    tokio::join!(table_stop, engine.shutdown(drain));
    owner_task.abort();
    if let Some(t) = duty_task {
        t.abort();
    }
    sink_task.abort();
    // The drained reconciles' status records: `wait` would otherwise time out on the last ones.
    tokio::task::block_in_place(|| status_log.flush(Duration::from_secs(5)));
    // A static member sends no LeaveGroup: its targets stay leased to this instance id until the session
    // timeout, so a restart within it resumes them without a rebalance (see source/leases.rs).
    if tokio::time::timeout(Duration::from_secs(10), leases.leave(poller)).await.is_err() {
        tracing::warn!("closing the lease consumer timed out");
    }
    http_stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(e) => {
            tracing::error!(error = %e, "stopped after a failure");
            Err(e)
        }
    }
}

/// Registers the SIGTERM and SIGINT handlers now (so neither kills the process during start-up) and resolves
/// on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
