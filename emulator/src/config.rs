//! Who may call the emulator (access keys per cloud, and the account each one belongs to) and the
//! knobs where the clouds' documentation leaves the behaviour open.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::Cloud;

/// Whether Huawei alias names must start with `alias/`. The Huawei docs disagree (API examples use
/// `kms-1234`, terraform-provider-huaweicloud says the prefix is required), so it is a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HuaweiPrefix {
    Required,
    Optional,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Region for Alibaba requests whose Host is not `kms[-vpc].<region>.aliyuncs.com` and that
    /// carry no `RegionId` (the new SDK sends none; the endpoint is 127.0.0.1).
    pub alibaba_region: String,
    /// Region for Huawei requests whose Host is not `kms.<region>.myhuaweicloud.com`.
    pub huawei_region: String,
    pub huawei_prefix: HuaweiPrefix,
    /// How far a request's signing time may be from now; None = not checked (replaying captures).
    pub max_clock_skew: Option<Duration>,
    /// Give every new AWS account+region the predefined `alias/aws/ebs` and `alias/aws/s3` entries
    /// (no TargetKeyId), as real accounts list them, so clients' `alias/aws/` filtering is exercised.
    pub aws_managed_aliases: bool,
}

/// One access key. `account` is the AWS account id, the Alibaba account (UID) or the Huawei domain
/// id, depending on the cloud.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Credential {
    pub cloud: Cloud,
    pub access_key_id: String,
    #[serde(skip_serializing)]
    pub secret: String,
    #[serde(default)]
    pub account: Option<String>,
}

#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(default)]
    credential: Vec<Credential>,
}

pub struct Credentials {
    by_key: BTreeMap<(Cloud, String), Credential>,
    /// Temporary keys issued by the emulator's STS / IAM / metadata endpoints (any cloud).
    pub sessions: crate::sessions::Sessions,
}

impl Credentials {
    /// The fake keys of emulator/reference/test-peers.md and the signing vectors, plus the AWS and
    /// Alibaba documentation examples. AKIDEXAMPLE maps to moto's account, so ARNs compare equal in
    /// tests that run against both.
    pub fn defaults() -> Credentials {
        let list = [
            (Cloud::Aws, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Some("123456789012")),
            (Cloud::Aws, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", Some("111122223333")),
            (Cloud::Alibaba, "LTAI5tFakeAccessKeyId01", "FakeAccessKeySecret0123456789abcd", Some("1234567890123456")),
            (Cloud::Alibaba, "testid", "testsecret", None),
            (
                Cloud::Huawei,
                "HPUAFAKEACCESSKEY0001",
                "FakeSecretKey0123456789abcdefghijklmnopq",
                Some("3bab8e245e854f68af5967c00dd43127"),
            ),
            (Cloud::Huawei, "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc", None),
        ];
        Credentials::from_list(list.into_iter().map(|(cloud, ak, sk, acct)| Credential {
            cloud,
            access_key_id: ak.into(),
            secret: sk.into(),
            account: acct.map(Into::into),
        }))
    }

    /// A TOML file of `[[credential]]` tables (`cloud`, `access_key_id`, `secret`, optional
    /// `account`). It replaces the defaults, so a test can make sure only its own keys work.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: CredentialsFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.credential.is_empty() {
            return Err(format!("{}: no [[credential]] entries", path.display()));
        }
        Ok(Credentials::from_list(file.credential.into_iter()))
    }

    fn from_list(list: impl Iterator<Item = Credential>) -> Credentials {
        let by_key = list
            .map(|mut c| {
                let acct = c.account.take().unwrap_or_else(|| derive_account(c.cloud, &c.access_key_id));
                c.account = Some(acct);
                ((c.cloud, c.access_key_id.clone()), c)
            })
            .collect();
        Credentials { by_key, sessions: Default::default() }
    }

    pub fn get(&self, cloud: Cloud, access_key_id: &str) -> Option<&Credential> {
        self.by_key.get(&(cloud, access_key_id.to_string()))
    }

    /// The secret of a configured key, else of an issued session (its token and expiry are the caller's to
    /// check): what a signature is verified with.
    pub fn secret(&self, cloud: Cloud, access_key_id: &str) -> Option<String> {
        match self.get(cloud, access_key_id) {
            Some(c) => Some(c.secret.clone()),
            None => self.sessions.lookup(cloud, access_key_id).map(|s| s.secret),
        }
    }

    /// The account of a key; for an unknown key the derived one (used only to label counters and
    /// fault scopes: such a request is rejected at authentication).
    pub fn account_for(&self, cloud: Cloud, access_key_id: &str) -> String {
        match self.get(cloud, access_key_id) {
            Some(c) => c.account.clone().unwrap_or_default(),
            None => match self.sessions.lookup(cloud, access_key_id) {
                Some(s) => s.account,
                None => derive_account(cloud, access_key_id),
            },
        }
    }

    pub fn list(&self) -> impl Iterator<Item = &Credential> {
        self.by_key.values()
    }
}

/// A stable account for a key without a configured one, in the cloud's format: AWS 12 digits,
/// Alibaba 16 digits, Huawei 32 hex (a domain id).
pub fn derive_account(cloud: Cloud, access_key_id: &str) -> String {
    let digest = Sha256::digest(format!("{}:{access_key_id}", cloud.as_str()).as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    match cloud {
        Cloud::Aws => format!("{:012}", n % 1_000_000_000_000),
        Cloud::Alibaba => format!("{:016}", n % 10_000_000_000_000_000),
        Cloud::Huawei => hex::encode(&digest[..16]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_accounts_have_the_clouds_shapes() {
        let aws = derive_account(Cloud::Aws, "AKIAX");
        assert!(aws.len() == 12 && aws.bytes().all(|b| b.is_ascii_digit()));
        let ali = derive_account(Cloud::Alibaba, "LTAIX");
        assert!(ali.len() == 16 && ali.bytes().all(|b| b.is_ascii_digit()));
        let hw = derive_account(Cloud::Huawei, "HPUAX");
        assert!(hw.len() == 32 && hw.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(aws, derive_account(Cloud::Aws, "AKIAX"));
    }

    #[test]
    fn defaults_and_file() {
        let c = Credentials::defaults();
        assert_eq!(c.account_for(Cloud::Aws, "AKIDEXAMPLE"), "123456789012");
        assert!(c.get(Cloud::Alibaba, "AKIDEXAMPLE").is_none());
        let dir = std::env::temp_dir().join(format!("kms-emulator-creds-{}", std::process::id()));
        std::fs::write(&dir, "[[credential]]\ncloud = \"huawei\"\naccess_key_id = \"A\"\nsecret = \"S\"\n").unwrap();
        let c = Credentials::load(&dir).unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(c.get(Cloud::Huawei, "A").unwrap().secret, "S");
        assert!(c.get(Cloud::Aws, "AKIDEXAMPLE").is_none());
    }
}
