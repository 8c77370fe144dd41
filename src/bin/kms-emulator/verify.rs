//! Signature verification for the three clouds. The emulator never implements a signing scheme
//! itself: it recomputes each signature with the library's own signers (`aliassync::provider::aws::
//! sign_v4`, `aliassync::provider::sign::{acs3, rpc_v1, sdk_hmac}`), so a request the SDKs sign and
//! the emulator accepts proves the daemon's signers right too. Policy (which headers must be signed,
//! the clock window, the credential scope) is checked here.

use std::time::{Duration, SystemTime};

use aliassync::provider::aws::{sign_v4, SignableParts};
use aliassync::provider::sign::{acs3, constant_time_eq, rpc_v1, sdk_hmac, SignableRequest};
use aliassync::secret::{Credentials as LibCredentials, Secret};
use chrono::{DateTime, NaiveDateTime, Utc};

use crate::app::App;
use crate::wire::{Cloud, RawRequest};

/// Why a request was not authenticated; each wire module maps it to its cloud's error.
#[derive(Debug)]
pub enum AuthFailure {
    /// No signature at all (or an unsupported scheme, e.g. a Huawei X-Auth-Token).
    Missing(String),
    /// A signature whose shape is wrong: missing fields, unsigned mandatory headers, bad dates.
    Incomplete(String),
    UnknownKey(String),
    Mismatch,
    /// The signing time is outside the allowed window.
    Expired(String),
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=AK/date/region/service/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub struct AwsAuth {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

pub fn parse_aws_authorization(value: &str) -> Option<AwsAuth> {
    let rest = value.trim().strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => {}
        }
    }
    let mut scope = cred?.split('/');
    let auth = AwsAuth {
        access_key_id: scope.next()?.to_string(),
        date: scope.next()?.to_string(),
        region: scope.next()?.to_string(),
        service: scope.next()?.to_string(),
        signed_headers: signed?.split(';').map(|s| s.trim().to_ascii_lowercase()).collect(),
        signature: sig?.to_string(),
    };
    (scope.next() == Some("aws4_request") && !auth.access_key_id.is_empty()).then_some(auth)
}

/// The signers' view of a received request (query decoded as the SDKs encode it).
fn with_signable<R>(req: &RawRequest, f: impl FnOnce(&SignableRequest) -> R) -> R {
    let query = crate::wire::decode_query(&req.raw_query);
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let headers = req.header_pairs();
    f(&SignableRequest {
        method: req.method.as_str(),
        path: &req.path,
        query: &query,
        headers: &headers,
        body: &req.body,
    })
}

fn check_skew(app: &App, t: DateTime<Utc>, shown: &str) -> Result<(), AuthFailure> {
    let Some(max) = app.options.max_clock_skew else { return Ok(()) };
    let skew = (Utc::now() - t).num_seconds().unsigned_abs();
    if skew > max.as_secs() {
        return Err(AuthFailure::Expired(format!(
            "Signature expired: {shown} is outside the allowed window of {} s around the server time",
            max.as_secs()
        )));
    }
    Ok(())
}

fn parse_compact_date(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok().map(|t| t.and_utc())
}

fn parse_iso_date(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").ok().map(|t| t.and_utc())
}

/// SigV4 with service `kms`; the region of the scope is where the call lands.
pub fn aws(app: &App, req: &RawRequest) -> Result<(), AuthFailure> {
    let Some(value) = req.header("authorization") else {
        return Err(AuthFailure::Missing("Missing Authentication Token".into()));
    };
    let auth = parse_aws_authorization(value).ok_or_else(|| {
        AuthFailure::Incomplete(format!(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters: {}",
            value.split(' ').next().unwrap_or("")
        ))
    })?;
    if auth.service != "kms" {
        return Err(AuthFailure::Incomplete(format!(
            "Credential should be scoped to correct service: 'kms'. (got '{}')",
            auth.service
        )));
    }
    let cred = app
        .credentials
        .get(Cloud::Aws, &auth.access_key_id)
        .ok_or_else(|| AuthFailure::UnknownKey(auth.access_key_id.clone()))?;
    let amz_date = req.header("x-amz-date").unwrap_or("");
    let t = parse_compact_date(amz_date)
        .ok_or_else(|| AuthFailure::Incomplete("X-Amz-Date is missing or not in YYYYMMDDTHHMMSSZ form".into()))?;
    if !amz_date.starts_with(&auth.date) {
        return Err(AuthFailure::Incomplete("Credential date does not match X-Amz-Date".into()));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(AuthFailure::Incomplete(format!("'{required}' must be a signed header")));
        }
    }
    check_skew(app, t, amz_date)?;

    // sign_v4 signs host, x-amz-date and (with a session token) x-amz-security-token by itself:
    // hand it every other header the client listed.
    let headers: Vec<(&str, &str)> = auth
        .signed_headers
        .iter()
        .filter(|h| !matches!(h.as_str(), "host" | "x-amz-date" | "x-amz-security-token"))
        .map(|h| (h.as_str(), req.header(h).unwrap_or("")))
        .collect();
    let uri = match req.raw_query.is_empty() {
        true => format!("http://{}{}", req.header("host").unwrap_or(""), req.path),
        false => format!("http://{}{}?{}", req.header("host").unwrap_or(""), req.path, req.raw_query),
    };
    let session_token = if auth.signed_headers.iter().any(|h| h == "x-amz-security-token") {
        req.header("x-amz-security-token").map(Secret::new)
    } else {
        None
    };
    let creds = LibCredentials {
        access_key_id: auth.access_key_id.clone(),
        secret_access_key: Secret::new(cred.secret.clone()),
        session_token,
    };
    let parts = SignableParts { method: req.method.as_str(), uri: &uri, headers: &headers, body: &req.body };
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    let expected = sign_v4(&parts, &auth.region, "kms", when, &creds).map_err(AuthFailure::Incomplete)?;
    if constant_time_eq(expected.signature.as_bytes(), auth.signature.to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(AuthFailure::Mismatch)
    }
}

/// Alibaba: ACS3-HMAC-SHA256 in `Authorization`, or RPC v1 (`Signature` parameter). `params` are the
/// decoded query and form parameters.
pub fn alibaba(app: &App, req: &RawRequest, params: &[(String, String)]) -> Result<(), AuthFailure> {
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some(value) = req.header("authorization") {
        let auth = acs3::parse_authorization(value).ok_or_else(|| {
            AuthFailure::Incomplete("The request signature does not conform to Aliyun standards.".into())
        })?;
        let cred = app
            .credentials
            .get(Cloud::Alibaba, &auth.access_key_id)
            .ok_or_else(|| AuthFailure::UnknownKey(auth.access_key_id.clone()))?;
        // V3 requires every x-acs-* header and host to be signed.
        for required in
            ["host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"]
        {
            if !auth.signed_headers.iter().any(|h| h.eq_ignore_ascii_case(required)) {
                return Err(AuthFailure::Incomplete(format!("The header {required} must be signed.")));
            }
        }
        let date = req.header("x-acs-date").unwrap_or("");
        let t = parse_iso_date(date)
            .ok_or_else(|| AuthFailure::Incomplete("x-acs-date is not in yyyy-MM-ddTHH:mm:ssZ form".into()))?;
        check_skew(app, t, date)?;
        let ok = with_signable(req, |signable| acs3::verify(signable, &auth, &cred.secret));
        return if ok { Ok(()) } else { Err(AuthFailure::Mismatch) };
    }
    let Some(_) = param(rpc_v1::SIGNATURE_PARAM) else {
        return Err(AuthFailure::Missing("The request signature does not conform to Aliyun standards.".into()));
    };
    let ak = param("AccessKeyId")
        .ok_or_else(|| AuthFailure::Incomplete("AccessKeyId is mandatory for this action.".into()))?;
    let cred = app.credentials.get(Cloud::Alibaba, ak).ok_or_else(|| AuthFailure::UnknownKey(ak.to_string()))?;
    if param("SignatureMethod") != Some(rpc_v1::SIGNATURE_METHOD)
        || param("SignatureVersion") != Some(rpc_v1::SIGNATURE_VERSION)
    {
        return Err(AuthFailure::Incomplete("Specified signature method or version is not supported.".into()));
    }
    let ts = param("Timestamp").unwrap_or("");
    let t = parse_iso_date(ts)
        .ok_or_else(|| AuthFailure::Incomplete("Timestamp is mandatory and must be yyyy-MM-ddTHH:mm:ssZ.".into()))?;
    check_skew(app, t, ts)?;
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if rpc_v1::verify(req.method.as_str(), &pairs, &cred.secret) {
        Ok(())
    } else {
        Err(AuthFailure::Mismatch)
    }
}

/// Huawei APIG AK/SK (`SDK-HMAC-SHA256`). IAM tokens (`X-Auth-Token`) are not emulated.
pub fn huawei(app: &App, req: &RawRequest) -> Result<(), AuthFailure> {
    let Some(value) = req.header("authorization") else {
        let why = if req.header("x-auth-token").is_some() {
            "X-Auth-Token is not supported by the emulator; sign with AK/SK"
        } else {
            "Authorization header is missing"
        };
        return Err(AuthFailure::Missing(why.into()));
    };
    let auth = sdk_hmac::parse_authorization(value)
        .ok_or_else(|| AuthFailure::Incomplete("Authorization header is not SDK-HMAC-SHA256".into()))?;
    let cred = app
        .credentials
        .get(Cloud::Huawei, &auth.access_key_id)
        .ok_or_else(|| AuthFailure::UnknownKey(auth.access_key_id.clone()))?;
    let date = req.header(sdk_hmac::DATE_HEADER).unwrap_or("");
    let t =
        parse_compact_date(date).ok_or_else(|| AuthFailure::Incomplete("X-Sdk-Date is missing or malformed".into()))?;
    if !auth.signed_headers.iter().any(|h| h.eq_ignore_ascii_case("host")) {
        return Err(AuthFailure::Incomplete("host must be a signed header".into()));
    }
    check_skew(app, t, date)?;
    if with_signable(req, |signable| sdk_hmac::verify(signable, &auth, &cred.secret)) {
        Ok(())
    } else {
        Err(AuthFailure::Mismatch)
    }
}
