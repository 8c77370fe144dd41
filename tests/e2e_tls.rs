//! Kafka over TLS, end to end with the daemon binary against a broker whose only client listener is SSL
//! (tests/support/kafka-tls.sh: a test CA signed its certificate; an unrelated CA did not):
//! - `security.protocol = "SSL"` with `ssl.ca.location` = the test CA: ready, and an alias converges in moto;
//! - the wrong CA: the daemon exits 1 within seconds, naming the broker and the TLS failure, and the client key's
//!   password (a `file:` secret) appears nowhere in its output;
//! - a TLS broker that is not there is waited for (no exit), as a plaintext one is.
//!
//! Run through `bash tests/run.sh`: it starts Kafka, moto and the TLS broker and exports their addresses.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

struct Tls {
    brokers: String,
    ca: String,
    other_ca: String,
    client_cert: String,
    client_key: String,
    key_password: String,
}

fn tls() -> Tls {
    let file = env_or_explain("KAFKA_TLS_CLIENT_KEY_PASSWORD_FILE");
    Tls {
        brokers: env_or_explain("KAFKA_TLS_BROKERS"),
        ca: env_or_explain("KAFKA_TLS_CA"),
        other_ca: env_or_explain("KAFKA_TLS_OTHER_CA"),
        client_cert: env_or_explain("KAFKA_TLS_CLIENT_CERT"),
        client_key: env_or_explain("KAFKA_TLS_CLIENT_KEY"),
        key_password: std::fs::read_to_string(file).unwrap().trim().to_string(),
    }
}

impl Tls {
    /// The test's own client (topic creation, producing), trusting the test CA.
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("security.protocol", "SSL").set("ssl.ca.location", &self.ca);
        c
    }
}

fn config_text(brokers: &str, topic: &str, id: &str, port: u16, properties: &str) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "g-{id}"
lease_partitions = 2
lease_session_timeout_ms = 6000
[kafka.properties]
{properties}
[ownership]
managed_prefixes = ["alias/app/{id}/"]
[metrics]
listen = "127.0.0.1:{port}"
[reconcile]
backoff_min_ms = 100
backoff_max_ms = 2000
drain_timeout_seconds = 10
[targets.use1]
provider = "aws"
region = "us-east-1"
endpoint = "{moto}"
credentials = "env:E2E_AWS"
"#,
        moto = moto_url()
    )
}

/// The daemon with `config`, secrets under `dir` ($CREDENTIALS_DIRECTORY); stdout and stderr to files there.
fn spawn(dir: &Path, config: &str) -> Child {
    let path = dir.join("aliassync.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_aliassync"))
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env("E2E_AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("E2E_AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        .env("CREDENTIALS_DIRECTORY", dir)
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap()
}

fn output(dir: &Path) -> (String, String) {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    (read("stdout"), read("stderr"))
}

/// Waits for the exit (killing the daemon after `timeout`); returns the code and how long it took.
fn wait_exit(child: &mut Child, timeout: Duration) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code(), t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().ok();
    (None, t0.elapsed())
}

fn terminate(child: &mut Child) -> Option<i32> {
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    wait_exit(child, Duration::from_secs(30)).0
}

async fn ready(port: u16) -> bool {
    match reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
        Ok(r) => r.status().as_u16() == 200,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_ca_connects_and_an_alias_converges() {
    let t = tls();
    let id = unique("tls");
    let topic = format!("desired-{id}");
    let admin: AdminClient<DefaultClientContext> = t.client().create().unwrap();
    let nt = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for r in admin.create_topics([&nt], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
    let use1 = kms("us-east-1");
    let key = create_key(&use1).await;
    let prefix = format!("alias/app/{id}/");
    let alias = format!("{prefix}one");
    let p: FutureProducer = t.client().set("message.timeout.ms", "60000").create().unwrap();
    let ev = event(&alias, 1, &[("use1", &key)]);
    p.send(FutureRecord::to(&topic).key(&alias).payload(&ev), Duration::from_secs(60))
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    // Exactly the README's example: the protocol and the CA, nothing else.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let props = format!("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n", t.ca);
    let mut d = spawn(dir.path(), &config_text(&t.brokers, &topic, &id, port, &props));
    let started = Instant::now();
    while !ready(port).await {
        if let Some(st) = d.try_wait().unwrap() {
            panic!("the daemon exited ({st}) over TLS:\n{}", output(dir.path()).1);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not ready over TLS:\n{}", output(dir.path()).1);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for("the alias in moto", Duration::from_secs(30), || async {
        live(&use1, &prefix).await.get(&alias) == Some(&key)
    })
    .await;
    assert_eq!(terminate(&mut d), Some(0), "{}", output(dir.path()).1);
}

#[test]
fn the_wrong_ca_fails_at_start_naming_the_broker_and_the_tls_failure_without_secrets() {
    let t = tls();
    let id = unique("tls-wrong-ca");
    let dir = tempfile::tempdir().unwrap();
    // A secret-bearing property the client really uses: the client key is encrypted with it.
    std::fs::write(dir.path().join("kafka-key-password"), format!("{}\n", t.key_password)).unwrap();
    let props = format!(
        "\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n\"ssl.certificate.location\" = \"{}\"\n\
         \"ssl.key.location\" = \"{}\"\n\"ssl.key.password\" = \"file:kafka-key-password\"\n",
        t.other_ca, t.client_cert, t.client_key
    );
    let port = free_port();
    let mut d = spawn(dir.path(), &config_text(&t.brokers, &format!("desired-{id}"), &id, port, &props));
    let (code, took) = wait_exit(&mut d, Duration::from_secs(30));
    let (out, err) = output(dir.path());
    assert_eq!(code, Some(1), "exit 1 (an error, not 78: the config is valid), after {took:?}:\n{err}");
    assert!(took < Duration::from_secs(15), "gave up in {took:?}, not at once");
    // stderr's last line is the one systemd's journal shows last.
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("aliassync: Kafka "), "{err}");
    for want in [t.brokers.as_str(), "TLS failure", "certificate verify failed", "ssl.ca.location"] {
        assert!(last.contains(want), "{want:?} missing from the error: {last}");
    }
    for (name, text) in [("stdout", &out), ("stderr", &err)] {
        assert!(!text.contains(&t.key_password), "the key password reached {name}");
    }
    eprintln!("the daemon exited {code:?} after {took:?}: {last}");
}

#[test]
fn a_tls_broker_that_is_not_there_is_waited_for_and_sigterm_still_exits_0() {
    let t = tls();
    let id = unique("tls-down");
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on 127.0.0.1:9: every connection is refused, as when the broker is down at boot.
    let props = format!("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n", t.ca);
    let port = free_port();
    let mut d = spawn(dir.path(), &config_text("127.0.0.1:9", &format!("desired-{id}"), &id, port, &props));
    // Longer than a connection check (5 s) plus a retry: still waiting.
    std::thread::sleep(Duration::from_secs(8));
    assert!(d.try_wait().unwrap().is_none(), "exited while the broker is down:\n{}", output(dir.path()).1);
    assert_eq!(terminate(&mut d), Some(0), "{}", output(dir.path()).1);
    let err = output(dir.path()).1;
    assert!(err.contains("Kafka 127.0.0.1:9: ") && err.contains("retrying"), "the wait is logged: {err}");
}
