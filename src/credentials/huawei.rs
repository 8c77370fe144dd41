//! Huawei Cloud credentials, as `huaweicloudsdkcore`'s providers resolve them (Python
//! `huaweicloudsdkcore/auth/provider.py` + `internal.py`, Go `core/auth/provider` + `core/auth/internal`):
//!
//! - `credentials = "default"`: the environment (`HUAWEICLOUD_SDK_AK`, `HUAWEICLOUD_SDK_SK`, optional
//!   `HUAWEICLOUD_SDK_SECURITY_TOKEN`), then the ECS metadata service's temporary keys of the instance's agency:
//!   `PUT /meta-data/latest/api/token` (`X-Metadata-Token-Ttl-Seconds`; a 404/405/503 means "no token API", as
//!   in the SDK) then `GET /openstack/latest/securitykey` with `X-Metadata-Token` →
//!   `{"credential": {"access", "secret", "securitytoken", "expires_at"}}`. The SDKs hard-code
//!   `http://169.254.169.254`; [`METADATA_ENDPOINT_ENV`] moves it (tests, proxies). One chain per process
//!   ([`Context::huawei_base`]), cached until near expiry, so many targets ask the metadata service once.
//! - `agency_name` + `agency_domain`: IAM assume-agency (`CreateTemporaryAccessKeyByAgency`,
//!   `POST {iam}/v3.0/OS-CREDENTIAL/securitytokens`, method `assume_role`), signed `SDK-HMAC-SHA256` with the
//!   base keys (plus `X-Security-Token` when they are temporary). The IAM endpoint: `iam_endpoint`, else
//!   `HUAWEICLOUD_SDK_IAM_ENDPOINT` (as the SDK), else the region's from the SDK's IAM region table.
//!
//! Huawei has no caller-identity call for AK/SK that every key may make, so [`identity`](CredentialSource::identity)
//! prints what the config and the key id say (agency, project, access key id) after proving the credentials with
//! one signed KMS call the daemon needs anyway: `GET /v1.0/{project}/kms/aliases?limit=1`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{Context, CredentialError, CredentialSource, Resolved, StaticKeys, DEFAULT_ROLE_DURATION_SECONDS};
use crate::config::TargetConfig;
use crate::provider::http::{host_header, parse_endpoint};
use crate::provider::sign::{self, sdk_hmac, SignableRequest};
use crate::secret::{Credentials, Secret};

/// Where the ECS metadata service is; the SDKs have no setting for it (`_METADATA_ENDPOINT` is a constant).
pub const METADATA_ENDPOINT_ENV: &str = "ALIASSYNC_HUAWEI_METADATA_ENDPOINT";
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";
const METADATA_TOKEN_PATH: &str = "/meta-data/latest/api/token";
const SECURITY_KEY_PATH: &str = "/openstack/latest/securitykey";
/// The SDK asks for 6 h metadata tokens.
const METADATA_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// The metadata service answers locally; the SDK gives it 3 s.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// What the metadata service answers (401) when the ECS has no agency: no retry with a new token helps.
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";
const ENV_AK: &str = "HUAWEICLOUD_SDK_AK";
const ENV_SK: &str = "HUAWEICLOUD_SDK_SK";
const ENV_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
/// As `IamHelper.IAM_ENDPOINT_ENV_NAME`.
const ENV_IAM_ENDPOINT: &str = "HUAWEICLOUD_SDK_IAM_ENDPOINT";
const ASSUME_AGENCY_PATH: &str = "/v3.0/OS-CREDENTIAL/securitytokens";
const SECURITY_TOKEN_HEADER: &str = "x-security-token";
const JSON_UTF8: &str = "application/json;charset=UTF-8";
/// Error bodies quoted in messages are cut to this many characters.
const MAX_QUOTE: usize = 300;

/// Target `name`'s credential source.
pub fn source(name: &str, t: &TargetConfig, ctx: &Context) -> Result<Arc<dyn CredentialSource>, String> {
    let base: Arc<dyn CredentialSource> = if t.credentials == "default" {
        ctx.huawei_base.get_or_init(|| Arc::new(DefaultChain::new(ctx.http.clone(), metadata_endpoint()))).clone()
    } else {
        Arc::new(Static(StaticKeys::new(&t.credentials)?))
    };
    let probe = KmsProbe::new(t);
    match (&t.agency_name, &t.agency_domain) {
        (Some(agency), Some(domain)) => {
            let iam = iam_endpoint(t.iam_endpoint.as_deref(), &t.region).map_err(|e| format!("targets.{name}.{e}"))?;
            let duration = t.role_duration_seconds.unwrap_or(DEFAULT_ROLE_DURATION_SECONDS);
            Ok(Arc::new(Agency {
                base,
                http: ctx.http.clone(),
                iam,
                agency: agency.clone(),
                domain: domain.clone(),
                duration,
                probe,
            }))
        }
        _ => Ok(Arc::new(Plain { base, http: ctx.http.clone(), probe })),
    }
}

/// The metadata service URL: [`METADATA_ENDPOINT_ENV`] or the link-local default.
fn metadata_endpoint() -> String {
    std::env::var(METADATA_ENDPOINT_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.into())
        .trim_end_matches('/')
        .to_string()
}

/// The IAM endpoint of `region`: `configured`, else `HUAWEICLOUD_SDK_IAM_ENDPOINT`, else the SDK's IAM region
/// table (`IamRegion`: `https://iam.{region}.myhuaweicloud.com`, Europe's `eu-west-101` on `myhuaweicloud.eu`).
pub fn iam_endpoint(configured: Option<&str>, region: &str) -> Result<reqwest::Url, String> {
    let env = std::env::var(ENV_IAM_ENDPOINT).ok().filter(|v| !v.is_empty());
    let url = match (configured, env) {
        (Some(c), _) => c.to_string(),
        (None, Some(e)) => e,
        (None, None) if region == "eu-west-101" => "https://iam.eu-west-101.myhuaweicloud.eu".into(),
        (None, None) => format!("https://iam.{region}.myhuaweicloud.com"),
    };
    parse_endpoint(&url).map_err(|e| format!("iam_endpoint: {e}"))
}

/// The URL without userinfo or trailing slash, for messages.
fn shown(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.as_str().trim_end_matches('/').to_string()
}

/// `expires_at` as IAM and the metadata service send it (`2026-12-06T16:00:00.000000Z`, RFC 3339).
pub fn parse_expiry(s: &str) -> Option<SystemTime> {
    let t = DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        // Without a zone (some SDK models drop the Z): UTC.
        NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())
    })?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(t.timestamp_millis()).ok()?))
}

/// `{"credential": {...}}` of IAM and the metadata service.
#[derive(Deserialize)]
struct CredentialBody {
    credential: TemporaryCredential,
}

#[derive(Deserialize)]
struct TemporaryCredential {
    access: String,
    secret: String,
    securitytoken: String,
    expires_at: String,
}

/// Parses a temporary-credential answer of `service`. serde's messages quote values: never shown.
fn parse_temporary(body: &[u8], service: &str) -> Result<Resolved, CredentialError> {
    let c: CredentialBody = serde_json::from_slice(body).map_err(|_| {
        CredentialError::unreachable(format!(
            "{service}: the answer is not {{\"credential\": {{access, secret, securitytoken, expires_at}}}}"
        ))
    })?;
    let c = c.credential;
    let expires_at = parse_expiry(&c.expires_at).ok_or_else(|| {
        CredentialError::unreachable(format!("{service}: expires_at {:?} is not a UTC time", c.expires_at))
    })?;
    Resolved::temporary(service, c.access, c.secret, c.securitytoken, expires_at)
}

/// An error body for a message: whitespace collapsed, cut, with the request's secrets removed.
fn quote(body: &[u8], creds: Option<&Credentials>) -> String {
    let text: String = String::from_utf8_lossy(body).split_whitespace().collect::<Vec<_>>().join(" ");
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(c) = creds {
        secrets.push(c.secret_access_key.expose());
        if let Some(t) = &c.session_token {
            secrets.push(t.expose());
        }
    }
    crate::provider::http::truncate(&crate::provider::http::redact(&text, &secrets), MAX_QUOTE)
}

/// `code: message` of a Huawei error body (APIG flat, KMS/IAM `{"error": {...}}`), else the quoted body.
fn error_summary(body: &[u8], creds: Option<&Credentials>) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let fields = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
        let s =
            |k: &[&str]| k.iter().find_map(|k| fields.get(*k)).map(|x| x.as_str().map_or(x.to_string(), Into::into));
        if let (Some(code), msg) = (s(&["error_code", "code"]), s(&["error_msg", "message"])) {
            let text = format!("{code}: {}", msg.unwrap_or_default());
            return quote(text.as_bytes(), creds);
        }
    }
    quote(body, creds)
}

fn transport(what: &str, e: reqwest::Error) -> CredentialError {
    let e = e.without_url();
    let why = if e.is_timeout() {
        "timed out".to_string()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    };
    CredentialError::unreachable(format!("{what}: {why}"))
}

/// A request signed `SDK-HMAC-SHA256` with `creds` over every header set (as the SDK signs), plus
/// `X-Security-Token` for temporary keys. Returns (status, body); errors start with `what`.
#[allow(clippy::too_many_arguments)]
async fn signed_call(
    what: &str,
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &reqwest::Url,
    query: &[(&str, &str)],
    body: Option<Vec<u8>>,
    extra: &[(&'static str, String)],
    creds: &Credentials,
) -> Result<(u16, Vec<u8>), CredentialError> {
    // Keys with characters no header can carry: never echo them.
    let header = |v: &str, sensitive: bool| {
        let mut hv = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
            CredentialError::refused(format!("{what}: the credentials hold characters no HTTP header can carry"))
        })?;
        hv.set_sensitive(sensitive);
        Ok::<_, CredentialError>(hv)
    };
    let body = body.unwrap_or_default();
    let mut url = url.clone();
    let q = sign::canonical_query(query);
    url.set_query(Some(&q).filter(|q| !q.is_empty()).map(String::as_str));
    let date = sdk_hmac::format_date(Utc::now());
    let mut headers: Vec<(&'static str, String)> =
        vec![("content-type", JSON_UTF8.into()), ("host", host_header(&url)), ("x-sdk-date", date.clone())];
    headers.extend(extra.iter().cloned());
    if let Some(t) = &creds.session_token {
        headers.push((SECURITY_TOKEN_HEADER, t.expose().to_string()));
    }
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    let req = SignableRequest { method: method.as_str(), path: url.path(), query, headers: &pairs, body: &body };
    let s = sdk_hmac::sign(&req, &names, &date, &creds.access_key_id, creds.secret_access_key.expose());
    let mut rb = http.request(method, url);
    for (n, v) in &headers {
        // host is the client's own; the others go as signed.
        if *n != "host" {
            rb = rb.header(*n, header(v, *n == SECURITY_TOKEN_HEADER)?);
        }
    }
    rb = rb.header(reqwest::header::AUTHORIZATION, header(&s.authorization, true)?);
    if !body.is_empty() {
        rb = rb.body(body);
    }
    let resp = rb.send().await.map_err(|e| transport(what, e))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| transport(what, e))?;
    Ok((status, bytes.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// Base credentials

/// `env:` / `file:` keys (re-read on each resolve: a rotated file is picked up by the next agency refresh).
struct Static(StaticKeys);

#[async_trait]
impl CredentialSource for Static {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        Ok(Resolved { creds: self.0.load()?, expires_at: None })
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        Ok(format!("access key {}", creds.access_key_id))
    }
    fn describe(&self) -> String {
        format!("static keys {}", self.0.label())
    }
    fn refreshes(&self) -> bool {
        false
    }
}

/// The SDK's default chain (environment, then ECS metadata), shared by every `default` target of the process.
pub struct DefaultChain {
    http: reqwest::Client,
    metadata: String,
    /// What metadata last gave and when; the lock also makes concurrent targets wait for one request.
    cached: tokio::sync::Mutex<Option<(SystemTime, Resolved)>>,
    /// The metadata API token and when it was obtained; `Some(None)`: the service has no token API.
    token: tokio::sync::Mutex<Option<(std::time::Instant, Option<String>)>>,
}

impl DefaultChain {
    pub fn new(http: reqwest::Client, metadata: String) -> DefaultChain {
        DefaultChain { http, metadata, cached: tokio::sync::Mutex::new(None), token: tokio::sync::Mutex::new(None) }
    }

    fn from_env() -> Option<Credentials> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Credentials {
            access_key_id: get(ENV_AK)?,
            secret_access_key: Secret::new(get(ENV_SK)?),
            session_token: get(ENV_TOKEN).map(Secret::new),
        })
    }

    /// A metadata API token (cached until near its TTL); None when the service has no token API.
    async fn metadata_token(&self, renew: bool) -> Result<Option<String>, CredentialError> {
        let mut held = self.token.lock().await;
        if let (false, Some((at, tok))) = (renew, held.as_ref()) {
            if at.elapsed() + Duration::from_secs(60) < METADATA_TOKEN_TTL {
                return Ok(tok.clone());
            }
        }
        let url = format!("{}{METADATA_TOKEN_PATH}", self.metadata);
        let resp = self
            .http
            .put(&url)
            .header("X-Metadata-Token-Ttl-Seconds", METADATA_TOKEN_TTL.as_secs().to_string())
            .timeout(METADATA_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport(&format!("ECS metadata token at {url}"), e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| transport(&format!("ECS metadata token at {url}"), e))?;
        let tok = match status {
            200 => Some(String::from_utf8_lossy(&body).trim().to_string()),
            // As the SDK: no token API here; ask for the keys without one.
            404 | 405 | 503 if !renew => None,
            _ => {
                return Err(CredentialError::unreachable(format!(
                    "ECS metadata token at {url}: HTTP {status}: {}",
                    quote(&body, None)
                )))
            }
        };
        *held = Some((std::time::Instant::now(), tok.clone()));
        Ok(tok)
    }

    async fn security_key(&self, token: Option<&str>) -> Result<(u16, Vec<u8>), CredentialError> {
        let url = format!("{}{SECURITY_KEY_PATH}", self.metadata);
        let mut rb = self.http.get(&url).timeout(METADATA_TIMEOUT);
        if let Some(t) = token {
            let mut hv = reqwest::header::HeaderValue::from_str(t).map_err(|_| {
                CredentialError::unreachable(format!("ECS metadata at {url}: the token is not a header value"))
            })?;
            hv.set_sensitive(true);
            rb = rb.header("X-Metadata-Token", hv);
        }
        let what = || {
            format!(
                "no {ENV_AK}/{ENV_SK} in the environment, and the ECS metadata service at {url} did not answer \
                 (not an ECS, or {METADATA_ENDPOINT_ENV} is wrong)"
            )
        };
        let resp = rb.send().await.map_err(|e| transport(&what(), e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| transport(&what(), e))?;
        Ok((status, body.to_vec()))
    }

    async fn metadata_keys(&self) -> Result<Resolved, CredentialError> {
        let url = format!("{}{SECURITY_KEY_PATH}", self.metadata);
        let token = self.metadata_token(false).await?;
        let (mut status, mut body) = self.security_key(token.as_deref()).await?;
        // A stale or missing token (the SDK retries once with a new one), unless the ECS has no agency.
        if status == 401 && !String::from_utf8_lossy(&body).contains(NO_AGENCY) {
            let token = self.metadata_token(true).await?;
            (status, body) = self.security_key(token.as_deref()).await?;
        }
        match status {
            200 => parse_temporary(&body, &format!("ECS metadata at {url}")),
            401 | 403 | 404 => Err(CredentialError::missing(format!(
                "no {ENV_AK}/{ENV_SK} in the environment, and ECS metadata at {url} has no keys (HTTP {status}: \
                 {}): attach an agency to the ECS",
                quote(&body, None)
            ))),
            _ => Err(CredentialError::unreachable(format!(
                "ECS metadata at {url}: HTTP {status}: {}",
                quote(&body, None)
            ))),
        }
    }
}

#[async_trait]
impl CredentialSource for DefaultChain {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        if let Some(creds) = Self::from_env() {
            return Ok(Resolved { creds, expires_at: None });
        }
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((at, r)) = cached.as_ref() {
            // Still good for longer than the margin the refresher keeps (a quarter of the lifetime, 10 s..15 min).
            if let Some(exp) = r.expires_at {
                let margin = (exp.duration_since(*at).unwrap_or_default() / 4)
                    .clamp(Duration::from_secs(10), Duration::from_secs(15 * 60));
                if now + margin < exp {
                    return Ok(r.clone());
                }
            }
        }
        let r = self.metadata_keys().await?;
        *cached = Some((now, r.clone()));
        Ok(r)
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        Ok(format!("access key {}", creds.access_key_id))
    }
    fn describe(&self) -> String {
        format!("default chain (environment {ENV_AK}, ECS metadata {})", self.metadata)
    }
    fn refreshes(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Per-target sources

/// The one signed KMS call that proves a target's credentials: `GET /v1.0/{project}/kms/aliases?limit=1`.
struct KmsProbe {
    url: Option<reqwest::Url>,
    project: String,
}

impl KmsProbe {
    fn new(t: &TargetConfig) -> KmsProbe {
        let project = t.project_id.clone().unwrap_or_default();
        let base = match &t.endpoint {
            Some(e) => e.clone(),
            None if t.region == "eu-west-101" => "https://kms.eu-west-101.myhuaweicloud.eu".into(),
            None => format!("https://kms.{}.myhuaweicloud.com", t.region),
        };
        // A bad endpoint or project is reported by the provider at start; check-config then skips the probe.
        let url = parse_endpoint(&base).ok().map(|mut u| {
            let prefix = u.path().trim_end_matches('/').to_string();
            u.set_path(&format!("{prefix}/v1.0/{project}/kms/aliases"));
            u
        });
        KmsProbe { url, project }
    }

    async fn check(&self, http: &reqwest::Client, creds: &Credentials) -> Result<(), CredentialError> {
        let Some(url) = &self.url else { return Ok(()) };
        let extra = [("x-project-id", self.project.clone())];
        let what = format!("KMS list aliases at {} (project {})", shown(url), self.project);
        let (status, body) =
            signed_call(&what, http, reqwest::Method::GET, url, &[("limit", "1")], None, &extra, creds).await?;
        match status {
            200..=299 => Ok(()),
            429 | 500.. => Err(CredentialError::unreachable(format!(
                "{what}: HTTP {status}: {}",
                error_summary(&body, Some(creds))
            ))),
            _ => Err(CredentialError::refused(format!("{what}: HTTP {status}: {}", error_summary(&body, Some(creds))))),
        }
    }
}

/// Keys used as they are (static, or the default chain's) in the target's project.
struct Plain {
    base: Arc<dyn CredentialSource>,
    http: reqwest::Client,
    probe: KmsProbe,
}

#[async_trait]
impl CredentialSource for Plain {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        self.base.resolve().await
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        self.probe.check(&self.http, creds).await?;
        let kind = if creds.session_token.is_some() { "temporary access key" } else { "access key" };
        Ok(format!("huawei {kind} {} in project {} (KMS list aliases OK)", creds.access_key_id, self.probe.project))
    }
    fn describe(&self) -> String {
        self.base.describe()
    }
    fn refreshes(&self) -> bool {
        self.base.refreshes()
    }
}

/// An agency assumed with the base keys (IAM `CreateTemporaryAccessKeyByAgency`), once per target.
struct Agency {
    base: Arc<dyn CredentialSource>,
    http: reqwest::Client,
    iam: reqwest::Url,
    agency: String,
    domain: String,
    duration: u64,
    probe: KmsProbe,
}

impl Agency {
    fn what(&self) -> String {
        format!("IAM assume-agency {}/{} at {}{ASSUME_AGENCY_PATH}", self.domain, self.agency, shown(&self.iam))
    }
}

#[async_trait]
impl CredentialSource for Agency {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        let base = self.base.resolve().await.map_err(|e| {
            let msg = format!("base credentials for agency {}/{}: {e}", self.domain, self.agency);
            CredentialError::new(e.kind, msg)
        })?;
        let body = json!({
            "auth": {
                "identity": {
                    "methods": ["assume_role"],
                    "assume_role": {
                        "agency_name": self.agency,
                        "domain_name": self.domain,
                        "duration_seconds": self.duration,
                    }
                }
            }
        });
        let mut url = self.iam.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{ASSUME_AGENCY_PATH}"));
        let what = self.what();
        let (status, answer) = signed_call(
            &what,
            &self.http,
            reqwest::Method::POST,
            &url,
            &[],
            Some(body.to_string().into_bytes()),
            &[],
            &base.creds,
        )
        .await?;
        match status {
            200..=299 => parse_temporary(&answer, &what),
            429 | 500.. => Err(CredentialError::unreachable(format!(
                "{what}: HTTP {status}: {}",
                error_summary(&answer, Some(&base.creds))
            ))),
            _ => Err(CredentialError::refused(format!(
                "{what} as access key {}: HTTP {status}: {}",
                base.creds.access_key_id,
                error_summary(&answer, Some(&base.creds))
            ))),
        }
    }
    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        self.probe.check(&self.http, creds).await?;
        Ok(format!(
            "huawei agency {}/{} in project {} (temporary access key {}; KMS list aliases OK)",
            self.domain, self.agency, self.probe.project, creds.access_key_id
        ))
    }
    fn describe(&self) -> String {
        format!("{}, agency {}/{} via {}", self.base.describe(), self.domain, self.agency, shown(&self.iam))
    }
    fn refreshes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_endpoints_follow_the_sdk_region_table() {
        assert_eq!(iam_endpoint(None, "cn-north-4").unwrap().as_str(), "https://iam.cn-north-4.myhuaweicloud.com/");
        assert_eq!(iam_endpoint(None, "eu-west-101").unwrap().as_str(), "https://iam.eu-west-101.myhuaweicloud.eu/");
        assert_eq!(iam_endpoint(Some("http://127.0.0.1:9"), "cn-north-4").unwrap().as_str(), "http://127.0.0.1:9/");
        assert!(iam_endpoint(Some("ftp://x"), "cn-north-4").is_err());
    }

    #[test]
    fn expiry_as_iam_sends_it() {
        let t = parse_expiry("2026-12-06T16:00:00.587000Z").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis(), 1_796_572_800_587);
        assert_eq!(parse_expiry("2026-12-06T16:00:00Z"), parse_expiry("2026-12-06T16:00:00.000000"));
        assert!(parse_expiry("tomorrow").is_none());
    }

    #[test]
    fn temporary_answers_parse_and_never_echo_secrets() {
        let body = br#"{"credential":{"access":"AK1","secret":"S3CR3T","securitytoken":"T0K3N","expires_at":"2026-12-06T16:00:00.000000Z"}}"#;
        let r = parse_temporary(body, "IAM").unwrap();
        assert_eq!(r.creds.access_key_id, "AK1");
        assert_eq!(r.creds.session_token.unwrap().expose(), "T0K3N");
        let bad = br#"{"credential":{"access":"AK1","secret":"S3CR3T","securitytoken":"T0K3N","expires_at":"S3CR3T"}}"#;
        let e = parse_temporary(&bad[..], "IAM").unwrap_err();
        // expires_at is not secret, but a malformed answer's message quotes only that field.
        assert!(!e.message.contains("T0K3N"), "{e}");
        let e = parse_temporary(br#"{"credential":{"secret":"S3CR3T"}}"#, "IAM").unwrap_err();
        assert!(!e.message.contains("S3CR3T"), "{e}");
    }

    #[test]
    fn error_summaries_name_the_code_and_drop_secrets() {
        let creds = Credentials {
            access_key_id: "AK".into(),
            secret_access_key: Secret::new("SECRETVALUE"),
            session_token: Some(Secret::new("TOKENVALUE")),
        };
        let body = br#"{"error_code":"APIGW.0301","error_msg":"bad token TOKENVALUE","request_id":"r"}"#;
        assert_eq!(error_summary(body, Some(&creds)), "APIGW.0301: bad token [redacted]");
        let body = br#"{"error":{"code":"IAM.0090","message":"agency not found"}}"#;
        assert_eq!(error_summary(body, None), "IAM.0090: agency not found");
        assert_eq!(error_summary(b"<html> gateway\n error </html>", None), "<html> gateway error </html>");
    }
}
