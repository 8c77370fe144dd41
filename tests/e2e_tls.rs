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
use std::time::Duration;

use common::*;
use rdkafka::producer::FutureProducer;
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
    Tls {
        brokers: env_or_explain("KAFKA_TLS_BROKERS"),
        ca: env_or_explain("KAFKA_TLS_CA"),
        other_ca: env_or_explain("KAFKA_TLS_OTHER_CA"),
        client_cert: env_or_explain("KAFKA_TLS_CLIENT_CERT"),
        client_key: env_or_explain("KAFKA_TLS_CLIENT_KEY"),
        key_password: env_file_secret("KAFKA_TLS_CLIENT_KEY_PASSWORD_FILE"),
    }
}

impl Tls {
    /// The test's own client (topic creation, producing), trusting the test CA.
    fn client(&self) -> ClientConfig {
        kafka_client(&self.brokers, &[("security.protocol", "SSL"), ("ssl.ca.location", &self.ca)])
    }
}

/// The daemon on `brokers` and topic `desired-{id}` with these `[kafka.properties]` lines, secrets under `dir`
/// ($CREDENTIALS_DIRECTORY).
fn spawn(dir: &Path, brokers: &str, id: &str, properties: &str) -> Proc {
    let port = free_port();
    let config = dir.join("aliassync.toml");
    let (topic, group, prefix) = (format!("desired-{id}"), format!("g-{id}"), format!("alias/app/{id}/"));
    let extra = format!("[kafka.properties]\n{properties}");
    write(&config, &config_text(brokers, &topic, &group, &prefix, 2, port, &extra, &moto_target("use1", "")));
    Proc::start(dir, &config, port, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_ca_connects_and_an_alias_converges() {
    let t = tls();
    let id = unique("tls");
    let topic = format!("desired-{id}");
    create_topic_on(&t.client(), &topic, 1).await;
    let use1 = kms("us-east-1");
    let key = create_key(&use1).await;
    let prefix = format!("alias/app/{id}/");
    let alias = format!("{prefix}one");
    let p: FutureProducer = t.client().set("message.timeout.ms", "60000").create().unwrap();
    send(&p, &topic, Some(&alias), Some(&event(&alias, 1, &[("use1", &key)]))).await;

    // Exactly the README's example: the protocol and the CA, nothing else.
    let dir = tempfile::tempdir().unwrap();
    let props = format!("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n", t.ca);
    let mut d = spawn(dir.path(), &t.brokers, &id, &props);
    d.wait_ready("over TLS", Duration::from_secs(60)).await;
    wait_for("the alias in moto", Duration::from_secs(30), || async {
        live(&use1, &prefix).await.get(&alias) == Some(&key)
    })
    .await;
    assert_eq!(d.terminate(Duration::from_secs(30)).0, Some(0), "{}", d.logs());
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
    let mut d = spawn(dir.path(), &t.brokers, &id, &props);
    let (code, took) = d.wait_exit(Duration::from_secs(30));
    let (out, err) = (d.stdout(), d.logs());
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
    let mut d = spawn(dir.path(), "127.0.0.1:9", &id, &props);
    // Longer than a connection check (5 s) plus a retry: still waiting.
    std::thread::sleep(Duration::from_secs(8));
    assert!(d.exited().is_none(), "exited while the broker is down:\n{}", d.logs());
    assert_eq!(d.terminate(Duration::from_secs(30)).0, Some(0), "{}", d.logs());
    let err = d.logs();
    assert!(err.contains("Kafka 127.0.0.1:9: ") && err.contains("retrying"), "the wait is logged: {err}");
}
