//! End to end, drift and the operator CLI: the daemon binary + real Kafka + moto.

mod common;

use std::time::Duration;

use aliassync::provider::KmsAliases;
use common::*;
use serde_json::json;

fn setup(name: &str, targets: &[(&str, &str, &str)], scan: u64) -> (DaemonConfig, String) {
    let id = unique(name);
    let prefix = format!("alias/app/{id}/");
    let cfg = DaemonConfig {
        extra: format!("[drift]\nscan_interval_seconds = {scan}\n"),
        ..DaemonConfig::for_id(&id, targets)
    };
    (cfg, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_in_enforce_reported_in_observe_and_orphans_pruned_only_when_asked() {
    let (cfg, prefix) = setup(
        "drift",
        &[
            ("use1", "us-east-1", "prune = false"),
            ("euw1", "eu-west-1", "prune = true"),
            ("aps1", "ap-south-1", "mode = \"observe\""),
        ],
        10,
    );
    create_topic(&cfg.topic, 2).await;
    let (use1, euw1, aps1) = (kms("us-east-1"), kms("eu-west-1"), kms("ap-south-1"));
    let (k1, k1b) = (create_key(&use1).await, create_key(&use1).await);
    let k2 = create_key(&euw1).await;
    let (k3, k3b) = (create_key(&aps1).await, create_key(&aps1).await);
    let a = format!("{prefix}a");
    let stray = format!("{prefix}stray");
    aps1.create_alias(&a, &k3).await.unwrap();
    let p = producer();
    send(&p, &cfg.topic, Some(&a), Some(&event(&a, 1, &[("use1", &k1), ("euw1", &k2), ("aps1", &k3)]))).await;
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    wait_for("converged", Duration::from_secs(60), || async {
        live(&use1, &prefix).await.get(&a) == Some(&k1) && live(&euw1, &prefix).await.get(&a) == Some(&k2)
    })
    .await;
    let scans_before = d.metric("aliassync_scans_total", &[("target", "use1"), ("outcome", "ok")]).await;

    // Behind the daemon's back: re-point in use1, delete in euw1, re-point in aps1, a stray alias everywhere.
    use1.update_alias(&a, &k1b).await.unwrap();
    euw1.delete_alias(&a, None).await.unwrap();
    aps1.update_alias(&a, &k3b).await.unwrap();
    use1.create_alias(&stray, &k1).await.unwrap();
    euw1.create_alias(&stray, &k2).await.unwrap();
    aps1.create_alias(&stray, &k3).await.unwrap();

    // Enforce targets repair right after the scan (and their gauge drops with the repair): the
    // detection counter keeps the evidence. The observe target's gauge stays up.
    wait_for("drift reported by a scan", Duration::from_secs(30), || async {
        d.metric("aliassync_drift_detected_total", &[("target", "use1"), ("kind", "wrong_key")]).await >= 1.0
            && d.metric("aliassync_drift_detected_total", &[("target", "euw1"), ("kind", "missing")]).await >= 1.0
            && d.metric("aliassync_drift_aliases", &[("target", "aps1"), ("kind", "wrong_key")]).await == 1.0
    })
    .await;
    assert!(d.metric("aliassync_scans_total", &[("target", "use1"), ("outcome", "ok")]).await > scans_before);
    assert_eq!(d.metric("aliassync_drift_aliases", &[("target", "use1"), ("kind", "orphan")]).await, 1.0);
    assert_eq!(d.metric("aliassync_drift_aliases", &[("target", "aps1"), ("kind", "orphan")]).await, 1.0);
    // /status names the drifted aliases.
    let st = status(&d).await;
    let aps = st["targets"].as_array().unwrap().iter().find(|t| t["name"] == "aps1").unwrap().clone();
    let names: Vec<&str> =
        aps["drift"]["aliases"].as_array().unwrap().iter().map(|x| x["alias"].as_str().unwrap()).collect();
    assert_eq!(names, vec![a.as_str(), stray.as_str()]);

    // Enforce mode repairs at once; prune deletes the stray only where asked.
    wait_for("repairs", Duration::from_secs(30), || async {
        let (u, e) = (live(&use1, &prefix).await, live(&euw1, &prefix).await);
        u.get(&a) == Some(&k1) && e.get(&a) == Some(&k2) && !e.contains_key(&stray)
    })
    .await;
    // The next scan: use1 keeps only its (unpruned) orphan, euw1 is clean, aps1 still drifts (observe).
    let scans = d.metric("aliassync_scans_total", &[("target", "use1"), ("outcome", "ok")]).await;
    wait_for("another scan", Duration::from_secs(30), || async {
        d.metric("aliassync_scans_total", &[("target", "use1"), ("outcome", "ok")]).await > scans
            && d.metric("aliassync_drift_aliases", &[("target", "euw1")]).await == 0.0
    })
    .await;
    assert_eq!(d.metric("aliassync_drift_aliases", &[("target", "use1"), ("kind", "wrong_key")]).await, 0.0);
    assert_eq!(d.metric("aliassync_drift_aliases", &[("target", "use1"), ("kind", "orphan")]).await, 1.0);
    assert!(live(&use1, &prefix).await.contains_key(&stray), "no prune: the orphan stays");
    let l3 = live(&aps1, &prefix).await;
    assert_eq!(l3.get(&a), Some(&k3b), "observe mode writes nothing");
    assert!(l3.contains_key(&stray));
    assert_eq!(d.metric("aliassync_drift_aliases", &[("target", "aps1"), ("kind", "wrong_key")]).await, 1.0);
    assert_eq!(
        d.metric("aliassync_provider_requests_total", &[("target", "aps1"), ("operation", "update_alias")]).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_exit_codes_and_import_publish_round_trip() {
    let (cfg, prefix) = setup("plan", &[("use1", "us-east-1", ""), ("euw1", "eu-west-1", "")], 300);
    create_topic(&cfg.topic, 2).await;
    let (use1, euw1) = (kms("us-east-1"), kms("eu-west-1"));
    let (k1, k2) = (create_key(&use1).await, create_key(&euw1).await);
    let p = producer();
    let aliases: Vec<String> = (0..5).map(|i| format!("{prefix}p{i}")).collect();
    for a in &aliases {
        send(&p, &cfg.topic, Some(a), Some(&event(a, 1, &[("use1", &k1), ("euw1", &k2)]))).await;
    }
    // Nothing exists yet: drift (missing), exit 2.
    let (code, out, err) = cli(&cfg, &["plan"]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out.matches("  + ").count(), 10, "{out}");
    let (code, out, _) = cli(&cfg, &["plan", "--json", "--target", "use1"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["targets"][0]["missing"], 5);
    assert_eq!(v["in_sync"], false);
    // plan changes nothing.
    assert!(live(&use1, &prefix).await.is_empty());

    for a in &aliases {
        use1.create_alias(a, &k1).await.unwrap();
        euw1.create_alias(a, &k2).await.unwrap();
    }
    let (code, out, err) = cli(&cfg, &["plan"]);
    assert_eq!(code, 0, "in sync: {out}{err}");
    assert!(out.contains("use1: in sync (5 desired)"), "{out}");
    // An unreachable target is an error: exit 1.
    let mut broken = DaemonConfig { ..clone_cfg(&cfg) };
    broken.targets[1].2 = "endpoint = \"http://127.0.0.1:9\"\nrequest_timeout_seconds = 2".into();
    let (code, _, err) = cli(&broken, &["plan"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("euw1"), "{err}");

    // import → publish into an empty topic → the same desired state (plan in sync), idempotent.
    let (code, yaml, err) = cli(&cfg, &["import", "use1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(yaml.matches(&prefix).count(), 5, "{yaml}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &yaml).unwrap();
    let mut fresh = clone_cfg(&cfg);
    fresh.topic = format!("{}-imported", cfg.topic);
    create_topic(&fresh.topic, 2).await;
    let path = file.path().to_str().unwrap();
    let (code, out, err) = cli(&fresh, &["publish", path, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5);
    assert!(read_topic(&fresh.topic).is_empty(), "dry run sends nothing");
    let (code, _, err) = cli(&fresh, &["publish", path]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("published 5 events"), "{err}");
    let (code, out, err) = cli(&fresh, &["plan", "--target", "use1"]);
    assert_eq!(code, 0, "round trip: {out}{err}");
    let (_, _, err) = cli(&fresh, &["publish", path]);
    assert!(err.contains("published 0 events") && err.contains("5 aliases unchanged"), "{err}");
    // A changed file publishes the next revision of the changed alias only.
    let changed = yaml.replacen(&k1, &create_key(&use1).await, 1);
    std::fs::write(file.path(), &changed).unwrap();
    let (code, out, _) = cli(&fresh, &["publish", path, "--dry-run"]);
    assert_eq!(code, 0);
    let ev: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(ev["revision"], json!(2));
    assert_eq!(out.lines().count(), 1);
    // A file naming an unknown target is refused whole.
    std::fs::write(file.path(), format!("aliases:\n  {prefix}x:\n    nope: {k1}\n")).unwrap();
    let (code, _, err) = cli(&fresh, &["publish", path]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown_target"), "{err}");
}

fn clone_cfg(c: &DaemonConfig) -> DaemonConfig {
    DaemonConfig {
        topic: c.topic.clone(),
        group: c.group.clone(),
        prefix: c.prefix.clone(),
        targets: c.targets.clone(),
        extra: c.extra.clone(),
        lease_partitions: c.lease_partitions,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_targets_report_drift_once_and_survive_a_kill() {
    // With 4 lease partitions these four names hash to four different ones (FNV-1a mod 4: 2, 3, 0, 1),
    // so any split between instances gives each of them targets.
    let regions = [("t1", "us-east-1"), ("t2", "eu-west-1"), ("t3", "ap-south-1"), ("t4", "us-west-2")];
    let spec: Vec<(&str, &str, &str)> = regions.iter().map(|(n, r)| (*n, *r, "")).collect();
    let (mut cfg, prefix) = setup("ha", &spec, 10);
    cfg.lease_partitions = 4;
    create_topic(&cfg.topic, 4).await;
    let clients: Vec<_> = regions.iter().map(|(_, r)| kms(r)).collect();
    let mut keys = Vec::new();
    for c in &clients {
        keys.push(create_key(c).await);
    }
    let targets: Vec<(&str, &str)> = regions.iter().zip(&keys).map(|((n, _), k)| (*n, k.as_str())).collect();
    let p = producer();
    for i in 0..10 {
        let a = format!("{prefix}h{i}");
        send(&p, &cfg.topic, Some(&a), Some(&event(&a, 1, &targets))).await;
    }
    let mut a = Daemon::start(&cfg);
    let b = a.again(&cfg);
    a.wait_ready().await;
    b.wait_ready().await;
    wait_for("targets split between the two instances", Duration::from_secs(60), || async {
        let (oa, ob) = (owned(&a).await, owned(&b).await);
        oa.len() + ob.len() == 4 && !oa.is_empty() && !ob.is_empty() && oa.iter().all(|t| !ob.contains(t))
    })
    .await;
    wait_for("converged everywhere", Duration::from_secs(60), || async {
        for c in &clients {
            if live(c, &prefix).await.len() != 10 {
                return false;
            }
        }
        true
    })
    .await;
    // Invalid events: exactly one instance dead-letters each (the owner of its partition's duty).
    for i in 0..6 {
        send(&p, &cfg.topic, Some(&format!("{prefix}bad{i}")), Some("not json")).await;
    }
    let dlq = format!("{}.dlq", cfg.topic);
    wait_for("6 dead letters", Duration::from_secs(30), || async { read_topic(&dlq).len() >= 6 }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(read_topic(&dlq).len(), 6, "each invalid event dead-lettered by one instance only");
    assert_eq!(
        a.metric("aliassync_dead_letters_total", &[("reason", "malformed_json")]).await
            + b.metric("aliassync_dead_letters_total", &[("reason", "malformed_json")]).await,
        6.0
    );

    // Drift in every target: each reported once, by its owner.
    for (c, k) in clients.iter().zip(&keys) {
        c.delete_alias(&format!("{prefix}h0"), None).await.unwrap();
        c.create_alias(&format!("{prefix}orphan"), k).await.unwrap();
    }
    wait_for("each drift reported exactly once", Duration::from_secs(40), || async {
        let mut ok = true;
        for (t, _) in regions {
            let (ma, mb) = (
                a.metric("aliassync_drift_aliases", &[("target", t), ("kind", "orphan")]).await,
                b.metric("aliassync_drift_aliases", &[("target", t), ("kind", "orphan")]).await,
            );
            ok &= ma + mb == 1.0;
        }
        ok
    })
    .await;
    let (ta, tb) = (a.get("/metrics").await.unwrap().1, b.get("/metrics").await.unwrap().1);
    for (t, _) in regions {
        let in_a =
            ta.lines().any(|l| l.starts_with("aliassync_drift_aliases{") && l.contains(&format!("target=\"{t}\"")));
        let in_b =
            tb.lines().any(|l| l.starts_with("aliassync_drift_aliases{") && l.contains(&format!("target=\"{t}\"")));
        assert!(in_a ^ in_b, "{t}: drift gauges come from its owner only");
    }

    // kill -9 one instance: the other takes every target (within the session timeout) and converges.
    let owned_by_a = owned(&a).await;
    a.kill9();
    wait_for("survivor owns all 4", Duration::from_secs(40), || async { owned(&b).await.len() == 4 }).await;
    for i in 10..15 {
        let al = format!("{prefix}h{i}");
        send(&p, &cfg.topic, Some(&al), Some(&event(&al, 1, &targets))).await;
    }
    wait_for("survivor converged the dead one's targets", Duration::from_secs(60), || async {
        for c in &clients {
            let l = live(c, &prefix).await;
            if !(10..15).all(|i| l.contains_key(&format!("{prefix}h{i}"))) || !l.contains_key(&format!("{prefix}h0")) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(!owned_by_a.is_empty());

    // A joining instance takes targets without a full reshuffle: B keeps whatever it does not hand over.
    let before = owned(&b).await;
    let c = b.again(&cfg);
    c.wait_ready().await;
    wait_for("the newcomer owns something", Duration::from_secs(60), || async { !owned(&c).await.is_empty() }).await;
    let (ob, oc) = (owned(&b).await, owned(&c).await);
    assert_eq!(ob.len() + oc.len(), 4, "b {ob:?} c {oc:?}");
    assert!(ob.iter().all(|t| before.contains(t)) && oc.iter().all(|t| !ob.contains(t)));
}
