//! Load harness: the daemon binary against the KMS emulator (throttled like the clouds) and the rig's Kafka, at
//! the scale of a large installation. It prints one line per figure, `figure  value  goal  ratio-or-floor
//! ok/MISSED` (`-` where there is no goal), progress on stderr, and never asserts: a missed goal is a finding.
//!
//!   cargo build --release -p kms-emulator && cargo bench --bench load -- SCENARIO [N...]   (KAFKA_BROKERS set)
//!
//! - `aliases [N=1000000]`: N aliases × 4 AWS regions, already mostly right (100 per region differ). Read quota
//!   100/s and write quota 50/s per region, the daemon configured at the same. Ready and in-sync times against
//!   the listing floor, produce→applied latency of new events while the listing runs, peak RSS, CPU,
//!   throttled share, calls per change.
//! - `targets [T=1000] [A=1000]`: A aliases × T AWS targets, each target a region of its own (the emulator
//!   takes any region name from the SigV4 scope, so one account serves every target). Same figures.
//! - `rate [CREATES=600] [REPOINTS=2000]`: one target configured at 4× its write quota (40/s against 10/s);
//!   then the quota drops to 3/s mid-run and is later lifted: how fast the daemon's rate follows.
//!
//! It starts its own emulator and daemon on free ports and its own topic, and removes them at the end, also
//! on a panic (`Rig`'s Drop). Small runs (`aliases 20000`, `targets 20 100`) take well under a minute.
//! `LOAD_KEEP=1` keeps the daemon's and the emulator's logs and config; `LOAD_DEBUG=1` prints every
//! produce→applied sample of `aliases`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use reqwest::Method;
use serde_json::{json, Value};

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// The emulator's account for ACCESS_KEY.
const ACCOUNT: &str = "123456789012";
const PREFIX: &str = "alias/app/load/";
/// Aliases per key when seeding: AWS allows 50, so every key keeps room for a few more.
const PER_KEY: usize = 40;
/// AWS ListAliases returns at most 100 aliases per page.
const PAGE: usize = 100;
/// Every AWS account+region also lists alias/aws/ebs and alias/aws/s3.
const PREDEFINED: usize = 2;
const MB: f64 = 1e6;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; the scenario is the first other word, its numbers follow.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let nums: Vec<usize> = args.iter().skip(1).filter_map(|a| a.replace('_', "").parse().ok()).collect();
    let n = |i: usize, default: usize| nums.get(i).copied().unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("aliases") => aliases(n(0, 1_000_000)).await,
        Some("targets") => targets(n(0, 1000), n(1, 1000)).await,
        Some("rate") => rate(n(0, 600), n(1, 2000)).await,
        _ => eprintln!(
            "usage: cargo bench --bench load -- aliases [N=1000000] | targets [T=1000] [A=1000] | rate [CREATES=600] [REPOINTS=2000]"
        ),
    }
}

// ----- output -----

/// Prints a scenario's figure lines: `figure  value  goal  ratio-or-floor  ok/MISSED`.
struct Figures(&'static str);

impl Figures {
    fn line(&self, name: &str, value: &dyn std::fmt::Display, goal: &str, note: &str, verdict: &str) {
        let name = format!("{}.{name}", self.0);
        println!("{name:<34}  {value:>12}  {goal:>10}  {note:<48}  {verdict}");
    }

    /// A figure printed for information: no goal.
    fn info(&self, name: &str, value: impl std::fmt::Display, note: &str) {
        self.line(name, &value, "-", note, "-");
    }

    fn goal(&self, name: &str, value: impl std::fmt::Display, goal: impl std::fmt::Display, note: &str, ok: bool) {
        self.line(name, &value, &goal.to_string(), note, if ok { "ok" } else { "MISSED" });
    }

    /// Peak RSS and CPU of the daemon, the emulator's throttled share and calls per change.
    fn process_and_calls(&self, pid: u32, calls: Calls, changes: usize, pages_floor: usize) {
        let hwm = vm_hwm(pid) as f64;
        self.goal("daemon_peak_rss_mb", format!("{:.0}", hwm / MB), "<= 250", "VmHWM at the end", hwm <= 250.0 * MB);
        self.info("daemon_cpu_s", format!("{:.1}", cpu_seconds(pid)), "user+system, whole run");
        let share = calls.throttled as f64 / calls.calls.max(1) as f64;
        let note = format!("{} of {} calls", calls.throttled, calls.calls);
        self.goal("throttled_share_pct", format!("{:.2}", 100.0 * share), "<= 2", &note, share <= 0.02);
        let non_list = calls.calls - calls.list;
        let per_change = non_list as f64 / changes.max(1) as f64;
        self.info(
            "calls_per_change",
            format!("{per_change:.2}"),
            &format!("{non_list} non-list calls / {changes} changes"),
        );
        self.info("list_pages", calls.list, &format!("floor {pages_floor}"));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Progress on stderr, at most every 5 s.
struct Progress {
    scenario: &'static str,
    start: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn tick(&mut self, msg: impl FnOnce() -> String) {
        if self.last.is_none_or(|l| l.elapsed() >= Duration::from_secs(5)) {
            self.last = Some(Instant::now());
            eprintln!("[load {} +{:.0}s] {}", self.scenario, self.start.elapsed().as_secs_f64(), msg());
        }
    }

    fn say(&mut self, msg: impl std::fmt::Display) {
        self.last = Some(Instant::now());
        eprintln!("[load {} +{:.0}s] {msg}", self.scenario, self.start.elapsed().as_secs_f64());
    }
}

// ----- processes -----

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The emulator, the daemon, the topics and the scratch directory of one run; all removed on drop.
struct Rig {
    dir: tempfile::TempDir,
    brokers: String,
    topic: String,
    emulator: Child,
    daemon: Option<Child>,
    emu: Emu,
    metrics: String,
    http: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in self.daemon.iter_mut().chain(std::iter::once(&mut self.emulator)) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("LOAD_KEEP").is_some() {
            // TempDir has no keep-in-place for a borrowed value: swap in a fresh one and keep the old.
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("load: logs and config kept in {}", kept.display());
        }
        // Drop may run inside the bench's runtime, which cannot block on itself: a thread of its own.
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let admin: AdminClient<DefaultClientContext> =
                    ClientConfig::new().set("bootstrap.servers", &brokers).create().ok()?;
                let names = [topic.clone(), format!("{topic}.dlq"), format!("{topic}.leases")];
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                admin.delete_topics(&names, &opts).await.ok()
            })
        })
        .join();
        if !matches!(deleted, Ok(Some(_))) {
            eprintln!("load: could not delete topic {} (and .dlq/.leases)", self.topic);
        }
    }
}

impl Rig {
    /// Starts the emulator and creates the topic.
    async fn new(scenario: &str, partitions: i32) -> Rig {
        let brokers =
            std::env::var("KAFKA_BROKERS").expect("KAFKA_BROKERS: bash tests/support/rig.sh up; source target/rig/env");
        let daemon_bin = PathBuf::from(env!("CARGO_BIN_EXE_aliassync"));
        let emulator_bin = std::env::var("EMULATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| daemon_bin.with_file_name("kms-emulator"));
        assert!(emulator_bin.exists(), "no {}: cargo build --release -p kms-emulator", emulator_bin.display());
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let emulator = Command::new(&emulator_bin)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("emulator.log")).unwrap())
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let emu = Emu { url: format!("http://127.0.0.1:{port}"), http: http.clone() };
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let topic = format!("load-{scenario}-{}-{nanos:x}", std::process::id());
        let rig = Rig { dir, brokers, topic, emulator, daemon: None, emu, metrics: String::new(), http };
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.http.get(format!("{}/_emulator/health", rig.emu.url)).send().await.is_err() {
            assert!(Instant::now() < deadline, "the emulator did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &rig.brokers).create().unwrap();
        let t = NewTopic::new(&rig.topic, partitions, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
        for r in admin.create_topics([&t], &AdminOptions::new()).await.unwrap() {
            r.unwrap();
        }
        rig
    }

    /// Writes the config (the common part plus `targets`, TOML tables) and starts `aliassync run`.
    fn start_daemon(&mut self, targets: &str) -> Instant {
        let port = free_port();
        self.metrics = format!("http://127.0.0.1:{port}");
        let config = format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{t}\"\ngroup_id = \"{t}\"\ninstance_id = \"{t}\"\n\
             max_event_bytes = 1000000\n[ownership]\nmanaged_prefixes = [\"alias/app/\"]\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n{targets}",
            self.brokers,
            t = self.topic,
        );
        let path = self.dir.path().join("aliassync.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_aliassync"))
            .args(["run", "--config"])
            .arg(&path)
            .env("LOAD_AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("LOAD_AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        Instant::now()
    }

    fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon started").id()
    }

    /// Panics (after showing its log) when the daemon has exited.
    fn check_daemon(&mut self) {
        if let Some(status) = self.daemon.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            self.show_daemon_log();
            panic!("the daemon exited: {status}");
        }
    }

    fn show_daemon_log(&self) {
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("--- daemon log (last 30 lines) ---");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }

    async fn wait_ready(&mut self, p: &mut Progress) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            self.check_daemon();
            let ok = self.http.get(format!("{}/readyz", self.metrics)).send().await.is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon was not ready within 600 s");
            p.tick(|| "waiting for /readyz (rebuilding the desired state)".into());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn status(&self) -> Option<Status> {
        let v: Value = self.http.get(format!("{}/status", self.metrics)).send().await.ok()?.json().await.ok()?;
        Some(Status::of(&v))
    }

    /// Polls /status until every target is in sync with `desired` aliases; None after `timeout`.
    async fn wait_in_sync(&mut self, desired: usize, timeout: Duration, p: &mut Progress) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.check_daemon();
            if let Some(s) = self.status().await {
                if s.in_sync(desired) {
                    return Some(Instant::now());
                }
                p.tick(|| s.line());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.show_daemon_log();
        None
    }
}

/// Peak resident set (VmHWM) in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next());
    kb.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// User plus system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (which may hold spaces and parentheses) come the state, then 10 more fields,
    // then utime and stime (fields 14 and 15 of proc(5)).
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    // Clock ticks: USER_HZ is 100 on every Linux ABI.
    ticks(11).zip(ticks(12)).map(|(u, s)| (u + s) / 100.0).unwrap_or(f64::NAN)
}

// ----- the daemon's /status -----

#[derive(Debug, Default)]
struct Status {
    targets: usize,
    listed: usize,
    running: usize,
    queue: u64,
    in_progress: u64,
    lag: u64,
    /// Drift the last scan found that is not repaired yet (missing + wrong key + orphan).
    drift: u64,
    desired_min: u64,
    desired_max: u64,
    states: BTreeMap<String, usize>,
}

impl Status {
    fn of(v: &Value) -> Status {
        let mut s = Status { desired_min: u64::MAX, ..Default::default() };
        for t in v["targets"].as_array().into_iter().flatten() {
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            s.targets += 1;
            s.listed += usize::from(t["last_listing_unix"].is_u64());
            let state = t["state"].as_str().unwrap_or("?").to_string();
            s.running += usize::from(state == "running");
            *s.states.entry(state).or_default() += 1;
            s.queue += n("queue_depth");
            s.in_progress += n("in_progress");
            s.lag += n("lag_events");
            let d = &t["drift"];
            // No scan yet counts as drift: the target is not known to be in sync.
            s.drift += if d.is_object() {
                ["missing", "wrong_key", "orphan"].iter().map(|k| d[k].as_u64().unwrap_or(0)).sum()
            } else {
                1
            };
            s.desired_min = s.desired_min.min(n("desired"));
            s.desired_max = s.desired_max.max(n("desired"));
        }
        s
    }

    /// Listed, running, nothing queued or in flight or lagging, no open drift, every event consumed.
    fn in_sync(&self, desired: usize) -> bool {
        self.targets > 0
            && self.listed == self.targets
            && self.running == self.targets
            && self.queue + self.in_progress + self.lag + self.drift == 0
            && self.desired_min == desired as u64
            && self.desired_max == desired as u64
    }

    fn line(&self) -> String {
        format!(
            "targets={} listed={} states={:?} queue={} in_progress={} lag_events={} open_drift={} desired={}..{}",
            self.targets,
            self.listed,
            self.states,
            self.queue,
            self.in_progress,
            self.lag,
            self.drift,
            self.desired_min,
            self.desired_max
        )
    }
}

// ----- the emulator's admin API -----

#[derive(Clone)]
struct Emu {
    url: String,
    http: reqwest::Client,
}

impl Emu {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}/_emulator/{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("emulator {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "emulator {path}: {status} {v}");
        v
    }

    /// Seeds `count` aliases `PREFIX{i:07}` in a region; returns the key of each key number (alias i: i / PER_KEY).
    async fn bulk(&self, region: &str, count: usize) -> Vec<String> {
        let body = json!({"cloud": "aws", "account": ACCOUNT, "region": region, "prefix": PREFIX,
            "count": count, "aliases_per_key": PER_KEY});
        let v = self.admin(Method::POST, "bulk", Some(body)).await;
        serde_json::from_value(v["keys"].clone()).unwrap()
    }

    async fn key(&self, region: &str) -> String {
        let v =
            self.admin(Method::POST, "keys", Some(json!({"cloud": "aws", "account": ACCOUNT, "region": region}))).await;
        v["key_id"].as_str().unwrap().to_string()
    }

    async fn set_alias(&self, region: &str, alias: &str, key: &str) {
        let body = json!({"cloud": "aws", "account": ACCOUNT, "region": region, "alias": alias, "key_id": key});
        self.admin(Method::POST, "aliases", Some(body)).await;
    }

    /// (key, updated_ms) of an alias, None when it does not exist.
    async fn alias(&self, region: &str, alias: &str) -> Option<(Option<String>, i64)> {
        let path = format!("alias?cloud=aws&account={ACCOUNT}&region={region}&alias={alias}");
        let (status, v) = self.call(Method::GET, &path, None).await;
        (status == 200).then(|| (v["key_id"].as_str().map(str::to_string), v["updated_ms"].as_i64().unwrap_or(0)))
    }

    async fn fault(&self, rule: Value) {
        self.admin(Method::POST, "faults", Some(rule)).await;
    }

    async fn calls(&self) -> Calls {
        Calls::of(&self.admin(Method::GET, "calls?cloud=aws", None).await)
    }
}

/// The emulator's AWS call counters, summed.
#[derive(Debug, Default, Clone, Copy)]
struct Calls {
    calls: u64,
    throttled: u64,
    list: u64,
    write_ok: u64,
    write_throttled: u64,
}

impl Calls {
    fn of(v: &Value) -> Calls {
        let mut c = Calls::default();
        for r in v["calls"].as_array().into_iter().flatten() {
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            c.calls += n("calls");
            c.throttled += n("throttled");
            match r["operation"].as_str().unwrap_or("") {
                "ListAliases" => c.list += n("calls"),
                "CreateAlias" | "UpdateAlias" | "DeleteAlias" => {
                    c.write_ok += n("ok");
                    c.write_throttled += n("throttled");
                }
                _ => {}
            }
        }
        c
    }

    fn minus(self, o: Calls) -> Calls {
        Calls {
            calls: self.calls.saturating_sub(o.calls),
            throttled: self.throttled.saturating_sub(o.throttled),
            list: self.list.saturating_sub(o.list),
            write_ok: self.write_ok.saturating_sub(o.write_ok),
            write_throttled: self.write_throttled.saturating_sub(o.write_throttled),
        }
    }
}

// ----- Kafka -----

/// A schema-1 event: the alias on these keys, per target name.
fn event(alias: &str, revision: u64, targets: impl IntoIterator<Item = (String, String)>) -> String {
    let targets: serde_json::Map<String, Value> = targets.into_iter().map(|(t, k)| (t, json!(k))).collect();
    json!({"schema": 1, "alias": alias, "revision": revision, "targets": targets}).to_string()
}

fn producer(brokers: &str, linger_ms: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms)
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .create()
        .unwrap()
}

/// One AWS target of the emulator; `read` None keeps the daemon's default read rate.
fn target_toml(name: &str, region: &str, endpoint: &str, write: f64, read: Option<f64>) -> String {
    let read = read.map(|r| format!("read_rate_limit_per_second = {r}\n")).unwrap_or_default();
    format!(
        "[targets.{name}]\nprovider = \"aws\"\nregion = \"{region}\"\nendpoint = \"{endpoint}\"\n\
         credentials = \"env:LOAD_AWS\"\nrate_limit_per_second = {write}\n{read}"
    )
}

/// Produces `n` events (`make(i)` = record key, value), waiting for every delivery.
async fn produce_all(rig: &Rig, n: usize, p: &mut Progress, make: impl Fn(usize) -> (String, String)) {
    let producer = producer(&rig.brokers, "20");
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let sends = chunk.iter().map(|&i| {
            let (k, v) = make(i);
            let (producer, topic) = (producer.clone(), rig.topic.clone());
            async move {
                producer
                    .send(FutureRecord::to(&topic).key(&k).payload(&v), Duration::from_secs(60))
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
        p.tick(|| format!("produced {} of {n} events", chunk[chunk.len() - 1] + 1));
    }
    p.say(format!("produced {n} events in {:.1}s", started.elapsed().as_secs_f64()));
}

// ----- scenario 1: aliases -----

const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"];
const READ_QUOTA: f64 = 100.0;
const WRITE_QUOTA: f64 = 50.0;

/// One new alias produced while the listing runs, and the targets that have not applied it yet.
struct Pending {
    alias: String,
    sent_ms: i64,
    /// (region, key) not yet seen applied.
    left: Vec<(&'static str, String)>,
}

async fn aliases(n: usize) {
    let mut p = Progress { scenario: "aliases", start: Instant::now(), last: None };
    let mut rig = Rig::new("aliases", 3).await;
    let emu = rig.emu.clone();
    for r in REGIONS {
        emu.fault(json!({"cloud": "aws", "region": r, "throttle": {"read": READ_QUOTA, "write": WRITE_QUOTA}})).await;
    }
    // Seed every region with the N aliases, then make 100 per region differ (spread over the range).
    let mut keys: Vec<Vec<String>> = Vec::new();
    for r in REGIONS {
        let t = Instant::now();
        keys.push(emu.bulk(r, n).await);
        p.say(format!("seeded {n} aliases in {r} in {:.1}s", t.elapsed().as_secs_f64()));
    }
    let differ: Vec<usize> = (0..100.min(n)).map(|j| j * n / 100.min(n)).collect();
    for r in REGIONS {
        // Other keys with room (AWS: 50 aliases per key), as a real account would need.
        let mut others = Vec::new();
        for _ in 0..differ.len().div_ceil(PER_KEY) {
            others.push(emu.key(r).await);
        }
        for (j, &i) in differ.iter().enumerate() {
            emu.set_alias(r, &format!("{PREFIX}{i:07}"), &others[j % others.len()]).await;
        }
    }
    let targets_of = |i: usize| REGIONS.iter().zip(&keys).map(move |(r, k)| (r.to_string(), k[i / PER_KEY].clone()));
    produce_all(&rig, n, &mut p, |i| {
        let alias = format!("{PREFIX}{i:07}");
        let v = event(&alias, 1, targets_of(i));
        (alias, v)
    })
    .await;

    let toml: String = REGIONS.iter().map(|r| target_toml(r, r, &emu.url, WRITE_QUOTA, Some(READ_QUOTA))).collect();
    emu.admin(Method::DELETE, "calls", None).await;
    let start = rig.start_daemon(&toml);
    p.say("daemon started");
    rig.wait_ready(&mut p).await;
    let ready = start.elapsed();
    // The rebuild's share of the peak, apart from the listings' and the first pass's.
    let hwm_at_ready = vm_hwm(rig.daemon_pid()) as f64;
    p.say(format!("ready after {:.1}s; listing", ready.as_secs_f64()));

    // While the listing runs: one new alias every 100 ms, and a tracker of when each lands.
    let listed = Arc::new(AtomicBool::new(false));
    let pending: Arc<Mutex<Vec<Pending>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let trickle = tokio::spawn(trickle(
        emu.clone(),
        producer(&rig.brokers, "0"),
        rig.topic.clone(),
        listed.clone(),
        pending.clone(),
    ));
    let mut tracker = tokio::spawn(track(emu.clone(), pending.clone(), latencies.clone(), listed.clone()));
    let list_deadline = Instant::now() + Duration::from_secs(60 + 10 * (n / PAGE / READ_QUOTA as usize) as u64);
    loop {
        rig.check_daemon();
        if let Some(s) = rig.status().await {
            if s.targets > 0 && s.listed == s.targets {
                break;
            }
            p.tick(|| {
                format!("{} (new aliases not yet applied everywhere: {})", s.line(), pending.lock().unwrap().len())
            });
        }
        if Instant::now() > list_deadline {
            rig.show_daemon_log();
            p.say("the listing did not finish in time");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    listed.store(true, Ordering::Relaxed);
    let new = trickle.await.unwrap();
    p.say(format!(
        "listing done after {:.1}s; {} new aliases produced meanwhile",
        start.elapsed().as_secs_f64(),
        new.len()
    ));
    let floor = (n + PREDEFINED).div_ceil(PAGE) as f64 / READ_QUOTA;
    let in_sync = rig.wait_in_sync(n + new.len(), Duration::from_secs_f64(60.0 + 3.0 * floor), &mut p).await;
    // Give the tracker a moment for the last writes; what it has not seen by then counts as not applied.
    if tokio::time::timeout(Duration::from_secs(15), &mut tracker).await.is_err() {
        tracker.abort();
    }
    let calls = emu.calls().await;

    // Correctness on the emulator: the differed aliases are back on their keys, the new ones are on theirs.
    let (mut right, mut checked) = (0, 0);
    for (ri, r) in REGIONS.iter().enumerate() {
        for &i in &differ {
            checked += 1;
            let want = &keys[ri][i / PER_KEY];
            right += usize::from(
                emu.alias(r, &format!("{PREFIX}{i:07}")).await.is_some_and(|(k, _)| k.as_ref() == Some(want)),
            );
        }
        for (alias, ks) in &new {
            checked += 1;
            right += usize::from(emu.alias(r, alias).await.is_some_and(|(k, _)| k.as_ref() == Some(&ks[ri])));
        }
    }

    let f = Figures("aliases");
    println!(
        "# aliases: {n} aliases x 4 AWS regions, read quota {READ_QUOTA}/s and write quota {WRITE_QUOTA}/s per region"
    );
    f.goal("ready_s", format!("{:.1}", ready.as_secs_f64()), "<= 10", "", ready.as_secs_f64() <= 10.0);
    f.info("daemon_peak_rss_at_ready_mb", format!("{:.0}", hwm_at_ready / MB), "VmHWM once rebuilt, before listing");
    let goal = format!("<= {:.1}", 1.1 * floor);
    match in_sync {
        Some(at) => {
            let total = at.duration_since(start).as_secs_f64();
            let after = total - ready.as_secs_f64();
            f.info("in_sync_from_start_s", format!("{total:.1}"), "");
            let note = format!("{:.2} x listing floor {floor:.1}s", after / floor);
            f.goal("in_sync_after_ready_s", format!("{after:.1}"), goal, &note, after <= 1.1 * floor);
        }
        None => f.goal("in_sync_after_ready_s", "timeout", goal, &format!("listing floor {floor:.1}s"), false),
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let expected = new.len() * REGIONS.len();
    let note = format!("{} of {expected} (alias, target) seen applied", lat.len());
    f.info("applied_latency_p50_ms", format!("{:.0}", percentile(&lat, 50.0)), &note);
    let p99 = percentile(&lat, 99.0);
    // Unseen writes count as a miss: the figure would flatter otherwise.
    let ok = p99 <= 1000.0 && lat.len() == expected && expected > 0;
    f.goal("applied_latency_p99_ms", format!("{p99:.0}"), "<= 1000", &note, ok);
    f.info("applied_latency_max_ms", format!("{:.0}", lat.last().copied().unwrap_or(f64::NAN)), "");
    let changes = REGIONS.len() * (differ.len() + new.len());
    // The seeded aliases only: a new one is listed or not depending on when the listing passes its name.
    let pages_floor = REGIONS.len() * (n + PREDEFINED).div_ceil(PAGE);
    f.process_and_calls(rig.daemon_pid(), calls, changes, pages_floor);
    let note = "differed + new aliases, every region";
    f.goal("correct", format!("{right}/{checked}"), checked, note, right == checked);
}

/// New aliases `PREFIX/new-{i}`, one every 100 ms until `listed`, on fresh keys (40 aliases each) in every
/// region; each is added to `pending` with its send time. Returns every (alias, key per region) produced.
async fn trickle(
    emu: Emu,
    producer: FutureProducer,
    topic: String,
    listed: Arc<AtomicBool>,
    pending: Arc<Mutex<Vec<Pending>>>,
) -> Vec<(String, Vec<String>)> {
    let mut fresh: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut new = Vec::new();
    while !listed.load(Ordering::Relaxed) {
        tick.tick().await;
        if new.len() % PER_KEY == 0 {
            fresh.clear();
            for r in REGIONS {
                fresh.push(emu.key(r).await);
            }
        }
        let alias = format!("{PREFIX}new-{}", new.len());
        let v = event(&alias, 1, REGIONS.iter().map(|r| r.to_string()).zip(fresh.iter().cloned()));
        let sent_ms = now_ms();
        producer.send(FutureRecord::to(&topic).key(&alias).payload(&v), Duration::from_secs(10)).await.unwrap();
        let left = REGIONS.iter().copied().zip(fresh.iter().cloned()).collect();
        pending.lock().unwrap().push(Pending { alias: alias.clone(), sent_ms, left });
        new.push((alias, fresh.clone()));
    }
    new
}

/// Polls the emulator for the pending new aliases until none is left and `listed`: an alias's `updated_ms`
/// is when the daemon's write landed, so polling late does not skew the latency.
async fn track(emu: Emu, pending: Arc<Mutex<Vec<Pending>>>, latencies: Arc<Mutex<Vec<f64>>>, listed: Arc<AtomicBool>) {
    let debug = std::env::var_os("LOAD_DEBUG").is_some();
    loop {
        let batch: Vec<(String, i64, &'static str, String)> = pending
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| p.left.iter().map(|(r, k)| (p.alias.clone(), p.sent_ms, *r, k.clone())))
            .collect();
        if batch.is_empty() && listed.load(Ordering::Relaxed) {
            return;
        }
        for (alias, sent_ms, region, key) in batch {
            let Some((Some(k), updated_ms)) = emu.alias(region, &alias).await else { continue };
            if k != key {
                continue;
            }
            if debug {
                eprintln!("applied {alias} in {region} after {} ms", updated_ms - sent_ms);
            }
            latencies.lock().unwrap().push((updated_ms - sent_ms) as f64);
            let mut pend = pending.lock().unwrap();
            if let Some(p) = pend.iter_mut().find(|p| p.alias == alias) {
                p.left.retain(|(r, _)| *r != region);
            }
            pend.retain(|p| !p.left.is_empty());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ----- scenario 2: targets -----

async fn targets(t: usize, a: usize) {
    let mut p = Progress { scenario: "targets", start: Instant::now(), last: None };
    let mut rig = Rig::new("targets", 3).await;
    let emu = rig.emu.clone();
    // One rule for the cloud: the emulator keeps a bucket per account+region, so every target has its own quota.
    emu.fault(json!({"cloud": "aws", "throttle": {"read": READ_QUOTA, "write": WRITE_QUOTA}})).await;
    let region = |j: usize| format!("load-r{j:04}");
    let name = |j: usize| format!("t{j:04}");
    let mut keys: Vec<Vec<String>> = Vec::with_capacity(t);
    // One alias per target differs, so each target's first pass has a write to do.
    let differ = |j: usize| (j * 37) % a;
    for j in 0..t {
        keys.push(emu.bulk(&region(j), a).await);
        let other = emu.key(&region(j)).await;
        emu.set_alias(&region(j), &format!("{PREFIX}{:07}", differ(j)), &other).await;
        p.tick(|| format!("seeded {} of {t} targets with {a} aliases", j + 1));
    }
    p.say(format!("seeded {t} targets x {a} aliases"));
    produce_all(&rig, a, &mut p, |i| {
        let alias = format!("{PREFIX}{i:07}");
        let v = event(&alias, 1, (0..t).map(|j| (name(j), keys[j][i / PER_KEY].clone())));
        (alias, v)
    })
    .await;
    let toml: String =
        (0..t).map(|j| target_toml(&name(j), &region(j), &emu.url, WRITE_QUOTA, Some(READ_QUOTA))).collect();
    emu.admin(Method::DELETE, "calls", None).await;
    let start = rig.start_daemon(&toml);
    p.say("daemon started");
    rig.wait_ready(&mut p).await;
    let ready = start.elapsed();
    p.say(format!("ready after {:.1}s", ready.as_secs_f64()));
    let floor = (a + PREDEFINED).div_ceil(PAGE) as f64 / READ_QUOTA;
    let in_sync = rig.wait_in_sync(a, Duration::from_secs(600), &mut p).await;
    let calls = emu.calls().await;
    let mut right = 0;
    for (j, keys) in keys.iter().enumerate() {
        let i = differ(j);
        let alias = emu.alias(&region(j), &format!("{PREFIX}{i:07}")).await;
        right += usize::from(alias.is_some_and(|(k, _)| k.as_ref() == Some(&keys[i / PER_KEY])));
    }

    let f = Figures("targets");
    println!("# targets: {a} aliases x {t} AWS targets ({} (alias, target) pairs), one region each", a * t);
    let ready = ready.as_secs_f64();
    f.goal("ready_s", format!("{ready:.1}"), "<= 10", "", ready <= 10.0);
    match in_sync {
        Some(at) => {
            let total = at.duration_since(start).as_secs_f64();
            f.info("in_sync_from_start_s", format!("{total:.1}"), "");
            let note = format!("listing floor {floor:.2}s per target, in parallel");
            f.info("in_sync_after_ready_s", format!("{:.1}", total - ready), &note);
        }
        None => f.goal("in_sync_after_ready_s", "timeout", "-", "after 600 s", false),
    }
    f.process_and_calls(rig.daemon_pid(), calls, t, t * (a + PREDEFINED).div_ceil(PAGE));
    f.goal("correct", format!("{right}/{t}"), t, "the differed alias of every target", right == t);
}

// ----- scenario 3: rate -----

const RATE_REGION: &str = "us-east-1";
const CONFIGURED: f64 = 40.0;
const QUOTA: f64 = 10.0;
const DROPPED: f64 = 3.0;
const WINDOW: usize = 5;

/// Accepted and throttled writes, sampled once a second from the emulator's counters.
type Samples = Arc<Mutex<Vec<(Instant, Calls)>>>;

/// The first 5 s window that starts at or after `from` and holds at least `rate` accepted writes per second:
/// its end, in seconds after `from`.
fn first_window(samples: &[(Instant, Calls)], from: Instant, rate: f64) -> Option<f64> {
    let start = samples.iter().position(|(t, _)| *t >= from)?;
    samples[start..].windows(WINDOW + 1).find_map(|w| {
        let (t0, c0) = w[0];
        let (t1, c1) = w[WINDOW];
        let per_s = (c1.write_ok - c0.write_ok) as f64 / t1.duration_since(t0).as_secs_f64();
        (per_s >= rate).then(|| t1.duration_since(from).as_secs_f64())
    })
}

async fn rate(creates: usize, repoints: usize) {
    let mut p = Progress { scenario: "rate", start: Instant::now(), last: None };
    let mut rig = Rig::new("rate", 1).await;
    let emu = rig.emu.clone();
    let throttle = |w: f64| json!({"cloud": "aws", "region": RATE_REGION, "throttle": {"write": w}});
    emu.fault(throttle(QUOTA)).await;
    let c_alias = |i: usize| format!("{PREFIX}c/{i:07}");
    let r_alias = |i: usize| format!("{PREFIX}{i:07}");
    let mut c_keys = Vec::new();
    for _ in 0..creates.div_ceil(PER_KEY) {
        c_keys.push(emu.key(RATE_REGION).await);
    }
    // The aliases to re-point later exist already and are in sync; their new keys have room.
    let r_keys = if repoints > 0 { emu.bulk(RATE_REGION, repoints).await } else { Vec::new() };
    let mut r_new = Vec::new();
    for _ in 0..repoints.div_ceil(PER_KEY) {
        r_new.push(emu.key(RATE_REGION).await);
    }
    let target = |k: &str| [("use1".to_string(), k.to_string())];
    produce_all(&rig, creates + repoints, &mut p, |i| {
        let (alias, key) = if i < creates {
            (c_alias(i), &c_keys[i / PER_KEY])
        } else {
            (r_alias(i - creates), &r_keys[(i - creates) / PER_KEY])
        };
        let v = event(&alias, 1, target(key));
        (alias, v)
    })
    .await;
    let toml = target_toml("use1", RATE_REGION, &emu.url, CONFIGURED, None);
    emu.admin(Method::DELETE, "calls", None).await;
    let start = rig.start_daemon(&toml);
    rig.wait_ready(&mut p).await;
    let ready = Instant::now();
    p.say(format!("ready after {:.1}s; creating {creates} aliases", start.elapsed().as_secs_f64()));
    let floor = creates as f64 / QUOTA;
    let converged = rig.wait_in_sync(creates + repoints, Duration::from_secs_f64(120.0 + 3.0 * floor), &mut p).await;
    let phase1 = emu.calls().await;

    // Phase 2: re-points; the quota drops 10 s in, and is lifted 30 s later.
    let samples: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (emu, samples, stop) = (emu.clone(), samples.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let c = emu.calls().await;
                samples.lock().unwrap().push((Instant::now(), c));
            }
        })
    };
    produce_all(&rig, repoints, &mut p, |i| {
        let alias = r_alias(i);
        let v = event(&alias, 2, target(&r_new[i / PER_KEY]));
        (alias, v)
    })
    .await;
    let produced = Instant::now();
    let repointed =
        |samples: &Samples| samples.lock().unwrap().last().map(|(_, c)| c.write_ok - phase1.write_ok).unwrap_or(0);
    while produced.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    emu.fault(throttle(DROPPED)).await;
    let dropped = Instant::now();
    p.say(format!("write quota dropped to {DROPPED}/s ({} re-points done)", repointed(&samples)));
    while dropped.elapsed() < Duration::from_secs(30) {
        rig.check_daemon();
        p.tick(|| format!("{} re-points done", repointed(&samples)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    emu.admin(Method::DELETE, &format!("faults?cloud=aws&region={RATE_REGION}"), None).await;
    let lifted = Instant::now();
    p.say(format!("write quota lifted ({} re-points done)", repointed(&samples)));
    // Until the daemon is back at 90% of its configured rate, or the work runs out.
    let mut ran_out = None;
    while lifted.elapsed() < Duration::from_secs(120) {
        rig.check_daemon();
        if first_window(&samples.lock().unwrap(), lifted, 0.9 * CONFIGURED).is_some() {
            break;
        }
        if repointed(&samples) >= repoints as u64 {
            ran_out = Some(lifted.elapsed().as_secs_f64());
            break;
        }
        p.tick(|| format!("{} re-points done", repointed(&samples)));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done = rig.wait_in_sync(creates + repoints, Duration::from_secs(300), &mut p).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let samples = samples.lock().unwrap().clone();
    let end = emu.calls().await;
    let state = emu.admin(Method::GET, &format!("state?cloud=aws&region={RATE_REGION}"), None).await;
    let aliases = &state["aws"][ACCOUNT][RATE_REGION]["aliases"];
    let created_ok = (0..creates).filter(|&i| aliases[c_alias(i)] == json!(c_keys[i / PER_KEY])).count();
    let repointed_ok = (0..repoints).filter(|&i| aliases[r_alias(i)] == json!(r_new[i / PER_KEY])).count();

    let f = Figures("rate");
    println!(
        "# rate: 1 AWS target configured at {CONFIGURED} writes/s, write quota {QUOTA}/s; {creates} creates, then \
         {repoints} re-points with the quota dropped to {DROPPED}/s and lifted"
    );
    let w1 = phase1.write_ok + phase1.write_throttled;
    let share = phase1.write_throttled as f64 / w1.max(1) as f64;
    let note = format!("{} of {w1} write calls", phase1.write_throttled);
    f.goal("create_throttled_share_pct", format!("{:.2}", 100.0 * share), "<= 2", &note, share <= 0.02);
    let goal = format!("<= {:.1}", 1.1 * floor);
    match converged {
        Some(at) => {
            let s = at.duration_since(ready).as_secs_f64();
            let note = format!("{:.2} x floor {floor:.0}s ({creates} / {QUOTA}/s)", s / floor);
            f.goal("create_converge_after_ready_s", format!("{s:.1}"), goal, &note, s <= 1.1 * floor);
        }
        None => f.goal("create_converge_after_ready_s", "timeout", goal, &format!("floor {floor:.0}s"), false),
    }
    // The series in 5 s windows from the re-points' start, with the quota in force when each window ended.
    let first = samples.iter().position(|(t, _)| *t >= produced).unwrap_or(samples.len());
    for w in samples[first..].chunks(WINDOW).collect::<Vec<_>>().windows(2) {
        let ((t0, c0), (t1, c1)) = (w[0][0], w[1][0]);
        let quota = if t1 <= dropped {
            format!("quota {QUOTA}/s")
        } else if t1 <= lifted {
            format!("quota {DROPPED}/s")
        } else {
            "quota lifted".into()
        };
        let d = c1.minus(c0);
        let since = |t: Instant| t.duration_since(produced).as_secs_f64();
        let name = format!("writes_per_s[+{:.0}..{:.0}s]", since(t0), since(t1));
        let per_s = d.write_ok as f64 / t1.duration_since(t0).as_secs_f64();
        f.info(&name, format!("{per_s:.1}"), &format!("{quota}; {} throttled", d.write_throttled));
    }
    let adapt = first_window(&samples, dropped, 0.9 * DROPPED);
    let note = format!("first 5 s window >= {:.1}/s after the drop", 0.9 * DROPPED);
    let value = adapt.map_or("never".into(), |s| format!("{s:.0}"));
    f.goal("drop_to_90pct_of_quota_s", value, "<= 10", &note, adapt.is_some_and(|s| s <= 10.0));
    let at_drop: Vec<Calls> = samples.iter().filter(|(t, _)| *t >= dropped && *t <= lifted).map(|(_, c)| *c).collect();
    if let (Some(a), Some(b)) = (at_drop.first(), at_drop.last()) {
        let d = b.minus(*a);
        let w = d.write_ok + d.write_throttled;
        let share = 100.0 * d.write_throttled as f64 / w.max(1) as f64;
        let note = format!("{} of {w} write calls at {DROPPED}/s", d.write_throttled);
        f.info("drop_throttled_share_pct", format!("{share:.2}"), &note);
    }
    let lift = first_window(&samples, lifted, 0.9 * CONFIGURED);
    let value = match (lift, ran_out) {
        (Some(s), _) => format!("{s:.0}"),
        (None, Some(s)) => format!("ran out@{s:.0}"),
        (None, None) => "never".into(),
    };
    let note = format!("first 5 s window >= {:.0}/s after the lift", 0.9 * CONFIGURED);
    f.goal("lift_to_90pct_of_configured_s", value, "reached", &note, lift.is_some());
    let d = end.minus(phase1);
    let w = d.write_ok + d.write_throttled;
    let share = 100.0 * d.write_throttled as f64 / w.max(1) as f64;
    f.info("repoint_throttled_share_pct", format!("{share:.2}"), &format!("{} of {w} write calls", d.write_throttled));
    let (all, right) = (creates + repoints, created_ok + repointed_ok);
    let note = if done.is_some() { "in sync at the end" } else { "NOT in sync at the end" };
    f.goal("correct", format!("{right}/{all}"), all, note, right == all && done.is_some());
}
