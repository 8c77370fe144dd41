//! End to end, publish safety (issue 12): the plan printed before sending, the refusal of a file that removes
//! aliases from a target (exit 4, nothing sent) unless `--allow-removals`, and `import T1 T2 …` / `--all`
//! merging targets into one file. The CLI binary + real Kafka + moto.

mod common;

use std::collections::HashMap;

use aliassync::provider::KmsAliases;
use common::*;
use serde_json::Value;

/// `publish` refused a file that removes aliases (README, `--help`).
const EXIT_REFUSED: i32 = 4;

/// Two AWS targets in moto (use1, euw1), a fresh topic, and a key in each: (config, prefix, k1 in use1, k2 in euw1).
async fn setup(name: &str) -> (DaemonConfig, String, String, String) {
    let cfg = DaemonConfig::for_id(&unique(name), &[("use1", "us-east-1", ""), ("euw1", "eu-west-1", "")]);
    create_topic(&cfg.topic, 2).await;
    let (k1, k2) = (create_key(&kms("us-east-1")).await, create_key(&kms("eu-west-1")).await);
    let prefix = cfg.prefix.clone();
    (cfg, prefix, k1, k2)
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

/// The desired-state file (YAML) at a temporary path: alias → [(target, key)].
fn state_file(aliases: &[(&str, &[(&str, &str)])]) -> tempfile::NamedTempFile {
    let mut yaml = String::from("aliases:\n");
    for (alias, targets) in aliases {
        yaml.push_str(&format!("  {alias}:\n"));
        if targets.is_empty() {
            yaml.push_str("    {}\n");
        }
        for (t, k) in *targets {
            yaml.push_str(&format!("    {t}: {k}\n"));
        }
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), yaml).unwrap();
    f
}

fn path(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().unwrap()
}

/// The latest value on the topic per alias (key), parsed.
fn latest(topic: &str) -> HashMap<String, Value> {
    read_topic(topic).into_iter().filter_map(|r| Some((r.key?, serde_json::from_str(&r.value?).unwrap()))).collect()
}

/// `publish --json`'s document.
fn json_plan(cfg: &DaemonConfig, args: &[&str]) -> (i32, Value, String) {
    let (code, out, err) = cli(cfg, args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_drops_a_target_is_refused_and_sends_nothing_unless_removals_are_allowed() {
    let (cfg, prefix, k1, k2) = setup("pub-drop").await;
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let p = producer();
    for x in [&a, &b] {
        send(&p, &cfg.topic, Some(x), Some(&event(x, 1, &[("use1", &k1), ("euw1", &k2)]))).await;
    }
    let before = read_topic(&cfg.topic).len();
    // a loses its euw1 key; b stays as it is.
    let f = state_file(&[(&a, &[("use1", &k1)]), (&b, &[("use1", &k1), ("euw1", &k2)])]);

    let (code, out, err) = cli(&cfg, &["publish", path(&f)]);
    assert_eq!(code, EXIT_REFUSED, "{out}{err}");
    assert!(err.contains("euw1: 0 creates, 0 re-points, 1 removal"), "the plan first: {err}");
    assert!(err.contains(&format!("  - {a} (was {k2})")), "{err}");
    assert!(err.contains("refused") && err.contains(&format!("euw1: 1 ({a})")), "{err}");
    assert!(err.contains("--allow-removals") && err.contains("nothing was published"), "{err}");
    assert!(!err.contains("use1:"), "use1 does not change: {err}");
    // A dry run says the same, and sends nothing either.
    let (code, out, err) = cli(&cfg, &["publish", path(&f), "--dry-run"]);
    assert_eq!(code, EXIT_REFUSED, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "the event it would send: {out}");
    let (code, v, _) = json_plan(&cfg, &["publish", path(&f), "--json"]);
    assert_eq!(code, EXIT_REFUSED);
    assert_eq!(v["decision"], "refused");
    assert_eq!(v["plan"]["removals"], 1);
    assert_eq!(read_topic(&cfg.topic).len(), before, "refused: nothing sent");
    assert_eq!(latest(&cfg.topic)[&a]["revision"], 1);

    let (code, out, err) = cli(&cfg, &["publish", path(&f), "--allow-removals"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("published 1 events") && err.contains("1 aliases unchanged"), "{err}");
    let now = latest(&cfg.topic);
    assert_eq!(now[&a]["revision"], 2);
    assert_eq!(now[&a]["targets"], serde_json::json!({"use1": k1}));
    assert_eq!(now[&b]["revision"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_one_target_then_publish_is_refused_and_a_merged_import_changes_nothing() {
    let (cfg, prefix, k1, k2) = setup("pub-import").await;
    let (use1, euw1) = (kms("us-east-1"), kms("eu-west-1"));
    let aliases: Vec<String> = (0..3).map(|i| format!("{prefix}x{i}")).collect();
    let p = producer();
    for a in &aliases {
        send(&p, &cfg.topic, Some(a), Some(&event(a, 1, &[("use1", &k1), ("euw1", &k2)]))).await;
        use1.create_alias(a, &k1).await.unwrap();
        euw1.create_alias(a, &k2).await.unwrap();
    }
    let before = read_topic(&cfg.topic).len();
    let file = tempfile::NamedTempFile::new().unwrap();

    // The motivating bug: the file of `import use1` lists no euw1 key, so publishing it would delete the
    // aliases in euw1.
    let (code, one, err) = cli(&cfg, &["import", "use1"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(file.path(), &one).unwrap();
    let (code, out, err) = cli(&cfg, &["publish", path(&file)]);
    assert_eq!(code, EXIT_REFUSED, "{out}{err}");
    assert!(err.contains("euw1: 0 creates, 0 re-points, 3 removals"), "{err}");
    assert!(err.contains(&format!("euw1: 3 ({}, {}, {})", aliases[0], aliases[1], aliases[2])), "{err}");
    assert_eq!(read_topic(&cfg.topic).len(), before, "refused: nothing sent");

    // Both targets merged: the topic already says so, nothing to change.
    let (code, merged, err) = cli(&cfg, &["import", "use1", "euw1"]);
    assert_eq!(code, 0, "{err}");
    let parsed = aliassync::cli::statefile::StateFile::parse(&merged).unwrap();
    assert_eq!(parsed.aliases.len(), 3, "{merged}");
    assert_eq!(parsed.aliases[&aliases[0]].len(), 2, "{merged}");
    let (code, all, _) = cli(&cfg, &["import", "--all"]);
    assert_eq!((code, &all), (0, &merged), "--all = every configured target");
    std::fs::write(file.path(), &merged).unwrap();
    let (code, out, err) = cli(&cfg, &["publish", path(&file)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("nothing to change") && err.contains("published 0 events"), "{err}");
    assert_eq!(read_topic(&cfg.topic).len(), before);

    // A target that cannot be listed fails the whole import and is named; so is an unknown one.
    let mut broken = clone_cfg(&cfg);
    broken.targets[1].2 = "endpoint = \"http://127.0.0.1:9\"\nrequest_timeout_seconds = 2".into();
    let (code, out, err) = cli(&broken, &["import", "use1", "euw1"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("could not list 1 target(s)") && err.contains("euw1:"), "{err}");
    assert!(out.is_empty(), "no partial file: {out}");
    let (code, _, err) = cli(&cfg, &["import", "use1", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown target(s) nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_missing_absents_are_removals_and_need_allow_removals() {
    let (cfg, prefix, k1, k2) = setup("pub-delmiss").await;
    let (keep, gone) = (format!("{prefix}keep"), format!("{prefix}gone"));
    let p = producer();
    for x in [&keep, &gone] {
        send(&p, &cfg.topic, Some(x), Some(&event(x, 1, &[("use1", &k1), ("euw1", &k2)]))).await;
    }
    let before = read_topic(&cfg.topic).len();
    let f = state_file(&[(&keep, &[("use1", &k1), ("euw1", &k2)])]);

    // Without --delete-missing the file is a no-op; with it, `gone` is absent everywhere: two removals.
    let (code, _, err) = cli(&cfg, &["publish", path(&f)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("published 0 events"), "{err}");
    let (code, v, err) = json_plan(&cfg, &["publish", path(&f), "--delete-missing", "--json"]);
    assert_eq!(code, EXIT_REFUSED, "{v}{err}");
    assert_eq!((v["decision"].as_str(), v["plan"]["removals"].as_u64()), (Some("refused"), Some(2)), "{v}");
    for t in v["plan"]["targets"].as_array().unwrap() {
        assert_eq!(t["removals"], 1, "{t}");
        assert_eq!(t["changes"][0]["alias"], gone.as_str(), "{t}");
    }
    assert_eq!(v["events"][0]["state"], "absent", "{v}");
    assert!(err.contains("refused") && err.contains(&gone), "{err}");
    assert_eq!(read_topic(&cfg.topic).len(), before, "refused: nothing sent");

    let (code, out, err) = cli(&cfg, &["publish", path(&f), "--delete-missing", "--allow-removals"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("euw1: 0 creates, 0 re-points, 1 removal"), "{err}");
    let now = latest(&cfg.topic);
    assert_eq!((now[&gone]["state"].as_str(), now[&gone]["revision"].as_u64()), (Some("absent"), Some(2)));
    assert_eq!(now[&keep]["revision"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_counts_creates_repoints_and_removals_per_target() {
    let (cfg, prefix, k1, k2) = setup("pub-mix").await;
    let k1b = create_key(&kms("us-east-1")).await;
    let [x, y, z, w] = ["x", "y", "z", "w"].map(|n| format!("{prefix}{n}"));
    let p = producer();
    send(&p, &cfg.topic, Some(&x), Some(&event(&x, 3, &[("use1", &k1), ("euw1", &k2)]))).await;
    send(&p, &cfg.topic, Some(&y), Some(&event(&y, 1, &[("use1", &k1)]))).await;
    send(&p, &cfg.topic, Some(&z), Some(&event(&z, 1, &[("use1", &k1), ("euw1", &k2)]))).await;
    // x re-pointed in use1 (a key rotation), y created in euw1, z removed from euw1, w new in use1.
    let f = state_file(&[
        (&x, &[("use1", &k1b), ("euw1", &k2)]),
        (&y, &[("use1", &k1), ("euw1", &k2)]),
        (&z, &[("use1", &k1)]),
        (&w, &[("use1", &k1)]),
    ]);

    let (code, out, err) = cli(&cfg, &["publish", path(&f), "--dry-run", "--allow-removals"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("publish plan: 4 events, 0 aliases unchanged"), "{err}");
    assert!(err.contains("use1: 1 create, 1 re-point, 0 removals"), "{err}");
    assert!(err.contains("euw1: 1 create, 0 re-points, 1 removal"), "{err}");
    assert!(err.contains(&format!("  + {w} -> {k1}\n")), "{err}");
    assert!(err.contains(&format!("  ~ {x}: {k1} -> {k1b}\n")), "{err}");
    assert!(err.contains(&format!("  + {y} -> {k2}\n")), "{err}");
    assert!(err.contains(&format!("  - {z} (was {k2})\n")), "{err}");
    let revisions: HashMap<String, u64> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| (e["alias"].as_str().unwrap().to_string(), e["revision"].as_u64().unwrap()))
        .collect();
    assert_eq!(revisions, HashMap::from([(x.clone(), 4), (y.clone(), 2), (z.clone(), 2), (w.clone(), 1)]));

    let (code, v, err) = json_plan(&cfg, &["publish", path(&f), "--dry-run", "--json", "--allow-removals"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["decision"], "dry_run");
    let counts = |t: &Value| (t["creates"].as_u64(), t["repoints"].as_u64(), t["removals"].as_u64());
    assert_eq!(counts(&v["plan"]), (Some(2), Some(1), Some(1)), "{v}");
    let by_target: HashMap<&str, &Value> =
        v["plan"]["targets"].as_array().unwrap().iter().map(|t| (t["target"].as_str().unwrap(), t)).collect();
    assert_eq!(counts(by_target["use1"]), (Some(1), Some(1), Some(0)));
    assert_eq!(counts(by_target["euw1"]), (Some(1), Some(0), Some(1)));
    assert!(read_topic(&cfg.topic).len() == 3, "dry run sends nothing");

    // Without --allow-removals the one removal (z in euw1) refuses the whole file.
    let (code, _, err) = cli(&cfg, &["publish", path(&f)]);
    assert_eq!(code, EXIT_REFUSED, "{err}");
    assert!(err.contains(&format!("euw1: 1 ({z})")), "{err}");
    let (code, _, err) = cli(&cfg, &["publish", path(&f), "--allow-removals"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("published 4 events"), "{err}");
    // Published: the same file again changes nothing.
    let (code, _, err) = cli(&cfg, &["publish", path(&f)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing to change") && err.contains("4 aliases unchanged"), "{err}");
}
