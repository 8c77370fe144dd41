//! The error policy, in one place: what the engine does with a failed call, by the provider's error class
//! (DESIGN §2.3, §2.8). Per alias: retry with backoff, park (wait, with no attempt counted, until the target
//! resumes) or dead-letter. Per target: pause, when the failure is about the target's credentials or
//! permissions, so one expired token does not dead-letter every alias.
//!
//! Access denied is ambiguous: the principal's policy denies every call (a target problem), a key policy
//! denies calls naming that key (one alias). A write denied is therefore checked with a probe that needs no
//! key (one listing page): denied too → pause the target; allowed → dead-letter the alias.

use crate::provider::{AuthFailure, ErrorClass};

/// Why a target is paused: the `reason` label of `aliassync_target_paused` (bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseReason {
    CredentialsExpired,
    CredentialsInvalid,
    Signature,
    ClockSkew,
    AccessDenied,
    /// The target's credential source (instance metadata, STS, IAM) has not answered yet.
    CredentialsUnresolved,
}

impl PauseReason {
    pub const ALL: [PauseReason; 6] = [
        PauseReason::CredentialsExpired,
        PauseReason::CredentialsInvalid,
        PauseReason::Signature,
        PauseReason::ClockSkew,
        PauseReason::AccessDenied,
        PauseReason::CredentialsUnresolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::CredentialsExpired => "credentials_expired",
            PauseReason::CredentialsInvalid => "credentials_invalid",
            PauseReason::Signature => "signature",
            PauseReason::ClockSkew => "clock_skew",
            PauseReason::AccessDenied => "access_denied",
            PauseReason::CredentialsUnresolved => "credentials_unresolved",
        }
    }
}

/// What to do after a failed reconcile call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry the alias after its backoff.
    Retry,
    /// Hold the alias, no attempt counted, until the target resumes (then at once).
    Park,
    /// Permanent for this alias: dead-letter it.
    DeadLetter,
    /// No call of the target can succeed: pause it (the alias is parked).
    Pause(PauseReason),
    /// Access denied on a call naming a key: probe without a key to tell the target's policy from the key's.
    CheckAccess,
}

/// The verdict for a reconcile call that failed with `class` after `attempts` earlier attempts.
/// `paused`: the target is paused (by this or another alias); nothing is dead-lettered meanwhile, since
/// a failure then may only mean that the credentials or permissions it paused for are still wrong.
pub fn on_call(class: ErrorClass, attempts: u32, consistency_retries: u32, paused: bool) -> Verdict {
    if paused {
        return Verdict::Park;
    }
    match class {
        ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::AlreadyExists => Verdict::Retry,
        // Right after a key is created or changed, clouds briefly answer NotFound/invalid state.
        ErrorClass::NotFound | ErrorClass::InvalidState if attempts < consistency_retries => Verdict::Retry,
        ErrorClass::NotFound | ErrorClass::InvalidState => Verdict::DeadLetter,
        ErrorClass::Unauthenticated(f) => Verdict::Pause(auth_reason(f)),
        ErrorClass::AccessDenied => Verdict::CheckAccess,
        ErrorClass::Permanent => Verdict::DeadLetter,
    }
}

/// A call that needs no key (a listing, a probe) failed with `class`: the pause reason if that failure is
/// the target's; None if it says nothing about credentials or permissions (e.g. transient).
pub fn on_keyless_call(class: ErrorClass) -> Option<PauseReason> {
    match class {
        ErrorClass::Unauthenticated(f) => Some(auth_reason(f)),
        ErrorClass::AccessDenied => Some(PauseReason::AccessDenied),
        _ => None,
    }
}

fn auth_reason(f: AuthFailure) -> PauseReason {
    match f {
        AuthFailure::Expired => PauseReason::CredentialsExpired,
        AuthFailure::Invalid => PauseReason::CredentialsInvalid,
        AuthFailure::Signature => PauseReason::Signature,
        AuthFailure::ClockSkew => PauseReason::ClockSkew,
        AuthFailure::Unresolved => PauseReason::CredentialsUnresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    #[test]
    fn every_class_has_one_verdict() {
        let cases = [
            (Throttled, 0, Verdict::Retry),
            (Throttled, 99, Verdict::Retry),
            (Transient, 99, Verdict::Retry),
            (AlreadyExists, 0, Verdict::Retry),
            (NotFound, 0, Verdict::Retry),
            (NotFound, 1, Verdict::Retry),
            (NotFound, 2, Verdict::DeadLetter),
            (InvalidState, 1, Verdict::Retry),
            (InvalidState, 2, Verdict::DeadLetter),
            (Permanent, 0, Verdict::DeadLetter),
            (Unauthenticated(AuthFailure::Expired), 0, Verdict::Pause(PauseReason::CredentialsExpired)),
            (Unauthenticated(AuthFailure::Invalid), 0, Verdict::Pause(PauseReason::CredentialsInvalid)),
            (Unauthenticated(AuthFailure::Signature), 0, Verdict::Pause(PauseReason::Signature)),
            (Unauthenticated(AuthFailure::ClockSkew), 7, Verdict::Pause(PauseReason::ClockSkew)),
            (AccessDenied, 0, Verdict::CheckAccess),
        ];
        for (class, attempts, want) in cases {
            assert_eq!(on_call(class, attempts, 2, false), want, "{class:?} after {attempts}");
        }
    }

    #[test]
    fn a_paused_target_parks_everything_and_dead_letters_nothing() {
        for class in [
            Throttled,
            Transient,
            AlreadyExists,
            NotFound,
            InvalidState,
            Permanent,
            AccessDenied,
            Unauthenticated(AuthFailure::Expired),
        ] {
            assert_eq!(on_call(class, 99, 2, true), Verdict::Park, "{class:?}");
        }
    }

    #[test]
    fn keyless_failures_pause_only_for_credentials_and_permissions() {
        assert_eq!(on_keyless_call(AccessDenied), Some(PauseReason::AccessDenied));
        assert_eq!(on_keyless_call(Unauthenticated(AuthFailure::Expired)), Some(PauseReason::CredentialsExpired));
        assert_eq!(on_keyless_call(Unauthenticated(AuthFailure::Signature)), Some(PauseReason::Signature));
        for class in [Throttled, Transient, NotFound, InvalidState, AlreadyExists, Permanent] {
            assert_eq!(on_keyless_call(class), None, "{class:?}");
        }
    }

    #[test]
    fn reasons_are_bounded_metric_labels() {
        let labels: std::collections::HashSet<&str> = PauseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), PauseReason::ALL.len());
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
