//! Names every stage shares and none owns: alias-name rules, reserved and managed prefixes, key-id shapes,
//! provider kinds. A leaf (imports nothing of the crate), so config and event validation both use it
//! without importing each other.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Aws,
    Alibaba,
    Huawei,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aws => "aws",
            ProviderKind::Alibaba => "alibaba",
            ProviderKind::Huawei => "huawei",
        }
    }
}

/// Aliases no daemon may touch: the clouds' own managed aliases.
pub const RESERVED_PREFIXES: [&str; 2] = ["alias/aws/", "alias/acs/"];

pub fn is_reserved(alias: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| alias.starts_with(p))
}

/// The ownership guard: under a managed prefix, a valid name, never a reserved one.
pub fn is_managed(prefixes: &[String], alias: &str) -> bool {
    !is_reserved(alias) && alias_name_problem(alias).is_none() && prefixes.iter().any(|p| alias.starts_with(p.as_str()))
}

/// The intersection of the three clouds' rules: `alias/` + 1..=250 of [A-Za-z0-9/_-] (256 in all).
/// None when the name is valid, else what is wrong with it.
pub fn alias_name_problem(alias: &str) -> Option<String> {
    let Some(rest) = alias.strip_prefix("alias/") else {
        return Some(format!("{alias:?} does not start with alias/"));
    };
    if rest.is_empty() || alias.len() > 256 {
        return Some("alias must be 7-256 characters".into());
    }
    if let Some(c) = rest.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))) {
        return Some(format!("{alias:?} contains {c:?}; allowed: A-Z a-z 0-9 / _ -"));
    }
    None
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && s.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && s.split('-').all(is_hex)
}

fn is_aws_key_id(s: &str) -> bool {
    is_uuid(s) || s.strip_prefix("mrk-").is_some_and(|h| h.len() == 32 && is_hex(h))
}

/// Key id shapes per provider: what each cloud accepts as the alias target.
pub fn key_id_shape_ok(provider: ProviderKind, id: &str) -> bool {
    match provider {
        ProviderKind::Aws => {
            if let Some(arn) = id.strip_prefix("arn:") {
                // arn:<partition>:kms:<region>:<account>:key/<key-id>
                let parts: Vec<&str> = arn.splitn(5, ':').collect();
                parts.len() == 5
                    && parts[0].starts_with("aws")
                    && parts[1] == "kms"
                    && !parts[2].is_empty()
                    && parts[3].len() == 12
                    && parts[3].bytes().all(|b| b.is_ascii_digit())
                    && parts[4].strip_prefix("key/").is_some_and(is_aws_key_id)
            } else {
                is_aws_key_id(id)
            }
        }
        ProviderKind::Alibaba => {
            is_uuid(id)
                || id
                    .strip_prefix("key-")
                    .is_some_and(|r| (8..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        }
        ProviderKind::Huawei => is_uuid(id),
    }
}
