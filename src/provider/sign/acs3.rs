//! Alibaba Cloud V3 signature, `ACS3-HMAC-SHA256`
//! (https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature).
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n hex(SHA256(body))
//! StringToSign     = "ACS3-HMAC-SHA256\n" + hex(SHA256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))       (no key derivation, no scope)
//! Authorization    = "ACS3-HMAC-SHA256 Credential=<AK>,SignedHeaders=<a;b>,Signature=<hex>"
//! ```
//!
//! The date (`x-acs-date`, [`format_date`]) and the nonce are headers, signed like any other.

use chrono::{DateTime, Utc};

pub use super::Signed;
use super::{canonical_path, hex_sha256, hmac_sha256_hex, SignableRequest};

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// `x-acs-date`: UTC `YYYY-MM-DDThh:mm:ssZ`.
pub fn format_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The canonical request over `signed_headers` (any case, any order; normalized here).
pub fn canonical_request(req: &SignableRequest<'_>, signed_headers: &[&str]) -> String {
    super::canonical_request(req, signed_headers, &canonical_path(req.path), &hex_sha256(req.body))
}

/// `ACS3-HMAC-SHA256\n` + hex(SHA256(canonical request)).
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", hex_sha256(canonical_request.as_bytes()))
}

/// hex(HMAC-SHA256(secret, string to sign)); the raw secret is the key.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    hmac_sha256_hex(secret, string_to_sign)
}

/// The `Authorization` header value. `signed_headers` is the `a;b;c` list as in the canonical request.
pub fn authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!("{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}")
}

/// Signs `req` over `signed_headers` (which must all be present in `req.headers`).
pub fn sign(req: &SignableRequest<'_>, signed_headers: &[&str], access_key_id: &str, secret: &str) -> Signed {
    let canonical_request = canonical_request(req, signed_headers);
    let string_to_sign = string_to_sign(&canonical_request);
    Signed::finish(canonical_request, string_to_sign, signed_headers, secret, |list, sig| {
        authorization(access_key_id, list, sig)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::sign::testutil::check_header_vector;

    /// Recomputes an ACS3 vector from its raw request (see [`check_header_vector`]).
    fn check(file: &str) {
        check_header_vector(file, "x-acs-date", sign);
    }

    #[test]
    fn acs3_vector_createalias() {
        check("alibaba-acs3-createalias.txt");
    }

    #[test]
    fn acs3_vector_listaliases() {
        check("alibaba-acs3-listaliases.txt");
    }

    /// The official V3 example (reference §6.3), inputs typed in from the documentation.
    #[test]
    fn acs3_official_example() {
        let headers = [
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ];
        let query = [("ImageId", "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"), ("RegionId", "cn-shanghai")];
        let req = SignableRequest { method: "POST", path: "/", query: &query, headers: &headers, body: b"" };
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let s = sign(&req, &names, "YourAccessKeyId", "YourAccessKeySecret");
        assert_eq!(
            s.string_to_sign,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(s.signature, "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0");
        assert!(s.authorization.contains(
            ",SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        ));
    }

    #[test]
    fn date_format() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T04:13:41.999Z").unwrap().with_timezone(&Utc);
        assert_eq!(format_date(t), "2026-11-23T04:13:41Z");
    }
}
