//! The decision table: desired vs live → one action. Pure.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Noop,
    Create(String),
    Update(String),
    Delete,
}

impl Action {
    pub fn label(&self) -> &'static str {
        match self {
            Action::Noop => "noop",
            Action::Create(_) => "create",
            Action::Update(_) => "update",
            Action::Delete => "delete",
        }
    }
}

/// `desired`: the key the alias must point at (None: must be absent); `live`: what the cloud has.
pub fn decide(desired: Option<&str>, live: Option<&str>, matches: impl Fn(&str, &str) -> bool) -> Action {
    match (desired, live) {
        (None, None) => Action::Noop,
        (None, Some(_)) => Action::Delete,
        (Some(d), None) => Action::Create(d.to_string()),
        (Some(d), Some(l)) if matches(d, l) => Action::Noop,
        (Some(d), Some(_)) => Action::Update(d.to_string()),
    }
}

/// The live value is unknown (the alias changed while the target's first listing ran, so the listed
/// value may be stale): write first and let the answer reveal the live state. Create → AlreadyExists →
/// read → update or nothing; delete → NotFound → nothing. Never Noop: that would drop the change.
pub fn decide_unknown(desired: Option<&str>) -> Action {
    match desired {
        Some(d) => Action::Create(d.to_string()),
        None => Action::Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let eq = |a: &str, b: &str| a == b;
        assert_eq!(decide(None, None, eq), Action::Noop);
        assert_eq!(decide(None, Some("k"), eq), Action::Delete);
        assert_eq!(decide(Some("k"), None, eq), Action::Create("k".into()));
        assert_eq!(decide(Some("k"), Some("k"), eq), Action::Noop);
        assert_eq!(decide(Some("k2"), Some("k"), eq), Action::Update("k2".into()));
        // The provider's notion of sameness wins (e.g. an ARN naming the live key id).
        assert_eq!(decide(Some("arn:.../k"), Some("k"), |d, l| d.ends_with(l)), Action::Noop);
        // Unknown live state: write first, even to delete.
        assert_eq!(decide_unknown(None), Action::Delete);
        assert_eq!(decide_unknown(Some("k")), Action::Create("k".into()));
    }
}
