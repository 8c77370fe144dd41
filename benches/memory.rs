//! Memory of the desired state and rebuild speed: N aliases × 4 targets decoded and applied, RSS
//! read from /proc before and after. `cargo bench --bench memory [-- N]` (default 100000 and 1000000).

mod common;

use std::time::Instant;

use aliassync::desired::Store;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 =
        s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100_000, 1_000_000] } else { sizes };
    let d = common::decoder();
    for n in sizes {
        let before = rss_bytes();
        let start = Instant::now();
        let mut store = Store::new(4);
        for i in 0..n {
            // Built one at a time so the input does not count against the store.
            let (alias, v) = common::event(i, 1);
            store.apply(d.decode(Some(alias.as_bytes()), Some(v.as_bytes())).unwrap(), Default::default());
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
