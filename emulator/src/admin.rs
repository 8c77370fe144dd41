//! The test-facing admin API under `/_emulator/` (JSON, no authentication: the emulator binds
//! 127.0.0.1 only). Documented in tests/sdk/README.md.
//!
//!   GET    /_emulator/health                      {"ok": true}
//!   GET    /_emulator/credentials                 access keys and their accounts (no secrets)
//!   GET    /_emulator/state[?cloud=&account=&region=]   keys and aliases
//!   POST   /_emulator/keys                        create a key, or set an existing key's state
//!   POST   /_emulator/aliases                     set (or, with key_id null, remove) an alias directly
//!   POST   /_emulator/bulk                        seed many aliases (and their keys) in one call, for load tests
//!   GET    /_emulator/alias?cloud=&account=&region=&alias=   one alias: key and last change time
//!   GET    /_emulator/calls[?cloud=]              call counters;  DELETE resets them
//!   GET    /_emulator/faults                      fault rules;    POST adds/replaces one; DELETE removes
//!   POST   /_emulator/reset                       state, fault rules and counters back to empty

use axum::http::Method;
use axum::response::Response;
use chrono::Utc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::config::derive_account;
use crate::faults::FaultRule;
use crate::state::{Key, KeyState, ScopeKey};
use crate::wire::{decode_query, random_alnum, respond, uuid4, Cloud, RawRequest};

fn reply(status: u16, v: Value) -> Response {
    respond(status, "application/json", v.to_string().into_bytes(), &[])
}

fn bad(msg: impl Into<String>) -> Response {
    reply(400, json!({ "error": msg.into() }))
}

pub fn handle(app: &App, req: &RawRequest) -> Response {
    let q = decode_query(&req.raw_query);
    let query = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let cloud_q = match query("cloud").map(|c| Cloud::parse(c).ok_or(c)) {
        Some(Err(c)) => return bad(format!("unknown cloud {c:?} (aws, alibaba, huawei)")),
        Some(Ok(c)) => Some(c),
        None => None,
    };
    let body =
        || -> Result<Value, String> { serde_json::from_slice(&req.body).map_err(|e| format!("body is not JSON: {e}")) };
    let path = req.path.trim_end_matches('/');
    match (&req.method, path) {
        (&Method::GET, "/_emulator/health") => reply(200, json!({ "ok": true })),
        (&Method::GET, "/_emulator/credentials") => {
            let list: Vec<Value> = app.credentials.list().map(|c| json!(c)).collect();
            reply(200, json!({ "credentials": list }))
        }
        (&Method::GET, "/_emulator/state") => {
            reply(200, app.store.snapshot(cloud_q, query("account"), query("region")))
        }
        (&Method::GET, "/_emulator/calls") => reply(200, app.counters.snapshot(cloud_q)),
        (&Method::DELETE, "/_emulator/calls") => {
            app.counters.reset();
            reply(200, json!({ "ok": true }))
        }
        (&Method::GET, "/_emulator/faults") => reply(200, json!({ "rules": app.faults.list() })),
        (&Method::POST, "/_emulator/faults") => match body() {
            Err(e) => bad(e),
            Ok(v) => match serde_json::from_value::<FaultRule>(v) {
                Err(e) => bad(format!("invalid fault rule: {e}")),
                Ok(rule) => match rule.validate() {
                    Err(e) => bad(e),
                    Ok(()) => {
                        tracing::info!(?rule, "fault rule set");
                        app.faults.set(rule);
                        reply(200, json!({ "ok": true, "rules": app.faults.list() }))
                    }
                },
            },
        },
        (&Method::DELETE, "/_emulator/faults") => {
            let removed = app.faults.clear(cloud_q, query("region"), query("account"));
            reply(200, json!({ "ok": true, "removed": removed }))
        }
        (&Method::POST, "/_emulator/reset") => {
            app.store.reset();
            app.faults.clear(None, None, None);
            app.counters.reset();
            tracing::info!("reset");
            reply(200, json!({ "ok": true }))
        }
        (&Method::POST, "/_emulator/keys") => body().and_then(|v| put_key(app, &v)).unwrap_or_else(bad),
        (&Method::POST, "/_emulator/aliases") => body().and_then(|v| put_alias(app, &v)).unwrap_or_else(bad),
        (&Method::POST, "/_emulator/bulk") => body().and_then(|v| bulk(app, &v)).unwrap_or_else(bad),
        (&Method::GET, "/_emulator/alias") => {
            // The query names the scope as a body would (cloud, account/project/access_key_id, region).
            let v = Value::Object(q.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
            get_alias(app, &v).unwrap_or_else(bad)
        }
        _ => reply(404, json!({ "error": format!("no admin endpoint {} {}", req.method, req.path) })),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The scope a body names: `cloud`, then `account` (Huawei: `project` or `account`) or an
/// `access_key_id` whose account is used, and `region` (default: the cloud's default region).
fn scope_of(app: &App, v: &Value) -> Result<ScopeKey, String> {
    let cloud = field(v, "cloud").and_then(Cloud::parse).ok_or("\"cloud\" must be aws, alibaba or huawei")?;
    let account = match (field(v, "account").or(field(v, "project")), field(v, "access_key_id")) {
        (Some(a), _) => a.to_string(),
        (None, Some(ak)) if cloud != Cloud::Huawei => app.credentials.account_for(cloud, ak),
        _ => {
            return Err(match cloud {
                Cloud::Huawei => "give \"project\" (the project id of the request path)".into(),
                _ => "give \"account\" or \"access_key_id\"".into(),
            })
        }
    };
    let region = match field(v, "region") {
        Some(r) => r.to_string(),
        None => match cloud {
            Cloud::Aws => "us-east-1".into(),
            Cloud::Alibaba => app.options.alibaba_region.clone(),
            Cloud::Huawei => app.options.huawei_region.clone(),
        },
    };
    Ok(ScopeKey { cloud, account, region })
}

/// Huawei keys and aliases record the creator's domain: `domain_id`, else the domain of
/// `access_key_id`, else one derived from the project.
fn owner_of(app: &App, scope: &ScopeKey, v: &Value) -> String {
    match scope.cloud {
        Cloud::Huawei => field(v, "domain_id").map(str::to_string).unwrap_or_else(|| match field(v, "access_key_id") {
            Some(ak) => app.credentials.account_for(Cloud::Huawei, ak),
            None => derive_account(Cloud::Huawei, &scope.account),
        }),
        _ => scope.account.clone(),
    }
}

fn parse_state(s: &str) -> Option<KeyState> {
    match s {
        "Enabled" | "2" => Some(KeyState::Enabled),
        "Disabled" | "3" => Some(KeyState::Disabled),
        "PendingDeletion" | "4" => Some(KeyState::PendingDeletion),
        _ => None,
    }
}

fn arn(scope: &ScopeKey, id: &str) -> Value {
    match scope.cloud {
        Cloud::Aws => json!(format!("arn:aws:kms:{}:{}:key/{id}", scope.region, scope.account)),
        Cloud::Alibaba => json!(format!("acs:kms:{}:{}:key/{id}", scope.region, scope.account)),
        Cloud::Huawei => Value::Null,
    }
}

/// Creates a key (id generated in the cloud's format unless `key_id` is given) or, when `key_id`
/// exists, sets its `state` / `description`. Lets tests set up keys without signing CreateKey.
fn put_key(app: &App, v: &Value) -> Result<Response, String> {
    let scope = scope_of(app, v)?;
    let state = match field(v, "state") {
        Some(s) => Some(parse_state(s).ok_or("\"state\" must be Enabled, Disabled or PendingDeletion")?),
        None => None,
    };
    let multi = v.get("multi_region").and_then(Value::as_bool).unwrap_or(false);
    let id = match field(v, "key_id") {
        Some(id) => id.to_string(),
        None => match scope.cloud {
            Cloud::Aws if multi => format!("mrk-{}", uuid4().replace('-', "")),
            Cloud::Alibaba => format!("key-{}", random_alnum(21)),
            _ => uuid4(),
        },
    };
    let owner = owner_of(app, &scope, v);
    let (created, state_now) = app.store.with(&scope, |s| {
        let created = !s.keys.contains_key(&id);
        let key = s.keys.entry(id.clone()).or_insert_with(|| {
            let mut k = Key::new(id.clone(), owner.clone());
            k.multi_region = multi;
            k.legacy_alias = Some(format!("emulator-{}", random_alnum(8)));
            k
        });
        if let Some(d) = field(v, "description") {
            key.description = d.to_string();
        }
        if let Some(st) = state {
            key.state = st;
            let pending = st == KeyState::PendingDeletion;
            key.deletion_date = pending.then(|| Utc::now() + chrono::Duration::days(30));
            key.pending_days = pending.then_some(30);
        }
        (created, key.state)
    });
    tracing::info!(cloud = scope.cloud.as_str(), account = %scope.account, region = %scope.region, key = %id, created, "admin key");
    Ok(reply(
        200,
        json!({
            "cloud": scope.cloud.as_str(),
            "account": scope.account,
            "region": scope.region,
            "key_id": id,
            "arn": arn(&scope, &id),
            "state": state_now.as_str(),
            "created": created,
        }),
    ))
}

/// Sets an alias with no validation at all (so tests can seed states the API refuses, e.g. an
/// alias pointing at a missing key); `"key_id": null` removes it.
fn put_alias(app: &App, v: &Value) -> Result<Response, String> {
    let scope = scope_of(app, v)?;
    let name = field(v, "alias").ok_or("\"alias\" is required")?.to_string();
    let key_id = match v.get("key_id") {
        Some(Value::String(k)) if !k.is_empty() => Some(k.clone()),
        Some(Value::Null) => None,
        _ => return Err("\"key_id\" must be a key id, or null to remove the alias".into()),
    };
    let owner = owner_of(app, &scope, v);
    let existed = app.store.with(&scope, |s| {
        let existed = s.aliases.contains_key(&name);
        match key_id {
            Some(k) => {
                s.put_alias(&name, Some(k), &owner);
            }
            None => {
                s.remove_alias(&name);
            }
        }
        existed
    });
    Ok(reply(200, json!({ "ok": true, "existed": existed })))
}

/// The most aliases one `/bulk` call seeds.
const BULK_MAX: u64 = 5_000_000;
/// Alias numbers have 7 digits, so names sort in number order.
const BULK_NAMES: u64 = 10_000_000;
/// AWS and Huawei take at most 50 aliases per key.
const MAX_ALIASES_PER_KEY: u64 = 50;

/// An optional non-negative integer field.
fn uint(v: &Value, name: &str) -> Result<Option<u64>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_u64().map(Some).ok_or_else(|| format!("\"{name}\" must be a non-negative integer")),
    }
}

/// Key number `n` of a `/bulk` seeding, in the cloud's id format. Derived, not random, so seeding in
/// several calls (`start`) puts every alias of a key number on the same key.
fn bulk_key_id(scope: &ScopeKey, prefix: &str, per_key: u64, n: u64) -> String {
    let seed = format!("{}|{}|{}|{prefix}|{per_key}|{n}", scope.cloud.as_str(), scope.account, scope.region);
    let d = Sha256::digest(seed.as_bytes());
    match scope.cloud {
        Cloud::Alibaba => {
            const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            format!("key-{}", d.iter().take(21).map(|b| CHARS[*b as usize % CHARS.len()] as char).collect::<String>())
        }
        // A version-4 UUID's shape, as uuid4() makes.
        Cloud::Aws | Cloud::Huawei => {
            let mut b: [u8; 16] = d[..16].try_into().expect("16 bytes");
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h = hex::encode(b);
            format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
        }
    }
}

/// Seeds a scope for a load test: aliases `{prefix}{i:07}` for i in start..start+count, alias i on key
/// number i / aliases_per_key (Enabled keys, created when missing), all in one store lock hold. Names
/// are not checked, as with `/aliases`. Returns the keys from number `start / aliases_per_key` on, so
/// alias i's key is `keys[i / aliases_per_key - first_key_number]`.
fn bulk(app: &App, v: &Value) -> Result<Response, String> {
    let scope = scope_of(app, v)?;
    let prefix = field(v, "prefix").ok_or("\"prefix\" is required and must not be empty")?.to_string();
    let count = uint(v, "count")?.ok_or("\"count\" is required")?;
    let start = uint(v, "start")?.unwrap_or(0);
    let per_key = uint(v, "aliases_per_key")?.unwrap_or(40);
    if !(1..=BULK_MAX).contains(&count) {
        return Err(format!("\"count\" must be 1..={BULK_MAX}, got {count}"));
    }
    if start.checked_add(count).is_none_or(|end| end > BULK_NAMES) {
        return Err(format!("\"start\" + \"count\" must be at most {BULK_NAMES} (alias numbers have 7 digits)"));
    }
    let per_key_max = match scope.cloud {
        Cloud::Aws | Cloud::Huawei => MAX_ALIASES_PER_KEY,
        // The emulator enforces no per-key limit for Alibaba.
        Cloud::Alibaba => BULK_MAX,
    };
    if !(1..=per_key_max).contains(&per_key) {
        return Err(format!(
            "\"aliases_per_key\" must be 1..={per_key_max} for {} (default 40), got {per_key}",
            scope.cloud.as_str()
        ));
    }
    let owner = owner_of(app, &scope, v);
    let first = start / per_key;
    let keys: Vec<String> =
        (first..=(start + count - 1) / per_key).map(|n| bulk_key_id(&scope, &prefix, per_key, n)).collect();
    let created = app.store.with(&scope, |s| {
        let mut created = 0;
        for id in &keys {
            s.keys.entry(id.clone()).or_insert_with(|| {
                created += 1;
                let mut k = Key::new(id.clone(), owner.clone());
                k.legacy_alias = Some(format!("emulator-{}", random_alnum(8)));
                k
            });
        }
        let mut name = String::with_capacity(prefix.len() + 7);
        for i in start..start + count {
            name.clear();
            name.push_str(&prefix);
            name.push_str(&format!("{i:07}"));
            s.put_alias(&name, Some(keys[(i / per_key - first) as usize].clone()), &owner);
        }
        created
    });
    tracing::info!(cloud = scope.cloud.as_str(), account = %scope.account, region = %scope.region, %prefix, start, count, keys_created = created, "admin bulk");
    Ok(reply(
        200,
        json!({
            "cloud": scope.cloud.as_str(),
            "account": scope.account,
            "region": scope.region,
            "aliases": count,
            "keys_created": created,
            "first_key_number": first,
            "keys": keys,
        }),
    ))
}

/// One alias: its key (null for an AWS predefined alias without one) and when it last changed, in
/// milliseconds since the epoch (what load tests time the daemon's writes by).
fn get_alias(app: &App, v: &Value) -> Result<Response, String> {
    let scope = scope_of(app, v)?;
    let name = field(v, "alias").ok_or("\"alias\" is required")?;
    let found =
        app.store.with(&scope, |s| s.aliases.get(name).map(|a| (a.key_id.clone(), a.updated.timestamp_millis())));
    Ok(match found {
        Some((key_id, updated_ms)) => reply(200, json!({ "alias": name, "key_id": key_id, "updated_ms": updated_ms })),
        None => reply(
            404,
            json!({ "error": format!("no alias {name:?} in {} {} {}", scope.cloud.as_str(), scope.account, scope.region) }),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credentials, HuaweiPrefix, Options};
    use axum::http::HeaderMap;

    fn app() -> App {
        let options = Options {
            alibaba_region: "cn-hangzhou".into(),
            huawei_region: "cn-north-4".into(),
            huawei_prefix: HuaweiPrefix::Required,
            max_clock_skew: None,
            aws_managed_aliases: true,
        };
        App::new(options, Credentials::defaults())
    }

    /// Calls the admin API: (status, JSON body).
    async fn call(app: &App, method: Method, target: &str, body: Option<Value>) -> (u16, Value) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let req = RawRequest {
            method,
            path: path.into(),
            raw_query: query.into(),
            headers: HeaderMap::new(),
            body: body.map(|b| b.to_string().into()).unwrap_or_default(),
            listener_region: None,
        };
        let resp = handle(app, &req);
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn aws_scope() -> ScopeKey {
        ScopeKey { cloud: Cloud::Aws, account: "123456789012".into(), region: "eu-west-1".into() }
    }

    #[tokio::test]
    async fn bulk_seeds_aliases_on_derived_keys() {
        let app = app();
        let body = json!({"cloud": "aws", "access_key_id": "AKIDEXAMPLE", "region": "eu-west-1",
            "prefix": "alias/app/load/", "count": 95});
        let (status, v) = call(&app, Method::POST, "/_emulator/bulk", Some(body.clone())).await;
        assert_eq!(status, 200, "{v}");
        let keys: Vec<String> = serde_json::from_value(v["keys"].clone()).unwrap();
        assert_eq!((keys.len(), v["first_key_number"].as_u64(), v["keys_created"].as_u64()), (3, Some(0), Some(3)));
        assert!(keys.iter().all(|k| k.len() == 36 && k.as_bytes()[14] == b'4'), "{keys:?}");
        app.store.with(&aws_scope(), |s| {
            assert_eq!(s.aliases["alias/app/load/0000000"].key_id.as_deref(), Some(keys[0].as_str()));
            assert_eq!(s.aliases["alias/app/load/0000040"].key_id.as_deref(), Some(keys[1].as_str()));
            assert_eq!(s.aliases["alias/app/load/0000094"].key_id.as_deref(), Some(keys[2].as_str()));
            let counts: Vec<usize> = keys.iter().map(|k| s.alias_count(k)).collect();
            assert_eq!(counts, [40, 40, 15]);
            assert!(keys.iter().all(|k| s.keys[k].state == KeyState::Enabled));
        });
        // A later call continues on the same key number, with the same key.
        let mut more = body;
        more["start"] = json!(95);
        more["count"] = json!(10);
        let (status, v) = call(&app, Method::POST, "/_emulator/bulk", Some(more)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!((v["first_key_number"].as_u64(), v["keys_created"].as_u64()), (Some(2), Some(0)));
        assert_eq!(v["keys"][0], json!(keys[2]));
        app.store.with(&aws_scope(), |s| assert_eq!(s.alias_count(&keys[2]), 25));
        let (_, v) = call(&app, Method::GET, "/_emulator/state?cloud=aws&region=eu-west-1", None).await;
        // 105 seeded plus the two predefined AWS aliases.
        assert_eq!(v["aws"]["123456789012"]["eu-west-1"]["aliases"].as_object().unwrap().len(), 107);
    }

    #[tokio::test]
    async fn bulk_key_ids_follow_the_cloud() {
        let app = app();
        let ali = json!({"cloud": "alibaba", "account": "1234567890123456", "prefix": "alias/a/", "count": 3,
            "aliases_per_key": 100});
        let (status, v) = call(&app, Method::POST, "/_emulator/bulk", Some(ali)).await;
        assert_eq!(status, 200, "{v}");
        let id = v["keys"][0].as_str().unwrap();
        assert!(id.starts_with("key-") && id.len() == 25, "{id}");
        let hw = json!({"cloud": "huawei", "project": "0123456789abcdef0123456789abcdef", "prefix": "alias/h/",
            "count": 1});
        let (status, v) = call(&app, Method::POST, "/_emulator/bulk", Some(hw)).await;
        assert_eq!((status, v["region"].as_str()), (200, Some("cn-north-4")), "{v}");
        assert_eq!(v["keys"][0].as_str().unwrap().len(), 36);
    }

    #[tokio::test]
    async fn bulk_refuses_bad_input() {
        let app = app();
        let base = json!({"cloud": "aws", "account": "1", "prefix": "alias/x/", "count": 10});
        for (change, expect) in [
            (json!({"prefix": ""}), "\"prefix\""),
            (json!({"prefix": null}), "\"prefix\""),
            (json!({"count": null}), "\"count\" is required"),
            (json!({"count": 0}), "\"count\" must be 1..=5000000"),
            (json!({"count": 5_000_001}), "\"count\" must be 1..=5000000"),
            (json!({"count": -1}), "\"count\" must be a non-negative integer"),
            (json!({"count": "10"}), "\"count\" must be a non-negative integer"),
            (json!({"start": 9_999_995}), "at most 10000000"),
            (json!({"aliases_per_key": 51}), "\"aliases_per_key\" must be 1..=50 for aws"),
            (json!({"aliases_per_key": 0}), "\"aliases_per_key\" must be 1..=50"),
            (json!({"cloud": "gcp"}), "\"cloud\""),
            (json!({"account": null}), "\"account\""),
        ] {
            let mut body = base.clone();
            for (k, v) in change.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, v) = call(&app, Method::POST, "/_emulator/bulk", Some(body)).await;
            let error = v["error"].as_str().unwrap_or_default();
            assert!(status == 400 && error.contains(expect), "{change}: {status} {v}");
        }
        let (status, _) = call(&app, Method::GET, "/_emulator/state?cloud=aws", None).await;
        assert_eq!(status, 200);
        app.store.with(&ScopeKey { cloud: Cloud::Aws, account: "1".into(), region: "us-east-1".into() }, |s| {
            assert!(s.keys.is_empty());
        });
    }

    #[tokio::test]
    async fn get_alias_reports_key_and_change_time() {
        let app = app();
        let q = "/_emulator/alias?cloud=aws&access_key_id=AKIDEXAMPLE&region=eu-west-1";
        let set = |key: &str| {
            json!({"cloud": "aws", "account": "123456789012", "region": "eu-west-1", "alias": "alias/app/x",
                "key_id": key})
        };
        let before = Utc::now().timestamp_millis();
        assert_eq!(call(&app, Method::POST, "/_emulator/aliases", Some(set("k1"))).await.0, 200);
        let (status, v) = call(&app, Method::GET, &format!("{q}&alias=alias/app/x"), None).await;
        assert_eq!((status, v["alias"].as_str(), v["key_id"].as_str()), (200, Some("alias/app/x"), Some("k1")));
        let first = v["updated_ms"].as_i64().unwrap();
        assert!((before..=Utc::now().timestamp_millis()).contains(&first), "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        call(&app, Method::POST, "/_emulator/aliases", Some(set("k2"))).await;
        let (_, v) = call(&app, Method::GET, &format!("{q}&alias=alias%2Fapp%2Fx"), None).await;
        assert_eq!(v["key_id"], "k2");
        assert!(v["updated_ms"].as_i64().unwrap() > first, "{v}");
        // A predefined AWS alias has no key yet.
        let (status, v) = call(&app, Method::GET, &format!("{q}&alias=alias/aws/ebs"), None).await;
        assert_eq!((status, &v["key_id"]), (200, &Value::Null), "{v}");
        let (status, v) = call(&app, Method::GET, &format!("{q}&alias=alias/app/missing"), None).await;
        assert!(status == 404 && v["error"].as_str().unwrap().contains("alias/app/missing"), "{v}");
        let (status, v) = call(&app, Method::GET, &format!("{q}&alias="), None).await;
        assert!(status == 400 && v["error"].as_str().unwrap().contains("\"alias\""), "{v}");
        let (status, _) = call(&app, Method::GET, "/_emulator/alias?alias=alias/app/x", None).await;
        assert_eq!(status, 400);
    }
}
