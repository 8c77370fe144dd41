//! Where each target's credentials come from (DESIGN §2.8): static keys (`env:` / `file:`), or the cloud SDK's
//! own default chain (`"default"`), optionally with a role (AWS, Alibaba) or an agency (Huawei) assumed on top.
//! Temporary credentials are refreshed before they expire by [`refresh`]; providers only ever read the
//! [`SharedCredentials`](crate::provider::SharedCredentials) snapshot the refresher installs.
//!
//! Each cloud's chain, STS/IAM wire format and identity call stay in its own module.

pub mod alibaba;
pub mod aws;
pub mod huawei;
pub mod refresh;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::config::{ProviderKind, TargetConfig};
use crate::secret::{Credentials, SecretRef};

/// Credentials as a source resolved them. `expires_at` is None for long-lived keys.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub creds: Credentials,
    pub expires_at: Option<SystemTime>,
}

impl Resolved {
    /// A temporary-credential answer (STS, IAM, instance metadata) of `what`; an empty token means none. An
    /// answer without keys is a broken service, not a missing source.
    pub fn temporary(
        what: &str,
        access_key_id: String,
        secret: String,
        token: String,
        expires_at: SystemTime,
    ) -> Result<Resolved, CredentialError> {
        if access_key_id.is_empty() || secret.is_empty() {
            return Err(CredentialError::unreachable(format!("{what}: the answer has no access key")));
        }
        Ok(Resolved {
            creds: Credentials {
                access_key_id,
                secret_access_key: crate::secret::Secret::new(secret),
                session_token: Some(crate::secret::Secret::new(token)).filter(|t| !t.expose().is_empty()),
            },
            expires_at: Some(expires_at),
        })
    }
}

/// Why a source could not resolve credentials. Messages name the service and URL, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialErrorKind {
    /// Nothing to resolve from: no environment variables, no file, no metadata role (host set-up).
    Missing,
    /// The metadata service, STS or IAM could not be reached or failed (5xx, timeout): retried.
    Unreachable,
    /// The service refused: access denied, a wrong external id, an unknown key (policy or trust set-up).
    Refused,
}

impl CredentialErrorKind {
    /// Bounded metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialErrorKind::Missing => "missing",
            CredentialErrorKind::Unreachable => "unreachable",
            CredentialErrorKind::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CredentialError {
    pub kind: CredentialErrorKind,
    pub message: String,
}

impl CredentialError {
    pub fn new(kind: CredentialErrorKind, message: impl Into<String>) -> Self {
        CredentialError { kind, message: message.into() }
    }
    pub fn missing(message: impl Into<String>) -> Self {
        Self::new(CredentialErrorKind::Missing, message)
    }
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(CredentialErrorKind::Unreachable, message)
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(CredentialErrorKind::Refused, message)
    }
}

/// One target's credential source: resolves fresh credentials (assuming the role again when one is configured)
/// and tells whom they act as.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// Fresh credentials. Called at start, then by the refresher before `expires_at`.
    async fn resolve(&self) -> Result<Resolved, CredentialError>;
    /// Whom `creds` act as, for `check-config`: an ARN, an account, an agency and project; never a secret.
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError>;
    /// What the config asked for, for logs and /status: e.g. `default chain, role arn:aws:iam::1:role/x`.
    fn describe(&self) -> String;
    /// Whether the credentials are temporary and need the refresher (a default chain or a role).
    fn refreshes(&self) -> bool;
}

/// What targets of one process share: one HTTP client for STS/IAM/metadata calls and one base chain per
/// cloud, so a hundred `default` targets ask instance metadata once, not a hundred times.
pub struct Context {
    pub http: reqwest::Client,
    pub aws_base: tokio::sync::OnceCell<aws_credential_types::provider::SharedCredentialsProvider>,
    pub alibaba_base: OnceLock<Arc<dyn CredentialSource>>,
    pub huawei_base: OnceLock<Arc<dyn CredentialSource>>,
}

impl Context {
    pub fn new() -> Result<Context, String> {
        // STS, IAM and metadata answer in well under 10 s; a hung one must not hold a refresh forever.
        let http = crate::provider::http::try_client(std::time::Duration::from_secs(10))?;
        Ok(Context {
            http,
            aws_base: tokio::sync::OnceCell::new(),
            alibaba_base: OnceLock::new(),
            huawei_base: OnceLock::new(),
        })
    }
}

/// The source for target `name` (config already validated).
pub fn source_for(name: &str, t: &TargetConfig, ctx: &Context) -> Result<Arc<dyn CredentialSource>, String> {
    match t.provider {
        ProviderKind::Aws => aws::source(name, t, ctx),
        ProviderKind::Alibaba => alibaba::source(name, t, ctx),
        ProviderKind::Huawei => huawei::source(name, t, ctx),
    }
}

/// Static keys from an `env:` / `file:` reference, re-read on each resolve (a rotated file is picked up by the
/// next refresh of a role on top of it, or by SIGHUP).
pub struct StaticKeys {
    reference: SecretRef,
    label: String,
}

impl StaticKeys {
    pub fn new(spec: &str) -> Result<StaticKeys, String> {
        Ok(StaticKeys { reference: SecretRef::parse(spec)?, label: spec.to_string() })
    }
    pub fn load(&self) -> Result<Credentials, CredentialError> {
        self.reference.load_credentials().map_err(CredentialError::missing)
    }
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Long-lived keys from `env:` / `file:` with no role on top: nothing to refresh (SIGHUP re-reads them).
pub struct StaticOnly {
    keys: StaticKeys,
    cloud: &'static str,
}

impl StaticOnly {
    pub fn new(spec: &str, cloud: &'static str) -> Result<StaticOnly, String> {
        Ok(StaticOnly { keys: StaticKeys::new(spec)?, cloud })
    }
}

#[async_trait]
impl CredentialSource for StaticOnly {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        Ok(Resolved { creds: self.keys.load()?, expires_at: None })
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        // An access key id names the key, not a secret (clouds print it in consoles and audit logs).
        Ok(format!("{} access key {}", self.cloud, creds.access_key_id))
    }
    fn describe(&self) -> String {
        format!("static keys {}", self.keys.label())
    }
    fn refreshes(&self) -> bool {
        false
    }
}

/// The role session name: configured, or `aliassync-<hostname>` cut to the 64 characters STS allows.
pub fn session_name(t: &TargetConfig) -> String {
    if let Some(n) = &t.role_session_name {
        return n.clone();
    }
    let host = crate::config::default_instance_id();
    let clean: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || "=,.@-_".contains(c) { c } else { '-' }).collect();
    format!("aliassync-{clean}").chars().take(64).collect()
}

/// Default lifetime of an assumed session.
pub const DEFAULT_ROLE_DURATION_SECONDS: u64 = 3600;

/// Checks the credential keys of target `name` (called from `Config::validate`).
pub fn validate(name: &str, t: &TargetConfig, bad: &mut dyn FnMut(&str, &str, &str)) {
    let key = |k: &str| format!("targets.{name}.{k}");
    let provider = t.provider.as_str();
    let role_cloud = matches!(t.provider, ProviderKind::Aws | ProviderKind::Alibaba);
    let not_here = |k: &str, fix: &str, bad: &mut dyn FnMut(&str, &str, &str)| {
        bad(&key(k), &format!("does not apply to provider \"{provider}\""), fix)
    };
    if !role_cloud {
        for (k, set) in [
            ("role_arn", t.role_arn.is_some()),
            ("external_id", t.external_id.is_some()),
            ("role_session_name", t.role_session_name.is_some()),
            ("sts_endpoint", t.sts_endpoint.is_some()),
        ] {
            if set {
                not_here(k, "Huawei assumes an agency: use agency_name, agency_domain and iam_endpoint", bad);
            }
        }
    }
    if t.provider != ProviderKind::Huawei {
        for (k, set) in [
            ("agency_name", t.agency_name.is_some()),
            ("agency_domain", t.agency_domain.is_some()),
            ("iam_endpoint", t.iam_endpoint.is_some()),
        ] {
            if set {
                not_here(k, "AWS and Alibaba assume a role: use role_arn (and sts_endpoint)", bad);
            }
        }
    }
    if let Some(arn) = &t.role_arn {
        let ok = match t.provider {
            // arn:aws:iam::123456789012:role/name (also aws-cn, aws-us-gov partitions).
            ProviderKind::Aws => {
                let parts: Vec<&str> = arn.splitn(6, ':').collect();
                parts.len() == 6
                    && parts[0] == "arn"
                    && parts[1].starts_with("aws")
                    && parts[2] == "iam"
                    && parts[4].len() == 12
                    && parts[4].bytes().all(|b| b.is_ascii_digit())
                    && parts[5].starts_with("role/")
                    && parts[5].len() > 5
            }
            // acs:ram::1234567890123456:role/name
            ProviderKind::Alibaba => {
                let parts: Vec<&str> = arn.splitn(5, ':').collect();
                parts.len() == 5
                    && parts[0] == "acs"
                    && parts[1] == "ram"
                    && !parts[3].is_empty()
                    && parts[3].bytes().all(|b| b.is_ascii_digit())
                    && parts[4].starts_with("role/")
                    && parts[4].len() > 5
            }
            ProviderKind::Huawei => true,
        };
        if role_cloud && !ok {
            let example = if t.provider == ProviderKind::Aws {
                "arn:aws:iam::123456789012:role/aliassync"
            } else {
                "acs:ram::1234567890123456:role/aliassync"
            };
            bad(&key("role_arn"), "is not a role ARN", &format!("use the role's ARN, e.g. \"{example}\""));
        }
    } else if role_cloud {
        for (k, set) in [("external_id", t.external_id.is_some()), ("role_session_name", t.role_session_name.is_some())]
        {
            if set {
                bad(&key(k), "is set without role_arn", "set role_arn, or remove it");
            }
        }
    }
    if let Some(x) = &t.external_id {
        if let Err(e) = SecretRef::parse(x) {
            bad(&key("external_id"), &e, "use \"env:NAME\" or \"file:PATH\": an external id is a shared secret");
        }
    }
    if let Some(n) = &t.role_session_name {
        if n.len() < 2 || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(c)) {
            bad(&key("role_session_name"), "must be 2-64 of [A-Za-z0-9=,.@_-]", "e.g. \"aliassync-ops1\"");
        }
    }
    if t.provider == ProviderKind::Huawei && t.agency_name.is_some() != t.agency_domain.is_some() {
        let missing = if t.agency_name.is_some() { "agency_domain" } else { "agency_name" };
        bad(
            &key(missing),
            "is required with the other agency key",
            "set both agency_name and agency_domain (the account that owns the agency)",
        );
    }
    if let Some(d) = t.role_duration_seconds {
        let assumes = t.role_arn.is_some() || t.agency_name.is_some();
        // AWS and Alibaba: 900 s up to the role's maximum session (at most 12 h); Huawei: 900 s to 24 h.
        let max = if t.provider == ProviderKind::Huawei { 86_400 } else { 43_200 };
        if !assumes {
            bad(&key("role_duration_seconds"), "is set but no role or agency is assumed", "remove it");
        } else if !(900..=max).contains(&d) {
            bad(&key("role_duration_seconds"), &format!("must be 900..={max}"), "e.g. 3600 (the default)");
        }
    }
    for (k, v) in [("sts_endpoint", &t.sts_endpoint), ("iam_endpoint", &t.iam_endpoint)] {
        if let Some(ep) = v {
            if !(ep.starts_with("https://") || ep.starts_with("http://")) || reqwest::Url::parse(ep).is_err() {
                bad(&key(k), "is not an http(s) URL", "use e.g. \"https://sts.us-east-1.amazonaws.com\"");
            }
        }
    }
}

/// What `check-config` prints per target: where its credentials come from and whom they act as.
pub struct Checked {
    pub target: String,
    pub source: String,
    /// The identity, or why the credentials (or the identity call) failed; never a secret.
    pub identity: Result<String, String>,
    pub expires_at: Option<SystemTime>,
}

/// How long a first resolution (start-up, `check-config`) may take before it counts as unreachable.
pub const FIRST_RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// One target's first resolution: its name, its source and what the source answered.
pub type Attempt = (String, Arc<dyn CredentialSource>, Result<Resolved, CredentialError>);

/// Builds every target's source and resolves them all at once (one slow STS does not add up across targets).
pub async fn resolve_each(cfg: &crate::config::Config) -> Result<Vec<Attempt>, String> {
    let ctx = Context::new()?;
    let mut sources = Vec::new();
    for (name, t) in &cfg.targets {
        let src = source_for(name, t, &ctx).map_err(|e| format!("target {name}: credentials: {e}"))?;
        sources.push((name.clone(), src));
    }
    Ok(futures::future::join_all(sources.into_iter().map(|(name, src)| async move {
        let r = match tokio::time::timeout(FIRST_RESOLVE_TIMEOUT, src.resolve()).await {
            Ok(r) => r,
            Err(_) => Err(CredentialError::unreachable(format!(
                "{} did not answer within {} s",
                src.describe(),
                FIRST_RESOLVE_TIMEOUT.as_secs()
            ))),
        };
        (name, src, r)
    }))
    .await)
}

/// Resolves every target's credentials once (assuming roles) and asks each cloud whom they act as.
pub async fn check(cfg: &crate::config::Config) -> Result<Vec<Checked>, String> {
    Ok(futures::future::join_all(resolve_each(cfg).await?.into_iter().map(|(target, src, r)| async move {
        let source = src.describe();
        let (identity, expires_at) = match r {
            Ok(r) => (src.identity(&r.creds).await.map_err(|e| format!("identity call failed: {e}")), r.expires_at),
            Err(e) => (Err(format!("cannot resolve credentials: {e}")), None),
        };
        Checked { target, source, identity, expires_at }
    }))
    .await)
}
