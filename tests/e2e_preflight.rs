//! Issue 12 (item 3), end to end: the pre-flight before a write (DESIGN §2.9). The daemon binary + real Kafka +
//! moto (AWS), and the KMS emulator for Alibaba Cloud and Huawei Cloud. A re-point to a key that is missing, not
//! Enabled, or of another spec or usage leaves the alias on its old key and is dead-lettered with the reason
//! `preflight_key_missing` / `preflight_key_disabled` / `preflight_key_mismatch`; a healthy re-point works, and a
//! second one to a key already described costs no DescribeKey. moto itself takes all of these writes (it checks no
//! key state or type), so every refusal here is the daemon's.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aliassync::provider::aws::AwsKms;
use common::*;
use reqwest::Method;
use serde_json::json;

/// One moto target `use1` (us-east-1); `extra` follows the `[reconcile]` table (e.g. a `[safety]` table).
async fn setup(name: &str, extra: &str) -> (DaemonConfig, String, AwsKms) {
    let id = unique(name);
    let cfg = DaemonConfig { extra: extra.into(), ..DaemonConfig::for_id(&id, &[("use1", "us-east-1", "")]) };
    create_topic(&cfg.topic, 2).await;
    let prefix = cfg.prefix.clone();
    (cfg, prefix, kms("us-east-1"))
}

/// A moto key of this spec and usage.
async fn key_of(kms: &AwsKms, spec: &str, usage: &str) -> String {
    let v = kms.call("CreateKey", &json!({"KeySpec": spec, "KeyUsage": usage})).await.unwrap();
    v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
}

async fn disabled_key(kms: &AwsKms) -> String {
    let k = create_key(kms).await;
    kms.call("DisableKey", &json!({"KeyId": k})).await.unwrap();
    k
}

async fn key_pending_deletion(kms: &AwsKms) -> String {
    let k = create_key(kms).await;
    kms.call("ScheduleKeyDeletion", &json!({"KeyId": k, "PendingWindowInDays": 7})).await.unwrap();
    k
}

/// A well-formed key id that no key has.
fn missing_key() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n % (1 << 48))
}

/// The dead letters of `topic` by alias: (reason header, code header, value as JSON).
fn dead_letters(topic: &str) -> HashMap<String, (String, String, serde_json::Value)> {
    read_topic(&format!("{topic}.dlq"))
        .into_iter()
        .map(|r| {
            let h = |k: &str| r.headers.get(k).cloned().unwrap_or_default();
            let v = serde_json::from_str(r.value.as_deref().unwrap_or("null")).unwrap();
            (r.key.unwrap_or_default(), (h("aliassync.reason"), h("aliassync.code"), v))
        })
        .collect()
}

async fn describes(d: &Daemon, target: &str) -> f64 {
    d.metric("aliassync_provider_requests_total", &[("target", target), ("operation", "describe_key")]).await
}

async fn writes(d: &Daemon, target: &str) -> f64 {
    let mut n = 0.0;
    for op in ["create_alias", "update_alias", "delete_alias"] {
        n += d.metric("aliassync_provider_requests_total", &[("target", target), ("operation", op)]).await;
    }
    n
}

/// Creates the aliases on `k` through the daemon (revision 1) and waits until they exist.
async fn create_all(d: &Daemon, cfg: &DaemonConfig, kms: &AwsKms, aliases: &[String], k: &str) {
    let p = producer();
    for a in aliases {
        send(&p, &cfg.topic, Some(a), Some(&event(a, 1, &[("use1", k)]))).await;
    }
    wait_for("the aliases created", Duration::from_secs(60), || async {
        let l = live(kms, &cfg.prefix).await;
        aliases.iter().all(|a| l.get(a).map(String::as_str) == Some(k))
    })
    .await;
    assert_eq!(writes(d, "use1").await, aliases.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repoints_to_a_disabled_a_pending_deletion_or_a_missing_key_leave_the_alias_and_are_dead_lettered() {
    let (cfg, prefix, kms) = setup("pf-state", "").await;
    let k1 = create_key(&kms).await;
    let (off, dying, gone) = (disabled_key(&kms).await, key_pending_deletion(&kms).await, missing_key());
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    let aliases: Vec<String> = ["off", "dying", "gone"].iter().map(|n| format!("{prefix}{n}")).collect();
    create_all(&d, &cfg, &kms, &aliases, &k1).await;

    let p = producer();
    for (a, k) in aliases.iter().zip([&off, &dying, &gone]) {
        send(&p, &cfg.topic, Some(a), Some(&event(a, 2, &[("use1", k)]))).await;
    }
    // Missing and not Enabled are retried first (as the cloud's NotFound / invalid state would be), then dead-lettered.
    wait_for("three dead letters", Duration::from_secs(60), || async { dead_letters(&cfg.topic).len() == 3 }).await;
    let letters = dead_letters(&cfg.topic);
    for (a, k, reason) in [
        (&aliases[0], &off, "preflight_key_disabled"),
        (&aliases[1], &dying, "preflight_key_disabled"),
        (&aliases[2], &gone, "preflight_key_missing"),
    ] {
        let (got_reason, code, value) = &letters[a.as_str()];
        assert_eq!((got_reason.as_str(), code.as_str()), (reason, reason), "{a}");
        assert_eq!((value["reason"].as_str(), value["key_id"].as_str()), (Some(reason), Some(k.as_str())), "{value}");
        assert_eq!((value["target"].as_str(), value["action"].as_str()), (Some("use1"), Some("update")), "{value}");
    }
    assert!(letters[aliases[1].as_str()].2["message"].as_str().unwrap().contains("PendingDeletion"));
    let l = live(&kms, &prefix).await;
    assert!(aliases.iter().all(|a| l.get(a) == Some(&k1)), "every alias stays on its old key: {l:?}");
    assert_eq!(writes(&d, "use1").await, 3.0, "the three creates; no write to a bad key");
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "preflight_key_disabled")]).await, 2.0);
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "preflight_key_missing")]).await, 1.0);
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "preflight_key_mismatch")]).await, 0.0);
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "reconcile_failed")]).await, 0.0);
    let st = status(&d).await;
    let failures = st["targets"][0]["recent_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{st}");
    // The retries re-asked only once each "no" expired (2 s): a handful of DescribeKey calls, not one per retry.
    let n = describes(&d, "use1").await;
    eprintln!(
        "figure: 3 refused re-points (5 consistency retries each): {n} DescribeKey calls, the creates' one included"
    );
    assert!(n <= 12.0, "{n} DescribeKey calls");

    // Fixed by the operator (the key enabled again), the next change of the alias applies at once (a replay of
    // the same desired key changes nothing, so the operator moves it away and back, as `publish` would).
    kms.call("EnableKey", &json!({"KeyId": off})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    send(&p, &cfg.topic, Some(&aliases[0]), Some(&event(&aliases[0], 3, &[("use1", &k1)]))).await;
    send(&p, &cfg.topic, Some(&aliases[0]), Some(&event(&aliases[0], 4, &[("use1", &off)]))).await;
    wait_for("re-pointed to the enabled key", Duration::from_secs(30), || async {
        live(&kms, &prefix).await.get(&aliases[0]) == Some(&off)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repoint_from_a_symmetric_key_to_an_hmac_or_asymmetric_key_is_refused_as_a_mismatch() {
    let (cfg, prefix, kms) = setup("pf-mismatch", "").await;
    let k1 = create_key(&kms).await;
    let others = [
        key_of(&kms, "HMAC_256", "GENERATE_VERIFY_MAC").await,
        key_of(&kms, "RSA_2048", "SIGN_VERIFY").await,
        // Same usage, other spec: an RSA key cannot decrypt what the symmetric key encrypted.
        key_of(&kms, "RSA_2048", "ENCRYPT_DECRYPT").await,
    ];
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    let aliases: Vec<String> = ["hmac", "rsa-sign", "rsa-enc"].iter().map(|n| format!("{prefix}{n}")).collect();
    create_all(&d, &cfg, &kms, &aliases, &k1).await;
    let p = producer();
    for (a, k) in aliases.iter().zip(&others) {
        send(&p, &cfg.topic, Some(a), Some(&event(a, 2, &[("use1", k)]))).await;
    }
    wait_for("three dead letters", Duration::from_secs(60), || async { dead_letters(&cfg.topic).len() == 3 }).await;
    let letters = dead_letters(&cfg.topic);
    for a in &aliases {
        let (reason, code, value) = &letters[a.as_str()];
        assert_eq!((reason.as_str(), code.as_str()), ("preflight_key_mismatch", "preflight_key_mismatch"), "{a}");
        let msg = value["message"].as_str().unwrap();
        assert!(msg.contains("SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT"), "names the live key's spec and usage: {msg}");
    }
    assert!(letters[aliases[0].as_str()].2["message"].as_str().unwrap().contains("HMAC_256/GENERATE_VERIFY_MAC"));
    let l = live(&kms, &prefix).await;
    assert!(aliases.iter().all(|a| l.get(a) == Some(&k1)), "every alias stays on its old key: {l:?}");
    assert_eq!(writes(&d, "use1").await, 3.0, "the three creates only");
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "preflight_key_mismatch")]).await, 3.0);
    // A mismatch is permanent (spec and usage never change): dead-lettered at once, each new key described once.
    assert_eq!(describes(&d, "use1").await, 4.0, "k1 once (at the creates) and each new key once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_repoint_works_and_a_second_repoint_to_the_same_key_costs_no_describe() {
    let (cfg, prefix, kms) = setup("pf-healthy", "").await;
    let (k1, k2) = (create_key(&kms).await, create_key(&kms).await);
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    create_all(&d, &cfg, &kms, &[a.clone(), b.clone()], &k1).await;
    assert_eq!(describes(&d, "use1").await, 1.0, "two creates on one key: one DescribeKey");
    let p = producer();
    send(&p, &cfg.topic, Some(&a), Some(&event(&a, 2, &[("use1", &k2)]))).await;
    wait_for("a re-pointed", Duration::from_secs(30), || async { live(&kms, &prefix).await.get(&a) == Some(&k2) })
        .await;
    assert_eq!(describes(&d, "use1").await, 2.0, "the new key; the old one is known from the creates");
    send(&p, &cfg.topic, Some(&b), Some(&event(&b, 2, &[("use1", &k2)]))).await;
    wait_for("b re-pointed", Duration::from_secs(30), || async { live(&kms, &prefix).await.get(&b) == Some(&k2) })
        .await;
    assert_eq!(describes(&d, "use1").await, 2.0, "the second re-point to k2 costs no DescribeKey");
    // And back: both keys known, no call.
    send(&p, &cfg.topic, Some(&a), Some(&event(&a, 3, &[("use1", &k1)]))).await;
    wait_for("a back on k1", Duration::from_secs(30), || async { live(&kms, &prefix).await.get(&a) == Some(&k1) })
        .await;
    assert_eq!(describes(&d, "use1").await, 2.0);
    assert_eq!(
        d.metric("aliassync_provider_requests_total", &[("target", "use1"), ("operation", "update_alias")]).await,
        3.0
    );
    // A delete needs no pre-flight.
    send(&p, &cfg.topic, Some(&b), None).await;
    wait_for("b deleted", Duration::from_secs(30), || async { !live(&kms, &prefix).await.contains_key(&b) }).await;
    assert_eq!(describes(&d, "use1").await, 2.0);
    assert!(dead_letters(&cfg.topic).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_preflight_off_the_write_goes_to_the_cloud_unchecked() {
    let (cfg, prefix, kms) = setup("pf-off", "[safety]\npreflight = false\n").await;
    let k1 = create_key(&kms).await;
    let off = disabled_key(&kms).await;
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    let a = format!("{prefix}a");
    create_all(&d, &cfg, &kms, std::slice::from_ref(&a), &k1).await;
    send(&producer(), &cfg.topic, Some(&a), Some(&event(&a, 2, &[("use1", &off)]))).await;
    // moto takes a disabled key (real AWS does too): exactly what the pre-flight exists to stop.
    wait_for("re-pointed, unchecked", Duration::from_secs(30), || async {
        live(&kms, &prefix).await.get(&a) == Some(&off)
    })
    .await;
    assert_eq!(describes(&d, "use1").await, 0.0);
}

// ----- Alibaba Cloud and Huawei Cloud, on the KMS emulator -----

const ALI_AK: &str = "LTAI5tFakeAccessKeyId01";
const HW_PROJECT: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alibaba_and_huawei_refuse_disabled_pending_deletion_and_missing_keys_and_take_healthy_ones() {
    let emu = Emulator::start();
    let id = unique("pf-clouds");
    let ep = format!("endpoint = \"{}\"\n", emu.url);
    let targets = [
        ("ali", "cn-hangzhou", format!("{ep}provider = \"alibaba\"\ncredentials = \"env:E2E_ALI\"\n")),
        (
            "hw",
            "cn-north-4",
            format!("{ep}provider = \"huawei\"\ncredentials = \"env:E2E_HW\"\nproject_id = \"{HW_PROJECT}\"\n"),
        ),
    ];
    let t: Vec<(&str, &str, &str)> = targets.iter().map(|(n, r, x)| (*n, *r, x.as_str())).collect();
    let cfg = DaemonConfig::for_id(&id, &t);
    create_topic(&cfg.topic, 2).await;
    let prefix = cfg.prefix.clone();
    // Keys per cloud: [k1, to be disabled, to be scheduled for deletion, healthy k2].
    let mut keys: Vec<[String; 4]> = Vec::new();
    for (cloud, who, region) in [("alibaba", ALI_AK, "cn-hangzhou"), ("huawei", HW_PROJECT, "cn-north-4")] {
        let mut k = Vec::new();
        for _ in 0..4 {
            k.push(emu.key(cloud, who, region).await);
        }
        let scope = if cloud == "huawei" { "project" } else { "access_key_id" };
        for (key, state) in [(&k[1], "Disabled"), (&k[2], "PendingDeletion")] {
            let body = json!({"cloud": cloud, scope: who, "region": region, "key_id": key, "state": state});
            emu.admin(Method::POST, "keys", Some(body)).await;
        }
        keys.push(k.try_into().unwrap());
    }
    let (ali, hw) = (&keys[0], &keys[1]);
    let missing_ali = "key-hzz0000000000000000000".to_string();
    let missing_hw = missing_key();
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    let p = producer();
    let names = ["off", "dying", "gone", "fine"];
    let alias = |n: &str| format!("{prefix}{n}");
    for n in names {
        let a = alias(n);
        send(&p, &cfg.topic, Some(&a), Some(&event(&a, 1, &[("ali", &ali[0]), ("hw", &hw[0])]))).await;
    }
    let on = |cloud: &'static str, region: &'static str| {
        let (emu, prefix) = (&emu, prefix.clone());
        async move { emu.aliases(cloud, region, &prefix).await }
    };
    wait_for("created in both clouds", Duration::from_secs(60), || async {
        let (a, h) = (on("alibaba", "cn-hangzhou").await, on("huawei", "cn-north-4").await);
        names.iter().all(|n| a.get(&alias(n)) == Some(&ali[0]) && h.get(&alias(n)) == Some(&hw[0]))
    })
    .await;
    let repoints = [
        ("off", &ali[1], &hw[1]),
        ("dying", &ali[2], &hw[2]),
        ("gone", &missing_ali, &missing_hw),
        ("fine", &ali[3], &hw[3]),
    ];
    for (n, ka, kh) in repoints {
        let a = alias(n);
        send(&p, &cfg.topic, Some(&a), Some(&event(&a, 2, &[("ali", ka), ("hw", kh)]))).await;
    }
    // Each alias's dead letters are keyed by alias: both targets' letters for one alias, read as a list.
    let letters = || {
        read_topic(&format!("{}.dlq", cfg.topic))
            .into_iter()
            .map(|r| {
                let h = |k: &str| r.headers.get(k).cloned().unwrap_or_default();
                (r.key.unwrap_or_default(), h("aliassync.target"), h("aliassync.reason"))
            })
            .collect::<Vec<_>>()
    };
    wait_for("six dead letters", Duration::from_secs(60), || async { letters().len() == 6 }).await;
    let mut got = letters();
    got.sort();
    let mut want: Vec<(String, String, String)> = Vec::new();
    for (n, reason) in
        [("off", "preflight_key_disabled"), ("dying", "preflight_key_disabled"), ("gone", "preflight_key_missing")]
    {
        for t in ["ali", "hw"] {
            want.push((alias(n), t.into(), reason.into()));
        }
    }
    want.sort();
    assert_eq!(got, want);
    let (a, h) = (on("alibaba", "cn-hangzhou").await, on("huawei", "cn-north-4").await);
    for n in ["off", "dying", "gone"] {
        assert_eq!((a.get(&alias(n)), h.get(&alias(n))), (Some(&ali[0]), Some(&hw[0])), "{n} stays on its old key");
    }
    assert_eq!((a.get(&alias("fine")), h.get(&alias("fine"))), (Some(&ali[3]), Some(&hw[3])), "healthy re-point");
    // One re-point written per cloud (the healthy one); the refused ones never reached the cloud.
    let ali_calls = emu.calls("alibaba", "cn-hangzhou").await;
    let hw_calls = emu.calls("huawei", "cn-north-4").await;
    assert_eq!(ali_calls.get("UpdateAlias").map(|c| c.0), Some(1), "{ali_calls:?}");
    assert_eq!(hw_calls.get("AssociateAlias").map(|c| c.0), Some(1), "{hw_calls:?}");
    // The pre-flight's reads are the clouds' own describe calls, counted by the daemon as describe_key.
    assert!(ali_calls.get("DescribeKey").is_some_and(|c| c.0 >= 5), "{ali_calls:?}");
    assert!(hw_calls.get("ListKeyDetail").is_some_and(|c| c.0 >= 5), "{hw_calls:?}");
    for (t, calls, op) in [("ali", &ali_calls, "DescribeKey"), ("hw", &hw_calls, "ListKeyDetail")] {
        assert_eq!(describes(&d, t).await, calls[op].0 as f64, "{t}");
    }
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "preflight_key_disabled")]).await, 4.0);
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "preflight_key_missing")]).await, 2.0);
}
