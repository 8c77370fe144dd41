//! Typed configuration: one TOML file plus `ALIASSYNC__SECTION__KEY` environment overrides, validated at start.
//! Every validation error names the key and the fix; secrets are only ever references (`env:` / `file:`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::names::ProviderKind;
use crate::secret::Secret;

pub const DEFAULT_PATH: &str = "/etc/aliassync/aliassync.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub ownership: Ownership,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub drift: DriftConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Defaults to `<topic>.dlq`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Partitions of the lease topic `<topic>.leases`; fixed once the topic exists.
    #[serde(default = "default_lease_partitions")]
    pub lease_partitions: i32,
    /// This instance's static membership of the lease group (librdkafka `group.instance.id`): a restart
    /// with the same id takes its leases back without a rebalance. Unset: the host name.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How long a dead instance keeps its targets (the lease group's session timeout).
    #[serde(default = "default_session_timeout_ms")]
    pub lease_session_timeout_ms: u32,
    /// Events larger than this are invalid (dead-lettered), whatever the broker accepts.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// librdkafka properties passed through verbatim (security.protocol, sasl.*, ssl.*, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ownership {
    pub managed_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: default_listen() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    #[serde(default = "default_scan_interval")]
    pub scan_interval_seconds: u64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig { scan_interval_seconds: default_scan_interval() }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing EnvFilter directive; RUST_LOG wins when set.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: default_level() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// First retry delay; doubles per failed attempt of one (target, alias), with jitter.
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// NotFound / invalid-state right after a key change is eventual consistency: retried this many times,
    /// then treated as permanent.
    #[serde(default = "default_consistency_retries")]
    pub consistency_retries: u32,
    /// SIGTERM waits at most this long for in-flight reconciles.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_seconds: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            backoff_min_ms: default_backoff_min_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            consistency_retries: default_consistency_retries(),
            drain_timeout_seconds: default_drain_timeout(),
        }
    }
}

/// Checks before any write (DESIGN §2.9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Before a create or re-point: the key exists and is Enabled, and a re-point keeps the key's spec and usage.
    /// Violations are dead-lettered (`preflight_key_missing` / `_disabled` / `_mismatch`), the alias untouched.
    #[serde(default = "default_true")]
    pub preflight: bool,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig { preflight: true }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Observe,
}

/// How a Huawei target spells alias names on the wire (`alias_prefix`). Huawei's own docs disagree on whether
/// aliases carry the `alias/` prefix (API examples use `kms-1234`, terraform-provider-huaweicloud requires
/// `alias/…`), so it is a per-target choice. Desired state, metrics and logs always use the canonical name
/// (`alias/app/x`) whatever is chosen here.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AliasPrefix {
    /// Send the canonical name unchanged (`alias/app/x`). The default.
    #[default]
    Keep,
    /// Send the name without `alias/` (`app/x`); listed names get `alias/` re-added before the managed-prefix
    /// filter applies.
    Strip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: ProviderKind,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// AWS only: the SigV4 service name of an AWS-compatible endpoint.
    #[serde(default)]
    pub signing_service: Option<String>,
    /// Huawei only, required there: the IAM project id (32 hex characters) of the region, used in every path.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Huawei only: `"keep"` (default) sends `alias/app/x` as is, `"strip"` sends `app/x` (see [`AliasPrefix`]).
    #[serde(default)]
    pub alias_prefix: Option<AliasPrefix>,
    /// `"env:PREFIX"`, `"file:PATH"` (static keys) or `"default"` (the cloud SDK's own chain; DESIGN §2.8).
    #[serde(default)]
    pub credentials: String,
    /// AWS and Alibaba: a role to assume on top of `credentials` (one session per target, refreshed).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// AWS and Alibaba: the role's external id, as an `env:`/`file:` reference (it is a shared secret).
    #[serde(default)]
    pub external_id: Option<String>,
    /// AWS and Alibaba: the session name CloudTrail/ActionTrail show; default `aliassync-<hostname>`.
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// Lifetime of an assumed session (or a Huawei agency token); default 3600.
    #[serde(default)]
    pub role_duration_seconds: Option<u64>,
    /// Huawei: the agency to assume (IAM assume-agency) in `agency_domain`'s account.
    #[serde(default)]
    pub agency_name: Option<String>,
    /// Huawei: the account (domain) name that owns `agency_name`.
    #[serde(default)]
    pub agency_domain: Option<String>,
    /// AWS and Alibaba: the STS URL (default: the region's).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// Huawei: the IAM URL for assume-agency (default: the region's).
    #[serde(default)]
    pub iam_endpoint: Option<String>,
    /// Alias writes per second (the cloud's write quota is the default).
    #[serde(default)]
    pub rate_limit_per_second: Option<f64>,
    /// Reads (listings, describes) per second.
    #[serde(default)]
    pub read_rate_limit_per_second: Option<f64>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub prune: bool,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: f64,
}

impl TargetConfig {
    pub fn write_rate(&self) -> f64 {
        self.rate_limit_per_second.unwrap_or(match self.provider {
            // AWS: 5 CreateAlias/UpdateAlias/DeleteAlias per second per account and region.
            ProviderKind::Aws => 5.0,
            // Alibaba: 30 writes/s per account and region on the shared gateway (alias create/update/delete
            // and key/tag changes together; not raisable). Excess is 429 Rejected.Throttling.
            ProviderKind::Alibaba => 30.0,
            // Huawei: no documented alias-write quota; a conservative guess.
            ProviderKind::Huawei => 10.0,
        })
    }

    pub fn read_rate(&self) -> f64 {
        // AWS: a fifth of the 100/s ListAliases/DescribeKey quota, leaving room for other readers. Alibaba's
        // read quota is 50/s per account and region, so 20 leaves room there too. Huawei: undocumented.
        self.read_rate_limit_per_second.unwrap_or(20.0)
    }

    /// Huawei's alias naming on the wire; `keep` unless set.
    pub fn alias_prefix(&self) -> AliasPrefix {
        self.alias_prefix.unwrap_or_default()
    }
}

fn default_group() -> String {
    "aliassync".into()
}
fn default_lease_partitions() -> i32 {
    12
}
fn default_session_timeout_ms() -> u32 {
    10_000
}
fn default_max_event_bytes() -> usize {
    64 * 1024
}
fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_scan_interval() -> u64 {
    300
}
fn default_level() -> String {
    "info".into()
}
fn default_backoff_min_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    20_000
}
fn default_consistency_retries() -> u32 {
    5
}
fn default_drain_timeout() -> u64 {
    20
}
fn default_true() -> bool {
    true
}
fn default_concurrency() -> usize {
    4
}
fn default_request_timeout() -> f64 {
    10.0
}

/// Kafka's rule for `group.instance.id` (as for topic names): 1-249 of [A-Za-z0-9._-].
fn valid_instance_id(id: &str) -> bool {
    (1..=249).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The host name, with anything Kafka would refuse in a `group.instance.id` replaced by `-`.
pub(crate) fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .take(249)
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .collect();
    if id.is_empty() {
        "aliassync".into()
    } else {
        id
    }
}

/// A configuration problem: which key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}; fix: {}", self.key, self.problem, self.fix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; fix: pass an existing file with --config")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config does not parse: {0}; fix: correct the TOML or the ALIASSYNC__* variable named there")]
    Parse(String),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Loads the file and the environment overrides, then validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_sources(&text, std::env::vars())
    }

    /// Pure loader used by `load` and by tests: TOML text plus an environment.
    pub fn from_sources(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("ALIASSYNC__")).collect();
        // The config crate reads `[N]` in an environment key or a top-level TOML key as an array index and fills
        // the array up to N at once: `ALIASSYNC__X[99999999]` alone would take gigabytes. No key of ours is indexed.
        let toml_keys: Vec<String> =
            toml_text.parse::<toml::Table>().map(|t| t.keys().cloned().collect()).unwrap_or_default();
        let indexed = env.keys().chain(&toml_keys).find(|k: &&String| k.contains('[') || k.contains(']'));
        if let Some(k) = indexed {
            return Err(ConfigError::Parse(format!("{k:?} is not a config key (no key has `[`)")));
        }
        let built = config::Config::builder()
            .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("ALIASSYNC")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("ownership.managed_prefixes")
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let cfg: Config = built.try_deserialize().map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn dead_letter_topic(&self) -> String {
        self.kafka.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.kafka.topic))
    }

    /// Where owners record applied and failed changes (DESIGN §2.9).
    pub fn status_topic(&self) -> String {
        format!("{}.status", self.kafka.topic)
    }

    pub fn lease_topic(&self) -> String {
        format!("{}.leases", self.kafka.topic)
    }

    /// The lease group's `group.instance.id`: `kafka.instance_id`, else the host name (made valid for Kafka).
    pub fn instance_id(&self) -> String {
        match &self.kafka.instance_id {
            Some(id) => id.clone(),
            None => default_instance_id(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let mut bad = |key: &str, problem: &str, fix: &str| {
            p.push(Problem { key: key.into(), problem: problem.into(), fix: fix.into() })
        };
        if self.kafka.brokers.trim().is_empty() {
            bad("kafka.brokers", "is empty", "set it to host:port[,host:port], e.g. \"127.0.0.1:9092\"");
        }
        if self.kafka.topic.trim().is_empty() {
            bad("kafka.topic", "is empty", "name the compacted desired-state topic, e.g. \"kms-alias-desired\"");
        }
        if self.kafka.group_id.trim().is_empty() {
            bad("kafka.group_id", "is empty", "set one id shared by all instances, e.g. \"aliassync\"");
        }
        if self.dead_letter_topic() == self.kafka.topic {
            bad("kafka.dead_letter_topic", "equals kafka.topic", "use another topic, e.g. \"<topic>.dlq\"");
        }
        if !(1..=1000).contains(&self.kafka.lease_partitions) {
            bad(
                "kafka.lease_partitions",
                "must be 1..=1000",
                "keep the default 12 or set more than the instance count",
            );
        }
        if let Some(id) = &self.kafka.instance_id {
            if !valid_instance_id(id) {
                bad(
                    "kafka.instance_id",
                    "must be 1-249 of [A-Za-z0-9._-]",
                    "use one distinct id per instance, e.g. the host name, plus \"-2\" for a second instance on a host",
                );
            }
        }
        if self.kafka.lease_session_timeout_ms < 6000 {
            bad(
                "kafka.lease_session_timeout_ms",
                "is below the broker's default group.min.session.timeout.ms (6000)",
                "set 6000 or more",
            );
        }
        if self.kafka.max_event_bytes < 256 {
            bad("kafka.max_event_bytes", "is too small to hold an event", "set at least 256 (default 65536)");
        }
        for k in self.kafka.properties.keys() {
            // These are owned by aliassync: overriding them would break the global table or the leases.
            if [
                "bootstrap.servers",
                "group.id",
                "group.instance.id",
                "enable.auto.commit",
                "partition.assignment.strategy",
            ]
            .contains(&k.as_str())
            {
                bad(
                    &format!("kafka.properties.\"{k}\""),
                    "is set by aliassync itself",
                    "remove it (use kafka.brokers / kafka.group_id / kafka.instance_id)",
                );
            }
            if k.contains("password") || k.contains("secret") || k.ends_with(".key.pem") {
                let v = &self.kafka.properties[k];
                if !(v.starts_with("env:") || v.starts_with("file:")) {
                    bad(
                        &format!("kafka.properties.\"{k}\""),
                        "holds a secret inline",
                        "reference it as \"env:VAR\" or \"file:PATH\" (relative paths resolve in $CREDENTIALS_DIRECTORY)",
                    );
                }
            }
        }
        if self.ownership.managed_prefixes.is_empty() {
            bad(
                "ownership.managed_prefixes",
                "is empty, so aliassync may touch nothing",
                "list the alias prefixes it owns, e.g. [\"alias/app/\"]",
            );
        }
        for (i, pre) in self.ownership.managed_prefixes.iter().enumerate() {
            let key = format!("ownership.managed_prefixes[{i}]");
            if !pre.starts_with("alias/") || pre.len() <= "alias/".len() {
                bad(&key, "must start with \"alias/\" and name something under it", "use e.g. \"alias/app/\"");
            } else if crate::names::is_reserved(pre) {
                bad(&key, "is a reserved cloud-managed prefix", "remove alias/aws/ and alias/acs/ prefixes");
            } else if !pre.ends_with('/') {
                bad(&key, "does not end with \"/\"", "end it with \"/\" so alias/app does not also own alias/apple");
            }
        }
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            bad("metrics.listen", "is not an address", "use ip:port, e.g. \"127.0.0.1:9464\"");
        }
        if self.drift.scan_interval_seconds < 10 {
            bad("drift.scan_interval_seconds", "is below 10", "scan at most every 10 s (default 300)");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            bad("log.level", "is not a valid filter", "use error|warn|info|debug|trace or target=level pairs");
        }
        let r = &self.reconcile;
        if r.backoff_min_ms == 0 || r.backoff_max_ms < r.backoff_min_ms {
            bad("reconcile.backoff_min_ms", "must be > 0 and <= reconcile.backoff_max_ms", "e.g. 200 and 20000");
        }
        if self.targets.is_empty() {
            bad("targets", "no target is configured", "add a [targets.NAME] table with provider, region, credentials");
        }
        for (name, t) in &self.targets {
            let key = |k: &str| format!("targets.{name}.{k}");
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bad(&format!("targets.{name}"), "name must be 1-64 of [A-Za-z0-9_-]", "rename the table");
            }
            if t.region.trim().is_empty() {
                bad(&key("region"), "is empty", "set the cloud region, e.g. \"us-east-1\"");
            }
            if let Some(ep) = &t.endpoint {
                if !(ep.starts_with("https://") || ep.starts_with("http://")) || reqwest::Url::parse(ep).is_err() {
                    bad(&key("endpoint"), "is not an http(s) URL", "use e.g. \"https://kms.us-east-1.amazonaws.com\"");
                }
            }
            if t.credentials != "default" {
                if let Err(e) = crate::secret::SecretRef::parse(&t.credentials) {
                    bad(
                        &key("credentials"),
                        &e,
                        "use \"default\" (the cloud's own chain), \"env:PREFIX\" or \"file:PATH\"; secrets never go in the TOML",
                    );
                }
            }
            crate::credentials::validate(name, t, &mut bad);
            for (k, v) in [
                ("rate_limit_per_second", t.rate_limit_per_second),
                ("read_rate_limit_per_second", t.read_rate_limit_per_second),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && v > 0.0 && v <= 10_000.0) {
                        bad(&key(k), "must be > 0 and <= 10000", "use the cloud's quota, e.g. 5 for AWS alias writes");
                    }
                }
            }
            if t.concurrency == 0 || t.concurrency > 256 {
                bad(&key("concurrency"), "must be 1..=256", "use a small number such as 4");
            }
            if !(t.request_timeout_seconds.is_finite()
                && t.request_timeout_seconds > 0.0
                && t.request_timeout_seconds <= 300.0)
            {
                bad(&key("request_timeout_seconds"), "must be > 0 and <= 300", "e.g. 10");
            }
            let provider = t.provider.as_str();
            if t.provider != ProviderKind::Aws && t.signing_service.is_some() {
                bad(
                    &key("signing_service"),
                    &format!("only applies to provider \"aws\", not \"{provider}\""),
                    "remove it",
                );
            }
            if t.provider == ProviderKind::Huawei {
                match t.project_id.as_deref() {
                    None | Some("") => bad(
                        &key("project_id"),
                        "is required for provider \"huawei\"",
                        "set the IAM project id of the region (32 hex characters, from the console's My Credentials \
                         page or IAM's /v3/projects)",
                    ),
                    Some(pid) if pid.len() > 64 || !pid.bytes().all(|b| b.is_ascii_alphanumeric()) => bad(
                        &key("project_id"),
                        "must be 1-64 letters and digits",
                        "copy the project id (32 hex characters) from the console's My Credentials page",
                    ),
                    Some(_) => {}
                }
            } else {
                if t.project_id.is_some() {
                    bad(
                        &key("project_id"),
                        &format!("only applies to provider \"huawei\", not \"{provider}\""),
                        "remove it",
                    );
                }
                if t.alias_prefix.is_some() {
                    bad(
                        &key("alias_prefix"),
                        &format!("only applies to provider \"huawei\", not \"{provider}\""),
                        "remove it (other clouds always use alias/ names)",
                    );
                }
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    /// Loads every static secret reference now (`env:`/`file:` keys, external ids), so a missing one fails at
    /// start naming the key. Targets on `"default"` resolve through their cloud's chain instead (not here).
    pub fn resolve_credentials(&self) -> Result<BTreeMap<String, crate::secret::Credentials>, ConfigError> {
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, t) in &self.targets {
            if let Some(Err(e)) =
                t.external_id.as_deref().map(|x| crate::secret::SecretRef::parse(x).and_then(|r| r.load_string()))
            {
                problems.push(Problem {
                    key: format!("targets.{name}.external_id"),
                    problem: e,
                    fix: "set the variable or file the reference names".into(),
                });
            }
            if t.credentials == "default" {
                continue;
            }
            match crate::secret::SecretRef::parse(&t.credentials).and_then(|r| r.load_credentials()) {
                Ok(c) => {
                    out.insert(name.clone(), c);
                }
                Err(e) => problems.push(Problem {
                    key: format!("targets.{name}.credentials"),
                    problem: e,
                    fix: "provide access_key_id and secret_access_key (see README, Credentials)".into(),
                }),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Kafka properties with `env:`/`file:` references resolved (SASL passwords and the like).
    pub fn kafka_properties(&self) -> Result<BTreeMap<String, Secret>, ConfigError> {
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for (k, v) in &self.kafka.properties {
            let resolved = if v.starts_with("env:") || v.starts_with("file:") {
                crate::secret::SecretRef::parse(v).and_then(|r| r.load_string())
            } else {
                Ok(Secret::new(v.clone()))
            };
            match resolved {
                Ok(s) => {
                    out.insert(k.clone(), s);
                }
                Err(e) => problems.push(Problem {
                    key: format!("kafka.properties.\"{k}\""),
                    problem: e,
                    fix: "point it at a set variable or a readable file".into(),
                }),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\n[ownership]\nmanaged_prefixes = [\"alias/app/\"]\n\
                           [targets.a]\nprovider = \"aws\"\nregion = \"r\"\ncredentials = \"env:A\"\n";

    /// fuzz config_load oom-b8e14f1b: the variable `ALIASSYNC__3.333[33333333]` made the config crate allocate an
    /// array of 33,333,334 values (3.2 GB) before any validation; a TOML key `"x[N]"` did the same.
    #[test]
    fn fuzz_indexed_keys_are_refused_before_allocating() {
        let env = [("ALIASSYNC__3.333[33333333]".to_string(), "!]=!".to_string())];
        let e = Config::from_sources(MINIMAL, env).unwrap_err();
        assert!(matches!(&e, ConfigError::Parse(m) if m.contains("3.333[33333333]")), "{e}");
        let e = Config::from_sources(&format!("\"x[-99999999999]\" = 1\n{MINIMAL}"), []).unwrap_err();
        assert!(matches!(&e, ConfigError::Parse(m) if m.contains("x[-99999999999]")), "{e}");
        assert!(Config::from_sources(MINIMAL, []).is_ok());
    }

    #[test]
    fn safety_preflight_defaults_on_and_unknown_keys_fail_naming_the_key() {
        assert!(Config::from_sources(MINIMAL, []).unwrap().safety.preflight);
        let off = Config::from_sources(&format!("{MINIMAL}[safety]\npreflight = false\n"), []).unwrap();
        assert!(!off.safety.preflight);
        let env = [("ALIASSYNC__SAFETY__PREFLIGHT".to_string(), "false".to_string())];
        assert!(!Config::from_sources(MINIMAL, env).unwrap().safety.preflight);
        let e = Config::from_sources(&format!("{MINIMAL}[safety]\npreflite = false\n"), []).unwrap_err();
        assert!(matches!(&e, ConfigError::Parse(m) if m.contains("preflite") && m.contains("preflight")), "{e}");
        let e = Config::from_sources(&format!("{MINIMAL}[safety]\npreflight = \"sometimes\"\n"), []).unwrap_err();
        assert!(matches!(&e, ConfigError::Parse(m) if m.contains("preflight")), "{e}");
    }
}
