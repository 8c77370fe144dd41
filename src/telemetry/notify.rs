//! The systemd notification protocol (`Type=notify`): READY=1, STATUS=, RELOADING=1, STOPPING=1 and the
//! WATCHDOG=1 keep-alive. Every call is a no-op without `$NOTIFY_SOCKET`, so the daemon runs the same under
//! systemd, in a terminal and in tests.
//!
//! Watchdog: the pings come from a task on the async runtime, and each one is sent only after a probe has
//! passed: a freshly spawned task must be scheduled and finish, and the caller's blocking check (the daemon
//! takes the desired-state lock shared by the table reader and the reconcile workers) must return, both
//! within half the watchdog period. So the pings stop when the timer driver or the scheduler stalls (every
//! worker blocked, e.g. by a blocking call on the runtime or a deadlock), or when the shared state is stuck
//! behind a lock that is never released, and systemd then kills and restarts the service. Progress of work
//! is deliberately not required: an idle daemon makes none, and a cloud that is down is reported by metrics
//! and alerts, not fixed by a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        // Once at warn (a $NOTIFY_SOCKET that is not there), then quietly: the watchdog would repeat it forever.
        if WARNED.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, "sd_notify failed");
        } else {
            tracing::warn!(error = %e, socket = ?std::env::var_os("NOTIFY_SOCKET"), "sd_notify failed");
        }
    }
}

/// Whether a service manager listens (`$NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// READY=1: start-up (or a reload) is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS=: a one-line status shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// RELOADING=1 (with the MONOTONIC_USEC= that systemd 253+ wants), until the next [`ready`].
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status("reloading credentials and log level")]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("reloading credentials and log level")]),
    }
}

/// STOPPING=1: shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The ping period: half of `$WATCHDOG_USEC` when the watchdog is enabled for this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero()).map(|d| d / 2)
}

/// Starts the WATCHDOG=1 pings if systemd asked for them (see the module doc). `check` runs on the blocking
/// pool and must return `true` when the state it guards is healthy; it must not take longer than a moment.
pub fn spawn_watchdog<F>(check: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    let period = watchdog_period()?;
    let check = Arc::new(check);
    tracing::info!(period_ms = period.as_millis() as u64, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A check stuck on a lock must not pile up blocking threads: at most one runs at a time.
        let busy = Arc::new(AtomicBool::new(false));
        loop {
            tick.tick().await;
            if probe(period, &check, &busy).await {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::error!("watchdog probe failed (runtime or shared state stuck); not pinging systemd");
            }
        }
    }))
}

async fn probe<F>(within: Duration, check: &Arc<F>, busy: &Arc<AtomicBool>) -> bool
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    // The scheduler still runs new tasks.
    let scheduled = tokio::time::timeout(within, tokio::spawn(async {})).await;
    if !matches!(scheduled, Ok(Ok(()))) {
        return false;
    }
    if busy.swap(true, Ordering::AcqRel) {
        return false; // the previous check has not returned yet
    }
    let (check, flag) = (check.clone(), busy.clone());
    let job = tokio::task::spawn_blocking(move || {
        let ok = check();
        flag.store(false, Ordering::Release);
        ok
    });
    matches!(tokio::time::timeout(within, job).await, Ok(Ok(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_passes_when_healthy_and_fails_when_the_check_hangs() {
        let busy = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(|| true);
        assert!(probe(Duration::from_millis(500), &ok, &busy).await);
        let stuck = Arc::new(|| {
            std::thread::sleep(Duration::from_millis(400));
            true
        });
        assert!(!probe(Duration::from_millis(50), &stuck, &busy).await, "a slow check fails the probe");
        assert!(!probe(Duration::from_millis(50), &stuck, &busy).await, "and is not started twice");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(probe(Duration::from_millis(500), &ok, &busy).await, "healthy again once it returned");
        let unhealthy = Arc::new(|| false);
        assert!(!probe(Duration::from_millis(500), &unhealthy, &busy).await);
    }
}
