//! Alibaba Cloud STS (API 2015-04-01: AssumeRole, AssumeRoleWithOIDC, GetCallerIdentity) and the ECS instance
//! metadata RAM-role endpoints, on the emulator's usual port, answering in the wire format the official
//! `alibabacloud-credentials` library parses (tests/sdk/test_alibaba_credentials.py proves it):
//!
//! - STS is RPC style like KMS, told apart by `Version=2015-04-01` (KMS is 2016-01-20). AssumeRole and
//!   GetCallerIdentity are signed (ACS3 or RPC v1, verified as for KMS; a session caller must send its
//!   `SecurityToken`); AssumeRoleWithOIDC is not signed (the OIDC token is the proof).
//! - ECS metadata (normally `http://100.100.100.200`): `PUT /latest/api/token` with
//!   `X-aliyun-ecs-metadata-token-ttl-seconds`, then `GET /latest/meta-data/ram/security-credentials/[role]`
//!   with `X-aliyun-ecs-metadata-token`. The token is required (a hardened instance), so a client that skips
//!   it fails here rather than on a real hardened ECS.
//!
//! Every issued credential is an `STS.`-prefixed session in [`crate::sessions`]: the emulator's KMS accepts it
//! with its token until it expires, then answers `InvalidSecurityToken.Expired`. `--sts-session-seconds`
//! shortens every lifetime for refresh tests.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::app::App;
use crate::config::derive_account;
use crate::sessions::Session;
use crate::wire::{random_alnum, respond, uuid4, ApiError, Cloud, RawRequest};
use crate::{alibaba, verify};

const VERSION: &str = "2015-04-01";
const CONTENT_TYPE: &str = "application/json;charset=utf-8";
/// How long the emulated ECS metadata's credentials live (real instances rotate them within hours).
const ECS_LIFETIME: Duration = Duration::from_secs(6 * 3600);
/// The largest metadata token TTL ECS accepts.
const METADATA_TOKEN_MAX_TTL: u64 = 21600;

struct Config {
    ecs_role_arn: String,
    external_ids: Vec<(String, String)>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();
/// Metadata tokens handed out by `PUT /latest/api/token`, with their expiry.
static METADATA_TOKENS: OnceLock<Mutex<HashMap<String, SystemTime>>> = OnceLock::new();

const DEFAULT_ECS_ROLE_ARN: &str = "acs:ram::1234567890123456:role/aliassync-ecs";

/// Sets the ECS instance role and the roles that require an ExternalId (`ROLE_ARN=ID`), from the command line.
pub fn configure(ecs_role_arn: &str, external_ids: &[String]) -> Result<(), String> {
    parse_role_arn(ecs_role_arn).ok_or_else(|| format!("--alibaba-ecs-role-arn {ecs_role_arn:?}: not a role ARN"))?;
    let external_ids = external_ids
        .iter()
        .map(|s| s.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or("--alibaba-role-external-id: expected ROLE_ARN=EXTERNAL_ID")?;
    CONFIG
        .set(Config { ecs_role_arn: ecs_role_arn.to_string(), external_ids })
        .map_err(|_| "alibaba_sts configured twice".to_string())
}

fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config { ecs_role_arn: DEFAULT_ECS_ROLE_ARN.into(), external_ids: Vec::new() })
}

/// `acs:ram::<uid>:role/<name>` → (uid, name). RAM matches role names case-insensitively and reports them in
/// lower case in assumed-role ARNs.
fn parse_role_arn(arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("acs:ram::")?;
    let (uid, role) = rest.split_once(':')?;
    let name = role.strip_prefix("role/")?;
    (!uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() && !name.contains('/'))
        .then(|| (uid.to_string(), name.to_ascii_lowercase()))
}

/// The STS or metadata answer to `req`, or None when it is neither (a KMS request, say).
pub fn handle(app: &App, req: &RawRequest) -> Option<Response> {
    if req.path.starts_with("/latest/") {
        return metadata(app, req);
    }
    if !alibaba::matches(req) {
        return None;
    }
    let params = alibaba::params_of(req);
    let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    if req.header("x-acs-version").or(param("Version")) != Some(VERSION) {
        return None;
    }
    let action = req.header("x-acs-action").or(param("Action")).unwrap_or("").to_string();
    let result = match action.as_str() {
        "AssumeRole" => authenticate(app, req, &params).and_then(|caller| assume_role(app, &params, &caller)),
        "AssumeRoleWithOIDC" => assume_role_with_oidc(app, &params),
        "GetCallerIdentity" => authenticate(app, req, &params).map(|caller| caller_identity(&caller)),
        _ => Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            format!("Specified api is not found, please check your url and method. ({action})"),
        )),
    };
    let resp = match result {
        Ok(mut v) => {
            v["RequestId"] = json!(uuid4().to_ascii_uppercase());
            respond(200, CONTENT_TYPE, v.to_string().into_bytes(), &[])
        }
        Err(e) => {
            tracing::info!(cloud = "alibaba", service = "sts", op = %action, status = e.status, code = %e.code, "error");
            error(&e)
        }
    };
    Some(resp)
}

fn error(e: &ApiError) -> Response {
    let body = json!({
        "RequestId": uuid4().to_ascii_uppercase(),
        "HostId": "sts.aliyuncs.com",
        "Code": e.code,
        "Message": e.message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product=Sts", e.code),
    });
    respond(e.status, CONTENT_TYPE, body.to_string().into_bytes(), &[])
}

/// Who signed a request: a configured key (a RAM user) or an issued session.
enum Caller {
    User { access_key_id: String, account: String },
    Session(Session),
}

/// The access key id of a signed Alibaba request (ACS3 header, else the `AccessKeyId` parameter).
fn access_key_of(req: &RawRequest, params: &[(String, String)]) -> Option<String> {
    req.header("authorization")
        .and_then(verify::parse_acs3)
        .map(|a| a.access_key_id)
        .or_else(|| params.iter().find(|(k, _)| k == "AccessKeyId").map(|(_, v)| v.clone()))
}

/// For a request signed with an STS session's key: its token must come along and the session must be live.
/// Long-lived and unknown keys pass (the signature check answers those). Used for KMS calls too.
pub fn check_session(app: &App, req: &RawRequest, params: &[(String, String)]) -> Result<(), ApiError> {
    let Some(ak) = access_key_of(req, params) else { return Ok(()) };
    if app.credentials.get(Cloud::Alibaba, &ak).is_some() {
        return Ok(());
    }
    let Some(session) = app.credentials.sessions.lookup(Cloud::Alibaba, &ak) else { return Ok(()) };
    let token = req
        .header("x-acs-security-token")
        .or_else(|| params.iter().find(|(k, _)| k == "SecurityToken").map(|(_, v)| v.as_str()))
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ApiError::new(400, "MissingSecurityToken", "SecurityToken is mandatory for this action."));
    };
    if !verify::constant_time_eq(token.as_bytes(), session.token.as_bytes()) {
        return Err(ApiError::new(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        ));
    }
    if session.expired() {
        return Err(ApiError::new(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired."));
    }
    Ok(())
}

fn authenticate(app: &App, req: &RawRequest, params: &[(String, String)]) -> Result<Caller, ApiError> {
    check_session(app, req, params)?;
    verify::alibaba(app, req, params).map_err(alibaba::auth_error)?;
    let ak = access_key_of(req, params).unwrap_or_default();
    Ok(match app.credentials.sessions.lookup(Cloud::Alibaba, &ak) {
        Some(s) if app.credentials.get(Cloud::Alibaba, &ak).is_none() => Caller::Session(s),
        _ => Caller::User { account: app.credentials.account_for(Cloud::Alibaba, &ak), access_key_id: ak },
    })
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, ApiError> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::new(400, format!("Missing{name}"), format!("{name} is mandatory for this action.")))
}

/// `DurationSeconds`: 900 s up to the role's maximum session duration (at most 12 h), default 3600.
fn duration(params: &[(String, String)]) -> Result<Duration, ApiError> {
    let Some((_, v)) = params.iter().find(|(k, _)| k == "DurationSeconds") else {
        return Ok(Duration::from_secs(3600));
    };
    match v.parse::<u64>() {
        Ok(n) if (900..=43200).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(ApiError::new(
            400,
            "InvalidParameter.DurationSeconds",
            "The parameter DurationSeconds is wrongly formed, it must be between 900 and the max session duration.",
        )),
    }
}

fn session_name(params: &[(String, String)]) -> Result<String, ApiError> {
    let name = required(params, "RoleSessionName")?;
    let ok = (2..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if !ok {
        return Err(ApiError::new(
            400,
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName is wrongly formed.",
        ));
    }
    Ok(name.to_string())
}

fn iso(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A role's id: a stable number in the shape RAM shows (e.g. `344584339364951186`).
fn role_id(uid: &str, name: &str) -> String {
    let n = derive_account(Cloud::Alibaba, &format!("role:{uid}:{name}"));
    format!("3{}", &n[..n.len().min(17)])
}

/// Issues a session for role `name` of account `uid` and answers as AssumeRole does.
fn issue_role_session(app: &App, uid: &str, name: &str, session: &str, requested: Duration) -> Value {
    let identity = format!("acs:ram::{uid}:assumed-role/{name}/{session}");
    let s = app.credentials.sessions.issue(Cloud::Alibaba, "STS.", requested, identity, uid);
    json!({
        "AssumedRoleUser": {
            "AssumedRoleId": format!("{}:{session}", role_id(uid, name)),
            "Arn": format!("acs:ram::{uid}:role/{name}/{session}"),
        },
        "Credentials": {
            "AccessKeyId": s.access_key_id,
            "AccessKeySecret": s.secret,
            "SecurityToken": s.token,
            "Expiration": iso(s.expires),
        },
    })
}

fn bad_role_arn() -> ApiError {
    ApiError::new(400, "InvalidParameter.RoleArn", "The parameter RoleArn is wrongly formed.")
}

fn assume_role(app: &App, params: &[(String, String)], caller: &Caller) -> Result<Value, ApiError> {
    let arn = required(params, "RoleArn")?;
    let (uid, name) = parse_role_arn(arn).ok_or_else(bad_role_arn)?;
    let session = session_name(params)?;
    let requested = duration(params)?;
    let given = params.iter().find(|(k, _)| k == "ExternalId").map(|(_, v)| v.as_str());
    let wanted = config().external_ids.iter().find(|(a, _)| a.eq_ignore_ascii_case(arn)).map(|(_, id)| id.as_str());
    if let Some(wanted) = wanted {
        if given != Some(wanted) {
            return Err(ApiError::new(
                403,
                "NoPermission",
                "You are not authorized to do this action. The ExternalId does not match the role's trust policy.",
            ));
        }
    }
    tracing::info!(
        cloud = "alibaba", service = "sts", op = "AssumeRole", role = %arn, %session,
        caller = %match caller { Caller::User { access_key_id, .. } => access_key_id.as_str(), Caller::Session(s) => s.identity.as_str() },
        "ok"
    );
    Ok(issue_role_session(app, &uid, &name, &session, requested))
}

fn assume_role_with_oidc(app: &App, params: &[(String, String)]) -> Result<Value, ApiError> {
    let arn = required(params, "RoleArn")?;
    let (uid, name) = parse_role_arn(arn).ok_or_else(bad_role_arn)?;
    let provider = required(params, "OIDCProviderArn")?;
    if !provider.starts_with("acs:ram::") || !provider.contains(":oidc-provider/") {
        return Err(ApiError::new(
            400,
            "InvalidParameter.OIDCProviderArn",
            "The parameter OIDCProviderArn is wrongly formed.",
        ));
    }
    let token = required(params, "OIDCToken")?;
    // Any three-part token passes: the emulator checks the shape, not an issuer's signature.
    if token.trim().split('.').count() != 3 {
        return Err(ApiError::new(400, "AuthenticationFail.OIDCToken.Invalid", "The OIDCToken is invalid."));
    }
    let session = session_name(params)?;
    let mut v = issue_role_session(app, &uid, &name, &session, duration(params)?);
    v["OIDCTokenInfo"] = json!({ "Issuer": "https://oidc-emulator", "Subject": "system:serviceaccount:emulator", "ClientIds": "sts.aliyuncs.com" });
    Ok(v)
}

fn caller_identity(caller: &Caller) -> Value {
    match caller {
        Caller::Session(s) => {
            // acs:ram::<uid>:assumed-role/<role>/<session>
            let tail = s.identity.rsplit(':').next().unwrap_or("");
            let mut parts = tail.split('/').skip(1);
            let (role, session) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let rid = role_id(&s.account, role);
            json!({
                "IdentityType": "AssumedRoleUser",
                "AccountId": s.account,
                "Arn": s.identity,
                "RoleId": rid,
                "PrincipalId": format!("{rid}:{session}"),
                "UserId": format!("{rid}:{session}"),
            })
        }
        Caller::User { access_key_id, account } => {
            let uid = derive_account(Cloud::Alibaba, &format!("user:{access_key_id}"));
            json!({
                "IdentityType": "RAMUser",
                "AccountId": account,
                "Arn": format!("acs:ram::{account}:user/{}", access_key_id.to_ascii_lowercase()),
                "PrincipalId": uid,
                "UserId": uid,
            })
        }
    }
}

fn text(status: u16, body: &str) -> Response {
    respond(status, "text/plain", body.as_bytes().to_vec(), &[])
}

fn tokens() -> &'static Mutex<HashMap<String, SystemTime>> {
    METADATA_TOKENS.get_or_init(Default::default)
}

/// ECS instance metadata, RAM role part. Other `/latest/` paths are not Alibaba's (or not emulated): None.
fn metadata(app: &App, req: &RawRequest) -> Option<Response> {
    const CREDS: &str = "/latest/meta-data/ram/security-credentials/";
    if req.path == "/latest/api/token" {
        // AWS IMDS uses the same path with its own header; only answer Alibaba's.
        let ttl = req.header("x-aliyun-ecs-metadata-token-ttl-seconds")?;
        if req.method != axum::http::Method::PUT {
            return Some(text(405, "Method Not Allowed"));
        }
        let Ok(ttl) = ttl.parse::<u64>() else { return Some(text(400, "Bad Request")) };
        if !(1..=METADATA_TOKEN_MAX_TTL).contains(&ttl) {
            return Some(text(400, "Bad Request"));
        }
        let token = random_alnum(48);
        let mut map = tokens().lock().expect("metadata tokens");
        let now = SystemTime::now();
        map.retain(|_, exp| *exp > now);
        map.insert(token.clone(), now + Duration::from_secs(ttl));
        return Some(text(200, &token));
    }
    let role = req.path.strip_prefix(CREDS)?;
    if req.method != axum::http::Method::GET {
        return Some(text(405, "Method Not Allowed"));
    }
    let valid = req
        .header("x-aliyun-ecs-metadata-token")
        .is_some_and(|t| tokens().lock().expect("metadata tokens").get(t).is_some_and(|exp| *exp > SystemTime::now()));
    if !valid {
        return Some(text(401, "Unauthorized"));
    }
    let (uid, name) = parse_role_arn(&config().ecs_role_arn).expect("checked by configure");
    if role.is_empty() {
        return Some(text(200, &name));
    }
    if !role.eq_ignore_ascii_case(&name) {
        return Some(text(404, "Not Found"));
    }
    let identity = format!("acs:ram::{uid}:assumed-role/{name}/vm-ecs-emulator");
    let s = app.credentials.sessions.issue(Cloud::Alibaba, "STS.", ECS_LIFETIME, identity, uid);
    let body = json!({
        "AccessKeyId": s.access_key_id,
        "AccessKeySecret": s.secret,
        "Expiration": iso(s.expires),
        "SecurityToken": s.token,
        "LastUpdated": iso(SystemTime::now()),
        "Code": "Success",
    });
    Some(respond(200, "text/plain", serde_json::to_vec_pretty(&body).unwrap_or_default(), &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert_eq!(
            parse_role_arn("acs:ram::1234567890123456:role/AliasSync"),
            Some(("1234567890123456".into(), "aliassync".into()))
        );
        assert_eq!(parse_role_arn("acs:ram::12x:role/a"), None);
        assert_eq!(parse_role_arn("acs:ram::1:user/a"), None);
        assert_eq!(role_id("1", "a").len(), 17);
    }
}
