//! Temporary credentials the emulator's STS / IAM / instance-metadata endpoints issue (Alibaba AssumeRole and
//! ECS RAM role, Huawei assume-agency and ECS securitykey), shared by every cloud: each session is an access
//! key id with a secret, a security token the KMS requests must carry, an expiry and the identity it acts
//! as. The KMS signature checks look a key up here when it is not a configured long-lived key.
//!
//! Lifetimes come from the request (e.g. `DurationSeconds`), unless `--sts-session-seconds` (or the setter)
//! forces a short one so tests can watch a client refresh within a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::wire::{random_alnum, Cloud};

/// One issued temporary credential.
#[derive(Clone)]
pub struct Session {
    pub cloud: Cloud,
    pub access_key_id: String,
    pub secret: String,
    /// What the client must send along (Alibaba `SecurityToken` / `x-acs-security-token`, Huawei
    /// `X-Security-Token`).
    pub token: String,
    pub expires: SystemTime,
    /// Whom the session acts as, e.g. `acs:ram::1234567890123456:assumed-role/x/aliassync-host` (Alibaba
    /// GetCallerIdentity's `Arn`).
    pub identity: String,
    /// The account (Alibaba UID, Huawei domain id) the session belongs to: the KMS state is scoped by it.
    pub account: String,
}

impl std::fmt::Debug for Session {
    // Never print the secret or the token, even in test logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cloud", &self.cloud)
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .field("identity", &self.identity)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn expired(&self) -> bool {
        SystemTime::now() >= self.expires
    }
}

#[derive(Default)]
pub struct Sessions {
    by_key: Mutex<HashMap<(Cloud, String), Session>>,
    /// Forces every new session's lifetime (tests of refresh); None = as requested.
    lifetime_override: Mutex<Option<Duration>>,
}

impl Sessions {
    /// Sets (or clears) the lifetime every session issued from now on gets, whatever the request asked.
    pub fn set_lifetime_override(&self, d: Option<Duration>) {
        *self.lifetime_override.lock().expect("sessions lock") = d;
    }

    /// The lifetime a session asked for `requested` gets.
    pub fn lifetime(&self, requested: Duration) -> Duration {
        self.lifetime_override.lock().expect("sessions lock").unwrap_or(requested)
    }

    /// Issues and registers a new session: access key id `<key_prefix><random>`, a random secret and token.
    pub fn issue(
        &self,
        cloud: Cloud,
        key_prefix: &str,
        requested: Duration,
        identity: impl Into<String>,
        account: impl Into<String>,
    ) -> Session {
        let s = Session {
            cloud,
            access_key_id: format!("{key_prefix}{}", random_alnum(24)),
            secret: random_alnum(40),
            token: format!("{}{}", key_prefix.trim_end_matches('.'), random_alnum(120)),
            expires: SystemTime::now() + self.lifetime(requested),
            identity: identity.into(),
            account: account.into(),
        };
        self.register(s.clone());
        s
    }

    /// Registers a session made elsewhere (replacing one with the same key id). Expired sessions are dropped
    /// here, so the map stays small however long a test runs.
    pub fn register(&self, s: Session) {
        let mut map = self.by_key.lock().expect("sessions lock");
        let stale = SystemTime::now() - Duration::from_secs(3600);
        map.retain(|_, v| v.expires > stale);
        map.insert((s.cloud, s.access_key_id.clone()), s);
    }

    /// The session with this key id, expired or not (the caller answers an expired one with its cloud's
    /// "token expired" error rather than "unknown key").
    pub fn lookup(&self, cloud: Cloud, access_key_id: &str) -> Option<Session> {
        self.by_key.lock().expect("sessions lock").get(&(cloud, access_key_id.to_string())).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_lookup_expire() {
        let s = Sessions::default();
        let a = s.issue(Cloud::Alibaba, "STS.", Duration::from_secs(900), "acs:ram::1:assumed-role/r/s", "1");
        assert!(a.access_key_id.starts_with("STS."));
        let got = s.lookup(Cloud::Alibaba, &a.access_key_id).unwrap();
        assert_eq!(got.secret, a.secret);
        assert!(!got.expired());
        assert!(s.lookup(Cloud::Huawei, &a.access_key_id).is_none());
        s.set_lifetime_override(Some(Duration::ZERO));
        let b = s.issue(Cloud::Huawei, "", Duration::from_secs(900), "agency", "d");
        assert!(s.lookup(Cloud::Huawei, &b.access_key_id).unwrap().expired());
        assert!(!format!("{b:?}").contains(&b.secret));
    }
}
