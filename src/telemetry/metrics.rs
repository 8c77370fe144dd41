//! The instrumentation spec (DESIGN §2.6): base units, `_total` only on counters, bounded labels only
//! (target, provider, operation, outcome/code, kind, reason). Alias names never become labels.

use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub dead_letters: IntCounterVec,
    /// Dead letters Kafka refused for good, or skipped with the delivery queue full.
    pub dead_letter_failures: IntCounterVec,
    pub desired_aliases: IntGaugeVec,
    /// Drift of the last scan, minus what was repaired since.
    pub drift_aliases: IntGaugeVec,
    pub drift_detected: IntCounterVec,
    pub last_scan_success: GaugeVec,
    pub last_scan_duration: GaugeVec,
    pub scans: IntCounterVec,
    pub list_pages: IntCounterVec,
    pub source_lag: IntGauge,
    pub reconcile: IntCounterVec,
    pub provider_requests: IntCounterVec,
    pub provider_duration: HistogramVec,
    /// Record timestamp of a change → the owner applied it (DESIGN §2.9).
    pub apply_latency: HistogramVec,
    /// Status-topic records, by delivery outcome (ok, failed).
    pub status_records: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub target_lag_events: IntGaugeVec,
    pub target_lag_seconds: GaugeVec,
    /// 1 while an owned target is paused for a credential or authorisation failure, by reason; 0 otherwise.
    pub target_paused: IntGaugeVec,
    /// 1 for the state each target is in on this instance (waiting, listing, running, paused, draining).
    pub target_state: IntGaugeVec,
    pub owned_targets: IntGauge,
    /// When each target's temporary credentials expire (absent for long-lived keys).
    pub credentials_expiry: GaugeVec,
    /// Failed credential resolutions (instance metadata, STS, IAM), by reason.
    pub credentials_refresh_failures: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub rate_limit: GaugeVec,
    pub ready: IntGauge,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new_custom(Some("aliassync".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(&r, IntCounterVec::new(Opts::new(name, help), labels).unwrap())
        };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| reg(&r, IntGaugeVec::new(Opts::new(name, help), labels).unwrap());
        let fgauge =
            |name: &str, help: &str, labels: &[&str]| reg(&r, GaugeVec::new(Opts::new(name, help), labels).unwrap());
        let m = Metrics {
            events: counter(
                "events_total",
                "Desired-state events consumed, by outcome (applied, stale, invalid).",
                &["outcome"],
            ),
            dead_letters: counter(
                "dead_letters_total",
                "Events or reconciles sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            dead_letter_failures: counter(
                "dead_letter_failures_total",
                "Dead letters Kafka refused for good (each refusal: the original, then its reduced form), or skipped with the delivery queue full, by reason.",
                &["reason"],
            ),
            desired_aliases: gauge("desired_aliases", "Aliases the desired state holds per target.", &["target"]),
            drift_aliases: gauge(
                "drift_aliases",
                "Drifted aliases found by the last scan, by kind.",
                &["target", "kind"],
            ),
            drift_detected: counter(
                "drift_detected_total",
                "Drifted aliases found by scans, by kind (each scan counts what it finds, repaired or not).",
                &["target", "kind"],
            ),
            last_scan_success: fgauge(
                "last_scan_success_timestamp_seconds",
                "Unix time of the last complete listing of the target.",
                &["target"],
            ),
            last_scan_duration: fgauge(
                "last_scan_duration_seconds",
                "Duration of the last complete listing of the target.",
                &["target"],
            ),
            scans: counter(
                "scans_total",
                "Full listings of a target (drift scans), by outcome (ok, failed).",
                &["target", "outcome"],
            ),
            list_pages: counter("list_pages_total", "Listing pages fetched (each one read call).", &["target"]),
            source_lag: reg(
                &r,
                IntGauge::new("source_lag_events", "Desired-topic records not yet read, summed over partitions.")
                    .unwrap(),
            ),
            reconcile: counter(
                "reconcile_total",
                "Reconciles of one (target, alias), by action and outcome.",
                &["target", "action", "outcome"],
            ),
            provider_requests: counter(
                "provider_requests_total",
                "Cloud API calls, by operation and result code (ok or the error code).",
                &["target", "provider", "operation", "code"],
            ),
            provider_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("provider_request_duration_seconds", "Cloud API call latency.")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                    &["target", "operation"],
                )
                .unwrap(),
            ),
            apply_latency: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "apply_latency_seconds",
                        "From a change's record timestamp (produced) to the owner applying it in the target.",
                    )
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]),
                    &["target"],
                )
                .unwrap(),
            ),
            status_records: counter(
                "status_records_total",
                "Records sent to the status topic, by delivery outcome (ok, failed).",
                &["outcome"],
            ),
            queue_depth: gauge(
                "queue_depth",
                "Pending (target, alias) work items, including delayed retries.",
                &["target"],
            ),
            target_lag_events: gauge(
                "target_lag_events",
                "Desired-state changes not yet applied at the target (owner only).",
                &["target"],
            ),
            target_lag_seconds: fgauge(
                "target_lag_seconds",
                "Age of the oldest desired-state change not yet applied at the target (owner only).",
                &["target"],
            ),
            target_paused: gauge(
                "target_paused",
                "1 while the target is paused by a credential or authorisation failure (no writes, no dead letters; a probe resumes it), by reason (owner only).",
                &["target", "reason"],
            ),
            target_state: gauge(
                "target_state",
                "1 for the lifecycle state the target is in on this instance (waiting, listing, running, paused, draining), 0 for the others.",
                &["target", "state"],
            ),
            credentials_expiry: fgauge(
                "credentials_expiry_timestamp_seconds",
                "Unix time at which the target's temporary credentials expire; refreshed before then (absent for long-lived keys).",
                &["target"],
            ),
            credentials_refresh_failures: counter(
                "credentials_refresh_failures_total",
                "Failed resolutions of a target's credentials (instance metadata, STS, IAM), by reason (missing, unreachable, refused).",
                &["target", "reason"],
            ),
            owned_targets: reg(
                &r,
                IntGauge::new("owned_targets", "Targets this instance holds the lease for.").unwrap(),
            ),
            build_info: gauge("build_info", "Always 1; the version label tells the build.", &["version"]),
            rate_limit: fgauge(
                "rate_limit_per_second",
                "Current token-bucket rate per target and class (read, write), after throttling adjustments.",
                &["target", "class"],
            ),
            ready: reg(&r, IntGauge::new("ready", "1 once the desired state is rebuilt from the topic.").unwrap()),
            registry: r,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Known label values start at 0, so rate() and increase() see the first event.
        for o in ["applied", "stale", "invalid"] {
            m.events.with_label_values(&[o]);
        }
        for r in crate::event::Reason::ALL {
            m.dead_letters.with_label_values(&[r.as_str()]);
        }
        m.dead_letters.with_label_values(&["reconcile_failed"]);
        for o in ["ok", "failed"] {
            m.status_records.with_label_values(&[o]);
        }
        for r in crate::source::dead_letter::Refusal::ALL {
            m.dead_letter_failures.with_label_values(&[r.as_str()]);
        }
        // process_* (RSS, CPU, fds, start time): restart loops and the memory budget.
        let _ = m.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        m
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn metrics() -> &'static Metrics {
    &METRICS
}
