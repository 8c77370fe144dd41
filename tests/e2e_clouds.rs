//! End to end across three clouds: the daemon binary + real Kafka + the KMS emulator serving AWS,
//! Alibaba Cloud and Huawei Cloud wire formats (its fidelity is proven by the official SDKs in tests/sdk).

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::json;

const HW_PROJECT: &str = "0123456789abcdef0123456789abcdef";

struct Clouds {
    emu: Emulator,
    cfg: DaemonConfig,
    prefix: String,
}

/// Four targets in three clouds, all on the emulator: AWS in two regions, Alibaba, Huawei.
async fn setup(name: &str, aws_extra: &str) -> Clouds {
    let emu = Emulator::start();
    let id = unique(name);
    let prefix = format!("alias/app/{id}/");
    let ep = format!("endpoint = \"{}\"\n", emu.url);
    let cfg = DaemonConfig {
        topic: format!("desired-{id}"),
        group: format!("g-{id}"),
        prefix: prefix.clone(),
        targets: vec![
            ("use1".into(), "us-east-1".into(), format!("{ep}{aws_extra}")),
            ("euw1".into(), "eu-west-1".into(), ep.clone()),
            (
                "ali".into(),
                "cn-hangzhou".into(),
                format!("{ep}provider = \"alibaba\"\ncredentials = \"env:E2E_ALI\"\n"),
            ),
            (
                "hw".into(),
                "cn-north-4".into(),
                format!("{ep}provider = \"huawei\"\ncredentials = \"env:E2E_HW\"\nproject_id = \"{HW_PROJECT}\"\n"),
            ),
        ],
        extra: String::new(),
        lease_partitions: 6,
    };
    create_topic(&cfg.topic, 2).await;
    Clouds { emu, cfg, prefix }
}

impl Clouds {
    /// A fresh key per target: (use1, euw1, ali, hw).
    async fn keys(&self) -> [String; 4] {
        [
            self.emu.key("aws", "AKIDEXAMPLE", "us-east-1").await,
            self.emu.key("aws", "AKIDEXAMPLE", "eu-west-1").await,
            self.emu.key("alibaba", "LTAI5tFakeAccessKeyId01", "cn-hangzhou").await,
            self.emu.key("huawei", HW_PROJECT, "cn-north-4").await,
        ]
    }

    async fn live(&self) -> [std::collections::HashMap<String, String>; 4] {
        [
            self.emu.aliases("aws", "us-east-1", &self.prefix).await,
            self.emu.aliases("aws", "eu-west-1", &self.prefix).await,
            self.emu.aliases("alibaba", "cn-hangzhou", &self.prefix).await,
            self.emu.aliases("huawei", "cn-north-4", &self.prefix).await,
        ]
    }

    /// Write calls per target, as the emulator counted them.
    async fn writes(&self) -> [u64; 4] {
        let w = |c: std::collections::HashMap<String, (u64, u64)>| {
            c.iter()
                .filter(|(op, _)| {
                    ["CreateAlias", "UpdateAlias", "AssociateAlias", "DeleteAlias"].contains(&op.as_str())
                })
                .map(|(_, (n, _))| n)
                .sum::<u64>()
        };
        [
            w(self.emu.calls("aws", "us-east-1").await),
            w(self.emu.calls("aws", "eu-west-1").await),
            w(self.emu.calls("alibaba", "cn-hangzhou").await),
            w(self.emu.calls("huawei", "cn-north-4").await),
        ]
    }
}

fn ev(alias: &str, rev: u64, k: &[String; 4]) -> String {
    event(alias, rev, &[("use1", &k[0]), ("euw1", &k[1]), ("ali", &k[2]), ("hw", &k[3])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_four_targets_three_clouds_create_update_delete_one_write_each() {
    let c = setup("clouds", "").await;
    let (k1, k2) = (c.keys().await, c.keys().await);
    let a = format!("{}payments", c.prefix);
    let p = producer();
    let d = Daemon::start(&c.cfg);
    d.wait_ready().await;
    send(&p, &c.cfg.topic, Some(&a), Some(&ev(&a, 1, &k1))).await;
    wait_for("created in 4 targets", Duration::from_secs(30), || async {
        c.live().await.iter().zip(&k1).all(|(l, k)| l.get(&a) == Some(k))
    })
    .await;
    assert_eq!(c.writes().await, [1, 1, 1, 1], "one write per change per target");
    send(&p, &c.cfg.topic, Some(&a), Some(&ev(&a, 2, &k2))).await;
    wait_for("re-pointed in 4 targets", Duration::from_secs(30), || async {
        c.live().await.iter().zip(&k2).all(|(l, k)| l.get(&a) == Some(k))
    })
    .await;
    assert_eq!(c.writes().await, [2, 2, 2, 2]);
    send(&p, &c.cfg.topic, Some(&a), None).await;
    wait_for("deleted in 4 targets", Duration::from_secs(30), || async { c.live().await.iter().all(|l| l.is_empty()) })
        .await;
    assert_eq!(c.writes().await, [3, 3, 3, 3]);
    let hw = c.emu.calls("huawei", "cn-north-4").await;
    assert_eq!(hw.get("AssociateAlias").map(|x| x.0), Some(1), "Huawei re-points with associate: {hw:?}");
    eprintln!("figure: 3 changes x 4 targets = 12 write calls; emulator counts {:?}", c.writes().await);
    for t in ["use1", "euw1", "ali", "hw"] {
        assert_eq!(d.metric("aliassync_reconcile_total", &[("target", t), ("outcome", "ok")]).await, 3.0, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cloud_in_outage_never_slows_the_others_and_converges_after_recovery() {
    let c = setup("outage", "").await;
    let k = c.keys().await;
    c.emu.admin(Method::POST, "faults", Some(json!({"cloud": "huawei", "outage": "drop"}))).await;
    let p = producer();
    let d = Daemon::start(&c.cfg);
    d.wait_ready().await;
    let started = Instant::now();
    for i in 0..20 {
        let a = format!("{}o{i:02}", c.prefix);
        send(&p, &c.cfg.topic, Some(&a), Some(&ev(&a, 1, &k))).await;
    }
    wait_for("the healthy clouds converged", Duration::from_secs(30), || async {
        let l = c.live().await;
        l[..3].iter().all(|m| m.len() == 20)
    })
    .await;
    let healthy = started.elapsed();
    assert!(c.live().await[3].is_empty(), "huawei is down");
    // Healthy targets at full speed: 20 writes at the default 5/s (AWS) take about 3 s, not retries' worth.
    assert!(healthy < Duration::from_secs(15), "healthy targets took {healthy:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = status(&d).await;
    let hw = st["targets"].as_array().unwrap().iter().find(|t| t["name"] == "hw").unwrap().clone();
    assert_eq!(hw["last_listing_unix"], serde_json::Value::Null, "the down target could not even list: {hw}");
    assert_eq!(hw["recent_failures"].as_array().unwrap().len(), 0, "an outage is transient, never dead-lettered");
    c.emu.admin(Method::DELETE, "faults?cloud=huawei", None).await;
    let recovery = Instant::now();
    wait_for("huawei converged after recovery", Duration::from_secs(60), || async { c.live().await[3].len() == 20 })
        .await;
    eprintln!(
        "figure: healthy clouds converged in {healthy:?} during the outage; huawei {:?} after recovery",
        recovery.elapsed()
    );
    assert_eq!(c.writes().await[..3], [20, 20, 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_cloud_is_kept_within_its_quota_and_converges() {
    // The daemon is told 10 writes/s; the cloud only allows 2/s.
    let c = setup("throttle", "rate_limit_per_second = 10\n").await;
    let k = c.keys().await;
    c.emu
        .admin(
            Method::POST,
            "faults",
            Some(json!({"cloud": "aws", "region": "us-east-1", "throttle": {"write": 2}, "throttle_burst": 2})),
        )
        .await;
    let p = producer();
    let d = Daemon::start(&c.cfg);
    d.wait_ready().await;
    let n = 40;
    let started = Instant::now();
    for i in 0..n {
        let a = format!("{}t{i:02}", c.prefix);
        send(&p, &c.cfg.topic, Some(&a), Some(&ev(&a, 1, &k))).await;
    }
    wait_for("the throttled target converged", Duration::from_secs(120), || async { c.live().await[0].len() == n })
        .await;
    let took = started.elapsed();
    let calls = c.emu.calls("aws", "us-east-1").await;
    let (total, throttled) = calls.get("CreateAlias").copied().unwrap();
    let rate = d.metric("aliassync_rate_limit_per_second", &[("target", "use1"), ("class", "write")]).await;
    eprintln!(
        "figure: {n} creates against a 2/s quota took {took:?}; {total} CreateAlias calls, {throttled} throttled \
         ({:.0}%); write rate adapted from 10/s to {rate:.2}/s",
        100.0 * throttled as f64 / total as f64
    );
    assert!(rate < 10.0, "AIMD lowered the rate: {rate}");
    // Without adapting, 10/s against 2/s would be throttled about 80% of the time.
    assert!((throttled as f64) < 0.3 * total as f64, "{throttled} of {total} throttled");
    // The other AWS region has its own bucket and was never slowed.
    assert_eq!(c.live().await[1].len(), n);
    assert_eq!(d.metric("aliassync_rate_limit_per_second", &[("target", "euw1"), ("class", "write")]).await, 5.0);
}

/// The Huawei provider against the emulator's ListAliases, whose `next_marker` is the page's last alias name:
/// 250 aliases over three pages, listed whole; an alias on the last page found and deleted by lookup; and a page
/// walk that stays whole when an alias before the marker is deleted between pages (a numeric offset would skip
/// one).
#[tokio::test]
async fn huawei_listing_follows_name_markers_across_pages() {
    use aliassync::provider::huawei::{AliasPrefix, HuaweiKms};
    use aliassync::provider::KmsAliases;
    let emu = Emulator::start();
    let creds = aliassync::secret::Credentials {
        access_key_id: "HPUAFAKEACCESSKEY0001".into(),
        secret_access_key: aliassync::secret::Secret::new("FakeSecretKey0123456789abcdefghijklmnopq"),
        session_token: None,
    };
    let hw =
        HuaweiKms::new("cn-north-4", Some(&emu.url), HW_PROJECT, AliasPrefix::Keep, creds, Duration::from_secs(10))
            .unwrap();
    let key = emu.key("huawei", HW_PROJECT, "cn-north-4").await;
    let prefix = format!("alias/app/{}/", unique("hwpages"));
    let names: Vec<String> = (0..250).map(|i| format!("{prefix}a{i:03}")).collect();
    for n in &names {
        hw.create_alias(n, &key).await.unwrap();
    }
    let listed = hw.list_aliases(std::slice::from_ref(&prefix)).await.unwrap();
    let got: Vec<&str> = listed.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>(), "every page, in order, once");
    let pages = emu.calls("huawei", "cn-north-4").await.get("ListAliases").copied().unwrap().0;
    assert_eq!(pages, 3, "100 + 100 + 50");

    // On the third page: looked up by listing, then deleted with the key found.
    assert_eq!(hw.get_alias(&names[240]).await.unwrap(), Some(key.clone()));
    hw.delete_alias(&names[240], None).await.unwrap();
    assert_eq!(hw.get_alias(&names[240]).await.unwrap(), None);
    let e = hw.delete_alias(&names[240], None).await.unwrap_err();
    assert_eq!(e.class, aliassync::provider::ErrorClass::NotFound, "absent on lookup: already gone");

    // An alias of page 1 deleted between two pages: the name marker still resumes right after page 1's last name,
    // so page 2 starts where it did (an offset marker would now skip names[100]).
    let page = |marker: Option<String>| {
        let hw = &hw;
        async move {
            let mut q = vec![("limit", "100".to_string())];
            q.extend(marker.map(|m| ("marker", m)));
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            hw.call(reqwest::Method::GET, "aliases", &q, None).await.unwrap()
        }
    };
    let first = page(None).await;
    let marker = first["page_info"]["next_marker"].as_str().unwrap().to_string();
    hw.delete_alias(&names[5], Some(&key)).await.unwrap();
    let second = page(Some(marker)).await;
    let ours: Vec<&str> = second["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["alias"].as_str())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(ours.first().copied(), Some(names[100].as_str()));
}
