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

/// The emulator's AWS cloud in two REGIONS: a target in each (on lease partitions 0 and 1 of 2), and a topic.
const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];

async fn two_emulator_targets(name: &str) -> (Emulator, DaemonConfig, Vec<String>, String) {
    let emu = Emulator::start();
    let id = unique(name);
    let names = targets_on(2, &[0, 1]);
    let endpoint = format!("endpoint = \"{}\"", emu.url);
    let targets: Vec<(&str, &str, &str)> =
        names.iter().zip(REGIONS).map(|(n, r)| (n.as_str(), r, endpoint.as_str())).collect();
    let cfg = DaemonConfig { lease_partitions: 2, ..DaemonConfig::for_id(&id, &targets) };
    create_topic(&cfg.topic, 1).await;
    (emu, cfg, names, format!("alias/app/{id}/"))
}

/// A target's lifecycle state on one instance, from /status.
async fn state_of(d: &Daemon, target: &str) -> String {
    let st = status(d).await;
    let t = st["targets"].as_array().unwrap().iter().find(|t| t["name"] == target).cloned().unwrap_or_default();
    t["state"].as_str().unwrap_or_default().to_string()
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
    // The 503 window lasts as long as the drain: with nothing in flight, a few milliseconds, which polling may
    // miss; the log says when readiness dropped, and it must be before the exit.
    let unready_logged = logs
        .find("not ready: /readyz answers 503")
        .is_some_and(|i| i < logs.find("stopped after a failure").unwrap_or(0));
    assert!(saw_unready || unready_logged, "/readyz never answered 503 before the exit:\n{logs}");
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
    create_plain_topic(&format!("{topic}.status"), 6).await;
    let d = Daemon::start(&config(&id, &topic, &["use1"], 2, ""));
    d.wait_ready().await;
    let logs = d.logs();
    assert_eq!(logs.matches("topic exists; not creating it").count(), 3, "{logs}");
    assert!(!logs.contains("created topic"), "{logs}");
}

/// Hand-over: a rebalance moves a target while its old owner's write is in flight. The old owner stops
/// starting calls and releases the lease only once that write has landed, so the new owner's first call (its
/// listing) comes after it: no stale write can land after the new owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_released_only_after_the_old_owners_in_flight_write_lands() {
    let (emu, cfg, names, prefix) = two_emulator_targets("handover").await;
    let id = &cfg.group;
    let a = Daemon::start_as(&cfg, &format!("{id}-a"));
    a.wait_ready().await;
    wait_for("a owns both targets", Duration::from_secs(30), || async { owned(&a).await.len() == 2 }).await;

    let alias = format!("{prefix}x");
    let mut k1 = Vec::new();
    let mut k2 = Vec::new();
    for r in REGIONS {
        k1.push(emu.key("aws", "AKIDEXAMPLE", r).await);
        k2.push(emu.key("aws", "AKIDEXAMPLE", r).await);
    }
    let ev = |keys: &[String], rev| {
        let t: Vec<(&str, &str)> = names.iter().map(String::as_str).zip(keys.iter().map(String::as_str)).collect();
        event(&alias, rev, &t)
    };
    let p = producer();
    send(&p, &cfg.topic, Some(&alias), Some(&ev(&k1, 1))).await;
    wait_for("x on k1 in both REGIONS", Duration::from_secs(30), || async {
        let mut ok = true;
        for (r, k) in REGIONS.iter().zip(&k1) {
            ok &= emu.aliases("aws", r, &prefix).await.get(&alias) == Some(k);
        }
        ok
    })
    .await;

    // Re-pointing takes 6 s in the cloud: both of a's updates are in flight when b joins.
    const WRITE: Duration = Duration::from_secs(6);
    let rule = serde_json::json!({"cloud": "aws", "latency_ms": WRITE.as_millis() as u64, "latency_operations": ["UpdateAlias"]});
    emu.admin(reqwest::Method::POST, "faults", Some(rule)).await;
    let listed_before: Vec<u64> = {
        let mut v = Vec::new();
        for r in REGIONS {
            v.push(emu.calls("aws", r).await.get("ListAliases").map_or(0, |c| c.0));
        }
        v
    };
    send(&p, &cfg.topic, Some(&alias), Some(&ev(&k2, 2))).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = a.again_as(&cfg, &format!("{id}-b"));

    // Per region: when a's write landed (x on k2) and when b first listed the target.
    let mut landed: [Option<Duration>; 2] = [None, None];
    let mut listed: [Option<Duration>; 2] = [None, None];
    // The states a reported for each target meanwhile.
    let mut a_states: [BTreeSet<String>; 2] = Default::default();
    while t0.elapsed() < Duration::from_secs(40) && (landed.contains(&None) || listed.iter().all(Option::is_none)) {
        if let Some((_, s)) = a.get("/status").await {
            let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
            for t in v["targets"].as_array().into_iter().flatten() {
                if let Some(i) = names.iter().position(|n| t["name"] == n.as_str()) {
                    a_states[i].insert(t["state"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        for (i, r) in REGIONS.iter().enumerate() {
            if landed[i].is_none() && emu.aliases("aws", r, &prefix).await.get(&alias) == Some(&k2[i]) {
                landed[i] = Some(t0.elapsed());
            }
            let calls = emu.calls("aws", r).await.get("ListAliases").map_or(0, |c| c.0);
            if listed[i].is_none() && calls > listed_before[i] {
                listed[i] = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved = owned(&b).await;
    assert_eq!(moved.len(), 1, "b should hold one of the two targets: {moved:?}\n{}", b.logs());
    let i = names.iter().position(|n| *n == moved[0]).unwrap();
    let (landed, listed) = (landed[i].expect("a's write landed"), listed[i].expect("b listed the moved target"));
    eprintln!(
        "figure: a's write to {} landed {landed:?} after the event; b's first call there came {listed:?} after it",
        moved[0]
    );
    assert!(
        listed >= landed,
        "the new owner called the cloud ({listed:?}) before the old owner's write landed ({landed:?}):\n{}",
        a.logs()
    );
    assert!(a.logs().contains("waiting for in-flight reconciles"), "{}", a.logs());
    // a's side of the hand-over: draining while its write was in flight, then waiting; the other target ran on.
    assert!(a_states[i].contains("draining"), "a's states for the moved target: {:?}", a_states[i]);
    assert_eq!(state_of(&a, &names[i]).await, "waiting");
    assert_eq!(state_of(&a, &names[1 - i]).await, "running");
    wait_for("b runs the moved target", Duration::from_secs(20), || async {
        state_of(&b, &names[i]).await == "running"
    })
    .await;
    // The other target stayed with a, and its write landed too.
    assert_eq!(owned(&a).await, vec![names[1 - i].clone()]);
}

/// Listing → Waiting: the lease goes while the first listing runs (the fault that interrupts it). The old owner
/// drops the listing; the new owner lists, queues what changed meanwhile against an unknown live state, and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_interrupted_by_a_lease_loss_is_dropped_and_the_new_owner_lists_and_runs() {
    let (emu, cfg, names, prefix) = two_emulator_targets("listloss").await;
    let id = &cfg.group;
    // Every listing takes 5 s.
    let rule = serde_json::json!({"cloud": "aws", "latency_ms": 5000, "latency_operations": ["ListAliases"]});
    emu.admin(reqwest::Method::POST, "faults", Some(rule)).await;
    let a = Daemon::start_as(&cfg, &format!("{id}-a"));
    a.wait_ready().await;
    wait_for("a lists both targets", Duration::from_secs(20), || async {
        state_of(&a, &names[0]).await == "listing" && state_of(&a, &names[1]).await == "listing"
    })
    .await;
    let b = a.again_as(&cfg, &format!("{id}-b"));
    b.wait_ready().await;
    wait_for("one target moved to b", Duration::from_secs(20), || async { owned(&b).await.len() == 1 }).await;
    let moved = owned(&b).await.remove(0);
    let i = names.iter().position(|n| *n == moved).unwrap();
    assert_eq!(state_of(&a, &moved).await, "waiting", "a dropped its listing of the moved target");
    // Published while b lists the target: applied right after its listing.
    let keys = [emu.key("aws", "AKIDEXAMPLE", REGIONS[0]).await, emu.key("aws", "AKIDEXAMPLE", REGIONS[1]).await];
    let alias = format!("{prefix}x");
    let t: Vec<(&str, &str)> = names.iter().map(String::as_str).zip(keys.iter().map(String::as_str)).collect();
    send(&producer(), &cfg.topic, Some(&alias), Some(&event(&alias, 1, &t))).await;
    assert_eq!(state_of(&b, &moved).await, "listing");
    wait_for("b runs the moved target", Duration::from_secs(20), || async { state_of(&b, &moved).await == "running" })
        .await;
    wait_for("x converged in both REGIONS", Duration::from_secs(30), || async {
        let mut ok = true;
        for (r, k) in REGIONS.iter().zip(&keys) {
            ok &= emu.aliases("aws", r, &prefix).await.get(&alias) == Some(k);
        }
        ok
    })
    .await;
    assert_eq!(state_of(&a, &names[1 - i]).await, "running");
    // a listed the moved target at most once (the dropped listing), b once.
    let lists = emu.calls("aws", REGIONS[i]).await.get("ListAliases").map_or(0, |c| c.0);
    assert!(lists <= 2, "{lists} listings of the moved target");
}
