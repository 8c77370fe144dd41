//! End to end: a Kafka broker restart while the daemon runs. Its own test binary, because it
//! restarts the shared broker (test binaries run one after another).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_converges_without_operator_action() {
    let id = unique("broker");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 2).await;
    let cfg = DaemonConfig::for_id(&id, &[("use1", "us-east-1", "")]);
    let use1 = kms("us-east-1");
    let k = create_key(&use1).await;
    let p = producer();
    let alias = |i: usize| format!("{prefix}b{i:02}");
    for i in 0..10 {
        send(&p, &topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("use1", &k)]))).await;
    }
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    wait_for("first 10", Duration::from_secs(60), || async { live(&use1, &prefix).await.len() == 10 }).await;

    let rig = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kafka.sh");
    assert!(Command::new("bash").args([rig, "stop"]).status().unwrap().success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(Command::new("bash").args([rig, "start"]).status().unwrap().success());

    // Produced after the restart; the producer retries until the broker is back.
    for i in 10..20 {
        send(&p, &topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("use1", &k)]))).await;
    }
    wait_for("all 20 after the broker restart", Duration::from_secs(120), || async {
        live(&use1, &prefix).await.len() == 20
    })
    .await;
    // A broker down for longer than the lease session (6 s here) makes librdkafka count the assignment as
    // lost, so the target is revoked (no write may start then) and comes back on the rejoin.
    wait_for("the lease held again", Duration::from_secs(30), || async {
        d.metric("aliassync_owned_targets", &[]).await == 1.0
    })
    .await;
    assert!(d.get("/healthz").await.is_some());
}
