//! Alias-name rules, one table per cloud (emulator/reference/kms-alias-apis.md §2.5, §3.4, §4.3).
//! Each wire module maps a [`NameError`] to its own error code and message.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// No `alias/` prefix.
    MissingPrefix,
    /// Nothing after the prefix.
    Empty,
    TooLong,
    /// Under the cloud's reserved prefix (`alias/aws/`, `alias/acs/`).
    Reserved,
    /// A `:`; AWS's model pattern admits it but its prose and moto refuse it.
    Colon,
    /// Any other character outside the allowed set.
    BadCharacter,
}

pub struct AliasRules {
    pub prefix_required: bool,
    pub reserved: Option<&'static str>,
    /// Longest whole name, prefix included.
    pub max_len: usize,
    pub colon_allowed: bool,
}

pub const PREFIX: &str = "alias/";

/// AWS: `alias/` + name, 1–256 characters in all, `[a-zA-Z0-9/_-]`, `alias/aws/` reserved.
pub const AWS: AliasRules =
    AliasRules { prefix_required: true, reserved: Some("alias/aws/"), max_len: 256, colon_allowed: false };

/// Alibaba: `alias/` + 1–255 characters of `[a-zA-Z0-9_/-]`, `alias/acs/` reserved.
pub const ALIBABA: AliasRules =
    AliasRules { prefix_required: true, reserved: Some("alias/acs/"), max_len: 6 + 255, colon_allowed: false };

/// Huawei: letters, digits, `_ - : /` (user guide); 255 characters at most, like the legacy
/// `key_alias` (the alias limit itself is undocumented); the prefix per `--huawei-alias-prefix`.
pub fn huawei(prefix_required: bool) -> AliasRules {
    AliasRules { prefix_required, reserved: None, max_len: 255, colon_allowed: true }
}

pub fn check(rules: &AliasRules, name: &str) -> Result<(), NameError> {
    let rest = match name.strip_prefix(PREFIX) {
        Some(r) => r,
        None if rules.prefix_required => return Err(NameError::MissingPrefix),
        None => name,
    };
    if rest.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > rules.max_len {
        return Err(NameError::TooLong);
    }
    if rules.reserved.is_some_and(|r| name.starts_with(r)) {
        return Err(NameError::Reserved);
    }
    if !rules.colon_allowed && name.contains(':') {
        return Err(NameError::Colon);
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | ':');
    if !name.chars().all(ok) {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_rules() {
        assert_eq!(check(&AWS, "alias/app/x-1_2"), Ok(()));
        assert_eq!(check(&AWS, "app/x"), Err(NameError::MissingPrefix));
        assert_eq!(check(&AWS, "alias/"), Err(NameError::Empty));
        assert_eq!(check(&AWS, "alias/aws/ebs"), Err(NameError::Reserved));
        assert_eq!(check(&AWS, "alias/a:b"), Err(NameError::Colon));
        assert_eq!(check(&AWS, "alias/a b"), Err(NameError::BadCharacter));
        assert_eq!(check(&AWS, &format!("alias/{}", "x".repeat(250))), Ok(()));
        assert_eq!(check(&AWS, &format!("alias/{}", "x".repeat(251))), Err(NameError::TooLong));
    }

    #[test]
    fn alibaba_and_huawei_rules() {
        assert_eq!(check(&ALIBABA, &format!("alias/{}", "x".repeat(255))), Ok(()));
        assert_eq!(check(&ALIBABA, &format!("alias/{}", "x".repeat(256))), Err(NameError::TooLong));
        assert_eq!(check(&ALIBABA, "alias/acs/ecs"), Err(NameError::Reserved));
        assert_eq!(check(&huawei(true), "alias/a:b"), Ok(()));
        assert_eq!(check(&huawei(true), "kms-1234"), Err(NameError::MissingPrefix));
        assert_eq!(check(&huawei(false), "kms-1234"), Ok(()));
        assert_eq!(check(&huawei(false), "kms 1234"), Err(NameError::BadCharacter));
    }
}
