//! AWS KMS (and AWS-compatible endpoints): JSON 1.1 over HTTP, SigV4-signed.
//!
//! Every call is `POST /` with `X-Amz-Target: TrentService.<Op>`. Errors are classified once, here,
//! in [`classify`]; the engine only sees [`ErrorClass`].

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{
    self as phttp, collapse_whitespace, invalid_response, json_str, parse_endpoint, xml_element, ErrorBody,
};
use super::pages::{list_wanted, walk, Cursor, Page};
use super::transport::{self, Prepared, Wire};
use super::{found, ErrorClass, KeyFacts, KeyState, KmsAliases, LiveAlias, ProviderError, SharedCredentials};
use crate::secret::Credentials;

const AMZ_JSON: &str = "application/x-amz-json-1.1";
const TARGET_PREFIX: &str = "TrentService.";
const DEFAULT_SERVICE: &str = "kms";
/// AWS-managed aliases: never listed, never touched. DescribeKey on one can even *create* the
/// AWS managed key, so they are refused before any request is made.
pub(crate) const RESERVED_PREFIX: &str = "alias/aws/";
/// The documented ListAliases maximum (the model allows 1000, the docs say 100).
const LIST_LIMIT: u32 = 100;
/// Temporary credentials travel in this (signed) header.
const SECURITY_TOKEN_HEADER: &str = "x-amz-security-token";

/// An AWS KMS endpoint in one region, with its credentials.
#[derive(Debug)]
pub struct AwsKms {
    client: reqwest::Client,
    url: reqwest::Url,
    region: String,
    service: String,
    creds: SharedCredentials,
}

impl AwsKms {
    /// `endpoint` defaults to [`default_endpoint`], `signing_service` to `kms`.
    /// Errors never echo the endpoint: a mistyped one may carry userinfo.
    pub fn new(
        region: &str,
        endpoint: Option<&str>,
        signing_service: Option<&str>,
        creds: Credentials,
        timeout: Duration,
    ) -> Result<AwsKms, String> {
        Self::with_client(region, endpoint, signing_service, SharedCredentials::new(creds), phttp::try_client(timeout)?)
    }

    /// [`AwsKms::new`] with an HTTP client shared with other targets (its timeout is the request timeout).
    pub fn with_client(
        region: &str,
        endpoint: Option<&str>,
        signing_service: Option<&str>,
        creds: SharedCredentials,
        client: reqwest::Client,
    ) -> Result<AwsKms, String> {
        check_scope_part("region", region)?;
        let service = signing_service.unwrap_or(DEFAULT_SERVICE);
        check_scope_part("signing service", service)?;
        let url = match endpoint {
            Some(e) => parse_endpoint(e)?,
            None => parse_endpoint(&default_endpoint(region))?,
        };
        Ok(AwsKms { client, url, region: region.to_string(), service: service.to_string(), creds })
    }

    /// Calls one KMS operation (`op` without the `TrentService.` prefix) and returns the response
    /// body, `Value::Null` when the body is empty or `null`.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, ProviderError> {
        let op = AwsOp { target: format!("{TARGET_PREFIX}{op}"), payload: transport::json_body(body)? };
        transport::send(&self.client, &self.creds, self, &op).await
    }

    /// The credentials this endpoint signs with; replacing them affects the requests that start afterwards.
    pub fn credentials(&self) -> SharedCredentials {
        self.creds.clone()
    }

    fn sign(
        &self,
        target: &str,
        payload: &[u8],
        time: SystemTime,
        creds: &Credentials,
    ) -> Result<SigV4, ProviderError> {
        let headers = [("content-type", AMZ_JSON), ("x-amz-target", target)];
        let req = SignableParts { method: "POST", uri: self.url.as_str(), headers: &headers, body: payload };
        sign_v4(&req, &self.region, &self.service, time, creds)
            .map_err(|m| ProviderError::new(ErrorClass::Permanent, "SigningError", "auth", m))
    }

    /// The key `alias` points at, by walking ListAliases (which cannot filter by name) until it shows up.
    async fn find_listed(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        let mut found = None;
        let visit = |a: AliasEntry| {
            let hit = a.alias_name == alias;
            if hit {
                found = a.target_key_id;
            }
            hit
        };
        walk("ListAliases", |c| self.list_page(c), visit).await?;
        Ok(found)
    }

    /// One ListAliases page, after `cursor` (a marker).
    async fn list_page(&self, cursor: Option<Cursor>) -> Result<Page<AliasEntry>, ProviderError> {
        let mut req = json!({ "Limit": LIST_LIMIT });
        if let Some(Cursor::Marker(m)) = cursor {
            req["Marker"] = json!(m);
        }
        let page = parse_list_page(self.call("ListAliases", &req).await?)?;
        let next = next_marker(page.truncated, page.next_marker)?.map(Cursor::Marker);
        Ok(Page { items: page.aliases.unwrap_or_default(), next })
    }
}

/// One KMS call: its `X-Amz-Target` and JSON payload.
pub struct AwsOp {
    target: String,
    payload: Vec<u8>,
}

/// `POST /` with the JSON body; SigV4 signs `content-type`, `host`, `x-amz-date`, `x-amz-target` (and the
/// session token header, which the signer adds to the signed set).
impl Wire for AwsKms {
    type Op<'a> = AwsOp;

    fn prepare(&self, op: &AwsOp, creds: &Credentials) -> Result<Prepared, ProviderError> {
        let sig = self.sign(&op.target, &op.payload, SystemTime::now(), creds)?;
        let mut headers = vec![
            ("content-type", AMZ_JSON.to_string()),
            ("x-amz-target", op.target.clone()),
            ("x-amz-date", sig.amz_date),
        ];
        if let Some(token) = &creds.session_token {
            headers.push((SECURITY_TOKEN_HEADER, token.expose().to_string()));
        }
        Ok(Prepared {
            method: Method::POST,
            url: self.url.clone(),
            headers,
            token_header: SECURITY_TOKEN_HEADER,
            body: Some(op.payload.clone()),
            authorization: sig.authorization,
            signature: sig.signature,
        })
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8], secrets: &[&str]) -> ProviderError {
        parse_error(status, headers, body, secrets)
    }

    fn describe(op: &AwsOp) -> String {
        op.target.clone()
    }
}

#[async_trait]
impl KmsAliases for AwsKms {
    async fn list_each(
        &self,
        prefixes: &[String],
        visit: &mut (dyn FnMut(LiveAlias) + Send),
    ) -> Result<(), ProviderError> {
        list_wanted("ListAliases", |c| self.list_page(c), RESERVED_PREFIX, prefixes, visit).await
    }

    async fn get_alias(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        refuse_reserved(alias)?;
        // DescribeKey accepts an alias name and resolves it to the key it points at: one call.
        match self.call("DescribeKey", &json!({ "KeyId": alias })).await {
            Ok(v) => v
                .pointer("/KeyMetadata/KeyId")
                .and_then(Value::as_str)
                .map(|id| Some(id.to_string()))
                .ok_or_else(|| invalid_response("DescribeKey: no KeyMetadata.KeyId in the response")),
            Err(e) if e.class == ErrorClass::NotFound => Ok(None),
            // DescribeKey needs kms:DescribeKey on the key behind the alias, which the minimal policy (README
            // "Minimal permissions") leaves optional: the listing finds the alias with kms:ListAliases alone.
            Err(e) if e.class == ErrorClass::AccessDenied => self.find_listed(alias).await,
            Err(e) => Err(e),
        }
    }

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        refuse_reserved(alias)?;
        let body = json!({ "AliasName": alias, "TargetKeyId": key_id });
        self.call("CreateAlias", &body).await.map(drop).map_err(alias_quota)
    }

    async fn update_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        refuse_reserved(alias)?;
        let body = json!({ "AliasName": alias, "TargetKeyId": key_id });
        self.call("UpdateAlias", &body).await.map(drop).map_err(alias_quota)
    }

    /// AWS deletes by name alone; `current_key` is not needed.
    async fn delete_alias(&self, alias: &str, _current_key: Option<&str>) -> Result<(), ProviderError> {
        refuse_reserved(alias)?;
        self.call("DeleteAlias", &json!({ "AliasName": alias })).await.map(drop)
    }

    /// DescribeKey by key id or key ARN. Never with an alias name: a reserved one could create the AWS managed key.
    async fn describe_key(&self, key_id: &str) -> Result<Option<KeyFacts>, ProviderError> {
        refuse_reserved(key_id)?;
        found(self.call("DescribeKey", &json!({ "KeyId": key_id })).await)?.map(parse_key_facts).transpose()
    }

    /// Desired targets may be key ARNs; listings and DescribeKey return bare key ids.
    fn key_matches(&self, desired: &str, live: &str) -> bool {
        !desired.is_empty() && bare_key_id(desired) == bare_key_id(live)
    }
}

// ---------------------------------------------------------------------------------------------
// SigV4

/// The parts of an HTTP request that SigV4 covers. Every header given is signed (the `host` header
/// is derived from `uri` when absent, as the HTTP client will send it).
pub struct SignableParts<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// What signing adds to a request (besides `x-amz-security-token`, which the caller sets from its
/// credentials). No Debug on purpose: the Authorization header never goes into logs.
pub struct SigV4 {
    pub amz_date: String,
    pub authorization: String,
    pub signature: String,
}

/// Signs a request with SigV4, signing exactly the given headers plus `host`, `x-amz-date` and, with
/// a session token, `x-amz-security-token`. No `x-amz-content-sha256` header (KMS does not use it);
/// the payload hash is still part of the canonical request.
pub fn sign_v4(
    req: &SignableParts<'_>,
    region: &str,
    service: &str,
    time: SystemTime,
    creds: &Credentials,
) -> Result<SigV4, String> {
    let identity: Identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        creds.secret_access_key.expose(),
        creds.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "aliassync",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    let params = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let signable =
        SignableRequest::new(req.method, req.uri, req.headers.iter().copied(), SignableBody::Bytes(req.body))
            .map_err(|e| format!("cannot sign: {e}"))?;
    let (instructions, signature) = sign(signable, &params).map_err(|e| format!("cannot sign: {e}"))?.into_parts();
    let header = |name: &str| instructions.headers().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
    match (header("x-amz-date"), header("authorization")) {
        (Some(amz_date), Some(authorization)) => Ok(SigV4 { amz_date, authorization, signature }),
        _ => Err("cannot sign: the signer produced no Authorization header".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
//
// Success bodies (`parse_success`): AWS sends an empty body for the alias mutators, moto sends `null` (as
// text/html); reads send JSON.

/// Turns an error response into a ProviderError. The code comes from `X-Amzn-ErrorType`, else the
/// body (JSON `__type`/`code`, or XML `<Code>` as moto's strict auth sends); the message from the
/// body. `secrets` are scrubbed from code and message before the message is truncated.
pub(crate) fn parse_error(status: u16, headers: &HeaderMap, body: &[u8], secrets: &[&str]) -> ProviderError {
    let (body_code, message) = parse_error_body(body);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let code = header("x-amzn-errortype")
        .map(sanitize_code)
        .filter(|c| !c.is_empty())
        .or_else(|| body_code.as_deref().map(sanitize_code).filter(|c| !c.is_empty()));
    // The id AWS support asks for (smithy-rs reads `x-amzn-requestid`, older services `x-amz-request-id`).
    let request_id = header("x-amzn-requestid").or_else(|| header("x-amz-request-id"));
    let request_id = request_id.map(|id| ("RequestId", id.to_string()));
    phttp::response_error(status, code, message, request_id, secrets, classify)
}

/// A LimitExceededException from CreateAlias/UpdateAlias: in KMS a resource quota, and for the alias calls the
/// one that applies is the 50 aliases per KMS key (docs "resource-limits"; the model lists LimitExceeded for
/// both calls). Retrying cannot free quota.
fn alias_quota(e: ProviderError) -> ProviderError {
    if e.code != "LimitExceededException" {
        return e;
    }
    super::alias_quota(e, "the key already has the most aliases AWS KMS allows (50 per KMS key)")
}

/// (code, message) from an error body in any of the shapes seen: KMS JSON, XML, plain text.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    match ErrorBody::parse(body) {
        ErrorBody::Empty => (None, None),
        ErrorBody::Json(v) => (json_str(&v, &["__type", "code", "Code"]), json_str(&v, &["message", "Message"])),
        ErrorBody::Markup(xml) => (xml_element(&xml, "Code"), xml_element(&xml, "Message")),
        // A proxy's or load balancer's page: keep its text (collapsed) as the message.
        ErrorBody::Text(text) => (None, Some(collapse_whitespace(&text))),
    }
}

/// As smithy-rs does: drop a trailing `:url` suffix, then a leading `namespace#`.
fn sanitize_code(raw: &str) -> &str {
    let code = raw.split(':').next().unwrap_or(raw);
    let code = code.split_once('#').map_or(code, |(_, c)| c);
    code.trim()
}

/// The one place an AWS error becomes an [`ErrorClass`] and a bounded metric label. The code decides
/// when it is known; otherwise the HTTP status does.
pub(crate) fn classify(code: Option<&str>, status: u16) -> (ErrorClass, &'static str) {
    use super::AuthFailure;
    use ErrorClass::*;
    let known = match code.unwrap_or("") {
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "TooManyRequestsException"
        | "RequestThrottledException"
        | "RequestLimitExceeded" => Some((Throttled, "throttling")),
        "KMSInternalException" | "InternalFailure" | "InternalError" | "InternalServerError" => {
            Some((Transient, "internal"))
        }
        "DependencyTimeoutException" => Some((Transient, "dependency_timeout")),
        "ServiceUnavailable" | "ServiceUnavailableException" => Some((Transient, "unavailable")),
        "RequestTimeout" | "RequestTimeoutException" => Some((Transient, "timeout")),
        "AlreadyExistsException" => Some((AlreadyExists, "already_exists")),
        "NotFoundException" => Some((NotFound, "not_found")),
        "KMSInvalidStateException" => Some((InvalidState, "invalid_state")),
        "ValidationException"
        | "InvalidAliasNameException"
        | "InvalidArnException"
        | "InvalidMarkerException"
        | "SerializationException"
        | "MissingParameter"
        | "InvalidParameterValue" => Some((Permanent, "validation")),
        // The principal's policy (whole target) or a key policy (one alias): the reconcile policy tells them apart.
        "AccessDeniedException" | "AccessDenied" => Some((AccessDenied, "access_denied")),
        // KMS's answer for AWS-managed aliases (alias/aws/…): about the alias, never the target.
        "NotAuthorizedException" => Some((Permanent, "access_denied")),
        // In KMS this is a resource quota (e.g. aliases per key), not a rate limit: do not retry.
        "LimitExceededException" => Some((Permanent, "limit_exceeded")),
        // Credentials refused: every call of the target fails alike, so the target pauses (DESIGN §2.8).
        "ExpiredTokenException" | "ExpiredToken" => Some((Unauthenticated(AuthFailure::Expired), "auth")),
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException" => Some((Unauthenticated(AuthFailure::Invalid), "auth")),
        "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "IncompleteSignatureException" => Some((Unauthenticated(AuthFailure::Signature), "auth")),
        "RequestExpired" => Some((Unauthenticated(AuthFailure::ClockSkew), "auth")),
        _ => None,
    };
    known.unwrap_or_else(|| phttp::status_class(status, code.is_some()))
}

// ---------------------------------------------------------------------------------------------
// Listing

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListPage {
    pub(crate) aliases: Option<Vec<AliasEntry>>,
    #[serde(default)]
    pub(crate) truncated: bool,
    pub(crate) next_marker: Option<String>,
}

#[derive(Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasEntry {
    pub(crate) alias_name: String,
    /// Predefined AWS aliases may have no key yet.
    pub(crate) target_key_id: Option<String>,
}

impl From<AliasEntry> for LiveAlias {
    fn from(a: AliasEntry) -> LiveAlias {
        LiveAlias { name: a.alias_name, key_id: a.target_key_id }
    }
}

impl AsRef<str> for AliasEntry {
    fn as_ref(&self) -> &str {
        &self.alias_name
    }
}

pub(crate) fn parse_list_page(v: Value) -> Result<ListPage, ProviderError> {
    serde_json::from_value(v).map_err(|e| phttp::shape_error("ListAliases", &e))
}

/// Whether a listed alias belongs to us: never an AWS-managed one, and under one of `prefixes` (the fuzz target's
/// check of the filter `pages::list_wanted` applies).
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub(crate) fn wanted(name: &str, prefixes: &[String]) -> bool {
    phttp::wanted(name, RESERVED_PREFIX, prefixes)
}

/// The marker for the next page, None when done. A truncated page without a marker would end the listing
/// early: an error rather than a silently partial listing (the paginator catches a repeated marker).
pub(crate) fn next_marker(truncated: bool, marker: Option<String>) -> Result<Option<String>, ProviderError> {
    if !truncated {
        return Ok(None);
    }
    match marker.filter(|m| !m.is_empty()) {
        None => Err(invalid_response("ListAliases: truncated page without NextMarker")),
        Some(m) => Ok(Some(m)),
    }
}

// ---------------------------------------------------------------------------------------------
// DescribeKey

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata {
    key_id: String,
    key_state: Option<String>,
    /// Older responses (and some compatible endpoints) carry only this, not `KeyState`.
    enabled: Option<bool>,
    key_spec: Option<String>,
    /// The deprecated name of `KeySpec`, still sent beside it.
    customer_master_key_spec: Option<String>,
    key_usage: Option<String>,
}

/// The `KeyMetadata` of a DescribeKey response as [`KeyFacts`].
pub(crate) fn parse_key_facts(v: Value) -> Result<KeyFacts, ProviderError> {
    let meta = v.get("KeyMetadata").cloned().ok_or_else(|| invalid_response("DescribeKey: no KeyMetadata"))?;
    let m: KeyMetadata = serde_json::from_value(meta).map_err(|e| phttp::shape_error("DescribeKey", &e))?;
    let table = [
        ("Enabled", KeyState::Enabled),
        ("Disabled", KeyState::Disabled),
        ("PendingDeletion", KeyState::PendingDeletion),
        // A replica whose primary is being deleted cannot take new work either.
        ("PendingReplicaDeletion", KeyState::PendingDeletion),
        ("PendingImport", KeyState::PendingImport),
    ];
    let state = match (m.key_state.as_deref(), m.enabled) {
        (None, Some(true)) => KeyState::Enabled,
        (None, Some(false)) => KeyState::Disabled,
        (reported, _) => KeyState::from_table(reported, &table),
    };
    let spec = m.key_spec.or(m.customer_master_key_spec).unwrap_or_default();
    // moto reports `KeyUsage: null` for a key created without one; where the spec allows a single usage, that is it.
    let usage = m.key_usage.unwrap_or_else(|| match spec.as_str() {
        "SYMMETRIC_DEFAULT" => "ENCRYPT_DECRYPT".into(),
        s if s.starts_with("HMAC_") => "GENERATE_VERIFY_MAC".into(),
        _ => String::new(),
    });
    Ok(KeyFacts { key_id: m.key_id, state, spec, usage })
}

// ---------------------------------------------------------------------------------------------
// Identifiers and configuration

/// `https://kms.{region}.{dnsSuffix}`: botocore's `data/partitions.json` gives the China partition (`aws-cn`,
/// regionRegex `^cn\-\w+\-\d+$`) the DNS suffix `amazonaws.com.cn`; the commercial and GovCloud partitions use
/// `amazonaws.com`. Other partitions (ISO) need an explicit `endpoint`.
pub(crate) fn default_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("https://kms.{region}.{suffix}")
}

/// `arn:aws:kms:REGION:ACCOUNT:key/ID` → `ID`; anything else is returned as is.
pub(crate) fn bare_key_id(id: &str) -> &str {
    phttp::arn_key_id(id, "arn:", 6)
}

fn refuse_reserved(alias: &str) -> Result<(), ProviderError> {
    phttp::refuse_reserved(alias, RESERVED_PREFIX, "AWS")
}

/// Region and service go into the SigV4 scope `date/region/service/aws4_request`.
fn check_scope_part(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("{what} {v:?} must be non-empty letters, digits, '-' or '_'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http::MAX_CODE_CHARS;
    use crate::provider::sign::testutil::{assert_classification, credentials, serve_full, FullReply as Reply, Log};
    use crate::secret::Secret;
    use reqwest::header::HeaderValue;

    fn creds(token: Option<&str>) -> Credentials {
        credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    }

    // ----- SigV4 vectors (tests/vectors/), read at test time -----

    struct Vector {
        access_key_id: String,
        secret: String,
        method: String,
        request_target: String,
        region: String,
        service: String,
        headers: Vec<(String, String)>,
        body: String,
        expected: String,
    }

    impl Vector {
        fn header(&self, name: &str) -> &str {
            let h = self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
            h.map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("vector has no {name} header"))
        }
    }

    fn load_vector(file: &str) -> Vector {
        let path = format!("{}{file}", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let field = |key: &str| {
            let v = text.lines().find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='));
            v.unwrap_or_else(|| panic!("{path}: no {key}")).trim().to_string()
        };
        // The scope line of the string to sign: DATE/REGION/SERVICE/aws4_request.
        let sts = text.split_once("[string_to_sign]").unwrap().1;
        let scope = sts.split_once("-----BEGIN-----\n").unwrap().1.lines().nth(2).unwrap();
        let scope: Vec<&str> = scope.split('/').collect();
        assert_eq!((scope.len(), scope[3]), (4, "aws4_request"), "{path}: scope");
        // The raw request: header lines, a blank line, the body.
        let raw = text.split_once("[raw request as received by the capture server]\n").unwrap().1;
        let (head, body) = raw.split_once("\n\n").unwrap();
        let headers = head.lines().skip(1).filter_map(|l| l.split_once(": "));
        let body = body.strip_suffix('\n').unwrap_or(body).to_string();
        assert_eq!(body.len().to_string(), field("body_len"), "{path}: body");
        Vector {
            access_key_id: field("access_key_id"),
            secret: field("secret"),
            method: field("method"),
            request_target: field("request_target"),
            region: scope[1].to_string(),
            service: scope[2].to_string(),
            headers: headers.map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body,
            expected: field("expected"),
        }
    }

    /// `YYYYMMDDTHHMMSSZ` → SystemTime (days-from-civil, proleptic Gregorian).
    fn parse_amz_date(s: &str) -> SystemTime {
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(4..6), n(6..8));
        let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        let secs = days * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15);
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    fn check_vector(file: &str) {
        let v = load_vector(file);
        let creds = Credentials {
            access_key_id: v.access_key_id.clone(),
            secret_access_key: Secret::new(v.secret.clone()),
            session_token: None,
        };
        let uri = format!("http://{}{}", v.header("Host"), v.request_target);
        let headers = [("content-type", v.header("Content-Type")), ("x-amz-target", v.header("X-Amz-Target"))];
        let req = SignableParts { method: &v.method, uri: &uri, headers: &headers, body: v.body.as_bytes() };
        let amz_date = v.header("X-Amz-Date");
        let sig = sign_v4(&req, &v.region, &v.service, parse_amz_date(amz_date), &creds).unwrap();
        assert_eq!(sig.signature, v.expected, "{file}");
        assert_eq!(sig.amz_date, amz_date, "{file}");
        assert_eq!(sig.authorization, v.header("Authorization"), "{file}");
    }

    #[test]
    fn sigv4_vector_createalias() {
        check_vector("aws-sigv4-createalias.txt");
    }

    #[test]
    fn sigv4_vector_listaliases() {
        check_vector("aws-sigv4-listaliases.txt");
    }

    #[test]
    fn sigv4_signs_session_token() {
        let headers = [("content-type", AMZ_JSON), ("x-amz-target", "TrentService.ListAliases")];
        let req = SignableParts {
            method: "POST",
            uri: "https://kms.us-east-1.amazonaws.com/",
            headers: &headers,
            body: b"{}",
        };
        let sig = sign_v4(&req, "us-east-1", "kms", SystemTime::now(), &creds(Some("TOKEN"))).unwrap();
        assert!(sig
            .authorization
            .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target,"));
        assert!(!sig.authorization.contains("TOKEN"));
    }

    // ----- error parsing and classification -----

    fn err(status: u16, headers: &[(&str, &str)], body: &str) -> ProviderError {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        parse_error(status, &map, body.as_bytes(), &[])
    }

    /// The shape errors of huawei's fuzz finding (crash-5918d442), here: a wrong-typed field must not carry
    /// an echoed secret into the message.
    #[test]
    fn list_page_shape_error_does_not_echo_response_values() {
        let e =
            parse_list_page(json!({"Aliases": [], "NextMarker": {"x": 1}, "Truncated": "SESSIONTOK"})).err().unwrap();
        assert_eq!(e.label, "invalid_response");
        assert!(!e.message.contains("SESSIONTOK") && e.message.contains("ListAliases"), "{}", e.message);
    }

    #[test]
    fn error_from_header_only() {
        let e = err(400, &[("X-Amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/coral/")], "");
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Throttled, "ThrottlingException", "throttling"));
        assert_eq!(e.message, "HTTP 400");
    }

    #[test]
    fn error_moto_json_lowercase_message() {
        let body = r#"{"__type": "NotFoundException", "message": "Alias arn:aws:kms:us-east-1:123456789012:alias/nothere is not found."}"#;
        let e = err(400, &[("X-Amzn-ErrorType", "NotFoundException"), ("Content-Type", "application/json")], body);
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::NotFound, "NotFoundException", "not_found"));
        assert_eq!(e.message, "Alias arn:aws:kms:us-east-1:123456789012:alias/nothere is not found.");
    }

    #[test]
    fn error_type_with_namespace() {
        let body = r#"{"__type": "com.amazonaws.kms#AlreadyExistsException", "Message": "An alias with the name x already exists"}"#;
        let e = err(400, &[], body);
        assert_eq!(
            (e.class, e.code.as_str(), e.label),
            (ErrorClass::AlreadyExists, "AlreadyExistsException", "already_exists")
        );
        assert_eq!(e.message, "An alias with the name x already exists");
        // `code` instead of `__type`, with both a namespace and a URL suffix.
        let e = err(400, &[], r#"{"code": "aws.protocoljson#KMSInvalidStateException:http://x/", "message": "m"}"#);
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::InvalidState, "KMSInvalidStateException"));
    }

    #[test]
    fn error_header_wins_over_body() {
        let e = err(400, &[("x-amzn-errortype", "LimitExceededException")], r#"{"__type": "Other"}"#);
        assert_eq!(
            (e.class, e.code.as_str(), e.label),
            (ErrorClass::Permanent, "LimitExceededException", "limit_exceeded")
        );
    }

    #[test]
    fn error_moto_strict_auth_xml() {
        let body = "<?xml version=\"1.0\"?><ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match &amp; so on</Message></Error></Errors>\
                    <RequestId>7a62c49f</RequestId></ErrorResponse>";
        let e = err(403, &[("Content-Type", "text/xml")], body);
        assert_eq!(
            (e.class, e.code.as_str(), e.label),
            (ErrorClass::Unauthenticated(crate::provider::AuthFailure::Signature), "SignatureDoesNotMatch", "auth")
        );
        assert_eq!(e.message, "The request signature we calculated does not match & so on");
    }

    #[test]
    fn error_non_json_body_and_status_fallbacks() {
        let e = err(502, &[], "<html>\n<body>502 Bad   Gateway</body></html>");
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Transient, "HTTP502", "http_5xx"));
        let e = err(503, &[], "upstream connect error");
        assert_eq!(
            (e.class, e.label, e.message.as_str()),
            (ErrorClass::Transient, "http_5xx", "upstream connect error")
        );
        let e = err(500, &[], "");
        assert_eq!(
            (e.class, e.code.as_str(), e.label, e.message.as_str()),
            (ErrorClass::Transient, "HTTP500", "http_5xx", "HTTP 500")
        );
        let e = err(429, &[], "");
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Throttled, "HTTP429", "throttling"));
        let e = err(400, &[], "");
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Permanent, "HTTP400", "http_4xx"));
        let e = err(400, &[], "null");
        assert_eq!((e.class, e.label), (ErrorClass::Permanent, "http_4xx"));
    }

    #[test]
    fn error_code_is_truncated_and_secrets_scrubbed() {
        let long = "X".repeat(300);
        let e = err(400, &[], &format!(r#"{{"__type": "{long}"}}"#));
        assert_eq!(e.code.chars().count(), MAX_CODE_CHARS + 1, "100 chars and the cut mark");
        assert_eq!(e.label, "other");

        let body = r#"{"__type": "InvalidSignatureException", "message": "canonical x-amz-security-token:TOK123 key SECRETKEY"}"#;
        let e = parse_error(400, &HeaderMap::new(), body.as_bytes(), &["SECRETKEY", "TOK123", ""]);
        assert!(!e.message.contains("TOK123") && !e.message.contains("SECRETKEY"), "{}", e.message);
        assert_eq!(e.label, "auth");
    }

    #[test]
    fn classification_table() {
        use crate::provider::AuthFailure;
        use ErrorClass::*;
        let cases: &[(&str, u16, ErrorClass, &str)] = &[
            ("ThrottlingException", 400, Throttled, "throttling"),
            ("Throttling", 400, Throttled, "throttling"),
            ("ThrottledException", 400, Throttled, "throttling"),
            ("TooManyRequestsException", 429, Throttled, "throttling"),
            ("KMSInternalException", 500, Transient, "internal"),
            ("DependencyTimeoutException", 503, Transient, "dependency_timeout"),
            ("InternalFailure", 500, Transient, "internal"),
            ("ServiceUnavailable", 503, Transient, "unavailable"),
            ("AlreadyExistsException", 400, AlreadyExists, "already_exists"),
            ("NotFoundException", 400, NotFound, "not_found"),
            ("KMSInvalidStateException", 409, InvalidState, "invalid_state"),
            ("ValidationException", 400, Permanent, "validation"),
            ("InvalidAliasNameException", 400, Permanent, "validation"),
            ("InvalidArnException", 400, Permanent, "validation"),
            ("AccessDeniedException", 400, AccessDenied, "access_denied"),
            ("NotAuthorizedException", 400, Permanent, "access_denied"),
            ("LimitExceededException", 400, Permanent, "limit_exceeded"),
            ("SignatureDoesNotMatch", 403, Unauthenticated(AuthFailure::Signature), "auth"),
            ("InvalidSignatureException", 400, Unauthenticated(AuthFailure::Signature), "auth"),
            ("InvalidClientTokenId", 403, Unauthenticated(AuthFailure::Invalid), "auth"),
            ("UnrecognizedClientException", 400, Unauthenticated(AuthFailure::Invalid), "auth"),
            ("IncompleteSignature", 400, Unauthenticated(AuthFailure::Signature), "auth"),
            ("ExpiredTokenException", 400, Unauthenticated(AuthFailure::Expired), "auth"),
            ("RequestExpired", 400, Unauthenticated(AuthFailure::ClockSkew), "auth"),
            // Unknown codes: the status decides the class, the label stays bounded.
            ("SomethingNew", 400, Permanent, "other"),
            ("SomethingNew", 500, Transient, "http_5xx"),
            ("SomethingNew", 429, Throttled, "throttling"),
            // A known permanent code wins over a 5xx status.
            ("AccessDeniedException", 503, AccessDenied, "access_denied"),
        ];
        assert_classification(classify, cases);
    }

    // ----- identifiers and construction -----

    fn kms(endpoint: &str) -> AwsKms {
        AwsKms::new("us-east-1", Some(endpoint), None, creds(None), Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn key_matches_arn_and_bare_id() {
        let k = kms("http://127.0.0.1:1");
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        let arn = format!("arn:aws:kms:us-east-1:123456789012:key/{id}");
        assert!(k.key_matches(id, id));
        assert!(k.key_matches(&arn, id));
        assert!(k.key_matches(&arn, &arn));
        assert!(k.key_matches("mrk-1234abcd12ab34cd56ef1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab"));
        assert!(!k.key_matches(&arn, "1234abcd-12ab-34cd-56ef-000000000000"));
        assert!(!k.key_matches("arn:aws:kms:us-east-1:123456789012:alias/x", "x"));
        assert!(!k.key_matches("", ""));
    }

    #[test]
    fn constructor_validates_and_never_leaks() {
        let url = |k: AwsKms| k.url.to_string();
        let k = AwsKms::new("eu-west-1", None, None, creds(None), Duration::from_secs(1)).unwrap();
        assert_eq!((url(k), "kms"), ("https://kms.eu-west-1.amazonaws.com/".to_string(), "kms"));
        // The China partition's DNS suffix (botocore partitions.json, aws-cn).
        for region in ["cn-north-1", "cn-northwest-1"] {
            let k = AwsKms::new(region, None, None, creds(None), Duration::from_secs(1)).unwrap();
            assert_eq!(url(k), format!("https://kms.{region}.amazonaws.com.cn/"));
        }
        let k = AwsKms::new("us-gov-west-1", None, None, creds(None), Duration::from_secs(1)).unwrap();
        assert_eq!(url(k), "https://kms.us-gov-west-1.amazonaws.com/");
        let k =
            AwsKms::new("eu-west-1", Some("http://q:8080"), Some("qkms"), creds(None), Duration::from_secs(1)).unwrap();
        assert_eq!(k.service, "qkms");
        assert!(AwsKms::new("", None, None, creds(None), Duration::from_secs(1)).is_err());
        assert!(AwsKms::new("us/east", None, None, creds(None), Duration::from_secs(1)).is_err());
        assert!(AwsKms::new("us-east-1", Some("ftp://x"), None, creds(None), Duration::from_secs(1)).is_err());
        let e =
            AwsKms::new("us-east-1", Some("https://u:pw9@x"), None, creds(None), Duration::from_secs(1)).unwrap_err();
        assert!(!e.contains("pw9"), "{e}");
        assert!(AwsKms::new("us-east-1", None, None, creds(None), Duration::ZERO).is_err());
        let dbg =
            format!("{:?}", AwsKms::new("us-east-1", None, None, creds(Some("TOK")), Duration::from_secs(1)).unwrap());
        assert!(!dbg.contains("wJalr") && !dbg.contains("TOK\""), "{dbg}");
    }

    // ----- against a tiny in-process HTTP server -----

    /// Serves `reply(request body as JSON)`, recording each request.
    async fn serve(reply: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> (String, Log) {
        serve_full(move |r| reply(&r.json())).await
    }

    fn page(aliases: &[(&str, Option<&str>)], next: Option<&str>) -> Reply {
        let aliases: Vec<Value> = aliases
            .iter()
            .map(|(n, k)| match k {
                Some(k) => {
                    json!({"AliasName": n, "AliasArn": format!("arn:aws:kms:us-east-1:1:{n}"), "TargetKeyId": k})
                }
                None => json!({"AliasName": n}),
            })
            .collect();
        let body = match next {
            Some(m) => json!({"Aliases": aliases, "Truncated": true, "NextMarker": m}),
            None => json!({"Aliases": aliases, "Truncated": false}),
        };
        (200, vec![("Content-Type", AMZ_JSON)], body.to_string())
    }

    #[tokio::test]
    async fn list_walks_all_pages_filters_and_signs() {
        let (url, log) = serve(|req| match req.get("Marker").and_then(Value::as_str) {
            None => page(
                &[("alias/app/one", Some("k1")), ("alias/aws/ebs", Some("kx")), ("alias/other/x", Some("k2"))],
                Some("m1"),
            ),
            Some("m1") => page(&[("alias/app/two", Some("k3")), ("alias/aws/s3", None)], Some("m2")),
            Some("m2") => page(&[("alias/team/three", None)], None),
            Some(_) => (400, vec![("X-Amzn-ErrorType", "InvalidMarkerException")], String::new()),
        })
        .await;
        let prefixes = ["alias/app/".to_string(), "alias/team/".to_string(), "alias/".to_string() + "aws/"];
        let got = kms(&url).list_aliases(&prefixes).await.unwrap();
        let want = [("alias/app/one", Some("k1")), ("alias/app/two", Some("k3")), ("alias/team/three", None)];
        let want: Vec<LiveAlias> =
            want.iter().map(|(n, k)| LiveAlias { name: n.to_string(), key_id: k.map(str::to_string) }).collect();
        assert_eq!(got, want);

        let log = log.lock().unwrap();
        let markers: Vec<Option<String>> =
            log.iter().map(|r| r.json().get("Marker").and_then(Value::as_str).map(str::to_string)).collect();
        assert_eq!(markers, [None, Some("m1".into()), Some("m2".into())]);
        for r in log.iter() {
            assert_eq!(r.json()["Limit"], 100);
            assert_eq!(r.header("x-amz-target"), Some("TrentService.ListAliases"));
            assert_eq!(r.header("content-type"), Some(AMZ_JSON));
            assert_eq!(r.header("x-amz-content-sha256"), None);
            let auth = r.header("authorization").expect("signed");
            assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
            assert!(auth.contains("/us-east-1/kms/aws4_request"), "{auth}");
            assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target,"), "{auth}");
        }
    }

    #[tokio::test]
    async fn list_refuses_endless_paging() {
        let (url, log) = serve(|_| page(&[("alias/app/a", Some("k"))], Some("same"))).await;
        let e = kms(&url).list_aliases(&["alias/".into()]).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Transient, "InvalidResponse"));
        assert_eq!(log.lock().unwrap().len(), 2, "stops at the first repeated marker");

        let (url, _) = serve(|_| (200, vec![], r#"{"Aliases": [], "Truncated": true}"#.into())).await;
        let e = kms(&url).list_aliases(&["alias/".into()]).await.unwrap_err();
        assert!(e.message.contains("without NextMarker"), "{e}");
    }

    #[tokio::test]
    async fn get_alias_describes_key_and_maps_not_found() {
        let (url, log) = serve(|req| match req["KeyId"].as_str() {
            Some("alias/app/one") => (200, vec![], r#"{"KeyMetadata": {"KeyId": "k1", "KeyState": "Enabled"}}"#.into()),
            _ => (
                400,
                vec![("X-Amzn-ErrorType", "NotFoundException"), ("Content-Type", "application/json")],
                r#"{"__type": "NotFoundException", "message": "Alias x is not found."}"#.into(),
            ),
        })
        .await;
        let k = kms(&url);
        assert_eq!(k.get_alias("alias/app/one").await.unwrap().as_deref(), Some("k1"));
        assert_eq!(k.get_alias("alias/app/none").await.unwrap(), None);
        // Never probed: DescribeKey on an AWS alias can create the AWS managed key.
        let e = k.get_alias("alias/aws/ebs").await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Permanent, "ReservedAlias"));
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].header("x-amz-target"), Some("TrentService.DescribeKey"));
    }

    /// A principal without kms:DescribeKey on the key behind an alias still finds the alias: by listing.
    #[tokio::test]
    async fn get_alias_falls_back_to_listing_when_describe_key_is_denied() {
        let denied = || {
            let msg = "User: arn:aws:iam::1:user/x is not authorized to perform: kms:DescribeKey";
            (400, vec![("X-Amzn-ErrorType", "AccessDeniedException")], json!({"message": msg}).to_string())
        };
        let (url, log) = serve_full(move |r| {
            let req = r.json();
            match (r.header("x-amz-target").unwrap(), req.get("Marker").and_then(Value::as_str)) {
                ("TrentService.DescribeKey", _) => denied(),
                ("TrentService.ListAliases", None) => page(&[("alias/app/one", Some("k1"))], Some("m1")),
                ("TrentService.ListAliases", Some("m1")) => page(&[("alias/app/two", Some("k2"))], Some("m2")),
                _ => page(&[("alias/app/three", Some("k3"))], None),
            }
        })
        .await;
        let k = kms(&url);
        assert_eq!(k.get_alias("alias/app/two").await.unwrap().as_deref(), Some("k2"));
        {
            let log = log.lock().unwrap();
            let targets: Vec<&str> = log.iter().map(|r| r.header("x-amz-target").unwrap()).collect();
            assert_eq!(
                targets,
                ["TrentService.DescribeKey", "TrentService.ListAliases", "TrentService.ListAliases"],
                "the walk stops at the page that has it"
            );
        }
        assert_eq!(k.get_alias("alias/app/none").await.unwrap(), None, "listed to the end: absent");
        // Denied listing too: the refusal stands (the reconcile policy decides what it means).
        let (url, _) = serve_full(move |_| denied()).await;
        let e = kms(&url).get_alias("alias/app/one").await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::AccessDenied, "access_denied"));
    }

    /// LimitExceededException on an alias write is the 50-aliases-per-key quota: permanent, said so.
    #[tokio::test]
    async fn alias_quota_is_permanent_and_named() {
        let (url, _) = serve_full(|r| {
            let msg = "An alias limit was exceeded";
            let hdrs = vec![("X-Amzn-ErrorType", "LimitExceededException"), ("x-amzn-RequestId", "req-7f3a")];
            match r.header("x-amz-target") {
                Some("TrentService.DeleteAlias") => (400, hdrs, json!({"message": "other quota"}).to_string()),
                _ => (400, hdrs, json!({"message": msg}).to_string()),
            }
        })
        .await;
        let k = kms(&url);
        for e in [
            k.create_alias("alias/app/a", "k1").await.unwrap_err(),
            k.update_alias("alias/app/a", "k2").await.unwrap_err(),
        ] {
            assert_eq!(
                (e.class, e.code.as_str(), e.label),
                (ErrorClass::Permanent, "LimitExceededException", "alias_quota")
            );
            assert!(
                e.message.contains("50 per KMS key") && e.message.contains("(RequestId req-7f3a)"),
                "{}",
                e.message
            );
        }
        // Elsewhere the code keeps its generic label.
        let e = k.delete_alias("alias/app/a", None).await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::Permanent, "limit_exceeded"));
    }

    #[tokio::test]
    async fn describe_key_reads_state_spec_and_usage() {
        let (url, log) = serve(|req| match req["KeyId"].as_str() {
            Some("k-hmac") => (
                200,
                vec![],
                json!({"KeyMetadata": {"KeyId": "k-hmac", "KeyState": "PendingDeletion", "KeySpec": "HMAC_256",
                    "CustomerMasterKeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC", "Enabled": false}})
                .to_string(),
            ),
            // An older shape: no KeyState or KeySpec, only Enabled and CustomerMasterKeySpec.
            Some("arn:aws:kms:us-east-1:1:key/k-old") => (
                200,
                vec![],
                json!({"KeyMetadata": {"KeyId": "k-old", "Enabled": true, "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
                    "KeyUsage": "ENCRYPT_DECRYPT"}})
                .to_string(),
            ),
            _ => (
                400,
                vec![("X-Amzn-ErrorType", "NotFoundException")],
                r#"{"__type": "NotFoundException", "message": "Key 'x' does not exist"}"#.into(),
            ),
        })
        .await;
        let k = kms(&url);
        let hmac = k.describe_key("k-hmac").await.unwrap().unwrap();
        assert_eq!(
            hmac,
            KeyFacts {
                key_id: "k-hmac".into(),
                state: KeyState::PendingDeletion,
                spec: "HMAC_256".into(),
                usage: "GENERATE_VERIFY_MAC".into()
            }
        );
        let old = k.describe_key("arn:aws:kms:us-east-1:1:key/k-old").await.unwrap().unwrap();
        assert_eq!(
            (old.key_id.as_str(), old.state, old.spec.as_str()),
            ("k-old", KeyState::Enabled, "SYMMETRIC_DEFAULT")
        );
        // moto's `KeyUsage: null`: the one usage the spec allows, else unknown.
        let usage = |spec: &str| {
            let meta = json!({"KeyMetadata": {"KeyId": "x", "KeyState": "Enabled", "KeySpec": spec, "KeyUsage": null}});
            parse_key_facts(meta).unwrap().usage
        };
        assert_eq!(
            [usage("SYMMETRIC_DEFAULT"), usage("HMAC_384"), usage("RSA_2048")],
            ["ENCRYPT_DECRYPT", "GENERATE_VERIFY_MAC", ""]
        );
        assert_eq!(k.describe_key("k-none").await.unwrap(), None, "NotFound: the key does not exist");
        let e = k.describe_key("alias/aws/ebs").await.unwrap_err();
        assert_eq!(e.code, "ReservedAlias", "never sent: it could create the AWS managed key");
        assert_eq!(log.lock().unwrap().len(), 3);
        for (meta, state) in [
            (json!({"KeyId": "x", "KeyState": "Creating"}), KeyState::Other("Creating".into())),
            (json!({"KeyId": "x", "KeyState": "PendingReplicaDeletion"}), KeyState::PendingDeletion),
            (json!({"KeyId": "x", "KeyState": "PendingImport"}), KeyState::PendingImport),
            (json!({"KeyId": "x", "Enabled": false}), KeyState::Disabled),
            (json!({"KeyId": "x"}), KeyState::Other(String::new())),
        ] {
            assert_eq!(parse_key_facts(json!({ "KeyMetadata": meta })).unwrap().state, state);
        }
        let e = parse_key_facts(json!({"KeyMetadata": {"KeyId": ["SECRETTOKEN"]}})).unwrap_err();
        assert!(!e.message.contains("SECRETTOKEN") && e.class == ErrorClass::Transient, "{e}");
    }

    #[tokio::test]
    async fn mutators_accept_empty_and_null_bodies() {
        let (url, log) = serve(|req| match req["AliasName"].as_str() {
            // moto: `null` as text/html; AWS: empty.
            Some("alias/app/moto") => (200, vec![("Content-Type", "text/html; charset=utf-8")], "null".into()),
            Some("alias/app/aws") => (200, vec![], String::new()),
            _ => (
                400,
                vec![("X-Amzn-ErrorType", "AlreadyExistsException")],
                r#"{"__type": "AlreadyExistsException", "message": "exists"}"#.into(),
            ),
        })
        .await;
        let k = kms(&url);
        k.create_alias("alias/app/moto", "k1").await.unwrap();
        k.update_alias("alias/app/aws", "k2").await.unwrap();
        k.delete_alias("alias/app/aws", Some("ignored")).await.unwrap();
        let e = k.create_alias("alias/app/taken", "k1").await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::AlreadyExists, "already_exists"));
        let log = log.lock().unwrap();
        let targets: Vec<_> = log.iter().map(|r| r.header("x-amz-target").unwrap().to_string()).collect();
        assert_eq!(
            targets,
            [
                "TrentService.CreateAlias",
                "TrentService.UpdateAlias",
                "TrentService.DeleteAlias",
                "TrentService.CreateAlias"
            ]
        );
        assert_eq!(log[0].json(), json!({"AliasName": "alias/app/moto", "TargetKeyId": "k1"}));
        assert_eq!(log[2].json(), json!({"AliasName": "alias/app/aws"}));
    }

    #[tokio::test]
    async fn session_token_is_sent_signed_and_scrubbed_from_errors() {
        // The endpoint echoes request parts back, as SignatureDoesNotMatch messages can.
        let (url, log) = serve(|_| {
            let msg =
                "canonical request: x-amz-security-token:SESSIONTOK secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
            (400, vec![], json!({"__type": "InvalidSignatureException", "message": msg}).to_string())
        })
        .await;
        let k = AwsKms::new("us-east-1", Some(&url), None, creds(Some("SESSIONTOK")), Duration::from_secs(5)).unwrap();
        let e = k.call("ListAliases", &json!({})).await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("SESSIONTOK") && !shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert_eq!((e.class, e.label), (ErrorClass::Unauthenticated(crate::provider::AuthFailure::Signature), "auth"));
        let log = log.lock().unwrap();
        assert_eq!(log[0].header("x-amz-security-token"), Some("SESSIONTOK"));
        assert!(log[0].header("authorization").unwrap().contains("x-amz-security-token"));
    }
}
