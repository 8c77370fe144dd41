//! AWS credentials (DESIGN §2.8): static keys, or the AWS SDK's own default chain through `aws-config`
//! (environment, shared config/credentials files and profiles with SSO and `credential_process`, web identity,
//! ECS container credentials, EC2 instance metadata with IMDSv2), optionally with a role assumed on top through
//! STS AssumeRole; `check-config` asks STS GetCallerIdentity whom the credentials act as.
//!
//! The chain is built once per process (`Context::aws_base`) and shared by every `default` target; each target
//! with a role assumes its own session, again at every refresh.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::identity::IdentityCache;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};

use super::{
    session_name, Context, CredentialError, CredentialErrorKind, CredentialSource, Resolved, StaticKeys, StaticOnly,
    DEFAULT_ROLE_DURATION_SECONDS,
};
use crate::config::TargetConfig;
use crate::secret::{Credentials, Secret, SecretRef};

/// Target `name`'s credential source.
pub fn source(_name: &str, t: &TargetConfig, ctx: &Context) -> Result<Arc<dyn CredentialSource>, String> {
    let chain = t.credentials == "default";
    if !chain && t.role_arn.is_none() {
        // Long-lived keys: nothing to refresh, and no call to STS (check-config works on a host without it).
        return Ok(Arc::new(StaticOnly::new(&t.credentials, "aws")?));
    }
    let base =
        if chain { Base::Chain(shared_chain(ctx, &t.region)) } else { Base::Static(StaticKeys::new(&t.credentials)?) };
    let role = match &t.role_arn {
        Some(arn) => Some(Role {
            arn: arn.clone(),
            external_id: t.external_id.as_deref().map(SecretRef::parse).transpose()?,
            session_name: session_name(t),
            duration_seconds: t.role_duration_seconds.unwrap_or(DEFAULT_ROLE_DURATION_SECONDS),
        }),
        None => None,
    };
    Ok(Arc::new(AwsSource {
        region: t.region.clone(),
        sts_endpoint: t.sts_endpoint.clone(),
        base,
        role,
        sdk: tokio::sync::OnceCell::new(),
    }))
}

/// The process's one default chain: built on first use, shared by every target through `ctx.aws_base`.
fn shared_chain(ctx: &Context, region: &str) -> SharedCredentialsProvider {
    if let Some(p) = ctx.aws_base.get() {
        return p.clone();
    }
    // Sources are made one after the other (source_for is synchronous), so the first target's region is the
    // fallback of the chain's own STS calls (web identity, profile roles) when neither AWS_REGION nor the
    // profile names one.
    let _ = ctx.aws_base.set(SharedCredentialsProvider::new(Chain::new(region)));
    ctx.aws_base.get().expect("just set").clone()
}

static STS_HTTP: std::sync::OnceLock<aws_smithy_runtime_api::client::http::SharedHttpClient> =
    std::sync::OnceLock::new();

enum Base {
    Static(StaticKeys),
    Chain(SharedCredentialsProvider),
}

struct Role {
    arn: String,
    /// Re-read at each assumption, so a rotated external id file is picked up.
    external_id: Option<SecretRef>,
    session_name: String,
    duration_seconds: u64,
}

struct AwsSource {
    region: String,
    sts_endpoint: Option<String>,
    base: Base,
    role: Option<Role>,
    /// STS client settings (region, endpoint, retries, HTTP client), loaded on first use.
    sdk: tokio::sync::OnceCell<SdkConfig>,
}

impl AwsSource {
    /// Where STS calls go, for error messages.
    fn sts_url(&self) -> String {
        match &self.sts_endpoint {
            Some(e) => e.clone(),
            None if self.region.starts_with("cn-") => format!("https://sts.{}.amazonaws.com.cn", self.region),
            None => format!("https://sts.{}.amazonaws.com", self.region),
        }
    }

    async fn sdk(&self) -> &SdkConfig {
        self.sdk
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(self.region.clone()))
                    // Credentials are given per call: the base's for AssumeRole, the resolved ones for identity.
                    .no_credentials()
                    // The refresher retries with its own backoff: one retry here is enough.
                    .retry_config(RetryConfig::standard().with_max_attempts(2))
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(3))
                            .operation_attempt_timeout(Duration::from_secs(5))
                            .operation_timeout(Duration::from_secs(12))
                            .build(),
                    );
                if let Some(ep) = &self.sts_endpoint {
                    loader = loader.endpoint_url(ep);
                }
                // One HTTP client (connection pool, TLS roots) for every target's STS calls.
                if let Some(http) = STS_HTTP.get() {
                    loader = loader.http_client(http.clone());
                }
                let conf = loader.load().await;
                if let Some(http) = conf.http_client() {
                    let _ = STS_HTTP.set(http);
                }
                conf
            })
            .await
    }

    /// An STS client signing with `creds` (no cache: each call is a fresh assumption or identity check).
    async fn sts(&self, creds: aws_credential_types::Credentials) -> aws_sdk_sts::Client {
        let conf = aws_sdk_sts::config::Builder::from(self.sdk().await)
            .credentials_provider(creds)
            .identity_cache(IdentityCache::no_cache())
            .build();
        aws_sdk_sts::Client::from_conf(conf)
    }

    async fn base_credentials(&self) -> Result<aws_credential_types::Credentials, CredentialError> {
        match &self.base {
            Base::Static(keys) => Ok(to_aws(&keys.load()?, None)),
            Base::Chain(chain) => chain.provide_credentials().await.map_err(|e| chain_error(&e)),
        }
    }

    async fn assume(&self, role: &Role) -> Result<Resolved, CredentialError> {
        let base = self.base_credentials().await?;
        let external_id = match &role.external_id {
            Some(r) => Some(
                r.load_string()
                    .map_err(|e| CredentialError::missing(format!("external id of role {}: {e}", role.arn)))?,
            ),
            None => None,
        };
        let out = self
            .sts(base)
            .await
            .assume_role()
            .role_arn(&role.arn)
            .role_session_name(&role.session_name)
            .duration_seconds(role.duration_seconds as i32)
            .set_external_id(external_id.as_ref().map(|s| s.expose().to_string()))
            .send()
            .await
            .map_err(|e| {
                let secrets: Vec<&str> = external_id.iter().map(Secret::expose).collect();
                self.sts_error(&format!("AssumeRole of {}", role.arn), &e, &secrets)
            })?;
        let c = out.credentials().ok_or_else(|| {
            CredentialError::unreachable(format!(
                "STS AssumeRole of {} at {} answered without credentials",
                role.arn,
                self.sts_url()
            ))
        })?;
        Ok(Resolved {
            creds: Credentials {
                access_key_id: c.access_key_id().to_string(),
                secret_access_key: Secret::new(c.secret_access_key()),
                session_token: Some(Secret::new(c.session_token())),
            },
            expires_at: SystemTime::try_from(*c.expiration()).ok(),
        })
    }

    /// Maps an STS error: a service's refusal (4xx: access denied, a wrong external id, an invalid or expired
    /// token) is `refused`; throttling, 5xx, timeouts and connection failures are `unreachable`. The message
    /// names the call and URL; `secrets` are scrubbed should any echo one.
    fn sts_error<E>(
        &self,
        call: &str,
        e: &SdkError<E, aws_smithy_runtime_api::http::Response>,
        secrets: &[&str],
    ) -> CredentialError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let url = self.sts_url();
        let (kind, detail) = match e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("no error code");
                let throttled = matches!(code, "Throttling" | "ThrottlingException" | "RequestLimitExceeded");
                let kind = if status >= 500 || throttled {
                    CredentialErrorKind::Unreachable
                } else {
                    CredentialErrorKind::Refused
                };
                (kind, format!("HTTP {status} {code}: {}", se.err().message().unwrap_or("")))
            }
            SdkError::ConstructionFailure(_) => (CredentialErrorKind::Refused, error_text(e)),
            _ => (CredentialErrorKind::Unreachable, error_text(e)),
        };
        CredentialError::new(kind, clean(&format!("STS {call} at {url}: {detail}"), secrets))
    }
}

#[async_trait]
impl CredentialSource for AwsSource {
    async fn resolve(&self) -> Result<Resolved, CredentialError> {
        match &self.role {
            Some(role) => self.assume(role).await,
            None => {
                let c = self.base_credentials().await?;
                Ok(Resolved { creds: from_aws(&c), expires_at: c.expiry() })
            }
        }
    }

    async fn identity(&self, creds: &Credentials) -> Result<String, CredentialError> {
        let out = self
            .sts(to_aws(creds, None))
            .await
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| self.sts_error("GetCallerIdentity", &e, &secrets_of(creds)))?;
        Ok(format!("{} (account {})", out.arn().unwrap_or("an unknown ARN"), out.account().unwrap_or("unknown")))
    }

    fn describe(&self) -> String {
        let base = match &self.base {
            Base::Static(k) => format!("static keys {}", k.label()),
            Base::Chain(_) => "default chain".to_string(),
        };
        match &self.role {
            Some(r) => format!("{base}, role {}", r.arn),
            None => base,
        }
    }

    fn refreshes(&self) -> bool {
        // Static keys alone never get here (StaticOnly); a chain or a role hands out temporary credentials.
        true
    }
}

/// How long one answer of the chain is handed to every target that asks: targets resolve at the same moments
/// (start, and refreshes computed from the same expiry), so a hundred of them cost one metadata call.
const CHAIN_SHARE: Duration = Duration::from_secs(5);

/// The AWS SDK's default chain, built on first use (building reads the profile files and the region), asked by
/// one caller at a time and its answer shared for [`CHAIN_SHARE`].
struct Chain {
    fallback_region: String,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
    last: tokio::sync::Mutex<Option<(Instant, aws_credential_types::Credentials)>>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AWS default chain (fallback region {})", self.fallback_region)
    }
}

impl Chain {
    fn new(fallback_region: &str) -> Chain {
        Chain {
            fallback_region: fallback_region.to_string(),
            chain: tokio::sync::OnceCell::new(),
            last: tokio::sync::Mutex::new(None),
        }
    }

    async fn credentials(&self) -> aws_credential_types::provider::Result {
        // Held across the call: concurrent callers wait for the one in flight and take its answer.
        let mut last = self.last.lock().await;
        if let Some((at, c)) = last.as_ref() {
            let fresh = c.expiry().is_none_or(|e| e > SystemTime::now() + CHAIN_SHARE);
            if at.elapsed() < CHAIN_SHARE && fresh {
                return Ok(c.clone());
            }
        }
        let chain = self
            .chain
            .get_or_init(|| async {
                // Region for the chain's own STS calls; no instance-metadata lookup (it would stall hosts
                // without one): the environment, the profile, else the first target's region.
                let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                    .or_else(ProfileFileRegionProvider::new())
                    .or_else(Region::new(self.fallback_region.clone()));
                DefaultCredentialsChain::builder().region(region).build().await
            })
            .await;
        let c = chain.provide_credentials().await?;
        *last = Some((Instant::now(), c.clone()));
        Ok(c)
    }
}

impl ProvideCredentials for Chain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

/// Maps a failure of the default chain. Nothing found is `missing` (host set-up); a provider that answered
/// with a refusal is `refused`; timeouts and other failures are `unreachable` (retried).
fn chain_error(e: &CredentialsError) -> CredentialError {
    let text = error_text(e);
    let kind = match e {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            CredentialErrorKind::Missing
        }
        CredentialsError::ProviderError(_)
            if ["AccessDenied", "InvalidIdentityToken", "ExpiredToken", "InvalidClientTokenId"]
                .iter()
                .any(|c| text.contains(c)) =>
        {
            CredentialErrorKind::Refused
        }
        _ => CredentialErrorKind::Unreachable,
    };
    let what = "AWS default chain (environment, profile, web identity, ECS, EC2 instance metadata)";
    CredentialError::new(kind, clean(&format!("{what}: {text}"), &[]))
}

/// An error and its sources on one line. Display only: aws-config's Debug forms (what `DisplayErrorContext`
/// appends) repeat the whole chain with connector internals.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let out = crate::provider::http::error_chain(e);
    // The chain's error lists each provider on a line of its own.
    out.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ").replace(": ;", ":")
}

/// The longest error text kept: aws-config's error chains can be long.
const MAX_MESSAGE: usize = 1000;

/// Makes an error text safe to log: drops what a `credential_process` printed on stderr (it may print
/// anything, a secret included), replaces each known secret, and bounds the length.
fn clean(text: &str, secrets: &[&str]) -> String {
    let mut s = match text.find("Stderr:") {
        Some(i) => format!("{}(stderr of the process not shown)", &text[..i]),
        None => text.to_string(),
    };
    for secret in secrets.iter().filter(|x| x.len() >= 4) {
        s = s.replace(secret, "[redacted]");
    }
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn secrets_of(c: &Credentials) -> Vec<&str> {
    let mut v = vec![c.secret_access_key.expose()];
    if let Some(t) = &c.session_token {
        v.push(t.expose());
    }
    v
}

fn to_aws(c: &Credentials, expiry: Option<SystemTime>) -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new(
        &c.access_key_id,
        c.secret_access_key.expose(),
        c.session_token.as_ref().map(|t| t.expose().to_string()),
        expiry,
        "aliassync",
    )
}

fn from_aws(c: &aws_credential_types::Credentials) -> Credentials {
    Credentials {
        access_key_id: c.access_key_id().to_string(),
        secret_access_key: Secret::new(c.secret_access_key()),
        session_token: c.session_token().map(Secret::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(toml_lines: &str) -> TargetConfig {
        toml::from_str(&format!("provider = \"aws\"\nregion = \"eu-west-1\"\n{toml_lines}")).unwrap()
    }

    fn src(toml_lines: &str) -> Arc<dyn CredentialSource> {
        source("t", &target(toml_lines), &Context::new().unwrap()).unwrap()
    }

    #[test]
    fn describe_and_refresh_follow_the_config() {
        let s = src("credentials = \"env:AWS_PROD\"");
        assert_eq!(s.describe(), "static keys env:AWS_PROD");
        assert!(!s.refreshes());
        let s = src("credentials = \"default\"");
        assert_eq!(s.describe(), "default chain");
        assert!(s.refreshes());
        let s = src("credentials = \"default\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"");
        assert_eq!(s.describe(), "default chain, role arn:aws:iam::123456789012:role/x");
        assert!(s.refreshes());
        let s = src("credentials = \"file:/k\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"");
        assert_eq!(s.describe(), "static keys file:/k, role arn:aws:iam::123456789012:role/x");
        assert!(s.refreshes());
    }

    #[test]
    fn default_targets_share_one_chain() {
        let ctx = Context::new().unwrap();
        let a = shared_chain(&ctx, "eu-west-1");
        // The second target gets the first one's chain, not one of its own.
        let b = shared_chain(&ctx, "us-east-1");
        assert!(format!("{b:?}").contains("eu-west-1"), "{b:?}");
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn cleaned_errors_hide_stderr_and_secrets() {
        let text = "Error retrieving credentials: external process exited with code 1. Stderr: key=AKIA s3cr3tValue";
        let c = clean(text, &[]);
        assert!(c.contains("exited with code 1") && !c.contains("s3cr3tValue"), "{c}");
        let c = clean("STS at http://x: the external id ext-Zq81 is wrong", &["ext-Zq81"]);
        assert_eq!(c, "STS at http://x: the external id [redacted] is wrong");
        let long = "é".repeat(2000);
        assert!(clean(&long, &[]).len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    /// A role over static keys whose STS does not answer: `unreachable`, naming the URL and the role, never
    /// the keys or the external id.
    #[tokio::test]
    async fn unreachable_sts_names_the_url_and_role_but_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "access_key_id = \"AKIDUNITTEST\"\nsecret_access_key = \"UnitSecretQx7\"\n").unwrap();
        let ext = dir.path().join("ext");
        std::fs::write(&ext, "ExtIdUnit-93k\n").unwrap();
        let s = src(&format!(
            "credentials = \"file:{}\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nexternal_id = \"file:{}\"\n\
             sts_endpoint = \"http://127.0.0.1:9\"",
            keys.display(),
            ext.display()
        ));
        let e = s.resolve().await.unwrap_err();
        assert_eq!(e.kind, CredentialErrorKind::Unreachable, "{e}");
        let m = e.to_string();
        assert!(m.contains("http://127.0.0.1:9") && m.contains("arn:aws:iam::123456789012:role/x"), "{m}");
        for secret in ["UnitSecretQx7", "ExtIdUnit-93k"] {
            assert!(!m.contains(secret), "{m}");
        }
    }

    #[tokio::test]
    async fn missing_static_keys_under_a_role_are_missing() {
        let s = src("credentials = \"env:ALIASSYNC_UNIT_UNSET\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"");
        let e = s.resolve().await.unwrap_err();
        assert_eq!(e.kind, CredentialErrorKind::Missing, "{e}");
        assert!(e.to_string().contains("ALIASSYNC_UNIT_UNSET_ACCESS_KEY_ID"), "{e}");
    }

    #[test]
    fn sts_refusals_and_outages_are_classified_without_secrets() {
        use aws_sdk_sts::error::ErrorMetadata;
        use aws_sdk_sts::operation::assume_role::AssumeRoleError;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        let s = AwsSource {
            region: "cn-north-1".into(),
            sts_endpoint: None,
            base: Base::Static(StaticKeys::new("env:X").unwrap()),
            role: None,
            sdk: tokio::sync::OnceCell::new(),
        };
        let answer = |status: u16, code: &str| {
            let err = AssumeRoleError::generic(
                ErrorMetadata::builder().code(code).message("denied for external id ext-Secret9 on purpose").build(),
            );
            SdkError::service_error(err, Response::new(StatusCode::try_from(status).unwrap(), "".into()))
        };
        let e = s.sts_error(
            "AssumeRole of arn:aws-cn:iam::123456789012:role/x",
            &answer(403, "AccessDenied"),
            &["ext-Secret9"],
        );
        assert_eq!(e.kind, CredentialErrorKind::Refused);
        assert!(e.message.contains("https://sts.cn-north-1.amazonaws.com.cn"), "{}", e.message);
        assert!(e.message.contains("HTTP 403 AccessDenied") && e.message.contains("role/x"), "{}", e.message);
        assert!(!e.message.contains("ext-Secret9"), "{}", e.message);
        for (status, code) in [(503, "ServiceUnavailable"), (400, "Throttling")] {
            assert_eq!(s.sts_error("AssumeRole", &answer(status, code), &[]).kind, CredentialErrorKind::Unreachable);
        }
    }

    #[test]
    fn chain_errors_are_classified() {
        let e = chain_error(&CredentialsError::not_loaded("no providers in chain provided credentials"));
        assert_eq!(e.kind, CredentialErrorKind::Missing);
        assert!(e.message.contains("AWS default chain"), "{}", e.message);
        let e = chain_error(&CredentialsError::provider_error("AccessDenied: not allowed"));
        assert_eq!(e.kind, CredentialErrorKind::Refused);
        let e = chain_error(&CredentialsError::provider_timed_out(Duration::from_secs(5)));
        assert_eq!(e.kind, CredentialErrorKind::Unreachable);
        let e = chain_error(&CredentialsError::provider_error(
            "Error retrieving credentials: external process exited with code 2. Stderr: token=abcSecret",
        ));
        assert!(!e.message.contains("abcSecret"), "{}", e.message);
    }
}
