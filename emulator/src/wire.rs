//! Types shared by the three wire formats: the buffered request, a cloud-neutral API error, the
//! per-call facts the fault injector and the counters key on, and id generators.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Alibaba,
    Huawei,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Alibaba => "alibaba",
            Cloud::Huawei => "huawei",
        }
    }

    pub fn parse(s: &str) -> Option<Cloud> {
        match s {
            "aws" => Some(Cloud::Aws),
            "alibaba" => Some(Cloud::Alibaba),
            "huawei" => Some(Cloud::Huawei),
            _ => None,
        }
    }
}

/// Operation classes, the unit the clouds' rate quotas are stated in (AWS per operation, Alibaba as
/// reads / writes / CreateKey). Throttling rules are configured per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    Read,
    Write,
    CreateKey,
}

/// A request with its body read: every cloud needs the exact bytes to verify the signature.
pub struct RawRequest {
    pub method: Method,
    pub path: String,
    /// The query string as received (still percent-encoded), without `?`.
    pub raw_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The default region of the listener the request arrived on (`--region-listen`), if any.
    pub listener_region: Option<String>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }

    /// Host without the port.
    pub fn hostname(&self) -> &str {
        let host = self.header("host").unwrap_or("");
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    }

    /// Every header as (name, value) pairs, in the shape the library signers take. Values that are
    /// not valid UTF-8 are skipped (no SDK sends them).
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))).collect()
    }
}

/// An error as a cloud would answer it; each wire module renders it in its own body shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.into(), message: message.into() }
    }
}

/// What the dispatcher knows about a call before running it: enough to pick fault rules, throttle
/// buckets and counters. Parsing it never fails; malformed requests fail later, in `execute`.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub cloud: Cloud,
    pub operation: String,
    pub class: OpClass,
    /// AWS account / Alibaba account (both from the access key), Huawei project (from the path).
    pub account: String,
    pub region: String,
}

/// A random version-4 UUID, lower case.
pub fn uuid4() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// `n` random characters from `[a-z0-9]`.
pub fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// Epoch seconds with milliseconds, as AWS JSON timestamps are sent.
pub fn epoch_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A response with a status, a content type, extra headers and a body.
pub fn respond(status: u16, content_type: &str, body: Vec<u8>, headers: &[(&str, String)]) -> axum::response::Response {
    let mut resp = axum::response::Response::new(axum::body::Body::from(body));
    *resp.status_mut() =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Ok(v) = axum::http::HeaderValue::from_str(content_type) {
        h.insert(axum::http::header::CONTENT_TYPE, v);
    }
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) =
            (axum::http::HeaderName::from_bytes(name.as_bytes()), axum::http::HeaderValue::from_str(value))
        {
            h.insert(n, v);
        }
    }
    resp
}

/// Decoded (name, value) pairs of a query string or form body, in order, with `+` read as a space: the
/// SDKs build query strings with Python's `urlencode`, which sends a space as `+` (and a literal `+` as
/// `%2B`), and the clouds decode them as form encoding does. `a` alone is `("a", "")`; empty pieces
/// (`a=1&&b=2`) are skipped.
pub fn decode_query(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| aliassync::provider::sign::percent_decode(&s.replace('+', "%20"));
    let pair = |p: &str| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    };
    raw.split('&').filter(|p| !p.is_empty()).map(pair).collect()
}
