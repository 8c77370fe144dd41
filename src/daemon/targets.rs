//! Each configured target's provider, built from the config and wrapped in its rate limits and instrumentation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::RunError;

use crate::config::{Config, ProviderKind};
use crate::credentials::{CredentialError, CredentialSource, Resolved};
use crate::event::TargetId;
use crate::provider::alibaba::AlibabaKms;
use crate::provider::aws::AwsKms;
use crate::provider::huawei::HuaweiKms;
use crate::provider::{KmsAliases, SharedCredentials};
use crate::reconcile::governed::Governed;
use crate::reconcile::TargetSpec;

/// Builds each target's provider, wrapped in its rate limits and instrumentation, with credentials resolved
/// once (the CLI: a target whose credentials cannot be resolved is an error naming it).
pub async fn build_targets(cfg: &Config) -> Result<Vec<TargetSpec>, RunError> {
    build_with_credentials(cfg, true).await.map(|(specs, _)| specs)
}

/// One target's credentials as the daemon holds them: what the providers sign with, where they come from,
/// and what start-up resolved (`(resolved at, expires at)`; None if it failed).
pub struct TargetCredentials {
    pub shared: SharedCredentials,
    pub source: Arc<dyn CredentialSource>,
    pub first: Option<(SystemTime, Option<SystemTime>)>,
}

/// [`build_targets`] for the daemon: static keys that fail to load fail the start (exit 78, naming the key);
/// a `default` chain or a role that cannot be resolved yet starts its target paused, and the refresher keeps
/// trying. Returns each target's credentials (by target name) for the refreshers and SIGHUP.
pub async fn build_reloadable_targets(
    cfg: &Config,
) -> Result<(Vec<TargetSpec>, BTreeMap<String, TargetCredentials>), RunError> {
    build_with_credentials(cfg, false).await
}

/// Resolves every target's credentials at once (one slow STS does not add up across targets).
async fn resolve_all(
    cfg: &Config,
    strict: bool,
) -> Result<BTreeMap<String, (Arc<dyn CredentialSource>, Result<Resolved, CredentialError>)>, RunError> {
    // Static keys and external-id references: a missing one is a config error naming the key.
    cfg.resolve_credentials()?;
    let resolved = crate::credentials::resolve_each(cfg).await.map_err(RunError::Startup)?;
    let mut out = BTreeMap::new();
    for (name, src, r) in resolved {
        if let Err(e) = &r {
            if strict || !src.refreshes() {
                return Err(RunError::Startup(format!(
                    "target {name}: cannot resolve credentials ({}): {e}",
                    src.describe()
                )));
            }
            crate::credentials::refresh::report_failure(&name, src.as_ref(), e, Duration::from_secs(1));
        }
        out.insert(name, (src, r));
    }
    Ok(out)
}

async fn build_with_credentials(
    cfg: &Config,
    strict: bool,
) -> Result<(Vec<TargetSpec>, BTreeMap<String, TargetCredentials>), RunError> {
    let mut creds = resolve_all(cfg, strict).await?;
    let mut specs = Vec::new();
    let mut handles = BTreeMap::new();
    // One HTTP client per request timeout, shared by every target that has it: reqwest pools connections
    // (and TLS sessions) per host inside a client, so a thousand targets cost one client, not a thousand.
    let mut clients: BTreeMap<Duration, reqwest::Client> = BTreeMap::new();
    for (i, (name, t)) in cfg.targets.iter().enumerate() {
        let timeout = Duration::from_secs_f64(t.request_timeout_seconds);
        let (source, resolved) = creds.remove(name).expect("every target was resolved");
        let at = SystemTime::now();
        let (c, first) = match resolved {
            Ok(r) => {
                let exp = r.expires_at;
                let shared = SharedCredentials::unresolved();
                crate::credentials::refresh::install(name, &shared, r);
                (shared, Some((at, exp)))
            }
            Err(_) => (SharedCredentials::unresolved(), None),
        };
        let startup = |e: String| RunError::Startup(format!("target {name}: {e}"));
        let client = match clients.get(&timeout) {
            Some(c) => c.clone(),
            None => {
                let c = crate::provider::http::try_client(timeout).map_err(startup)?;
                clients.insert(timeout, c.clone());
                c
            }
        };
        let handle = c.clone();
        let raw: Arc<dyn KmsAliases> = match t.provider {
            ProviderKind::Aws => {
                let p = AwsKms::with_client(&t.region, t.endpoint.as_deref(), t.signing_service.as_deref(), c, client)
                    .map_err(startup)?;
                Arc::new(p)
            }
            ProviderKind::Alibaba => {
                Arc::new(AlibabaKms::with_client(&t.region, t.endpoint.as_deref(), c, client).map_err(startup)?)
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
                Arc::new(p)
            }
        };
        handles.insert(name.clone(), TargetCredentials { shared: handle, source, first });
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
