//! Keeps one target's temporary credentials fresh: resolves them again before they expire, installs them in the
//! provider's [`SharedCredentials`], publishes the expiry gauge, and retries with backoff when the source fails.
//! No restart, no SIGHUP needed (SIGHUP refreshes at once).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::{CredentialError, CredentialSource, Resolved};
use crate::provider::SharedCredentials;
use crate::telemetry::metrics::metrics;

/// Backoff after a failed resolution: 1 s doubling to 60 s. A target whose credentials cannot be resolved is
/// paused (its calls fail as unauthenticated), so waiting longer than a minute only delays its return.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// When to resolve again: a quarter of the lifetime before expiry, at least 10 s and at most 15 min before it,
/// and never sooner than 1 s from now (an already-expiring answer must not spin).
pub fn refresh_delay(now: SystemTime, resolved_at: SystemTime, expires_at: SystemTime) -> Duration {
    let lifetime = expires_at.duration_since(resolved_at).unwrap_or_default();
    let margin = (lifetime / 4).clamp(Duration::from_secs(10), Duration::from_secs(15 * 60));
    let until_expiry = expires_at.duration_since(now).unwrap_or_default();
    until_expiry.saturating_sub(margin).max(Duration::from_secs(1))
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A running refresher. Dropping it stops the task.
pub struct Refresher {
    now: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Refresher {
    /// Resolve again at once (SIGHUP).
    pub fn refresh_now(&self) {
        self.now.notify_one();
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs `r` and publishes its expiry; returns whether the keys changed.
pub fn install(target: &str, shared: &SharedCredentials, r: Resolved) -> bool {
    match r.expires_at {
        Some(t) => metrics().credentials_expiry.with_label_values(&[target]).set(unix_seconds(t)),
        None => {
            let _ = metrics().credentials_expiry.remove_label_values(&[target]);
        }
    }
    shared.replace(r.creds)
}

/// Counts and logs a failed resolution (never a secret: messages name the service and URL only).
pub fn report_failure(target: &str, source: &dyn CredentialSource, e: &CredentialError, retry_in: Duration) {
    metrics().credentials_refresh_failures.with_label_values(&[target, e.kind.as_str()]).inc();
    tracing::warn!(
        target_name = %target,
        source = %source.describe(),
        reason = e.kind.as_str(),
        error = %e,
        retry_in_s = retry_in.as_secs_f64(),
        "credentials: cannot resolve; the target stays paused (or keeps its current credentials until they expire)"
    );
}

/// Starts refreshing target `target`. `first` is what start-up resolved (None: it failed, so try again soon).
/// `changed` is notified whenever new keys are installed, so a target paused for its credentials is probed at
/// once instead of at its next backoff.
pub fn spawn(
    target: String,
    source: Arc<dyn CredentialSource>,
    shared: SharedCredentials,
    first: Option<(SystemTime, Option<SystemTime>)>,
    changed: Arc<Notify>,
) -> Refresher {
    let now = Arc::new(Notify::new());
    let wake = now.clone();
    let task = tokio::spawn(async move {
        let mut retry = RETRY_MIN;
        // (resolved_at, expires_at) of what is installed.
        let mut held = first;
        loop {
            let wait = match held {
                Some((at, Some(exp))) => Some(refresh_delay(SystemTime::now(), at, exp)),
                // Long-lived keys from a chain: re-read only on SIGHUP.
                Some((_, None)) => None,
                None => Some(retry),
            };
            match wait {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = wake.notified() => {}
                    }
                }
                None => wake.notified().await,
            }
            let at = SystemTime::now();
            match source.resolve().await {
                Ok(r) => {
                    let exp = r.expires_at;
                    let did_change = install(&target, &shared, r);
                    tracing::info!(
                        target_name = %target,
                        source = %source.describe(),
                        expires_in_s = exp.and_then(|e| e.duration_since(at).ok()).map(|d| d.as_secs()),
                        changed = did_change,
                        "credentials: refreshed"
                    );
                    if did_change {
                        changed.notify_one();
                    }
                    held = Some((at, exp));
                    retry = RETRY_MIN;
                }
                Err(e) => {
                    // Keep what is installed (it may still be valid until it expires); try again with backoff.
                    report_failure(&target, source.as_ref(), &e, retry);
                    held = None;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    });
    Refresher { now, task }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{Credentials, Secret};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn refresh_lands_a_quarter_of_the_lifetime_before_expiry() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_delay(t0, t0, t0 + hour), hour - Duration::from_secs(900));
        // Six-hour instance credentials: at most 15 min early.
        assert_eq!(refresh_delay(t0, t0, t0 + 6 * hour), 6 * hour - Duration::from_secs(900));
        // A minute-long session: 15 s early.
        assert_eq!(refresh_delay(t0, t0, t0 + Duration::from_secs(60)), Duration::from_secs(45));
        // Already past its refresh point, or expired: soon, but never a spin.
        assert_eq!(refresh_delay(t0 + hour, t0, t0 + hour), Duration::from_secs(1));
    }

    struct Counting {
        calls: AtomicUsize,
        fail_first: usize,
        lifetime: Duration,
    }

    #[async_trait::async_trait]
    impl CredentialSource for Counting {
        async fn resolve(&self) -> Result<Resolved, CredentialError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err(CredentialError::unreachable("sts at http://127.0.0.1:1 unreachable"));
            }
            Ok(Resolved {
                creds: Credentials {
                    access_key_id: format!("ASIA{n}"),
                    secret_access_key: Secret::new("s"),
                    session_token: Some(Secret::new("t")),
                },
                expires_at: Some(SystemTime::now() + self.lifetime),
            })
        }
        async fn identity(&self, _: &Credentials) -> Result<String, CredentialError> {
            Ok("test".into())
        }
        fn describe(&self) -> String {
            "counting".into()
        }
        fn refreshes(&self) -> bool {
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_before_expiry_and_retries_with_backoff() {
        let src = Arc::new(Counting { calls: AtomicUsize::new(0), fail_first: 2, lifetime: Duration::from_secs(60) });
        let shared = SharedCredentials::unresolved();
        let changed = Arc::new(Notify::new());
        let _r = spawn("t".into(), src.clone(), shared.clone(), None, changed.clone());
        // Fails at 1 s and 3 s (backoff 1, 2), succeeds at 7 s.
        tokio::time::sleep(Duration::from_millis(6_500)).await;
        assert!(shared.current().is_err());
        assert_eq!(src.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(shared.current().unwrap().access_key_id, "ASIA2");
        // Minute-long credentials: the next resolve 45 s later, well before they expire.
        tokio::time::sleep(Duration::from_secs(44)).await;
        assert_eq!(src.calls.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(shared.current().unwrap().access_key_id, "ASIA3");
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_now_resolves_at_once() {
        let src = Arc::new(Counting { calls: AtomicUsize::new(0), fail_first: 0, lifetime: Duration::from_secs(3600) });
        let shared = SharedCredentials::unresolved();
        let r =
            spawn("t2".into(), src.clone(), shared.clone(), Some((SystemTime::now(), None)), Arc::new(Notify::new()));
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(src.calls.load(Ordering::SeqCst), 0, "long-lived keys wait for SIGHUP");
        r.refresh_now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
        assert_eq!(shared.current().unwrap().access_key_id, "ASIA0");
    }
}
