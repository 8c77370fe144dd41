//! Alibaba Cloud credentials end to end, against the KMS emulator's STS and ECS metadata (whose answers the
//! official `alibabacloud-credentials` library accepts: tests/sdk/test_alibaba_credentials.py):
//! `check-config` assumes a role (with an ExternalId) on static keys and prints whom it acts as, never a secret;
//! the daemon on `credentials = "default"` (ECS RAM role metadata) + a role, with sessions that live 45 s, keeps
//! applying events across refreshes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const ROLE_ACCOUNT: &str = "2222222222222222";
const ROLE_ARN: &str = "acs:ram::2222222222222222:role/aliassync-kms";
const EXTERNAL_ID: &str = "xid-e2e-0123456789";
const ALI_AK: &str = "LTAI5tFakeAccessKeyId01";
const ALI_SK: &str = "FakeAccessKeySecret0123456789abcd";
const EXPIRY: &str = "aliassync_credentials_expiry_timestamp_seconds";

/// The emulator, with the role's ExternalId required by its trust policy.
fn start_emu(extra: &[&str]) -> Emulator {
    let xid = format!("{ROLE_ARN}={EXTERNAL_ID}");
    let mut args = vec!["--alibaba-role-external-id", xid.as_str()];
    args.extend_from_slice(extra);
    Emulator::start_with(&args)
}

/// A key in the role's account.
async fn role_key(emu: &Emulator) -> String {
    emu.key_in("alibaba", "account", ROLE_ACCOUNT, "cn-hangzhou").await
}

fn target(emu: &Emulator, more: &str) -> String {
    format!("[targets.ali]\nprovider = \"alibaba\"\nregion = \"cn-hangzhou\"\nendpoint = \"{}\"\n{more}\n", emu.url)
}

/// `aliassync check-config` on a config whose Kafka is never contacted; returns (code, stdout, stderr).
fn check_config(dir: &Path, targets: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let config = dir.join("aliassync.toml");
    let text = config_text("127.0.0.1:9", "t", "g", "alias/app/x/", 6, free_port(), "", targets);
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aliassync"));
    cmd.arg("--config").arg(&config).arg("check-config").env("HOME", dir);
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

#[test]
fn check_config_assumes_the_role_and_prints_its_identity_never_a_secret() {
    let emu = start_emu(&[]);
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        ("E2E_ALI_ACCESS_KEY_ID", ALI_AK),
        ("E2E_ALI_SECRET_ACCESS_KEY", ALI_SK),
        ("E2E_XID", EXTERNAL_ID),
        ("E2E_BADXID", "not-the-id"),
    ];
    let role = |xid: &str, sts: &str| {
        target(
            &emu,
            &format!(
                "credentials = \"env:E2E_ALI\"\nrole_arn = \"{ROLE_ARN}\"\nexternal_id = \"env:{xid}\"\n\
                 role_session_name = \"e2e-check\"\nsts_endpoint = \"{sts}\"\n"
            ),
        )
    };

    let (code, out, err) = check_config(dir.path(), &role("E2E_XID", &emu.url), &keys);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let want = format!(
        "target ali: acts as acs:ram::{ROLE_ACCOUNT}:assumed-role/aliassync-kms/e2e-check (account {ROLE_ACCOUNT})"
    );
    assert!(out.contains(&want), "{out}");
    assert!(out.contains(&format!("role {ROLE_ARN}")) && out.contains(", expires "), "{out}");
    for secret in [ALI_SK, EXTERNAL_ID] {
        assert!(!out.contains(secret) && !err.contains(secret), "a secret is printed:\n{out}\n{err}");
    }

    // The role's trust policy wants another ExternalId: refused, named, and still no secret.
    let (code, out, err) = check_config(dir.path(), &role("E2E_BADXID", &emu.url), &keys);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("target ali:") && err.contains("NoPermission") && err.contains(ROLE_ARN), "{err}");
    assert!(!err.contains("not-the-id") && !err.contains(ALI_SK), "{err}");

    // No STS there: the target and the URL are named.
    let (code, _, err) = check_config(dir.path(), &role("E2E_XID", "http://127.0.0.1:1"), &keys);
    assert_ne!(code, 0);
    assert!(err.contains("target ali:") && err.contains("http://127.0.0.1:1"), "{err}");
}

#[test]
fn check_config_default_chain_reads_ecs_metadata() {
    let emu = start_emu(&[]);
    let dir = tempfile::tempdir().unwrap();
    let t = target(&emu, &format!("credentials = \"default\"\nsts_endpoint = \"{}\"\n", emu.url));
    let env = [("ALIASSYNC_ALIBABA_METADATA_ENDPOINT", emu.url.as_str()), ("ALIBABA_CLOUD_ACCESS_KEY_ID", "")];
    let (code, out, err) = check_config(dir.path(), &t, &env);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("acts as acs:ram::1234567890123456:assumed-role/aliassync-ecs/"), "{out}");

    // The environment comes first in the chain, as in the official library.
    let env = [("ALIBABA_CLOUD_ACCESS_KEY_ID", ALI_AK), ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ALI_SK)];
    let (code, out, err) = check_config(dir.path(), &t, &env);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("(account 1234567890123456)") && out.contains(":user/"), "{out}");
}

/// The chain's other sources against the emulator: an OIDC role (RRSA, STS AssumeRoleWithOIDC) from the
/// environment, and `~/.alibabacloud/credentials.ini` when nothing comes before it.
#[test]
fn check_config_default_chain_takes_an_oidc_role_then_the_credentials_file() {
    let emu = start_emu(&[]);
    let dir = tempfile::tempdir().unwrap();
    let t = target(&emu, &format!("credentials = \"default\"\nsts_endpoint = \"{}\"\n", emu.url));
    let token = dir.path().join("oidc-token");
    // A service account token's shape (header.payload.signature); its content is a secret like any token.
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3BzOmFsaWFzc3luYyJ9.c2lnbmF0dXJl";
    std::fs::write(&token, jwt).unwrap();
    let token = token.display().to_string();
    let no_metadata = ("ALIASSYNC_ALIBABA_METADATA_ENDPOINT", "http://127.0.0.1:1");
    let env = [
        ("ALIBABA_CLOUD_ROLE_ARN", ROLE_ARN),
        ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "acs:ram::2222222222222222:oidc-provider/ack-rrsa-e2e"),
        ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", token.as_str()),
        ("ALIBABA_CLOUD_ROLE_SESSION_NAME", "e2e-oidc"),
        ("ALIASSYNC_ALIBABA_STS_ENDPOINT", emu.url.as_str()),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", ""),
        no_metadata,
    ];
    let (code, out, err) = check_config(dir.path(), &t, &env);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&format!("acts as acs:ram::{ROLE_ACCOUNT}:assumed-role/aliassync-kms/e2e-oidc")), "{out}");
    assert!(!out.contains(jwt) && !err.contains(jwt), "the OIDC token is printed");

    // No environment, no OIDC, no CLI profile: the credentials file (HOME is the temp dir).
    let ini = dir.path().join(".alibabacloud");
    std::fs::create_dir_all(&ini).unwrap();
    std::fs::write(
        ini.join("credentials.ini"),
        format!("[default]\ntype = access_key\naccess_key_id = {ALI_AK}\naccess_key_secret = {ALI_SK}\n"),
    )
    .unwrap();
    let (code, out, err) = check_config(dir.path(), &t, &[("ALIBABA_CLOUD_ACCESS_KEY_ID", ""), no_metadata]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("(account 1234567890123456)") && out.contains(":user/"), "{out}");
    assert!(!out.contains(ALI_SK) && !err.contains(ALI_SK), "the secret is printed");
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// ECS metadata → AssumeRole, sessions of 45 s: events before and after a refresh both land, and the expiry gauge
/// moves forward. Needs the rig's Kafka (`bash tests/support/rig.sh up; source target/rig/env`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_on_ecs_role_plus_assumed_role_keeps_applying_across_refreshes() {
    let emu = start_emu(&["--sts-session-seconds", "45"]);
    let id = unique("alicreds");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let targets = target(
        &emu,
        &format!(
            "credentials = \"default\"\nrole_arn = \"{ROLE_ARN}\"\nexternal_id = \"env:E2E_XID\"\n\
             sts_endpoint = \"{}\"\nrole_duration_seconds = 900\n",
            emu.url
        ),
    );
    let config = dir.path().join("aliassync.toml");
    write(&config, &config_text(&brokers(), &topic, &format!("g-{id}"), &prefix, 6, port, "", &targets));
    let env = [
        ("ALIASSYNC_ALIBABA_METADATA_ENDPOINT", emu.url.clone()),
        ("ALIBABA_CLOUD_IMDSV1_DISABLED", "true".into()),
        ("E2E_XID", EXTERNAL_ID.into()),
        ("HOME", dir.path().display().to_string()),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", String::new()),
        ("RUST_LOG", "info,aliassync=debug".into()),
    ];
    let mut d = Proc::start(dir.path(), &config, port, &env);
    d.wait_ready("on ECS role + assumed role", Duration::from_secs(60)).await;

    let first = d.metric(EXPIRY, &[("target", "ali")]).await;
    assert!(first > now() && first < now() + 60.0, "a 45 s session: expiry {first}, now {}", now());
    let p = producer();
    let (k1, k2) = (role_key(&emu).await, role_key(&emu).await);
    let a1 = format!("{prefix}before");
    send(&p, &topic, Some(&a1), Some(&event(&a1, 1, &[("ali", &k1)]))).await;
    wait_for("alias before the refresh", Duration::from_secs(30), || async {
        emu.aliases("alibaba", "cn-hangzhou", &prefix).await.get(&a1) == Some(&k1)
    })
    .await;

    // Past the first session's expiry: anything applied now used a refreshed session.
    wait_for("the first session to expire", Duration::from_secs(90), || async { now() > first + 1.0 }).await;
    let second = d.metric(EXPIRY, &[("target", "ali")]).await;
    assert!(second > first, "the expiry gauge moved forward: {first} -> {second}");
    let a2 = format!("{prefix}after");
    send(&p, &topic, Some(&a2), Some(&event(&a2, 1, &[("ali", &k2)]))).await;
    send(&p, &topic, Some(&a1), Some(&event(&a1, 2, &[("ali", &k2)]))).await;
    wait_for("aliases after the refresh", Duration::from_secs(30), || async {
        let live = emu.aliases("alibaba", "cn-hangzhou", &prefix).await;
        live.get(&a2) == Some(&k2) && live.get(&a1) == Some(&k2)
    })
    .await;
    assert_eq!(d.metric("aliassync_target_paused", &[("target", "ali")]).await, 0.0, "never paused");
    let logs = d.logs();
    assert!(!logs.contains(EXTERNAL_ID), "the external id is logged");
    d.terminate(Duration::from_secs(40));
}

/// A role the cloud refuses at start (the trust policy wants another ExternalId): the daemon still starts, the
/// target is paused as `credentials_unresolved` with nothing dead-lettered, and once the external id is fixed
/// the refresher's own backoff resolves the role and the target resumes and converges: no SIGHUP, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_role_starts_the_target_paused_and_it_resumes_by_itself_once_the_role_is_granted() {
    let emu = start_emu(&[]);
    let id = unique("alirefused");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let xid = dir.path().join("external-id");
    std::fs::write(&xid, "an-id-the-trust-policy-refuses").unwrap();
    let port = free_port();
    let targets = target(
        &emu,
        &format!(
            "credentials = \"env:E2E_ALI\"\nrole_arn = \"{ROLE_ARN}\"\nexternal_id = \"file:{}\"\nsts_endpoint = \"{}\"\n",
            xid.display(),
            emu.url
        ),
    );
    let config = dir.path().join("aliassync.toml");
    write(&config, &config_text(&brokers(), &topic, &format!("g-{id}"), &prefix, 6, port, "", &targets));
    let env = [
        ("E2E_ALI_ACCESS_KEY_ID", ALI_AK.to_string()),
        ("E2E_ALI_SECRET_ACCESS_KEY", ALI_SK.to_string()),
        ("HOME", dir.path().display().to_string()),
    ];
    let mut d = Proc::start(dir.path(), &config, port, &env);
    d.wait_ready("with a refused role", Duration::from_secs(60)).await;
    let p = producer();
    let key = role_key(&emu).await;
    let alias = format!("{prefix}waits");
    send(&p, &topic, Some(&alias), Some(&event(&alias, 1, &[("ali", &key)]))).await;
    let paused = [("target", "ali"), ("reason", "credentials_unresolved")];
    wait_for("the target paused for its credentials", Duration::from_secs(30), || async {
        d.metric("aliassync_target_paused", &paused).await == 1.0
    })
    .await;
    assert!(
        d.metric("aliassync_credentials_refresh_failures_total", &[("target", "ali"), ("reason", "refused")]).await
            >= 1.0
    );
    assert_eq!(d.metric(EXPIRY, &[("target", "ali")]).await, 0.0, "no session, no expiry");
    assert!(emu.aliases("alibaba", "cn-hangzhou", &prefix).await.is_empty());

    // The trust policy's ExternalId is granted: the next retry of the refresher (backoff ≤ 60 s) resolves it.
    std::fs::write(&xid, EXTERNAL_ID).unwrap();
    let fixed = Instant::now();
    wait_for("the alias after the role was granted", Duration::from_secs(75), || async {
        emu.aliases("alibaba", "cn-hangzhou", &prefix).await.get(&alias) == Some(&key)
    })
    .await;
    eprintln!("converged {:.1} s after the external id was fixed", fixed.elapsed().as_secs_f64());
    assert_eq!(d.metric("aliassync_target_paused", &paused).await, 0.0);
    assert!(d.metric(EXPIRY, &[("target", "ali")]).await > now());
    assert_eq!(d.metric("aliassync_dead_letters_total", &[]).await, 0.0, "a paused target dead-letters nothing");
    let logs = d.logs();
    for secret in [ALI_SK, EXTERNAL_ID, "an-id-the-trust-policy-refuses"] {
        assert!(!logs.contains(secret), "a secret is logged");
    }
    d.terminate(Duration::from_secs(40));
}
