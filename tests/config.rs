//! Configuration: the shipped example loads, the environment overrides, bad values name key and fix.

use aliassync::config::{AliasPrefix, Config, ConfigError, Mode, ProviderKind};

const BASE: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
topic = "t"
[ownership]
managed_prefixes = ["alias/app/"]
[targets.aws-a]
provider = "aws"
region = "us-east-1"
credentials = "env:AWS_A"
"#;

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_sources(toml, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn problems(toml: &str, env: &[(&str, &str)]) -> String {
    match load(toml, env) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn shipped_example_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/aliassync.toml")).unwrap();
    let c = load(&text, &[]).unwrap();
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.dead_letter_topic(), "kms-alias-desired.dlq");
    assert_eq!(c.lease_topic(), "kms-alias-desired.leases");
}

#[test]
fn defaults_and_env_overrides() {
    let c = load(BASE, &[]).unwrap();
    assert_eq!(c.kafka.group_id, "aliassync");
    assert_eq!(c.dead_letter_topic(), "t.dlq");
    let t = &c.targets["aws-a"];
    assert_eq!((t.write_rate(), t.concurrency, t.mode), (5.0, 4, Mode::Enforce));
    let c = load(
        BASE,
        &[
            ("ALIASSYNC__KAFKA__BROKERS", "10.0.0.1:9093"),
            ("ALIASSYNC__TARGETS__AWS-A__RATE_LIMIT_PER_SECOND", "2.5"),
            ("ALIASSYNC__TARGETS__AWS-A__MODE", "observe"),
            ("ALIASSYNC__OWNERSHIP__MANAGED_PREFIXES", "alias/app/,alias/b/"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "10.0.0.1:9093");
    assert_eq!(c.targets["aws-a"].write_rate(), 2.5);
    assert_eq!(c.targets["aws-a"].mode, Mode::Observe);
    assert_eq!(c.ownership.managed_prefixes, vec!["alias/app/", "alias/b/"]);
}

#[test]
fn errors_name_the_key_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        ("brokers = \"127.0.0.1:9092\"", "brokers = \"\"", "`kafka.brokers`"),
        (
            "managed_prefixes = [\"alias/app/\"]",
            "managed_prefixes = [\"alias/aws/\"]",
            "`ownership.managed_prefixes[0]`",
        ),
        ("managed_prefixes = [\"alias/app/\"]", "managed_prefixes = [\"alias/app\"]", "end it with \"/\""),
        ("region = \"us-east-1\"", "region = \"\"", "`targets.aws-a.region`"),
        ("credentials = \"env:AWS_A\"", "credentials = \"AKIAEXAMPLE:supersecret\"", "`targets.aws-a.credentials`"),
        ("provider = \"aws\"", "provider = \"aws\"\nconcurrency = 0", "`targets.aws-a.concurrency`"),
        ("provider = \"aws\"", "provider = \"aws\"\nendpoint = \"kms.local\"", "`targets.aws-a.endpoint`"),
        (
            "provider = \"aws\"",
            "provider = \"aws\"\nrate_limit_per_second = -1",
            "`targets.aws-a.rate_limit_per_second`",
        ),
    ];
    for (from, to, want) in cases {
        let text = BASE.replace(from, to);
        let e = problems(&text, &[]);
        assert!(e.contains(want), "{to}: {e}");
        assert!(e.contains("fix:"), "{e}");
        assert!(!e.contains("supersecret"), "a pasted secret is never echoed: {e}");
    }
    // Unknown keys and bad enum values are parse errors that name the key.
    let e = problems(&BASE.replace("region =", "regoin = \"x\"\nregion ="), &[]);
    assert!(e.contains("regoin"), "{e}");
    let e = problems(&BASE.replace("provider = \"aws\"", "provider = \"gcp\""), &[]);
    assert!(e.contains("gcp") && e.contains("aws"), "{e}");
    let e = problems(BASE, &[("ALIASSYNC__METRICS__LISTEN", "nowhere")]);
    assert!(e.contains("`metrics.listen`"), "{e}");
}

#[test]
fn credentials_resolve_from_env_and_never_print() {
    let c = load(BASE, &[]).unwrap();
    std::env::remove_var("AWS_A_ACCESS_KEY_ID");
    let e = c.resolve_credentials().unwrap_err().to_string();
    assert!(e.contains("targets.aws-a.credentials") && e.contains("AWS_A_ACCESS_KEY_ID"), "{e}");
    std::env::set_var("AWS_A_ACCESS_KEY_ID", "AKIDEXAMPLE");
    std::env::set_var("AWS_A_SECRET_ACCESS_KEY", "topsecretvalue");
    let creds = c.resolve_credentials().unwrap();
    let dbg = format!("{creds:?} {c:?}");
    assert!(!dbg.contains("topsecretvalue"), "{dbg}");
    assert_eq!(creds["aws-a"].secret_access_key.expose(), "topsecretvalue");
}

const CLOUDS: &str = r#"
[targets.ali-hz]
provider = "alibaba"
region = "cn-hangzhou"
credentials = "env:ALI"
[targets.hw-cn4]
provider = "huawei"
region = "cn-north-4"
project_id = "0123456789abcdef0123456789abcdef"
credentials = "env:HW"
"#;

#[test]
fn alibaba_and_huawei_targets_load_with_their_defaults() {
    let c = load(&format!("{BASE}{CLOUDS}"), &[]).unwrap();
    let (ali, hw) = (&c.targets["ali-hz"], &c.targets["hw-cn4"]);
    assert_eq!((ali.provider, ali.write_rate(), ali.read_rate()), (ProviderKind::Alibaba, 30.0, 20.0));
    assert_eq!(
        (hw.provider, hw.project_id.as_deref()),
        (ProviderKind::Huawei, Some("0123456789abcdef0123456789abcdef"))
    );
    assert_eq!(hw.alias_prefix(), AliasPrefix::Keep);
    let c = load(&format!("{BASE}{CLOUDS}").replace("project_id =", "alias_prefix = \"strip\"\nproject_id ="), &[])
        .unwrap();
    assert_eq!(c.targets["hw-cn4"].alias_prefix(), AliasPrefix::Strip);
    let c = load(&format!("{BASE}{CLOUDS}"), &[("ALIASSYNC__TARGETS__HW-CN4__ALIAS_PREFIX", "strip")]).unwrap();
    assert_eq!(c.targets["hw-cn4"].alias_prefix(), AliasPrefix::Strip);
}

#[test]
fn huawei_and_provider_specific_keys_are_validated() {
    let text = format!("{BASE}{CLOUDS}");
    let cases: &[(&str, &str, &str)] = &[
        ("project_id = \"0123456789abcdef0123456789abcdef\"\n", "", "`targets.hw-cn4.project_id`: is required"),
        (
            "project_id = \"0123456789abcdef0123456789abcdef\"",
            "project_id = \"\"",
            "`targets.hw-cn4.project_id`: is required",
        ),
        ("project_id = \"0123456789abcdef0123456789abcdef\"", "project_id = \"../x\"", "`targets.hw-cn4.project_id`"),
        ("region = \"us-east-1\"", "region = \"us-east-1\"\nalias_prefix = \"strip\"", "`targets.aws-a.alias_prefix`"),
        ("region = \"us-east-1\"", "region = \"us-east-1\"\nproject_id = \"abc\"", "`targets.aws-a.project_id`"),
        (
            "region = \"cn-hangzhou\"",
            "region = \"cn-hangzhou\"\nsigning_service = \"kms\"",
            "`targets.ali-hz.signing_service`",
        ),
    ];
    for (from, to, want) in cases {
        assert!(text.contains(from), "{from}");
        let e = problems(&text.replacen(from, to, 1), &[]);
        assert!(e.contains(want), "{to}: {e}");
        assert!(e.contains("fix:"), "{e}");
    }
    let e = problems(&text.replace("project_id =", "alias_prefix = \"drop\"\nproject_id ="), &[]);
    assert!(e.contains("drop") && e.contains("targets.hw-cn4.alias_prefix"), "{e}");
}

#[test]
fn instance_id_defaults_to_the_host_name_and_is_validated() {
    let c = load(BASE, &[]).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(c.instance_id(), host.trim(), "the host name is the default static member id");
    // Two instances on one host: each sets its own.
    let c = load(BASE, &[("ALIASSYNC__KAFKA__INSTANCE_ID", "ops-1-b")]).unwrap();
    assert_eq!(c.instance_id(), "ops-1-b");
    for bad in ["", "has space", "slash/y", &"x".repeat(250)] {
        let text = BASE.replace("[kafka]\n", &format!("[kafka]\ninstance_id = \"{bad}\"\n"));
        let p = problems(&text, &[]);
        assert!(p.contains("`kafka.instance_id`: must be 1-249 of [A-Za-z0-9._-]"), "{bad:?}: {p}");
    }
    // aliassync sets group.instance.id itself.
    let text = BASE.replace("[kafka]\n", "[kafka.properties]\n\"group.instance.id\" = \"x\"\n[kafka]\n");
    assert!(problems(&text, &[]).contains("group.instance.id"), "{}", problems(&text, &[]));
}
