//! A target's lifecycle, in one lock with its lease gate:
//!
//! ```text
//! Waiting ──lease + rebuilt──▶ Listing ──listed──▶ Running ◀──probe ok── Paused
//!    ▲                            │                   │  └──refused──────▶ │
//!    └────── calls drained ◀── Draining ◀──lease lost or stop (any state) ─┘
//! ```
//!
//! The target task sets its phase (waiting, listing, running); the state adds what others change: a
//! pause (a refused call), the lease (the rebalance callback) and the calls in flight. Draining lasts
//! while the lease is gone (or the daemon stops) and calls are still in flight: a revocation waits on
//! it, so the next owner never writes before this one's calls land.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use super::policy::PauseReason;
use crate::telemetry::metrics::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No lease, or the desired state is not rebuilt yet.
    Waiting,
    /// The first listing runs; changes meanwhile are applied at once against an unknown live state.
    Listing,
    Running,
    /// The cloud refuses the target's credentials or permissions: only the probe calls it.
    Paused,
    /// The lease is gone (or the daemon stops) and calls are still in flight.
    Draining,
}

impl State {
    pub const ALL: [State; 5] = [State::Waiting, State::Listing, State::Running, State::Paused, State::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Listing => "listing",
            State::Running => "running",
            State::Paused => "paused",
            State::Draining => "draining",
        }
    }
}

/// What the target task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Phase {
    #[default]
    Waiting,
    Listing,
    Running,
}

#[derive(Debug, Default)]
struct Control {
    phase: Phase,
    paused: Option<PauseReason>,
    /// The lease: a call starts only while it is held.
    owned: bool,
    stopping: bool,
    /// Reconciles started and not finished (each may make several calls).
    calls: usize,
}

impl Control {
    fn state(&self) -> State {
        if self.calls > 0 && (!self.owned || self.stopping) {
            State::Draining
        } else if !self.owned || self.stopping || self.phase == Phase::Waiting {
            State::Waiting
        } else if self.paused.is_some() {
            State::Paused
        } else if self.phase == Phase::Listing {
            State::Listing
        } else {
            State::Running
        }
    }
}

pub(super) struct Controller {
    name: String,
    control: Mutex<Control>,
    idle: Condvar,
}

impl Controller {
    pub fn new(name: &str) -> Self {
        let c = Controller { name: name.into(), control: Mutex::new(Control::default()), idle: Condvar::new() };
        c.export(None, State::Waiting);
        c
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic elsewhere must not wedge the lease gate (its state stays consistent: plain fields).
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the control under its lock; logs and exports a state change.
    fn update<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        let mut c = self.lock();
        let before = c.state();
        let r = f(&mut c);
        let after = c.state();
        if c.calls == 0 {
            self.idle.notify_all();
        }
        drop(c);
        if before != after {
            tracing::info!(target_name = %self.name, from = before.as_str(), to = after.as_str(), "target state");
            self.export(Some(before), after);
        }
        r
    }

    fn export(&self, before: Option<State>, after: State) {
        let g = &metrics().target_state;
        match before {
            Some(b) => g.with_label_values(&[&self.name, b.as_str()]).set(0),
            None => {
                for s in State::ALL {
                    g.with_label_values(&[&self.name, s.as_str()]).set(0);
                }
            }
        }
        g.with_label_values(&[&self.name, after.as_str()]).set(1);
    }

    pub fn state(&self) -> State {
        self.lock().state()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.update(|c| c.phase = phase);
    }

    pub fn set_owned(&self, owned: bool) {
        self.update(|c| c.owned = owned);
    }

    pub fn stop(&self) {
        self.update(|c| c.stopping = true);
    }

    pub fn paused(&self) -> Option<PauseReason> {
        self.lock().paused
    }

    /// Sets the pause reason; returns the previous one, or None if it was already this one.
    pub fn pause(&self, reason: PauseReason) -> Option<Option<PauseReason>> {
        self.update(|c| (c.paused != Some(reason)).then(|| c.paused.replace(reason)))
    }

    /// Clears the pause; returns its reason if the target was paused.
    pub fn resume(&self) -> Option<PauseReason> {
        self.update(|c| c.paused.take())
    }

    /// Counts a reconcile in; false (nothing counted) when the lease is not held or the daemon stops.
    pub fn enter_call(&self) -> bool {
        self.update(|c| {
            let ok = c.owned && !c.stopping;
            c.calls += usize::from(ok);
            ok
        })
    }

    pub fn leave_call(&self) {
        self.update(|c| c.calls -= 1);
    }

    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    /// Waits until no call is in flight or `deadline` passes; returns the calls still in flight.
    pub fn wait_idle(&self, deadline: Instant) -> usize {
        let mut c = self.lock();
        while c.calls > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            c = self.idle.wait_timeout(c, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        c.calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_lease_the_phase_the_pause_and_the_calls() {
        let c = Controller::new("controller-test");
        assert_eq!(c.state(), State::Waiting);
        // No call starts without the lease.
        assert!(!c.enter_call());
        c.set_owned(true);
        assert_eq!(c.state(), State::Waiting, "owned, but the task has not started listing");
        c.set_phase(Phase::Listing);
        assert_eq!(c.state(), State::Listing);
        assert_eq!(c.pause(PauseReason::AccessDenied), Some(None));
        assert_eq!(c.pause(PauseReason::AccessDenied), None, "same reason: no change");
        assert_eq!(c.state(), State::Paused);
        c.set_phase(Phase::Running);
        assert_eq!(c.resume(), Some(PauseReason::AccessDenied));
        assert_eq!(c.state(), State::Running);
        assert!(c.enter_call());
        // The lease goes with a call in flight: draining until it ends, then waiting.
        c.set_owned(false);
        assert_eq!(c.state(), State::Draining);
        assert!(!c.enter_call());
        assert_eq!(c.wait_idle(Instant::now()), 1);
        c.leave_call();
        assert_eq!(c.state(), State::Waiting);
        assert_eq!(c.wait_idle(Instant::now() + std::time::Duration::from_secs(5)), 0);
        let m = metrics().render();
        assert!(m.contains("aliassync_target_state{state=\"waiting\",target=\"controller-test\"} 1"), "{m}");
        assert!(m.contains("aliassync_target_state{state=\"draining\",target=\"controller-test\"} 0"), "{m}");
    }

    #[test]
    fn stopping_drains_and_starts_nothing() {
        let c = Controller::new("controller-stop");
        c.set_owned(true);
        c.set_phase(Phase::Running);
        assert!(c.enter_call());
        c.stop();
        assert_eq!(c.state(), State::Draining);
        assert!(!c.enter_call());
        c.leave_call();
        assert_eq!(c.state(), State::Waiting);
    }
}
