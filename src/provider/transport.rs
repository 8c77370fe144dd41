//! The one request pipeline of the three clouds: take the target's credentials snapshot, build and sign the
//! request (the cloud's [`Wire`] format), send it with the shared HTTP client, read the body (bounded), and turn a
//! non-2xx answer into a [`ProviderError`] with the cloud's own error parser and classification. Transport failures
//! (timeout, connect, reset) are mapped once, in [`super::http::transport_error`]. Each provider keeps only what
//! differs: its wire format, its signer and its error classification.

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Method;
use serde_json::Value;

use super::http::{header_value, parse_success, read_body, request_secrets, transport_error};
use super::{ErrorClass, ProviderError, SharedCredentials};
use crate::secret::Credentials;

/// Largest response body accepted (a full listing page is a few tens of KiB), so a misbehaving endpoint cannot
/// exhaust memory.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// A JSON request body. Encoding a `Value` cannot fail in practice; if it did, retrying could not help.
pub fn json_body(v: &Value) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(v).map_err(|e| {
        ProviderError::new(ErrorClass::Permanent, "RequestError", "other", format!("cannot encode request: {e}"))
    })
}

/// A signed request, ready to send. No Debug: it carries the Authorization header (and an STS token).
pub struct Prepared {
    pub method: Method,
    pub url: reqwest::Url,
    /// Every header but Authorization, as sent (the cloud decides which it signs).
    pub headers: Vec<(&'static str, String)>,
    /// The header that carries the session token, if the cloud sends one: hidden from reqwest's Debug.
    pub token_header: &'static str,
    /// None: no body at all (a GET), as opposed to an empty one (Alibaba's POST sends `Content-Length: 0`).
    pub body: Option<Vec<u8>>,
    pub authorization: String,
    /// The bare signature (redacted from error messages, which can echo it).
    pub signature: String,
}

/// A cloud's wire format: how one call becomes a signed request, and how an error answer reads.
pub trait Wire: Sync {
    /// One call, in the cloud's own terms (AWS: target and JSON payload; Alibaba: action and RPC parameters;
    /// Huawei: method, path, query and JSON body).
    type Op<'a>: Sync;

    /// Builds and signs the request for `op` with `creds`, now.
    fn prepare(&self, op: &Self::Op<'_>, creds: &Credentials) -> Result<Prepared, ProviderError>;

    /// An error answer as a ProviderError: the cloud's code, message and request id (body or headers),
    /// classified; `secrets` scrubbed from what is kept.
    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8], secrets: &[&str]) -> ProviderError;

    /// The call's name in debug logs.
    fn describe(op: &Self::Op<'_>) -> String;
}

/// Sends one call: credentials snapshot → sign → send → read → success body as JSON (`Value::Null` when empty),
/// or the cloud's classified error. Credentials not resolved yet fail here, as unauthenticated.
pub async fn send<W: Wire>(
    client: &reqwest::Client,
    creds: &SharedCredentials,
    wire: &W,
    op: &W::Op<'_>,
) -> Result<Value, ProviderError> {
    let creds = creds.current()?;
    let p = wire.prepare(op, &creds)?;
    let mut req = client.request(p.method.clone(), p.url.clone());
    for (name, value) in &p.headers {
        req = req.header(*name, header_value(value, *name == p.token_header)?);
    }
    req = req.header(AUTHORIZATION, header_value(&p.authorization, true)?);
    if let Some(body) = p.body {
        req = req.body(body);
    }

    let resp = req.send().await.map_err(transport_error)?;
    let status = resp.status();
    // Only an error answer reads headers (its request id).
    let headers = (!status.is_success()).then(|| resp.headers().clone());
    let body = read_body(resp, MAX_BODY_BYTES).await?;
    tracing::debug!(call = %W::describe(op), method = %p.method, status = status.as_u16(), "kms call");
    match headers {
        None => parse_success(&body),
        Some(headers) => {
            let secrets = request_secrets(&creds, &p.authorization, &p.signature);
            Err(wire.error(status.as_u16(), &headers, &body, &secrets))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::provider::sign::testutil::{credentials, serve_full};
    use crate::provider::{AuthFailure, ErrorClass};

    /// A wire format of nothing: `GET /{op}` (no body) or `POST /{op}` (the op as body), the token in `x-tok`, and
    /// errors reporting the status, the `x-id` header and whether the secrets to scrub were handed over.
    struct Echo(String);

    impl Wire for Echo {
        type Op<'a> = &'a str;

        fn prepare(&self, op: &&str, creds: &Credentials) -> Result<Prepared, ProviderError> {
            let mut headers = vec![("x-op", op.to_string())];
            headers.extend(creds.session_token.as_ref().map(|t| ("x-tok", t.expose().to_string())));
            Ok(Prepared {
                method: if op.starts_with("get") { Method::GET } else { Method::POST },
                url: reqwest::Url::parse(&format!("{}/{op}", self.0)).unwrap(),
                headers,
                token_header: "x-tok",
                body: (!op.starts_with("get")).then(|| op.as_bytes().to_vec()),
                authorization: "SIG-AUTH".into(),
                signature: "SIG".into(),
            })
        }

        fn error(&self, status: u16, headers: &HeaderMap, body: &[u8], secrets: &[&str]) -> ProviderError {
            let id = headers.get("x-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            let scrubbed = secrets.contains(&"s3cr3t") && secrets.contains(&"SIG");
            let msg = format!("{status} {id} {} scrubbed={scrubbed}", String::from_utf8_lossy(body));
            ProviderError::new(ErrorClass::Permanent, "E", "other", msg)
        }

        fn describe(op: &&str) -> String {
            op.to_string()
        }
    }

    #[tokio::test]
    async fn one_pipeline_signs_sends_reads_and_hands_errors_to_the_wire() {
        let (url, log) = serve_full(|r| match r.path.as_str() {
            "/get-ok" => (200, vec![], r#"{"a":1}"#.into()),
            "/post-empty" => (204, vec![], String::new()),
            _ => (409, vec![("x-id", "rid-1")], "nope".into()),
        })
        .await;
        let client = crate::provider::http::client(Duration::from_secs(5));
        let creds = SharedCredentials::new(credentials("AK", "s3cr3t", Some("TOK")));
        let wire = Echo(url);
        assert_eq!(send(&client, &creds, &wire, &"get-ok").await.unwrap(), serde_json::json!({"a": 1}));
        assert_eq!(send(&client, &creds, &wire, &"post-empty").await.unwrap(), Value::Null);
        let e = send(&client, &creds, &wire, &"post-bad").await.unwrap_err();
        assert_eq!(e.message, "409 rid-1 nope scrubbed=true");
        let log = log.lock().unwrap();
        assert_eq!(log[0].method, "GET");
        assert_eq!((log[0].header("content-length"), log[0].body.len()), (None, 0), "no body at all");
        assert_eq!((log[1].method.as_str(), log[1].body.as_slice()), ("POST", b"post-empty".as_slice()));
        assert!(log.iter().all(|r| r.header("authorization") == Some("SIG-AUTH") && r.header("x-tok") == Some("TOK")));
    }

    #[tokio::test]
    async fn unresolved_credentials_send_nothing_and_transport_failures_are_transient() {
        let (url, log) = serve_full(|_| (200, vec![], String::new())).await;
        let client = crate::provider::http::client(Duration::from_secs(5));
        let e = send(&client, &SharedCredentials::unresolved(), &Echo(url), &"get").await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Unauthenticated(AuthFailure::Unresolved));
        assert!(log.lock().unwrap().is_empty());
        // Nobody listens on a port just freed.
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let creds = SharedCredentials::new(credentials("AK", "s", None));
        let e = send(&client, &creds, &Echo(format!("http://127.0.0.1:{port}")), &"get").await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::Transient, "connection_error"));
    }
}
