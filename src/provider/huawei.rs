//! Huawei Cloud KMS (DEW, API v1.0): REST + JSON under `/v1.0/{project_id}/kms/`, signed with AK/SK
//! `SDK-HMAC-SHA256` ([`super::sign::sdk_hmac`]) over `content-type;host;x-project-id;x-sdk-date` (plus
//! `x-security-token` with temporary credentials), as `huaweicloudsdkkms` signs.
//!
//! | trait call | request |
//! |---|---|
//! | create | `POST aliases {key_id, alias}` |
//! | update | `POST alias/associate {alias, target_key_id}` |
//! | delete | `DELETE aliases {aliases: [alias], key_id}` (a JSON body on DELETE; `key_id` is required) |
//! | list / get | `GET aliases?limit=100&marker=…`, paged by `page_info.next_marker` |
//!
//! **Alias naming.** Huawei's documentation disagrees on whether aliases carry the `alias/` prefix (the API
//! examples use `kms-1234`), so each target chooses ([`AliasPrefix`], config key `alias_prefix`). The mapping
//! lives only here:
//!
//! - `keep` (default): wire name = canonical name (`alias/app/x` ↔ `alias/app/x`);
//! - `strip` (**unconfirmed**: terraform-provider-huaweicloud's `huaweicloud_kms_alias` documents the alias as
//!   "can only be prefixed with alias/", so Huawei may refuse unprefixed names): wire name = canonical name
//!   without `alias/` (`alias/app/x` → `app/x`), and a listed wire name gets `alias/` re-added (`app/x` →
//!   `alias/app/x`) before the managed-prefix filter applies.
//!
//! Everything outside this module (desired state, metrics, logs, the trait) sees canonical names only.
//!
//! Errors are classified once, here, in [`classify`]; the engine only sees [`ErrorClass`].

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{
    self as phttp, check_region, collapse_whitespace, host_header, invalid_response, json_str, parse_endpoint,
    ErrorBody,
};
use super::pages::{walk, Cursor, Page};
use super::sign::{self, sdk_hmac, SignableRequest};
use super::transport::{self, Prepared, Wire};
use super::SharedCredentials;
use super::{found, ErrorClass, KeyFacts, KeyState, KmsAliases, LiveAlias, ProviderError};
pub use crate::config::AliasPrefix;
use crate::secret::Credentials;

/// The canonical alias prefix that `strip` removes on the wire.
const CANONICAL_PREFIX: &str = "alias/";
/// The documented `limit` maximum (1–100).
const LIST_LIMIT: usize = 100;
const JSON: &str = "application/json";
/// Every APIG response carries its request id here (KMS error bodies do not): what Huawei support asks for.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// Temporary (STS) credentials travel in this (signed) header.
const SECURITY_TOKEN_HEADER: &str = "x-security-token";

/// A Huawei Cloud KMS endpoint in one region and project, with its credentials.
#[derive(Debug)]
pub struct HuaweiKms {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The `host` header as sent and signed: host, plus `:port` when not the scheme's default.
    host: String,
    project_id: String,
    naming: AliasPrefix,
    creds: SharedCredentials,
}

/// What describe-key tells about a key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    /// `"1"` pending activation, `"2"` enabled, `"3"` disabled, `"4"` pending deletion, `"5"` pending import.
    #[serde(default)]
    pub key_state: Option<String>,
    /// `AES_256`, `SM4`, `RSA_2048`, `EC_P256`, …
    #[serde(default)]
    pub key_spec: Option<String>,
    /// `ENCRYPT_DECRYPT`, `SIGN_VERIFY`.
    #[serde(default)]
    pub key_usage: Option<String>,
}

impl KeyInfo {
    pub fn facts(self) -> KeyFacts {
        let table = [
            ("2", KeyState::Enabled),
            ("3", KeyState::Disabled),
            ("4", KeyState::PendingDeletion),
            ("5", KeyState::PendingImport),
            ("1", KeyState::Other("1 (pending activation)".into())),
        ];
        let state = KeyState::from_table(self.key_state.as_deref(), &table);
        KeyFacts::reported(self.key_id, state, self.key_spec, self.key_usage)
    }
}

impl HuaweiKms {
    /// `endpoint` defaults to [`default_endpoint`]. `project_id` is the IAM project of the
    /// region (it is part of every path). Errors never echo the endpoint: a mistyped one may carry userinfo.
    pub fn new(
        region: &str,
        endpoint: Option<&str>,
        project_id: &str,
        alias_naming: AliasPrefix,
        creds: Credentials,
        timeout: Duration,
    ) -> Result<HuaweiKms, String> {
        Self::with_client(
            region,
            endpoint,
            project_id,
            alias_naming,
            SharedCredentials::new(creds),
            phttp::try_client(timeout)?,
        )
    }

    /// [`HuaweiKms::new`] with an HTTP client shared with other targets (its timeout is the request timeout).
    pub fn with_client(
        region: &str,
        endpoint: Option<&str>,
        project_id: &str,
        alias_naming: AliasPrefix,
        creds: SharedCredentials,
        client: reqwest::Client,
    ) -> Result<HuaweiKms, String> {
        check_region(region)?;
        if project_id.is_empty() || project_id.len() > 64 || !project_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("project_id must be 1-64 letters and digits".into());
        }
        let url = match endpoint {
            Some(e) => parse_endpoint(e)?,
            None => parse_endpoint(&default_endpoint(region))?,
        };
        Ok(HuaweiKms {
            client,
            host: host_header(&url),
            url,
            project_id: project_id.to_string(),
            naming: alias_naming,
            creds,
        })
    }

    /// Calls `METHOD /v1.0/{project_id}/kms/{op}?query` with an optional JSON body; returns the response body
    /// (`Value::Null` when empty, as for 204).
    pub async fn call(
        &self,
        method: Method,
        op: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let body = body.map(transport::json_body).transpose()?.unwrap_or_default();
        transport::send(&self.client, &self.creds, self, &HuaweiOp { method, op, query, body }).await
    }

    /// [`Self::sign_at`] with the current credentials (the request-shape tests).
    #[cfg(test)]
    fn prepare(
        &self,
        method: Method,
        op: &str,
        query: &[(&str, &str)],
        body: Vec<u8>,
        now: DateTime<Utc>,
    ) -> Result<Prepared, ProviderError> {
        Ok(self.sign_at(&*self.creds.current()?, &HuaweiOp { method, op, query, body }, now))
    }

    /// Builds and signs a request at time `now`. Every header set is signed; no body is sent when it is empty.
    fn sign_at(&self, creds: &Credentials, op: &HuaweiOp<'_>, now: DateTime<Utc>) -> Prepared {
        let HuaweiOp { method, op, query, body } = op;
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/v1.0/{}/kms/{op}", self.project_id));
        let q = sign::canonical_query(query);
        url.set_query(Some(&q).filter(|q| !q.is_empty()).map(String::as_str));
        let date = sdk_hmac::format_date(now);
        let mut headers: Vec<(&'static str, String)> = vec![
            ("content-type", JSON.into()),
            ("host", self.host.clone()),
            ("x-project-id", self.project_id.clone()),
            ("x-sdk-date", date.clone()),
        ];
        if let Some(token) = &creds.session_token {
            headers.push((SECURITY_TOKEN_HEADER, token.expose().into()));
        }
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let req = SignableRequest { method: method.as_str(), path: url.path(), query, headers: &pairs, body };
        let s = sdk_hmac::sign(&req, &names, &date, &creds.access_key_id, creds.secret_access_key.expose());
        Prepared {
            method: method.clone(),
            url,
            headers,
            token_header: SECURITY_TOKEN_HEADER,
            body: Some(body.clone()).filter(|b| !b.is_empty()),
            authorization: s.authorization,
            signature: s.signature,
        }
    }

    /// The credentials this endpoint signs with; replacing them affects the requests that start afterwards.
    pub fn credentials(&self) -> SharedCredentials {
        self.creds.clone()
    }

    /// The wire name of a canonical alias (see the module doc).
    fn wire_name<'a>(&self, canonical: &'a str) -> Result<&'a str, ProviderError> {
        to_wire(self.naming, canonical).ok_or_else(|| {
            ProviderError::new(
                ErrorClass::Permanent,
                "InvalidAliasName",
                "validation",
                format!("alias_prefix = \"strip\" needs names starting with {CANONICAL_PREFIX}"),
            )
        })
    }

    /// describe-key (key ids only: Huawei's `key_id` must be a 36-character id, never an alias).
    pub async fn key_info(&self, key_id: &str) -> Result<KeyInfo, ProviderError> {
        let v = self.call(Method::POST, "describe-key", &[], Some(&json!({ "key_id": key_id }))).await?;
        parse_key_info(v)
    }

    /// One list page after `cursor` (a marker). The last page: an empty `next_marker` or a short page (as
    /// terraform-provider-huaweicloud reads it).
    async fn list_page(&self, cursor: Option<Cursor>) -> Result<Page<AliasEntity>, ProviderError> {
        let limit = LIST_LIMIT.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(Cursor::Marker(m)) = &cursor {
            query.push(("marker", m));
        }
        let page = ListPage::parse(self.call(Method::GET, "aliases", &query, None).await?)?;
        let short = page.aliases.len() < LIST_LIMIT;
        let next = page.next_marker.filter(|m| !m.is_empty() && !short).map(Cursor::Marker);
        Ok(Page { items: page.aliases, next })
    }

    /// Walks every list page, handing each wire entry to `visit` until it returns true (found) or the pages
    /// end. Every page spends the target's read quota, lookups too (Huawei has no "get alias").
    async fn walk(&self, visit: impl FnMut(AliasEntity) -> bool) -> Result<(), ProviderError> {
        walk("list aliases", |c| self.list_page(c), visit).await
    }

    /// The key a wire-named alias points at, by listing (describe-key cannot take an alias).
    async fn find(&self, wire: &str) -> Result<Option<String>, ProviderError> {
        let mut found = None;
        self.walk(|a| {
            if a.alias == wire {
                found = Some(a.key_id.unwrap_or_default());
                true
            } else {
                false
            }
        })
        .await?;
        Ok(found)
    }

    async fn delete_with_key(&self, wire: &str, key_id: &str) -> Result<(), ProviderError> {
        let body = json!({ "aliases": [wire], "key_id": key_id });
        self.call(Method::DELETE, "aliases", &[], Some(&body)).await.map(drop)
    }
}

/// One call: `METHOD /v1.0/{project_id}/kms/{op}?query` with its JSON body (empty: none).
pub struct HuaweiOp<'a> {
    method: Method,
    op: &'a str,
    query: &'a [(&'a str, &'a str)],
    body: Vec<u8>,
}

impl Wire for HuaweiKms {
    type Op<'a> = HuaweiOp<'a>;

    fn prepare(&self, op: &HuaweiOp<'_>, creds: &Credentials) -> Result<Prepared, ProviderError> {
        Ok(self.sign_at(creds, op, Utc::now()))
    }

    /// KMS's error bodies carry no request id: the `X-Request-Id` header does.
    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8], secrets: &[&str]) -> ProviderError {
        let request_id = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        parse_error_with_id(status, request_id, body, secrets)
    }

    fn describe(op: &HuaweiOp<'_>) -> String {
        op.op.to_string()
    }
}

#[async_trait]
impl KmsAliases for HuaweiKms {
    /// Every listed alias, mapped to its canonical name first, then filtered by `prefixes`.
    async fn list_each(
        &self,
        prefixes: &[String],
        visit: &mut (dyn FnMut(LiveAlias) + Send),
    ) -> Result<(), ProviderError> {
        self.walk(|a| {
            let name = to_canonical(self.naming, &a.alias);
            if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                visit(LiveAlias { name: name.into_owned(), key_id: a.key_id });
            }
            false
        })
        .await
    }

    /// Huawei has no "get alias" and describe-key takes key ids only: the alias is looked up by listing.
    async fn get_alias(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        let wire = self.wire_name(alias)?;
        self.find(wire).await
    }

    /// `KMS.0207` (no such key) and `KMS.0205` (not a key of this project) both classify NotFound: no such key.
    async fn describe_key(&self, key_id: &str) -> Result<Option<KeyFacts>, ProviderError> {
        Ok(found(self.key_info(key_id).await)?.map(KeyInfo::facts))
    }

    /// The duplicate-alias error code is unconfirmed (reference §4.5). `KMS.1104` ("Existing CMK alias", from
    /// CreateKey's error table) is classified AlreadyExists; any other unrecognised client error on create is
    /// checked by looking the alias up, and reported as AlreadyExists (raw code kept) if it does exist, so the
    /// engine goes on to read-and-update instead of dead-lettering.
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        let wire = self.wire_name(alias)?;
        let body = json!({ "key_id": key_id, "alias": wire });
        match self.call(Method::POST, "aliases", &[], Some(&body)).await.map_err(alias_quota) {
            Ok(_) => Ok(()),
            Err(e) if may_hide_duplicate(&e) => match self.find(wire).await {
                Ok(Some(_)) => Err(ProviderError { class: ErrorClass::AlreadyExists, label: "already_exists", ..e }),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn update_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        let wire = self.wire_name(alias)?;
        let body = json!({ "alias": wire, "target_key_id": key_id });
        self.call(Method::POST, "alias/associate", &[], Some(&body)).await.map(drop).map_err(alias_quota)
    }

    /// Huawei's DELETE needs the key the alias points at. Without `current_key` the alias is looked up first
    /// (absent → NotFound, which the engine treats as already deleted). If a given `current_key` is refused
    /// (stale: the alias was re-pointed behind our back), the alias is looked up and the delete retried once
    /// with the key it really points at.
    ///
    /// NotFound means "already gone" only when the lookup found no alias. Huawei documents no alias-specific
    /// not-found code (KMS.0207 is "the key does not exist"), so a NotFound to a DELETE sent with the key the lookup
    /// just found says nothing about the alias being gone: it is reported as [`still_present`], never NotFound.
    async fn delete_alias(&self, alias: &str, current_key: Option<&str>) -> Result<(), ProviderError> {
        let wire = self.wire_name(alias)?;
        let not_found = || {
            ProviderError::new(
                ErrorClass::NotFound,
                "AliasNotFound",
                "alias_not_found",
                "the alias does not exist (looked up to find its key)",
            )
        };
        let Some(key) = current_key else {
            return match self.find(wire).await? {
                Some(k) => self.delete_with_key(wire, &k).await.map_err(still_present),
                None => Err(not_found()),
            };
        };
        match self.delete_with_key(wire, key).await {
            Err(e) if e.class == ErrorClass::NotFound || may_hide_duplicate(&e) => match self.find(wire).await? {
                Some(k) if k != key => self.delete_with_key(wire, &k).await.map_err(still_present),
                Some(_) => Err(still_present(e)),
                None => Err(not_found()),
            },
            other => other,
        }
    }
}

/// A NotFound to a DELETE whose key a lookup had just found on the alias: the alias was there a moment ago, so
/// this is not "already gone". Classed with the eventual-consistency answers (InvalidState): the likeliest cause,
/// the alias changing between the listing and the DELETE, heals on the next attempt's fresh lookup, so it is
/// retried `consistency_retries` times; a contradiction that persists is dead-lettered with Huawei's code for an
/// operator, rather than retried forever as a transient error would be.
fn still_present(e: ProviderError) -> ProviderError {
    if e.class != ErrorClass::NotFound {
        return e;
    }
    let message = phttp::truncate(
        &format!(
            "the lookup found the alias on this key, yet the delete answered not found; not deleted: {}",
            e.message
        ),
        phttp::MAX_MESSAGE_CHARS,
    );
    ProviderError { class: ErrorClass::InvalidState, label: "delete_not_applied", message, ..e }
}

/// A quota answer to a create or associate: the 50 aliases per key of Huawei's user guide (reference §4.3). The
/// alias-specific quota code is unconfirmed (reference §4.5); `KMS.1105`, the documented "limit reached" code, is
/// the one read as it.
fn alias_quota(e: ProviderError) -> ProviderError {
    if e.code != "KMS.1105" {
        return e;
    }
    super::alias_quota(e, "the key already has the most aliases Huawei Cloud KMS allows (50 per key)")
}

/// The default endpoint, from the KMS region table of the official SDK (huaweicloud-sdk-go-v3
/// `services/kms/v2/region/region.go`, `KmsRegion` in the Java and Python SDKs): `kms.{region}.myhuaweicloud.com`,
/// except `eu-west-101` (Dublin), which is served from `myhuaweicloud.eu`.
pub(crate) fn default_endpoint(region: &str) -> String {
    let domain = if region == "eu-west-101" { "myhuaweicloud.eu" } else { "myhuaweicloud.com" };
    format!("https://kms.{region}.{domain}")
}

// ---------------------------------------------------------------------------------------------
// Alias naming (canonical ↔ wire)

/// Canonical → wire. None when `strip` is asked to strip a name that lacks `alias/`.
pub fn to_wire(naming: AliasPrefix, canonical: &str) -> Option<&str> {
    match naming {
        AliasPrefix::Keep => Some(canonical),
        AliasPrefix::Strip => canonical.strip_prefix(CANONICAL_PREFIX).filter(|rest| !rest.is_empty()),
    }
}

/// Wire → canonical: the exact inverse of [`to_wire`] on its image.
pub fn to_canonical(naming: AliasPrefix, wire: &str) -> Cow<'_, str> {
    match naming {
        AliasPrefix::Keep => Cow::Borrowed(wire),
        AliasPrefix::Strip => Cow::Owned(format!("{CANONICAL_PREFIX}{wire}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Turns an error response into a ProviderError. Shapes: KMS `{"error":{"error_code","error_msg"}}`, the same
/// fields at top level, API Gateway `{"error_code":"APIGW.0308","error_msg":…,"request_id":…}`, or a proxy's
/// text. `secrets` are scrubbed from code and message.
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub(crate) fn parse_error(status: u16, body: &[u8], secrets: &[&str]) -> ProviderError {
    parse_error_with_id(status, None, body, secrets)
}

/// [`parse_error`] with the response's `X-Request-Id` header, used when the body carries no request id (KMS's own
/// error bodies never do).
pub(crate) fn parse_error_with_id(
    status: u16,
    header_id: Option<String>,
    body: &[u8],
    secrets: &[&str],
) -> ProviderError {
    let (code, message, body_id) = parse_error_body(body);
    let request_id = body_id.or(header_id).map(|id| ("request_id", id));
    phttp::response_error(status, code.as_deref(), message, request_id, secrets, classify)
}

/// (code, message, request id) from an error body.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    match ErrorBody::parse(body) {
        ErrorBody::Empty => (None, None, None),
        ErrorBody::Json(v) => {
            let request_id = json_str(&v, &["request_id", "requestId"]);
            let fields = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
            (json_str(fields, &["error_code", "code"]), json_str(fields, &["error_msg", "message"]), request_id)
        }
        // A proxy's or load balancer's page: keep its text (collapsed) as the message.
        ErrorBody::Markup(text) | ErrorBody::Text(text) => (None, Some(collapse_whitespace(&text)), None),
    }
}

/// The one place a Huawei error becomes an [`ErrorClass`] and a bounded metric label. A known code wins over
/// the HTTP status; unknown codes are decided by the status (429 throttled, 5xx transient, else permanent).
pub(crate) fn classify(code: Option<&str>, status: u16) -> (ErrorClass, &'static str) {
    use super::AuthFailure;
    use ErrorClass::*;
    let known = match code.unwrap_or("") {
        // API Gateway flow control (HTTP 429).
        "APIGW.0308" => Some((Throttled, "throttling")),
        // "KMS error" / "Abnormal KMS I/O": the documented example is KMS.0101 with HTTP 500.
        "KMS.0101" => Some((Transient, "internal")),
        "KMS.0102" => Some((Transient, "io_error")),
        // "Existing CMK alias": documented for CreateKey's key_alias; whether CreateAlias answers it for a
        // duplicate alias is unconfirmed (see create_alias for the fallback).
        "KMS.1104" => Some((AlreadyExists, "already_exists")),
        // "The key does not exist."
        "KMS.0207" => Some((NotFound, "key_not_found")),
        // "Invalid key_id": the event decoder only lets well-formed ids through, so for us this means a key that
        // is not in this project. No alias-not-found code is documented (reference §4.5).
        "KMS.0205" => Some((NotFound, "invalid_key_id")),
        "KMS.0209" => Some((InvalidState, "key_disabled")),
        "KMS.0210" => Some((InvalidState, "key_pending_deletion")),
        // Bad URL, bad JSON, body too long, missing parameter, invalid sequence.
        "KMS.0201" | "KMS.0202" | "KMS.0203" | "KMS.0204" | "KMS.0206" => Some((Permanent, "validation")),
        "KMS.0211" => Some((Permanent, "default_key")),
        // Token null/invalid/expired, invalid project in the token: the target pauses (DESIGN §2.8).
        "KMS.0301" | "KMS.0302" | "KMS.0305" => Some((Unauthenticated(AuthFailure::Invalid), "auth")),
        "KMS.0303" => Some((Unauthenticated(AuthFailure::Expired), "auth")),
        // No permission on the key / the role lacks the API permission: the reconcile policy tells them apart.
        "KMS.0306" | "KMS.0307" => Some((AccessDenied, "access_denied")),
        // Key-count limit: a quota, not a rate.
        "KMS.1105" => Some((Permanent, "limit_exceeded")),
        // API Gateway authentication (0301: bad AK/SK, signature or clock; 0303/0305: other authenticators;
        // 0307: token to be renewed) and authorization (0302/0304/0306: access denied) failures.
        "APIGW.0301" | "APIGW.0303" | "APIGW.0305" => Some((Unauthenticated(AuthFailure::Invalid), "auth")),
        "APIGW.0307" => Some((Unauthenticated(AuthFailure::Expired), "auth")),
        "APIGW.0302" | "APIGW.0304" | "APIGW.0306" => Some((AccessDenied, "auth")),
        _ => None,
    };
    known.unwrap_or_else(|| phttp::status_class(status, code.is_some()))
}

/// The `key_info` of a describe-key response.
pub(crate) fn parse_key_info(v: Value) -> Result<KeyInfo, ProviderError> {
    let info = v.get("key_info").cloned().ok_or_else(|| invalid_response("describe-key: no key_info"))?;
    serde_json::from_value(info).map_err(|e| phttp::shape_error("describe-key", &e))
}

/// A client error that could be Huawei's (undocumented) way of saying "this alias already exists / is not on
/// that key": worth one lookup before giving up.
pub(crate) fn may_hide_duplicate(e: &ProviderError) -> bool {
    e.class == ErrorClass::Permanent && matches!(e.label, "other" | "http_4xx" | "validation")
}

// ---------------------------------------------------------------------------------------------
// Listing

pub(crate) struct ListPage {
    pub(crate) aliases: Vec<AliasEntity>,
    pub(crate) next_marker: Option<String>,
}

#[derive(Deserialize, Clone, PartialEq)]
pub(crate) struct AliasEntity {
    pub(crate) alias: String,
    #[serde(default)]
    pub(crate) key_id: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    aliases: Vec<AliasEntity>,
    #[serde(default)]
    page_info: Option<PageInfo>,
}

#[derive(Deserialize)]
struct PageInfo {
    #[serde(default)]
    next_marker: Option<String>,
}

impl ListPage {
    /// The documented example (and terraform) is one object `{aliases, page_info}`; the SDK's model says a list
    /// of them. Both are accepted; with a list, the last `page_info` wins.
    pub(crate) fn parse(v: Value) -> Result<ListPage, ProviderError> {
        let raws: Vec<RawPage> = match v {
            Value::Array(_) => serde_json::from_value(v),
            _ => serde_json::from_value(v).map(|r| vec![r]),
        }
        .map_err(|e| phttp::shape_error("list aliases", &e))?;
        let mut page = ListPage { aliases: Vec::new(), next_marker: None };
        for r in raws {
            page.aliases.extend(r.aliases);
            if let Some(info) = r.page_info {
                page.next_marker = info.next_marker;
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http::{parse_success, MAX_CODE_CHARS};
    use crate::provider::sign::header;
    use crate::provider::sign::testutil::{
        assert_classification, credentials, serve, serve_full, signed_by, signed_headers, Log, RawRequest, Reply,
    };
    use crate::secret::Secret;

    const AK: &str = "HPUAFAKEACCESSKEY0001";
    const SK: &str = "FakeSecretKey0123456789abcdefghijklmnopq";
    const PID: &str = "0123456789abcdef0123456789abcdef";
    const KEY1: &str = "0d0466b0-e727-4d9c-b35d-f84bb474a37f";
    const KEY2: &str = "bb6a3d22-dc93-47ac-b5bd-88df7ad35f1e";

    fn creds(token: Option<&str>) -> Credentials {
        credentials(AK, SK, token)
    }

    fn kms(endpoint: &str, naming: AliasPrefix) -> HuaweiKms {
        HuaweiKms::new("cn-north-4", Some(endpoint), PID, naming, creds(None), Duration::from_secs(5)).unwrap()
    }

    /// Recomputes the SDK-HMAC-SHA256 signature of a received request with our own signer, as APIG would, and
    /// checks that the headers the SDK signs are signed.
    fn signature_ok(r: &RawRequest) -> bool {
        let signed = signed_headers(r.header("authorization").unwrap_or(""));
        let required = ["content-type", "host", "x-project-id", "x-sdk-date"];
        let sign = |req: &SignableRequest<'_>, signed: &[&str], ak: &str, sk: &str| {
            sdk_hmac::sign(req, signed, header(req.headers, sdk_hmac::DATE_HEADER).unwrap_or(""), ak, sk)
        };
        required.iter().all(|h| signed.contains(h)) && signed_by(r, sign, AK, SK)
    }

    /// Answers like Huawei's API Gateway: a bad signature is APIGW.0301, otherwise `reply`.
    async fn huawei(reply: impl Fn(&RawRequest) -> Reply + Send + Sync + 'static) -> (String, Log) {
        serve(move |r| {
            if !signature_ok(r) {
                let body = json!({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information", "request_id": "q"});
                return (401, body.to_string());
            }
            reply(r)
        })
        .await
    }

    fn path(op: &str) -> String {
        format!("/v1.0/{PID}/kms/{op}")
    }

    // ----- fuzz regressions (fuzz/run.sh) -----

    /// fuzz huawei_response crash-5918d442: a 2xx body whose `page_info` is a string echoing the request's
    /// signature; serde quoted the value into the invalid-response message, unredacted.
    #[test]
    fn fuzz_list_page_error_does_not_echo_response_values() {
        let body = r#"{"error_code":"APIGW.0309","page_info":"The throttling thzeshold has been 5555555%5555555555555555555555555555555555555555555555555511111110:5555555555555555555555555555rea5d672d79c15b13162d9279b0855cfba6ched","rkey_id_id":"r"}"#;
        let e = ListPage::parse(parse_success(body.as_bytes()).unwrap()).err().expect("page_info is not an object");
        assert_eq!((e.class, e.label), (ErrorClass::Transient, "invalid_response"));
        assert!(!e.message.contains("5d672d79c15b13162d9279b0855cfba6"), "{}", e.message);
        assert!(e.message.contains("expected struct PageInfo"), "still says what was wrong: {}", e.message);
        let info = json!({"key_info": {"key_id": "STSTOKEN-as-id", "key_state": ["STSTOKEN"]}});
        let e = parse_key_info(info).unwrap_err();
        assert!(!e.message.contains("STSTOKEN"), "{}", e.message);
    }

    // ----- alias naming -----

    #[test]
    fn naming_keep_is_identity() {
        assert_eq!(to_wire(AliasPrefix::Keep, "alias/app/x"), Some("alias/app/x"));
        assert_eq!(to_canonical(AliasPrefix::Keep, "alias/app/x"), "alias/app/x");
        assert_eq!(to_canonical(AliasPrefix::Keep, "kms-1234"), "kms-1234");
    }

    #[test]
    fn naming_strip_round_trips() {
        for canonical in ["alias/app/x", "alias/app/payments/eu", "alias/a"] {
            let wire = to_wire(AliasPrefix::Strip, canonical).unwrap();
            assert!(!wire.starts_with("alias/"), "{wire}");
            assert_eq!(to_canonical(AliasPrefix::Strip, wire), canonical);
        }
        assert_eq!(to_wire(AliasPrefix::Strip, "alias/app/x"), Some("app/x"));
        assert_eq!(to_canonical(AliasPrefix::Strip, "app/x"), "alias/app/x");
        // A wire name that already carries alias/ maps to alias/alias/…: never under a sane managed prefix.
        assert_eq!(to_canonical(AliasPrefix::Strip, "alias/app/x"), "alias/alias/app/x");
        assert_eq!(to_wire(AliasPrefix::Strip, "app/x"), None);
        assert_eq!(to_wire(AliasPrefix::Strip, "alias/"), None);
        let e = kms("http://h", AliasPrefix::Strip).wire_name("app/x").unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Permanent, "InvalidAliasName"));
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
            ("APIGW.0308", 429, Throttled, "throttling"),
            ("KMS.0101", 500, Transient, "internal"),
            ("KMS.0102", 500, Transient, "io_error"),
            ("KMS.1104", 400, AlreadyExists, "already_exists"),
            ("KMS.0207", 404, NotFound, "key_not_found"),
            ("KMS.0205", 400, NotFound, "invalid_key_id"),
            ("KMS.0209", 400, InvalidState, "key_disabled"),
            ("KMS.0210", 400, InvalidState, "key_pending_deletion"),
            ("KMS.0202", 400, Permanent, "validation"),
            ("KMS.0204", 400, Permanent, "validation"),
            ("KMS.0211", 400, Permanent, "default_key"),
            ("KMS.0301", 401, Unauthenticated(AuthFailure::Invalid), "auth"),
            ("KMS.0302", 401, Unauthenticated(AuthFailure::Invalid), "auth"),
            ("KMS.0303", 401, Unauthenticated(AuthFailure::Expired), "auth"),
            ("KMS.0306", 403, AccessDenied, "access_denied"),
            ("KMS.0307", 403, AccessDenied, "access_denied"),
            ("KMS.1105", 400, Permanent, "limit_exceeded"),
            ("APIGW.0301", 401, Unauthenticated(AuthFailure::Invalid), "auth"),
            ("APIGW.0306", 403, AccessDenied, "auth"),
            // Unknown codes: the status decides.
            ("KMS.9999", 400, Permanent, "other"),
            ("KMS.9999", 503, Transient, "http_5xx"),
            ("APIGW.0999", 429, Throttled, "throttling"),
            // A known permanent code wins over a 5xx status.
            ("KMS.0306", 500, AccessDenied, "access_denied"),
        ];
        assert_classification(classify, cases);
    }

    #[test]
    fn error_body_shapes() {
        let e = err(404, r#"{"error":{"error_code":"KMS.0207","error_msg":"The key does not exist."}}"#);
        assert_eq!(
            (e.class, e.code.as_str(), e.message.as_str()),
            (ErrorClass::NotFound, "KMS.0207", "The key does not exist.")
        );
        let e = err(400, r#"{"error_code":"KMS.0209","error_msg":"disabled"}"#);
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::InvalidState, "KMS.0209"));
        let e = err(
            429,
            r#"{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached","request_id":"abc"}"#,
        );
        assert_eq!(
            (e.class, e.code.as_str(), e.message.as_str()),
            (ErrorClass::Throttled, "APIGW.0308", "The throttling threshold has been reached (request_id abc)")
        );
        let e = err(500, r#"{"error":{"error_code":"KMS.0101","error_msg":"kms error."}}"#);
        assert_eq!((e.class, e.label), (ErrorClass::Transient, "internal"));
        let e = err(502, "<html>bad   gateway</html>");
        assert_eq!(
            (e.class, e.code.as_str(), e.message.as_str()),
            (ErrorClass::Transient, "HTTP502", "<html>bad gateway</html>")
        );
        let e = err(400, "");
        assert_eq!(
            (e.class, e.code.as_str(), e.label, e.message.as_str()),
            (ErrorClass::Permanent, "HTTP400", "http_4xx", "HTTP 400")
        );
        let e = err(400, r#"{"error":"text"}"#);
        assert_eq!((e.code.as_str(), e.label), ("HTTP400", "http_4xx"));
    }

    #[test]
    fn error_code_truncated_and_secrets_scrubbed() {
        let e = err(400, &json!({"error_code": "X".repeat(300)}).to_string());
        assert_eq!((e.code.chars().count(), e.label), (MAX_CODE_CHARS + 1, "other"));
        let body = json!({"error": {"error_code": "APIGW.0301", "error_msg": format!("sk {SK} token TOK9")}});
        let e = parse_error(401, body.to_string().as_bytes(), &[SK, "TOK9"]);
        assert!(!e.message.contains(SK) && !e.message.contains("TOK9"), "{}", e.message);
    }

    #[test]
    fn list_page_shapes() {
        let obj =
            json!({"aliases": [{"alias": "a", "key_id": KEY1}], "page_info": {"next_marker": "m", "current_count": 1}});
        let p = ListPage::parse(obj).unwrap();
        assert_eq!((p.aliases.len(), p.next_marker.as_deref()), (1, Some("m")));
        let arr = json!([{"aliases": [{"alias": "a"}, {"alias": "b"}], "page_info": {"next_marker": ""}}]);
        let p = ListPage::parse(arr).unwrap();
        assert_eq!((p.aliases.len(), p.next_marker.as_deref()), (2, Some("")));
        assert_eq!(ListPage::parse(json!({})).unwrap().aliases.len(), 0);
        assert_eq!(ListPage::parse(json!({"aliases": "x"})).err().map(|e| e.label), Some("invalid_response"));
    }

    // ----- construction and request shape -----

    #[test]
    fn constructor_validates_and_never_leaks() {
        let k =
            HuaweiKms::new("cn-north-4", None, PID, AliasPrefix::Keep, creds(None), Duration::from_secs(1)).unwrap();
        assert_eq!(
            (k.url.as_str(), k.host.as_str()),
            ("https://kms.cn-north-4.myhuaweicloud.com/", "kms.cn-north-4.myhuaweicloud.com")
        );
        let new = |region: &str, ep: Option<&str>, pid: &str| {
            HuaweiKms::new(region, ep, pid, AliasPrefix::Keep, creds(None), Duration::from_secs(1))
        };
        assert!(new("", None, PID).is_err());
        assert!(new("cn-north-4", None, "").is_err());
        assert!(new("cn-north-4", None, "../x").is_err());
        let e = new("cn-north-4", Some("https://u:pw9@x"), PID).unwrap_err();
        assert!(!e.contains("pw9"), "{e}");
        let k = HuaweiKms::new(
            "eu-west-101",
            Some("http://h:81"),
            PID,
            AliasPrefix::Keep,
            creds(Some("TOK9")),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(k.host, "h:81");
        // The SDK's region table: Dublin is served from myhuaweicloud.eu.
        let k = new("eu-west-101", None, PID).unwrap();
        assert_eq!(k.url.as_str(), "https://kms.eu-west-101.myhuaweicloud.eu/");
        assert_eq!(default_endpoint("ap-southeast-1"), "https://kms.ap-southeast-1.myhuaweicloud.com");
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(SK) && !dbg.contains("TOK9"), "{dbg}");
    }

    /// The request the SDK would send: same path, headers and signed headers, and a signature the verifier
    /// (and the vector-tested signer) accepts.
    #[test]
    fn prepared_request_is_the_sdk_shape() {
        let k = kms("http://127.0.0.1:5059", AliasPrefix::Keep);
        let now = DateTime::parse_from_rfc3339("2026-11-23T04:14:11Z").unwrap().with_timezone(&Utc);
        let body = br#"{"alias":"alias/app-one","key_id":"0d0466b0-e727-4d9c-b35d-f84bb474a37f"}"#.to_vec();
        let p = k.prepare(Method::POST, "aliases", &[], body.clone(), now).unwrap();
        assert_eq!(p.url.as_str(), format!("http://127.0.0.1:5059{}", path("aliases")));
        assert!(p.authorization.starts_with(&format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature="
        )));
        let h = |n: &str| p.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(
            (h("content-type"), h("host"), h("x-project-id"), h("x-sdk-date")),
            (Some(JSON), Some("127.0.0.1:5059"), Some(PID), Some("20261123T041411Z"))
        );
        let headers: Vec<(&str, &str)> = p.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let req =
            SignableRequest { method: "POST", path: &path("aliases"), query: &[], headers: &headers, body: &body };
        let resigned = sdk_hmac::sign(&req, &signed_headers(&p.authorization), "20261123T041411Z", AK, SK);
        assert_eq!(resigned.authorization, p.authorization);

        // An endpoint with a base path keeps it; the query is canonical.
        let k = kms("http://gw/kms-proxy/", AliasPrefix::Keep);
        let p = k.prepare(Method::GET, "aliases", &[("marker", "a b"), ("limit", "100")], Vec::new(), now).unwrap();
        assert_eq!(p.url.as_str(), format!("http://gw/kms-proxy{}?limit=100&marker=a%20b", path("aliases")));
        // Temporary credentials: the token is a signed header.
        let k = HuaweiKms::new(
            "cn-north-4",
            Some("http://h"),
            PID,
            AliasPrefix::Keep,
            creds(Some("TOK9")),
            Duration::from_secs(1),
        )
        .unwrap();
        let p = k.prepare(Method::GET, "aliases", &[], Vec::new(), now).unwrap();
        assert!(p.authorization.contains("SignedHeaders=content-type;host;x-project-id;x-sdk-date;x-security-token,"));
        assert!(!p.authorization.contains("TOK9"));
    }

    // ----- against a tiny in-process HTTP server -----

    /// `n` aliases `names(i)` (distinct) → `KEYn`-ish keys, served `limit` at a time. As the emulator answers,
    /// `next_marker` is the page's last alias name and `marker` resumes after it.
    fn marker_reply(r: &RawRequest, n: usize, names: impl Fn(usize) -> String) -> Reply {
        let limit: usize = r.param("limit").unwrap().parse().unwrap();
        let start = r.param("marker").map_or(0, |m| (0..n).position(|i| names(i) == m).expect("a listed name") + 1);
        let end = n.min(start + limit);
        let aliases: Vec<Value> = (start..end)
            .map(|i| json!({"alias": names(i), "key_id": format!("00000000-0000-0000-0000-{i:012}"), "domain_id": "d", "alias_urn": "u"}))
            .collect();
        let next = if end < n { json!(names(end - 1)) } else { json!("") };
        (200, json!({"aliases": aliases, "page_info": {"next_marker": next, "current_count": end - start}}).to_string())
    }

    fn key(i: usize) -> Option<String> {
        Some(format!("00000000-0000-0000-0000-{i:012}"))
    }

    #[tokio::test]
    async fn list_walks_every_marker_page_and_signs() {
        let (url, log) = huawei(|r| {
            assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", path("aliases").as_str()));
            marker_reply(r, 230, |i| if i % 3 == 0 { format!("alias/other/{i}") } else { format!("alias/app/{i}") })
        })
        .await;
        let got = kms(&url, AliasPrefix::Keep).list_aliases(&["alias/app/".into()]).await.unwrap();
        let want: Vec<LiveAlias> = (0..230)
            .filter(|i| i % 3 != 0)
            .map(|i| LiveAlias { name: format!("alias/app/{i}"), key_id: key(i) })
            .collect();
        assert_eq!(got, want);
        let log = log.lock().unwrap();
        let markers: Vec<Option<&str>> = log.iter().map(|r| r.param("marker")).collect();
        assert_eq!(markers, [None, Some("alias/other/99"), Some("alias/app/199")], "every page, and no more");
        for r in log.iter() {
            assert!(signature_ok(r), "signature recomputed from the received request");
            assert_eq!(r.param("limit"), Some("100"));
            assert_eq!(r.header("x-project-id"), Some(PID));
            assert_eq!(r.header("content-type"), Some(JSON));
            assert!(r.body.is_empty());
        }
    }

    #[tokio::test]
    async fn list_strip_returns_canonical_names_filtered_after_mapping() {
        let wire = ["app/one", "other/two", "alias/app/three", "app/four", "kms-1234"];
        let (url, log) = huawei(move |r| marker_reply(r, wire.len(), |i| wire[i].to_string())).await;
        let got = kms(&url, AliasPrefix::Strip).list_aliases(&["alias/app/".into()]).await.unwrap();
        let names: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
        // `alias/app/three` on the wire is `alias/alias/app/three` canonically: not ours.
        assert_eq!(names, ["alias/app/one", "alias/app/four"]);
        assert_eq!(got[1].key_id, key(3));
        assert_eq!(log.lock().unwrap().len(), 1, "a short page is the last");

        // The same listing under keep: only names that literally carry the prefix.
        let (url, _) = huawei(move |r| marker_reply(r, wire.len(), |i| wire[i].to_string())).await;
        let got = kms(&url, AliasPrefix::Keep).list_aliases(&["alias/app/".into()]).await.unwrap();
        assert_eq!(got, [LiveAlias { name: "alias/app/three".into(), key_id: key(2) }]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_page_is_asked_again_from_its_marker() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (url, log) = huawei(move |r| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                return (500, json!({"error_code": "KMS.0101", "error_msg": "busy"}).to_string());
            }
            marker_reply(r, 450, |i| format!("alias/app/{i}"))
        })
        .await;
        assert_eq!(kms(&url, AliasPrefix::Keep).list_aliases(&["alias/app/".into()]).await.unwrap().len(), 450);
        let log = log.lock().unwrap();
        let markers: Vec<Option<&str>> = log.iter().map(|r| r.param("marker")).collect();
        let m = |i: usize| Some(format!("alias/app/{i}"));
        let markers: Vec<Option<String>> = markers.into_iter().map(|m| m.map(str::to_string)).collect();
        assert_eq!(markers, [None, m(99), m(199), m(199), m(299), m(399)]);
    }

    #[tokio::test]
    async fn list_refuses_repeated_markers() {
        let (url, log) = huawei(|_| {
            let aliases: Vec<Value> =
                (0..100).map(|i| json!({"alias": format!("alias/app/{i}"), "key_id": KEY1})).collect();
            (200, json!({"aliases": aliases, "page_info": {"next_marker": "same"}}).to_string())
        })
        .await;
        let e = kms(&url, AliasPrefix::Keep).list_aliases(&["alias/".into()]).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Transient, "InvalidResponse"));
        assert_eq!(log.lock().unwrap().len(), 2, "stops at the first repeated marker");
    }

    #[tokio::test]
    async fn get_alias_looks_up_by_listing() {
        let (url, log) = huawei(|r| marker_reply(r, 250, |i| format!("app/{i}"))).await;
        let k = kms(&url, AliasPrefix::Strip);
        assert_eq!(k.get_alias("alias/app/150").await.unwrap(), key(150));
        assert_eq!(log.lock().unwrap().len(), 2, "stops at the page that has it");
        assert_eq!(k.get_alias("alias/app/none").await.unwrap(), None);
        assert_eq!(log.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn delete_with_current_key_is_one_request() {
        let (url, log) = huawei(|_| (204, String::new())).await;
        kms(&url, AliasPrefix::Strip).delete_alias("alias/app/one", Some(KEY1)).await.unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].method.as_str(), log[0].path.as_str()), ("DELETE", path("aliases").as_str()));
        assert_eq!(log[0].json(), json!({"aliases": ["app/one"], "key_id": KEY1}));
        assert_eq!(log[0].header("content-type"), Some(JSON));
        assert!(signature_ok(&log[0]), "the DELETE body is signed");
    }

    #[tokio::test]
    async fn delete_without_current_key_looks_it_up() {
        let (url, log) = huawei(|r| match r.method.as_str() {
            "GET" => marker_reply(r, 3, |i| format!("alias/app/{i}")),
            _ => (204, String::new()),
        })
        .await;
        let k = kms(&url, AliasPrefix::Keep);
        k.delete_alias("alias/app/2", None).await.unwrap();
        {
            let log = log.lock().unwrap();
            let methods: Vec<&str> = log.iter().map(|r| r.method.as_str()).collect();
            assert_eq!(methods, ["GET", "DELETE"]);
            assert_eq!(log[1].json(), json!({"aliases": ["alias/app/2"], "key_id": key(2)}));
        }
        // Absent: NotFound (the engine's "already deleted"), and no DELETE is sent.
        let e = k.delete_alias("alias/app/9", None).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::NotFound, "AliasNotFound", "alias_not_found"));
        assert_eq!(log.lock().unwrap().iter().filter(|r| r.method == "DELETE").count(), 1);
    }

    #[tokio::test]
    async fn delete_with_stale_key_retries_with_the_live_one() {
        let (url, log) = huawei(|r| match (r.method.as_str(), r.json()["key_id"].as_str()) {
            ("GET", _) => marker_reply(r, 3, |i| format!("alias/app/{i}")),
            ("DELETE", Some(KEY2)) => {
                (400, json!({"error": {"error_code": "KMS.0299", "error_msg": "alias not on key"}}).to_string())
            }
            _ => (204, String::new()),
        })
        .await;
        kms(&url, AliasPrefix::Keep).delete_alias("alias/app/1", Some(KEY2)).await.unwrap();
        let log = log.lock().unwrap();
        let sent: Vec<(&str, Value)> = log.iter().map(|r| (r.method.as_str(), r.json()["key_id"].clone())).collect();
        assert_eq!(sent, [("DELETE", json!(KEY2)), ("GET", Value::Null), ("DELETE", json!(key(1)))]);
    }

    /// A KMS.0207 to the DELETE after the lookup found the alias is no "already gone": the alias was listed a moment
    /// ago. (Before the fix both paths reported NotFound, which the engine takes for a finished delete.)
    #[tokio::test]
    async fn delete_not_found_after_a_positive_lookup_is_not_already_gone() {
        let (url, log) = huawei(|r| match r.method.as_str() {
            "GET" => marker_reply(r, 3, |i| format!("alias/app/{i}")),
            _ => (
                404,
                json!({"error": {"error_code": "KMS.0207", "error_msg": "The alias does not exist."}}).to_string(),
            ),
        })
        .await;
        let k = kms(&url, AliasPrefix::Keep);
        // No current key: looked up, found on key(1), DELETE says not found.
        let e = k.delete_alias("alias/app/1", None).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::InvalidState, "KMS.0207", "delete_not_applied"));
        assert!(e.message.contains("not deleted"), "{}", e.message);
        // The right current key: DELETE not found, lookup finds it on that very key.
        let e = k.delete_alias("alias/app/1", key(1).as_deref()).await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::InvalidState, "delete_not_applied"));
        // A stale key: retried with the listed one, which also answers not found.
        let e = k.delete_alias("alias/app/1", Some(KEY2)).await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::InvalidState, "delete_not_applied"));
        // Truly absent (the lookup finds nothing): NotFound, the engine's "already deleted".
        let e = k.delete_alias("alias/app/9", Some(KEY2)).await.unwrap_err();
        assert_eq!((e.class, e.label), (ErrorClass::NotFound, "alias_not_found"));
        let methods: Vec<String> = log.lock().unwrap().iter().map(|r| r.method.clone()).collect();
        assert_eq!(methods, ["GET", "DELETE", "DELETE", "GET", "DELETE", "GET", "DELETE", "DELETE", "GET"]);
    }

    /// KMS error bodies carry no request id; the `X-Request-Id` header does, and it reaches the message.
    #[tokio::test]
    async fn request_id_header_is_in_error_messages() {
        let (url, _) = serve_full(|_| {
            let body = json!({"error": {"error_code": "KMS.0209", "error_msg": "The key is disabled."}});
            (400, vec![("Content-Type", JSON), ("X-Request-Id", "0f1e2d3c4b5a")], body.to_string())
        })
        .await;
        let e = kms(&url, AliasPrefix::Keep).update_alias("alias/app/x", KEY1).await.unwrap_err();
        assert_eq!(e.message, "The key is disabled. (request_id 0f1e2d3c4b5a)");
        // The body's own id (APIG errors) wins over the header.
        let e =
            parse_error_with_id(429, Some("hdr".into()), br#"{"error_code":"APIGW.0308","request_id":"body"}"#, &[]);
        assert!(e.message.ends_with("(request_id body)"), "{}", e.message);
    }

    /// KMS.1105 on an alias write is the 50-aliases-per-key quota: permanent and named, no duplicate lookup.
    #[tokio::test]
    async fn alias_quota_is_permanent_and_named() {
        let (url, log) = huawei(|_| {
            (
                400,
                json!({"error": {"error_code": "KMS.1105", "error_msg": "The number exceeds the limit."}}).to_string(),
            )
        })
        .await;
        let k = kms(&url, AliasPrefix::Keep);
        for e in [
            k.create_alias("alias/app/a", KEY1).await.unwrap_err(),
            k.update_alias("alias/app/a", KEY1).await.unwrap_err(),
        ] {
            assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Permanent, "KMS.1105", "alias_quota"));
            assert!(e.message.contains("50 per key"), "{}", e.message);
        }
        assert_eq!(log.lock().unwrap().len(), 2, "a quota answer is not a hidden duplicate: no lookup");
    }

    #[tokio::test]
    async fn create_and_update_bodies_and_paths() {
        let (url, log) = huawei(|r| match r.path.rsplit_once("/kms/").unwrap().1 {
            "aliases" => {
                (201, json!({"domain_id": "d", "key_id": KEY1, "alias": "app/one", "alias_urn": "u"}).to_string())
            }
            "alias/associate" => (200, json!({"key_id": KEY2, "alias": "app/one"}).to_string()),
            _ => (404, String::new()),
        })
        .await;
        let k = kms(&url, AliasPrefix::Strip);
        k.create_alias("alias/app/one", KEY1).await.unwrap();
        k.update_alias("alias/app/one", KEY2).await.unwrap();
        let log = log.lock().unwrap();
        assert_eq!((log[0].method.as_str(), log[0].path.as_str()), ("POST", path("aliases").as_str()));
        assert_eq!(log[0].json(), json!({"key_id": KEY1, "alias": "app/one"}));
        assert_eq!((log[1].method.as_str(), log[1].path.as_str()), ("POST", path("alias/associate").as_str()));
        assert_eq!(log[1].json(), json!({"alias": "app/one", "target_key_id": KEY2}));
        assert!(log.iter().all(signature_ok));
    }

    #[tokio::test]
    async fn create_on_existing_alias_is_already_exists() {
        let (url, log) = huawei(|r| match (r.method.as_str(), r.json()["alias"].as_str()) {
            ("GET", _) => marker_reply(r, 2, |i| format!("alias/app/{i}")),
            // A documented duplicate code …
            ("POST", Some("alias/app/0")) => {
                (400, json!({"error": {"error_code": "KMS.1104", "error_msg": "Existing CMK alias."}}).to_string())
            }
            // … an undocumented one, and a real failure.
            ("POST", Some("alias/app/1")) => {
                (400, json!({"error": {"error_code": "KMS.2999", "error_msg": "alias exists"}}).to_string())
            }
            _ => (400, json!({"error": {"error_code": "KMS.2999", "error_msg": "nope"}}).to_string()),
        })
        .await;
        let k = kms(&url, AliasPrefix::Keep);
        let e = k.create_alias("alias/app/0", KEY1).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::AlreadyExists, "KMS.1104", "already_exists"));
        assert_eq!(log.lock().unwrap().len(), 1, "a known code needs no lookup");
        let e = k.create_alias("alias/app/1", KEY1).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::AlreadyExists, "KMS.2999", "already_exists"));
        let e = k.create_alias("alias/app/7", KEY1).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str(), e.label), (ErrorClass::Permanent, "KMS.2999", "other"));
    }

    #[tokio::test]
    async fn describe_key_and_throttling() {
        let (url, log) = huawei(|r| match r.json()["key_id"].as_str() {
            Some(KEY1) => (200, json!({"key_info": {"key_id": KEY1, "key_state": "2", "domain_id": "d"}}).to_string()),
            Some("4c1ab0a2-0000-4000-8000-000000000004") => (
                200,
                json!({"key_info": {"key_id": "4c1ab0a2-0000-4000-8000-000000000004", "key_state": "4",
                    "key_spec": "RSA_2048", "key_usage": "SIGN_VERIFY"}})
                .to_string(),
            ),
            Some("4c1ab0a2-0000-4000-8000-000000000000") => {
                (400, json!({"error": {"error_code": "KMS.0207", "error_msg": "The key does not exist."}}).to_string())
            }
            _ => (
                429,
                json!({"error_code": "APIGW.0308", "error_msg": "The throttling threshold has been reached"})
                    .to_string(),
            ),
        })
        .await;
        let k = kms(&url, AliasPrefix::Keep);
        let info = k.key_info(KEY1).await.unwrap();
        assert_eq!(info, KeyInfo { key_id: KEY1.into(), key_state: Some("2".into()), key_spec: None, key_usage: None });
        assert_eq!(info.facts().state, KeyState::Enabled);
        let e = k.key_info(KEY2).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (ErrorClass::Throttled, "APIGW.0308"));
        let e = k.describe_key(KEY2).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Throttled, "throttling is an error to retry, never \"no such key\"");
        let pending = k.describe_key("4c1ab0a2-0000-4000-8000-000000000004").await.unwrap().unwrap();
        assert_eq!(
            (pending.state, pending.spec.as_str(), pending.usage.as_str()),
            (KeyState::PendingDeletion, "RSA_2048", "SIGN_VERIFY")
        );
        assert_eq!(k.describe_key("4c1ab0a2-0000-4000-8000-000000000000").await.unwrap(), None);
        let state = |s: &str| {
            KeyInfo { key_id: KEY1.into(), key_state: Some(s.into()), key_spec: None, key_usage: None }.facts().state
        };
        assert_eq!(
            ["1", "2", "3", "4", "5"].map(state),
            [
                KeyState::Other("1 (pending activation)".into()),
                KeyState::Enabled,
                KeyState::Disabled,
                KeyState::PendingDeletion,
                KeyState::PendingImport
            ]
        );
        let log = log.lock().unwrap();
        assert_eq!((log[0].method.as_str(), log[0].path.as_str()), ("POST", path("describe-key").as_str()));
    }

    /// The verifying test server is not a rubber stamp: a wrong secret fails the recomputed signature.
    #[tokio::test]
    async fn wrong_secret_fails_the_servers_signature_check() {
        let (url, _) = huawei(|_| (204, String::new())).await;
        let bad = Credentials { secret_access_key: Secret::new("not-the-secret"), ..creds(None) };
        let k = HuaweiKms::new("cn-north-4", Some(&url), PID, AliasPrefix::Keep, bad, Duration::from_secs(5)).unwrap();
        let e = k.delete_alias("alias/app/x", Some(KEY1)).await.unwrap_err();
        assert_eq!(
            (e.class, e.code.as_str(), e.label),
            (ErrorClass::Unauthenticated(crate::provider::AuthFailure::Invalid), "APIGW.0301", "auth")
        );
        kms(&url, AliasPrefix::Keep).delete_alias("alias/app/x", Some(KEY1)).await.unwrap();
    }

    #[tokio::test]
    async fn bad_signature_is_permanent_and_scrubbed() {
        // A server that knows another secret: every signature fails, and the error echoes request parts.
        let (url, _) = serve(|_| {
            let msg = format!("string to sign mismatch; sk {SK}; token TOK9");
            (401, json!({"error_code": "APIGW.0301", "error_msg": msg, "request_id": "q"}).to_string())
        })
        .await;
        let k = HuaweiKms::new(
            "cn-north-4",
            Some(&url),
            PID,
            AliasPrefix::Keep,
            creds(Some("TOK9")),
            Duration::from_secs(5),
        )
        .unwrap();
        let e = k.get_alias("alias/app/x").await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(SK) && !shown.contains("TOK9"), "{shown}");
        assert_eq!((e.class, e.label), (ErrorClass::Unauthenticated(crate::provider::AuthFailure::Invalid), "auth"));
    }
}
