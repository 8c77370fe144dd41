//! The one interface the reconcile core knows. Each cloud's wire format, signing and error
//! classification stay inside its own module; the request pipeline ([`transport`]) and the paginator ([`pages`])
//! are shared.

pub mod alibaba;
pub mod aws;
pub mod http;
pub mod huawei;
pub mod pages;
pub mod sign;
pub mod transport;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::secret::Credentials;

/// A target's access keys, replaceable while the provider is in use (a refresh of temporary credentials, SIGHUP
/// re-reading credential files): every request signs with the snapshot it took, so a swap never mixes an old key
/// id with a new secret. Clones share the value. Empty until the first resolution of a `default` or role target
/// succeeds: calls then fail as unauthenticated, so the target pauses instead of dead-lettering. Debug shows the
/// access key id only (the secret and token are redacted by [`Credentials`]).
#[derive(Clone)]
pub struct SharedCredentials(Arc<RwLock<Option<Arc<Credentials>>>>);

impl SharedCredentials {
    pub fn new(c: Credentials) -> Self {
        SharedCredentials(Arc::new(RwLock::new(Some(Arc::new(c)))))
    }

    /// No credentials yet: the refresher installs them once it resolves the target's source.
    pub fn unresolved() -> Self {
        SharedCredentials(Arc::new(RwLock::new(None)))
    }

    /// The credentials to sign one request with; an unauthenticated error while none were resolved.
    pub fn current(&self) -> Result<Arc<Credentials>, ProviderError> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| {
            ProviderError::new(
                ErrorClass::Unauthenticated(AuthFailure::Unresolved),
                "CredentialsUnavailable",
                "auth",
                "the target's credentials are not resolved yet (see the credentials refresher's log)",
            )
        })
    }

    /// Installs `c` for the requests that start from now on; returns whether anything changed.
    pub fn replace(&self, c: Credentials) -> bool {
        let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = cur.as_ref().is_none_or(|cur| {
            cur.access_key_id != c.access_key_id
                || cur.secret_access_key != c.secret_access_key
                || cur.session_token != c.session_token
        });
        *cur = Some(Arc::new(c));
        changed
    }
}

impl std::fmt::Debug for SharedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.current() {
            Ok(c) => f.debug_tuple("SharedCredentials").field(&*c).finish(),
            Err(_) => f.write_str("SharedCredentials(unresolved)"),
        }
    }
}

/// How the engine must treat a failed call. Decided once, inside each provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Rate limited: retry later and slow the target's bucket.
    Throttled,
    /// 5xx, timeouts, connection errors: retry with backoff.
    Transient,
    /// The alias already exists (on create).
    AlreadyExists,
    /// Alias or key not found (also what eventual consistency looks like right after a change).
    NotFound,
    /// The key's state does not allow the call (may also be eventual consistency).
    InvalidState,
    /// The cloud refused the target's credentials: no call of this target can succeed until they change.
    Unauthenticated(AuthFailure),
    /// Access denied: by the principal's policy (every call fails) or by one key's policy (one alias).
    AccessDenied,
    /// Validation, quota: retrying the same call cannot succeed.
    Permanent,
}

/// Why a cloud refused a target's credentials (the reconcile policy pauses the target, by this reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// An expired session token or temporary credentials.
    Expired,
    /// An unknown, inactive or malformed access key or token.
    Invalid,
    /// A signature the cloud computed differently (wrong secret) or could not read.
    Signature,
    /// The request's time is outside the cloud's window: the host's clock is off.
    ClockSkew,
    /// No credentials could be resolved yet (instance metadata, STS or IAM unreachable or refusing).
    Unresolved,
}

/// A failed provider call. `code` is the cloud's error code (for logs, /status and the DLQ);
/// `label` is its bounded form for metrics. Messages never carry credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    pub class: ErrorClass,
    pub code: String,
    pub label: &'static str,
    pub message: String,
}

impl ProviderError {
    pub fn new(class: ErrorClass, code: impl Into<String>, label: &'static str, message: impl Into<String>) -> Self {
        ProviderError { class, code: code.into(), label, message: message.into() }
    }
}

/// A resource quota hit by an alias write (AWS and Huawei: aliases per key; Alibaba: aliases per region), as one
/// bounded label `alias_quota`. Permanent: a retry cannot free quota, an operator must delete aliases or raise it,
/// so the message says which quota (`which`) before the cloud's own words.
pub fn alias_quota(e: ProviderError, which: &str) -> ProviderError {
    let message = http::truncate(&format!("alias quota: {which}: {}", e.message), http::MAX_MESSAGE_CHARS);
    ProviderError { class: ErrorClass::Permanent, label: "alias_quota", message, ..e }
}

/// A live alias as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAlias {
    pub name: String,
    pub key_id: Option<String>,
}

/// A key's state, as the pre-flight reads it. Clouds spell states differently (Huawei: `"2"` = enabled); each
/// provider maps its own spelling here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    PendingImport,
    /// Any other state (AWS `Creating`/`Unavailable`/`Updating`, Huawei `"1"` pending activation, none
    /// reported), as the cloud spells it.
    Other(String),
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyState::Enabled => f.write_str("Enabled"),
            KeyState::Disabled => f.write_str("Disabled"),
            KeyState::PendingDeletion => f.write_str("PendingDeletion"),
            KeyState::PendingImport => f.write_str("PendingImport"),
            KeyState::Other(s) if s.is_empty() => f.write_str("in a state the cloud did not report"),
            KeyState::Other(s) => write!(f, "{s:?}"),
        }
    }
}

impl KeyState {
    /// A cloud's state spelling through its `table` ((spelling, state) pairs); anything else, or none reported,
    /// is [`KeyState::Other`] with the spelling as is. One lookup for every cloud's table.
    pub fn from_table(reported: Option<&str>, table: &[(&str, KeyState)]) -> KeyState {
        let found = table.iter().find(|(spelling, _)| Some(*spelling) == reported);
        found.map_or_else(|| KeyState::Other(reported.unwrap_or_default().to_string()), |(_, s)| s.clone())
    }
}

/// The pattern of every lookup: a NotFound answer is "does not exist" (None), every other error stands.
pub fn found<T>(r: Result<T, ProviderError>) -> Result<Option<T>, ProviderError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.class == ErrorClass::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a describe-key call tells about a key. `spec` and `usage` are the cloud's own strings (AWS
/// `SYMMETRIC_DEFAULT`/`ENCRYPT_DECRYPT`, Alibaba `Aliyun_AES_256`/`ENCRYPT/DECRYPT`, Huawei `AES_256`/
/// `ENCRYPT_DECRYPT`); they are only ever compared within one target. Empty: not reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// The cloud's canonical id of the key (a describe by ARN answers the bare id).
    pub key_id: String,
    pub state: KeyState,
    pub spec: String,
    pub usage: String,
}

impl KeyFacts {
    /// The facts as a describe call reported them; a spec or usage not reported is empty.
    pub fn reported(key_id: String, state: KeyState, spec: Option<String>, usage: Option<String>) -> KeyFacts {
        KeyFacts { key_id, state, spec: spec.unwrap_or_default(), usage: usage.unwrap_or_default() }
    }
}

/// Operations, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    List,
    Get,
    Create,
    Update,
    Delete,
    /// A key's facts (the pre-flight before a write): a read.
    Describe,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::List => "list_aliases",
            Operation::Get => "get_alias",
            Operation::Create => "create_alias",
            Operation::Update => "update_alias",
            Operation::Delete => "delete_alias",
            Operation::Describe => "describe_key",
        }
    }
    pub fn is_write(self) -> bool {
        matches!(self, Operation::Create | Operation::Update | Operation::Delete)
    }
}

/// Paces the pages of a listing. A listing of 10,000 aliases is ~100 calls, and each must spend the
/// target's read quota; the caller (the target's governor) installs a pacer for the listing's task.
#[async_trait]
pub trait PagePacer: Send + Sync {
    async fn before_page(&self);
}

tokio::task_local! {
    static PAGE_PACER: std::sync::Arc<dyn PagePacer>;
}

/// Providers call this before requesting each page of a listing (a no-op without a pacer).
pub async fn before_page() {
    if let Ok(p) = PAGE_PACER.try_with(|p| p.clone()) {
        p.before_page().await;
    }
}

/// Runs a listing with `pacer` called before each page.
pub async fn with_pacer<F: std::future::Future>(pacer: std::sync::Arc<dyn PagePacer>, f: F) -> F::Output {
    PAGE_PACER.scope(pacer, f).await
}

#[async_trait]
pub trait KmsAliases: Send + Sync {
    /// Every alias whose name starts with one of `prefixes`, over all pages, handed to `visit` as each page
    /// arrives: a listing of a million aliases is compared as it streams in, never held whole.
    async fn list_each(
        &self,
        prefixes: &[String],
        visit: &mut (dyn FnMut(LiveAlias) + Send),
    ) -> Result<(), ProviderError>;
    /// The whole listing at once (the CLI and small callers).
    async fn list_aliases(&self, prefixes: &[String]) -> Result<Vec<LiveAlias>, ProviderError> {
        let mut out = Vec::new();
        self.list_each(prefixes, &mut |a| out.push(a)).await?;
        Ok(out)
    }
    /// The key an alias points at; None if the alias does not exist.
    async fn get_alias(&self, alias: &str) -> Result<Option<String>, ProviderError>;
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError>;
    async fn update_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError>;
    /// `current_key` is the key the alias is known to point at (some clouds need it to delete).
    async fn delete_alias(&self, alias: &str, current_key: Option<&str>) -> Result<(), ProviderError>;
    /// A key's state, spec and usage (the pre-flight before a write); None if the key does not exist. Required,
    /// not defaulted: with the pre-flight on by default, a provider (or a test fake) that could not answer would
    /// refuse every write, so each must say what its keys are.
    async fn describe_key(&self, key_id: &str) -> Result<Option<KeyFacts>, ProviderError>;
    /// The cheapest call that needs the target's credentials and permissions but no key: tells a refusal of
    /// the whole target (credentials, the principal's policy) from one key's. A listing needs no key; the
    /// governed client overrides this to stop after its first page.
    async fn probe(&self, prefixes: &[String]) -> Result<(), ProviderError> {
        self.list_each(prefixes, &mut |_| {}).await
    }
    /// Whether a desired key id (any accepted form, e.g. an ARN) names the live key id.
    fn key_matches(&self, desired: &str, live: &str) -> bool {
        desired == live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn creds(id: &str, secret: &str) -> Credentials {
        Credentials { access_key_id: id.into(), secret_access_key: Secret::new(secret), session_token: None }
    }

    #[test]
    fn shared_credentials_swap_and_redact() {
        let shared = SharedCredentials::new(creds("AK1", "s3cr3t-one"));
        let other = shared.clone();
        let before = shared.current().unwrap();
        assert!(!other.replace(creds("AK1", "s3cr3t-one")), "same keys: no change");
        assert!(other.replace(creds("AK1", "s3cr3t-two")), "a new secret is a change");
        // A snapshot taken before the swap keeps signing with the old keys; new ones see the swap.
        assert_eq!(before.secret_access_key.expose(), "s3cr3t-one");
        assert_eq!(shared.current().unwrap().secret_access_key.expose(), "s3cr3t-two");
        let dbg = format!("{shared:?}");
        assert!(dbg.contains("AK1") && !dbg.contains("s3cr3t"), "{dbg}");
    }

    #[test]
    fn unresolved_credentials_fail_calls_as_unauthenticated() {
        let shared = SharedCredentials::unresolved();
        let e = shared.current().unwrap_err();
        assert_eq!(e.class, ErrorClass::Unauthenticated(AuthFailure::Unresolved));
        assert!(shared.replace(creds("AK1", "s")), "the first credentials are a change");
        assert_eq!(shared.current().unwrap().access_key_id, "AK1");
    }
}
