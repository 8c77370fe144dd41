//! Secrets: referenced from the config as `env:` / `file:`, held in a type whose Debug never shows them.

use std::fmt;
use std::path::PathBuf;

/// A secret string. Debug prints `[redacted]`; there is no Display, so it cannot slip into a format string.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Access key credentials, the same shape for AWS, Alibaba Cloud and Huawei Cloud.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Where a secret lives: an environment variable (prefix) or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        if let Some(v) = s.strip_prefix("env:") {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("\"{s}\" names no valid environment variable"));
            }
            Ok(SecretRef::Env(v.to_string()))
        } else if let Some(v) = s.strip_prefix("file:") {
            if v.is_empty() {
                return Err("\"file:\" names no file".into());
            }
            let p = PathBuf::from(v);
            // systemd LoadCredential=: relative names resolve in $CREDENTIALS_DIRECTORY.
            let p = match (p.is_relative(), std::env::var_os("CREDENTIALS_DIRECTORY")) {
                (true, Some(dir)) => PathBuf::from(dir).join(p),
                _ => p,
            };
            Ok(SecretRef::File(p))
        } else if s.is_empty() {
            Err("is missing".into())
        } else {
            // Never echo the value: it may be a pasted secret.
            Err("is neither an env: nor a file: reference".into())
        }
    }

    /// Loads a single secret value (the variable itself, or the whole file without a trailing newline).
    pub fn load_string(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(v) => {
                std::env::var(v).map(Secret).map_err(|_| format!("environment variable {v} is not set"))
            }
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read {}: {}", p.display(), e.kind())),
        }
    }

    /// Loads access keys. `env:P` reads `P_ACCESS_KEY_ID`, `P_SECRET_ACCESS_KEY` and optionally
    /// `P_SESSION_TOKEN`; `file:PATH` reads a TOML file with `access_key_id`, `secret_access_key` and
    /// optionally `session_token`.
    pub fn load_credentials(&self) -> Result<Credentials, String> {
        match self {
            SecretRef::Env(prefix) => {
                let get = |k: &str| std::env::var(format!("{prefix}_{k}")).ok().filter(|v| !v.is_empty());
                let id = get("ACCESS_KEY_ID")
                    .ok_or_else(|| format!("environment variable {prefix}_ACCESS_KEY_ID is not set"))?;
                let secret = get("SECRET_ACCESS_KEY")
                    .ok_or_else(|| format!("environment variable {prefix}_SECRET_ACCESS_KEY is not set"))?;
                Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: Secret(secret),
                    session_token: get("SESSION_TOKEN").map(Secret),
                })
            }
            SecretRef::File(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {}", p.display(), e.kind()))?;
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct F {
                    access_key_id: String,
                    secret_access_key: String,
                    session_token: Option<String>,
                }
                // The parse error could quote the secret: report only where it failed.
                let f: F = toml::from_str(&text).map_err(|e| {
                    format!(
                        "{} is not a TOML file with access_key_id and secret_access_key (error at {:?})",
                        p.display(),
                        e.span()
                    )
                })?;
                Ok(Credentials {
                    access_key_id: f.access_key_id,
                    secret_access_key: Secret(f.secret_access_key),
                    session_token: f.session_token.map(Secret),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: Secret::new("hunter2"),
            session_token: Some(Secret::new("tok")),
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && !s.contains("tok\""), "{s}");
        assert!(s.contains("[redacted]"));
    }

    #[test]
    fn parse_refs() {
        assert_eq!(SecretRef::parse("env:AWS_PROD").unwrap(), SecretRef::Env("AWS_PROD".into()));
        assert!(SecretRef::parse("AKIAxxxx:secret").unwrap_err().contains("neither"));
        assert!(!SecretRef::parse("AKIAxxxx:secret").unwrap_err().contains("AKIA"));
        assert!(SecretRef::parse("env:").is_err());
        assert!(matches!(SecretRef::parse("file:/run/x").unwrap(), SecretRef::File(_)));
    }

    #[test]
    fn file_credentials_parse_errors_do_not_leak() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        std::fs::write(&p, "access_key_id = \"AK\"\nsecret_access_key = SUPERSECRET\n").unwrap();
        let e = SecretRef::File(p.clone()).load_credentials().unwrap_err();
        assert!(!e.contains("SUPERSECRET"), "{e}");
        std::fs::write(&p, "access_key_id = \"AK\"\nsecret_access_key = \"S3\"\n").unwrap();
        let c = SecretRef::File(p).load_credentials().unwrap();
        assert_eq!(c.access_key_id, "AK");
        assert_eq!(c.secret_access_key.expose(), "S3");
    }
}
