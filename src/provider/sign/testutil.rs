//! Test-only helpers shared by the signer and provider tests: the signing-vector reader and the vector check of
//! the header signatures, test credentials, a tiny in-process HTTP/1.1 server that records every raw request (so
//! a test can recompute its signature), and the check of a provider's error classification.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{header, hex_sha256, percent_decode, SignableRequest, Signed};
use crate::provider::http::Classify;
use crate::provider::ErrorClass;
use crate::secret::{Credentials, Secret};

/// One signing vector from `tests/vectors/`, read at test time.
pub(crate) struct Vector {
    pub name: String,
    text: String,
}

impl Vector {
    pub fn load(file: &str) -> Vector {
        let path = format!("{}{file}", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Vector { name: file.to_string(), text }
    }

    /// `key = value` from the `[inputs]` / `[signature]` sections.
    pub fn field(&self, key: &str) -> String {
        let v = self.text.lines().find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='));
        v.unwrap_or_else(|| panic!("{}: no {key}", self.name)).trim().to_string()
    }

    /// The exact bytes between `-----BEGIN-----\n` and `\n-----END-----` of `[section]`.
    pub fn block(&self, section: &str) -> String {
        let after = self.text.split_once(&format!("[{section}]")).unwrap().1;
        let body = after.split_once("-----BEGIN-----\n").unwrap().1;
        body.split_once("\n-----END-----").unwrap().0.to_string()
    }

    /// The raw request as captured: (request line, headers, body). The body is checked against `body_len` and
    /// `body_sha256`.
    pub fn raw(&self) -> (String, Vec<(String, String)>, Vec<u8>) {
        let raw = self.text.split_once("[raw request as received by the capture server]\n").unwrap().1;
        let (head, body) = raw.split_once("\n\n").unwrap();
        let mut lines = head.lines();
        let request_line = lines.next().unwrap().to_string();
        let headers = lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_string(), v.to_string()));
        // The capture file ends the body with a newline of its own.
        let body_len: usize = self.field("body_len").parse().unwrap();
        let body = if body_len == 0 { "" } else { body.strip_suffix('\n').unwrap_or(body) };
        assert_eq!(body.len(), body_len, "{}: body", self.name);
        assert_eq!(hex_sha256(body.as_bytes()), self.field("body_sha256"), "{}: body hash", self.name);
        (request_line, headers.collect(), body.as_bytes().to_vec())
    }

    /// `request_target` split into the path and its decoded query pairs.
    pub fn target(&self) -> (String, Vec<(String, String)>) {
        let t = self.field("request_target");
        match t.split_once('?') {
            Some((p, q)) => (p.to_string(), decode_query(q)),
            None => (t, Vec::new()),
        }
    }
}

/// Test credentials, with a session token when `token` is given.
pub(crate) fn credentials(access_key_id: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: access_key_id.into(),
        secret_access_key: Secret::new(secret),
        session_token: token.map(Secret::new),
    }
}

/// Recomputes a header-signature vector ([`super::acs3`], [`super::sdk_hmac`]) from its raw request: every step
/// must match byte for byte, and so must the Authorization header the SDK sent. `sign(request, signed headers,
/// access key id, secret)` signs with the scheme. (That a changed byte fails verification is the emulator's test:
/// `emulator/src/verify.rs`.)
pub(crate) fn check_header_vector(
    file: &str,
    date_header: &str,
    sign: impl Fn(&SignableRequest<'_>, &[&str], &str, &str) -> Signed,
) {
    let v = Vector::load(file);
    let (request_line, headers, body) = v.raw();
    let (path, query) = v.target();
    let method = v.field("method");
    assert!(request_line.starts_with(&format!("{method} {}", v.field("request_target"))), "{file}");
    let headers = pairs(&headers);
    let sent = header(&headers, "Authorization").unwrap();
    assert_eq!(header(&headers, date_header), Some(v.field("timestamp").as_str()), "{file}: date");
    let query = pairs(&query);
    let req = SignableRequest { method: &method, path: &path, query: &query, headers: &headers, body: &body };
    let s = sign(&req, &signed_headers(sent), &v.field("access_key_id"), &v.field("secret"));
    assert_eq!(s.canonical_request, v.block("canonical_request"), "{file}: canonical request");
    assert_eq!(s.string_to_sign, v.block("string_to_sign"), "{file}: string to sign");
    assert_eq!(s.signature, v.field("expected"), "{file}: signature");
    assert_eq!(s.authorization, sent, "{file}: Authorization header");
}

/// The `SignedHeaders=a;b` list of an `Authorization` header value (empty if it has none).
pub(crate) fn signed_headers(authorization: &str) -> Vec<&str> {
    let list = authorization.split(',').find_map(|p| p.trim().strip_prefix("SignedHeaders="));
    list.map(|l| l.split(';').collect()).unwrap_or_default()
}

/// Whether a received request's `Authorization` header is exactly what `sign` computes for it with `ak`/`sk`
/// over the headers it lists: the test servers' signature check, as the cloud recomputes it.
pub(crate) fn signed_by(
    r: &RawRequest,
    sign: impl Fn(&SignableRequest<'_>, &[&str], &str, &str) -> Signed,
    ak: &str,
    sk: &str,
) -> bool {
    let Some(sent) = r.header("authorization") else { return false };
    let (headers, query) = (pairs(&r.headers), pairs(&r.query));
    let req = SignableRequest { method: &r.method, path: &r.path, query: &query, headers: &headers, body: &r.body };
    sign(&req, &signed_headers(sent), ak, sk).authorization == sent
}

/// Decoded `(name, value)` pairs of a raw query string, in order (`+` stays `+`, as the signers send `%20`).
pub(crate) fn decode_query(raw: &str) -> Vec<(String, String)> {
    let pair = |p: &str| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode(k), percent_decode(v))
    };
    raw.split('&').filter(|p| !p.is_empty()).map(pair).collect()
}

/// Borrowed view of owned pairs.
pub(crate) fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// A request as the test server received it.
#[derive(Debug, Clone)]
pub(crate) struct RawRequest {
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// (HTTP status, JSON body).
pub(crate) type Reply = (u16, String);
/// (HTTP status, response headers, body).
pub(crate) type FullReply = (u16, Vec<(&'static str, &'static str)>, String);
pub(crate) type Log = Arc<Mutex<Vec<RawRequest>>>;

/// Serves `reply(request)` as JSON; see [`serve_full`].
pub(crate) async fn serve(reply: impl Fn(&RawRequest) -> Reply + Send + Sync + 'static) -> (String, Log) {
    serve_full(move |r| {
        let (status, body) = reply(r);
        (status, vec![("Content-Type", "application/json")], body)
    })
    .await
}

/// Serves `reply(request)` over HTTP/1.1 on 127.0.0.1, one request per connection, recording each request.
/// Returns the base URL (`http://127.0.0.1:PORT`) and the log.
pub(crate) async fn serve_full(reply: impl Fn(&RawRequest) -> FullReply + Send + Sync + 'static) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let (log2, reply) = (log.clone(), Arc::new(reply));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let Some(req) = read_request(&mut sock).await else {
                continue;
            };
            let (status, headers, body) = reply(&req);
            log2.lock().unwrap().push(req);
            let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (n, v) in headers {
                resp.push_str(&format!("{n}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            resp.push_str(&body);
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (url, log)
}

async fn read_request(sock: &mut TcpStream) -> Option<RawRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), decode_query(q)),
        None => (target, Vec::new()),
    };
    Some(RawRequest { method, path, query, headers, body })
}

/// Checks a provider's `classify` against its table of (code, status, class, label), and that a response without
/// a code is classified by its status alone.
pub(crate) fn assert_classification(classify: Classify, cases: &[(&str, u16, ErrorClass, &str)]) {
    for &(code, status, class, label) in cases {
        assert_eq!(classify(Some(code), status), (class, label), "{code} {status}");
    }
    use ErrorClass::*;
    let by_status = [
        (429, Throttled, "throttling"),
        (502, Transient, "http_5xx"),
        (504, Transient, "http_5xx"),
        (403, Permanent, "http_4xx"),
        (404, Permanent, "http_4xx"),
        (302, Permanent, "other"),
    ];
    for (status, class, label) in by_status {
        assert_eq!(classify(None, status), (class, label), "no code, {status}");
    }
}
