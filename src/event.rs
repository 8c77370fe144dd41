//! Schema-1 desired-state events: decoding and validation, pure (no I/O), so it is fuzzed and benchmarked alone.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use crate::config::Config;
pub use crate::names::{is_managed, is_reserved, key_id_shape_ok, ProviderKind, RESERVED_PREFIXES};

/// Index of a configured target (targets are few; u16 keeps desired-state entries small).
pub type TargetId = u16;

/// A valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub alias: String,
    /// None for a Kafka tombstone, which carries no body.
    pub revision: Option<u64>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The alias must point at these keys in these targets, and be absent from every other target.
    /// Key ids in their compact form, as the store keeps them.
    Present(Vec<(TargetId, crate::keyid::KeyId)>),
    /// The alias must be absent everywhere.
    Absent,
}

/// Why an event is invalid: a bounded set, used as the `reason` metric label and DLQ header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    TooLarge,
    MissingKey,
    KeyNotUtf8,
    MalformedJson,
    UnknownSchema,
    MissingField,
    KeyMismatch,
    BadAliasName,
    ReservedName,
    UnmanagedPrefix,
    UnknownTarget,
    BadKeyId,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::TooLarge,
        Reason::MissingKey,
        Reason::KeyNotUtf8,
        Reason::MalformedJson,
        Reason::UnknownSchema,
        Reason::MissingField,
        Reason::KeyMismatch,
        Reason::BadAliasName,
        Reason::ReservedName,
        Reason::UnmanagedPrefix,
        Reason::UnknownTarget,
        Reason::BadKeyId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::MissingKey => "missing_key",
            Reason::KeyNotUtf8 => "key_not_utf8",
            Reason::MalformedJson => "malformed_json",
            Reason::UnknownSchema => "unknown_schema",
            Reason::MissingField => "missing_field",
            Reason::KeyMismatch => "key_mismatch",
            Reason::BadAliasName => "bad_alias_name",
            Reason::ReservedName => "reserved_name",
            Reason::UnmanagedPrefix => "unmanaged_prefix",
            Reason::UnknownTarget => "unknown_target",
            Reason::BadKeyId => "bad_key_id",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Invalid {
    pub reason: Reason,
    pub detail: String,
}

fn invalid(reason: Reason, detail: impl Into<String>) -> Invalid {
    Invalid { reason, detail: detail.into() }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    schema: Option<u64>,
    #[serde(borrow)]
    alias: Option<Cow<'a, str>>,
    revision: Option<u64>,
    #[serde(borrow, default, deserialize_with = "pairs")]
    targets: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    state: Option<Cow<'a, str>>,
}

/// A JSON object as a list of pairs: no map to build and hash for a handful of targets.
type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn pairs<'de, D>(d: D) -> Result<Option<Pairs<'de>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Pairs<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of target name to key id")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(4));
            while let Some((k, v)) = m.next_entry::<Cow<'de, str>, Cow<'de, str>>()? {
                if out.iter().any(|(x, _): &(Cow<str>, Cow<str>)| *x == k) {
                    return Err(serde::de::Error::custom(format!("duplicate target {k:?}")));
                }
                out.push((k, v));
            }
            Ok(Some(out))
        }
    }
    d.deserialize_map(V)
}

/// Everything decoding needs from the config, precomputed.
#[derive(Debug, Clone)]
pub struct Decoder {
    targets: HashMap<String, (TargetId, ProviderKind)>,
    prefixes: Vec<String>,
    max_bytes: usize,
}

impl Decoder {
    pub fn new(
        targets: impl IntoIterator<Item = (String, ProviderKind)>,
        prefixes: Vec<String>,
        max_bytes: usize,
    ) -> Self {
        let targets = targets.into_iter().enumerate().map(|(i, (n, p))| (n, (i as TargetId, p))).collect();
        Decoder { targets, prefixes, max_bytes }
    }

    /// Target ids follow the config's (sorted) target order.
    pub fn from_config(cfg: &Config) -> Self {
        Self::new(
            cfg.targets.iter().map(|(n, t)| (n.clone(), t.provider)),
            cfg.ownership.managed_prefixes.clone(),
            cfg.kafka.max_event_bytes,
        )
    }

    /// Decodes one record. `value = None` is a tombstone.
    pub fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Event, Invalid> {
        if let Some(v) = value {
            if v.len() > self.max_bytes {
                return Err(invalid(Reason::TooLarge, format!("{} bytes, limit {}", v.len(), self.max_bytes)));
            }
        }
        let key =
            key.ok_or_else(|| invalid(Reason::MissingKey, "record has no key; the key must be the alias name"))?;
        let key = std::str::from_utf8(key).map_err(|_| invalid(Reason::KeyNotUtf8, "record key is not UTF-8"))?;
        let Some(value) = value else {
            self.check_alias(key)?;
            return Ok(Event { alias: key.to_string(), revision: None, body: Body::Absent });
        };
        let raw: Raw = serde_json::from_slice(value).map_err(|e| invalid(Reason::MalformedJson, e.to_string()))?;
        match raw.schema {
            Some(1) => {}
            Some(n) => return Err(invalid(Reason::UnknownSchema, format!("schema {n}; this daemon reads schema 1"))),
            None => return Err(invalid(Reason::MissingField, "`schema` is missing")),
        }
        let alias = raw.alias.ok_or_else(|| invalid(Reason::MissingField, "`alias` is missing"))?;
        let revision = raw.revision.ok_or_else(|| invalid(Reason::MissingField, "`revision` is missing"))?;
        if alias != key {
            return Err(invalid(Reason::KeyMismatch, format!("record key {key:?} differs from alias {alias:?}")));
        }
        self.check_alias(&alias)?;
        let body = match (raw.state.as_deref(), raw.targets) {
            (Some("absent"), None) => Body::Absent,
            (Some("absent"), Some(_)) => {
                return Err(invalid(Reason::MalformedJson, "`state: absent` must not carry `targets`"))
            }
            (Some(other), _) => {
                return Err(invalid(Reason::MalformedJson, format!("unknown state {other:?}; only \"absent\" exists")))
            }
            // Requiring `targets` stops a misspelt field from reading as "delete everywhere".
            (None, None) => return Err(invalid(Reason::MissingField, "`targets` is missing (or use state: absent)")),
            (None, Some(map)) => {
                let mut out = Vec::with_capacity(map.len());
                for (name, key_id) in map {
                    let Some(&(id, provider)) = self.targets.get(name.as_ref()) else {
                        return Err(invalid(Reason::UnknownTarget, format!("target {name:?} is not configured")));
                    };
                    if !key_id_shape_ok(provider, &key_id) {
                        return Err(invalid(
                            Reason::BadKeyId,
                            format!("{key_id:?} is not a {} key id (target {name:?})", provider.as_str()),
                        ));
                    }
                    out.push((id, crate::keyid::KeyId::new(&key_id)));
                }
                out.sort_unstable_by_key(|(t, _)| *t);
                Body::Present(out)
            }
        };
        Ok(Event { alias: alias.into_owned(), revision: Some(revision), body })
    }

    fn check_alias(&self, alias: &str) -> Result<(), Invalid> {
        if let Some(p) = RESERVED_PREFIXES.iter().find(|p| alias.starts_with(*p)) {
            return Err(invalid(Reason::ReservedName, format!("{alias:?} is under the reserved prefix {p}")));
        }
        check_alias_name(alias)?;
        if !self.prefixes.iter().any(|p| alias.starts_with(p.as_str())) {
            return Err(invalid(Reason::UnmanagedPrefix, format!("{alias:?} is outside the managed prefixes")));
        }
        Ok(())
    }
}

/// The intersection of the three clouds' rules (see [`crate::names::alias_name_problem`]).
pub fn check_alias_name(alias: &str) -> Result<(), Invalid> {
    match crate::names::alias_name_problem(alias) {
        Some(p) => Err(invalid(Reason::BadAliasName, p)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec() -> Decoder {
        Decoder::new(
            [
                ("aws-a".to_string(), ProviderKind::Aws),
                ("aws-b".to_string(), ProviderKind::Aws),
                ("ali".to_string(), ProviderKind::Alibaba),
                ("hw".to_string(), ProviderKind::Huawei),
            ],
            vec!["alias/app/".into()],
            4096,
        )
    }
    const K: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    fn reason(key: Option<&str>, v: Option<&str>) -> Reason {
        dec().decode(key.map(str::as_bytes), v.map(str::as_bytes)).unwrap_err().reason
    }

    #[test]
    fn valid_event() {
        let v = format!(
            r#"{{"schema":1,"alias":"alias/app/p","revision":42,"targets":{{"aws-b":"{K}","aws-a":"mrk-1234abcd12ab34cd56ef1234567890ab","ali":"key-hzz62f1cb66fa42qo3ht4","hw":"{K}"}}}}"#
        );
        let e = dec().decode(Some(b"alias/app/p"), Some(v.as_bytes())).unwrap();
        assert_eq!(e.alias, "alias/app/p");
        assert_eq!(e.revision, Some(42));
        let Body::Present(t) = e.body else { panic!() };
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(t[1].1.to_string(), K);
    }

    #[test]
    fn absent_and_tombstone() {
        let e = dec()
            .decode(Some(b"alias/app/p"), Some(br#"{"schema":1,"alias":"alias/app/p","revision":3,"state":"absent"}"#))
            .unwrap();
        assert_eq!(e.body, Body::Absent);
        assert_eq!(e.revision, Some(3));
        let t = dec().decode(Some(b"alias/app/p"), None).unwrap();
        assert_eq!((t.body, t.revision), (Body::Absent, None));
        assert_eq!(reason(Some("alias/aws/x"), None), Reason::ReservedName);
    }

    #[test]
    fn every_invalid_kind() {
        let ok_t = format!(r#""targets":{{"aws-a":"{K}"}}"#);
        let big = format!(r#"{{"schema":1,"alias":"alias/app/p","revision":1,"pad":"{}"}}"#, "x".repeat(5000));
        let cases: Vec<(Option<&str>, String, Reason)> = vec![
            (Some("alias/app/p"), big, Reason::TooLarge),
            (None, format!(r#"{{"schema":1,"alias":"alias/app/p","revision":1,{ok_t}}}"#), Reason::MissingKey),
            (Some("alias/app/p"), "{not json".into(), Reason::MalformedJson),
            (
                Some("alias/app/p"),
                format!(r#"{{"schema":2,"alias":"alias/app/p","revision":1,{ok_t}}}"#),
                Reason::UnknownSchema,
            ),
            (Some("alias/app/p"), format!(r#"{{"alias":"alias/app/p","revision":1,{ok_t}}}"#), Reason::MissingField),
            (Some("alias/app/p"), format!(r#"{{"schema":1,"alias":"alias/app/p",{ok_t}}}"#), Reason::MissingField),
            (Some("alias/app/p"), r#"{"schema":1,"alias":"alias/app/p","revision":1}"#.into(), Reason::MissingField),
            (
                Some("alias/app/p"),
                r#"{"schema":1,"alias":"alias/app/p","revision":1,"taregts":{}}"#.to_string(),
                Reason::MalformedJson,
            ),
            (
                Some("alias/app/q"),
                format!(r#"{{"schema":1,"alias":"alias/app/p","revision":1,{ok_t}}}"#),
                Reason::KeyMismatch,
            ),
            (
                Some("alias/app/bad name"),
                format!(r#"{{"schema":1,"alias":"alias/app/bad name","revision":1,{ok_t}}}"#),
                Reason::BadAliasName,
            ),
            (
                Some("alias/aws/ebs"),
                format!(r#"{{"schema":1,"alias":"alias/aws/ebs","revision":1,{ok_t}}}"#),
                Reason::ReservedName,
            ),
            (
                Some("alias/acs/x"),
                format!(r#"{{"schema":1,"alias":"alias/acs/x","revision":1,{ok_t}}}"#),
                Reason::ReservedName,
            ),
            (
                Some("alias/other/p"),
                format!(r#"{{"schema":1,"alias":"alias/other/p","revision":1,{ok_t}}}"#),
                Reason::UnmanagedPrefix,
            ),
            (
                Some("alias/app/p"),
                format!(r#"{{"schema":1,"alias":"alias/app/p","revision":1,"targets":{{"nope":"{K}"}}}}"#),
                Reason::UnknownTarget,
            ),
            (
                Some("alias/app/p"),
                r#"{"schema":1,"alias":"alias/app/p","revision":1,"targets":{"aws-a":"key-abc"}}"#.into(),
                Reason::BadKeyId,
            ),
            (
                Some("alias/app/p"),
                r#"{"schema":1,"alias":"alias/app/p","revision":1,"targets":{"hw":"mrk-1234abcd12ab34cd56ef1234567890ab"}}"#.to_string(),
                Reason::BadKeyId,
            ),
            (
                Some("alias/app/p"),
                r#"{"schema":1,"alias":"alias/app/p","revision":-1,"targets":{}}"#.into(),
                Reason::MalformedJson,
            ),
            (
                Some("alias/app/p"),
                format!(r#"{{"schema":1,"alias":"alias/app/p","revision":1,"state":"absent",{ok_t}}}"#),
                Reason::MalformedJson,
            ),
        ];
        for (k, v, want) in cases {
            assert_eq!(reason(k, Some(&v)), want, "{k:?} {v}");
        }
        assert_eq!(dec().decode(Some(&[0xff, 0xfe]), None).unwrap_err().reason, Reason::KeyNotUtf8);
    }

    /// Never panics, whatever the bytes: mutations of a valid event and random noise.
    #[test]
    fn arbitrary_input_never_panics() {
        use rand::Rng;
        let d = dec();
        let valid =
            format!(r#"{{"schema":1,"alias":"alias/app/p","revision":42,"targets":{{"aws-a":"{K}","hw":"{K}"}}}}"#);
        let mut rng = rand::rng();
        for i in 0..20_000 {
            let mut v = valid.clone().into_bytes();
            if i % 4 == 0 {
                v = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            } else {
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..v.len());
                    match rng.random_range(0..3) {
                        0 => v[at] = rng.random(),
                        1 => {
                            v.remove(at);
                        }
                        _ => v.insert(at, b"{}[]\":,\\0e-"[rng.random_range(0..11)]),
                    }
                }
            }
            let key = if i % 3 == 0 { Some(&v[..v.len().min(12)]) } else { Some(&b"alias/app/p"[..]) };
            let _ = d.decode(key, Some(&v));
        }
    }

    #[test]
    fn key_shapes() {
        use ProviderKind::*;
        assert!(key_id_shape_ok(Aws, "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"));
        assert!(!key_id_shape_ok(Aws, "arn:aws:kms:us-east-1:123456789012:alias/x"));
        assert!(!key_id_shape_ok(Aws, "1234abcd-12ab-34cd-56ef-1234567890a"));
        assert!(key_id_shape_ok(Alibaba, "key-hzz62f1cb66fa42qo3ht4"));
        assert!(!key_id_shape_ok(Alibaba, "key-"));
        assert!(!key_id_shape_ok(Huawei, "key-hzz62f1cb66fa42qo3ht4"));
    }

    #[test]
    fn alias_names() {
        assert!(check_alias_name("alias/app/a_b-c/9").is_ok());
        assert!(check_alias_name("alias/").is_err());
        assert!(check_alias_name(&format!("alias/{}", "a".repeat(251))).is_err());
        assert!(check_alias_name(&format!("alias/{}", "a".repeat(250))).is_ok());
        assert!(check_alias_name("alias/a:b").is_err());
        assert!(check_alias_name("nope").is_err());
    }
}
