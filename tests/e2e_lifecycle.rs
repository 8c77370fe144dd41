//! End to end against the rig's Kafka: a rebuild (and `plan`) that finishes whatever a partition's tail holds,
//! and dead-letter duty that never stops the reader. The broker-crash test is in tests/e2e_broker_crash.rs
//! (its own binary: it kills the shared broker).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn one_target(id: &str) -> DaemonConfig {
    DaemonConfig { lease_partitions: 2, ..DaemonConfig::for_id(id, &[("use1", "us-east-1", "")]) }
}

/// Ready within `timeout`, or a failure that says what the reader was waiting for.
async fn ready_within(d: &Daemon, timeout: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    while !matches!(d.get("/readyz").await, Some((200, _))) {
        assert!(
            t0.elapsed() < timeout,
            "{what}: not ready after {timeout:?} (applied events: {})",
            d.metric("aliassync_events_total", &[("outcome", "applied")]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t0.elapsed()
}

/// The daemon started, ready and holding its one target's lease.
async fn started_and_owning(cfg: &DaemonConfig) -> Daemon {
    let d = Daemon::start(cfg);
    d.wait_ready().await;
    wait_for("the lease", Duration::from_secs(30), || async { d.metric("aliassync_owned_targets", &[]).await == 1.0 })
        .await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_and_plan_finish_on_a_transactional_topic() {
    let id = unique("txn");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 2).await;
    let use1 = kms("us-east-1");
    let k = create_key(&use1).await;
    let aliases: Vec<String> = (0..4).map(|i| format!("{prefix}t{i}")).collect();
    let values: Vec<String> = aliases.iter().map(|a| event(a, 1, &[("use1", &k)])).collect();
    let records: Vec<(i32, &str, &str)> =
        aliases.iter().zip(&values).enumerate().map(|(i, (a, v))| ((i % 2) as i32, a.as_str(), v.as_str())).collect();
    tokio::task::block_in_place(|| send_transaction(&topic, &records));
    // Two records and the commit marker per partition: the marker is the last offset and is never delivered.
    // The coordinator writes the markers after commit_transaction returns; until then the (read-committed)
    // end offset stays at 0.
    wait_for("the commit markers", Duration::from_secs(10), || async {
        watermarks(&topic, 0) == (0, 3) && watermarks(&topic, 1) == (0, 3)
    })
    .await;
    let cfg = one_target(&id);

    let t0 = Instant::now();
    let (code, out, err) = tokio::task::block_in_place(|| cli(&cfg, &["plan"]));
    let plan_took = t0.elapsed();
    assert_eq!(code, 2, "plan on a transactional topic: drift expected (exit 2), took {plan_took:?}: {out}{err}");
    assert_eq!(out.matches("  + ").count(), 4, "{out}");
    assert!(plan_took < Duration::from_secs(15), "plan took {plan_took:?}");
    eprintln!("plan finished in {plan_took:?}");

    let d = Daemon::start(&cfg);
    let took = ready_within(&d, Duration::from_secs(30), "transactional topic").await;
    eprintln!("ready after {took:?}");
    assert_eq!(d.metric("aliassync_events_total", &[("outcome", "applied")]).await, 4.0);
    // The lag gauge (refreshed every 10 s) counts from the position too: a marker is not a record to read.
    wait_for("no source lag", Duration::from_secs(15), || async {
        d.metric("aliassync_source_lag_events", &[]).await == 0.0
    })
    .await;
    wait_for("4 aliases converged", Duration::from_secs(60), || async { live(&use1, &prefix).await.len() == 4 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_and_plan_finish_when_a_partition_was_emptied_by_delete_records() {
    let id = unique("deleted");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    // delete_records needs the delete policy (a compacted topic refuses it: PolicyViolation).
    create_topic_with(&topic, 2, &[("cleanup.policy", "compact,delete")]).await;
    let use1 = kms("us-east-1");
    let k = create_key(&use1).await;
    let p = producer();
    for i in 0..3 {
        let a = format!("{prefix}gone{i}");
        send_to(&p, &topic, 0, &a, &event(&a, 1, &[("use1", &k)])).await;
    }
    let kept = format!("{prefix}kept");
    send_to(&p, &topic, 1, &kept, &event(&kept, 1, &[("use1", &k)])).await;
    delete_all_records(&topic, 0).await;
    assert_eq!(watermarks(&topic, 0), (3, 3), "partition 0: every record deleted");
    let cfg = one_target(&id);

    let (code, out, err) = tokio::task::block_in_place(|| cli(&cfg, &["plan"]));
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out.matches("  + ").count(), 1, "{out}");

    let d = Daemon::start(&cfg);
    let took = ready_within(&d, Duration::from_secs(30), "a partition emptied by delete_records").await;
    eprintln!("ready after {took:?}");
    wait_for("the kept alias", Duration::from_secs(60), || async { live(&use1, &prefix).await.len() == 1 }).await;
    // The emptied partition is read from its low watermark on: a record produced now is applied.
    let late = format!("{prefix}late");
    send_to(&p, &topic, 0, &late, &event(&late, 1, &[("use1", &k)])).await;
    wait_for("the late alias", Duration::from_secs(60), || async { live(&use1, &prefix).await.len() == 2 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_kafka_refuses_does_not_freeze_the_reader() {
    let id = unique("dlqbig");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 1).await;
    // The dead-letter topic takes far less than the desired topic (and the daemon's 64 KiB event limit).
    create_topic_with(&format!("{topic}.dlq"), 1, &[("max.message.bytes", "2048")]).await;
    let cfg = one_target(&id);
    let use1 = kms("us-east-1");
    let k = create_key(&use1).await;
    let d = started_and_owning(&cfg).await;

    let p = producer();
    let big_alias = format!("{prefix}big");
    // Valid for the desired topic, invalid as an event (malformed JSON), too large for the dead-letter topic.
    let big = format!("{{\"schema\": 1, \"padding\": \"{}\"", "x".repeat(20_000));
    send(&p, &topic, Some(&big_alias), Some(&big)).await;
    let after = format!("{prefix}after");
    send(&p, &topic, Some(&after), Some(&event(&after, 1, &[("use1", &k)]))).await;
    let t0 = Instant::now();
    wait_for("the event after the oversized dead letter applied", Duration::from_secs(30), || async {
        live(&use1, &prefix).await.contains_key(&after)
    })
    .await;
    eprintln!("applied {:?} after the oversized invalid record", t0.elapsed());
    wait_for("the failure counted", Duration::from_secs(15), || async {
        d.metric("aliassync_dead_letter_failures_total", &[("reason", "too_large")]).await == 1.0
    })
    .await;
    // The reduced letter: the original's size and digest instead of its value, the headers kept.
    let dlq = tokio::task::block_in_place(|| read_topic(&format!("{topic}.dlq")));
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let l = &dlq[0];
    assert_eq!(l.key.as_deref(), Some(big_alias.as_str()));
    assert_eq!(l.headers.get("aliassync.reason").map(String::as_str), Some("malformed_json"), "{l:?}");
    assert_eq!(l.headers.get("aliassync.source.offset").map(String::as_str), Some("0"), "{l:?}");
    assert_eq!(l.headers.get("aliassync.original.size").map(String::as_str), Some(big.len().to_string().as_str()));
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(big.as_bytes()));
    assert_eq!(l.headers.get("aliassync.original.sha256"), Some(&digest), "{l:?}");
    assert!(l.value.as_deref().unwrap_or_default().contains(&digest), "{l:?}");
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "malformed_json")]).await, 1.0);
    assert!(matches!(d.get("/readyz").await, Some((200, _))));
}

/// DESIGN §2.1: one alias's records in two partitions (after partitions were added). A tombstone deletes what
/// was produced before it and never what was produced after it, whichever partition the reader gets to first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_never_lets_an_older_record_of_another_partition_come_back() {
    let id = unique("tomb");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 2).await;
    let cfg = one_target(&id);
    let use1 = kms("us-east-1");
    let k = create_key(&use1).await;
    let d = started_and_owning(&cfg).await;

    let p = producer();
    let now = now_ms();
    // `old`: deleted on partition 1, then its record from a minute before the tombstone is read on partition 0
    // (a rebuild that reads partition 1 first sees exactly this order).
    let old = format!("{prefix}old");
    send_at(&p, &topic, 1, &old, None, now).await;
    send_at(&p, &topic, 0, &old, Some(&event(&old, 1, &[("use1", &k)])), now - 60_000).await;
    // `new`: a tombstone from a minute ago, then a record produced after it: the record stands.
    let new = format!("{prefix}new");
    send_at(&p, &topic, 1, &new, None, now - 60_000).await;
    send_at(&p, &topic, 0, &new, Some(&event(&new, 1, &[("use1", &k)])), now).await;
    let last = format!("{prefix}last");
    send_at(&p, &topic, 0, &last, Some(&event(&last, 1, &[("use1", &k)])), now).await;
    wait_for("new and last converged", Duration::from_secs(60), || async {
        let l = live(&use1, &prefix).await;
        l.contains_key(&new) && l.contains_key(&last)
    })
    .await;
    let l = live(&use1, &prefix).await;
    assert!(!l.contains_key(&old), "the record produced before its tombstone came back: {l:?}");
    assert_eq!(d.metric("aliassync_events_total", &[("outcome", "stale")]).await, 1.0);

    // A rebuild reads the partitions in its own order and reaches the same desired state: nothing to do.
    let (code, out, err) = tokio::task::block_in_place(|| cli(&cfg, &["plan"]));
    assert_eq!(code, 0, "plan after convergence: {out}{err}");
}
