//! `aliassync run`: wires the stages together (source → desired state → reconcile → provider) and
//! handles signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads credentials and the log level. It also
//! talks to systemd (READY/STATUS/RELOADING/STOPPING/WATCHDOG). Nothing here knows a wire format.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, Problem, ProviderKind};
use crate::desired::Store;
use crate::event::{Decoder, TargetId};
use crate::provider::alibaba::AlibabaKms;
use crate::provider::aws::AwsKms;
use crate::provider::huawei::HuaweiKms;
use crate::provider::{KmsAliases, SharedCredentials};
use crate::reconcile::governed::Governed;
use crate::reconcile::{Engine, EngineConfig, TargetSpec};
use crate::source::dead_letter::DeadLetters;
use crate::source::leases::{LeaseError, LeaseListener, Leases};
use crate::source::probe::{self, ProbeError};
use crate::source::table::{Table, TableArgs};
use crate::source::{admin, client_config, lease_partition_of_target};
use crate::telemetry::{logging, notify};

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

/// Builds each target's provider, wrapped in its rate limits and instrumentation.
pub fn build_targets(cfg: &Config) -> Result<Vec<TargetSpec>, RunError> {
    build_reloadable_targets(cfg).map(|(specs, _)| specs)
}

/// [`build_targets`], plus each target's swappable credentials (by target name) for SIGHUP reloads.
pub fn build_reloadable_targets(
    cfg: &Config,
) -> Result<(Vec<TargetSpec>, BTreeMap<String, SharedCredentials>), RunError> {
    let creds = cfg.resolve_credentials()?;
    let mut specs = Vec::new();
    let mut handles = BTreeMap::new();
    for (i, (name, t)) in cfg.targets.iter().enumerate() {
        let timeout = Duration::from_secs_f64(t.request_timeout_seconds);
        let c = creds[name].clone();
        let startup = |e: String| RunError::Startup(format!("target {name}: {e}"));
        let (raw, handle): (Arc<dyn KmsAliases>, SharedCredentials) = match t.provider {
            ProviderKind::Aws => {
                let p = AwsKms::new(&t.region, t.endpoint.as_deref(), t.signing_service.as_deref(), c, timeout)
                    .map_err(startup)?;
                let h = p.credentials();
                (Arc::new(p), h)
            }
            ProviderKind::Alibaba => {
                let p = AlibabaKms::new(&t.region, t.endpoint.as_deref(), c, timeout).map_err(startup)?;
                let h = p.credentials();
                (Arc::new(p), h)
            }
            ProviderKind::Huawei => {
                let p = HuaweiKms::new(
                    &t.region,
                    t.endpoint.as_deref(),
                    t.project_id.as_deref().unwrap_or_default(),
                    t.alias_prefix(),
                    c,
                    timeout,
                )
                .map_err(startup)?;
                let h = p.credentials();
                (Arc::new(p), h)
            }
        };
        handles.insert(name.clone(), handle);
        specs.push(TargetSpec {
            id: i as TargetId,
            name: name.clone(),
            provider: Arc::new(Governed::new(raw, name, t.provider.as_str(), t.write_rate(), t.read_rate())),
            concurrency: t.concurrency,
            mode: t.mode,
            prune: t.prune,
        });
    }
    Ok((specs, handles))
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
    let (specs, credentials) = build_reloadable_targets(&cfg)?;
    let reloader = Reloader { path: path.to_owned(), running: cfg.clone(), credentials };
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
    let (lease_topic, dead_letter_topic) = (cfg.lease_topic(), cfg.dead_letter_topic());
    let mut topic_partitions = BTreeMap::new();
    let halted = loop {
        let attempt = async {
            probe::check(&base, &cfg.kafka.topic).await?;
            // Metadata first, creation only of what is missing: a principal without CREATE starts fine
            // against topics made for it, and one that lacks it for a missing topic is told so at once.
            let specs = [
                admin::TopicSpec { name: &lease_topic, partitions: cfg.kafka.lease_partitions, configs: &[] },
                admin::TopicSpec { name: &dead_letter_topic, partitions: 1, configs: &[] },
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
            while hangup.recv().await.is_some() {
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

/// How a supervised task ended: which task, and the error the daemon exits with.
struct TaskEnd {
    task: &'static str,
    error: Option<RunError>,
    panic: Option<String>,
}

impl TaskEnd {
    fn into_error(self) -> RunError {
        match (self.error, self.panic) {
            (Some(e), _) => e,
            (None, Some(p)) => RunError::Failed(format!("the {} task panicked: {p}", self.task)),
            (None, None) => RunError::Failed(format!("the {} task ended", self.task)),
        }
    }
}

/// Aborts the watched task when its watcher is aborted or dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches `inner`, a task that should run until shutdown: its end (a return, judged by `verdict`, or a panic)
/// is reported on `ends`. Aborting the returned handle aborts `inner` and reports nothing.
fn supervise<T: Send + 'static>(
    task: &'static str,
    inner: JoinHandle<T>,
    ends: &mpsc::UnboundedSender<TaskEnd>,
    verdict: impl FnOnce(T) -> Option<RunError> + Send + 'static,
) -> JoinHandle<()> {
    let ends = ends.clone();
    // Owned by the future from the start: a watcher aborted before its first poll still aborts `inner`.
    let guard = AbortOnDrop(inner.abort_handle());
    tokio::spawn(async move {
        let _guard = guard;
        let end = match inner.await {
            Ok(v) => TaskEnd { task, error: verdict(v), panic: None },
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                TaskEnd { task, error: None, panic: Some(msg) }
            }
            Err(_) => return, // cancelled: shutdown
        };
        let _ = ends.send(end);
    })
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

/// SIGHUP: re-reads the config file for what can change without a restart, i.e. every target's credentials
/// (`env:` / `file:`) and `log.level`. Everything else (Kafka settings, prefixes, targets added or removed,
/// endpoints, rate limits, …) is compared with the running configuration and reported as needing a restart.
pub struct Reloader {
    path: PathBuf,
    /// The configuration the daemon started with.
    running: Config,
    credentials: BTreeMap<String, SharedCredentials>,
}

impl Reloader {
    pub fn new(path: PathBuf, running: Config, credentials: BTreeMap<String, SharedCredentials>) -> Self {
        Reloader { path, running, credentials }
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
        let restart = needs_restart(&self.running, &new);
        if !restart.is_empty() {
            tracing::warn!(keys = %restart.join(", "), "reload: these settings changed but only apply after a restart");
        }
        let mut summary = format!("reloaded credentials of {reloaded} targets ({changed} changed)");
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

    #[tokio::test]
    async fn a_supervised_task_that_panics_or_returns_is_reported_and_an_aborted_one_is_not() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _p = supervise("panicky", tokio::spawn(async { panic!("boom") }), &tx, |()| None);
        let end = rx.recv().await.unwrap().into_error().to_string();
        assert_eq!(end, "the panicky task panicked: boom");
        let _r = supervise("quitter", tokio::spawn(async {}), &tx, |()| None);
        assert_eq!(rx.recv().await.unwrap().into_error().to_string(), "the quitter task ended");
        let _e = supervise("failing", tokio::spawn(async { 7 }), &tx, |v| Some(RunError::Failed(format!("code {v}"))));
        assert_eq!(rx.recv().await.unwrap().into_error().to_string(), "code 7");
        // Aborting the watcher aborts the task (shutdown), and nothing is reported.
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let w = supervise(
            "forever",
            tokio::spawn(async move {
                let _keep = dropped_tx;
                std::future::pending::<()>().await
            }),
            &tx,
            |()| None,
        );
        w.abort();
        assert!(dropped_rx.await.is_err(), "the watched task was aborted");
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

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
