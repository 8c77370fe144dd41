//! `aliassync run`: wires the stages together (source → desired state → reconcile → provider) and
//! handles shutdown. Nothing here knows a wire format.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, ConfigError, ProviderKind};
use crate::desired::Store;
use crate::event::{Decoder, TargetId};
use crate::provider::alibaba::AlibabaKms;
use crate::provider::aws::AwsKms;
use crate::provider::huawei::HuaweiKms;
use crate::provider::KmsAliases;
use crate::reconcile::governed::Governed;
use crate::reconcile::{Engine, EngineConfig, TargetSpec};
use crate::source::dead_letter::DeadLetters;
use crate::source::leases::Leases;
use crate::source::table::{Table, TableArgs};
use crate::source::{admin, client_config, lease_partition_of_target};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Startup(String),
}

/// Builds each target's provider, wrapped in its rate limits and instrumentation.
pub fn build_targets(cfg: &Config) -> Result<Vec<TargetSpec>, RunError> {
    let creds = cfg.resolve_credentials()?;
    let mut specs = Vec::new();
    for (i, (name, t)) in cfg.targets.iter().enumerate() {
        let timeout = Duration::from_secs_f64(t.request_timeout_seconds);
        let c = creds[name].clone();
        let raw: Arc<dyn KmsAliases> = match t.provider {
            ProviderKind::Aws => Arc::new(
                AwsKms::new(&t.region, t.endpoint.as_deref(), t.signing_service.as_deref(), c, timeout)
                    .map_err(|e| RunError::Startup(format!("target {name}: {e}")))?,
            ),
            ProviderKind::Alibaba => Arc::new(
                AlibabaKms::new(&t.region, t.endpoint.as_deref(), c, timeout)
                    .map_err(|e| RunError::Startup(format!("target {name}: {e}")))?,
            ),
            ProviderKind::Huawei => Arc::new(
                HuaweiKms::new(
                    &t.region,
                    t.endpoint.as_deref(),
                    t.project_id.as_deref().unwrap_or_default(),
                    t.alias_prefix(),
                    c,
                    timeout,
                )
                .map_err(|e| RunError::Startup(format!("target {name}: {e}")))?,
            ),
        };
        specs.push(TargetSpec {
            id: i as TargetId,
            name: name.clone(),
            provider: Arc::new(Governed::new(raw, name, t.provider.as_str(), t.write_rate(), t.read_rate())),
            concurrency: t.concurrency,
            mode: t.mode,
            prune: t.prune,
        });
    }
    Ok(specs)
}

pub async fn run(cfg: Config) -> Result<(), RunError> {
    let specs = build_targets(&cfg)?;
    run_with(cfg, specs, shutdown_signal()).await
}

/// The daemon with given targets (one per configured target, in config order) until `stop` resolves.
/// Benchmarks use it with in-process targets.
pub async fn run_with(
    cfg: Config,
    specs: Vec<TargetSpec>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let base = client_config(&cfg)?;
    tokio::pin!(stop);
    let names: Vec<String> = cfg.targets.keys().cloned().collect();
    let store = Arc::new(RwLock::new(Store::new(names.len())));
    let dlq = DeadLetters::new(&base, &cfg.dead_letter_topic()).map_err(RunError::Startup)?;
    let (sink, _sink_task) = dlq.failure_sink();
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
    let addr = cfg.metrics.listen.parse().expect("validated");
    let http = crate::telemetry::http::serve(addr, engine.clone(), ready_rx, shut_rx.clone())
        .await
        .map_err(|e| RunError::Startup(format!("metrics.listen {addr}: {e}")))?;
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), targets = names.len(), "aliassync starting");

    // Topics the daemon owns; the broker may still be starting, so keep trying.
    let mut delay = Duration::from_millis(500);
    loop {
        let r = async {
            admin::ensure_topic(&base, &cfg.lease_topic(), cfg.kafka.lease_partitions, &[]).await?;
            admin::ensure_topic(&base, &cfg.dead_letter_topic(), 1, &[]).await
        }
        .await;
        match r {
            Ok(()) => break,
            Err(e) => tracing::error!(error = %e, "cannot create the lease / dead-letter topics; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut stop => return Ok(()),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }

    let leases = Leases::join(&base, &cfg.kafka.group_id, &cfg.lease_topic(), cfg.kafka.lease_session_timeout_ms)
        .map_err(RunError::Startup)?;
    let poller = leases.spawn_poller();
    let lease_partitions = cfg.kafka.lease_partitions;
    let target_partition: Vec<i32> = names.iter().map(|n| lease_partition_of_target(n, lease_partitions)).collect();
    let mut owned_rx = leases.owned.clone();
    let eng = engine.clone();
    let owner_task = tokio::spawn(async move {
        loop {
            let owned: HashSet<TargetId> = {
                let parts = owned_rx.borrow_and_update();
                (0..target_partition.len())
                    .filter(|&i| parts.contains(&target_partition[i]))
                    .map(|i| i as TargetId)
                    .collect()
            };
            eng.set_owned(&owned);
            if owned_rx.changed().await.is_err() {
                return;
            }
        }
    });
    engine.start();

    let table = Table::new(
        &base,
        TableArgs {
            topic: cfg.kafka.topic.clone(),
            group_id: cfg.kafka.group_id.clone(),
            decoder: Decoder::from_config(&cfg),
            store,
            target_names: names,
            engine: engine.clone(),
            dlq: dlq.clone(),
            lease_partitions,
            leases: leases.owned.clone(),
            ready: ready_tx,
        },
    )
    .map_err(RunError::Startup)?;
    let table_task = tokio::spawn(table.run(shut_rx.clone()));

    stop.await;
    tracing::info!("shutting down: draining in-flight reconciles");
    shut_tx.send_replace(true);
    let _ = table_task.await;
    engine.shutdown(Duration::from_secs(cfg.reconcile.drain_timeout_seconds)).await;
    owner_task.abort();
    leases.leave(poller).await;
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
