//! Alibaba Cloud RPC signature v1 (`SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`): the signature is a
//! request parameter (https://www.alibabacloud.com/help/en/sdk/product-overview/rpc-mechanism).
//!
//! ```text
//! CanonicalizedQuery = sorted pe(name)=pe(value) of every parameter except Signature, joined by &
//! StringToSign       = METHOD + "&" + pe("/") + "&" + pe(CanonicalizedQuery)
//! Signature          = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))
//! ```
//!
//! `pe` is RFC 3986 encoding ([`super::percent_encode`]). Both forms the SDKs send use this: the new SDK with
//! `signature_algorithm = "v2"` (`Format=json`, no `RegionId`) and the legacy `aliyun-python-sdk-core`
//! (`Format=JSON`, `RegionId`, and an empty `SignatureType=` that is signed like any other parameter). The
//! parameters are whatever the request carries (query, or form body for a form POST); callers pass them all.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::{canonical_query, hmac_sha1, percent_encode};

pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
pub const SIGNATURE_VERSION: &str = "1.0";
/// The parameter that carries the signature; never part of what is signed.
pub const SIGNATURE_PARAM: &str = "Signature";

/// The result of signing. No Debug: the signature is a credential for the request's lifetime.
pub struct Signed {
    pub canonicalized_query: String,
    pub string_to_sign: String,
    /// Base64 (not yet percent-encoded for the query).
    pub signature: String,
}

/// `Timestamp`: UTC `YYYY-MM-DDThh:mm:ssZ`.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Sorted, RFC 3986-encoded `name=value` pairs of every parameter except `Signature`, joined by `&`.
pub fn canonicalized_query(params: &[(&str, &str)]) -> String {
    let unsigned: Vec<(&str, &str)> = params.iter().copied().filter(|(k, _)| *k != SIGNATURE_PARAM).collect();
    canonical_query(&unsigned)
}

/// `METHOD&%2F&` + pe(canonicalized query).
pub fn string_to_sign(method: &str, canonicalized_query: &str) -> String {
    format!("{method}&{}&{}", percent_encode("/"), percent_encode(canonicalized_query))
}

/// base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    let key = format!("{secret}&");
    base64::engine::general_purpose::STANDARD.encode(hmac_sha1(key.as_bytes(), string_to_sign.as_bytes()))
}

/// Signs the decoded request parameters (a `Signature` among them is ignored).
pub fn sign(method: &str, params: &[(&str, &str)], secret: &str) -> Signed {
    let canonicalized_query = canonicalized_query(params);
    let string_to_sign = string_to_sign(method, &canonicalized_query);
    let signature = signature(secret, &string_to_sign);
    Signed { canonicalized_query, string_to_sign, signature }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::sign::testutil::{pairs, Vector};

    /// Recomputes an RPC v1 vector from the parameters in its raw request target.
    fn check(file: &str) {
        let v = Vector::load(file);
        let (request_line, _headers, body) = v.raw();
        assert!(body.is_empty(), "{file}: parameters travel in the query");
        let (path, params) = v.target();
        assert_eq!(path, "/", "{file}");
        assert!(request_line.contains(&v.field("request_target")), "{file}");
        let params = pairs(&params);
        let method = v.field("method");
        let s = sign(&method, &params, &v.field("secret"));
        assert_eq!(s.canonicalized_query, v.block("canonical_request"), "{file}: canonicalized query");
        assert_eq!(s.string_to_sign, v.block("string_to_sign"), "{file}: string to sign");
        assert_eq!(s.signature, v.field("expected"), "{file}: signature");
        // The Signature sent in the query is the same value.
        let sent = params.iter().find(|(k, _)| *k == SIGNATURE_PARAM).unwrap().1;
        assert_eq!(sent, s.signature, "{file}: sent Signature");
    }

    #[test]
    fn rpcv1_vector_new_sdk_v2_createalias() {
        check("alibaba-rpcv1-createalias.txt");
    }

    #[test]
    fn rpcv1_vector_legacy_sdk_deletealias() {
        let v = Vector::load("alibaba-rpcv1-legacy-sdk-deletealias.txt");
        assert!(v.field("request_target").contains("&SignatureType=&"), "the empty SignatureType is part of it");
        check("alibaba-rpcv1-legacy-sdk-deletealias.txt");
    }

    /// KMS CreateKey from the Signature topic (reference §6.2), correctly encoded, and the ECS example.
    #[test]
    fn rpcv1_documented_examples() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "CreateKey"),
            ("Format", "json"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-03-28T03:13:08Z"),
            ("Version", "2016-01-20"),
        ];
        let s = sign("GET", &params, "testsecret");
        assert_eq!(
            s.string_to_sign,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DCreateKey%26Format%3Djson%26SignatureMethod%3DHMAC-SHA1\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-03-28T03%253A13%253A08Z%26Version%3D2016-01-20"
        );
        assert_eq!(s.signature, "41wk2SSX1GJh7fwnc5eqOfiJPFg=");
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeDedicatedHosts"),
            ("Format", "JSON"),
            ("RegionId", "cn-beijing"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2023-03-13T08:34:30Z"),
            ("Version", "2014-05-26"),
        ];
        assert_eq!(sign("GET", &params, "testsecret").signature, "9NaGiOspFP5UPcwX8Iwt2YJXXuk=");
    }
}
