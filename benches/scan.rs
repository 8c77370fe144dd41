//! Drift-scan cost: one target holding N managed aliases (default 10,000), listed in full through the
//! daemon's governed provider (read quota paced per page) against the KMS emulator, per cloud.
//! `cargo bench --bench scan [-- N]`. Prints wall time, pages (= read calls) and the emulator's count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aliassync::provider::alibaba::AlibabaKms;
use aliassync::provider::aws::AwsKms;
use aliassync::provider::huawei::HuaweiKms;
use aliassync::provider::KmsAliases;
use aliassync::reconcile::governed::Governed;
use aliassync::secret::{Credentials, Secret};
use serde_json::json;

const HW_PROJECT: &str = "0123456789abcdef0123456789abcdef";

fn creds(ak: &str, sk: &str) -> Credentials {
    Credentials { access_key_id: ak.into(), secret_access_key: Secret::new(sk), session_token: None }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let port = 15990;
    // The emulator is its own workspace member: `cargo build -p kms-emulator` first (or set EMULATOR_BIN).
    let emulator = std::env::var("EMULATOR_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_BIN_EXE_aliassync")).with_file_name("kms-emulator"));
    let mut emu = std::process::Command::new(&emulator)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    while http.get(format!("{url}/_emulator/health")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scopes = [
        ("aws", json!({"access_key_id": "AKIDEXAMPLE", "region": "us-east-1"})),
        ("alibaba", json!({"access_key_id": "LTAI5tFakeAccessKeyId01", "region": "cn-hangzhou"})),
        ("huawei", json!({"project": HW_PROJECT, "region": "cn-north-4"})),
    ];
    for (cloud, scope) in &scopes {
        let mut body = scope.clone();
        body["cloud"] = json!(cloud);
        let key: serde_json::Value =
            http.post(format!("{url}/_emulator/keys")).json(&body).send().await.unwrap().json().await.unwrap();
        let key = key["key_id"].as_str().unwrap().to_string();
        for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
            let sets = chunk.iter().map(|i| {
                let mut b = body.clone();
                b["alias"] = json!(format!("alias/app/scan/{i:05}"));
                b["key_id"] = json!(key);
                http.post(format!("{url}/_emulator/aliases")).json(&b).send()
            });
            for r in futures::future::join_all(sets).await {
                assert!(r.unwrap().status().is_success());
            }
        }
    }
    let t = Duration::from_secs(10);
    let providers: Vec<(&str, Arc<dyn KmsAliases>)> = vec![
        (
            "aws",
            Arc::new(
                AwsKms::new(
                    "us-east-1",
                    Some(&url),
                    None,
                    creds("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                    t,
                )
                .unwrap(),
            ),
        ),
        (
            "alibaba",
            Arc::new(
                AlibabaKms::new(
                    "cn-hangzhou",
                    Some(&url),
                    creds("LTAI5tFakeAccessKeyId01", "FakeAccessKeySecret0123456789abcd"),
                    t,
                )
                .unwrap(),
            ),
        ),
        (
            "huawei",
            Arc::new(
                HuaweiKms::new(
                    "cn-north-4",
                    Some(&url),
                    HW_PROJECT,
                    Default::default(),
                    creds("HPUAFAKEACCESSKEY0001", "FakeSecretKey0123456789abcdefghijklmnopq"),
                    t,
                )
                .unwrap(),
            ),
        ),
    ];
    let prefixes = vec!["alias/app/".to_string()];
    for read_rate in [1000.0, 20.0] {
        for (cloud, p) in &providers {
            let name = format!("{cloud}-{read_rate}");
            let g = Governed::new(p.clone(), &name, cloud, 5.0, read_rate);
            http.delete(format!("{url}/_emulator/calls")).send().await.unwrap();
            let start = Instant::now();
            let listed = g.list_aliases(&prefixes).await.unwrap();
            let took = start.elapsed();
            assert_eq!(listed.len(), n);
            let calls: serde_json::Value =
                http.get(format!("{url}/_emulator/calls?cloud={cloud}")).send().await.unwrap().json().await.unwrap();
            let pages = aliassync::telemetry::metrics::metrics().list_pages.with_label_values(&[&name]).get();
            println!(
                "scan {cloud:8} {n} aliases, read quota {read_rate:>6}/s: {:7.3}s, {pages} pages (emulator counted {} calls)",
                took.as_secs_f64(),
                calls["totals"][cloud]["calls"]
            );
        }
    }
    emu.kill().unwrap();
    emu.wait().unwrap();
}
