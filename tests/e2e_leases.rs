//! End to end against the rig's Kafka: the lease group (static membership, the lease topic's real partition
//! count), supervision of the daemon's critical tasks, and start-up against topics that already exist.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aliassync::source::lease_partition_of_target;
use common::*;

fn config(id: &str, topic: &str, targets: &[&str], lease_partitions: i32, extra: &str) -> DaemonConfig {
    DaemonConfig {
        topic: topic.into(),
        group: format!("g-{id}"),
        prefix: format!("alias/app/{id}/"),
        targets: targets.iter().map(|t| (t.to_string(), "us-east-1".into(), String::new())).collect(),
        extra: extra.into(),
        lease_partitions,
    }
}

async fn owned_set(d: &Daemon) -> BTreeSet<String> {
    owned(d).await.into_iter().collect()
}

/// Target names whose lease partitions (mod `p`) are `want` (one name per wanted partition).
fn targets_on(p: i32, want: &[i32]) -> Vec<String> {
    want.iter()
        .map(|w| (0..).map(|i| format!("t{i}")).find(|n| lease_partition_of_target(n, p) == *w).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_holds_its_leases_again_within_3_s_without_a_rebalance() {
    let id = unique("restart");
    let topic = format!("desired-{id}");
    create_topic(&topic, 1).await;
    // Two instances over 4 lease partitions, a target on each partition: each instance owns some.
    let names = targets_on(4, &[0, 1, 2, 3]);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = config(&id, &topic, &refs, 4, "");
    let mut a = Daemon::start_as(&cfg, &format!("{id}-a"));
    a.wait_ready().await;
    let b = a.again_as(&cfg, &format!("{id}-b"));
    b.wait_ready().await;
    wait_for("the targets split over both instances", Duration::from_secs(30), || async {
        let (oa, ob) = (owned_set(&a).await, owned_set(&b).await);
        !oa.is_empty() && !ob.is_empty() && oa.len() + ob.len() == names.len() && oa.is_disjoint(&ob)
    })
    .await;
    let (held_by_a, held_by_b) = (owned_set(&a).await, owned_set(&b).await);
    // Every rebalance runs the other instance's rebalance callback, which logs this line (cooperative
    // protocol: even when its own assignment does not change).
    const REBALANCED: &str = "lease assignment changed";
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b_rebalances = b.logs().matches(REBALANCED).count();

    // systemctl restart: SIGTERM, then the same instance starts again.
    assert_eq!(a.terminate(), Some(0));
    let t0 = Instant::now();
    let a2 = a.again_as(&cfg, &format!("{id}-a"));
    let mut b_saw = BTreeSet::new();
    let regained = loop {
        b_saw.extend(owned_set(&b).await);
        if owned_set(&a2).await == held_by_a {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the restarted instance does not hold {held_by_a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("figure: the restarted instance held its {} targets again {regained:?} after its start", held_by_a.len());
    // No rebalance: the other instance never took (or lost) a target, nor went through a rebalance.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b_saw, held_by_b, "the other instance's targets changed during the restart");
    assert_eq!(owned_set(&b).await, held_by_b);
    let more = b.logs().matches(REBALANCED).count() - b_rebalances;
    assert_eq!(more, 0, "the restart made the group rebalance {more} times:\n{}", b.logs());
    assert!(regained <= Duration::from_secs(3), "leases held again after {regained:?}, goal 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_topic_with_fewer_partitions_than_configured_is_adopted_and_every_target_is_owned() {
    let id = unique("lparts");
    let topic = format!("desired-{id}");
    create_topic(&topic, 1).await;
    // The lease topic exists with 3 partitions; the config says 6. Targets on config partitions 0..6, three of
    // them on 3, 4 and 5, which the topic does not have.
    create_plain_topic(&format!("{topic}.leases"), 3).await;
    let names = targets_on(6, &[0, 1, 3, 4, 5]);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = Daemon::start(&config(&id, &topic, &refs, 6, ""));
    d.wait_ready().await;
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let t0 = Instant::now();
    while owned_set(&d).await != all {
        assert!(t0.elapsed() < Duration::from_secs(30), "unowned targets: owns {:?} of {all:?}", owned_set(&d).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = d.logs();
    assert!(
        logs.contains("kafka.lease_partitions") && logs.contains("using the topic's"),
        "the disagreement is logged naming the key:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_instance_id_fences_the_old_instance_which_turns_unready_and_exits_non_zero() {
    let id = unique("fenced");
    let topic = format!("desired-{id}");
    create_topic(&topic, 1).await;
    let cfg = config(&id, &topic, &["use1"], 2, "");
    let mut a = Daemon::start_as(&cfg, "same-host");
    a.wait_ready().await;
    wait_for("the lease", Duration::from_secs(30), || async { owned(&a).await.len() == 1 }).await;

    // A second instance configured with the same id (e.g. two on one host, both defaulting to the host name).
    let b = a.again_as(&cfg, "same-host");
    let t0 = Instant::now();
    let mut saw_unready = false;
    // Polled without pause: after the fence, /readyz answers 503 while the daemon closes its clients (~0.1 s).
    let http = reqwest::Client::new();
    let readyz = a.url("/readyz");
    let code = loop {
        if let Some(code) = a.exit_code() {
            break code;
        }
        if let Ok(r) = http.get(&readyz).send().await {
            saw_unready |= r.status().as_u16() == 503;
        }
        assert!(t0.elapsed() < Duration::from_secs(40), "the fenced instance is still running:\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("fenced instance exited with {code:?} {:?} after the duplicate started", t0.elapsed());
    let logs = a.logs();
    assert_eq!(code, Some(78), "a configuration problem (no restart by systemd, so no flap):\n{logs}");
    assert!(saw_unready, "/readyz never answered 503 before the exit:\n{logs}");
    assert!(logs.contains("kafka.instance_id") && logs.contains("FENCED_INSTANCE_ID"), "{logs}");
    // The newcomer keeps running and holds the lease.
    b.wait_ready().await;
    wait_for("the newcomer owns the target", Duration::from_secs(30), || async { owned(&b).await.len() == 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_that_exist_are_read_not_created() {
    let id = unique("exists");
    let topic = format!("desired-{id}");
    create_topic(&topic, 1).await;
    create_plain_topic(&format!("{topic}.leases"), 2).await;
    create_plain_topic(&format!("{topic}.dlq"), 1).await;
    let d = Daemon::start(&config(&id, &topic, &["use1"], 2, ""));
    d.wait_ready().await;
    let logs = d.logs();
    assert_eq!(logs.matches("topic exists; not creating it").count(), 2, "{logs}");
    assert!(!logs.contains("created topic"), "{logs}");
}
