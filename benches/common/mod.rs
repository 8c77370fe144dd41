//! Shared by the benchmarks: the DESIGN §2.1 event shape (4 targets in 3 clouds) and its decoder.
#![allow(dead_code)]

use aliassync::config::ProviderKind;
use aliassync::event::Decoder;

pub fn decoder() -> Decoder {
    Decoder::new(
        [
            ("aws-prod-use1".to_string(), ProviderKind::Aws),
            ("aws-prod-euw1".to_string(), ProviderKind::Aws),
            ("ali-prod-hz".to_string(), ProviderKind::Alibaba),
            ("hw-prod-cn4".to_string(), ProviderKind::Huawei),
        ],
        vec!["alias/app/".into()],
        65536,
    )
}

/// Event `i` at revision `rev`: (record key, value).
pub fn event(i: usize, rev: u64) -> (String, String) {
    let alias = format!("alias/app/service-{i:07}/payments");
    let v = format!(
        r#"{{"schema":1,"alias":"{alias}","revision":{rev},"targets":{{"aws-prod-use1":"mrk-1234abcd12ab34cd56ef{i:012x}","aws-prod-euw1":"mrk-1234abcd12ab34cd56ef{i:012x}","ali-prod-hz":"key-hzz62f1cb66fa42qo{i:07}","hw-prod-cn4":"bb6a3d22-dc93-47ac-b5bd-{i:012x}"}}}}"#
    );
    (alias, v)
}
