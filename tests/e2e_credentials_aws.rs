//! End to end: AWS credentials the way the AWS SDK resolves them (DESIGN §2.8), against real peers: moto's STS
//! (AssumeRole with an external id, GetCallerIdentity), a shared config file whose profile runs a
//! `credential_process`, and AWS's own EC2 instance metadata mock (IMDSv2). Each daemon or `check-config` is a
//! child process with its own environment: no test changes this process's environment.
//! Run through `bash tests/run.sh` (it starts Kafka and moto and exports their addresses).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const EXTERNAL_ID: &str = "ext-id-Wq93xTr";
/// How every session token moto hands out begins.
const MOTO_TOKEN_PREFIX: &str = "FQoGZXIvYXdzE";

/// The daemon binary with no AWS setting of the caller's: no `AWS_*` variable, and empty shared config and
/// credentials files in `dir` (so `~/.aws` of whoever runs the tests is never read).
fn aliassync(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aliassync"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let (config, credentials) = (dir.join("aws-config"), dir.join("aws-credentials"));
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    if !credentials.exists() {
        std::fs::write(&credentials, "").unwrap();
    }
    cmd.env("AWS_CONFIG_FILE", config).env("AWS_SHARED_CREDENTIALS_FILE", credentials).env_remove("RUST_LOG");
    cmd
}

/// A config with these `[targets.*]` tables; Kafka is never contacted by `check-config`.
fn write_config(dir: &Path, brokers: &str, topic: &str, port: u16, targets: &str) -> std::path::PathBuf {
    let path = dir.join("aliassync.toml");
    std::fs::write(&path, config_text(brokers, topic, &format!("g-{topic}"), "alias/app/", 6, port, "", targets))
        .unwrap();
    path
}

/// `aliassync` with the static base keys (`env:E2E_AWS`) and the role's external id of the role tests.
fn with_role_base(dir: &Path) -> Command {
    let mut cmd = aliassync(dir);
    cmd.env("E2E_AWS_ACCESS_KEY_ID", KEY_ID)
        .env("E2E_AWS_SECRET_ACCESS_KEY", SECRET)
        .env("E2E_EXTERNAL_ID", EXTERNAL_ID);
    cmd
}

fn check_config(cmd: &mut Command, config: &Path) -> (Option<i32>, String, String) {
    let out: Output = cmd.args(["check-config", "--config"]).arg(config).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows a secret ({s}):\n{text}");
    }
}

/// The sessions moto's STS handed out under this session name (from moto's state dump).
async fn moto_sessions(session_name: &str) -> Vec<serde_json::Value> {
    let url = format!("{}/moto-api/data.json", moto_url());
    let state: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    state["sts"]["AssumedRole"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["session_name"] == session_name)
        .cloned()
        .collect()
}

/// Static keys with a role in another account on top: check-config assumes it at moto's STS (with the external
/// id) and prints the assumed-role ARN GetCallerIdentity gives for the session, not the keys' own identity.
#[tokio::test]
async fn check_config_assumes_the_role_and_prints_the_assumed_identity_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let session = unique("e2e-check");
    let targets = format!(
        "[targets.roled]\nprovider = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{moto}\"\ncredentials = \"env:E2E_AWS\"\n\
         role_arn = \"arn:aws:iam::111122223333:role/aliassync-e2e\"\nexternal_id = \"env:E2E_EXTERNAL_ID\"\n\
         role_session_name = \"{session}\"\nrole_duration_seconds = 900\nsts_endpoint = \"{moto}\"\n",
        moto = moto_url()
    );
    let config = write_config(dir.path(), "127.0.0.1:9", "t", free_port(), &targets);
    let (code, out, err) = check_config(&mut with_role_base(dir.path()), &config);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            "target roled: acts as arn:aws:sts::111122223333:assumed-role/aliassync-e2e/{session} \
             (account 111122223333) (static keys env:E2E_AWS, role arn:aws:iam::111122223333:role/aliassync-e2e, \
             expires "
        )),
        "{out}"
    );
    // One session, assumed with the external id; its keys never shown.
    let sessions = moto_sessions(&session).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["external_id"], EXTERNAL_ID);
    let (secret, token) =
        (sessions[0]["secret_access_key"].as_str().unwrap(), sessions[0]["session_token"].as_str().unwrap());
    assert_no_secret("check-config", &format!("{out}{err}"), &[SECRET, EXTERNAL_ID, secret, token, MOTO_TOKEN_PREFIX]);
}

/// An STS that does not answer: check-config names the target and the URL, exits 1, shows no secret.
#[test]
fn check_config_with_an_unreachable_sts_names_the_target_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "[targets.nosts]\nprovider = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\ncredentials = \"env:E2E_AWS\"\n\
         role_arn = \"arn:aws:iam::111122223333:role/aliassync-e2e\"\nexternal_id = \"env:E2E_EXTERNAL_ID\"\n\
         sts_endpoint = \"http://127.0.0.1:9\"\n",
        moto_url()
    );
    let config = write_config(dir.path(), "127.0.0.1:9", "t", free_port(), &targets);
    let t0 = Instant::now();
    let (code, out, err) = check_config(&mut with_role_base(dir.path()), &config);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("target nosts: cannot resolve credentials"), "{err}");
    assert!(
        err.contains("http://127.0.0.1:9") && err.contains("arn:aws:iam::111122223333:role/aliassync-e2e"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    assert_no_secret("check-config", &format!("{out}{err}"), &[SECRET, EXTERNAL_ID]);
}

/// A `credential_process` that hands out keys expiring 40 s later, a new key each run, and logs each run's time.
fn credential_process(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("creds.sh");
    let runs = dir.join("runs");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\ndate +%s.%N >> '{runs}'\nn=$(wc -l < '{runs}')\nexp=$(date -u -d '+40 seconds' +%Y-%m-%dT%H:%M:%SZ)\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"ASIAPROC%04d\", \"SecretAccessKey\": \"procSecret-%d-Zk3\", \
             \"SessionToken\": \"procToken-%d-Yq8\", \"Expiration\": \"%s\"}}\\n' \"$n\" \"$n\" \"$n\" \"$exp\"\n",
            runs = runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn runs(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The daemon, killed on drop (its log printed if the test fails).
struct Running {
    child: std::process::Child,
    log: std::path::PathBuf,
    port: u16,
}

impl Running {
    fn start(mut cmd: Command, config: &Path, dir: &Path, port: u16) -> Running {
        let log = dir.join("daemon.log");
        let child = cmd
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,aliassync=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running { child, log, port }
    }
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    async fn get(&self, path: &str) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}{path}", self.port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
    async fn expiry(&self, target: &str) -> f64 {
        sum_metric(&self.get("/metrics").await, "aliassync_credentials_expiry_timestamp_seconds", &[("target", target)])
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.logs());
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// `credentials = "default"` with `AWS_PROFILE` naming a profile whose `credential_process` hands out keys that
/// expire within a minute: the daemon applies events, runs the process again before the keys expire (no restart,
/// no SIGHUP), and goes on applying events with the new keys; the expiry gauge moves forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_credential_process_refreshes_before_expiry_while_events_keep_applying() {
    let dir = tempfile::tempdir().unwrap();
    let script = credential_process(dir.path());
    std::fs::write(
        dir.path().join("aws-config"),
        format!("[profile e2e-proc]\nregion = us-east-1\ncredential_process = {}\n", script.display()),
    )
    .unwrap();
    let id = unique("credproc");
    let (topic, prefix) = (format!("desired-{id}"), format!("alias/app/{id}/"));
    create_topic(&topic, 1).await;
    let (kms, kms2) = (kms("us-east-1"), kms("eu-west-1"));
    let (key, key2) = (create_key(&kms).await, create_key(&kms2).await);
    let port = free_port();
    // Two targets on the one default chain of the process: the process runs once for both.
    let targets = format!(
        "[targets.proc]\nprovider = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{moto}\"\ncredentials = \"default\"\n\
         [targets.proc2]\nprovider = \"aws\"\nregion = \"eu-west-1\"\nendpoint = \"{moto}\"\ncredentials = \"default\"\n",
        moto = moto_url()
    );
    let config = dir.path().join("aliassync.toml");
    std::fs::write(&config, config_text(&brokers(), &topic, &format!("g-{id}"), &prefix, 6, port, "", &targets))
        .unwrap();
    let mut cmd = aliassync(dir.path());
    cmd.env("AWS_PROFILE", "e2e-proc");
    let d = Running::start(cmd, &config, dir.path(), port);

    let p = producer();
    let alias = |i: usize| format!("{prefix}a{i:02}");
    for i in 0..5 {
        send(&p, &topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("proc", &key), ("proc2", &key2)]))).await;
    }
    wait_for("the first aliases, signed with the process's first keys", Duration::from_secs(60), || async {
        live(&kms, &prefix).await.len() == 5 && live(&kms2, &prefix).await.len() == 5
    })
    .await;
    let first = runs(dir.path());
    assert_eq!(first.len(), 1, "the two targets share one resolution of the chain");
    let first_expiry = d.expiry("proc").await;
    assert!(
        (first_expiry - (first[0] + 40.0)).abs() < 3.0,
        "gauge {first_expiry} is not the first keys' expiry ({} + 40 s)",
        first[0]
    );

    // The refresher runs the process again a quarter of the lifetime (10 s) before the keys expire.
    wait_for("the credential process to run again", Duration::from_secs(60), || async { runs(dir.path()).len() >= 2 })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = runs(dir.path());
    assert_eq!(all.len(), 2, "both targets' refreshes share one run: {all:?}");
    assert!(all[1] < all[0] + 40.0, "second run at {} is after the first keys expired ({} + 40 s)", all[1], all[0]);
    wait_for("the expiry gauge to move forward", Duration::from_secs(10), || async {
        d.expiry("proc").await > first_expiry + 5.0
    })
    .await;
    assert!(d.logs().contains("credentials: refreshed"), "{}", d.logs());

    for i in 5..10 {
        send(&p, &topic, Some(&alias(i)), Some(&event(&alias(i), 1, &[("proc", &key), ("proc2", &key2)]))).await;
    }
    wait_for("the later aliases, signed with the refreshed keys", Duration::from_secs(60), || async {
        live(&kms, &prefix).await.len() == 10 && live(&kms2, &prefix).await.len() == 10
    })
    .await;
    let (l, l2) = (live(&kms, &prefix).await, live(&kms2, &prefix).await);
    assert!((0..10).all(|i| l.get(&alias(i)) == Some(&key) && l2.get(&alias(i)) == Some(&key2)), "{l:?} {l2:?}");
    // Still refreshing: the keys never lapse while the daemon runs.
    assert!(d.expiry("proc").await > now(), "the gauge shows expired keys");

    let seen = format!("{}{}{}", d.logs(), d.get("/metrics").await, d.get("/status").await);
    assert_no_secret("daemon log, /metrics and /status", &seen, &["procSecret-", "procToken-"]);
}

/// The EC2 instance metadata mock on a free port, serving role `aliassync-e2e`'s credentials with this expiry;
/// stopped on drop.
struct ImdsMock {
    child: std::process::Child,
    url: String,
}

impl ImdsMock {
    fn start(dir: &Path, expiration: &str) -> ImdsMock {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out =
            Command::new("bash").arg(root.join("tests/support/install-imds-mock.sh")).arg("--path").output().unwrap();
        assert!(out.status.success(), "install-imds-mock.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let overrides = dir.join("aemm.json");
        let values = serde_json::json!({"metadata": {"values": {
            "iam-security-credentials-role": "aliassync-e2e",
            "iam-security-credentials": {
                "Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC",
                "AccessKeyId": "ASIAIMDSE2E0001", "SecretAccessKey": "imdsSecret-Vb72", "Token": "imdsToken-Pk41",
                "Expiration": expiration
            }
        }}});
        std::fs::write(&overrides, values.to_string()).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            // IMDSv2 only: a request without a session token is refused, so aws-config must have used one.
            .args(["--imdsv2", "-n", "127.0.0.1", "-p", &port.to_string(), "-c"])
            .arg(&overrides)
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("imds.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the metadata mock did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ImdsMock { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for ImdsMock {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// `credentials = "default"` on an "EC2 instance": no environment keys, empty profile files, instance metadata
/// (IMDSv2) at `AWS_EC2_METADATA_SERVICE_ENDPOINT`. check-config resolves the instance role's credentials (their
/// expiry is the metadata's) and, for a second target, assumes a role on top of them at moto's STS.
#[test]
fn check_config_resolves_instance_metadata_credentials_with_imdsv2() {
    let dir = tempfile::tempdir().unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::hours(2);
    let expiration = expires.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let imds = ImdsMock::start(dir.path(), &expiration);
    let targets = format!(
        "[targets.instance]\nprovider = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{moto}\"\ncredentials = \"default\"\n\
         sts_endpoint = \"{moto}\"\n\
         [targets.assumed]\nprovider = \"aws\"\nregion = \"eu-west-1\"\nendpoint = \"{moto}\"\ncredentials = \"default\"\n\
         role_arn = \"arn:aws:iam::444455556666:role/aliassync-e2e\"\nrole_session_name = \"e2e-imds\"\n\
         sts_endpoint = \"{moto}\"\n",
        moto = moto_url()
    );
    let config = write_config(dir.path(), "127.0.0.1:9", "t", free_port(), &targets);
    let (code, out, err) =
        check_config(aliassync(dir.path()).env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url), &config);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}\nmetadata mock log:\n{}", {
        std::fs::read_to_string(dir.path().join("imds.log")).unwrap_or_default()
    });
    let rfc = chrono::DateTime::parse_from_rfc3339(&expiration).unwrap().to_rfc3339();
    assert!(out.contains(&format!("target instance: acts as arn:aws:sts::123456789012:user/moto (account 123456789012) (default chain, expires {rfc})")), "{out}");
    assert!(
        out.contains(
            "target assumed: acts as arn:aws:sts::444455556666:assumed-role/aliassync-e2e/e2e-imds (account \
             444455556666) (default chain, role arn:aws:iam::444455556666:role/aliassync-e2e, expires "
        ),
        "{out}"
    );
    assert_no_secret("check-config", &format!("{out}{err}"), &["imdsSecret-Vb72", "imdsToken-Pk41", MOTO_TOKEN_PREFIX]);

    // Without the metadata service (and nothing else in the chain), the target has no credentials: exit 1.
    drop(imds);
    let (code, out, err) =
        check_config(aliassync(dir.path()).env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"), &config);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("target instance: cannot resolve credentials") && err.contains("AWS default chain"), "{err}");
}
