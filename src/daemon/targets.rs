//! Each configured target's provider, built from the config and wrapped in its rate limits and instrumentation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::RunError;
use crate::config::{Config, ProviderKind};
use crate::event::TargetId;
use crate::provider::alibaba::AlibabaKms;
use crate::provider::aws::AwsKms;
use crate::provider::huawei::HuaweiKms;
use crate::provider::{KmsAliases, SharedCredentials};
use crate::reconcile::governed::Governed;
use crate::reconcile::TargetSpec;

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
    // One HTTP client per request timeout, shared by every target that has it: reqwest pools connections
    // (and TLS sessions) per host inside a client, so a thousand targets cost one client, not a thousand.
    let mut clients: BTreeMap<Duration, reqwest::Client> = BTreeMap::new();
    for (i, (name, t)) in cfg.targets.iter().enumerate() {
        let timeout = Duration::from_secs_f64(t.request_timeout_seconds);
        let c = creds[name].clone();
        let startup = |e: String| RunError::Startup(format!("target {name}: {e}"));
        let client = match clients.get(&timeout) {
            Some(c) => c.clone(),
            None => {
                let c = crate::provider::http::try_client(timeout).map_err(startup)?;
                clients.insert(timeout, c.clone());
                c
            }
        };
        let (raw, handle): (Arc<dyn KmsAliases>, SharedCredentials) = match t.provider {
            ProviderKind::Aws => {
                let p = AwsKms::with_client(&t.region, t.endpoint.as_deref(), t.signing_service.as_deref(), c, client)
                    .map_err(startup)?;
                let h = p.credentials();
                (Arc::new(p), h)
            }
            ProviderKind::Alibaba => {
                let p = AlibabaKms::with_client(&t.region, t.endpoint.as_deref(), c, client).map_err(startup)?;
                let h = p.credentials();
                (Arc::new(p), h)
            }
            ProviderKind::Huawei => {
                let p = HuaweiKms::with_client(
                    &t.region,
                    t.endpoint.as_deref(),
                    t.project_id.as_deref().unwrap_or_default(),
                    t.alias_prefix(),
                    c,
                    client,
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
