//! HTTP plumbing shared by every provider: the client, endpoint checks, transport-error mapping, bounded body
//! reads, response bodies and error assembly, text trimming, and the alias and key-id rules the clouds share.
//! Nothing cloud-specific lives here: each provider keeps its own error shapes, field names, classification,
//! reserved alias prefix and ARN shape, and passes them in.

use std::time::Duration;

use reqwest::header::HeaderValue;
use serde_json::Value;

use super::{ErrorClass, ProviderError};
use crate::secret::Credentials;

/// Connecting should be quick even when the request itself may take longer; an unreachable endpoint
/// must not eat the whole request budget.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest message kept from a cloud's error response: enough to act on, bounded for logs and the DLQ.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Longest error code kept (codes are short; anything longer is not a code).
pub const MAX_CODE_CHARS: usize = 100;

/// Builds an HTTP client with a whole-request timeout. The daemon builds one per timeout and shares it across
/// targets (`daemon::build_targets`), so connections and TLS sessions are pooled per host.
pub fn try_client(timeout: Duration) -> Result<reqwest::Client, String> {
    if timeout.is_zero() {
        return Err("request timeout must be greater than zero".into());
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        // Cloud APIs never redirect; following one would resend signed requests somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aliassync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {}", error_chain(&e)))
}

/// Like [`try_client`], for callers that have already validated the timeout. Panics only if the TLS
/// backend cannot initialise, as `reqwest::Client::new` does.
pub fn client(timeout: Duration) -> reqwest::Client {
    try_client(timeout).expect("HTTP client")
}

/// Maps a reqwest failure (no HTTP response was obtained) to a provider error. The URL is dropped from
/// the message: endpoints are in the config already, and a URL could carry userinfo.
pub fn transport_error(e: reqwest::Error) -> ProviderError {
    let e = e.without_url();
    let message = truncate(&error_chain(&e), MAX_MESSAGE_CHARS);
    if e.is_timeout() {
        ProviderError::new(ErrorClass::Transient, "Timeout", "timeout", message)
    } else if e.is_connect() {
        ProviderError::new(ErrorClass::Transient, "ConnectionError", "connection_error", message)
    } else if e.is_builder() || e.is_redirect() {
        // Our own request could not be built: retrying the same call cannot help.
        ProviderError::new(ErrorClass::Permanent, "RequestError", "other", message)
    } else {
        // Everything else happened on the wire (reset, closed mid-body, bad framing): retry.
        ProviderError::new(ErrorClass::Transient, "ConnectionError", "connection_error", message)
    }
}

/// An error for a response that arrived but cannot be understood (not JSON, missing fields,
/// broken paging). Retried: proxies and truncated bodies produce these, and a retry is harmless.
pub fn invalid_response(message: impl Into<String>) -> ProviderError {
    let message = truncate(&message.into(), MAX_MESSAGE_CHARS);
    ProviderError::new(ErrorClass::Transient, "InvalidResponse", "invalid_response", message)
}

/// A JSON response of the wrong shape. serde's message names the field and what was expected, but also quotes
/// the string it got, and a body can echo request parts (a session token, a signature) that no message may show:
/// quoted strings are dropped.
pub fn shape_error(what: &str, e: &serde_json::Error) -> ProviderError {
    invalid_response(format!("{what}: {}", drop_quoted(&e.to_string())))
}

/// Every double-quoted (Debug-escaped, as serde quotes values) string in `msg` emptied to `"…"`.
fn drop_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            out.push_str("…\"");
        }
    }
    out
}

/// Reads a response body, refusing more than `limit` bytes so a misbehaving endpoint cannot exhaust
/// memory.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ProviderError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(invalid_response(format!("response body larger than {limit} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(invalid_response(format!("response body larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A success body as JSON, `Value::Null` when it is empty or blank (some clouds answer mutators with an empty
/// body, emulators with `null` as text/html). The content type is not trusted either way.
pub fn parse_success(body: &[u8]) -> Result<Value, ProviderError> {
    if body.trim_ascii().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| invalid_response(format!("response is not JSON: {e}")))
}

/// An error response body, by shape (trimmed). Which fields to read from it is the provider's business.
pub enum ErrorBody {
    Empty,
    Json(Value),
    /// Not JSON, starting with `<`: XML, or a proxy's HTML page.
    Markup(String),
    /// Anything else: a proxy's or load balancer's text.
    Text(String),
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            ErrorBody::Empty
        } else if let Ok(v) = serde_json::from_str::<Value>(text) {
            ErrorBody::Json(v)
        } else if text.starts_with('<') {
            ErrorBody::Markup(text.to_string())
        } else {
            ErrorBody::Text(text.to_string())
        }
    }
}

/// The first of `names` that is a string field of `v`.
pub fn json_str(v: &Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| v.get(n)?.as_str().map(str::to_string))
}

/// The text of the first `<name>…</name>` element, entity-decoded. Enough for the flat error XML clouds send.
pub fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    let raw = xml[start..end].trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Runs of white space collapsed to one space: how a proxy's page is kept as an error message.
pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A provider's error classification: (error code if any, HTTP status) → class and bounded metric label.
pub type Classify = fn(Option<&str>, u16) -> (ErrorClass, &'static str);

/// How an error the provider does not recognise is classified, by HTTP status alone: 429 throttled, 5xx
/// transient, anything else permanent (`http_4xx` for a 4xx that carries no code at all, else `other`).
pub fn status_class(status: u16, has_code: bool) -> (ErrorClass, &'static str) {
    match status {
        429 => (ErrorClass::Throttled, "throttling"),
        500..=599 => (ErrorClass::Transient, "http_5xx"),
        400..=499 if !has_code => (ErrorClass::Permanent, "http_4xx"),
        _ => (ErrorClass::Permanent, "other"),
    }
}

/// The ProviderError for an error response, from the parts the provider read in it. The code (trimmed; blank is
/// none) is classified with the status by `classify`, then redacted and truncated; without one it is
/// `HTTP{status}`. The message (`HTTP {status}` when blank) gets ` ({name} {id})` appended for a non-empty
/// `request_id` of `(name, id)`, then `secrets` are scrubbed from it before it is truncated.
pub fn response_error(
    status: u16,
    code: Option<&str>,
    message: Option<String>,
    request_id: Option<(&str, String)>,
    secrets: &[&str],
    classify: Classify,
) -> ProviderError {
    let code = code.map(str::trim).filter(|c| !c.is_empty());
    let (class, label) = classify(code, status);
    let code = match code {
        Some(c) => truncate(&redact(c, secrets), MAX_CODE_CHARS),
        None => format!("HTTP{status}"),
    };
    let mut message = message.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| format!("HTTP {status}"));
    if let Some((name, id)) = request_id.filter(|(_, id)| !id.is_empty()) {
        message.push_str(&format!(" ({name} {id})"));
    }
    ProviderError::new(class, code, label, truncate(&redact(&message, secrets), MAX_MESSAGE_CHARS))
}

/// What an error message must never show: the secret key, the session token, and the request's own
/// Authorization header and signature (clouds echo request parts back in signature errors).
pub fn request_secrets<'a>(creds: &'a Credentials, authorization: &'a str, signature: &'a str) -> [&'a str; 4] {
    let token = creds.session_token.as_ref().map_or("", |t| t.expose());
    [creds.secret_access_key.expose(), token, authorization, signature]
}

/// A header value; `sensitive` ones (credentials) are hidden from reqwest's Debug. Never echoes the value.
pub fn header_value(v: &str, sensitive: bool) -> Result<HeaderValue, ProviderError> {
    let mut hv = HeaderValue::from_str(v).map_err(|_| {
        ProviderError::new(
            ErrorClass::Permanent,
            "InvalidCredentials",
            "auth",
            "credential is not a valid header value",
        )
    })?;
    hv.set_sensitive(sensitive);
    Ok(hv)
}

/// The region is part of the default host name.
pub fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("region {region:?} must be non-empty letters, digits or '-'"));
    }
    Ok(())
}

/// An endpoint URL: http(s) with a host, no userinfo, query or fragment. Errors never echo the endpoint: a
/// mistyped one may carry userinfo.
pub fn parse_endpoint(endpoint: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("endpoint is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("endpoint must be an http:// or https:// URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint must not contain credentials; use the credentials setting".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("endpoint must not have a query or fragment".into());
    }
    Ok(url)
}

/// `host[:port]` exactly as the HTTP client sends it (the URL drops a default port).
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Whether a listed alias belongs to us: never one under the cloud-managed `reserved` prefix, and under one of
/// `prefixes`.
pub fn wanted(name: &str, reserved: &str, prefixes: &[String]) -> bool {
    !name.starts_with(reserved) && prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// Refuses an alias under the `reserved` prefix that `owner` (the cloud) manages, before any request is made.
pub fn refuse_reserved(alias: &str, reserved: &str, owner: &str) -> Result<(), ProviderError> {
    if alias.starts_with(reserved) {
        return Err(ProviderError::new(
            ErrorClass::Permanent,
            "ReservedAlias",
            "validation",
            format!("{reserved} aliases are managed by {owner} and never touched"),
        ));
    }
    Ok(())
}

/// `ID` from a key ARN that starts with `scheme` and has `key/ID` as its `fields`-th `:`-separated field;
/// anything else is returned as is.
pub fn arn_key_id<'a>(id: &'a str, scheme: &str, fields: usize) -> &'a str {
    if !id.starts_with(scheme) {
        return id;
    }
    id.splitn(fields, ':').nth(fields - 1).and_then(|r| r.strip_prefix("key/")).unwrap_or(id)
}

/// Cuts `s` to at most `max` characters (on a char boundary), marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Replaces every occurrence of each non-empty `secret` in `s`. Cloud error messages can echo request
/// parts (e.g. a canonical request with the session token); they must never reach logs.
pub fn redact(s: &str, secrets: &[&str]) -> String {
    let mut out = s.to_string();
    for secret in secrets.iter().filter(|x| !x.is_empty()) {
        if out.contains(secret) {
            out = out.replace(secret, "[redacted]");
        }
    }
    out
}

/// "outer: inner: innermost", since reqwest's own Display hides the useful cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc…");
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn success_bodies() {
        assert_eq!(parse_success(b"").unwrap(), Value::Null);
        assert_eq!(parse_success(b"null").unwrap(), Value::Null);
        assert_eq!(parse_success(b" \n").unwrap(), Value::Null);
        assert_eq!(parse_success(br#"{"a":1}"#).unwrap(), serde_json::json!({"a": 1}));
        let e = parse_success(b"<html>ok</html>").unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::Transient, "invalid_response"));
    }

    #[test]
    fn shape_errors_drop_quoted_values() {
        assert_eq!(
            drop_quoted(r#"invalid type: string "a\"b\\", expected x"#),
            r#"invalid type: string "…", expected x"#
        );
        assert_eq!(drop_quoted("missing field `alias`"), "missing field `alias`");
        assert_eq!(drop_quoted(r#"cut "open"#), r#"cut "…""#);
    }

    #[test]
    fn redact_replaces_every_secret() {
        let s = redact("tok=T0K sig=abc T0K", &["T0K", "", "abc"]);
        assert_eq!(s, "tok=[redacted] sig=[redacted] [redacted]");
    }

    #[test]
    fn zero_timeout_is_refused() {
        assert!(try_client(Duration::ZERO).is_err());
        assert!(try_client(Duration::from_secs(1)).is_ok());
    }

    #[tokio::test]
    async fn refused_connection_is_transient() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let e = client(Duration::from_secs(2)).post(format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();
        let e = transport_error(e);
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Transient, "ConnectionError", "connection_error"));
        assert!(!e.message.contains("127.0.0.1"), "URL must not be in the message: {}", e.message);
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept and read, but never answer.
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let e = client(Duration::from_millis(300)).post(format!("http://{addr}/")).send().await.unwrap_err();
        let e = transport_error(e);
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Transient, "Timeout", "timeout"));
        server.abort();
    }
}
