//! End to end: repeated kill -9 of the Kafka broker while the daemon holds its leases. Its own test binary,
//! because it kills the shared broker (test binaries run one after another).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Restarts the broker when dropped, so a failing test never leaves the rig without Kafka.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        ensure_broker_up();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_held_again_within_the_session_timeout_after_broker_crashes() {
    let _guard = BrokerGuard;
    let id = unique("crash");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 1).await;
    let cfg = DaemonConfig { lease_partitions: 4, ..DaemonConfig::for_id(&id, &[("use1", "us-east-1", "")]) };
    // The session timeout of these configs (tests/common: lease_session_timeout_ms = 6000).
    let session = Duration::from_secs(6);
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    wait_for("the lease", Duration::from_secs(30), || async { d.metric("aliassync_owned_targets", &[]).await == 1.0 })
        .await;

    for round in 1..=5 {
        let t0 = Instant::now();
        tokio::task::block_in_place(kill9_and_restart_broker);
        eprintln!("round {round}: broker killed and back in {:?}", t0.elapsed());
        // Some rounds leave the broker up only briefly, as a crash-looping broker would.
        tokio::time::sleep(Duration::from_secs(if round % 2 == 0 { 1 } else { 4 })).await;
    }
    let back = Instant::now();
    let limit = session + Duration::from_secs(5);
    // Held again, and still held a few seconds later (not a stale view from before the crash).
    let mut held_since: Option<Instant> = None;
    loop {
        let owned = d.metric("aliassync_owned_targets", &[]).await == 1.0;
        match (owned, held_since) {
            (true, None) => held_since = Some(Instant::now()),
            (false, _) => held_since = None,
            _ => {}
        }
        if held_since.is_some_and(|s| s.elapsed() >= Duration::from_secs(3)) {
            break;
        }
        assert!(
            back.elapsed() < limit + Duration::from_secs(3),
            "the lease is not held {:?} after the broker's last return (limit: session {session:?} + 5 s)",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let regained = held_since.unwrap() - back;
    eprintln!("lease held again {regained:?} after the broker's last return");
    assert!(regained <= limit, "lease regained after {regained:?}, limit {limit:?}");

    // And the daemon still works: an event produced now converges.
    let use1 = kms("us-east-1");
    let k = create_key(&use1).await;
    let a = format!("{prefix}after-crashes");
    send(&producer(), &topic, Some(&a), Some(&event(&a, 1, &[("use1", &k)]))).await;
    wait_for("an event after the crashes", Duration::from_secs(60), || async { live(&use1, &prefix).await.len() == 1 })
        .await;
}
