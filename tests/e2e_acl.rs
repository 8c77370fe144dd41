//! Against a broker that enforces ACLs (tests/support/kafka-sasl.sh: StandardAuthorizer, deny when no ACL
//! matches): a principal with READ/WRITE/DESCRIBE on its topics and READ on its groups, and no CREATE anywhere,
//! as a locked-down production principal. Topics made for it: it starts, reads, leases and dead-letters. A topic
//! missing that it may not create: it stops at once, naming the topic and the ACL (it used to hang at start).

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::FutureProducer;

struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    port: u16,
    topic: String,
    prefix: String,
}

/// A config for the restricted principal (its password from `file:kafka-password`); names begin `acl-`.
fn setup(name: &str) -> Setup {
    let r = sasl_restricted();
    let id = unique(name);
    let (topic, group, prefix) = (format!("acl-{id}"), format!("acl-{id}"), format!("alias/app/{id}/"));
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("kafka-password"), &format!("{}\n", r.password));
    let port = free_port();
    let config = dir.path().join("aliassync.toml");
    let text = config_text(&r.brokers, &topic, &group, &prefix, 2, port, &r.properties(), &moto_target("use1", ""));
    write(&config, &text);
    Setup { dir, config, port, topic, prefix }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_create_starts_against_topics_made_for_it() {
    let s = setup("acl-ok");
    let admin = sasl().client();
    // The restricted principal cannot create topics: prove the broker enforces that before relying on it.
    let (code, msg) = {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let a: AdminClient<_> = sasl_restricted().client().create().unwrap();
        let t = NewTopic::new(&s.topic, 1, TopicReplication::Fixed(1));
        let r = a.create_topics([&t], &AdminOptions::new()).await.unwrap().remove(0);
        (r.clone().err().map(|e| e.1), format!("{r:?}"))
    };
    assert_eq!(code, Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed), "{msg}");
    create_topic_on(&admin, &s.topic, 1).await;
    create_topic_on(&admin, &format!("{}.leases", s.topic), 2).await;
    create_topic_on(&admin, &format!("{}.dlq", s.topic), 1).await;
    create_topic_on(&admin, &format!("{}.status", s.topic), 2).await;
    let use1 = kms("us-east-1");
    let key = create_key(&use1).await;
    let prefix = &s.prefix;
    let alias = format!("{prefix}one");
    let p: FutureProducer = admin.clone().set("message.timeout.ms", "60000").create().unwrap();
    send(&p, &s.topic, Some(&alias), Some(&event(&alias, 1, &[("use1", &key)]))).await;
    send(&p, &s.topic, Some(&format!("{prefix}bad")), Some("{not json")).await;

    let mut d = Proc::start(s.dir.path(), &s.config, s.port, &[]);
    d.wait_ready("over SASL with ACLs", Duration::from_secs(60)).await;
    wait_for("the alias in moto", Duration::from_secs(30), || async {
        live(&use1, prefix).await.get(&alias) == Some(&key)
    })
    .await;
    // Dead-letter duty: the letter written and its progress committed under the principal's own ACLs.
    wait_for("the invalid event dead-lettered", Duration::from_secs(30), || async {
        d.metric("aliassync_dead_letters_total", &[("reason", "malformed_json")]).await == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.metric("aliassync_dead_letter_failures_total", &[]).await, 0.0, "{}", d.logs());
    assert_eq!(d.terminate(Duration::from_secs(30)).0, Some(0));
    let logs = d.logs();
    assert!(!logs.contains("created topic") && !logs.contains("uthoriz"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_it_may_not_create_stops_the_daemon_naming_the_topic_and_the_acl() {
    let s = setup("acl-missing");
    let admin = sasl().client();
    create_topic_on(&admin, &s.topic, 1).await;
    create_topic_on(&admin, &format!("{}.dlq", s.topic), 1).await;
    let mut d = Proc::start(s.dir.path(), &s.config, s.port, &[]);
    let (code, took) = d.wait_exit(Duration::from_secs(60));
    let logs = d.logs();
    eprintln!("figure: exited {code:?} {took:?} after its start");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{logs}");
    let leases = format!("topic {}.leases does not exist", s.topic);
    assert!(logs.contains(&leases) && logs.contains("CREATE ACL"), "{logs}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
