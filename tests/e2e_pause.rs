//! Issue 9 (item 5), end to end: the daemon binary + real Kafka + the KMS emulator. Refused credentials pause
//! the target (no dead letters, `aliassync_target_paused`), a probe resumes it by itself once the cloud accepts
//! again, and SIGHUP (credentials reloaded) probes at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::json;

const N: usize = 10;

/// One AWS target on the emulator, with the shipped default backoff (the rig's 2 s would hide a slow probe).
async fn setup(name: &str, target_extra: &str) -> (Emulator, DaemonConfig, String) {
    let emu = Emulator::start();
    let id = unique(name);
    let prefix = format!("alias/app/{id}/");
    let endpoint = format!("endpoint = \"{}\"\n{target_extra}", emu.url);
    let cfg = DaemonConfig { lease_partitions: 3, ..DaemonConfig::for_id(&id, &[("use1", "us-east-1", &endpoint)]) };
    create_topic(&cfg.topic, 2).await;
    (emu, cfg, prefix)
}

fn default_backoff(text: String) -> String {
    text.replace("backoff_max_ms = 2000", "backoff_max_ms = 60000")
        .replace("backoff_min_ms = 100", "backoff_min_ms = 200")
}

async fn publish(emu: &Emulator, cfg: &DaemonConfig, prefix: &str) {
    let p = producer();
    for i in 0..N {
        let k = emu.key("aws", "AKIDEXAMPLE", "us-east-1").await;
        let a = format!("{prefix}a{i}");
        send(&p, &cfg.topic, Some(&a), Some(&event(&a, 1, &[("use1", &k)]))).await;
    }
}

async fn converged(emu: &Emulator, prefix: &str) -> bool {
    emu.aliases("aws", "us-east-1", prefix).await.len() == N
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_for_30s_pauses_the_target_without_dead_letters_and_it_converges_after() {
    let (emu, cfg, prefix) = setup("pause-expired", "").await;
    let d = Daemon::start_edited(&cfg, default_backoff);
    d.wait_ready().await;
    wait_for("the target listed", Duration::from_secs(30), || async {
        d.metric("aliassync_scans_total", &[("target", "use1"), ("outcome", "ok")]).await >= 1.0
    })
    .await;
    emu.admin(
        Method::POST,
        "faults",
        Some(json!({"cloud": "aws", "errors": [{"code": "ExpiredTokenException", "message": "The security token included in the request is expired"}]})),
    )
    .await;
    publish(&emu, &cfg, &prefix).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let dead = d.metric("aliassync_dead_letters_total", &[("reason", "reconcile_failed")]).await;
    let paused = d.metric("aliassync_target_paused", &[("target", "use1"), ("reason", "credentials_expired")]).await;
    assert_eq!(dead, 0.0, "dead letters while the credentials were refused");
    assert_eq!(paused, 1.0, "aliassync_target_paused{{reason=credentials_expired}}");
    assert!(emu.aliases("aws", "us-east-1", &prefix).await.is_empty());
    let st = status(&d).await;
    assert_eq!(st["targets"][0]["paused"], "credentials_expired", "{st}");
    assert_eq!(st["targets"][0]["state"], "paused", "{st}");
    assert_eq!(d.metric("aliassync_target_state", &[("target", "use1"), ("state", "paused")]).await, 1.0);

    emu.admin(Method::DELETE, "faults", None).await;
    let back = Instant::now();
    wait_for("converged after the cloud accepted again", Duration::from_secs(60), || converged(&emu, &prefix)).await;
    let took = back.elapsed();
    eprintln!("figure: expired token 30 s; converged {:.1} s after the cloud accepted again", took.as_secs_f64());
    assert!(took <= Duration::from_secs(30), "converged {took:?} after the cloud accepted");
    assert_eq!(d.metric("aliassync_target_paused", &[("target", "use1")]).await, 0.0);
    assert_eq!(status(&d).await["targets"][0]["state"], "running");
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "reconcile_failed")]).await, 0.0);
    assert!(d.logs().contains("target paused"), "the pause is logged");
    let logs = d.logs();
    let transitions: Vec<&str> = logs.lines().filter(|l| l.contains("target state")).collect();
    assert!(
        transitions.iter().any(|l| l.contains("\"paused\"") && l.contains("\"running\"")),
        "the transition paused → running is logged: {transitions:#?}"
    );
    assert!(!d.logs().contains("wJalrXUtnFEMI"), "no secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_fixed_credentials_resumes_a_paused_target_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("aws-creds.toml");
    let wrong =
        "access_key_id = \"AKIDUNKNOWN000000000\"\nsecret_access_key = \"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"\n";
    let right = "access_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"\n";
    write(&creds, wrong);
    let (emu, cfg, prefix) = setup("pause-hup", &format!("credentials = \"file:{}\"\n", creds.display())).await;
    let d = Daemon::start_edited(&cfg, default_backoff);
    d.wait_ready().await;
    publish(&emu, &cfg, &prefix).await;
    wait_for("paused for the unknown access key", Duration::from_secs(30), || async {
        d.metric("aliassync_target_paused", &[("target", "use1"), ("reason", "credentials_invalid")]).await == 1.0
    })
    .await;
    // Let the probe back off towards its ceiling (10-20 s between probes), so "at once" is visible.
    tokio::time::sleep(Duration::from_secs(45)).await;
    write(&creds, right);
    let back = Instant::now();
    d.signal("HUP");
    wait_for("converged after SIGHUP", Duration::from_secs(60), || converged(&emu, &prefix)).await;
    let took = back.elapsed();
    eprintln!("figure: SIGHUP with fixed credentials; converged {:.1} s after the signal", took.as_secs_f64());
    assert!(took <= Duration::from_secs(5), "SIGHUP probes at once: converged {took:?} after it");
    assert_eq!(d.metric("aliassync_target_paused", &[("target", "use1")]).await, 0.0);
    assert_eq!(d.metric("aliassync_dead_letters_total", &[("reason", "reconcile_failed")]).await, 0.0);
}
