//! Entry points for the coverage-guided fuzz targets in `fuzz/` (cargo feature `fuzzing`, never enabled by the
//! daemon). Each takes raw bytes, drives one parser family through its success and error paths, and asserts
//! invariants that must hold for any input: a broken invariant panics, which libFuzzer reports as a crash.
//!
//! Inputs that carry several fields (a record key and value, an HTTP status and body) are split without a format
//! of their own: a leading flags byte where needed, then parts separated by 0xFF, a byte that never occurs in UTF-8
//! text, so seeds stay readable and mutations of the text never shift the split.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::cli::statefile::StateFile;
use crate::config::{AliasPrefix, Config, ConfigError, ProviderKind};
use crate::event::{self, Body, Decoder, Event, Reason};
use crate::keyid::KeyId;
use crate::provider::http::{parse_success, status_class, Classify, MAX_CODE_CHARS, MAX_MESSAGE_CHARS};
use crate::provider::{alibaba, aws, huawei, ErrorClass, ProviderError};

const SEP: u8 = 0xFF;

/// The fixed target set the event decoder and `publish` are fuzzed against: every provider, ids in this order.
const TARGETS: [(&str, ProviderKind); 4] = [
    ("aws-a", ProviderKind::Aws),
    ("aws-b", ProviderKind::Aws),
    ("ali", ProviderKind::Alibaba),
    ("hw", ProviderKind::Huawei),
];
const MAX_EVENT_BYTES: usize = 4096;

fn prefixes() -> &'static [String] {
    static P: OnceLock<Vec<String>> = OnceLock::new();
    P.get_or_init(|| vec!["alias/app/".into(), "alias/team/".into()])
}

fn decoder() -> &'static Decoder {
    static D: OnceLock<Decoder> = OnceLock::new();
    D.get_or_init(|| {
        Decoder::new(TARGETS.iter().map(|(n, p)| (n.to_string(), *p)), prefixes().to_vec(), MAX_EVENT_BYTES)
    })
}

/// Secrets a request could carry (the shapes of an AWS secret key, an STS token, an Authorization header and its
/// signature): no error message may show them, whatever the cloud echoes back.
const SECRETS: [&str; 4] = [
    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "FQoGZXIvYXdzEXAMPLESESSIONTOKEN",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kms/aws4_request, \
     SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=5d672d79c15b13162d9279b0855cfba6",
    "5d672d79c15b13162d9279b0855cfba6",
];

/// `flags, rest` split at the first byte; empty input gives flags 0.
fn flags(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((f, rest)) => (*f, rest),
        None => (0, data),
    }
}

/// `(before, after)` the first 0xFF, or `(data, None)`.
fn split_sep(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == SEP) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// An HTTP status in 100..=599 from two bytes, and the rest.
fn status(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [a, b, rest @ ..] => (100 + u16::from_le_bytes([*a, *b]) % 500, rest),
        _ => (400, data),
    }
}

// ---------------------------------------------------------------------------------------------
// Event decoder

/// `flags, key 0xFF value`. Flags: bit 0 no key, bit 1 no value (a tombstone), bit 2 the key is the value's own
/// `alias` (so mutations reach past `key_mismatch`).
pub fn event_decode(data: &[u8]) {
    let (f, rest) = flags(data);
    let (key, value) = split_sep(rest);
    let value = if f & 2 != 0 { None } else { Some(value.unwrap_or_default()) };
    let own_alias = value.filter(|_| f & 4 != 0).and_then(alias_of);
    let key: Option<&[u8]> = match (f & 1 != 0, &own_alias) {
        (true, _) => None,
        (false, Some(a)) => Some(a.as_bytes()),
        (false, None) => Some(key),
    };
    if let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) {
        // The compact key-id form prints back byte for byte, whatever the string.
        assert_eq!(KeyId::new(k).to_string(), k, "KeyId round trip");
    }
    match decoder().decode(key, value) {
        Ok(e) => check_event(&e, key, value),
        Err(inv) => {
            check_reason(inv.reason);
            let too_large = value.is_some_and(|v| v.len() > MAX_EVENT_BYTES);
            assert_eq!(inv.reason == Reason::TooLarge, too_large, "too_large exactly when over the limit: {inv}");
            if key.is_none() && !too_large {
                assert_eq!(inv.reason, Reason::MissingKey);
            }
        }
    }
}

fn alias_of(value: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(value).ok()?;
    v.get("alias")?.as_str().map(str::to_string)
}

fn check_reason(r: Reason) {
    assert!(Reason::ALL.contains(&r));
    let s = r.as_str();
    assert!(
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "label {s:?}"
    );
}

/// A decoded event re-checks its own validity, and re-encoded it decodes to itself.
fn check_event(e: &Event, key: Option<&[u8]>, value: Option<&[u8]>) {
    assert_eq!(key, Some(e.alias.as_bytes()), "the alias is the record key");
    assert!(event::check_alias_name(&e.alias).is_ok() && event::is_managed(prefixes(), &e.alias), "{e:?}");
    assert_eq!(e.revision.is_none(), value.is_none(), "only a tombstone has no revision");
    let value = match (&e.body, e.revision) {
        (Body::Absent, None) => None,
        (Body::Absent, Some(r)) => Some(json!({"schema": 1, "alias": e.alias, "revision": r, "state": "absent"})),
        (Body::Present(t), Some(r)) => {
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "targets sorted, each once: {t:?}");
            let mut targets = serde_json::Map::new();
            for (id, k) in t {
                let (name, provider) = TARGETS[*id as usize];
                let k = k.to_string();
                assert!(event::key_id_shape_ok(provider, &k), "{k:?} accepted for {name}");
                targets.insert(name.into(), k.into());
            }
            Some(json!({"schema": 1, "alias": e.alias, "revision": r, "targets": targets}))
        }
        (Body::Present(_), None) => panic!("a tombstone carries no targets: {e:?}"),
    };
    let value = value.map(|v| v.to_string());
    let again = decoder().decode(Some(e.alias.as_bytes()), value.as_deref().map(str::as_bytes));
    assert_eq!(again.as_ref(), Ok(e), "re-encoded {value:?}");
}

// ---------------------------------------------------------------------------------------------
// Provider responses

/// What every provider's error must satisfy: bounded code and message, no secret, a label that names its class.
fn check_error(e: &ProviderError, status: u16, classify: Classify) {
    assert!(!e.code.is_empty() && e.code.chars().count() <= MAX_CODE_CHARS + 1, "code {:?}", e.code);
    assert!(!e.message.is_empty() && e.message.chars().count() <= MAX_MESSAGE_CHARS + 1, "message {:?}", e.message);
    for s in SECRETS {
        assert!(!e.code.contains(s) && !e.message.contains(s), "secret shown: {e:?}");
    }
    check_class(e.class, e.label);
    // Without a code the status alone decides.
    if e.code == format!("HTTP{status}") && e.label == "http_4xx" {
        assert_eq!(classify(None, status), (e.class, e.label));
    }
}

/// Labels are bounded metric values, and the status-derived ones always mean the same class.
fn check_class(class: ErrorClass, label: &str) {
    assert!(
        !label.is_empty()
            && label.len() <= 40
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "label {label:?}"
    );
    let want = match label {
        "throttling" => Some(ErrorClass::Throttled),
        "http_5xx" => Some(ErrorClass::Transient),
        "http_4xx" | "other" => Some(ErrorClass::Permanent),
        _ => None,
    };
    if let Some(w) = want {
        assert_eq!(class, w, "label {label}");
    }
}

/// Classification of an arbitrary code: bounded, and with no code exactly the status rule.
fn check_classify(classify: Classify, code: &[u8], status: u16) {
    assert_eq!(classify(None, status), status_class(status, false));
    let code = String::from_utf8_lossy(code);
    let (class, label) = classify(Some(&code), status);
    check_class(class, label);
}

/// The invariant of every listing filter: what is kept is ours and never the cloud's own.
fn check_wanted(name: &str, kept: bool, reserved: &str) {
    let want = !name.starts_with(reserved) && prefixes().iter().any(|p| name.starts_with(p.as_str()));
    assert_eq!(kept, want, "{name:?}");
}

/// A bare key id is the input or a suffix of it.
fn check_bare(id: &str, bare: &str) {
    assert!(id.ends_with(bare), "{id:?} -> {bare:?}");
}

/// `flags, status(2), x-amzn-errortype 0xFF body`: the error path (flags bit 0 sends the header), then the
/// body as a success (ListAliases page, DescribeKey).
pub fn aws_response(data: &[u8]) {
    let (f, rest) = flags(data);
    let (status, rest) = status(rest);
    let (header, body) = match split_sep(rest) {
        (h, Some(b)) => (Some(h), b),
        (b, None) => (None, b),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(v) = header.filter(|_| f & 1 != 0).and_then(|h| reqwest::header::HeaderValue::from_bytes(h).ok()) {
        headers.insert("x-amzn-errortype", v);
    }
    let e = aws::parse_error(status, &headers, body, &SECRETS);
    check_error(&e, status, aws::classify);
    check_classify(aws::classify, header.unwrap_or(body), status);

    let Ok(v) = parse_success(body).inspect_err(|e| check_error(e, 200, aws::classify)) else { return };
    if let Some(id) = v.pointer("/KeyMetadata/KeyId").and_then(Value::as_str) {
        check_bare(id, aws::bare_key_id(id));
    }
    let page = match aws::parse_list_page(v) {
        Ok(p) => p,
        Err(e) => return check_error(&e, 200, aws::classify),
    };
    for a in page.aliases.iter().flatten() {
        check_wanted(&a.alias_name, aws::wanted(&a.alias_name, prefixes()), aws::RESERVED_PREFIX);
        if let Some(k) = &a.target_key_id {
            check_bare(k, aws::bare_key_id(k));
        }
    }
    match aws::next_marker(page.truncated, page.next_marker.clone()) {
        Ok(None) => assert!(!page.truncated),
        // (A marker repeated is the paginator's to refuse: provider::pages.)
        Ok(Some(m)) => assert!(page.truncated && !m.is_empty()),
        Err(e) => {
            assert!(page.truncated && page.next_marker.is_none_or(|m| m.is_empty()));
            check_error(&e, 200, aws::classify);
        }
    }
}

/// `status(2), body`: the error path, then the body as a success (ListAliases page, DescribeKey).
pub fn alibaba_response(data: &[u8]) {
    let (status, body) = status(data);
    let e = alibaba::parse_error(status, body, &SECRETS);
    check_error(&e, status, alibaba::classify);
    check_classify(alibaba::classify, split_sep(body).0, status);

    let Ok(v) = parse_success(body).inspect_err(|e| check_error(e, 200, alibaba::classify)) else { return };
    match alibaba::parse_key_metadata(v.clone()) {
        Ok(m) => check_bare(&m.key_id, alibaba::bare_key_id(&m.key_id)),
        Err(e) => check_error(&e, 200, alibaba::classify),
    }
    let page = match alibaba::parse_list_page(v.clone()) {
        Ok(p) => p,
        Err(e) => return check_error(&e, 200, alibaba::classify),
    };
    for a in page.aliases.iter().flat_map(|l| &l.alias) {
        check_wanted(&a.alias_name, alibaba::wanted(&a.alias_name, prefixes()), alibaba::RESERVED_PREFIX);
        if let Some(k) = &a.key_id {
            check_bare(k, alibaba::bare_key_id(k));
        }
    }
    // Counts are JSON numbers or numeric strings; anything else reads as absent, never as another number.
    for (field, got) in [("TotalCount", page.total_count), ("PageNumber", page.page_number)] {
        let want = match v.get(field) {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        assert_eq!(got, want, "{field}");
    }
}

/// `status(2), body`: the error path, then the body as a success (list page in both documented shapes,
/// describe-key), with the alias-name mapping of both namings on every listed name.
pub fn huawei_response(data: &[u8]) {
    let (status, body) = status(data);
    let e = huawei::parse_error(status, body, &SECRETS);
    check_error(&e, status, huawei::classify);
    check_classify(huawei::classify, split_sep(body).0, status);
    let dup = huawei::may_hide_duplicate(&e);
    assert!(!dup || e.class == ErrorClass::Permanent);

    let Ok(v) = parse_success(body).inspect_err(|e| check_error(e, 200, huawei::classify)) else { return };
    if let Err(e) = huawei::parse_key_info(v.clone()) {
        check_error(&e, 200, huawei::classify);
    }
    let page = match huawei::ListPage::parse(v) {
        Ok(p) => p,
        Err(e) => return check_error(&e, 200, huawei::classify),
    };
    for a in &page.aliases {
        check_naming(&a.alias);
    }
    let _ = page.next_marker;
}

/// Wire ↔ canonical names: `keep` is the identity, `strip` round-trips both ways on its image.
fn check_naming(wire: &str) {
    assert_eq!(huawei::to_canonical(AliasPrefix::Keep, wire), wire);
    assert_eq!(huawei::to_wire(AliasPrefix::Keep, wire), Some(wire));
    let canonical = huawei::to_canonical(AliasPrefix::Strip, wire);
    assert!(canonical.starts_with("alias/"));
    if !wire.is_empty() {
        assert_eq!(huawei::to_wire(AliasPrefix::Strip, &canonical), Some(wire));
    }
    if let Some(w) = huawei::to_wire(AliasPrefix::Strip, wire) {
        assert_eq!(huawei::to_canonical(AliasPrefix::Strip, w), wire);
    }
}

// ---------------------------------------------------------------------------------------------
// Config loader

/// `toml 0xFF env`: env is `KEY=VALUE` lines, each given as `ALIASSYNC__KEY` (the loader's only other source).
pub fn config_load(data: &[u8]) {
    let (toml, env) = split_sep(data);
    let Ok(toml) = std::str::from_utf8(toml) else { return };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env.unwrap_or_default())
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("ALIASSYNC__{k}"), v.to_string()))
        .collect();
    match Config::from_sources(toml, env) {
        Ok(cfg) => check_config(&cfg),
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            for p in &problems {
                assert!(!p.key.is_empty() && !p.problem.is_empty() && !p.fix.is_empty(), "{p:?}");
            }
        }
        Err(ConfigError::Parse(m)) => assert!(!m.is_empty()),
        Err(e @ ConfigError::Read { .. }) => panic!("no file is read: {e}"),
    }
}

/// A config that loaded is one the daemon can run: what validation promises, checked from the outside.
fn check_config(cfg: &Config) {
    assert!(cfg.validate().is_ok(), "validation is deterministic");
    assert_ne!(cfg.dead_letter_topic(), cfg.kafka.topic);
    assert!((1..=1000).contains(&cfg.kafka.lease_partitions));
    assert!(!cfg.ownership.managed_prefixes.is_empty() && !cfg.targets.is_empty());
    for p in &cfg.ownership.managed_prefixes {
        assert!(p.starts_with("alias/") && p.ends_with('/') && p.len() > 6 && !event::is_reserved(p), "{p:?}");
    }
    for (name, t) in &cfg.targets {
        for r in [t.write_rate(), t.read_rate()] {
            assert!(r.is_finite() && r > 0.0 && r <= 10_000.0, "{name}: rate {r}");
        }
        assert!((1..=256).contains(&t.concurrency));
        assert!(t.request_timeout_seconds > 0.0 && t.request_timeout_seconds <= 300.0);
        // Durations built from it must not panic.
        let _ = std::time::Duration::from_secs_f64(t.request_timeout_seconds);
        if t.provider == ProviderKind::Huawei {
            assert!(t.project_id.as_deref().is_some_and(|p| !p.is_empty()));
        }
    }
    // The decoder the daemon builds from it decodes.
    let d = Decoder::from_config(cfg);
    let _ = d.decode(Some(b"alias/app/x"), None);
}

// ---------------------------------------------------------------------------------------------
// Desired-state file (`publish`)

/// The file's text (UTF-8, as `publish` reads it). A parsed file round-trips through both output formats, and
/// every entry becomes an event the way `publish` builds it, which decodes or is refused for its content only.
pub fn statefile_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = StateFile::parse(text) else { return };
    assert_eq!(StateFile::parse(&file.to_json()).as_ref(), Ok(&file), "JSON round trip");
    assert_eq!(StateFile::parse(&file.to_yaml()).as_ref(), Ok(&file), "YAML round trip");
    for (alias, targets) in file.aliases.iter().take(16) {
        publish_event(alias, targets);
    }
}

/// As `cli::prepare_publish` builds an event for a new alias (revision 1).
fn publish_event(alias: &str, targets: &BTreeMap<String, String>) {
    let v = json!({"schema": 1, "alias": alias, "revision": 1, "targets": targets}).to_string();
    match decoder().decode(Some(alias.as_bytes()), Some(v.as_bytes())) {
        Ok(e) => {
            check_event(&e, Some(alias.as_bytes()), Some(v.as_bytes()));
            let Body::Present(t) = &e.body else { panic!("publish sent targets: {e:?}") };
            assert_eq!(t.len(), targets.len());
        }
        Err(inv) => {
            check_reason(inv.reason);
            // What publish builds is well-formed: only its content can be refused.
            assert!(
                matches!(
                    inv.reason,
                    Reason::TooLarge
                        | Reason::BadAliasName
                        | Reason::ReservedName
                        | Reason::UnmanagedPrefix
                        | Reason::UnknownTarget
                        | Reason::BadKeyId
                ),
                "{inv} for {v}"
            );
        }
    }
}
