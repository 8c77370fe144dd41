//! End to end: the daemon binary + real Kafka + moto (AWS KMS emulator from PyPI).
//! Run through `bash tests/run.sh`, which starts the broker and moto and exports their addresses.

mod common;

use std::time::Duration;

use common::*;

struct Setup {
    cfg: DaemonConfig,
    prefix: String,
    use1: aliassync::provider::aws::AwsKms,
    euw1: aliassync::provider::aws::AwsKms,
}

async fn setup(name: &str, extra_target: &str) -> Setup {
    let id = unique(name);
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 3).await;
    let cfg = DaemonConfig {
        topic,
        group: format!("g-{id}"),
        prefix: prefix.clone(),
        targets: vec![
            ("use1".into(), "us-east-1".into(), extra_target.into()),
            ("euw1".into(), "eu-west-1".into(), extra_target.into()),
        ],
        extra: String::new(),
        lease_partitions: 6,
    };
    Setup { cfg, prefix, use1: kms("us-east-1"), euw1: kms("eu-west-1") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_200_aliases_in_two_regions_then_repoints_deletes_and_ignores_stale() {
    let s = setup("conv", "rate_limit_per_second = 50").await;
    let (ka, kb) = (create_key(&s.use1).await, create_key(&s.use1).await);
    let (kc, kd) = (create_key(&s.euw1).await, create_key(&s.euw1).await);
    let p = producer();
    let alias = |i: usize| format!("{}a{i:03}", s.prefix);
    for i in 0..200 {
        send(&p, &s.cfg.topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("use1", &ka), ("euw1", &kc)]))).await;
    }
    let d = Daemon::start(&s.cfg);
    d.wait_ready().await;
    wait_for("200 aliases in both regions", Duration::from_secs(120), || async {
        let (a, b) = (live(&s.use1, &s.prefix).await, live(&s.euw1, &s.prefix).await);
        a.len() == 200 && b.len() == 200 && a.values().all(|k| *k == ka) && b.values().all(|k| *k == kc)
    })
    .await;
    // One API write per change per target.
    for t in ["use1", "euw1"] {
        assert_eq!(
            d.metric("aliassync_provider_requests_total", &[("target", t), ("operation", "create_alias")]).await,
            200.0
        );
        assert_eq!(
            d.metric("aliassync_reconcile_total", &[("target", t), ("action", "create"), ("outcome", "ok")]).await,
            200.0
        );
        assert_eq!(d.metric("aliassync_desired_aliases", &[("target", t)]).await, 200.0);
    }
    assert_eq!(d.metric("aliassync_owned_targets", &[]).await, 2.0);
    assert_eq!(d.metric("aliassync_events_total", &[("outcome", "applied")]).await, 200.0);

    // Re-point 20 (in us-east-1 only), delete 10 by tombstone and 10 by state: absent, drop euw1 from 5.
    for i in 0..20 {
        send(&p, &s.cfg.topic, Some(&alias(i)), Some(&event(&alias(i), 2, &[("use1", &kb), ("euw1", &kc)]))).await;
    }
    for i in 20..30 {
        send(&p, &s.cfg.topic, Some(&alias(i)), None).await;
    }
    for i in 30..40 {
        let v = serde_json::json!({"schema": 1, "alias": alias(i), "revision": 2, "state": "absent"}).to_string();
        send(&p, &s.cfg.topic, Some(&alias(i)), Some(&v)).await;
    }
    for i in 40..45 {
        send(&p, &s.cfg.topic, Some(&alias(i)), Some(&event(&alias(i), 2, &[("use1", &ka)]))).await;
    }
    wait_for("updates and deletes applied", Duration::from_secs(60), || async {
        let (a, b) = (live(&s.use1, &s.prefix).await, live(&s.euw1, &s.prefix).await);
        a.len() == 180
            && b.len() == 175
            && (0..20).all(|i| a.get(&alias(i)) == Some(&kb) && b.get(&alias(i)) == Some(&kc))
            && (20..40).all(|i| !a.contains_key(&alias(i)) && !b.contains_key(&alias(i)))
            && (40..45).all(|i| a.get(&alias(i)) == Some(&ka) && !b.contains_key(&alias(i)))
    })
    .await;
    assert_eq!(
        d.metric("aliassync_provider_requests_total", &[("target", "use1"), ("operation", "update_alias")]).await,
        20.0
    );
    assert_eq!(
        d.metric("aliassync_provider_requests_total", &[("target", "euw1"), ("operation", "update_alias")]).await,
        0.0
    );
    assert_eq!(
        d.metric("aliassync_provider_requests_total", &[("target", "use1"), ("operation", "delete_alias")]).await,
        20.0
    );
    assert_eq!(
        d.metric("aliassync_provider_requests_total", &[("target", "euw1"), ("operation", "delete_alias")]).await,
        25.0
    );

    // Stale revisions are ignored and counted.
    for i in 0..5 {
        send(&p, &s.cfg.topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("use1", &ka), ("euw1", &kd)]))).await;
    }
    wait_for("stale events counted", Duration::from_secs(30), || async {
        d.metric("aliassync_events_total", &[("outcome", "stale")]).await == 5.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = live(&s.use1, &s.prefix).await;
    assert!((0..5).all(|i| a.get(&alias(i)) == Some(&kb)), "stale events changed nothing");
    assert_eq!(
        d.metric("aliassync_provider_requests_total", &[("target", "use1"), ("operation", "update_alias")]).await,
        20.0
    );
    for t in ["use1", "euw1"] {
        assert_eq!(d.metric("aliassync_queue_depth", &[("target", t)]).await, 0.0);
        assert_eq!(d.metric("aliassync_target_lag_events", &[("target", t)]).await, 0.0);
    }
    assert_eq!(d.metric("aliassync_desired_aliases", &[("target", "use1")]).await, 180.0);
    assert_eq!(d.metric("aliassync_desired_aliases", &[("target", "euw1")]).await, 175.0);
    let (_, status) = d.get("/status").await.unwrap();
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["targets"].as_array().unwrap().len(), 2);
    assert!(!status.contains("wJalrXUtnFEMI"), "no secret in /status");
    assert!(!d.logs().contains("wJalrXUtnFEMI"), "no secret in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50_updates_to_one_alias_costs_at_most_2_writes_per_target() {
    let s = setup("burst", "").await;
    let keys_a = [create_key(&s.use1).await, create_key(&s.use1).await];
    let keys_b = [create_key(&s.euw1).await, create_key(&s.euw1).await];
    let p = producer();
    let a = format!("{}burst", s.prefix);
    send(&p, &s.cfg.topic, Some(&a), Some(&event(&a, 1, &[("use1", &keys_a[0]), ("euw1", &keys_b[0])]))).await;
    let d = Daemon::start(&s.cfg);
    d.wait_ready().await;
    wait_for("alias created", Duration::from_secs(60), || async {
        live(&s.use1, &s.prefix).await.len() == 1 && live(&s.euw1, &s.prefix).await.len() == 1
    })
    .await;
    // 50 updates alternating between two keys, ending on the second: one Kafka batch.
    let futs: Vec<_> = (2..52u64)
        .map(|rev| {
            let i = (rev % 2) as usize;
            let v = event(&a, rev, &[("use1", &keys_a[i]), ("euw1", &keys_b[i])]);
            let p = p.clone();
            let (topic, a) = (s.cfg.topic.clone(), a.clone());
            async move { send(&p, &topic, Some(&a), Some(&v)).await }
        })
        .collect();
    futures::future::join_all(futs).await;
    wait_for("the last revision applied", Duration::from_secs(60), || async {
        live(&s.use1, &s.prefix).await.get(&a) == Some(&keys_a[1])
            && live(&s.euw1, &s.prefix).await.get(&a) == Some(&keys_b[1])
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in ["use1", "euw1"] {
        let writes =
            d.metric("aliassync_provider_requests_total", &[("target", t), ("operation", "update_alias")]).await
                + d.metric("aliassync_provider_requests_total", &[("target", t), ("operation", "create_alias")]).await
                - 1.0;
        assert!((1.0..=2.0).contains(&writes), "{t}: {writes} writes for a burst of 50");
    }
    assert_eq!(d.metric("aliassync_events_total", &[("outcome", "applied")]).await, 51.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_dead_lettered_once_with_reasons_and_cause_no_cloud_call() {
    let s = setup("dlq", "").await;
    let k = create_key(&s.use1).await;
    let p = producer();
    let pre = &s.prefix;
    let ok = |a: &str| event(a, 1, &[("use1", &k)]);
    let big =
        format!(r#"{{"schema":1,"alias":"{pre}big","revision":1,"targets":{{}},"pad":"{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(Option<String>, Option<String>, &str)> = vec![
        (Some(format!("{pre}m")), Some("{not json".into()), "malformed_json"),
        (
            Some(format!("{pre}s")),
            Some(ok(&format!("{pre}s")).replace("\"schema\":1", "\"schema\":7")),
            "unknown_schema",
        ),
        (Some(format!("{pre}k")), Some(ok(&format!("{pre}other"))), "key_mismatch"),
        (Some(format!("{pre}t")), Some(event(&format!("{pre}t"), 1, &[("nope", &k)])), "unknown_target"),
        (Some(format!("{pre}b")), Some(event(&format!("{pre}b"), 1, &[("use1", "key-abc")])), "bad_key_id"),
        (Some("alias/elsewhere/x".into()), Some(ok("alias/elsewhere/x")), "unmanaged_prefix"),
        (Some("alias/aws/ebs".into()), Some(ok("alias/aws/ebs")), "reserved_name"),
        (Some(format!("{pre}big")), Some(big), "too_large"),
    ];
    for (key, value, _) in &cases {
        send(&p, &s.cfg.topic, key.as_deref(), value.as_deref()).await;
    }
    let d = Daemon::start(&s.cfg);
    d.wait_ready().await;
    let dlq = format!("{}.dlq", s.cfg.topic);
    // (A record without a key cannot exist on a compacted topic: the broker refuses it.)
    wait_for("8 dead letters", Duration::from_secs(60), || async { read_topic(&dlq).len() >= cases.len() }).await;
    let letters = read_topic(&dlq);
    assert_eq!(letters.len(), cases.len());
    for (key, value, reason) in &cases {
        let l = letters
            .iter()
            .find(|l| l.headers.get("aliassync.reason").map(String::as_str) == Some(*reason))
            .unwrap_or_else(|| panic!("no dead letter with reason {reason}: {letters:?}"));
        assert_eq!(&l.key, key, "{reason}: original key kept");
        assert_eq!(l.value.as_deref().map(str::len), value.as_deref().map(str::len), "{reason}: original value kept");
        assert!(
            l.headers.contains_key("aliassync.source.partition") && l.headers.contains_key("aliassync.source.offset")
        );
        assert!(!l.headers["aliassync.detail"].is_empty());
        assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", reason)]).await, 1.0, "{reason}");
    }
    assert_eq!(d.metric("aliassync_events_total", &[("outcome", "invalid")]).await, cases.len() as f64);
    // No cloud call but the two listings.
    let calls = d.metric("aliassync_provider_requests_total", &[]).await;
    assert_eq!(calls, 2.0, "only the initial listings");
    assert!(live(&s.use1, &s.prefix).await.is_empty());
    assert!(live(&s.use1, "alias/elsewhere/").await.is_empty());
    // Logged once each.
    let logs = d.logs();
    assert_eq!(logs.matches("invalid event dead-lettered").count(), cases.len(), "{logs}");

    // A restart rebuilds from the beginning but dead-letters nothing twice; a new invalid event still goes.
    let mut d = d;
    assert_eq!(d.terminate(), Some(0));
    send(&p, &s.cfg.topic, Some(&format!("{pre}late")), Some("[]")).await;
    let d2 = d.again(&s.cfg);
    d2.wait_ready().await;
    wait_for("the new dead letter", Duration::from_secs(60), || async { read_topic(&dlq).len() > cases.len() }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(read_topic(&dlq).len(), cases.len() + 1, "each invalid event dead-lettered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_converges_with_nothing_lost() {
    let s = setup("kill", "rate_limit_per_second = 20").await;
    let ka = create_key(&s.use1).await;
    let kc = create_key(&s.euw1).await;
    let p = producer();
    let alias = |i: usize| format!("{}k{i:03}", s.prefix);
    let mut d = Daemon::start(&s.cfg);
    d.wait_ready().await;
    for i in 0..150 {
        send(&p, &s.cfg.topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("use1", &ka), ("euw1", &kc)]))).await;
    }
    wait_for("some aliases created", Duration::from_secs(60), || async { live(&s.use1, &s.prefix).await.len() >= 20 })
        .await;
    d.kill9();
    let before = live(&s.use1, &s.prefix).await.len();
    assert!(before < 150, "killed mid-stream ({before} of 150 done)");
    // More desired state arrives while no daemon runs.
    for i in 150..200 {
        send(&p, &s.cfg.topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("use1", &ka), ("euw1", &kc)]))).await;
    }
    let d2 = d.again(&s.cfg);
    d2.wait_ready().await;
    wait_for("all 200 aliases in both regions", Duration::from_secs(120), || async {
        live(&s.use1, &s.prefix).await.len() == 200 && live(&s.euw1, &s.prefix).await.len() == 200
    })
    .await;
    // The restart re-read the listing: what the first run created is not written again.
    let created =
        d2.metric("aliassync_provider_requests_total", &[("target", "use1"), ("operation", "create_alias")]).await;
    assert!(created <= (200 - before) as f64 + 4.0, "restart re-created at most the in-flight ones: {created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_metrics_scrape_passes_promtool_check_metrics() {
    let s = setup("promtool", "").await;
    let k = create_key(&s.use1).await;
    let a = format!("{}m", s.prefix);
    send(&producer(), &s.cfg.topic, Some(&a), Some(&event(&a, 1, &[("use1", &k)]))).await;
    let d = Daemon::start(&s.cfg);
    d.wait_ready().await;
    wait_for("converged", Duration::from_secs(30), || async { live(&s.use1, &s.prefix).await.len() == 1 }).await;
    let (_, text) = d.get("/metrics").await.unwrap();
    for name in
        ["aliassync_provider_request_duration_seconds_bucket", "aliassync_drift_aliases", "aliassync_build_info"]
    {
        assert!(text.contains(name), "{name} missing");
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/support/install-debs.sh installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_the_desired_topic_are_read_without_a_restart() {
    let s = setup("grow", "").await;
    let k = create_key(&s.use1).await;
    let d = Daemon::start(&s.cfg);
    d.wait_ready().await;
    // setup() made 3 partitions; grow to 5 and write straight into the new ones.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let grow = rdkafka::admin::NewPartitions::new(&s.cfg.topic, 5);
    for r in admin.create_partitions([&grow], &rdkafka::admin::AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
    let p = producer();
    for (i, part) in [3, 4].into_iter().enumerate() {
        let a = format!("{}new{i}", s.prefix);
        let v = event(&a, 1, &[("use1", &k)]);
        // The producer learns of the new partitions with its next metadata refresh; until then librdkafka
        // fails a send to them at once with UnknownPartition (a race of the test's producer, not the daemon).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rec = rdkafka::producer::FutureRecord::to(&s.cfg.topic).key(&a).payload(&v).partition(part);
            match p.send(rec, Duration::from_secs(30)).await {
                Ok(_) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::UnknownPartition),
                    _,
                )) if std::time::Instant::now() < deadline => {
                    use rdkafka::producer::Producer;
                    let _ = p.client().fetch_metadata(Some(&s.cfg.topic), Duration::from_secs(5));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err((e, _)) => panic!("send to new partition {part}: {e}"),
            }
        }
    }
    wait_for("events in the new partitions applied", Duration::from_secs(40), || async {
        live(&s.use1, &s.prefix).await.len() == 2
    })
    .await;
    assert!(d.logs().contains("reading new desired-topic partitions"));
}
