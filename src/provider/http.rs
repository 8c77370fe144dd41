//! HTTP plumbing shared by every provider: the client, transport-error mapping, bounded body reads
//! and text trimming. Nothing cloud-specific lives here.

use std::time::Duration;

use super::{ErrorClass, ProviderError};

/// Connecting should be quick even when the request itself may take longer; an unreachable endpoint
/// must not eat the whole request budget.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest message kept from a cloud's error response: enough to act on, bounded for logs and the DLQ.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Longest error code kept (codes are short; anything longer is not a code).
pub const MAX_CODE_CHARS: usize = 100;

/// Builds an HTTP client with a whole-request timeout. One client is shared per provider and endpoint
/// so that connections (and TLS sessions) are pooled.
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
fn error_chain(e: &dyn std::error::Error) -> String {
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
