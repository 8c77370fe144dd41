//! Alibaba Cloud credentials, as the official `alibabacloud-credentials` library resolves them (Python
//! `alibabacloud_credentials/provider/default.py` and its providers, 1.0.12; Go `credentials-go` `providers/`):
//!
//! - `credentials = "default"`, the library's default chain, in its order, sticking to the first provider that
//!   answered (as its `reuse_last_provider_enabled`):
//!   1. environment: `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, optional
//!      `ALIBABA_CLOUD_SECURITY_TOKEN`;
//!   2. OIDC role (RRSA), when `ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN` and
//!      `ALIBABA_CLOUD_OIDC_TOKEN_FILE` are all set: STS `AssumeRoleWithOIDC` (unsigned), session name
//!      `ALIBABA_CLOUD_ROLE_SESSION_NAME`;
//!   3. the CLI's `~/.aliyun/config.json` (profile `ALIBABA_CLOUD_PROFILE`, else its `current`; modes `AK`,
//!      `StsToken`, `RamRoleArn`, `EcsRamRole`, `OIDC`), unless `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true`;
//!   4. the credentials file `ALIBABA_CLOUD_CREDENTIALS_FILE`, else `~/.alibabacloud/credentials.ini` (section
//!      `ALIBABA_CLOUD_PROFILE`, else `default`; types `access_key`, `ram_role_arn`, `ecs_ram_role`,
//!      `oidc_role_arn`);
//!   5. ECS RAM role metadata, unless `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`: `PUT /latest/api/token`
//!      (`X-aliyun-ecs-metadata-token-ttl-seconds: 21600`), then `GET /latest/meta-data/ram/security-credentials/`
//!      (the role: `ALIBABA_CLOUD_ECS_METADATA`, else discovered) with `X-aliyun-ecs-metadata-token`; without a
//!      token it tries IMDSv1 unless `ALIBABA_CLOUD_IMDSV1_DISABLED=true`. The library hard-codes
//!      `http://100.100.100.200`; [`METADATA_ENDPOINT_ENV`] (ours, not the library's) moves it for tests;
//!   6. `ALIBABA_CLOUD_CREDENTIALS_URI`: a GET answering the metadata's JSON.
//!
//!   RSA key pairs, Cloud SSO, OAuth and `External` CLI modes are not supported (named in the error). The chain is
//!   built once per process ([`Context::alibaba_base`]) and caches temporary credentials until near expiry, so a
//!   hundred targets ask the metadata service once.
//! - `role_arn`: STS `AssumeRole` (RPC, `HMAC-SHA1` v1 signature as the library signs it, `GET` with the query;
//!   the base's token as `SecurityToken`) at `sts_endpoint`, else `https://sts.{region}.aliyuncs.com` (the
//!   library's `sts.{sts_region_id}.aliyuncs.com`; `sts-vpc.` when `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true`).
//! - identity: STS `GetCallerIdentity` → `Arn (account AccountId)`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{NaiveDateTime, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{Context, CredentialError, CredentialSource, Resolved, StaticKeys, DEFAULT_ROLE_DURATION_SECONDS};
use crate::config::TargetConfig;
use crate::provider::http::redact;
use crate::provider::sign::{percent_encode, rpc_v1};
use crate::secret::{Credentials, Secret, SecretRef};

/// Where the ECS metadata service is (ours: the library has no setting, its host is a constant).
pub const METADATA_ENDPOINT_ENV: &str = "ALIASSYNC_ALIBABA_METADATA_ENDPOINT";
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// The STS endpoint of the default chain's OIDC and profile roles (ours; the library takes a constructor
/// argument). Without it: `ALIBABA_CLOUD_STS_REGION`'s, else `sts.aliyuncs.com`, as the library.
pub const STS_ENDPOINT_ENV: &str = "ALIASSYNC_ALIBABA_STS_ENDPOINT";
const METADATA_TOKEN_PATH: &str = "/latest/api/token";
const METADATA_CREDS_PATH: &str = "/latest/meta-data/ram/security-credentials/";
/// The library asks for 6 h metadata tokens.
const METADATA_TOKEN_TTL_SECONDS: u64 = 21600;
/// The metadata service answers locally (the library gives it 1 s; a loaded host gets a little more).
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
const STS_VERSION: &str = "2015-04-01";
/// Error bodies quoted in messages are cut to this many characters.
const MAX_QUOTE: usize = 300;

/// Target `name`'s credential source.
pub fn source(name: &str, t: &TargetConfig, ctx: &Context) -> Result<Arc<dyn CredentialSource>, String> {
    let sts = sts_endpoint(t.sts_endpoint.as_deref(), &t.region)?;
    let base: Arc<dyn CredentialSource> = if t.credentials == "default" {
        ctx.alibaba_base.get_or_init(|| Arc::new(DefaultChain::new(ctx.http.clone()))).clone()
    } else {
        let keys = StaticKeys::new(&t.credentials).map_err(|e| format!("targets.{name}.credentials: {e}"))?;
        Arc::new(Static { keys, sts: t.sts_endpoint.is_some().then(|| sts.clone()), http: ctx.http.clone() })
    };
    let Some(arn) = &t.role_arn else {
        if t.credentials == "default" {
            // The shared chain answers for the base; identity asks this target's STS.
            return Ok(Arc::new(WithSts { base, sts, http: ctx.http.clone() }));
        }
        return Ok(base);
    };
    let external_id = match &t.external_id {
        Some(r) => Some(SecretRef::parse(r).map_err(|e| format!("targets.{name}.external_id: {e}"))?),
        None => None,
    };
    Ok(Arc::new(AssumeRole {
        base,
        role: Role {
            arn: arn.clone(),
            session_name: super::session_name(t),
            duration_seconds: t.role_duration_seconds.unwrap_or(DEFAULT_ROLE_DURATION_SECONDS),
        },
        external_id,
        sts,
        http: ctx.http.clone(),
    }))
}

/// The STS URL: configured, else the region's as the library builds it.
pub fn sts_endpoint(configured: Option<&str>, region: &str) -> Result<reqwest::Url, String> {
    let url = match configured {
        Some(ep) => ep.to_string(),
        None => {
            let prefix = if env_true("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED") { "sts-vpc" } else { "sts" };
            format!("https://{prefix}.{region}.aliyuncs.com")
        }
    };
    reqwest::Url::parse(&url).map_err(|e| format!("STS endpoint {url}: {e}"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_true(name: &str) -> bool {
    env(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn shown(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string().trim_end_matches('/').to_string()
}

/// `2015-04-09T11:52:19Z` as STS and the metadata service send it.
pub fn parse_expiration(s: &str) -> Option<SystemTime> {
    let t = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%SZ").ok()?.and_utc();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).ok()?))
}

fn transport(what: &str, e: reqwest::Error) -> CredentialError {
    let e = e.without_url();
    let mut why = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
    let mut src = std::error::Error::source(&e);
    while let Some(inner) = src {
        why.push_str(": ");
        why.push_str(&inner.to_string());
        src = inner.source();
    }
    CredentialError::unreachable(format!("{what}: {why}"))
}

/// A short quote of an answer, with any secret of `creds` (and any field that carries one) left out.
fn quote(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = crate::provider::http::collapse_whitespace(&text);
    redact(&crate::provider::http::truncate(&text, MAX_QUOTE), secrets)
}

/// STS's error body: `{"RequestId", "HostId", "Code", "Message", "Recommend"}`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct StsError {
    code: Option<String>,
    message: Option<String>,
    request_id: Option<String>,
}

/// An STS refusal or failure: 5xx and 429 are retried as unreachable, any other code is a refusal.
fn sts_error(what: &str, status: u16, body: &[u8], secrets: &[&str]) -> CredentialError {
    let e: StsError = serde_json::from_slice(body).unwrap_or_default();
    let detail = match &e.code {
        Some(code) => format!(
            "HTTP {status} {code}: {}{}",
            redact(&e.message.unwrap_or_default(), secrets),
            e.request_id.map(|r| format!(" (RequestId {r})")).unwrap_or_default()
        ),
        None => format!("HTTP {status}: {}", quote(body, secrets)),
    };
    let msg = format!("{what}: {detail}");
    if status >= 500 || status == 429 {
        CredentialError::unreachable(msg)
    } else {
        CredentialError::refused(msg)
    }
}

/// What STS and the metadata service send as temporary credentials.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TempCreds {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
}

/// The `{"Code": "Success", AccessKeyId, …}` answer of ECS metadata and of a credentials URI.
fn code_success_credentials(body: &[u8], what: &str) -> Result<Resolved, CredentialError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        code: Option<String>,
        #[serde(flatten)]
        creds: Option<TempCreds>,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|_| CredentialError::unreachable(format!("{what}: the answer is not the credentials JSON")))?;
    match (a.code.as_deref(), a.creds) {
        (Some("Success"), Some(c)) => c.into_resolved(what),
        (code, _) => Err(CredentialError::unreachable(format!("{what}: Code {}", code.unwrap_or("(none)")))),
    }
}

impl TempCreds {
    fn into_resolved(self, what: &str) -> Result<Resolved, CredentialError> {
        let expires_at = parse_expiration(&self.expiration).ok_or_else(|| {
            CredentialError::unreachable(format!(
                "{what}: Expiration {:?} is not yyyy-MM-ddTHH:mm:ssZ",
                self.expiration
            ))
        })?;
        Resolved::temporary(what, self.access_key_id, self.access_key_secret, self.security_token, expires_at)
    }
}

/// One STS call: RPC style, parameters in the query of a GET, as the library sends AssumeRole. Signed with
/// `creds` (RPC v1, HMAC-SHA1) unless None (AssumeRoleWithOIDC). Returns the 200 answer's JSON.
async fn sts_call(
    http: &reqwest::Client,
    sts: &reqwest::Url,
    action: &str,
    params: &[(&str, &str)],
    creds: Option<&Credentials>,
    what: &str,
) -> Result<serde_json::Value, CredentialError> {
    let timestamp = rpc_v1::format_timestamp(Utc::now());
    let nonce = format!("{:032x}", rand::random::<u128>());
    let mut all: Vec<(&str, &str)> =
        vec![("Action", action), ("Format", "JSON"), ("Version", STS_VERSION), ("Timestamp", &timestamp)];
    all.extend_from_slice(params);
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(c) = creds {
        all.extend_from_slice(&[
            ("AccessKeyId", c.access_key_id.as_str()),
            ("SignatureMethod", rpc_v1::SIGNATURE_METHOD),
            ("SignatureVersion", rpc_v1::SIGNATURE_VERSION),
            ("SignatureNonce", &nonce),
        ]);
        secrets.push(c.secret_access_key.expose());
        if let Some(t) = &c.session_token {
            all.push(("SecurityToken", t.expose()));
            secrets.push(t.expose());
        }
    }
    let mut query = rpc_v1::canonicalized_query(&all);
    let signature;
    if let Some(c) = creds {
        signature = rpc_v1::sign("GET", &all, c.secret_access_key.expose()).signature;
        query.push_str(&format!("&{}={}", rpc_v1::SIGNATURE_PARAM, percent_encode(&signature)));
        secrets.push(&signature);
    }
    let mut url = sts.clone();
    url.set_query(Some(&query));
    let resp = http.get(url).send().await.map_err(|e| transport(what, e))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| transport(what, e))?;
    if status != 200 {
        return Err(sts_error(what, status, &body, &secrets));
    }
    serde_json::from_slice(&body)
        .map_err(|_| CredentialError::unreachable(format!("{what}: not a JSON answer: {}", quote(&body, &secrets))))
}

/// `Credentials` of an AssumeRole / AssumeRoleWithOIDC answer.
fn role_credentials(v: serde_json::Value, what: &str) -> Result<Resolved, CredentialError> {
    let c = v.get("Credentials").cloned().unwrap_or_default();
    let parsed: TempCreds = serde_json::from_value(c)
        .map_err(|_| CredentialError::unreachable(format!("{what}: the answer has no complete Credentials")))?;
    parsed.into_resolved(what)
}

/// STS `GetCallerIdentity` with `creds`: `acs:ram::…:assumed-role/x/s (account 1234567890123456)`.
async fn caller_identity(
    http: &reqwest::Client,
    sts: &reqwest::Url,
    creds: &Credentials,
) -> Result<String, CredentialError> {
    let what = format!("Alibaba STS GetCallerIdentity at {}", shown(sts));
    let v = sts_call(http, sts, "GetCallerIdentity", &[], Some(creds), &what).await?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let (arn, account) = (s("Arn"), s("AccountId"));
    if arn.is_empty() {
        return Err(CredentialError::unreachable(format!("{what}: the answer has no Arn")));
    }
    Ok(format!("{arn} (account {account})"))
}

/// What a role assumption needs besides the base credentials.
#[derive(Clone)]
struct Role {
    arn: String,
    session_name: String,
    duration_seconds: u64,
}

async fn assume_role(
    http: &reqwest::Client,
    sts: &reqwest::Url,
    base: &Credentials,
    role: &Role,
    external_id: Option<&str>,
) -> Result<Resolved, CredentialError> {
    let what = format!("Alibaba STS AssumeRole of {} at {}", role.arn, shown(sts));
    let duration = role.duration_seconds.to_string();
    let mut params = vec![
        ("RoleArn", role.arn.as_str()),
        ("RoleSessionName", role.session_name.as_str()),
        ("DurationSeconds", duration.as_str()),
    ];
    if let Some(x) = external_id {
        params.push(("ExternalId", x));
    }
    let v = sts_call(http, sts, "AssumeRole", &params, Some(base), &what).await?;
    role_credentials(v, &what)
}

// ---------------------------------------------------------------------------------------------
// Sources

/// `env:` / `file:` keys with no role: nothing to refresh. With `sts_endpoint` set, the identity is STS's
/// answer; without, the key id (no call to a public endpoint a test or an air-gapped host cannot reach).
struct Static {
    keys: StaticKeys,
    sts: Option<reqwest::Url>,
    http: reqwest::Client,
}

#[async_trait]
impl CredentialSource for Static {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        Ok(Resolved { creds: self.keys.load()?, expires_at: None })
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        match &self.sts {
            Some(sts) => caller_identity(&self.http, sts, creds).await,
            None => Ok(format!("alibaba access key {}", creds.access_key_id)),
        }
    }
    fn describe(&self) -> String {
        format!("static keys {}", self.keys.label())
    }
    fn refreshes(&self) -> bool {
        false
    }
}

/// The shared default chain for one target with no role: the target's STS tells the identity.
struct WithSts {
    base: Arc<dyn CredentialSource>,
    sts: reqwest::Url,
    http: reqwest::Client,
}

#[async_trait]
impl CredentialSource for WithSts {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        self.base.resolve().await
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        caller_identity(&self.http, &self.sts, creds).await
    }
    fn describe(&self) -> String {
        self.base.describe()
    }
    fn refreshes(&self) -> bool {
        true
    }
}

/// A role assumed on top of a base source; a fresh session on every resolve (the refresher calls it before
/// the previous one expires).
struct AssumeRole {
    base: Arc<dyn CredentialSource>,
    role: Role,
    /// Re-read on each resolve, like static keys.
    external_id: Option<SecretRef>,
    sts: reqwest::Url,
    http: reqwest::Client,
}

#[async_trait]
impl CredentialSource for AssumeRole {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        let base = self.base.resolve().await.map_err(|e| {
            CredentialError::new(e.kind.clone(), format!("base credentials for role {}: {}", self.role.arn, e.message))
        })?;
        let external = match &self.external_id {
            Some(r) => Some(
                r.load_string()
                    .map_err(|e| CredentialError::missing(format!("external_id of role {}: {e}", self.role.arn)))?,
            ),
            None => None,
        };
        assume_role(&self.http, &self.sts, &base.creds, &self.role, external.as_ref().map(Secret::expose)).await
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        caller_identity(&self.http, &self.sts, creds).await
    }
    fn describe(&self) -> String {
        format!("{}, role {} via {}", self.base.describe(), self.role.arn, shown(&self.sts))
    }
    fn refreshes(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// The default chain

/// One link of the chain, as the library's providers.
#[derive(Clone, Debug, PartialEq)]
enum Provider {
    Env,
    Oidc,
    CliProfile,
    ProfileFile,
    EcsMetadata,
    Uri,
}

impl Provider {
    fn name(&self) -> &'static str {
        match self {
            Provider::Env => "environment",
            Provider::Oidc => "OIDC role",
            Provider::CliProfile => "CLI profile",
            Provider::ProfileFile => "credentials file",
            Provider::EcsMetadata => "ECS RAM role",
            Provider::Uri => "credentials URI",
        }
    }
}

/// How a profile (CLI config or credentials file) gets its credentials. No Debug: it holds secrets as read.
#[derive(Clone)]
enum ProfileKind {
    Keys {
        id: String,
        secret: String,
        token: Option<String>,
    },
    RoleOnKeys {
        id: String,
        secret: String,
        role: String,
        session: Option<String>,
        duration: Option<u64>,
        external_id: Option<String>,
        sts_region: Option<String>,
    },
    Ecs {
        role_name: Option<String>,
    },
    Oidc {
        role: String,
        provider: String,
        token_file: String,
        session: Option<String>,
        duration: Option<u64>,
        sts_region: Option<String>,
    },
}

struct Cached {
    resolved: Resolved,
    at: SystemTime,
    from: Provider,
}

/// The default chain, shared by every `default` target of the process.
pub struct DefaultChain {
    http: reqwest::Client,
    metadata: String,
    /// The last answer and who gave it; held across a fetch so concurrent targets wait for one fetch.
    state: Mutex<Option<Cached>>,
    /// Unit tests: these providers instead of the environment's chain.
    only: Option<Vec<Provider>>,
}

impl DefaultChain {
    pub fn new(http: reqwest::Client) -> DefaultChain {
        let metadata = env(METADATA_ENDPOINT_ENV)
            .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.into())
            .trim_end_matches('/')
            .to_string();
        DefaultChain { http, metadata, state: Mutex::new(None), only: None }
    }

    /// The providers to try, in the library's order (OIDC and the URI only when their variables are set, the
    /// metadata unless disabled).
    fn chain() -> Vec<Provider> {
        let mut v = vec![Provider::Env];
        let oidc = ["ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_TOKEN_FILE"];
        if oidc.iter().all(|k| env(k).is_some()) {
            v.push(Provider::Oidc);
        }
        v.extend([Provider::CliProfile, Provider::ProfileFile]);
        if !env_true("ALIBABA_CLOUD_ECS_METADATA_DISABLED") {
            v.push(Provider::EcsMetadata);
        }
        if env("ALIBABA_CLOUD_CREDENTIALS_URI").is_some() {
            v.push(Provider::Uri);
        }
        v
    }

    async fn fetch(&self, p: &Provider) -> Result<Resolved, CredentialError> {
        match p {
            Provider::Env => from_env(),
            Provider::Oidc => {
                let kind = ProfileKind::Oidc {
                    role: env("ALIBABA_CLOUD_ROLE_ARN").unwrap_or_default(),
                    provider: env("ALIBABA_CLOUD_OIDC_PROVIDER_ARN").unwrap_or_default(),
                    token_file: env("ALIBABA_CLOUD_OIDC_TOKEN_FILE").unwrap_or_default(),
                    session: None,
                    duration: None,
                    sts_region: None,
                };
                self.resolve_profile(&kind).await
            }
            Provider::CliProfile => {
                if env_true("ALIBABA_CLOUD_CLI_PROFILE_DISABLED") {
                    return Err(CredentialError::missing("ALIBABA_CLOUD_CLI_PROFILE_DISABLED is true"));
                }
                let path = home().join(".aliyun").join("config.json");
                let kind = cli_profile(&path, env("ALIBABA_CLOUD_PROFILE").as_deref())?;
                self.resolve_profile(&kind).await
            }
            Provider::ProfileFile => {
                let path = env("ALIBABA_CLOUD_CREDENTIALS_FILE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home().join(".alibabacloud").join("credentials.ini"));
                let section = env("ALIBABA_CLOUD_PROFILE").unwrap_or_else(|| "default".into());
                let kind = ini_profile(&path, &section)?;
                self.resolve_profile(&kind).await
            }
            Provider::EcsMetadata => self.metadata_role(env("ALIBABA_CLOUD_ECS_METADATA")).await,
            Provider::Uri => self.uri_credentials(&env("ALIBABA_CLOUD_CREDENTIALS_URI").unwrap_or_default()).await,
        }
    }

    async fn resolve_profile(&self, kind: &ProfileKind) -> Result<Resolved, CredentialError> {
        let sts_for = |region: &Option<String>| -> Result<reqwest::Url, CredentialError> {
            let url = match (env(STS_ENDPOINT_ENV), region.clone().or_else(|| env("ALIBABA_CLOUD_STS_REGION"))) {
                (Some(ep), _) => ep,
                (None, Some(r)) => {
                    let prefix = if env_true("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED") { "sts-vpc" } else { "sts" };
                    format!("https://{prefix}.{r}.aliyuncs.com")
                }
                (None, None) => "https://sts.aliyuncs.com".into(),
            };
            reqwest::Url::parse(&url).map_err(|e| CredentialError::missing(format!("STS endpoint {url}: {e}")))
        };
        let session_or_default = |s: &Option<String>| {
            s.clone().or_else(|| env("ALIBABA_CLOUD_ROLE_SESSION_NAME")).unwrap_or_else(default_session_name)
        };
        match kind {
            ProfileKind::Keys { id, secret, token } => Ok(Resolved {
                creds: Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: Secret::new(secret.clone()),
                    session_token: token.clone().map(Secret::new),
                },
                expires_at: None,
            }),
            ProfileKind::RoleOnKeys { id, secret, role, session, duration, external_id, sts_region } => {
                let base = Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: Secret::new(secret.clone()),
                    session_token: None,
                };
                let role = Role {
                    arn: role.clone(),
                    session_name: session_or_default(session),
                    duration_seconds: duration.unwrap_or(DEFAULT_ROLE_DURATION_SECONDS),
                };
                let sts = sts_for(sts_region)?;
                assume_role(&self.http, &sts, &base, &role, external_id.as_deref()).await
            }
            ProfileKind::Ecs { role_name } => self.metadata_role(role_name.clone()).await,
            ProfileKind::Oidc { role, provider, token_file, session, duration, sts_region } => {
                let sts = sts_for(sts_region)?;
                let what = format!("Alibaba STS AssumeRoleWithOIDC of {role} at {}", shown(&sts));
                let token = std::fs::read_to_string(token_file).map_err(|e| {
                    CredentialError::missing(format!("{what}: OIDC token file {token_file}: {}", e.kind()))
                })?;
                let session = session_or_default(session);
                let duration = duration.unwrap_or(DEFAULT_ROLE_DURATION_SECONDS).to_string();
                let params = [
                    ("RoleArn", role.as_str()),
                    ("OIDCProviderArn", provider.as_str()),
                    ("OIDCToken", token.trim()),
                    ("RoleSessionName", session.as_str()),
                    ("DurationSeconds", duration.as_str()),
                ];
                let v = sts_call(&self.http, &sts, "AssumeRoleWithOIDC", &params, None, &what)
                    .await
                    .map_err(|e| CredentialError::new(e.kind, redact(&e.message, &[token.trim()])))?;
                role_credentials(v, &what)
            }
        }
    }

    /// The ECS RAM role's credentials: a metadata token first (IMDSv2), then the role (given or discovered)
    /// and its credentials with it; without a token, IMDSv1 unless disabled, as the library.
    async fn metadata_role(&self, role: Option<String>) -> Result<Resolved, CredentialError> {
        let base = &self.metadata;
        let v1_disabled = env_true("ALIBABA_CLOUD_IMDSV1_DISABLED");
        let token = match self.metadata_token().await {
            Ok(t) => Some(t),
            Err(e) if v1_disabled => return Err(e),
            Err(_) => None,
        };
        let role = match role {
            Some(r) => r,
            None => {
                let body = self.metadata_get(METADATA_CREDS_PATH, token.as_deref()).await?;
                let name = String::from_utf8_lossy(&body).lines().next().unwrap_or("").trim().to_string();
                if name.is_empty() {
                    return Err(CredentialError::missing(format!(
                        "ECS metadata at {base}: no RAM role is attached to this instance"
                    )));
                }
                name
            }
        };
        let what = format!("ECS metadata RAM role {role} at {base}");
        let body = self.metadata_get(&format!("{METADATA_CREDS_PATH}{role}"), token.as_deref()).await?;
        code_success_credentials(&body, &what)
    }

    async fn metadata_token(&self) -> Result<String, CredentialError> {
        let url = format!("{}{METADATA_TOKEN_PATH}", self.metadata);
        let what = format!("ECS metadata token at {url}");
        let resp = self
            .http
            .put(&url)
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", METADATA_TOKEN_TTL_SECONDS.to_string())
            .timeout(METADATA_TIMEOUT)
            .send()
            .await
            .map_err(|e| metadata_unreachable(&what, e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| transport(&what, e))?;
        if status != 200 {
            return Err(CredentialError::unreachable(format!("{what}: HTTP {status}")));
        }
        Ok(String::from_utf8_lossy(&body).trim().to_string())
    }

    async fn metadata_get(&self, path: &str, token: Option<&str>) -> Result<Vec<u8>, CredentialError> {
        let url = format!("{}{path}", self.metadata);
        let what = format!("ECS metadata {url}");
        let mut rb = self.http.get(&url).timeout(METADATA_TIMEOUT);
        if let Some(t) = token {
            let mut hv = reqwest::header::HeaderValue::from_str(t).map_err(|_| {
                CredentialError::unreachable(format!("{what}: the metadata token is not a header value"))
            })?;
            hv.set_sensitive(true);
            rb = rb.header("X-aliyun-ecs-metadata-token", hv);
        }
        let resp = rb.send().await.map_err(|e| metadata_unreachable(&what, e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| transport(&what, e))?;
        match status {
            200 => Ok(body.to_vec()),
            404 => Err(CredentialError::missing(format!("{what}: HTTP 404 (no such RAM role on this instance)"))),
            _ => Err(CredentialError::unreachable(format!("{what}: HTTP {status}"))),
        }
    }

    async fn uri_credentials(&self, uri: &str) -> Result<Resolved, CredentialError> {
        let what = format!("credentials URI {}", uri.split('?').next().unwrap_or(uri));
        let resp = self.http.get(uri).send().await.map_err(|e| transport(&what, e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| transport(&what, e))?;
        if status != 200 {
            return Err(CredentialError::unreachable(format!("{what}: HTTP {status}")));
        }
        code_success_credentials(&body, &what)
    }

    /// Tries the chain (or, once one answered, only that one) and keeps the answer.
    async fn refetch(&self, last: Option<Provider>) -> Result<Cached, CredentialError> {
        let order = match last {
            Some(p) => vec![p],
            None => self.only.clone().unwrap_or_else(Self::chain),
        };
        let mut errors: Vec<(Provider, CredentialError)> = Vec::new();
        for p in order {
            match self.fetch(&p).await {
                Ok(resolved) => return Ok(Cached { resolved, at: SystemTime::now(), from: p }),
                Err(e) => errors.push((p, e)),
            }
        }
        // A source that exists but failed tells more than the ones that are simply absent.
        let kind = errors
            .iter()
            .map(|(_, e)| e.kind.clone())
            .find(|k| *k != super::CredentialErrorKind::Missing)
            .unwrap_or(super::CredentialErrorKind::Missing);
        let list: Vec<String> = errors.iter().map(|(p, e)| format!("{}: {}", p.name(), e.message)).collect();
        Err(CredentialError::new(kind, format!("Alibaba default credential chain: {}", list.join("; "))))
    }
}

fn metadata_unreachable(what: &str, e: reqwest::Error) -> CredentialError {
    // No metadata service at all (not an ECS instance): the chain has nothing, as the library reports it.
    if e.is_connect() {
        return CredentialError::missing(format!("{what}: no metadata service (not an ECS instance?)"));
    }
    transport(what, e)
}

/// `aliassync-<hostname>`, for the chain's own roles (a target's role uses its `role_session_name`).
fn default_session_name() -> String {
    let host = crate::config::default_instance_id();
    let clean: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || ".@-_".contains(c) { c } else { '-' }).collect();
    format!("aliassync-{clean}").chars().take(64).collect()
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

fn from_env() -> Result<Resolved, CredentialError> {
    let id = env("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .ok_or_else(|| CredentialError::missing("ALIBABA_CLOUD_ACCESS_KEY_ID is not set"))?;
    let secret = env("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .ok_or_else(|| CredentialError::missing("ALIBABA_CLOUD_ACCESS_KEY_SECRET is not set"))?;
    Ok(Resolved {
        creds: Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: env("ALIBABA_CLOUD_SECURITY_TOKEN").map(Secret::new),
        },
        expires_at: None,
    })
}

/// The CLI's `config.json`: `{"current": "p", "profiles": [{"name": "p", "mode": "AK", ...}]}`.
fn cli_profile(path: &std::path::Path, name: Option<&str>) -> Result<ProfileKind, CredentialError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CredentialError::missing(format!("cannot read {shown}: {}", e.kind())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| CredentialError::missing(format!("{shown} is not the CLI's JSON configuration")))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => v.get("current").and_then(|c| c.as_str()).unwrap_or("").to_string(),
    };
    let profiles = v.get("profiles").and_then(|p| p.as_array()).cloned().unwrap_or_default();
    let p = profiles
        .iter()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
        .ok_or_else(|| CredentialError::missing(format!("{shown}: no profile {name:?}")))?;
    let s = |k: &str| p.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty()).map(str::to_string);
    let n = |k: &str| p.get(k).and_then(|x| x.as_u64().or_else(|| x.as_str()?.parse().ok())).filter(|d| *d > 0);
    let need = |k: &str| s(k).ok_or_else(|| CredentialError::missing(format!("{shown}: profile {name:?} has no {k}")));
    let mode = s("mode").unwrap_or_default();
    Ok(match mode.as_str() {
        "AK" => ProfileKind::Keys { id: need("access_key_id")?, secret: need("access_key_secret")?, token: None },
        "StsToken" => ProfileKind::Keys {
            id: need("access_key_id")?,
            secret: need("access_key_secret")?,
            token: Some(need("sts_token")?),
        },
        "RamRoleArn" => ProfileKind::RoleOnKeys {
            id: need("access_key_id")?,
            secret: need("access_key_secret")?,
            role: need("ram_role_arn")?,
            session: s("ram_session_name"),
            duration: n("expired_seconds"),
            external_id: s("external_id"),
            sts_region: s("sts_region"),
        },
        "EcsRamRole" => ProfileKind::Ecs { role_name: s("ram_role_name") },
        "OIDC" => ProfileKind::Oidc {
            role: need("ram_role_arn")?,
            provider: need("oidc_provider_arn")?,
            token_file: need("oidc_token_file")?,
            session: s("role_session_name"),
            duration: n("expired_seconds"),
            sts_region: s("sts_region"),
        },
        other => {
            return Err(CredentialError::missing(format!(
                "{shown}: profile {name:?} mode {other:?} is not supported by aliassync (AK, StsToken, RamRoleArn, EcsRamRole, OIDC are)"
            )))
        }
    })
}

/// The sections of an INI file, values with ` #…` comments cut as the library does.
fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            out.entry(name.trim().to_string()).or_default();
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, line.split_once('=').or_else(|| line.split_once(':'))) else {
            continue;
        };
        let v = v.split('#').next().unwrap_or("").trim();
        out.entry(section.clone()).or_default().insert(k.trim().to_ascii_lowercase(), v.to_string());
    }
    out
}

/// A section of `credentials.ini`: `type = access_key | ram_role_arn | ecs_ram_role | oidc_role_arn`.
fn ini_profile(path: &std::path::Path, section: &str) -> Result<ProfileKind, CredentialError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CredentialError::missing(format!("cannot read {shown}: {}", e.kind())))?;
    let ini = parse_ini(&text);
    let sec = ini.get(section).ok_or_else(|| CredentialError::missing(format!("{shown}: no section [{section}]")))?;
    let s = |k: &str| sec.get(k).filter(|v| !v.is_empty()).cloned();
    let need =
        |k: &str| s(k).ok_or_else(|| CredentialError::missing(format!("{shown}: section [{section}] has no {k}")));
    let kind = s("type").unwrap_or_default();
    Ok(match kind.as_str() {
        "access_key" => ProfileKind::Keys { id: need("access_key_id")?, secret: need("access_key_secret")?, token: None },
        "ram_role_arn" => ProfileKind::RoleOnKeys {
            id: need("access_key_id")?,
            secret: need("access_key_secret")?,
            role: need("role_arn")?,
            session: s("role_session_name"),
            duration: None,
            external_id: None,
            sts_region: None,
        },
        "ecs_ram_role" => ProfileKind::Ecs { role_name: s("role_name") },
        "oidc_role_arn" => ProfileKind::Oidc {
            role: need("role_arn")?,
            provider: need("oidc_provider_arn")?,
            token_file: need("oidc_token_file_path")?,
            session: s("role_session_name"),
            duration: None,
            sts_region: None,
        },
        other => {
            return Err(CredentialError::missing(format!(
                "{shown}: section [{section}] type {other:?} is not supported by aliassync (access_key, ram_role_arn, ecs_ram_role, oidc_role_arn are)"
            )))
        }
    })
}

/// Whether credentials fetched at `at` that expire at `exp` are still good to hand out: more than a quarter of
/// their lifetime (at least 10 s, at most 15 min) left, the margin the refresher itself keeps.
fn still_fresh(now: SystemTime, at: SystemTime, exp: Option<SystemTime>) -> bool {
    let Some(exp) = exp else { return true };
    let lifetime = exp.duration_since(at).unwrap_or_default();
    let margin = (lifetime / 4).clamp(Duration::from_secs(10), Duration::from_secs(15 * 60));
    exp.duration_since(now).unwrap_or_default() > margin
}

#[async_trait]
impl CredentialSource for DefaultChain {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        let mut state = self.state.lock().await;
        let now = SystemTime::now();
        if let Some(c) = state.as_ref() {
            // Long-lived keys (environment, AK profiles) are read again each time, as the library does:
            // only temporary credentials are cached.
            if c.resolved.expires_at.is_some() && still_fresh(now, c.at, c.resolved.expires_at) {
                return Ok(c.resolved.clone());
            }
        }
        let last = state.as_ref().map(|c| c.from.clone());
        let fresh = self.refetch(last).await?;
        let out = fresh.resolved.clone();
        tracing::debug!(provider = fresh.from.name(), expires = ?out.expires_at, "alibaba default chain resolved");
        *state = Some(fresh);
        Ok(out)
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        // Only reached through a target's wrapper normally; the global endpoint as the library's default.
        let sts = reqwest::Url::parse("https://sts.aliyuncs.com").expect("constant URL");
        caller_identity(&self.http, &sts, creds).await
    }
    fn describe(&self) -> String {
        "alibaba default chain (environment, OIDC, CLI profile, credentials file, ECS RAM role)".into()
    }
    fn refreshes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_endpoints_follow_the_library() {
        assert_eq!(sts_endpoint(None, "cn-hangzhou").unwrap().as_str(), "https://sts.cn-hangzhou.aliyuncs.com/");
        assert_eq!(sts_endpoint(Some("http://127.0.0.1:9"), "x").unwrap().as_str(), "http://127.0.0.1:9/");
    }

    #[test]
    fn expiration_parses() {
        let t = parse_expiration("2015-04-09T11:52:19Z").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_428_580_339);
        assert!(parse_expiration("2015-04-09 11:52:19").is_none());
    }

    #[test]
    fn ini_and_cli_profiles() {
        let ini = parse_ini("[default]\ntype = access_key # static\naccess_key_id = AK\naccess_key_secret = SK\n[r]\ntype=ecs_ram_role\nrole_name=x\n");
        assert_eq!(ini["default"]["type"], "access_key");
        assert_eq!(ini["r"]["role_name"], "x");
        let dir = std::env::temp_dir().join(format!("aliassync-ali-cli-{}", std::process::id()));
        std::fs::write(
            &dir,
            r#"{"current":"p","profiles":[{"name":"p","mode":"RamRoleArn","access_key_id":"A","access_key_secret":"S","ram_role_arn":"acs:ram::1:role/r","expired_seconds":900}]}"#,
        )
        .unwrap();
        let k = cli_profile(&dir, None).unwrap();
        std::fs::remove_file(&dir).ok();
        assert!(matches!(k, ProfileKind::RoleOnKeys { duration: Some(900), .. }));
    }

    #[test]
    fn sts_errors_are_classified_and_redacted() {
        let body = br#"{"RequestId":"R1","Code":"NoPermission","Message":"token SECRETTOKEN denied"}"#;
        let e = sts_error("AssumeRole", 403, body, &["SECRETTOKEN"]);
        assert_eq!(e.kind, super::super::CredentialErrorKind::Refused);
        assert!(e.message.contains("NoPermission") && !e.message.contains("SECRETTOKEN"), "{}", e.message);
        assert_eq!(sts_error("x", 503, b"oops", &[]).kind, super::super::CredentialErrorKind::Unreachable);
    }

    #[test]
    fn cache_margin() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let exp = at + Duration::from_secs(40);
        assert!(still_fresh(at + Duration::from_secs(20), at, Some(exp)));
        assert!(!still_fresh(at + Duration::from_secs(31), at, Some(exp)));
        assert!(still_fresh(at, at, None));
    }

    /// A metadata service on a local port: counts token and credential requests, requires the token, and
    /// answers credentials that expire `lifetime` seconds from now.
    async fn metadata_server(lifetime: u64) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::{HeaderMap, StatusCode};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        let app = axum::Router::new()
            .route(
                "/latest/api/token",
                axum::routing::put(|h: HeaderMap| async move {
                    match h.get("x-aliyun-ecs-metadata-token-ttl-seconds") {
                        Some(v) if v == "21600" => (StatusCode::OK, "TOKEN1".to_string()),
                        _ => (StatusCode::BAD_REQUEST, String::new()),
                    }
                }),
            )
            // The role listing (discovery, when ALIBABA_CLOUD_ECS_METADATA names none).
            .route("/latest/meta-data/ram/security-credentials/", axum::routing::get(|| async { "r" }))
            .route(
                "/latest/meta-data/ram/security-credentials/{role}",
                axum::routing::get(move |h: HeaderMap| {
                    let counted = counted.clone();
                    async move {
                        if h.get("x-aliyun-ecs-metadata-token").is_none_or(|v| v != "TOKEN1") {
                            return (StatusCode::UNAUTHORIZED, String::new());
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        // Let concurrent callers pile up behind the first fetch.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let exp = chrono::Utc::now() + chrono::Duration::seconds(lifetime as i64);
                        let body = serde_json::json!({
                            "AccessKeyId": "STS.k", "AccessKeySecret": "s", "SecurityToken": "t",
                            "Expiration": exp.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "Code": "Success",
                        });
                        (StatusCode::OK, body.to_string())
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (url, fetches)
    }

    fn metadata_chain(url: &str) -> Arc<DefaultChain> {
        Arc::new(DefaultChain {
            http: reqwest::Client::new(),
            metadata: url.to_string(),
            state: Mutex::new(None),
            only: Some(vec![Provider::EcsMetadata]),
        })
    }

    /// A hundred targets resolving at once ask the metadata service once; near expiry, it is asked again.
    #[tokio::test]
    async fn the_shared_chain_fetches_metadata_once_until_near_expiry() {
        let (url, fetches) = metadata_server(3600).await;
        let chain = metadata_chain(&url);
        let all = futures::future::join_all((0..100).map(|_| {
            let c = chain.clone();
            async move { c.resolve().await }
        }))
        .await;
        assert!(all.iter().all(|r| r.as_ref().is_ok_and(|r| r.creds.session_token.is_some())), "{:?}", all[0]);
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);

        let (url, fetches) = metadata_server(5).await;
        let chain = metadata_chain(&url);
        chain.resolve().await.unwrap();
        chain.resolve().await.unwrap();
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2, "5 s left is inside the margin");
    }
}
