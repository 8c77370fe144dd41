//! Shared helpers for the end-to-end tests: the real Kafka broker and moto started by
//! tests/support/rig.sh (tests/run.sh exports KAFKA_BROKERS and MOTO_URL), and the daemon binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aliassync::provider::aws::AwsKms;
use aliassync::provider::KmsAliases;
use aliassync::secret::{Credentials, Secret};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

pub fn env_or_explain(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through `bash tests/run.sh` (it starts Kafka and moto)")
    })
}

pub fn brokers() -> String {
    env_or_explain("KAFKA_BROKERS")
}

/// The secret in the file that the environment variable `name` names (e.g. a password file of the rig's SASL or
/// TLS broker), without its line end.
pub fn env_file_secret(name: &str) -> String {
    std::fs::read_to_string(env_or_explain(name)).unwrap().trim().to_string()
}

/// The KMS emulator binary: `$EMULATOR_BIN`, else `kms-emulator` beside the daemon binary. The emulator is
/// its own workspace member (emulator/), so cargo builds it for these tests only when asked:
/// `cargo build --workspace --bins` (tests/run.sh does).
pub fn emulator_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("EMULATOR_BIN") {
        return p.into();
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_aliassync")).with_file_name("kms-emulator");
    assert!(bin.exists(), "no emulator at {}: run `cargo build -p kms-emulator` first", bin.display());
    bin
}

/// The KMS emulator (emulator/, a workspace member) on a free port, stopped on drop.
pub struct Emulator {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Emulator {
    pub fn start() -> Emulator {
        Self::start_with(&[])
    }

    /// The emulator with extra command-line flags (e.g. `--sts-session-seconds 45`).
    pub fn start_with(args: &[&str]) -> Emulator {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("kms-emulator-{port}.log"));
        let child = Command::new(emulator_bin())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "emulator did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Emulator { child, url, http: reqwest::Client::new() }
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut r = self.http.request(method, format!("{}/_emulator/{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "emulator admin {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// Creates a key in a cloud scope (`who` = the access key or, for Huawei, the project).
    pub async fn key(&self, cloud: &str, who: &str, region: &str) -> String {
        let scope = if cloud == "huawei" { "project" } else { "access_key_id" };
        self.key_in(cloud, scope, who, region).await
    }

    /// Creates a key in the scope named explicitly (`scope`: `access_key_id`, `account` or `project`).
    pub async fn key_in(&self, cloud: &str, scope: &str, who: &str, region: &str) -> String {
        let v = self
            .admin(
                reqwest::Method::POST,
                "keys",
                Some(serde_json::json!({"cloud": cloud, scope: who, "region": region})),
            )
            .await;
        v["key_id"].as_str().unwrap().to_string()
    }

    /// Aliases (name → key) in one cloud and region, across accounts, under `prefix`.
    pub async fn aliases(&self, cloud: &str, region: &str, prefix: &str) -> HashMap<String, String> {
        let v = self.admin(reqwest::Method::GET, &format!("state?cloud={cloud}&region={region}"), None).await;
        let mut out = HashMap::new();
        for (_, regions) in v[cloud].as_object().into_iter().flatten() {
            for (a, k) in regions[region]["aliases"].as_object().into_iter().flatten() {
                if a.starts_with(prefix) {
                    out.insert(a.clone(), k.as_str().unwrap_or_default().to_string());
                }
            }
        }
        out
    }

    /// Calls counted by the emulator for one cloud and region: operation → (calls, throttled).
    pub async fn calls(&self, cloud: &str, region: &str) -> HashMap<String, (u64, u64)> {
        let v = self.admin(reqwest::Method::GET, &format!("calls?cloud={cloud}"), None).await;
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        for c in v["calls"].as_array().into_iter().flatten() {
            if c["region"] == region {
                let e = out.entry(c["operation"].as_str().unwrap().to_string()).or_default();
                e.0 += c["calls"].as_u64().unwrap_or(0);
                e.1 += c["throttled"].as_u64().unwrap_or(0);
            }
        }
        out
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn moto_url() -> String {
    env_or_explain("MOTO_URL")
}

/// A name unique to this test run, for topics, groups and alias prefixes.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{name}-{}-{nanos:x}", std::process::id())
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn creds() -> Credentials {
    Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: None,
    }
}

/// A client of moto in one region (our own AWS provider: signing and parsing are unit-tested).
pub fn kms(region: &str) -> AwsKms {
    AwsKms::new(region, Some(&moto_url()), None, creds(), Duration::from_secs(10)).unwrap()
}

pub async fn create_key(kms: &AwsKms) -> String {
    let v = kms.call("CreateKey", &json!({"Description": "aliassync e2e"})).await.unwrap();
    v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
}

/// Live aliases under `prefix`: name → key id.
pub async fn live(kms: &AwsKms, prefix: &str) -> HashMap<String, String> {
    kms.list_aliases(&[prefix.to_string()])
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.name, a.key_id.unwrap_or_default()))
        .collect()
}

/// A Kafka client of `brokers` with these settings (e.g. `security.protocol`).
pub fn kafka_client(brokers: &str, settings: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c
}

pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_on(&kafka_client(&brokers(), &[]), name, partitions).await
}

/// A compacted topic, created through `client` (a broker other than the rig's: its address and security settings).
pub async fn create_topic_on(client: &ClientConfig, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client.create().unwrap();
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let r = admin.create_topics([&t], &AdminOptions::new()).await.unwrap();
    r.into_iter().for_each(|x| {
        x.unwrap();
    });
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap()
}

pub async fn send(p: &FutureProducer, topic: &str, key: Option<&str>, value: Option<&str>) {
    let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic);
    if let Some(k) = key {
        r = r.key(k);
    }
    if let Some(v) = value {
        r = r.payload(v);
    }
    p.send(r, Duration::from_secs(60)).await.map_err(|(e, _)| e).unwrap();
}

pub fn event(alias: &str, rev: u64, targets: &[(&str, &str)]) -> String {
    let t: serde_json::Map<String, serde_json::Value> =
        targets.iter().map(|(n, k)| (n.to_string(), json!(k))).collect();
    json!({"schema": 1, "alias": alias, "revision": rev, "targets": t}).to_string()
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: HashMap<String, String>,
}

/// Reads a whole topic (all partitions, from the beginning) as it is now.
pub fn read_topic(topic: &str) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in md.topics()[0].partitions() {
        let (_, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
        if high > 0 {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() && Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for x in h.iter() {
                headers.insert(x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned());
            }
        }
        out.push(Record {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: m.payload().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
        });
        if m.offset() + 1 >= ends[&m.partition()] {
            ends.remove(&m.partition());
        }
    }
    out
}

/// A running daemon process, killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

/// A port below Linux's ephemeral range (32768+), so outgoing connections cannot take it between
/// our probe and the daemon's bind; unique per test binary through the pid and a counter.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 21000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 20;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Writes a config for `topic` with the given target tables and starts the daemon.
pub struct DaemonConfig {
    pub topic: String,
    pub group: String,
    pub prefix: String,
    /// (name, region, extra TOML lines)
    pub targets: Vec<(String, String, String)>,
    pub extra: String,
    pub lease_partitions: i32,
}

impl DaemonConfig {
    /// The config of test id `id`: topic `desired-<id>`, group `g-<id>`, prefix `alias/app/<id>/`, `targets` as
    /// (name, region, extra TOML lines), 6 lease partitions, no extra sections (set fields to change them).
    pub fn for_id(id: &str, targets: &[(&str, &str, &str)]) -> DaemonConfig {
        DaemonConfig {
            topic: format!("desired-{id}"),
            group: format!("g-{id}"),
            prefix: format!("alias/app/{id}/"),
            targets: targets.iter().map(|(n, r, x)| (n.to_string(), r.to_string(), x.to_string())).collect(),
            extra: String::new(),
            lease_partitions: 6,
        }
    }

    pub fn render(&self, port: u16) -> String {
        let kafka = kafka_table(&brokers(), &self.topic, &self.group, self.lease_partitions);
        let mut s = config_head(&kafka, &self.prefix, port);
        s.push_str(&format!("{}\n", self.extra));
        for (name, region, more) in &self.targets {
            // A target's own `endpoint =` replaces moto's.
            let default =
                |key: &str, line: String| if more.contains(&format!("{key} =")) { String::new() } else { line };
            let endpoint = default("endpoint", format!("endpoint = \"{}\"\n", moto_url()));
            let provider = default("provider", "provider = \"aws\"\n".into());
            let creds = default("credentials", "credentials = \"env:E2E_AWS\"\n".into());
            s.push_str(&format!("[targets.{name}]\n{provider}region = \"{region}\"\n{endpoint}{creds}{more}\n"));
        }
        s
    }
}

impl Daemon {
    pub fn start(cfg: &DaemonConfig) -> Daemon {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        Self::start_in(cfg, dir, None)
    }

    /// A daemon with this `kafka.instance_id` (its static lease-group membership).
    pub fn start_as(cfg: &DaemonConfig, instance_id: &str) -> Daemon {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        Self::start_in(cfg, dir, Some(instance_id))
    }

    /// A second process with the same config and this instance id (the same id: a restart).
    pub fn again_as(&self, cfg: &DaemonConfig, instance_id: &str) -> Daemon {
        Self::start_in(cfg, self._dir.clone(), Some(instance_id))
    }

    fn start_in(cfg: &DaemonConfig, dir: std::sync::Arc<tempfile::TempDir>, instance_id: Option<&str>) -> Daemon {
        let port = free_port();
        // Instances of one test share the host name (the default instance id): each gets its own unless asked.
        let instance_id = instance_id.map_or_else(|| format!("e2e-{}-{port}", std::process::id()), str::to_string);
        // One file per process: instances sharing a directory must not overwrite each other's config.
        let config = dir.path().join(format!("aliassync-{port}.toml"));
        std::fs::write(&config, cfg.render(port)).unwrap();
        let log = dir.path().join(format!("daemon-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_aliassync"))
            .args(["run", "--config"])
            .arg(&config)
            .env("E2E_AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("E2E_AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
            .env("E2E_ALI_ACCESS_KEY_ID", "LTAI5tFakeAccessKeyId01")
            .env("E2E_ALI_SECRET_ACCESS_KEY", "FakeAccessKeySecret0123456789abcd")
            .env("E2E_HW_ACCESS_KEY_ID", "HPUAFAKEACCESSKEY0001")
            .env("E2E_HW_SECRET_ACCESS_KEY", "FakeSecretKey0123456789abcdefghijklmnopq")
            .env("RUST_LOG", "info,aliassync=debug")
            .env("ALIASSYNC__KAFKA__INSTANCE_ID", &instance_id)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child: Some(child), port, config, log, _dir: dir }
    }

    /// A second process with the same config (a restart, or another instance).
    pub fn again(&self, cfg: &DaemonConfig) -> Daemon {
        Self::start_in(cfg, self._dir.clone(), None)
    }

    /// The exit code once the process has exited on its own (None while it runs).
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        let st = self.child.as_mut()?.try_wait().unwrap()?;
        Some(st.code())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(self.url(path)).await.ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    pub async fn wait_ready(&self) {
        wait_for("daemon /readyz", Duration::from_secs(60), || async {
            matches!(self.get("/readyz").await, Some((200, _)))
        })
        .await;
    }

    /// Sum of a metric's samples whose labels contain every given `k="v"` pair.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some((_, text)) = self.get("/metrics").await else { return f64::NAN };
        sum_metric(&text, name, labels)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.kill().ok();
        panic!("daemon did not exit within 40 s of SIGTERM");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- daemon log {} ----\n{}", self.log.display(), tail(&self.logs(), 60));
        }
        self.kill9();
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs an `aliassync` subcommand with this config; returns (exit code, stdout, stderr).
pub fn cli(cfg: &DaemonConfig, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aliassync.toml");
    std::fs::write(&config, cfg.render(free_port())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aliassync"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("E2E_AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("E2E_AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The /status document.
pub async fn status(d: &Daemon) -> serde_json::Value {
    let (_, s) = d.get("/status").await.expect("status");
    serde_json::from_str(&s).unwrap()
}

/// Names of the targets a daemon owns, from /status.
pub async fn owned(d: &Daemon) -> Vec<String> {
    let Some((_, s)) = d.get("/status").await else { return Vec::new() };
    let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
    v["targets"]
        .as_array()
        .map(|ts| ts.iter().filter(|t| t["owned"] == true).map(|t| t["name"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

// ----- the daemon binary on a config file of the test's own, as systemd runs it -----

/// The `[kafka]` table of these tests' configs.
fn kafka_table(brokers: &str, topic: &str, group: &str, lease_partitions: i32) -> String {
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\nlease_partitions = {lease_partitions}\n\
         lease_session_timeout_ms = 6000\n"
    )
}

/// `kafka` (the `[kafka]` table and what follows it), then `[ownership]`, `[metrics]` and `[reconcile]`, which the
/// caller goes on with.
fn config_head(kafka: &str, prefix: &str, port: u16) -> String {
    format!(
        r#"{kafka}[ownership]
managed_prefixes = ["{prefix}"]
[metrics]
listen = "127.0.0.1:{port}"
[reconcile]
backoff_min_ms = 100
backoff_max_ms = 2000
"#
    )
}

/// A config for one Kafka topic and the given target tables (`[targets.*]` TOML, e.g. [`moto_target`]); `extra`
/// follows the `[kafka]` keys (e.g. a `[kafka.properties]` or `[log]` table).
#[allow(clippy::too_many_arguments)]
pub fn config_text(
    brokers: &str,
    topic: &str,
    group: &str,
    prefix: &str,
    lease_partitions: i32,
    port: u16,
    extra: &str,
    targets: &str,
) -> String {
    let kafka = kafka_table(brokers, topic, group, lease_partitions);
    format!("{}drain_timeout_seconds = 10\n{targets}", config_head(&format!("{kafka}{extra}\n"), prefix, port))
}

/// Target `name`: moto's us-east-1, with `more` TOML lines.
pub fn moto_target(name: &str, more: &str) -> String {
    format!(
        "[targets.{name}]\nprovider = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\ncredentials = \"env:E2E_AWS\"\n{more}\n",
        moto_url()
    )
}

/// Replaces `path` whole (a reload never reads half a file).
pub fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// The daemon binary, killed on drop (its log is printed when the test fails). Its secrets are in `dir`
/// ($CREDENTIALS_DIRECTORY), and its output goes to files there.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
    out: PathBuf,
    port: u16,
    wrapped: bool,
}

impl Proc {
    pub fn start(dir: &Path, config: &Path, port: u16, env: &[(&str, String)]) -> Proc {
        Self::start_wrapped(dir, config, port, env, &[])
    }

    /// The daemon run by `wrapper` (e.g. strace); signals still go to the daemon itself.
    pub fn start_wrapped(dir: &Path, config: &Path, port: u16, env: &[(&str, String)], wrapper: &[String]) -> Proc {
        let log = dir.join(format!("daemon-{port}.log"));
        let out = dir.join(format!("daemon-{port}.out"));
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(env!("CARGO_BIN_EXE_aliassync"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_aliassync")),
        };
        cmd.args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("E2E_AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("E2E_AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
            .env("CREDENTIALS_DIRECTORY", dir)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc { child: Some(cmd.spawn().unwrap()), log, out, port, wrapped: !wrapper.is_empty() }
    }

    /// The daemon's pid (under a wrapper: the wrapper's child).
    pub fn pid(&self) -> u32 {
        let pid = self.child.as_ref().unwrap().id();
        if !self.wrapped {
            return pid;
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        children.split_whitespace().next().expect("the wrapper has started the daemon").parse().unwrap()
    }

    pub fn signal(&self, sig: &str) {
        assert!(Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap().success());
    }

    /// The exit status if the daemon has exited (None while it runs).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits for the exit; returns the code and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        let mut c = self.child.take().unwrap();
        while t0.elapsed() < timeout {
            if let Some(st) = c.try_wait().unwrap() {
                return (st.code(), t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.kill().ok();
        c.wait().ok();
        panic!("daemon did not exit within {timeout:?}\n{}", self.logs());
    }

    pub fn terminate(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    pub fn logs(&self) -> String {
        // Plain text for assertions: drop the ANSI colour codes around field names.
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' && chars.peek() == Some(&'[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// What the daemon wrote to stdout.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub async fn wait_log(&self, what: &str, timeout: Duration) {
        wait_for(&format!("log line containing {what:?}"), timeout, || async { self.logs().contains(what) }).await;
    }

    /// Waits for /readyz to answer 200 (`how`: e.g. "over TLS", for the messages); fails at once if the daemon exits.
    pub async fn wait_ready(&mut self, how: &str, timeout: Duration) {
        let started = Instant::now();
        while self.get("/readyz").await.map(|r| r.0) != Some(200) {
            if let Some(st) = self.exited() {
                panic!("the daemon exited ({st}) {how}:\n{}", self.logs());
            }
            assert!(started.elapsed() < timeout, "not ready {how}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port)).await.ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some((_, text)) = self.get("/metrics").await else { return f64::NAN };
        sum_metric(&text, name, labels)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- daemon log {} ----\n{}", self.log.display(), tail(&self.logs(), 80));
        }
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

// ----- Kafka fixtures for the lifecycle tests (tests/e2e_lifecycle.rs, tests/e2e_broker_crash.rs) -----

/// A compacted topic (unless `configs` says otherwise) with extra topic configs (e.g. a small `max.message.bytes`).
pub async fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = kafka_client(&brokers(), &[]).create().unwrap();
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    if !configs.iter().any(|(k, _)| *k == "cleanup.policy") {
        t = t.set("cleanup.policy", "compact");
    }
    for (k, v) in configs {
        t = t.set(k, v);
    }
    for r in admin.create_topics([&t], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
}

/// Writes `records` (partition, key, value) in one committed transaction: each partition then ends in a
/// commit marker, an offset no consumer ever receives.
pub fn send_transaction(topic: &str, records: &[(i32, &str, &str)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("txn"))
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p.begin_transaction().unwrap();
    for (part, k, v) in records {
        p.send(BaseRecord::to(topic).partition(*part).key(*k).payload(*v)).map_err(|(e, _)| e).unwrap();
    }
    p.commit_transaction(Duration::from_secs(30)).unwrap();
}

/// Sends one record to one partition.
pub async fn send_to(p: &FutureProducer, topic: &str, partition: i32, key: &str, value: &str) {
    let r: FutureRecord<'_, str, str> = FutureRecord::to(topic).partition(partition).key(key).payload(value);
    p.send(r, Duration::from_secs(60)).await.map_err(|(e, _)| e).unwrap();
}

/// Sends one record (None: a tombstone) to one partition with an explicit CreateTime.
pub async fn send_at(p: &FutureProducer, topic: &str, partition: i32, key: &str, value: Option<&str>, ts_ms: i64) {
    let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic).partition(partition).key(key).timestamp(ts_ms);
    if let Some(v) = value {
        r = r.payload(v);
    }
    p.send(r, Duration::from_secs(60)).await.map_err(|(e, _)| e).unwrap();
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// (low, high) watermarks of one partition.
pub fn watermarks(topic: &str, partition: i32) -> (i64, i64) {
    let c: BaseConsumer = kafka_client(&brokers(), &[]).create().unwrap();
    c.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap()
}

/// Deletes every record of `partition` (AdminClient delete_records; the topic's cleanup.policy must include
/// `delete`): low watermark = high watermark > 0.
pub async fn delete_all_records(topic: &str, partition: i32) {
    let admin: AdminClient<DefaultClientContext> = kafka_client(&brokers(), &[]).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::End).unwrap();
    let r = admin.delete_records(&tpl, &AdminOptions::new()).await.unwrap();
    for e in r.elements() {
        e.error().unwrap();
    }
}

/// kill -9 of the rig's broker, then a restart (same data and port); returns once it answers metadata again.
pub fn kill9_and_restart_broker() {
    let run = std::env::var("ALIASSYNC_RUN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/rig").to_string());
    let pid = std::fs::read_to_string(format!("{run}/kafka/kafka.pid")).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success(), "kill -9 {pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "broker {pid} survived kill -9");
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure_broker_up();
}

/// Starts the rig's broker if it is not running (idempotent): tests that kill it call this on every exit path.
pub fn ensure_broker_up() {
    let rig = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kafka.sh");
    assert!(Command::new("bash").args([rig, "start"]).stdout(Stdio::null()).status().unwrap().success());
}

// ----- lease-group fixtures (tests/e2e_leases.rs) -----

/// A plain (non-compacted) topic with `partitions`, as an operator would pre-create the daemon's own topics.
pub async fn create_plain_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[("cleanup.policy", "delete")]).await
}

impl Daemon {
    /// Like [`Daemon::start`], with the rendered config passed through `edit` (e.g. the rig's short backoff
    /// replaced by the shipped default). The binary is `$ALIASSYNC_E2E_BIN` when set (an older build, to show
    /// that a test fails before its fix), else this build's.
    pub fn start_edited(cfg: &DaemonConfig, edit: impl FnOnce(String) -> String) -> Daemon {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let port = free_port();
        let config = dir.path().join(format!("aliassync-{port}.toml"));
        std::fs::write(&config, edit(cfg.render(port))).unwrap();
        let log = dir.path().join(format!("daemon-{port}.log"));
        let bin = std::env::var("ALIASSYNC_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_aliassync").into());
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env("E2E_AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("E2E_AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
            .env("RUST_LOG", "info,aliassync=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child: Some(child), port, config, log, _dir: dir }
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...) to the running daemon.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} {pid}");
    }
}

// ----- Kafka SASL -----

/// The SASL/SCRAM-SHA-512 broker of tests/support/kafka-sasl.sh and one of its users.
pub struct Sasl {
    pub brokers: String,
    pub user: String,
    pub password: String,
}

/// Its `aliassync` user (a super user).
pub fn sasl() -> Sasl {
    Sasl {
        brokers: env_or_explain("KAFKA_SASL_BROKERS"),
        user: env_or_explain("KAFKA_SASL_USER"),
        password: env_file_secret("KAFKA_SASL_PASSWORD_FILE"),
    }
}

/// Its `restricted` user: READ/WRITE/DESCRIBE on `acl-*` topics, READ/DESCRIBE on `acl-*` groups, no CREATE.
pub fn sasl_restricted() -> Sasl {
    Sasl {
        brokers: env_or_explain("KAFKA_SASL_BROKERS"),
        user: env_or_explain("KAFKA_SASL_RESTRICTED_USER"),
        password: env_file_secret("KAFKA_SASL_RESTRICTED_PASSWORD_FILE"),
    }
}

impl Sasl {
    pub fn client(&self) -> ClientConfig {
        kafka_client(
            &self.brokers,
            &[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", &self.user),
                ("sasl.password", &self.password),
            ],
        )
    }

    /// `[kafka.properties]` for the daemon, the password from `file:kafka-password` ($CREDENTIALS_DIRECTORY).
    pub fn properties(&self) -> String {
        format!(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"{}\"\n\"sasl.password\" = \"file:kafka-password\"\n",
            self.user
        )
    }
}
