//! Creates the topics the daemon owns (lease topic, dead-letter topic) when they are missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

pub async fn ensure_topic(
    base: &ClientConfig,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = base.create().map_err(|e| format!("admin client: {e}"))?;
    // Replication -1: the broker's default.replication.factor.
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = admin.create_topics([&topic], &opts).await.map_err(|e| format!("create topic {name}: {e}"))?;
    for r in res {
        match r {
            Ok(_) => tracing::info!(topic = name, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("create topic {t}: {e}")),
        }
    }
    Ok(())
}
