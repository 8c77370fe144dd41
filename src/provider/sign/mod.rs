//! Request signing for Alibaba Cloud and Huawei Cloud, as pure functions over explicit inputs.
//!
//! - [`acs3`]: Alibaba Cloud V3, `ACS3-HMAC-SHA256` in the `Authorization` header (what the new SDK sends).
//! - [`rpc_v1`]: Alibaba Cloud RPC signature v1, `HMAC-SHA1` in the `Signature` query parameter (the new SDK's
//!   `signature_algorithm = "v2"` mode and the legacy `aliyun-python-sdk-core`).
//! - [`sdk_hmac`]: Huawei Cloud APIG AK/SK, `SDK-HMAC-SHA256` in the `Authorization` header.
//!
//! Every step (canonical request, string to sign, signature, `Authorization` value) is its own public
//! function so that the providers can sign, the unit tests can compare each step with the captured vectors in
//! `tests/vectors/`, and the test-only KMS emulator (`emulator/`, its own crate) can recompute the signature of
//! a received request. Parsing and verifying received requests is the emulator's business and lives there.
//! Nothing here does I/O or reads a clock: timestamps and nonces are inputs.
//!
//! No type here implements `Debug` with secret-bearing fields: signatures and `Authorization` values stay out
//! of logs.

pub mod acs3;
pub mod rpc_v1;
pub mod sdk_hmac;
#[cfg(test)]
pub(crate) mod testutil;

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Everything but RFC 3986 "unreserved" (`A-Z a-z 0-9 - _ . ~`) is encoded: space is `%20`, `*` is `%2A`,
/// `/` is `%2F`, hex digits are upper case.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The parts of an HTTP request that a header signature ([`acs3`], [`sdk_hmac`]) covers. Which headers are
/// signed is passed separately, so a verifier can take the list from the received `Authorization` header.
#[derive(Clone, Copy)]
pub struct SignableRequest<'a> {
    /// `GET`, `POST`, … (used as given; callers send upper case).
    pub method: &'a str,
    /// The path as sent on the wire, with or without percent-encoding: it is decoded, then each segment is
    /// re-encoded per RFC 3986 (so `/` separators stay). An empty path is `/`.
    pub path: &'a str,
    /// Query parameters, decoded (the signer encodes them). Order does not matter.
    pub query: &'a [(&'a str, &'a str)],
    /// Request headers, names in any case. Several values of one name are joined with `,`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes (empty for none).
    pub body: &'a [u8],
}

/// RFC 3986 percent-encoding of a UTF-8 string, as both Alibaba and Huawei sign it.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Decodes `%XX` escapes (invalid UTF-8 is replaced). `+` stays `+`: the SDKs encode a space as `%20`.
pub fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `k=v&k=v` with names and values RFC 3986-encoded, sorted by encoded name, then encoded value. An empty
/// value is kept as `k=`.
pub fn canonical_query(pairs: &[(&str, &str)]) -> String {
    let mut enc: Vec<(String, String)> = pairs.iter().map(|(k, v)| (percent_encode(k), percent_encode(v))).collect();
    enc.sort();
    enc.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The path decoded, then each `/`-separated segment RFC 3986-encoded; `/` for an empty path.
pub fn canonical_path(path: &str) -> String {
    let decoded = percent_decode(path);
    if decoded.is_empty() {
        return "/".into();
    }
    decoded.split('/').map(percent_encode).collect::<Vec<_>>().join("/")
}

/// The signed header names as they appear in the canonical request: lower case, trimmed, sorted, unique.
pub fn normalize_signed_headers(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
    v.sort();
    v.dedup();
    v
}

/// The canonical header block and the `a;b;c` list for `signed` (already normalized): one
/// `name:trimmed-value\n` line per signed header, values of repeated headers joined with `,`. A signed header
/// the request lacks gets an empty value (the signature then fails to verify, as it should).
pub fn canonical_headers(headers: &[(&str, &str)], signed: &[String]) -> (String, String) {
    let mut block = String::new();
    for name in signed {
        let values: Vec<&str> =
            headers.iter().filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()).collect();
        block.push_str(name);
        block.push(':');
        block.push_str(&values.join(","));
        block.push('\n');
    }
    (block, signed.join(";"))
}

/// Case-insensitive lookup of a header value (the first one).
pub fn header<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// Lower-case hex of SHA-256.
pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1.
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The result of a header signature ([`acs3`], [`sdk_hmac`]). No Debug: the signature and the header are
/// credentials for the request's lifetime.
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lower-case hex.
    pub signature: String,
    /// The `Authorization` header value.
    pub authorization: String,
}

impl Signed {
    /// The steps after the string to sign, which [`acs3`] and [`sdk_hmac`] share: the signature is
    /// hex(HMAC-SHA256(secret, string to sign)), and the header `authorization(signed header list, signature)`.
    fn finish(
        canonical_request: String,
        string_to_sign: String,
        signed_headers: &[&str],
        secret: &str,
        authorization: impl FnOnce(&str, &str) -> String,
    ) -> Signed {
        let signature = hmac_sha256_hex(secret, &string_to_sign);
        let authorization = authorization(&normalize_signed_headers(signed_headers).join(";"), &signature);
        Signed { canonical_request, string_to_sign, signature, authorization }
    }
}

/// hex(HMAC-SHA256(secret, data)), the raw secret as the key (no key derivation, no scope).
pub fn hmac_sha256_hex(secret: &str, data: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), data.as_bytes()))
}

/// The canonical request of a header signature, `METHOD\nURI\nQUERY\nHEADERS\nSIGNED\nPAYLOAD`, over
/// `signed_headers` (any case, any order; normalized here), with the scheme's canonical `uri` and `payload` hash.
fn canonical_request(req: &SignableRequest<'_>, signed_headers: &[&str], uri: &str, payload: &str) -> String {
    let signed = normalize_signed_headers(signed_headers);
    let (headers, signed_list) = canonical_headers(req.headers, &signed);
    format!("{}\n{uri}\n{}\n{headers}\n{signed_list}\n{payload}", req.method, canonical_query(req.query))
}

#[cfg(test)]
mod tests {
    use super::testutil::{self, pairs};
    use super::*;

    #[test]
    fn rfc3986_encoding() {
        assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(percent_encode("a b*c/d:e+f=g&h"), "a%20b%2Ac%2Fd%3Ae%2Bf%3Dg%26h");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_decode("a%20b%2Fc+d"), "a b/c+d");
        assert_eq!(percent_decode(&percent_encode("x y/é*~")), "x y/é*~");
    }

    #[test]
    fn query_parse_and_canonical_form() {
        let q = testutil::decode_query("b=2&a=x%2Fy&&c&SignatureType=");
        assert_eq!(
            q,
            [("b", "2"), ("a", "x/y"), ("c", ""), ("SignatureType", "")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .to_vec()
        );
        assert_eq!(canonical_query(&pairs(&q)), "SignatureType=&a=x%2Fy&b=2&c=");
        assert_eq!(canonical_query(&[("k", "2"), ("k", "1")]), "k=1&k=2");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path("/v1.0/p/kms/aliases"), "/v1.0/p/kms/aliases");
        assert_eq!(canonical_path("/a b/c%20d/"), "/a%20b/c%20d/");
    }

    #[test]
    fn headers_are_lowercased_sorted_trimmed() {
        let signed = normalize_signed_headers(&["X-B", "host", " x-a ", "host"]);
        assert_eq!(signed, ["host", "x-a", "x-b"]);
        let (block, list) =
            canonical_headers(&[("Host", "h:1"), ("X-A", "  v  "), ("x-b", "1"), ("X-B", "2")], &signed);
        assert_eq!(block, "host:h:1\nx-a:v\nx-b:1,2\n");
        assert_eq!(list, "host;x-a;x-b");
    }
}
