//! End to end, `aliassync wait` and `publish --wait` (issue 12, DESIGN §2.9): the CLI binary against the rig's
//! real Kafka. The status records are produced here, to the partition the daemon would choose
//! (`status::partition_of`), so each rule is driven record by record: exit 0 only once the last target applied,
//! 1 on a failure, 3 on a timeout naming the pending targets, a stale revision not counting, `--target`,
//! absent-at-R, `publish --wait`. The last test runs the real daemon (moto) as the producer of the records.
//!
//! The waits run with targets whose endpoints answer nothing and without cloud credentials in the
//! environment: `wait` reads Kafka only.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aliassync::source::status::{self, Record, State};
use common::*;

/// `wait`: a target failed the revision for good (README, `--help`).
const EXIT_FAILED: i32 = 1;
/// `wait`: the timeout passed with targets pending.
const EXIT_TIMEOUT: i32 = 3;
/// `wait`: the alias or revision is not on the desired topic, or an unknown `--target`.
const EXIT_UNKNOWN: i32 = 5;

/// Partitions of the status topics made here: the daemon's own count, so `partition_of` agrees with it.
const STATUS_PARTITIONS: i32 = status::PARTITIONS;

/// A test's config: targets use1 and euw1 (plus `more`) whose endpoints refuse every connection, a fresh
/// desired topic (2 partitions); the status topic is created by the test when it wants one.
async fn setup(name: &str, more: &[&str]) -> DaemonConfig {
    // Port 9 (discard): nothing listens; a wait that called a cloud would fail or hang.
    let nowhere = "endpoint = \"http://127.0.0.1:9\"";
    let mut targets = vec![("use1", "us-east-1", nowhere), ("euw1", "eu-west-1", nowhere)];
    targets.extend(more.iter().map(|n| (*n, "ap-south-1", nowhere)));
    let cfg = DaemonConfig::for_id(&unique(name), &targets);
    create_topic(&cfg.topic, 2).await;
    cfg
}

fn status_topic(cfg: &DaemonConfig) -> String {
    format!("{}.status", cfg.topic)
}

/// A fake key id of AWS's shape (the daemon's decoder checks shapes; nothing here calls a cloud).
fn key(n: u8) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

/// Produces one status record where the daemon would: keyed `<alias>\0<target>`, on `partition_of(key)`.
async fn record(cfg: &DaemonConfig, alias: &str, target: &str, revision: u64, state: State, key_id: Option<&str>) {
    let r = Record {
        alias: alias.into(),
        target: target.into(),
        revision,
        state,
        key_id: key_id.map(str::to_string),
        code: (state == State::Failed).then(|| "preflight_key_disabled".to_string()),
        at: "2026-12-06T12:00:00Z".into(),
    };
    let k = status::key(alias, target);
    let p = status::partition_of(&k, STATUS_PARTITIONS);
    send_to(&producer(), &status_topic(cfg), p, &k, &serde_json::to_string(&r).unwrap()).await;
}

/// The CLI in the background, its config written beside its output, no cloud credentials in its environment.
struct Cli {
    child: Child,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Cli {
    fn start(cfg: &DaemonConfig, args: &[&str]) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("aliassync.toml");
        std::fs::write(&config, cfg.render(free_port())).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_aliassync"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("E2E_AWS_ACCESS_KEY_ID")
            .env_remove("E2E_AWS_SECRET_ACCESS_KEY")
            .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
            .spawn()
            .unwrap();
        Cli { child, dir, started: Instant::now() }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// (exit code, stdout, stderr) once it exits (within `limit`), and how long it ran.
    async fn finish(mut self, limit: Duration) -> (i32, String, String, Duration) {
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running after {limit:?}: {}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let took = self.started.elapsed();
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap();
        (code, read("out"), read("err"), took)
    }

    fn output(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("stdout:\n{}stderr:\n{}", read("out"), read("err"))
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI to its end.
async fn run(cfg: &DaemonConfig, args: &[&str]) -> (i32, String, String, Duration) {
    Cli::start(cfg, args).finish(Duration::from_secs(90)).await
}

/// Asserts the CLI is still waiting `for_` from now.
async fn still_running(c: &mut Cli, for_: Duration) {
    let until = Instant::now() + for_;
    while Instant::now() < until {
        assert!(c.running(), "exited early: {}", c.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `alias` at `rev` on the desired topic with these (target, key) pairs.
async fn desire(cfg: &DaemonConfig, alias: &str, rev: u64, targets: &[(&str, &str)]) {
    send(&producer(), &cfg.topic, Some(alias), Some(&event(alias, rev, targets))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_0_once_the_last_target_applied_and_not_before() {
    let cfg = setup("wait-ok", &[]).await;
    create_topic(&status_topic(&cfg), STATUS_PARTITIONS).await;
    let a = format!("{}a", cfg.prefix);
    let (k1, k2, k3) = (key(1), key(2), key(3));
    desire(&cfg, &a, 1, &[("use1", &k1), ("euw1", &k1)]).await;
    desire(&cfg, &a, 2, &[("use1", &k2), ("euw1", &k3)]).await;
    // Revision 1 applied everywhere already: the rotation's old keys, which do not count for revision 2.
    record(&cfg, &a, "use1", 1, State::Applied, Some(&k1)).await;
    record(&cfg, &a, "euw1", 1, State::Applied, Some(&k1)).await;

    let mut w = Cli::start(&cfg, &["wait", &a, "--timeout", "60s"]);
    still_running(&mut w, Duration::from_secs(3)).await;
    record(&cfg, &a, "use1", 2, State::Applied, Some(&k2)).await;
    still_running(&mut w, Duration::from_secs(3)).await;
    record(&cfg, &a, "euw1", 2, State::Applied, Some(&k3)).await;
    let (code, out, err, took) = w.finish(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [format!("euw1: {a} applied at revision 2, key {k3}"), format!("use1: {a} applied at revision 2, key {k2}")],
        "{err}"
    );
    assert!(err.contains("applied: the alias in 2 target(s)"), "{err}");

    // Decided from what is on the topic already: at once, and for an explicit older revision too.
    let (code, out, err, took) = run(&cfg, &["wait", &a, "--revision", "1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_revision_does_not_count_and_a_timeout_names_what_is_pending() {
    let cfg = setup("wait-stale", &[]).await;
    create_topic(&status_topic(&cfg), STATUS_PARTITIONS).await;
    let a = format!("{}a", cfg.prefix);
    let (k1, k2) = (key(1), key(2));
    desire(&cfg, &a, 1, &[("use1", &k1), ("euw1", &k1)]).await;
    desire(&cfg, &a, 2, &[("use1", &k2), ("euw1", &k2)]).await;
    record(&cfg, &a, "use1", 2, State::Applied, Some(&k2)).await;
    // euw1 still shows revision 1 (the old key).
    record(&cfg, &a, "euw1", 1, State::Applied, Some(&k1)).await;

    let (code, out, err, took) = run(&cfg, &["wait", &a, "--timeout", "3s"]).await;
    assert_eq!(code, EXIT_TIMEOUT, "{out}{err}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(20), "{took:?}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [format!(
            "euw1: {a} pending revision 2 (key {k2}); last record: applied at revision 1, key {k1}, at 2026-12-06T12:00:00Z"
        )],
        "only euw1 is pending: {err}"
    );
    assert!(err.contains("timed out after 3s: 1 target(s) still pending"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_exits_1_at_once() {
    let cfg = setup("wait-failed", &[]).await;
    create_topic(&status_topic(&cfg), STATUS_PARTITIONS).await;
    let a = format!("{}a", cfg.prefix);
    let (k1, k2) = (key(1), key(2));
    desire(&cfg, &a, 4, &[("use1", &k1), ("euw1", &k2)]).await;
    let mut w = Cli::start(&cfg, &["wait", &a, "--timeout", "60s"]);
    still_running(&mut w, Duration::from_secs(2)).await;
    record(&cfg, &a, "euw1", 4, State::Failed, Some(&k2)).await;
    let (code, out, err, took) = w.finish(Duration::from_secs(30)).await;
    assert_eq!(code, EXIT_FAILED, "{out}{err}");
    assert!(took < Duration::from_secs(30), "not the timeout: {took:?}");
    assert_eq!(out.trim(), format!("euw1: {a} failed at revision 4, key {k2}: preflight_key_disabled"), "{err}");
    assert!(err.contains("failed: 1 target(s)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_status_topic_is_nothing_applied_yet() {
    let cfg = setup("wait-notopic", &[]).await;
    let a = format!("{}a", cfg.prefix);
    let k1 = key(1);
    desire(&cfg, &a, 1, &[("use1", &k1), ("euw1", &k1)]).await;

    let (code, out, err, _) = run(&cfg, &["wait", &a, "--timeout", "2s"]).await;
    assert_eq!(code, EXIT_TIMEOUT, "{out}{err}");
    assert!(out.contains(&format!("euw1: {a} pending revision 1 (key {k1}); no record yet")), "{out}");
    assert!(out.contains(&format!("use1: {a} pending revision 1 (key {k1}); no record yet")), "{out}");
    assert!(out.contains(&format!("the status topic {} does not exist yet", status_topic(&cfg))), "{out}");
    assert!(err.contains("2 target(s) still pending"), "{err}");

    // The topic appears while the wait runs (the daemon creates it at its start): the wait goes on from there.
    let mut w = Cli::start(&cfg, &["wait", &a, "--timeout", "60s"]);
    still_running(&mut w, Duration::from_secs(2)).await;
    create_topic(&status_topic(&cfg), STATUS_PARTITIONS).await;
    record(&cfg, &a, "use1", 1, State::Applied, Some(&k1)).await;
    record(&cfg, &a, "euw1", 1, State::Applied, Some(&k1)).await;
    let (code, out, err, _) = w.finish(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_restricts_the_wait_and_unknown_names_are_refused() {
    let cfg = setup("wait-target", &[]).await;
    create_topic(&status_topic(&cfg), STATUS_PARTITIONS).await;
    let a = format!("{}a", cfg.prefix);
    let k1 = key(1);
    desire(&cfg, &a, 1, &[("use1", &k1), ("euw1", &k1)]).await;
    record(&cfg, &a, "use1", 1, State::Applied, Some(&k1)).await;

    let (code, out, err, _) = run(&cfg, &["wait", &a, "--target", "use1", "--timeout", "30s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("use1: {a} applied at revision 1, key {k1}"));
    let (code, out, err, _) = run(&cfg, &["wait", &a, "--target", "euw1", "--timeout", "2s"]).await;
    assert_eq!(code, EXIT_TIMEOUT, "{out}{err}");
    assert!(out.starts_with(&format!("euw1: {a} pending")) && !out.contains("use1"), "{out}");
    // Both named: euw1 still pending.
    let (code, out, _, _) = run(&cfg, &["wait", &a, "--target", "use1", "--target", "euw1", "--timeout", "2s"]).await;
    assert_eq!(code, EXIT_TIMEOUT, "{out}");

    let (code, _, err, _) = run(&cfg, &["wait", &a, "--target", "nope"]).await;
    assert_eq!(code, EXIT_UNKNOWN, "{err}");
    assert!(err.contains("unknown target \"nope\"") && err.contains("configured: euw1, use1"), "{err}");
    let (code, _, err, _) = run(&cfg, &["wait", &format!("{}nope", cfg.prefix)]).await;
    assert_eq!(code, EXIT_UNKNOWN, "{err}");
    assert!(err.contains("is not on the desired topic"), "{err}");
    let (code, _, err, _) = run(&cfg, &["wait", &a, "--revision", "2"]).await;
    assert_eq!(code, EXIT_UNKNOWN, "{err}");
    assert!(err.contains("revision 2 has not been published"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_at_the_revision_waits_for_the_removal_where_the_alias_was_recorded() {
    let cfg = setup("wait-absent", &["aps1"]).await;
    create_topic(&status_topic(&cfg), STATUS_PARTITIONS).await;
    let a = format!("{}a", cfg.prefix);
    let (k1, k2) = (key(1), key(2));
    // Revision 2 had it in use1 and euw1 (never in aps1); revision 3 drops euw1.
    desire(&cfg, &a, 2, &[("use1", &k1), ("euw1", &k2)]).await;
    desire(&cfg, &a, 3, &[("use1", &k1)]).await;
    record(&cfg, &a, "use1", 2, State::Applied, Some(&k1)).await;
    record(&cfg, &a, "euw1", 2, State::Applied, Some(&k2)).await;

    // use1's key did not change at revision 3, so its owner records nothing newer: revision 2 there is the
    // proof. euw1's removal is awaited; aps1 never had the alias and is not.
    let mut w = Cli::start(&cfg, &["wait", &a, "--timeout", "60s"]);
    still_running(&mut w, Duration::from_secs(3)).await;
    record(&cfg, &a, "euw1", 3, State::Applied, None).await;
    let (code, out, err, _) = w.finish(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [format!("euw1: {a} applied at revision 3, absent"), format!("use1: {a} applied at revision 2, key {k1}")]
    );

    // Absent everywhere, and recorded nowhere: nothing to wait for.
    let b = format!("{}b", cfg.prefix);
    send(
        &producer(),
        &cfg.topic,
        Some(&b),
        Some(&format!(r#"{{"schema":1,"alias":"{b}","revision":1,"state":"absent"}}"#)),
    )
    .await;
    let (code, out, err, _) = run(&cfg, &["wait", &b, "--timeout", "30s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.is_empty() && err.contains("nothing to wait for"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wait_waits_for_every_published_alias() {
    let cfg = setup("wait-publish", &[]).await;
    create_topic(&status_topic(&cfg), STATUS_PARTITIONS).await;
    let (a, b) = (format!("{}a", cfg.prefix), format!("{}b", cfg.prefix));
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aliases.yaml");
    let write = |yaml: String| std::fs::write(&file, yaml).unwrap();
    let path = file.to_str().unwrap();

    // Two new aliases: revision 1 each; b in use1 only.
    write(format!("aliases:\n  {a}:\n    use1: {k1}\n    euw1: {k2}\n  {b}:\n    use1: {k1}\n"));
    let mut p = Cli::start(&cfg, &["publish", path, "--wait", "--timeout", "60s"]);
    wait_for("the events", Duration::from_secs(30), || async { read_topic(&cfg.topic).len() == 2 }).await;
    record(&cfg, &a, "use1", 1, State::Applied, Some(&k1)).await;
    record(&cfg, &a, "euw1", 1, State::Applied, Some(&k2)).await;
    still_running(&mut p, Duration::from_secs(3)).await;
    record(&cfg, &b, "use1", 1, State::Applied, Some(&k1)).await;
    let (code, out, err, _) = p.finish(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("published 2 events"), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains(&format!("use1: {b} applied at revision 1, key {k1}")), "{out}");
    assert!(err.contains("applied: 2 aliases in 3 target(s)"), "{err}");

    // A re-point of a in euw1 fails there: 1, with the code.
    write(format!("aliases:\n  {a}:\n    use1: {k1}\n    euw1: {k3}\n  {b}:\n    use1: {k1}\n"));
    let mut p = Cli::start(&cfg, &["publish", path, "--wait", "--timeout", "60s"]);
    wait_for("the re-point", Duration::from_secs(30), || async { read_topic(&cfg.topic).len() == 3 }).await;
    still_running(&mut p, Duration::from_secs(2)).await;
    record(&cfg, &a, "euw1", 2, State::Failed, Some(&k3)).await;
    let (code, out, err, _) = p.finish(Duration::from_secs(30)).await;
    assert_eq!(code, EXIT_FAILED, "{out}{err}");
    assert_eq!(out.trim(), format!("euw1: {a} failed at revision 2, key {k3}: preflight_key_disabled"));

    // Another re-point nobody applies: 3, naming what is pending; with --json the lines go to stderr.
    write(format!("aliases:\n  {a}:\n    use1: {k2}\n    euw1: {k3}\n  {b}:\n    use1: {k1}\n"));
    let (code, out, err, _) = run(&cfg, &["publish", path, "--wait", "--timeout", "2s", "--json"]).await;
    assert_eq!(code, EXIT_TIMEOUT, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["decision"], "publish");
    assert!(err.contains(&format!("use1: {a} pending revision 3 (key {k2})")), "{err}");
    // euw1's key is unchanged at revision 3, and its last record failed: not applied, so pending too.
    assert!(err.contains(&format!("euw1: {a} pending revision 3 (key {k3})")), "{err}");
    assert!(!err.contains(&format!("{b} pending")), "b was not published again: {err}");

    // Nothing to publish: nothing to wait for.
    let (code, _, err, _) = run(&cfg, &["publish", path, "--wait"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing to wait for"), "{err}");
}

/// The real daemon (moto) records what it applies: `publish --wait` returns once the aliases are live, and a
/// re-point in one region settles the other (whose key stayed, in sync) at the new revision with no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_daemon_publish_wait_returns_once_the_aliases_are_live() {
    let cfg = DaemonConfig::for_id(&unique("wait-daemon"), &[("use1", "us-east-1", ""), ("euw1", "eu-west-1", "")]);
    create_topic(&cfg.topic, 2).await;
    let (use1, euw1) = (kms("us-east-1"), kms("eu-west-1"));
    let (k1, k2, ke) = (create_key(&use1).await, create_key(&use1).await, create_key(&euw1).await);
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    let a = format!("{}a", cfg.prefix);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aliases.yaml");
    let path = file.to_str().unwrap();

    std::fs::write(&file, format!("aliases:\n  {a}:\n    use1: {k1}\n    euw1: {ke}\n")).unwrap();
    let (code, out, err, _) = run(&cfg, &["publish", path, "--wait", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", d.logs());
    let (l1, le) = (live(&use1, &cfg.prefix).await, live(&euw1, &cfg.prefix).await);
    assert_eq!((l1.get(&a), le.get(&a)), (Some(&k1), Some(&ke)), "live once wait exits 0");

    // The rotation in use1 only.
    std::fs::write(&file, format!("aliases:\n  {a}:\n    use1: {k2}\n    euw1: {ke}\n")).unwrap();
    let (code, out, err, _) = run(&cfg, &["publish", path, "--wait", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", d.logs());
    assert_eq!(live(&use1, &cfg.prefix).await.get(&a), Some(&k2), "live once wait exits 0");
    assert!(out.contains(&format!("use1: {a} applied at revision 2, key {k2}")), "{out}");
    assert!(out.contains(&format!("euw1: {a} applied at revision 2, key {ke}")), "{out}");
    // The same from `wait` alone.
    let (code, out, err, _) = run(&cfg, &["wait", &a]).await;
    assert_eq!(code, 0, "{out}{err}");
}
