//! End-to-end throughput: N events produced to a real Kafka topic, consumed by the daemon's own
//! source, store and engine (real lease group, real dead-letter producer), applied to a
//! zero-latency in-process target ("NullKms", a HashMap). Measures events/s from daemon start to
//! the last alias written. Needs a broker: `source target/rig/env` after `tests/support/rig.sh up`,
//! then `cargo bench --bench e2e_kafka [-- N]` (default 100000).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aliassync::config::Config;
use aliassync::provider::{KeyFacts, KeyState, KmsAliases, LiveAlias, ProviderError};
use aliassync::reconcile::governed::Governed;
use aliassync::reconcile::TargetSpec;
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// The zero-latency in-process target.
#[derive(Default, Clone)]
struct NullKms(Arc<Mutex<HashMap<String, String>>>);

#[async_trait]
impl KmsAliases for NullKms {
    async fn list_each(&self, _p: &[String], _v: &mut (dyn FnMut(LiveAlias) + Send)) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn get_alias(&self, a: &str) -> Result<Option<String>, ProviderError> {
        Ok(self.0.lock().unwrap().get(a).cloned())
    }
    async fn create_alias(&self, a: &str, k: &str) -> Result<(), ProviderError> {
        self.0.lock().unwrap().insert(a.into(), k.into());
        Ok(())
    }
    async fn update_alias(&self, a: &str, k: &str) -> Result<(), ProviderError> {
        self.create_alias(a, k).await
    }
    async fn delete_alias(&self, a: &str, _c: Option<&str>) -> Result<(), ProviderError> {
        self.0.lock().unwrap().remove(a);
        Ok(())
    }
    /// Every key exists and is Enabled (the pre-flight's describe is part of the measured path).
    async fn describe_key(&self, k: &str) -> Result<Option<KeyFacts>, ProviderError> {
        let (spec, usage) = ("SYMMETRIC_DEFAULT".into(), "ENCRYPT_DECRYPT".into());
        Ok(Some(KeyFacts { key_id: k.into(), state: KeyState::Enabled, spec, usage }))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    aliassync::telemetry::logging::init(aliassync::config::LogFormat::Text, "warn");
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let brokers = std::env::var("KAFKA_BROKERS").expect("KAFKA_BROKERS (source target/rig/env)");
    let topic = format!("bench-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos());
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let t = NewTopic::new(&topic, 3, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    admin.create_topics([&t], &AdminOptions::new()).await.unwrap();

    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap();
    let t0 = Instant::now();
    let mut futs = Vec::with_capacity(n);
    for i in 0..n {
        let alias = format!("alias/app/bench/{i:07}");
        let v = format!(
            r#"{{"schema":1,"alias":"{alias}","revision":1,"targets":{{"a":"1234abcd-12ab-34cd-56ef-{i:012x}","b":"mrk-1234abcd12ab34cd56ef{i:012x}"}}}}"#
        );
        let p = p.clone();
        let t = topic.clone();
        futs.push(async move { p.send(FutureRecord::to(&t).key(&alias).payload(&v), Duration::from_secs(60)).await });
        if futs.len() == 10_000 {
            futures::future::join_all(futs.drain(..)).await.into_iter().for_each(|r| {
                r.map_err(|(e, _)| e).unwrap();
            });
        }
    }
    futures::future::join_all(futs).await.into_iter().for_each(|r| {
        r.map_err(|(e, _)| e).unwrap();
    });
    println!("produced {n} events in {:.2}s", t0.elapsed().as_secs_f64());

    let toml = format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{topic}"
[ownership]
managed_prefixes = ["alias/app/"]
[safety]
preflight = false
[metrics]
listen = "127.0.0.1:0"
[targets.a]
provider = "aws"
region = "us-east-1"
credentials = "env:UNUSED"
rate_limit_per_second = 10000
concurrency = 64
[targets.b]
provider = "aws"
region = "eu-west-1"
credentials = "env:UNUSED"
rate_limit_per_second = 10000
concurrency = 64
"#
    );
    let cfg = Config::from_sources(&toml, std::iter::empty()).unwrap();
    let fakes = [NullKms::default(), NullKms::default()];
    let specs = fakes
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = ["a", "b"][i];
            TargetSpec {
                id: i as u16,
                name: name.into(),
                provider: Arc::new(Governed::new(Arc::new(f.clone()), name, "null", 1e9, 1e9)),
                concurrency: 64,
                mode: Default::default(),
                prune: false,
            }
        })
        .collect();
    let done = {
        let fakes = fakes.clone();
        async move {
            loop {
                if fakes.iter().all(|f| f.0.lock().unwrap().len() == n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let start = Instant::now();
    let timing = Arc::new(Mutex::new(None));
    let tm = timing.clone();
    let stop = async move {
        done.await;
        *tm.lock().unwrap() = Some(start.elapsed());
    };
    aliassync::daemon::run_with(cfg, specs, stop).await.unwrap();
    let took = timing.lock().unwrap().unwrap();
    println!(
        "e2e: {n} events (x2 targets) from daemon start to the last write at the zero-latency in-process target (NullKms): {:.2}s = {:.0} events/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
