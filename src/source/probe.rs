//! The start-up connection check: before the daemon creates its topics it asks the brokers for metadata with
//! a client of its own, whose error callback sees librdkafka's per-connection errors (the admin client never
//! polls them). A broker that is down or still starting is waited for; a TLS failure is not, because no retry
//! can fix a certificate the client does not trust: the daemon exits with the broker's own account of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// How long one check waits for an answer before calling the brokers unavailable (the caller retries).
const WINDOW: Duration = Duration::from_secs(5);

/// A connection failure that retrying does not heal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// TLS handshake or certificate verification failed (`ssl.*` settings, or the broker's certificate).
    Tls,
    /// SASL authentication failed (`sasl.*` settings, or the broker's user).
    Authentication,
}

impl Fault {
    /// Whether the daemon gives up at start on this fault. TLS: yes. SASL: no, a wrong password is waited
    /// for as a down broker is (the broker's user may be created or fixed after the daemon starts; the
    /// log says "Authentication failed" meanwhile).
    pub fn fatal_at_start(self) -> bool {
        match self {
            Fault::Tls => true,
            Fault::Authentication => false,
        }
    }
}

/// librdkafka's error code → the fault it reveals, if any. Everything else (connection refused, name
/// resolution, timeouts, all brokers down, a disconnect mid-handshake, which librdkafka reports as a
/// transport error) is what a broker that is down or restarting looks like.
pub fn classify(code: RDKafkaErrorCode) -> Option<Fault> {
    match code {
        RDKafkaErrorCode::SSL => Some(Fault::Tls),
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => Some(Fault::Authentication),
        _ => None,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// Retrying cannot help: the message names the brokers and the failure.
    Fatal(String),
    /// No answer (yet): wait and try again.
    Unavailable(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Fatal(m) | ProbeError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Records librdkafka's global errors instead of logging each one (the outcome of the check is logged).
#[derive(Default)]
struct ProbeContext {
    /// The first error that is fatal at start.
    fatal: Mutex<Option<(Fault, String)>>,
    /// The last error of any kind, for the "unavailable" message.
    last: Mutex<Option<String>>,
}

impl ClientContext for ProbeContext {
    // The daemon's other clients log the same connection failures; this one only reports its verdict.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(?level, fac, message, "Kafka connection check");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "Kafka connection check");
        if let Some(f) = error.rdkafka_error_code().and_then(classify).filter(|f| f.fatal_at_start()) {
            self.fatal.lock().unwrap().get_or_insert((f, reason.to_string()));
        }
        *self.last.lock().unwrap() = Some(reason.to_string());
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {} // never produces
}

/// Asks the brokers for `topic`'s metadata (the topic need not exist). Ok once a broker answers; the first
/// TLS failure ends the check at once; otherwise gives up after a few seconds.
pub async fn check(base: &ClientConfig, topic: &str) -> Result<(), ProbeError> {
    check_within(base, topic, WINDOW).await
}

async fn check_within(base: &ClientConfig, topic: &str, window: Duration) -> Result<(), ProbeError> {
    let base = base.clone();
    let topic = topic.to_string();
    // The blocking check stops within a poll interval when this future is dropped (e.g. on SIGTERM).
    let cancelled = Arc::new(AtomicBool::new(false));
    struct Cancel(Arc<AtomicBool>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _cancel = Cancel(cancelled.clone());
    tokio::task::spawn_blocking(move || check_blocking(&base, &topic, window, &cancelled))
        .await
        .unwrap_or_else(|e| Err(ProbeError::Unavailable(format!("connection check: {e}"))))
}

fn check_blocking(
    base: &ClientConfig,
    topic: &str,
    window: Duration,
    cancelled: &AtomicBool,
) -> Result<(), ProbeError> {
    let brokers = base.get("bootstrap.servers").unwrap_or_default().to_string();
    let producer: BaseProducer<ProbeContext> = base
        .clone()
        // A producer's metadata request may create the topic on a broker with auto.create.topics.enable; the
        // desired topic must be created by its owner, compacted.
        .set("allow.auto.create.topics", "false")
        .create_with_context(ProbeContext::default())
        .map_err(|e| ProbeError::Fatal(redact(&format!("Kafka client: {e}"), base)))?;
    let ctx = producer.context().clone();
    let deadline = Instant::now() + window;
    loop {
        // A metadata answer from any broker wins, even if another bootstrap broker failed its handshake.
        if producer.client().fetch_metadata(Some(topic), Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        producer.poll(Duration::from_millis(100)); // delivers librdkafka's errors to the context
        if let Some((fault, reason)) = ctx.fatal.lock().unwrap().clone() {
            return Err(ProbeError::Fatal(redact(&fatal_message(&brokers, fault, &reason), base)));
        }
        if Instant::now() >= deadline || cancelled.load(Ordering::Relaxed) {
            let last = ctx.last.lock().unwrap().clone().unwrap_or_else(|| format!("no answer within {window:?}"));
            return Err(ProbeError::Unavailable(redact(&format!("Kafka {brokers}: {last}"), base)));
        }
    }
}

fn fatal_message(brokers: &str, fault: Fault, reason: &str) -> String {
    let (what, fix) = match fault {
        Fault::Tls => (
            "TLS failure",
            "kafka.properties ssl.* (ssl.ca.location: the CA that signed the broker's certificate), or the \
             broker's certificate (it must name the host or IP of kafka.brokers)",
        ),
        Fault::Authentication => ("authentication failed", "kafka.properties sasl.*, or the broker's user"),
    };
    format!("Kafka {brokers}: {what}: {reason}; fix: {fix}")
}

/// Removes the value of every secret-bearing property from `msg`: librdkafka does not echo them, but the
/// daemon's output must stay clean whatever a future version or a broker puts in an error string.
fn redact(msg: &str, base: &ClientConfig) -> String {
    let mut out = msg.to_string();
    // config_map() masks the values librdkafka calls sensitive; get() has the real ones.
    for k in base.config_map().into_keys().filter(|k| k.contains("password") || k.contains("secret")) {
        match base.get(k) {
            Some(v) if !v.is_empty() => out = out.replace(v, "[redacted]"),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_fatal_at_start_and_a_down_broker_is_waited_for() {
        assert_eq!(classify(RDKafkaErrorCode::SSL), Some(Fault::Tls));
        assert!(Fault::Tls.fatal_at_start());
        for code in [RDKafkaErrorCode::Authentication, RDKafkaErrorCode::SaslAuthenticationFailed] {
            assert_eq!(classify(code), Some(Fault::Authentication), "{code:?}");
        }
        // A wrong SASL password is waited for (tests/e2e_systemd.rs: never ready, SIGTERM exits 0).
        assert!(!Fault::Authentication.fatal_at_start());
        // What a broker that is down, starting, restarting or unresolvable looks like.
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::Resolve,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::BrokerNotAvailable,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotCoordinator,
        ] {
            assert_eq!(classify(code), None, "{code:?}");
        }
    }

    #[test]
    fn the_context_keeps_the_first_fatal_error_and_the_last_of_any_kind() {
        let ctx = ProbeContext::default();
        ctx.error(KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "b:1/bootstrap: Connection refused");
        assert!(ctx.fatal.lock().unwrap().is_none(), "a refused connection is not fatal");
        ctx.error(KafkaError::Global(RDKafkaErrorCode::Authentication), "b:1/bootstrap: SASL authentication error");
        assert!(ctx.fatal.lock().unwrap().is_none(), "SASL failures are waited for");
        ctx.error(KafkaError::Global(RDKafkaErrorCode::SSL), "ssl://b:1/bootstrap: SSL handshake failed: verify");
        ctx.error(KafkaError::Global(RDKafkaErrorCode::SSL), "ssl://b:1/bootstrap: a later one");
        ctx.error(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down");
        let (fault, reason) = ctx.fatal.lock().unwrap().clone().unwrap();
        assert_eq!((fault, reason.as_str()), (Fault::Tls, "ssl://b:1/bootstrap: SSL handshake failed: verify"));
        assert_eq!(ctx.last.lock().unwrap().as_deref(), Some("1/1 brokers are down"));
    }

    #[test]
    fn messages_name_the_brokers_and_the_fix_and_never_a_secret() {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", "k1:9093")
            .set("ssl.key.password", "kp-Secret-123")
            .set("sasl.password", "sp-Secret-456")
            .set("ssl.ca.location", "/etc/ca.pem");
        let msg = fatal_message("k1:9093", Fault::Tls, "ssl://k1:9093/bootstrap: certificate verify failed");
        assert!(msg.starts_with("Kafka k1:9093: TLS failure: ssl://k1:9093/bootstrap: certificate verify failed"));
        assert!(msg.contains("ssl.ca.location"), "{msg}");
        let leaky = "bad key kp-Secret-123 or sp-Secret-456 (ca /etc/ca.pem)";
        assert_eq!(redact(leaky, &base), "bad key [redacted] or [redacted] (ca /etc/ca.pem)");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_that_is_not_there_is_unavailable_not_fatal() {
        // Port 9 on loopback: nothing listens, so every connection is refused.
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", "127.0.0.1:9");
        let t0 = Instant::now();
        match check_within(&base, "t", Duration::from_secs(1)).await {
            Err(ProbeError::Unavailable(m)) => assert!(m.starts_with("Kafka 127.0.0.1:9: "), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(4), "bounded: {:?}", t0.elapsed());
    }
}
