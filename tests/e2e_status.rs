//! End to end (issue 12): the owner records each settled change on `<topic>.status`, once per change and
//! target; `GET /status/alias/{alias}` shows one alias across the targets; the apply latency histogram counts
//! each change from its record timestamp.

mod common;

use std::time::Duration;

use aliassync::source::status::{Record as Status, State};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_changes_are_recorded_once_per_change_and_target() {
    let id = unique("status");
    let prefix = format!("alias/app/{id}/");
    let topic = format!("desired-{id}");
    create_topic(&topic, 2).await;
    let cfg = DaemonConfig::for_id(&id, &[("use1", "us-east-1", ""), ("euw1", "eu-west-1", "")]);
    let (use1, euw1) = (kms("us-east-1"), kms("eu-west-1"));
    let (k1, k2, ke) = (create_key(&use1).await, create_key(&use1).await, create_key(&euw1).await);
    let p = producer();
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    send(&p, &cfg.topic, Some(&a), Some(&event(&a, 1, &[("use1", &k1), ("euw1", &ke)]))).await;
    let d = Daemon::start(&cfg);
    d.wait_ready().await;
    wait_for("a in both regions", Duration::from_secs(60), || async {
        live(&use1, &prefix).await.len() == 1 && live(&euw1, &prefix).await.len() == 1
    })
    .await;
    // Changes after the start: a re-point in one region, and a new alias in one region only.
    send(&p, &cfg.topic, Some(&a), Some(&event(&a, 2, &[("use1", &k2), ("euw1", &ke)]))).await;
    send(&p, &cfg.topic, Some(&b), Some(&event(&b, 1, &[("use1", &k1)]))).await;
    wait_for("a re-pointed and b created", Duration::from_secs(60), || async {
        let l = live(&use1, &prefix).await;
        l.get(&a) == Some(&k2) && l.get(&b) == Some(&k1)
    })
    .await;

    let status_topic = format!("{}.status", cfg.topic);
    let records = || -> Vec<(String, Status)> {
        read_topic(&status_topic)
            .into_iter()
            .map(|r| (r.key.unwrap(), serde_json::from_str(&r.value.unwrap()).unwrap()))
            .collect()
    };
    let mut got = Vec::new();
    wait_for("status records", Duration::from_secs(30), || {
        got = records();
        let n = got.len();
        async move { n >= 5 }
    })
    .await;
    // The first pass settled revision 1 in both regions; revision 2 re-pointed use1 and left euw1 as it was,
    // which settles there at once (no call); b exists in use1 only.
    let mut seen: Vec<(String, String, u64, Option<String>)> =
        got.iter().map(|(_, s)| (s.alias.clone(), s.target.clone(), s.revision, s.key_id.clone())).collect();
    seen.sort();
    let mut want = vec![
        (a.clone(), "euw1".to_string(), 1, Some(ke.clone())),
        (a.clone(), "euw1".to_string(), 2, Some(ke.clone())),
        (a.clone(), "use1".to_string(), 1, Some(k1.clone())),
        (a.clone(), "use1".to_string(), 2, Some(k2.clone())),
        (b.clone(), "use1".to_string(), 1, Some(k1.clone())),
    ];
    want.sort();
    assert_eq!(seen, want, "one record per change and target: {got:?}");
    for (key, s) in &got {
        assert_eq!(key, &format!("{}\u{0}{}", s.alias, s.target));
        assert_eq!(s.state, State::Applied);
    }

    // One alias across the targets.
    let (code, body) = d.get(&format!("/status/alias/{a}")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["revision"], 2);
    let t: Vec<(String, String, serde_json::Value)> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["target"].as_str().unwrap().into(), t["state"].as_str().unwrap().into(), t["desired_key"].clone()))
        .collect();
    assert_eq!(
        t,
        vec![
            ("euw1".into(), "applied".into(), serde_json::json!(ke)),
            ("use1".into(), "applied".into(), serde_json::json!(k2)),
        ]
    );
    let (code, _) = d.get(&format!("/status/alias/{prefix}nope")).await.unwrap();
    assert_eq!(code, 404);
    // The latency of the changes produced while the daemon worked (the re-point and b): not of revision 1,
    // produced before it started (its age would be the downtime), nor of the one settled without a call.
    let n = d.metric("aliassync_apply_latency_seconds_count", &[]).await;
    assert_eq!(n, 2.0, "{}", d.logs());
}
