//! Alibaba Cloud KMS (API version 2016-01-20), RPC style, sent the way the new SDK
//! (`alibabacloud_kms20160120`) sends it: `POST /?<params>` with every RPC parameter in the query, an empty
//! body, the action and version in `x-acs-action` / `x-acs-version`, signed with `ACS3-HMAC-SHA256`
//! ([`super::sign::acs3`]).
//!
//! Errors are classified once, here, in [`classify`]; the engine only sees [`ErrorClass`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::http::{
    self as phttp, check_region, collapse_whitespace, host_header, invalid_response, json_str, parse_endpoint,
    xml_element, ErrorBody,
};
use super::pages::{list_wanted, Cursor, Page};
use super::sign::{self, acs3, SignableRequest};
use super::transport::{self, Prepared, Wire};
use super::SharedCredentials;
use super::{found, ErrorClass, KeyFacts, KeyState, KmsAliases, LiveAlias, ProviderError};
use crate::secret::Credentials;

const API_VERSION: &str = "2016-01-20";
/// Alibaba-managed aliases (`alias/acs/<service>`): never listed, never touched.
pub(crate) const RESERVED_PREFIX: &str = "alias/acs/";
/// The documented ListAliases maximum.
const LIST_PAGE_SIZE: u64 = 100;
/// STS credentials travel in this (signed) header.
const SECURITY_TOKEN_HEADER: &str = "x-acs-security-token";

/// An Alibaba Cloud KMS endpoint in one region, with its credentials.
#[derive(Debug)]
pub struct AlibabaKms {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The `host` header as sent and signed: host, plus `:port` when not the scheme's default.
    host: String,
    creds: SharedCredentials,
}

/// What DescribeKey tells about a key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    pub key_id: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, `PendingImport`.
    #[serde(default)]
    pub key_state: Option<String>,
    /// `Aliyun_AES_256`, `RSA_2048`, `EC_P256`, …
    #[serde(default)]
    pub key_spec: Option<String>,
    /// `ENCRYPT/DECRYPT`, `SIGN/VERIFY`.
    #[serde(default)]
    pub key_usage: Option<String>,
}

impl KeyMetadata {
    pub fn facts(self) -> KeyFacts {
        let table = [
            ("Enabled", KeyState::Enabled),
            ("Disabled", KeyState::Disabled),
            ("PendingDeletion", KeyState::PendingDeletion),
            ("PendingImport", KeyState::PendingImport),
        ];
        let state = KeyState::from_table(self.key_state.as_deref(), &table);
        KeyFacts::reported(self.key_id, state, self.key_spec, self.key_usage)
    }
}

impl AlibabaKms {
    /// `endpoint` defaults to [`default_endpoint`]. Errors never echo the endpoint: a mistyped
    /// one may carry userinfo.
    pub fn new(
        region: &str,
        endpoint: Option<&str>,
        creds: Credentials,
        timeout: Duration,
    ) -> Result<AlibabaKms, String> {
        Self::with_client(region, endpoint, SharedCredentials::new(creds), phttp::try_client(timeout)?)
    }

    /// [`AlibabaKms::new`] with an HTTP client shared with other targets (its timeout is the request timeout).
    pub fn with_client(
        region: &str,
        endpoint: Option<&str>,
        creds: SharedCredentials,
        client: reqwest::Client,
    ) -> Result<AlibabaKms, String> {
        check_region(region)?;
        let url = match endpoint {
            Some(e) => parse_endpoint(e)?,
            None => parse_endpoint(&default_endpoint(region))?,
        };
        let host = host_header(&url);
        Ok(AlibabaKms { client, url, host, creds })
    }

    /// Calls one action with its RPC parameters (decoded; the signer encodes them) and returns the response
    /// body (`Value::Null` when empty).
    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<Value, ProviderError> {
        transport::send(&self.client, &self.creds, self, &(action, params)).await
    }

    /// [`Self::sign_at`] with the current credentials (the request-shape tests).
    #[cfg(test)]
    fn prepare(
        &self,
        action: &str,
        params: &[(&str, &str)],
        now: DateTime<Utc>,
        nonce: &str,
    ) -> Result<Prepared, ProviderError> {
        Ok(self.sign_at(&*self.creds.current()?, action, params, now, nonce))
    }

    /// Builds and signs the request for `action` at time `now` with `nonce`: `POST /?<params>`, an empty body,
    /// every header set signed.
    fn sign_at(
        &self,
        creds: &Credentials,
        action: &str,
        params: &[(&str, &str)],
        now: DateTime<Utc>,
        nonce: &str,
    ) -> Prepared {
        let mut url = self.url.clone();
        let query = sign::canonical_query(params);
        url.set_query(Some(&query).filter(|q| !q.is_empty()).map(String::as_str));
        let mut headers: Vec<(&'static str, String)> = vec![
            ("accept", "application/json".into()),
            ("host", self.host.clone()),
            ("x-acs-action", action.into()),
            ("x-acs-content-sha256", sign::hex_sha256(b"")),
            ("x-acs-date", acs3::format_date(now)),
            ("x-acs-signature-nonce", nonce.into()),
            ("x-acs-version", API_VERSION.into()),
        ];
        if let Some(token) = &creds.session_token {
            headers.push((SECURITY_TOKEN_HEADER, token.expose().into()));
        }
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let req = SignableRequest { method: "POST", path: url.path(), query: params, headers: &pairs, body: b"" };
        let s = acs3::sign(&req, &names, &creds.access_key_id, creds.secret_access_key.expose());
        Prepared {
            method: Method::POST,
            url,
            headers,
            token_header: SECURITY_TOKEN_HEADER,
            body: Some(Vec::new()),
            authorization: s.authorization,
            signature: s.signature,
        }
    }

    /// The credentials this endpoint signs with; replacing them affects the requests that start afterwards.
    pub fn credentials(&self) -> SharedCredentials {
        self.creds.clone()
    }

    /// DescribeKey. `key_id` may be a key id, an alias name or an ARN.
    pub async fn key_metadata(&self, key_id: &str) -> Result<KeyMetadata, ProviderError> {
        parse_key_metadata(self.call("DescribeKey", &[("KeyId", key_id)]).await?)
    }

    /// One ListAliases page (`cursor`: its 1-based number).
    async fn list_page(&self, cursor: Option<Cursor>) -> Result<Page<AliasEntry>, ProviderError> {
        let page_number = match cursor {
            Some(Cursor::Page(n)) => n,
            _ => 1,
        };
        let (page, size) = (page_number.to_string(), LIST_PAGE_SIZE.to_string());
        let p = parse_list_page(self.call("ListAliases", &[("PageNumber", &page), ("PageSize", &size)]).await?)?;
        let next = next_page(page_number, &p)?.map(Cursor::Page);
        Ok(Page { items: p.aliases.map(|a| a.alias).unwrap_or_default(), next })
    }
}

/// An action and its RPC parameters (decoded; the signer encodes them), sent with a fresh nonce each time.
impl Wire for AlibabaKms {
    type Op<'a> = (&'a str, &'a [(&'a str, &'a str)]);

    fn prepare(&self, &(action, params): &Self::Op<'_>, creds: &Credentials) -> Result<Prepared, ProviderError> {
        let nonce = format!("{:032x}", rand::random::<u128>());
        Ok(self.sign_at(creds, action, params, Utc::now(), &nonce))
    }

    /// Alibaba's request id is in the error body, never needed from the headers.
    fn error(&self, status: u16, _headers: &HeaderMap, body: &[u8], secrets: &[&str]) -> ProviderError {
        parse_error(status, body, secrets)
    }

    fn describe(&(action, _): &Self::Op<'_>) -> String {
        action.to_string()
    }
}

#[async_trait]
impl KmsAliases for AlibabaKms {
    /// Walks ListAliases pages until `TotalCount` is reached (or a page comes back empty). Offset paging: an
    /// alias created or deleted during the walk can shift entries across pages; the next drift scan sees what
    /// this one missed.
    async fn list_each(
        &self,
        prefixes: &[String],
        visit: &mut (dyn FnMut(LiveAlias) + Send),
    ) -> Result<(), ProviderError> {
        list_wanted("ListAliases", |c| self.list_page(c), RESERVED_PREFIX, prefixes, visit).await
    }

    /// Alibaba has no "get alias". DescribeKey documents `KeyId` as "key ID, alias or ARN" and
    /// `Forbidden.AliasNotFound` among its errors (reference §3.2), so one DescribeKey with the alias name
    /// resolves it: one call instead of paging through ListAliases.
    async fn get_alias(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        refuse_reserved(alias)?;
        Ok(found(self.key_metadata(alias).await)?.map(|meta| meta.key_id))
    }

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        refuse_reserved(alias)?;
        self.call("CreateAlias", &[("AliasName", alias), ("KeyId", key_id)]).await.map(drop).map_err(alias_quota)
    }

    async fn update_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        refuse_reserved(alias)?;
        self.call("UpdateAlias", &[("AliasName", alias), ("KeyId", key_id)]).await.map(drop)
    }

    /// Alibaba deletes by name alone; `current_key` is not needed.
    async fn delete_alias(&self, alias: &str, _current_key: Option<&str>) -> Result<(), ProviderError> {
        refuse_reserved(alias)?;
        self.call("DeleteAlias", &[("AliasName", alias)]).await.map(drop)
    }

    /// DescribeKey by key id or ARN; `Forbidden.KeyNotFound` (NotFound) means no such key.
    async fn describe_key(&self, key_id: &str) -> Result<Option<KeyFacts>, ProviderError> {
        refuse_reserved(key_id)?;
        Ok(found(self.key_metadata(key_id).await)?.map(KeyMetadata::facts))
    }

    /// A desired key may be given as an ARN (`acs:kms:REGION:ACCOUNT:key/ID`); listings return bare ids.
    fn key_matches(&self, desired: &str, live: &str) -> bool {
        !desired.is_empty() && bare_key_id(desired) == bare_key_id(live)
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Turns an error response (`{"RequestId","HostId","Code","Message","Recommend"}`, older `HttpStatus` form,
/// XML, or a proxy's text) into a ProviderError. `secrets` are scrubbed from code and message.
pub(crate) fn parse_error(status: u16, body: &[u8], secrets: &[&str]) -> ProviderError {
    let (code, message, request_id) = parse_error_body(body);
    let request_id = request_id.map(|id| ("RequestId", id));
    phttp::response_error(status, code.as_deref(), message, request_id, secrets, classify)
}

/// (code, message, request id) from an error body in any of the shapes seen.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    match ErrorBody::parse(body) {
        ErrorBody::Empty => (None, None, None),
        ErrorBody::Json(v) => (
            json_str(&v, &["Code", "code"]),
            json_str(&v, &["Message", "message"]),
            json_str(&v, &["RequestId", "requestId"]),
        ),
        ErrorBody::Markup(xml) => {
            (xml_element(&xml, "Code"), xml_element(&xml, "Message"), xml_element(&xml, "RequestId"))
        }
        // A proxy's or load balancer's page: keep its text (collapsed) as the message.
        ErrorBody::Text(text) => (None, Some(collapse_whitespace(&text)), None),
    }
}

/// The one place an Alibaba error becomes an [`ErrorClass`] and a bounded metric label: each known code has
/// its own snake_case label (open families such as `Throttling*` share one); unknown codes are `other`, or
/// decided by the HTTP status when there is no code at all. A known code wins over the status.
pub(crate) fn classify(code: Option<&str>, status: u16) -> (ErrorClass, &'static str) {
    use super::AuthFailure;
    use ErrorClass::*;
    let known = match code.unwrap_or("") {
        // 429, "QPS Limit Exceeded" (performance-data page); retryable with backoff.
        "Rejected.Throttling" => Some((Throttled, "rejected_throttling")),
        // Throttling, Throttling.User, Throttling.Api, … (400 on the UpdateAlias page).
        c if c.starts_with("Throttling") => Some((Throttled, "throttling")),
        "InternalFailure" => Some((Transient, "internal_failure")),
        // ServiceUnavailableTemporary (503), and the older misspelling SerivceUnavailableTemporary.
        c if c.starts_with("ServiceUnavailable") || c.starts_with("SerivceUnavailable") => {
            Some((Transient, "service_unavailable"))
        }
        "AliasAlreadyExists" => Some((AlreadyExists, "alias_already_exists")),
        // Not seen for alias operations (reference §3.6: unconfirmed); the name leaves no other reading.
        "Rejected.AlreadyExists" => Some((AlreadyExists, "rejected_already_exists")),
        "Forbidden.AliasNotFound" => Some((NotFound, "forbidden_alias_not_found")),
        "Forbidden.KeyNotFound" => Some((NotFound, "forbidden_key_not_found")),
        "Forbidden.ResourceNotFound" => Some((NotFound, "forbidden_resource_not_found")),
        // 409 state refusals: CreateAlias on a PendingDeletion key answers Rejected.StateModifiedFailed.
        "Rejected.Disabled" => Some((InvalidState, "rejected_disabled")),
        "Rejected.Enabled" => Some((InvalidState, "rejected_enabled")),
        "Rejected.PendingDeletion" => Some((InvalidState, "rejected_pending_deletion")),
        "Rejected.PendingImport" => Some((InvalidState, "rejected_pending_import")),
        "Rejected.StateModifiedFailed" => Some((InvalidState, "rejected_state_modified_failed")),
        "InvalidParameter" => Some((Permanent, "invalid_parameter")),
        "MissingParameter" => Some((Permanent, "missing_parameter")),
        // The RAM policy (whole target) or a key policy (one alias): the reconcile policy tells them apart.
        "Forbidden.NoPermission" => Some((AccessDenied, "forbidden_no_permission")),
        "Forbidden.RAM" => Some((AccessDenied, "forbidden_ram")),
        // Credentials refused: every call of the target fails alike, so the target pauses (DESIGN §2.8).
        "InvalidAccessKeyId.NotFound" => {
            Some((Unauthenticated(AuthFailure::Invalid), "invalid_access_key_id_not_found"))
        }
        "InvalidAccessKeyId.Inactive" => {
            Some((Unauthenticated(AuthFailure::Invalid), "invalid_access_key_id_inactive"))
        }
        "InvalidSecurityToken.Expired" => {
            Some((Unauthenticated(AuthFailure::Expired), "invalid_security_token_expired"))
        }
        "InvalidSecurityToken.Malformed" | "InvalidSecurityToken.MismatchWithAccessKey" => {
            Some((Unauthenticated(AuthFailure::Invalid), "invalid_security_token"))
        }
        "IncompleteSignature" => Some((Unauthenticated(AuthFailure::Signature), "incomplete_signature")),
        "SignatureDoesNotMatch" => Some((Unauthenticated(AuthFailure::Signature), "signature_does_not_match")),
        "IllegalTimestamp" => Some((Unauthenticated(AuthFailure::ClockSkew), "illegal_timestamp")),
        // A resource quota (e.g. aliases per region), not a rate: do not retry.
        "Rejected.LimitExceeded" => Some((Permanent, "rejected_limit_exceeded")),
        _ => None,
    };
    known.unwrap_or_else(|| phttp::status_class(status, code.is_some()))
}

// ---------------------------------------------------------------------------------------------
// Listing

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListPage {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(crate) total_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(crate) page_number: Option<u64>,
    /// `Aliases.Alias[]`: the XML-style wrapper survives in JSON.
    pub(crate) aliases: Option<AliasList>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasList {
    #[serde(default)]
    pub(crate) alias: Vec<AliasEntry>,
}

#[derive(Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasEntry {
    pub(crate) alias_name: String,
    #[serde(default)]
    pub(crate) key_id: Option<String>,
}

impl From<AliasEntry> for LiveAlias {
    fn from(a: AliasEntry) -> LiveAlias {
        LiveAlias { name: a.alias_name, key_id: a.key_id }
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

/// The page after `asked` (None: that was the last). An endpoint that answers another page than the one
/// asked for ignores `PageNumber` and would repeat itself: an error, as a page with no `TotalCount`.
pub(crate) fn next_page(asked: u64, page: &ListPage) -> Result<Option<u64>, ProviderError> {
    if let Some(n) = page.page_number.filter(|&n| n != asked) {
        return Err(invalid_response(format!("ListAliases: asked for page {asked}, got page {n}")));
    }
    let total = page.total_count.ok_or_else(|| invalid_response("ListAliases: no TotalCount"))?;
    let empty = page.aliases.as_ref().is_none_or(|a| a.alias.is_empty());
    Ok((!empty && asked.saturating_mul(LIST_PAGE_SIZE) < total).then_some(asked + 1))
}

/// The `KeyMetadata` of a DescribeKey response.
pub(crate) fn parse_key_metadata(v: Value) -> Result<KeyMetadata, ProviderError> {
    let meta = v.get("KeyMetadata").cloned().ok_or_else(|| invalid_response("DescribeKey: no KeyMetadata"))?;
    serde_json::from_value(meta).map_err(|e| phttp::shape_error("DescribeKey", &e))
}

/// A count as a JSON number or a numeric string.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Whether a listed alias belongs to us: never an Alibaba-managed one, and under one of `prefixes` (the fuzz
/// target's check of the filter `pages::list_wanted` applies).
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub(crate) fn wanted(name: &str, prefixes: &[String]) -> bool {
    phttp::wanted(name, RESERVED_PREFIX, prefixes)
}

// ---------------------------------------------------------------------------------------------
// Identifiers and configuration

/// `Rejected.LimitExceeded` from CreateAlias: the per-region alias quota (reference §3.7: 300 aliases per region
/// on the older limits page). Only creating adds an alias to the region, so only CreateAlias maps it.
fn alias_quota(e: ProviderError) -> ProviderError {
    if e.code != "Rejected.LimitExceeded" {
        return e;
    }
    super::alias_quota(e, "the region already has the most aliases Alibaba Cloud KMS allows (300 per region)")
}

/// The default endpoint. The SDKs' KMS endpoint table is empty with the `regional` rule (aliyun-openapi-python-sdk
/// `aliyunsdkkms/endpoint.py`; alibabacloud-csharp-sdk `kms-20160120` Client), which endpoint-util's
/// GetEndpointRules spells `<product>.<region_id>.aliyuncs.com`.
pub(crate) fn default_endpoint(region: &str) -> String {
    format!("https://kms.{region}.aliyuncs.com")
}

/// `acs:kms:REGION:ACCOUNT:key/ID` → `ID`; anything else is returned as is.
pub(crate) fn bare_key_id(id: &str) -> &str {
    phttp::arn_key_id(id, "acs:", 5)
}

fn refuse_reserved(alias: &str) -> Result<(), ProviderError> {
    phttp::refuse_reserved(alias, RESERVED_PREFIX, "Alibaba Cloud")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http::{parse_success, MAX_CODE_CHARS};
    use crate::provider::sign::testutil::{
        assert_classification, credentials, serve, signed_by, signed_headers, RawRequest, Reply,
    };
    use crate::secret::Secret;
    use serde_json::json;
    use std::collections::HashSet;

    const AK: &str = "LTAI5tFakeAccessKeyId01";
    const SK: &str = "FakeAccessKeySecret0123456789abcd";

    fn creds(token: Option<&str>) -> Credentials {
        credentials(AK, SK, token)
    }

    fn kms(endpoint: &str) -> AlibabaKms {
        AlibabaKms::new("cn-hangzhou", Some(endpoint), creds(None), Duration::from_secs(5)).unwrap()
    }

    /// Recomputes the ACS3 signature of a received request with our own signer, as Alibaba would.
    fn signature_ok(r: &RawRequest) -> bool {
        signed_by(r, acs3::sign, AK, SK)
    }

    /// Answers like Alibaba: a bad signature is SignatureDoesNotMatch, otherwise `reply`.
    async fn alibaba(
        reply: impl Fn(&RawRequest) -> Reply + Send + Sync + 'static,
    ) -> (String, crate::provider::sign::testutil::Log) {
        serve(move |r| {
            if !signature_ok(r) {
                let body = json!({"RequestId": "R", "Code": "SignatureDoesNotMatch", "Message": "bad signature"});
                return (400, body.to_string());
            }
            reply(r)
        })
        .await
    }

    // ----- error parsing and classification -----

    fn err(status: u16, body: &str) -> ProviderError {
        parse_error(status, body.as_bytes(), &[])
    }

    #[test]
    fn classification_table() {
        use crate::provider::AuthFailure;
        use ErrorClass::*;
        let cases: &[(&str, u16, ErrorClass, &str)] = &[
            ("Rejected.Throttling", 429, Throttled, "rejected_throttling"),
            ("Throttling", 400, Throttled, "throttling"),
            ("Throttling.User", 400, Throttled, "throttling"),
            ("Throttling.Api", 503, Throttled, "throttling"),
            ("InternalFailure", 500, Transient, "internal_failure"),
            ("ServiceUnavailable", 503, Transient, "service_unavailable"),
            ("ServiceUnavailableTemporary", 503, Transient, "service_unavailable"),
            ("SerivceUnavailableTemporary", 503, Transient, "service_unavailable"),
            ("AliasAlreadyExists", 400, AlreadyExists, "alias_already_exists"),
            ("Rejected.AlreadyExists", 409, AlreadyExists, "rejected_already_exists"),
            ("Forbidden.AliasNotFound", 404, NotFound, "forbidden_alias_not_found"),
            ("Forbidden.KeyNotFound", 404, NotFound, "forbidden_key_not_found"),
            ("Forbidden.ResourceNotFound", 404, NotFound, "forbidden_resource_not_found"),
            ("Rejected.Disabled", 409, InvalidState, "rejected_disabled"),
            ("Rejected.Enabled", 409, InvalidState, "rejected_enabled"),
            ("Rejected.PendingDeletion", 409, InvalidState, "rejected_pending_deletion"),
            ("Rejected.PendingImport", 409, InvalidState, "rejected_pending_import"),
            ("Rejected.StateModifiedFailed", 409, InvalidState, "rejected_state_modified_failed"),
            ("InvalidParameter", 400, Permanent, "invalid_parameter"),
            ("MissingParameter", 400, Permanent, "missing_parameter"),
            ("Forbidden.NoPermission", 403, AccessDenied, "forbidden_no_permission"),
            ("Forbidden.RAM", 403, AccessDenied, "forbidden_ram"),
            (
                "InvalidAccessKeyId.NotFound",
                404,
                Unauthenticated(AuthFailure::Invalid),
                "invalid_access_key_id_not_found",
            ),
            (
                "InvalidSecurityToken.Expired",
                400,
                Unauthenticated(AuthFailure::Expired),
                "invalid_security_token_expired",
            ),
            ("IncompleteSignature", 400, Unauthenticated(AuthFailure::Signature), "incomplete_signature"),
            ("SignatureDoesNotMatch", 400, Unauthenticated(AuthFailure::Signature), "signature_does_not_match"),
            ("IllegalTimestamp", 400, Unauthenticated(AuthFailure::ClockSkew), "illegal_timestamp"),
            ("Rejected.LimitExceeded", 400, Permanent, "rejected_limit_exceeded"),
            // Unknown codes: the status decides the class, the label stays bounded.
            ("SomethingNew", 400, Permanent, "other"),
            ("SomethingNew", 404, Permanent, "other"),
            ("SomethingNew", 500, Transient, "http_5xx"),
            ("SomethingNew", 429, Throttled, "throttling"),
            // A known permanent code wins over a 5xx status.
            ("Forbidden.NoPermission", 503, AccessDenied, "forbidden_no_permission"),
        ];
        assert_classification(classify, cases);
    }

    #[test]
    fn error_json_shapes() {
        let body = r#"{"RequestId":"4C46-AC04","HostId":"kms.cn-hangzhou.aliyuncs.com","Code":"Forbidden.AliasNotFound",
            "Message":"The specified alias is not found.","Recommend":"https://api.aliyun.com/troubleshoot?q=x"}"#;
        let e = err(404, body);
        assert_eq!(
            (e.class, e.code.as_str(), e.label),
            (ErrorClass::NotFound, "Forbidden.AliasNotFound", "forbidden_alias_not_found")
        );
        assert_eq!(e.message, "The specified alias is not found. (RequestId 4C46-AC04)");
        // The older documented shape, with HttpStatus.
        let e = err(400, r#"{"HttpStatus":400,"Code":"IllegalTimestamp","Message":"bad ts","RequestId":"e85d"}"#);
        assert_eq!(
            (e.class, e.code.as_str(), e.message.as_str()),
            (
                ErrorClass::Unauthenticated(crate::provider::AuthFailure::ClockSkew),
                "IllegalTimestamp",
                "bad ts (RequestId e85d)"
            )
        );
        let e = err(429, r#"{"Code":"Rejected.Throttling","Message":"QPS Limit Exceeded"}"#);
        assert_eq!((e.class, e.message.as_str()), (ErrorClass::Throttled, "QPS Limit Exceeded"));
    }

    #[test]
    fn error_xml_text_and_empty_bodies() {
        let xml =
            "<KMS><HttpStatus>400</HttpStatus><Code>AliasAlreadyExists</Code><Message>exists &amp; so on</Message>\
                   <RequestId>3b23</RequestId></KMS>";
        let e = err(400, xml);
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::AlreadyExists, "AliasAlreadyExists"));
        assert_eq!(e.message, "exists & so on (RequestId 3b23)");
        let e = err(502, "<html>\n<body>502 Bad   Gateway</body></html>");
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Transient, "HTTP502", "http_5xx"));
        let e = err(503, "upstream connect error");
        assert_eq!((e.class, e.message.as_str()), (ErrorClass::Transient, "upstream connect error"));
        let e = err(500, "");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("HTTP500", "HTTP 500"));
        let e = err(400, r#"{"Code":"  ","Message":""}"#);
        assert_eq!(
            (e.class, e.code.as_str(), e.label, e.message.as_str()),
            (ErrorClass::Permanent, "HTTP400", "http_4xx", "HTTP 400")
        );
    }

    #[test]
    fn error_code_truncated_and_secrets_scrubbed() {
        let e = err(400, &json!({"Code": "X".repeat(300)}).to_string());
        assert_eq!((e.code.chars().count(), e.label), (MAX_CODE_CHARS + 1, "other"));
        let body = json!({"Code": "SignatureDoesNotMatch", "Message": format!("server string to sign is: ... key {SK} tok STSTOKEN")});
        let e = parse_error(400, body.to_string().as_bytes(), &[SK, "STSTOKEN", ""]);
        assert!(!e.message.contains(SK) && !e.message.contains("STSTOKEN"), "{}", e.message);
        assert_eq!(e.label, "signature_does_not_match");
    }

    /// The shape errors of huawei's fuzz finding (crash-5918d442), here: a wrong-typed field must not carry
    /// an echoed secret into the message.
    #[test]
    fn shape_errors_do_not_echo_response_values() {
        let e = parse_list_page(json!({"TotalCount": 1, "Aliases": {"Alias": "tok STSTOKEN"}})).err().unwrap();
        assert_eq!(e.label, "invalid_response");
        assert!(!e.message.contains("STSTOKEN"), "{}", e.message);
        let e = parse_key_metadata(json!({"KeyMetadata": {"KeyId": "k", "KeyState": ["STSTOKEN"]}})).unwrap_err();
        assert!(!e.message.contains("STSTOKEN"), "{}", e.message);
    }

    #[test]
    fn success_bodies() {
        assert_eq!(parse_success(b"").unwrap(), Value::Null);
        assert_eq!(parse_success(br#"{"RequestId":"x"}"#).unwrap(), json!({"RequestId": "x"}));
        assert_eq!(parse_success(b"<xml/>").unwrap_err().label, "invalid_response");
    }

    // ----- identifiers, construction, request shape -----

    #[test]
    fn key_matches_arn_and_bare_id() {
        let k = kms("http://127.0.0.1:1");
        let id = "key-hzz62f1cb66fa42qo3ht4";
        assert!(k.key_matches(id, id));
        assert!(k.key_matches(&format!("acs:kms:cn-hangzhou:1234567890:key/{id}"), id));
        assert!(!k.key_matches("acs:kms:cn-hangzhou:1234567890:alias/x", "x"));
        assert!(!k.key_matches(id, "key-other"));
        assert!(!k.key_matches("", ""));
    }

    #[test]
    fn constructor_validates_and_never_leaks() {
        let k = AlibabaKms::new("cn-shanghai", None, creds(None), Duration::from_secs(1)).unwrap();
        assert_eq!(
            (k.url.as_str(), k.host.as_str()),
            ("https://kms.cn-shanghai.aliyuncs.com/", "kms.cn-shanghai.aliyuncs.com")
        );
        assert_eq!(kms("http://127.0.0.1:5058").host, "127.0.0.1:5058");
        assert_eq!(kms("https://kms.example:443").host, "kms.example");
        assert!(AlibabaKms::new("", None, creds(None), Duration::from_secs(1)).is_err());
        assert!(AlibabaKms::new("cn.hz/x", None, creds(None), Duration::from_secs(1)).is_err());
        assert!(AlibabaKms::new("cn-hangzhou", Some("127.0.0.1:5058"), creds(None), Duration::from_secs(1)).is_err());
        let e =
            AlibabaKms::new("cn-hangzhou", Some("https://u:pw9@x"), creds(None), Duration::from_secs(1)).unwrap_err();
        assert!(!e.contains("pw9"), "{e}");
        assert!(AlibabaKms::new("cn-hangzhou", None, creds(None), Duration::ZERO).is_err());
        let dbg = format!(
            "{:?}",
            AlibabaKms::new("cn-hangzhou", None, creds(Some("STSTOK")), Duration::from_secs(1)).unwrap()
        );
        assert!(!dbg.contains(SK) && !dbg.contains("STSTOK"), "{dbg}");
    }

    /// The request the SDK would send: same headers, same canonical query, and a signature that the ACS3
    /// verifier (and the vector-tested signer) accepts.
    #[test]
    fn prepared_request_is_the_sdk_shape() {
        let k = kms("http://127.0.0.1:5058");
        let now = DateTime::parse_from_rfc3339("2026-11-23T04:13:41Z").unwrap().with_timezone(&Utc);
        let params = [("KeyId", "key-hzz62f1cb66fa42qo3ht4"), ("AliasName", "alias/app/one")];
        let p = k.prepare("CreateAlias", &params, now, "0e859597913bdaba31b4c5eca3f5a577").unwrap();
        assert_eq!(
            p.url.as_str(),
            "http://127.0.0.1:5058/?AliasName=alias%2Fapp%2Fone&KeyId=key-hzz62f1cb66fa42qo3ht4"
        );
        let h = |n: &str| p.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(h("host"), Some("127.0.0.1:5058"));
        assert_eq!(h("x-acs-action"), Some("CreateAlias"));
        assert_eq!(h("x-acs-version"), Some("2016-01-20"));
        assert_eq!(h("x-acs-date"), Some("2026-11-23T04:13:41Z"));
        assert_eq!(h("x-acs-content-sha256"), Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        assert_eq!(h("accept"), Some("application/json"));
        assert!(p.authorization.starts_with(&format!(
            "ACS3-HMAC-SHA256 Credential={AK},SignedHeaders=accept;host;x-acs-action;x-acs-content-sha256;x-acs-date;\
             x-acs-signature-nonce;x-acs-version,Signature="
        )));
        let headers: Vec<(&str, &str)> = p.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let req = SignableRequest { method: "POST", path: "/", query: &params, headers: &headers, body: b"" };
        assert_eq!(acs3::sign(&req, &signed_headers(&p.authorization), AK, SK).authorization, p.authorization);

        // STS: the token is a signed header.
        let k =
            AlibabaKms::new("cn-hangzhou", Some("http://h"), creds(Some("STSTOK")), Duration::from_secs(1)).unwrap();
        let p = k.prepare("ListAliases", &[], now, "n").unwrap();
        assert_eq!(p.url.as_str(), "http://h/");
        assert!(p.headers.contains(&(SECURITY_TOKEN_HEADER, "STSTOK".into())));
        assert!(
            p.authorization.contains(";x-acs-date;x-acs-security-token;x-acs-signature-nonce;"),
            "{}",
            p.authorization
        );
        assert!(!p.authorization.contains("STSTOK"));
    }

    // ----- against a tiny in-process HTTP server -----

    fn list_reply(total: usize, page: usize, size: usize, names: impl Fn(usize) -> String) -> Reply {
        let start = (page - 1) * size;
        let aliases: Vec<Value> = (start..total.min(start + size))
            .map(|i| {
                let n = names(i);
                json!({"KeyId": format!("key-{i:04}"), "AliasName": n, "AliasArn": format!("acs:kms:cn-hangzhou:1:{n}")})
            })
            .collect();
        let body = json!({"TotalCount": total, "PageNumber": page, "PageSize": size, "RequestId": "R", "Aliases": {"Alias": aliases}});
        (200, body.to_string())
    }

    #[tokio::test]
    async fn list_walks_every_page_by_total_count_and_signs() {
        // 250 aliases: app/ ones, someone else's, and Alibaba-managed ones.
        let name = |i: usize| match i % 5 {
            0 => format!("alias/acs/svc{i}"),
            1 => format!("alias/other/{i}"),
            _ => format!("alias/app/{i}"),
        };
        let (url, log) = alibaba(move |r| {
            let page: usize = r.param("PageNumber").unwrap().parse().unwrap();
            list_reply(250, page, 100, name)
        })
        .await;
        let prefixes = ["alias/app/".to_string(), "alias/acs/".to_string()];
        let got = kms(&url).list_aliases(&prefixes).await.unwrap();
        let want: Vec<LiveAlias> = (0..250)
            .filter(|i| i % 5 >= 2)
            .map(|i| LiveAlias { name: format!("alias/app/{i}"), key_id: Some(format!("key-{i:04}")) })
            .collect();
        assert_eq!(got, want);

        let log = log.lock().unwrap();
        let pages: Vec<&str> = log.iter().map(|r| r.param("PageNumber").unwrap()).collect();
        assert_eq!(pages, ["1", "2", "3"], "every page, and no more");
        for r in log.iter() {
            assert!(signature_ok(r), "signature recomputed from the received request");
            assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
            assert_eq!(r.param("PageSize"), Some("100"));
            assert_eq!(r.header("x-acs-action"), Some("ListAliases"));
            assert_eq!(r.header("x-acs-version"), Some("2016-01-20"));
            assert_eq!(r.header("x-acs-signature-nonce").map(str::len), Some(32));
            assert!(r.body.is_empty());
            assert!(r.header("authorization").unwrap().starts_with(&format!("ACS3-HMAC-SHA256 Credential={AK},")));
        }
        let nonces: HashSet<&str> = log.iter().map(|r| r.header("x-acs-signature-nonce").unwrap()).collect();
        assert_eq!(nonces.len(), 3, "a fresh nonce per request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_page_is_asked_again_not_the_listing_from_page_1() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (url, log) = alibaba(move |r| {
            // The third request (page 3) fails once.
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                return (503, json!({"RequestId": "R", "Code": "ServiceUnavailable", "Message": "busy"}).to_string());
            }
            list_reply(450, r.param("PageNumber").unwrap().parse().unwrap(), 100, |i| format!("alias/app/{i}"))
        })
        .await;
        assert_eq!(kms(&url).list_aliases(&["alias/app/".into()]).await.unwrap().len(), 450);
        let log = log.lock().unwrap();
        let pages: Vec<&str> = log.iter().map(|r| r.param("PageNumber").unwrap()).collect();
        assert_eq!(pages, ["1", "2", "3", "3", "4", "5"]);
    }

    #[tokio::test]
    async fn list_stops_on_exact_total_and_on_empty_pages() {
        let (url, log) = alibaba(|r| {
            list_reply(200, r.param("PageNumber").unwrap().parse().unwrap(), 100, |i| format!("alias/app/{i}"))
        })
        .await;
        assert_eq!(kms(&url).list_aliases(&["alias/app/".into()]).await.unwrap().len(), 200);
        assert_eq!(log.lock().unwrap().len(), 2, "TotalCount reached: no third request");

        // TotalCount claims more than the pages hold (entries deleted mid-walk): an empty page ends the walk.
        let (url, log) = alibaba(|r| {
            let page: usize = r.param("PageNumber").unwrap().parse().unwrap();
            let (status, body) = list_reply(150, page, 100, |i| format!("alias/app/{i}"));
            let mut v: Value = serde_json::from_str(&body).unwrap();
            v["TotalCount"] = json!(400);
            (status, v.to_string())
        })
        .await;
        assert_eq!(kms(&url).list_aliases(&["alias/".into()]).await.unwrap().len(), 150);
        assert_eq!(log.lock().unwrap().len(), 3);

        let (url, _) = alibaba(|_| (200, r#"{"TotalCount":0,"Aliases":{"Alias":[]},"RequestId":"R"}"#.into())).await;
        assert!(kms(&url).list_aliases(&["alias/".into()]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn list_refuses_endless_or_broken_paging() {
        // An endpoint that ignores PageNumber and always answers page 1 of a huge listing.
        let (url, log) = alibaba(|_| {
            let (s, body) = list_reply(100, 1, 100, |i| format!("alias/app/{i}"));
            let mut v: Value = serde_json::from_str(&body).unwrap();
            v["TotalCount"] = json!(1_000_000);
            v.as_object_mut().unwrap().remove("PageNumber");
            (s, v.to_string())
        })
        .await;
        let e = kms(&url).list_aliases(&["alias/".into()]).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Transient, "InvalidResponse"));
        assert!(e.message.contains("repeats"), "{e}");
        assert_eq!(log.lock().unwrap().len(), 2, "stops at the first repeated page");

        // Echoing another page number than asked.
        let (url, _) = alibaba(|_| list_reply(300, 1, 100, |i| format!("alias/app/{i}"))).await;
        let e = kms(&url).list_aliases(&["alias/".into()]).await.unwrap_err();
        assert!(e.message.contains("asked for page 2, got page 1"), "{e}");

        let (url, _) =
            alibaba(|_| (200, r#"{"Aliases":{"Alias":[{"AliasName":"alias/app/a","KeyId":"k"}]}}"#.into())).await;
        let e = kms(&url).list_aliases(&["alias/".into()]).await.unwrap_err();
        assert!(e.message.contains("no TotalCount"), "{e}");
    }

    #[tokio::test]
    async fn get_alias_describes_key_by_alias_name() {
        let (url, log) = alibaba(|r| match r.param("KeyId") {
            Some("alias/app/one") => {
                (200, json!({"RequestId": "R", "KeyMetadata": {"KeyId": "key-one", "KeyState": "Enabled", "Arn": "acs:kms:x"}}).to_string())
            }
            _ => (404, json!({"RequestId": "R", "Code": "Forbidden.AliasNotFound", "Message": "not found"}).to_string()),
        })
        .await;
        let k = kms(&url);
        assert_eq!(k.get_alias("alias/app/one").await.unwrap().as_deref(), Some("key-one"));
        assert_eq!(k.get_alias("alias/app/none").await.unwrap(), None);
        let e = k.get_alias("alias/acs/ecs").await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Permanent, "ReservedAlias"));
        let meta = k.key_metadata("alias/app/one").await.unwrap();
        assert_eq!(
            meta,
            KeyMetadata {
                key_id: "key-one".into(),
                key_state: Some("Enabled".into()),
                key_spec: None,
                key_usage: None
            }
        );
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 3, "the reserved alias is never sent");
        assert!(log.iter().all(|r| r.header("x-acs-action") == Some("DescribeKey") && signature_ok(r)));
    }

    #[tokio::test]
    async fn describe_key_reads_state_spec_and_usage() {
        let (url, log) = alibaba(|r| match r.param("KeyId") {
            Some("key-rsa") => (
                200,
                json!({"RequestId": "R", "KeyMetadata": {"KeyId": "key-rsa", "KeyState": "PendingDeletion",
                    "KeySpec": "RSA_2048", "KeyUsage": "SIGN/VERIFY", "Arn": "acs:kms:x"}})
                .to_string(),
            ),
            _ => (404, json!({"RequestId": "R", "Code": "Forbidden.KeyNotFound", "Message": "not found"}).to_string()),
        })
        .await;
        let k = kms(&url);
        assert_eq!(
            k.describe_key("key-rsa").await.unwrap(),
            Some(KeyFacts {
                key_id: "key-rsa".into(),
                state: KeyState::PendingDeletion,
                spec: "RSA_2048".into(),
                usage: "SIGN/VERIFY".into()
            })
        );
        assert_eq!(k.describe_key("key-gone").await.unwrap(), None);
        assert_eq!(log.lock().unwrap().len(), 2);
        let state = |s: Option<&str>| {
            KeyMetadata { key_id: "k".into(), key_state: s.map(Into::into), key_spec: None, key_usage: None }
                .facts()
                .state
        };
        assert_eq!(state(Some("Enabled")), KeyState::Enabled);
        assert_eq!(state(Some("Disabled")), KeyState::Disabled);
        assert_eq!(state(Some("PendingImport")), KeyState::PendingImport);
        assert_eq!(state(None), KeyState::Other(String::new()));
    }

    #[tokio::test]
    async fn mutators_send_rpc_params_and_classify_errors() {
        let (url, log) = alibaba(|r| match (r.header("x-acs-action").unwrap(), r.param("AliasName")) {
            ("CreateAlias", Some("alias/app/taken")) => {
                (400, json!({"RequestId": "R", "Code": "AliasAlreadyExists", "Message": "exists"}).to_string())
            }
            (_, Some("alias/app/slow")) => (
                429,
                json!({"RequestId": "R", "Code": "Rejected.Throttling", "Message": "QPS Limit Exceeded"}).to_string(),
            ),
            _ => (200, json!({"RequestId": "R"}).to_string()),
        })
        .await;
        let k = kms(&url);
        k.create_alias("alias/app/one", "key-1").await.unwrap();
        k.update_alias("alias/app/one", "key-2").await.unwrap();
        k.delete_alias("alias/app/one", None).await.unwrap();
        let e = k.create_alias("alias/app/taken", "key-1").await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::AlreadyExists, "AliasAlreadyExists"));
        let e = k.update_alias("alias/app/slow", "key-1").await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::Throttled, "rejected_throttling"));
        assert_eq!(k.delete_alias("alias/acs/x", None).await.unwrap_err().code, "ReservedAlias");

        let log = log.lock().unwrap();
        let sent: Vec<(String, Vec<(String, String)>)> =
            log.iter().map(|r| (r.header("x-acs-action").unwrap().to_string(), r.query.clone())).collect();
        let q = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert_eq!(sent[0], ("CreateAlias".into(), q(&[("AliasName", "alias/app/one"), ("KeyId", "key-1")])));
        assert_eq!(sent[1], ("UpdateAlias".into(), q(&[("AliasName", "alias/app/one"), ("KeyId", "key-2")])));
        assert_eq!(sent[2], ("DeleteAlias".into(), q(&[("AliasName", "alias/app/one")])));
        assert_eq!(log.len(), 5);
        assert!(log.iter().all(signature_ok));
    }

    /// Rejected.LimitExceeded on CreateAlias is the per-region alias quota: permanent, named.
    #[tokio::test]
    async fn alias_quota_is_permanent_and_named() {
        let (url, _) = alibaba(|_| {
            let body = json!({"RequestId": "R-9", "Code": "Rejected.LimitExceeded", "Message": "limit exceeded"});
            (400, body.to_string())
        })
        .await;
        let k = kms(&url);
        let e = k.create_alias("alias/app/a", "key-1").await.unwrap_err();
        assert_eq!(
            (e.class, e.code.as_str(), e.label),
            (ErrorClass::Permanent, "Rejected.LimitExceeded", "alias_quota")
        );
        assert!(e.message.contains("300 per region") && e.message.contains("RequestId R-9"), "{}", e.message);
        let e = k.delete_alias("alias/app/a", None).await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::Permanent, "rejected_limit_exceeded"));
    }

    /// The verifying test server is not a rubber stamp: a wrong secret fails the recomputed signature.
    #[tokio::test]
    async fn wrong_secret_fails_the_servers_signature_check() {
        let (url, _) = alibaba(|_| (200, json!({"RequestId": "R"}).to_string())).await;
        let bad = Credentials { secret_access_key: Secret::new("not-the-secret"), ..creds(None) };
        let k = AlibabaKms::new("cn-hangzhou", Some(&url), bad, Duration::from_secs(5)).unwrap();
        let e = k.delete_alias("alias/app/x", None).await.unwrap_err();
        assert_eq!(
            (e.class, e.label),
            (ErrorClass::Unauthenticated(crate::provider::AuthFailure::Signature), "signature_does_not_match")
        );
        kms(&url).delete_alias("alias/app/x", None).await.unwrap();
    }

    #[tokio::test]
    async fn session_token_is_sent_signed_and_scrubbed_from_errors() {
        let (url, log) = serve(|_| {
            let msg = format!("echo: x-acs-security-token:STSTOK secret {SK}");
            (400, json!({"Code": "IncompleteSignature", "Message": msg, "RequestId": "R"}).to_string())
        })
        .await;
        let k = AlibabaKms::new("cn-hangzhou", Some(&url), creds(Some("STSTOK")), Duration::from_secs(5)).unwrap();
        let e = k.call("ListAliases", &[]).await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("STSTOK") && !shown.contains(SK), "{shown}");
        assert_eq!(
            (e.class, e.label),
            (ErrorClass::Unauthenticated(crate::provider::AuthFailure::Signature), "incomplete_signature")
        );
        let log = log.lock().unwrap();
        assert_eq!(log[0].header(SECURITY_TOKEN_HEADER), Some("STSTOK"));
        assert!(log[0].header("authorization").unwrap().contains("x-acs-security-token"));
        assert!(signature_ok(&log[0]));
    }
}
