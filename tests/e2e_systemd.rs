//! Running as a systemd service, end to end with the daemon binary:
//! - the notify protocol, with the test playing systemd's `$NOTIFY_SOCKET` (READY=1, WATCHDOG=1, STOPPING=1,
//!   RELOADING=1), and the static lease member expiring after SIGTERM;
//! - SIGTERM under load (drain, exit 0, restart converges without duplicate writes);
//! - SIGHUP (credentials and log level reloaded; failed reloads keep the old values; restart-only changes named);
//! - Kafka SASL/SCRAM-SHA-512 against a second real broker (tests/support/kafka-sasl.sh);
//! - the unit file: `systemd-analyze verify` and `systemd-analyze security` (exposure ≤ 2.0).
//!
//! Run through `bash tests/run.sh`: it starts Kafka, moto and the SASL broker and exports their addresses.

mod common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

const AWS_KEY: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
const SECRET_1: &str = "first-secret-Wq8xZ2v5Tn";
const SECRET_2: &str = "second-secret-Hr3kP9mYs4";

// ----- the harness: systemd's side of the notify socket (the daemon process: common::Proc) -----

/// A Unix datagram socket like systemd's `$NOTIFY_SOCKET`, recording every datagram in arrival order.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (got, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    g.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        NotifySocket { path, got, stop }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    /// Index of the first datagram at or after `from` with the line `line`.
    fn position(&self, line: &str, from: usize) -> Option<usize> {
        self.messages().iter().enumerate().skip(from).find(|(_, m)| m.lines().any(|l| l == line)).map(|(i, _)| i)
    }

    fn wait_line(&self, line: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.position(line, from) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no {line} after message #{from} within {timeout:?}: {:?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lease_group_members(brokers_cfg: &ClientConfig, group: &str) -> usize {
    let c: BaseConsumer = brokers_cfg.create().unwrap();
    let list = c.fetch_group_list(Some(group), Duration::from_secs(10)).unwrap();
    list.groups().iter().map(|g| g.members().len()).sum()
}

fn plain_kafka() -> ClientConfig {
    kafka_client(&brokers(), &[])
}

// ----- notify protocol -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_sees_ready_then_watchdog_pings_then_stopping_and_the_static_member_expires() {
    let id = unique("sdnotify");
    let (topic, group, prefix) = (format!("desired-{id}"), format!("g-{id}"), format!("alias/app/{id}/"));
    create_topic(&topic, 2).await;
    let use1 = kms("us-east-1");
    let key = create_key(&use1).await;
    let p = producer();
    for i in 0..5 {
        let alias = format!("{prefix}a{i}");
        send(&p, &topic, Some(&alias), Some(&event(&alias, 1, &[("use1", &key)]))).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let port = free_port();
    let config = dir.path().join("aliassync.toml");
    write(&config, &config_text(&brokers(), &topic, &group, &prefix, 6, port, "", &moto_target("use1", "")));
    let mut d = Proc::start(
        dir.path(),
        &config,
        port,
        &[("NOTIFY_SOCKET", notify.path.display().to_string()), ("WATCHDOG_USEC", "2000000".into())],
    );

    let ready = notify.wait_line("READY=1", 0, Duration::from_secs(60));
    // READY=1 means the desired state is rebuilt: /readyz agrees, and the status line says what was loaded.
    assert_eq!(d.get("/readyz").await.map(|r| r.0), Some(200));
    let msgs = notify.messages();
    assert!(msgs[ready].contains("STATUS=ready: 5 desired aliases"), "{:?}", msgs[ready]);
    assert!(msgs[..ready].iter().any(|m| m.starts_with("STATUS=starting")), "{msgs:?}");
    // WATCHDOG_USEC=2 s: a ping every second, from the runtime.
    let w1 = notify.wait_line("WATCHDOG=1", ready + 1, Duration::from_secs(5));
    let w2 = notify.wait_line("WATCHDOG=1", w1 + 1, Duration::from_secs(5));
    assert!(ready < w1 && w1 < w2);
    wait_for("5 aliases in moto", Duration::from_secs(30), || async { live(&use1, &prefix).await.len() == 5 }).await;
    assert_eq!(lease_group_members(&plain_kafka(), &group), 1, "the daemon is a member of its lease group");

    let (code, took) = d.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", d.logs());
    let stopping =
        notify.position("STOPPING=1", w2 + 1).unwrap_or_else(|| panic!("no STOPPING=1: {:?}", notify.messages()));
    assert!(w2 < stopping);
    assert!(took < Duration::from_secs(10), "an idle daemon stops at once, took {took:?}");
    // Static membership: librdkafka sends no LeaveGroup for a static member, so a restart within the session
    // timeout takes the same leases back without a rebalance; a daemon that stays down expires after it (6 s).
    wait_for("the static member to expire", Duration::from_secs(15), || async {
        lease_group_members(&plain_kafka(), &group) == 0
    })
    .await;
    let logs = d.logs();
    assert!(logs.contains("systemd watchdog enabled") && logs.contains("stopped"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_socket_the_daemon_runs_and_stops_the_same() {
    let id = unique("nonotify");
    let (topic, group, prefix) = (format!("desired-{id}"), format!("g-{id}"), format!("alias/app/{id}/"));
    create_topic(&topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("aliassync.toml");
    write(&config, &config_text(&brokers(), &topic, &group, &prefix, 6, port, "", &moto_target("use1", "")));
    // WATCHDOG_USEC without a socket, and a WATCHDOG_PID that is not ours: both must be ignored.
    let mut d =
        Proc::start(dir.path(), &config, port, &[("WATCHDOG_USEC", "2000000".into()), ("WATCHDOG_PID", "1".into())]);
    wait_for("/readyz", Duration::from_secs(60), || async { matches!(d.get("/readyz").await, Some((200, _))) }).await;
    let (code, _) = d.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert!(!d.logs().contains("systemd watchdog enabled"), "WATCHDOG_PID names another process");
}

// ----- SIGTERM under load -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_exits_0_and_a_restart_converges_without_duplicate_writes() {
    const N: usize = 300;
    const CONCURRENCY: usize = 4;
    let id = unique("drain");
    let (topic, group, prefix) = (format!("desired-{id}"), format!("g-{id}"), format!("alias/app/{id}/"));
    create_topic(&topic, 3).await;
    let use1 = kms("us-east-1");
    let key = create_key(&use1).await;
    let p = producer();
    for i in 0..N {
        let alias = format!("{prefix}a{i:03}");
        send(&p, &topic, Some(&alias), Some(&event(&alias, 1, &[("use1", &key)]))).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = moto_target("use1", &format!("rate_limit_per_second = 20\nconcurrency = {CONCURRENCY}"));
    let config = dir.path().join("aliassync.toml");

    let port = free_port();
    write(&config, &config_text(&brokers(), &topic, &group, &prefix, 6, port, "", &target));
    let mut first = Proc::start(dir.path(), &config, port, &[]);
    wait_for("40 aliases written", Duration::from_secs(90), || async { live(&use1, &prefix).await.len() >= 40 }).await;
    let (code, took) = first.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", first.logs());
    assert!(took < Duration::from_secs(10), "exit within the drain timeout (10 s), took {took:?}");
    let written_first = live(&use1, &prefix).await.len();
    assert!((40..N).contains(&written_first), "SIGTERM came mid-stream: {written_first} of {N} written");
    assert!(first.logs().contains("shutting down: draining in-flight reconciles"));

    let port = free_port();
    write(&config, &config_text(&brokers(), &topic, &group, &prefix, 6, port, "", &target));
    let second = Proc::start(dir.path(), &config, port, &[]);
    wait_for("all aliases after the restart", Duration::from_secs(120), || async {
        let l = live(&use1, &prefix).await;
        l.len() == N && l.values().all(|k| *k == key)
    })
    .await;
    // Nothing lost, and no duplicate writes beyond what was in flight at SIGTERM.
    let creates = second.metric("aliassync_provider_requests_total", &[("operation", "create_alias")]).await;
    let ok = second.metric("aliassync_reconcile_total", &[("action", "create"), ("outcome", "ok")]).await;
    assert_eq!(ok as usize, N - written_first, "the restart created exactly what was missing");
    eprintln!("SIGTERM → exit in {took:?}; first run wrote {written_first}, the restart sent {creates} create_alias");
    assert!(
        written_first + creates as usize <= N + CONCURRENCY,
        "first run wrote {written_first}, second sent {creates} create_alias for {N} aliases"
    );
}

// ----- SIGHUP -----

/// A stand-in AWS KMS endpoint that records which access key signed each write (moto ignores signatures).
struct FakeKms {
    url: String,
    writes: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeKms {
    async fn start() -> FakeKms {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;

        type Writes = Arc<Mutex<Vec<(String, String)>>>;
        async fn handle(State(writes): State<Writes>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let op = h("x-amz-target").trim_start_matches("TrentService.").to_string();
            let auth = h("authorization");
            let akid = auth.split("Credential=").nth(1).and_then(|s| s.split('/').next()).unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match op.as_str() {
                "ListAliases" => axum::Json(serde_json::json!({"Aliases": [], "Truncated": false})).into_response(),
                // A key id (the pre-flight): every key exists and is Enabled. An alias name: no such alias.
                "DescribeKey" if !body["KeyId"].as_str().unwrap_or_default().starts_with("alias/") => {
                    let id = body["KeyId"].as_str().unwrap_or_default();
                    axum::Json(serde_json::json!({"KeyMetadata": {"KeyId": id, "KeyState": "Enabled",
                        "KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT"}}))
                    .into_response()
                }
                "DescribeKey" => (
                    StatusCode::BAD_REQUEST,
                    [("x-amzn-errortype", "NotFoundException")],
                    axum::Json(serde_json::json!({"__type": "NotFoundException", "message": "not found"})),
                )
                    .into_response(),
                _ => {
                    let alias = body["AliasName"].as_str().unwrap_or_default();
                    writes.lock().unwrap().push((alias.to_string(), akid.to_string()));
                    StatusCode::OK.into_response()
                }
            }
        }
        let writes: Writes = Arc::default();
        let app = axum::Router::new().fallback(handle).with_state(writes.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeKms { url, writes }
    }

    fn signer_of(&self, alias: &str) -> Option<String> {
        self.writes.lock().unwrap().iter().find(|(a, _)| a == alias).map(|(_, k)| k.clone())
    }

    async fn wait_write(&self, alias: &str) -> String {
        wait_for(&format!("a write of {alias}"), Duration::from_secs(30), || async { self.signer_of(alias).is_some() })
            .await;
        self.signer_of(alias).unwrap()
    }
}

fn creds_file(akid: &str, secret: &str) -> String {
    format!("access_key_id = \"{akid}\"\nsecret_access_key = \"{secret}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_credentials_and_log_level_and_a_failed_reload_keeps_the_old_ones() {
    let id = unique("sighup");
    let (topic, group, prefix) = (format!("desired-{id}"), format!("g-{id}"), format!("alias/app/{id}/"));
    create_topic(&topic, 1).await;
    let fake = FakeKms::start().await;
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let port = free_port();
    let config = dir.path().join("aliassync.toml");
    let render = |level: &str, more: &str| {
        let target = format!(
            "[targets.use1]\nprovider = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\ncredentials = \"file:aws-test\"\n{more}\n",
            fake.url
        );
        config_text(&brokers(), &topic, &group, &prefix, 6, port, &format!("[log]\nlevel = \"{level}\""), &target)
    };
    // `file:aws-test` is relative: it resolves in $CREDENTIALS_DIRECTORY (the temp dir), as under LoadCredential=.
    let creds = dir.path().join("aws-test");
    write(&creds, &creds_file("AKIDFIRST", SECRET_1));
    write(&config, &render("info", ""));
    let mut d = Proc::start(dir.path(), &config, port, &[("NOTIFY_SOCKET", notify.path.display().to_string())]);
    let ready = notify.wait_line("READY=1", 0, Duration::from_secs(60));
    let p = producer();
    let alias = |n: u32| format!("{prefix}a{n}");
    send(&p, &topic, Some(&alias(1)), Some(&event(&alias(1), 1, &[("use1", AWS_KEY)]))).await;
    assert_eq!(fake.wait_write(&alias(1)).await, "AKIDFIRST");
    assert!(!d.logs().contains("kms call"), "no debug lines at log.level = info");

    // New keys and a debug level, then SIGHUP: both apply without a restart.
    write(&creds, &creds_file("AKIDSECOND", SECRET_2));
    write(&config, &render("info,aliassync=debug", ""));
    d.signal("HUP");
    d.wait_log("reload: log level changed", Duration::from_secs(10)).await;
    d.wait_log("reload: credentials reloaded", Duration::from_secs(10)).await;
    let reloading = notify.wait_line("RELOADING=1", ready + 1, Duration::from_secs(10));
    let ready_again = notify.wait_line("READY=1", reloading + 1, Duration::from_secs(10));
    assert!(notify.messages()[reloading].lines().any(|l| l.starts_with("MONOTONIC_USEC=")));
    assert!(notify.messages()[ready_again].contains("reloaded credentials of 1 targets (1 changed)"));
    send(&p, &topic, Some(&alias(2)), Some(&event(&alias(2), 1, &[("use1", AWS_KEY)]))).await;
    assert_eq!(fake.wait_write(&alias(2)).await, "AKIDSECOND", "requests after the reload sign with the new keys");
    d.wait_log("kms call", Duration::from_secs(10)).await; // the provider's debug line: the new level is live
    assert_eq!(d.get("/readyz").await.map(|r| r.0), Some(200));

    // A credential file that does not parse: the error names the key, the old keys stay in use.
    write(&creds, "access_key_id = \"AKIDTHIRD\"\n");
    d.signal("HUP");
    d.wait_log("cannot load credentials; keeping the old ones", Duration::from_secs(10)).await;
    assert!(d.logs().contains("targets.use1.credentials"));
    send(&p, &topic, Some(&alias(3)), Some(&event(&alias(3), 1, &[("use1", AWS_KEY)]))).await;
    assert_eq!(fake.wait_write(&alias(3)).await, "AKIDSECOND");

    // A config file that does not parse: nothing changes. A setting that needs a restart: named, not applied.
    write(&config, "[kafka\n");
    d.signal("HUP");
    d.wait_log("reload failed: the config file is invalid", Duration::from_secs(10)).await;
    write(&creds, &creds_file("AKIDSECOND", SECRET_2));
    write(&config, &render("info,aliassync=debug", "rate_limit_per_second = 3"));
    d.signal("HUP");
    d.wait_log("only apply after a restart", Duration::from_secs(10)).await;
    let logs = d.logs();
    let restart_line = logs.lines().find(|l| l.contains("only apply after a restart")).unwrap();
    assert!(restart_line.contains("targets.use1") && !restart_line.contains("kafka"), "{restart_line}");

    let (code, _) = d.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let logs = d.logs();
    for secret in [SECRET_1, SECRET_2] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}

// ----- Kafka SASL -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_scram_sha512_connects_with_the_file_password_and_fails_cleanly_with_a_wrong_one() {
    let s = sasl();
    let id = unique("sasl");
    let (topic, group, prefix) = (format!("desired-{id}"), format!("g-{id}"), format!("alias/app/{id}/"));
    create_topic_on(&s.client(), &topic, 1).await;
    let use1 = kms("us-east-1");
    let key = create_key(&use1).await;
    let p: FutureProducer = s.client().set("message.timeout.ms", "60000").create().unwrap();
    let alias = format!("{prefix}one");
    send(&p, &topic, Some(&alias), Some(&event(&alias, 1, &[("use1", &key)]))).await;

    // The right password, from a file credential: ready, and the event is applied.
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("kafka-password"), &format!("{}\n", s.password));
    let port = free_port();
    let config = dir.path().join("aliassync.toml");
    write(
        &config,
        &config_text(&s.brokers, &topic, &group, &prefix, 6, port, &s.properties(), &moto_target("use1", "")),
    );
    let mut good = Proc::start(dir.path(), &config, port, &[]);
    wait_for("/readyz over SASL", Duration::from_secs(60), || async {
        matches!(good.get("/readyz").await, Some((200, _)))
    })
    .await;
    wait_for("the alias in moto", Duration::from_secs(30), || async {
        live(&use1, &prefix).await.get(&alias) == Some(&key)
    })
    .await;
    assert_eq!(good.terminate(Duration::from_secs(30)).0, Some(0));
    assert!(!good.logs().contains(&s.password), "the SASL password reached the log");

    // A wrong password: never ready, an authentication error in the log, no password printed.
    let bad_dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-password-7Tq2";
    write(&bad_dir.path().join("kafka-password"), wrong);
    let port = free_port();
    let config = bad_dir.path().join("aliassync.toml");
    write(
        &config,
        &config_text(
            &s.brokers,
            &topic,
            &format!("{group}-bad"),
            &prefix,
            6,
            port,
            &s.properties(),
            &moto_target("use1", ""),
        ),
    );
    let mut bad = Proc::start(bad_dir.path(), &config, port, &[]);
    bad.wait_log("Authentication failed", Duration::from_secs(30)).await;
    for _ in 0..10 {
        assert_ne!(bad.get("/readyz").await.map(|r| r.0), Some(200), "ready with a wrong SASL password");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(bad.terminate(Duration::from_secs(30)).0, Some(0), "SIGTERM while Kafka refuses us still exits 0");
    let logs = bad.logs();
    assert!(logs.contains("SCRAM-SHA-512"), "the log names the mechanism that failed");
    assert!(!logs.contains(wrong) && !logs.contains(&s.password), "a password reached the log");
}

/// TLS and every SASL mechanism the docs promise are compiled into the Kafka client (librdkafka refuses to create a
/// client whose `security.protocol`/`sasl.mechanism` it was built without), with `file:` secrets resolved through
/// the daemon's own `[kafka.properties]` pass-through.
#[test]
fn kafka_client_is_built_with_tls_and_sasl_plain_and_scram() {
    use rdkafka::producer::BaseProducer;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let pw = format!("file:{}", dir.path().join("pw").display());
    for (protocol, mechanism) in [
        ("SSL", None),
        ("SASL_SSL", Some("PLAIN")),
        ("SASL_SSL", Some("SCRAM-SHA-256")),
        ("SASL_SSL", Some("SCRAM-SHA-512")),
        ("SASL_PLAINTEXT", Some("SCRAM-SHA-512")),
    ] {
        let mut props = format!("[kafka.properties]\n\"security.protocol\" = \"{protocol}\"\n");
        if let Some(m) = mechanism {
            props +=
                &format!("\"sasl.mechanism\" = \"{m}\"\n\"sasl.username\" = \"u\"\n\"sasl.password\" = \"{pw}\"\n");
        }
        let target = "[targets.t1]\nprovider = \"aws\"\nregion = \"us-east-1\"\ncredentials = \"env:NOPE\"\n";
        let text = config_text("127.0.0.1:9", "t", "g", "alias/app/", 6, 19999, &props, target);
        let cfg = aliassync::config::Config::from_sources(&text, Vec::new()).unwrap();
        let client = aliassync::source::client_config(&cfg).unwrap();
        let made: Result<BaseProducer, _> = client.create();
        assert!(made.is_ok(), "{protocol} {mechanism:?}: {:?}", made.err());
    }
    // Kerberos (GSSAPI) is not built in (that needs libsasl2): the docs say so, and this keeps them honest.
    let gssapi: Result<BaseProducer, _> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9")
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "GSSAPI")
        .create();
    assert!(gssapi.is_err(), "GSSAPI is available after all: update the Kafka security docs");
}

#[test]
fn check_config_rejects_inline_kafka_secrets_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aliassync.toml");
    let props = "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\
                 \"sasl.username\" = \"u\"\n\"sasl.password\" = \"inline-pw-Zx81\"\n\"ssl.key.password\" = \"inline-kp-Qa52\"\n";
    let target = "[targets.t1]\nprovider = \"aws\"\nregion = \"us-east-1\"\ncredentials = \"env:NOPE\"\n";
    write(&config, &config_text("127.0.0.1:9", "t", "g", "alias/app/", 6, 19999, props, target));
    let out =
        Command::new(env!("CARGO_BIN_EXE_aliassync")).args(["check-config", "--config"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("kafka.properties.\"sasl.password\"") && err.contains("kafka.properties.\"ssl.key.password\""),
        "{err}"
    );
    assert!(!err.contains("inline-pw-Zx81") && !err.contains("inline-kp-Qa52"), "{err}");
}

// ----- the unit file -----

/// Every system call in a `systemd-analyze syscall-filter` group, nested groups expanded.
fn syscall_group(all: &str, group: &str) -> std::collections::BTreeSet<String> {
    let mut body = Vec::new();
    let mut inside = false;
    for line in all.lines() {
        if line.starts_with('@') {
            inside = line.split_whitespace().next() == Some(group);
        } else if inside {
            let l = line.trim();
            if !l.is_empty() && !l.starts_with('#') {
                body.push(l.to_string());
            }
        }
    }
    assert!(!body.is_empty(), "no syscall group {group}");
    body.into_iter().flat_map(|x| if x.starts_with('@') { syscall_group(all, &x) } else { [x].into() }).collect()
}

/// systemd cannot run here (PID 1 is not systemd), so the unit's `SystemCallFilter=` is checked against what the
/// daemon really calls: every system call of a run under strace (start, rebuild, reconcile, notify, watchdog,
/// SIGHUP reload, SIGTERM drain) must be in @system-service and in neither @privileged nor @resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_syscall_filter_allows_every_syscall_the_daemon_makes() {
    let groups = Command::new("systemd-analyze").arg("syscall-filter").output().expect("systemd-analyze");
    let groups = String::from_utf8_lossy(&groups.stdout).into_owned();
    let allowed = syscall_group(&groups, "@system-service");
    let denied: std::collections::BTreeSet<String> =
        syscall_group(&groups, "@privileged").union(&syscall_group(&groups, "@resources")).cloned().collect();
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/aliassync.service")).unwrap();
    assert!(unit.contains("SystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n"));

    let id = unique("strace");
    let (topic, group, prefix) = (format!("desired-{id}"), format!("g-{id}"), format!("alias/app/{id}/"));
    create_topic(&topic, 1).await;
    let use1 = kms("us-east-1");
    let key = create_key(&use1).await;
    let p = producer();
    for i in 0..3 {
        let alias = format!("{prefix}a{i}");
        send(&p, &topic, Some(&alias), Some(&event(&alias, 1, &[("use1", &key)]))).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let port = free_port();
    let config = dir.path().join("aliassync.toml");
    write(&config, &config_text(&brokers(), &topic, &group, &prefix, 6, port, "", &moto_target("use1", "")));
    let trace = dir.path().join("strace.out");
    let strace = ["strace", "-f", "-qq", "-o"].map(String::from).into_iter().chain([trace.display().to_string()]);
    let mut d = Proc::start_wrapped(
        dir.path(),
        &config,
        port,
        &[("NOTIFY_SOCKET", notify.path.display().to_string()), ("WATCHDOG_USEC", "2000000".into())],
        &strace.collect::<Vec<_>>(),
    );
    let ready = notify.wait_line("READY=1", 0, Duration::from_secs(90));
    notify.wait_line("WATCHDOG=1", ready + 1, Duration::from_secs(10));
    wait_for("3 aliases in moto", Duration::from_secs(60), || async { live(&use1, &prefix).await.len() == 3 }).await;
    d.signal("HUP");
    d.wait_log("reload done", Duration::from_secs(20)).await;
    let (code, _) = d.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", d.logs());

    let text = std::fs::read_to_string(&trace).unwrap();
    let used: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let call = l.split_once(' ')?.1.trim_start();
            let name = &call[..call.find('(')?];
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
                .then(|| name.to_string())
        })
        .collect();
    assert!(used.len() > 20 && (used.contains("sendmsg") || used.contains("sendto")), "{used:?}");
    let outside: Vec<_> = used.iter().filter(|c| !allowed.contains(*c) || denied.contains(*c)).collect();
    eprintln!("{} distinct system calls, all allowed: {}", used.len(), outside.is_empty());
    assert!(outside.is_empty(), "system calls the unit's SystemCallFilter= would refuse: {outside:?}");
}

/// The shipped unit with its /usr/bin/aliassync paths pointed at the built binary (`verify` requires an
/// existing executable).
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/aliassync.service")).unwrap();
    let path = dir.join("aliassync.service");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(unit.replace("/usr/bin/aliassync", env!("CARGO_BIN_EXE_aliassync")).as_bytes())
        .unwrap();
    path
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (Debian: systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{err}");
    // Warnings (a misspelt or ignored setting) do not change the exit code: fail on any line about the unit.
    let about_unit: Vec<&str> = err.lines().filter(|l| l.contains("aliassync")).collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify warnings:\n{}", about_unit.join("\n"));
}

/// When a `LoadCredential=` file is missing, the unit's `SetCredential=` fallback takes its place: the shipped
/// example config must then fail `check-config` (and `run`, as the unit starts it) with exit 78 naming the key,
/// and must pass with the shipped example credentials.
#[test]
fn missing_credential_files_fail_check_config_naming_the_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("systemd/aliassync.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut fallbacks = 0;
    for (name, value) in unit.lines().filter_map(|l| l.strip_prefix("SetCredential=")?.split_once(':')) {
        assert!(unit.contains(&format!("LoadCredential={name}:/etc/aliassync/credentials/{name}\n")), "{name}");
        std::fs::write(dir.path().join(name), value).unwrap();
        fallbacks += 1;
    }
    assert_eq!(fallbacks, 2, "aws-prod and kafka-password");
    let check = |command: &str, creds: &Path| {
        Command::new(env!("CARGO_BIN_EXE_aliassync"))
            .args([command, "--config"])
            .arg(root.join("config/aliassync.toml"))
            .env("CREDENTIALS_DIRECTORY", creds)
            .output()
            .unwrap()
    };
    // `run` is what the unit starts (no ExecStartPre): it must fail the same way before touching Kafka.
    for command in ["check-config", "run"] {
        let out = check(command, dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{command}: {err}");
        assert!(err.contains("`targets.aws-prod-use1.credentials`"), "{command}: {err}");
    }
    let out = check("check-config", &root.join("systemd/credentials.example"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unit_file_security_exposure_is_at_most_2() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{text}"));
    let figure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    eprintln!("{}", line.trim());
    assert!(figure <= 2.0, "systemd-analyze security exposure {figure} > 2.0:\n{text}");
    // The settings the design names, spot-checked as systemd understood them.
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    let has = |k: &str, v: &str| unit_text.lines().any(|l| l.split_once('=') == Some((k, v)));
    for (k, v) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "78"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert!(has(k, v), "{k}={v} missing");
    }
    // The stop timeout leaves room for the default drain (reconcile.drain_timeout_seconds = 20) and leaving the group.
    let stop: u64 = unit_text.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).unwrap().parse().unwrap();
    assert!(stop >= 20 + 15, "TimeoutStopSec={stop}");
}
