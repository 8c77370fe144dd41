//! Huawei Cloud IAM assume-agency and the ECS metadata security key, on the emulator's usual port, answering in
//! the wire format the official `huaweicloudsdkcore` (MetadataAccessor) and `huaweicloudsdkiam`
//! (CreateTemporaryAccessKeyByAgency) parse (tests/sdk/test_huawei_credentials.py proves it):
//!
//! - `POST /v3.0/OS-CREDENTIAL/securitytokens` with `{"auth":{"identity":{"methods":["assume_role"],
//!   "assume_role":{"agency_name","domain_name"|"domain_id","duration_seconds"}}}}`, signed `SDK-HMAC-SHA256`
//!   (verified as for KMS; a temporary caller must send its signed `X-Security-Token`) → 201
//!   `{"credential":{"access","secret","securitytoken","expires_at"}}`. Every agency exists here.
//! - ECS metadata (normally `http://169.254.169.254`): `PUT /meta-data/latest/api/token` with
//!   `X-Metadata-Token-Ttl-Seconds`, then `GET /openstack/latest/securitykey` with `X-Metadata-Token`. The token
//!   is required (as on a hardened ECS), so a client that skips it fails here first.
//!
//! Issued keys are sessions in [`crate::sessions`]: the emulator's KMS and IAM accept them with their token
//! until they expire, then answer 401 `APIGW.0307` ("The token must be updated.", APIG's code for a token to
//! renew). `--sts-session-seconds` shortens every lifetime for refresh tests.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::app::App;
use crate::config::derive_account;
use crate::counters::Outcome;
use crate::sessions::Session;
use crate::wire::{random_alnum, respond, ApiError, CallInfo, Cloud, OpClass, RawRequest};
use crate::{huawei, verify};

const ASSUME_PATH: &str = "/v3.0/OS-CREDENTIAL/securitytokens";
const TOKEN_PATH: &str = "/meta-data/latest/api/token";
const SECURITY_KEY_PATH: &str = "/openstack/latest/securitykey";
const CONTENT_TYPE: &str = "application/json;charset=UTF-8";
/// ECS agency keys live an hour (the ECS docs; they rotate 10 min before expiry).
const ECS_LIFETIME: Duration = Duration::from_secs(3600);
/// The ECS agency the metadata keys act as, in the domain of the emulator's default Huawei key.
const ECS_AGENCY: &str = "ecs_agency";
const ECS_DOMAIN: &str = "3bab8e245e854f68af5967c00dd43127";
/// The SDK asks for 6 h tokens; ECS allows at most that.
const METADATA_TOKEN_MAX_TTL: u64 = 21600;
/// IAM's `duration_seconds` range (15 min to 24 h) and default (15 min).
const DURATION_RANGE: std::ops::RangeInclusive<u64> = 900..=86_400;
const DEFAULT_DURATION: u64 = 900;

/// Metadata tokens handed out by `PUT /meta-data/latest/api/token`, with their expiry.
static METADATA_TOKENS: OnceLock<Mutex<HashMap<String, SystemTime>>> = OnceLock::new();

fn tokens() -> std::sync::MutexGuard<'static, HashMap<String, SystemTime>> {
    METADATA_TOKENS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers the IAM and metadata requests; None for anything else (KMS routing goes on).
pub fn handle(app: &App, req: &RawRequest) -> Option<Response> {
    let path = req.path.trim_end_matches('/');
    let (op, result) = match (req.method.as_str(), path) {
        ("POST", ASSUME_PATH) => ("CreateTemporaryAccessKeyByAgency", assume_agency(app, req)),
        ("PUT", TOKEN_PATH) => ("GetMetadataToken", metadata_token(req)),
        ("GET", SECURITY_KEY_PATH) => ("GetSecurityKey", security_key(app, req)),
        _ => return None,
    };
    let info = CallInfo {
        cloud: Cloud::Huawei,
        operation: op.into(),
        class: OpClass::Read,
        account: String::new(),
        region: req.listener_region.clone().unwrap_or_else(|| app.options.huawei_region.clone()),
    };
    Some(match result {
        Ok(resp) => {
            app.counters.record(&info, Outcome::Ok);
            resp
        }
        Err(e) => {
            let auth = e.status == 401;
            app.counters.record(&info, Outcome::Error { code: &e.code, throttled: false, injected: false, auth });
            tracing::info!(cloud = "huawei", op, status = e.status, code = %e.code, message = %e.message, "error");
            if path == ASSUME_PATH {
                huawei::render_error(&e, &info)
            } else {
                // The metadata service answers plain text.
                respond(e.status, "text/plain", e.message.into_bytes(), &[])
            }
        }
    })
}

/// For a request signed with an issued key: its `X-Security-Token` must come along, signed, and match; then
/// the session must be live. Long-lived and unknown keys pass (the signature check answers those).
pub fn check_session(app: &App, req: &RawRequest) -> Result<(), ApiError> {
    let Some(auth) = req.header("authorization").and_then(verify::parse_sdk_hmac) else { return Ok(()) };
    if app.credentials.get(Cloud::Huawei, &auth.access_key_id).is_some() {
        return Ok(());
    }
    let Some(session) = app.credentials.sessions.lookup(Cloud::Huawei, &auth.access_key_id) else { return Ok(()) };
    let denied =
        |why: &str| ApiError::new(401, "APIGW.0301", format!("Incorrect IAM authentication information: {why}"));
    let Some(token) = req.header("x-security-token").filter(|t| !t.is_empty()) else {
        return Err(denied("the access key is temporary: X-Security-Token is required"));
    };
    if !auth.signed_headers.iter().any(|h| h.eq_ignore_ascii_case("x-security-token")) {
        return Err(denied("x-security-token must be a signed header"));
    }
    if !verify::constant_time_eq(token.as_bytes(), session.token.as_bytes()) {
        return Err(denied("the security token does not belong to the access key"));
    }
    if session.expired() {
        return Err(ApiError::new(401, "APIGW.0307", "The token must be updated."));
    }
    Ok(())
}

/// `expires_at` as IAM and the metadata service send it: `2020-01-08T02:56:19.587000Z` (the Python SDK parses
/// exactly `%Y-%m-%dT%H:%M:%S.%fZ`).
fn expires_at(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn credential_body(s: &Session) -> Vec<u8> {
    json!({
        "credential": {
            "access": s.access_key_id,
            "secret": s.secret,
            "securitytoken": s.token,
            "expires_at": expires_at(s.expires),
        }
    })
    .to_string()
    .into_bytes()
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "IAM.0006", message)
}

fn assume_agency(app: &App, req: &RawRequest) -> Result<Response, ApiError> {
    check_session(app, req)?;
    verify::huawei(app, req).map_err(huawei::auth_error)?;
    let body: Value = serde_json::from_slice(&req.body).map_err(|_| bad_request("The request body is not JSON."))?;
    let identity = body.pointer("/auth/identity").ok_or_else(|| bad_request("auth.identity is required."))?;
    let methods = identity.get("methods").and_then(Value::as_array);
    if !methods.is_some_and(|m| m.iter().any(|x| x == "assume_role")) {
        return Err(bad_request("auth.identity.methods must contain \"assume_role\"."));
    }
    let role = identity.get("assume_role").ok_or_else(|| bad_request("auth.identity.assume_role is required."))?;
    let text = |k: &str| role.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let agency = text("agency_name").ok_or_else(|| bad_request("assume_role.agency_name is required."))?;
    let domain = text("domain_name")
        .or_else(|| text("domain_id"))
        .ok_or_else(|| bad_request("assume_role.domain_name or domain_id is required."))?;
    let duration = match role.get("duration_seconds") {
        None => DEFAULT_DURATION,
        Some(v) => v
            .as_u64()
            .filter(|d| DURATION_RANGE.contains(d))
            .ok_or_else(|| bad_request("assume_role.duration_seconds must be 900 to 86400."))?,
    };
    let account = if domain.len() == 32 && domain.bytes().all(|b| b.is_ascii_hexdigit()) {
        domain.to_string()
    } else {
        derive_account(Cloud::Huawei, domain)
    };
    let s = app.credentials.sessions.issue(
        Cloud::Huawei,
        "",
        Duration::from_secs(duration),
        format!("{domain}/{agency}"),
        account,
    );
    tracing::info!(agency, domain, access_key_id = %s.access_key_id, "huawei: agency assumed");
    Ok(respond(201, CONTENT_TYPE, credential_body(&s), &[("x-request-id", random_alnum(32))]))
}

fn metadata_token(req: &RawRequest) -> Result<Response, ApiError> {
    let ttl = req
        .header("x-metadata-token-ttl-seconds")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|t| (1..=METADATA_TOKEN_MAX_TTL).contains(t))
        .ok_or_else(|| ApiError::new(400, "BadRequest", "X-Metadata-Token-Ttl-Seconds must be 1 to 21600"))?;
    let token = random_alnum(48);
    let mut map = tokens();
    let now = SystemTime::now();
    map.retain(|_, exp| *exp > now);
    map.insert(token.clone(), now + Duration::from_secs(ttl));
    Ok(respond(200, "text/plain", token.into_bytes(), &[]))
}

fn security_key(app: &App, req: &RawRequest) -> Result<Response, ApiError> {
    let live =
        req.header("x-metadata-token").is_some_and(|t| tokens().get(t).is_some_and(|exp| *exp > SystemTime::now()));
    if !live {
        // Not the "configure an agency" text: the SDK then fetches a new token and retries once.
        return Err(ApiError::new(401, "Unauthorized", "401 Unauthorized: X-Metadata-Token is missing or invalid"));
    }
    let s = app.credentials.sessions.issue(
        Cloud::Huawei,
        "",
        ECS_LIFETIME,
        format!("{ECS_DOMAIN}/{ECS_AGENCY}"),
        ECS_DOMAIN,
    );
    Ok(respond(200, CONTENT_TYPE, credential_body(&s), &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_format_is_what_the_python_sdk_parses() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_578_452_179_587);
        assert_eq!(expires_at(t), "2020-01-08T02:56:19.587000Z");
    }
}
