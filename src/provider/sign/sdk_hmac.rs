//! Huawei Cloud APIG AK/SK signature, `SDK-HMAC-SHA256`
//! (https://support.huaweicloud.com/intl/en-us/devg-apisign/api-sign-algorithm-001.html, and
//! `huaweicloudsdkcore/signer/signer.py`).
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n hex(SHA256(body))
//! StringToSign     = "SDK-HMAC-SHA256\n" + X-Sdk-Date + "\n" + hex(SHA256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(SK, StringToSign))                     (no key derivation)
//! Authorization    = "SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b>, Signature=<hex>"
//! ```
//!
//! The canonical URI always ends in `/` (`/v1.0/<pid>/kms/aliases` is signed as `/v1.0/<pid>/kms/aliases/`)
//! although the request does not send it. When the request carries `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`
//! that literal replaces the body hash, as the SDK does.

use chrono::{DateTime, Utc};

pub use super::Signed;
use super::{canonical_path, header, hex_sha256, hmac_sha256_hex, SignableRequest};

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The date header, part of the string to sign and normally a signed header too.
pub const DATE_HEADER: &str = "X-Sdk-Date";
const CONTENT_SHA256_HEADER: &str = "X-Sdk-Content-Sha256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// `X-Sdk-Date`: UTC `YYYYMMDDThhmmssZ`.
pub fn format_date(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The path, segment-wise RFC 3986-encoded, always ending in `/`.
pub fn canonical_uri(path: &str) -> String {
    let mut uri = canonical_path(path);
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// The canonical request over `signed_headers` (any case, any order; normalized here).
pub fn canonical_request(req: &SignableRequest<'_>, signed_headers: &[&str]) -> String {
    let payload = match header(req.headers, CONTENT_SHA256_HEADER) {
        Some(v) if v == UNSIGNED_PAYLOAD => UNSIGNED_PAYLOAD.to_string(),
        _ => hex_sha256(req.body),
    };
    super::canonical_request(req, signed_headers, &canonical_uri(req.path), &payload)
}

/// `SDK-HMAC-SHA256\n<X-Sdk-Date>\n` + hex(SHA256(canonical request)).
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{sdk_date}\n{}", hex_sha256(canonical_request.as_bytes()))
}

/// hex(HMAC-SHA256(SK, string to sign)).
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    hmac_sha256_hex(secret, string_to_sign)
}

/// The `Authorization` header value. `signed_headers` is the `a;b;c` list as in the canonical request.
pub fn authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!("{ALGORITHM} Access={access_key_id}, SignedHeaders={signed_headers}, Signature={signature}")
}

/// Signs `req` over `signed_headers` (which should include `x-sdk-date`, whose value is `sdk_date`).
pub fn sign(
    req: &SignableRequest<'_>,
    signed_headers: &[&str],
    sdk_date: &str,
    access_key_id: &str,
    secret: &str,
) -> Signed {
    let canonical_request = canonical_request(req, signed_headers);
    let string_to_sign = string_to_sign(sdk_date, &canonical_request);
    Signed::finish(canonical_request, string_to_sign, signed_headers, secret, |list, sig| {
        authorization(access_key_id, list, sig)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::sign::testutil::check_header_vector;

    /// Recomputes a Huawei vector from its raw request (see [`check_header_vector`]); the date to sign is the
    /// request's own `X-Sdk-Date`.
    fn check(file: &str) {
        let sign = |req: &SignableRequest<'_>, signed: &[&str], ak: &str, secret: &str| {
            sign(req, signed, header(req.headers, DATE_HEADER).unwrap(), ak, secret)
        };
        check_header_vector(file, DATE_HEADER, sign);
    }

    #[test]
    fn sdk_hmac_vector_createalias() {
        check("huawei-createalias.txt");
    }

    #[test]
    fn sdk_hmac_vector_listaliases() {
        check("huawei-listaliases.txt");
    }

    #[test]
    fn sdk_hmac_vector_deletealias() {
        check("huawei-deletealias.txt");
    }

    /// The official example (reference §6.4): the published canonical-request hash and the signature.
    #[test]
    fn sdk_hmac_official_example() {
        let headers = [
            ("Content-Type", "application/json"),
            ("Host", "service.region.example.com"),
            ("X-Sdk-Date", "20191115T033655Z"),
        ];
        let query = [("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")];
        let req = SignableRequest {
            method: "GET",
            path: "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
            query: &query,
            headers: &headers,
            body: b"",
        };
        let signed = ["content-type", "host", "x-sdk-date"];
        let s =
            sign(&req, &signed, "20191115T033655Z", "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc");
        assert!(s.canonical_request.starts_with("GET\n/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/\nlimit=2&marker="));
        assert_eq!(
            hex_sha256(s.canonical_request.as_bytes()),
            "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
        );
        assert_eq!(s.signature, "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe");
        assert_eq!(
            s.authorization,
            "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, \
             Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
        );
    }

    #[test]
    fn unsigned_payload_and_uri() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/v1.0/p/kms/aliases"), "/v1.0/p/kms/aliases/");
        assert_eq!(canonical_uri("/v1.0/p/kms/aliases/"), "/v1.0/p/kms/aliases/");
        let headers = [("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD"), ("X-Sdk-Date", "20261123T041411Z")];
        let req = SignableRequest { method: "PUT", path: "/x", query: &[], headers: &headers, body: b"abc" };
        assert!(canonical_request(&req, &["x-sdk-date"]).ends_with("\nUNSIGNED-PAYLOAD"));
    }

    #[test]
    fn date_format() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T04:14:11.5Z").unwrap().with_timezone(&Utc);
        assert_eq!(format_date(t), "20261123T041411Z");
    }
}
