//! Memory of the desired state and rebuild speed: N aliases × 4 targets decoded and applied, RSS
//! read from /proc before and after. `cargo bench --bench memory [-- N]` (default 100000 and 1000000).

use std::time::Instant;

use aliassync::config::ProviderKind;
use aliassync::desired::Store;
use aliassync::event::Decoder;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 =
        s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100_000, 1_000_000] } else { sizes };
    let d = Decoder::new(
        [
            ("aws-prod-use1".to_string(), ProviderKind::Aws),
            ("aws-prod-euw1".to_string(), ProviderKind::Aws),
            ("ali-prod-hz".to_string(), ProviderKind::Alibaba),
            ("hw-prod-cn4".to_string(), ProviderKind::Huawei),
        ],
        vec!["alias/app/".into()],
        65536,
    );
    for n in sizes {
        let before = rss_bytes();
        let start = Instant::now();
        let mut store = Store::new(4);
        let mut buf = String::new();
        for i in 0..n {
            // Built one at a time so the input does not count against the store.
            let alias = format!("alias/app/service-{i:07}/payments");
            buf.clear();
            use std::fmt::Write;
            write!(
                buf,
                r#"{{"schema":1,"alias":"{alias}","revision":1,"targets":{{"aws-prod-use1":"mrk-1234abcd12ab34cd56ef{i:012x}","aws-prod-euw1":"mrk-1234abcd12ab34cd56ef{i:012x}","ali-prod-hz":"key-hzz62f1cb66fa42qo{i:07}","hw-prod-cn4":"bb6a3d22-dc93-47ac-b5bd-{i:012x}"}}}}"#
            )
            .unwrap();
            store.apply(d.decode(Some(alias.as_bytes()), Some(buf.as_bytes())).unwrap());
        }
        let took = start.elapsed();
        let used = rss_bytes().saturating_sub(before);
        println!(
            "aliases={n} targets=4 rebuild={:.2}s ({:.0} events/s) rss_delta={:.1} MiB ({:.0} bytes/alias)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            used as f64 / 1048576.0,
            used as f64 / n as f64
        );
        assert_eq!(store.len(), n);
        drop(store);
    }
}
