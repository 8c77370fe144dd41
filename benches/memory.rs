//! Memory of the desired state and rebuild speed: N aliases × 4 targets decoded and applied, RSS
//! read from /proc before and after. `cargo bench --bench memory [-- N]` (default 100000 and 1000000).

mod common;

use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use aliassync::desired::Store;
use aliassync::provider::LiveAlias;

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
        scan_under_writes(store, n);
    }
}

/// A drift scan of target 0 (its listing: every alias, in sync) while another thread applies events, as the
/// reader does: the longest the writer waited for the store lock is what a scan costs the reader.
fn scan_under_writes(store: Store, n: usize) {
    let listing: Vec<LiveAlias> = store
        .iter()
        .filter_map(|(a, _, t)| t.first().map(|(_, k)| LiveAlias { name: a.into(), key_id: Some(k.to_string()) }))
        .collect();
    let store = RwLock::new(store);
    let done = AtomicBool::new(false);
    let d = common::decoder();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let (mut max_wait, mut writes) = (Duration::ZERO, 0u64);
            while !done.load(Ordering::Relaxed) {
                let (alias, v) = common::event(writes as usize % n, 2);
                let ev = d.decode(Some(alias.as_bytes()), Some(v.as_bytes())).unwrap();
                let t0 = Instant::now();
                let mut w = store.write().unwrap();
                max_wait = max_wait.max(t0.elapsed());
                w.apply(ev, Default::default());
                drop(w);
                writes += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            (max_wait, writes)
        });
        let t0 = Instant::now();
        let r = aliassync::drift::compare(&store, 0, &listing, |_| true, |_| false, |a, b| a == b);
        let took = t0.elapsed();
        done.store(true, Ordering::Relaxed);
        let (max_wait, writes) = writer.join().unwrap();
        println!(
            "aliases={n} drift scan={:.2}s drifted={} while applying {writes} events: the writer waited at most {:.1} ms for the store",
            took.as_secs_f64(),
            r.drifted.len(),
            max_wait.as_secs_f64() * 1000.0
        );
    });
}
