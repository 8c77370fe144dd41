//! The topics the daemon owns (lease topic, dead-letter topic): their metadata is read first and only the
//! missing ones are created, so a principal without CREATE starts against topics made for it. The lease
//! topic's partition count is what the leases hash over, whatever the config says.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// A topic the daemon needs, and how to create it if it is missing.
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub configs: &'a [(&'a str, &'a str)],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The principal lacks an ACL: no retry helps, the operator must grant it or create the topic.
    #[error("{0}")]
    NotAuthorized(String),
    /// Brokers unreachable, a timeout, a topic still being created: retry.
    #[error("{0}")]
    Unavailable(String),
}

/// The broker's refusal to create `topic` → the error the operator reads.
pub fn create_refused(topic: &str, code: RDKafkaErrorCode) -> TopicError {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            TopicError::NotAuthorized(format!(
                "topic {topic} does not exist and this principal may not create it ({code:?}); fix: create {topic} \
                 (e.g. kafka-topics.sh --create --topic {topic}), or grant the principal the CREATE ACL on topic \
                 {topic} (or on the cluster)"
            ))
        }
        _ => TopicError::Unavailable(format!("create topic {topic}: {code:?}")),
    }
}

/// Partition count of each existing topic among `names` (absent = missing). A topic the principal may not
/// DESCRIBE is an error naming that ACL.
fn existing(base: &ClientConfig, names: &[&str]) -> Result<BTreeMap<String, i32>, TopicError> {
    // A consumer's metadata requests never auto-create topics (allow.auto.create.topics=false).
    let c: BaseConsumer = base.create().map_err(|e| TopicError::Unavailable(format!("metadata client: {e}")))?;
    let mut out = BTreeMap::new();
    for &name in names {
        let md = c
            .fetch_metadata(Some(name), Duration::from_secs(10))
            .map_err(|e| TopicError::Unavailable(format!("metadata of {name}: {e}")))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == name) else { continue };
        match t.error().map(RDKafkaErrorCode::from) {
            None if !t.partitions().is_empty() => {
                out.insert(name.to_string(), t.partitions().len() as i32);
            }
            None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {}
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                return Err(TopicError::NotAuthorized(format!(
                    "this principal may not describe topic {name}; fix: grant it the DESCRIBE ACL on topic {name}"
                )))
            }
            Some(e) => return Err(TopicError::Unavailable(format!("metadata of {name}: {e:?}"))),
        }
    }
    Ok(out)
}

/// Reads the topics' metadata and creates only the missing ones. Returns each topic's partition count.
pub async fn ensure_topics(base: &ClientConfig, specs: &[TopicSpec<'_>]) -> Result<BTreeMap<String, i32>, TopicError> {
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    let found = tokio::task::block_in_place(|| existing(base, &names))?;
    let missing: Vec<&TopicSpec<'_>> = specs.iter().filter(|s| !found.contains_key(s.name)).collect();
    for s in specs.iter().filter(|s| found.contains_key(s.name)) {
        tracing::debug!(topic = s.name, partitions = found[s.name], "topic exists; not creating it");
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let admin: AdminClient<DefaultClientContext> =
        base.create().map_err(|e| TopicError::Unavailable(format!("admin client: {e}")))?;
    let topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|s| {
            // Replication -1: the broker's default.replication.factor.
            s.configs
                .iter()
                .fold(NewTopic::new(s.name, s.partitions, TopicReplication::Fixed(-1)), |t, (k, v)| t.set(k, v))
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = admin
        .create_topics(topics.iter(), &opts)
        .await
        .map_err(|e| TopicError::Unavailable(format!("create topics: {e}")))?;
    for r in res {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created topic"),
            // Another instance created it meanwhile: its partition count is read below.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(create_refused(&t, e)),
        }
    }
    let all = tokio::task::block_in_place(|| existing(base, &names))?;
    match names.iter().find(|n| !all.contains_key(**n)) {
        // Created, but the metadata does not show it yet: the caller retries.
        Some(n) => Err(TopicError::Unavailable(format!("topic {n} not in the metadata yet"))),
        None => Ok(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_creation_names_the_topic_and_the_acl_and_is_not_retried() {
        for code in [RDKafkaErrorCode::TopicAuthorizationFailed, RDKafkaErrorCode::ClusterAuthorizationFailed] {
            let e = create_refused("desired.leases", code);
            let TopicError::NotAuthorized(text) = &e else { panic!("{e:?}") };
            assert!(text.contains("topic desired.leases does not exist"), "{text}");
            assert!(text.contains("CREATE ACL on topic desired.leases (or on the cluster)"), "{text}");
        }
        assert!(matches!(create_refused("x", RDKafkaErrorCode::RequestTimedOut), TopicError::Unavailable(_)));
    }
}
