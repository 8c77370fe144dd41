//! Huawei Cloud credentials end to end (DESIGN §2.8): `check-config` with static base keys + an agency prints
//! the agency (never a secret), an unreachable IAM names the target, and the daemon on `credentials =
//! "default"` (ECS metadata keys) + an agency, with keys that live 45 s, keeps applying events across refreshes.
//! The KMS emulator plays IAM (assume-agency) and the ECS metadata service; tests/sdk/test_huawei_credentials.py
//! proves the official SDK accepts its answers.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const SK: &str = "FakeSecretKey0123456789abcdefghijklmnopq";
const AGENCY: &str = "aliassync_kms";
const DOMAIN: &str = "ops_account";

/// Successful calls of one operation (any scope).
async fn ok_calls(emu: &Emulator, operation: &str) -> u64 {
    let v = emu.admin(reqwest::Method::GET, "calls?cloud=huawei", None).await;
    v["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["operation"] == operation)
        .map(|c| c["ok"].as_u64().unwrap())
        .sum()
}

/// A Huawei target `hw` on the emulator with `credentials` and an agency assumed through `iam`.
fn target(emu: &str, credentials: &str, iam: &str) -> String {
    format!(
        "[targets.hw]\nprovider = \"huawei\"\nregion = \"cn-north-4\"\nendpoint = \"{emu}\"\nproject_id = \"{PROJECT}\"\n\
         credentials = \"{credentials}\"\nagency_name = \"{AGENCY}\"\nagency_domain = \"{DOMAIN}\"\n\
         iam_endpoint = \"{iam}\"\n"
    )
}

/// `aliassync check-config` on a config with `targets` (no Kafka needed); (exit code, stdout, stderr).
fn check_config(targets: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aliassync.toml");
    let text = config_text("127.0.0.1:1", "t", "g", "alias/app/hw/", 6, free_port(), "", targets);
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aliassync"));
    cmd.arg("--config").arg(&config).arg("check-config").env_remove("HUAWEICLOUD_SDK_AK");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const STATIC_KEYS: [(&str, &str); 2] =
    [("E2E_HW_ACCESS_KEY_ID", "HPUAFAKEACCESSKEY0001"), ("E2E_HW_SECRET_ACCESS_KEY", SK)];

/// No secret in `text`: not the base secret, and no session secret or token (the emulator's are 40 and 120
/// random characters; nothing else printed is that long).
fn assert_no_secret(text: &str) {
    assert!(!text.contains(SK), "the base secret leaked: {text}");
    let long = text.split(|c: char| !c.is_ascii_alphanumeric()).find(|w| w.len() >= 40);
    assert!(long.is_none(), "a secret-like string in the output ({long:?}): {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_with_static_keys_and_an_agency_prints_the_agency_and_no_secret() {
    let emu = Emulator::start_with(&[]);
    let (code, out, err) = check_config(&target(&emu.url, "env:E2E_HW", &emu.url), &STATIC_KEYS);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(&format!("target hw: acts as huawei agency {DOMAIN}/{AGENCY} in project {PROJECT}")), "{out}");
    assert!(out.contains("expires "), "the agency's keys expire: {out}");
    assert_no_secret(&format!("{out}{err}"));
    // One assume-agency with the static keys, and the identity was proven by one KMS call with the agency's keys.
    assert_eq!(ok_calls(&emu, "CreateTemporaryAccessKeyByAgency").await, 1);
    assert_eq!(ok_calls(&emu, "ListAliases").await, 1);

    // Wrong base keys: refused by IAM, named with the target; still no secret.
    let wrong = [STATIC_KEYS[0], ("E2E_HW_SECRET_ACCESS_KEY", "not-the-secret")];
    let (code, out, err) = check_config(&target(&emu.url, "env:E2E_HW", &emu.url), &wrong);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("target hw:") && err.contains("APIGW.0301"), "{err}");
    assert!(!format!("{out}{err}").contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_the_target_when_iam_is_unreachable() {
    let emu = Emulator::start_with(&[]);
    // A port nothing listens on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, out, err) = check_config(&target(&emu.url, "env:E2E_HW", &dead), &STATIC_KEYS);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("target hw:"), "{err}");
    assert!(
        err.contains(&format!("IAM assume-agency {DOMAIN}/{AGENCY} at {dead}/v3.0/OS-CREDENTIAL/securitytokens")),
        "{err}"
    );
    assert_no_secret(&format!("{out}{err}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_on_ecs_metadata_and_an_agency_keeps_applying_across_refreshes() {
    // Every key the emulator issues (metadata and agency) lives 45 s.
    let emu = Emulator::start_with(&["--sts-session-seconds", "45"]);
    let id = unique("hwcred");
    let (topic, prefix) = (format!("desired-{id}"), format!("alias/app/{id}/"));
    create_topic(&topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("aliassync.toml");
    let targets = target(&emu.url, "default", &emu.url);
    std::fs::write(&config, config_text(&brokers(), &topic, &format!("g-{id}"), &prefix, 6, port, "", &targets))
        .unwrap();
    let mut d = Proc::start(
        dir.path(),
        &config,
        port,
        &[("ALIASSYNC_HUAWEI_METADATA_ENDPOINT", emu.url.clone()), ("RUST_LOG", "info".into())],
    );
    d.wait_ready("with ECS metadata credentials", Duration::from_secs(60)).await;
    let p = producer();
    let key = emu.key("huawei", PROJECT, "cn-north-4").await;
    let expiry = "aliassync_credentials_expiry_timestamp_seconds";

    let before = format!("{prefix}before");
    send(&p, &topic, Some(&before), Some(&event(&before, 1, &[("hw", &key)]))).await;
    wait_for("the first alias landed", Duration::from_secs(30), || async {
        emu.aliases("huawei", "cn-north-4", "").await.get(&before) == Some(&key)
    })
    .await;
    let first = d.metric(expiry, &[("target", "hw")]).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(first > now && first <= now + 46.0, "45 s keys: expiry {first}, now {now}");

    // Refreshed before expiry (about 34 s in): the gauge moves forward with no restart and no SIGHUP.
    wait_for("the credentials refreshed", Duration::from_secs(60), || async {
        d.metric(expiry, &[("target", "hw")]).await > first
    })
    .await;
    // Past the first keys' expiry: only refreshed keys can work now.
    let wait = first - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0) + 2.0)).await;
    let after = format!("{prefix}after");
    send(&p, &topic, Some(&after), Some(&event(&after, 1, &[("hw", &key)]))).await;
    wait_for("the alias sent after the first keys expired landed", Duration::from_secs(30), || async {
        emu.aliases("huawei", "cn-north-4", "").await.get(&after) == Some(&key)
    })
    .await;
    assert!(d.metric(expiry, &[("target", "hw")]).await > first);
    // The refresh went through metadata and IAM again (at least twice each: start and one refresh).
    assert!(ok_calls(&emu, "GetSecurityKey").await >= 2);
    assert!(ok_calls(&emu, "CreateTemporaryAccessKeyByAgency").await >= 2);
    assert_eq!(d.metric("aliassync_credentials_refresh_failures_total", &[("target", "hw")]).await, 0.0);
    assert_no_secret(&d.logs().replace(&id, ""));
}
