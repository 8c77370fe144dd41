//! Decode + validate + apply (diff) throughput on one core: the per-event cost of the source stage.
//! `cargo bench --bench pipeline`; the README records the figures.

mod common;

use std::hint::black_box;

use aliassync::desired::Store;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// `n` distinct events.
fn events(n: usize, rev: u64) -> Vec<(String, String)> {
    (0..n).map(|i| common::event(i, rev)).collect()
}

fn bench(c: &mut Criterion) {
    let d = common::decoder();
    let evs = events(100_000, 1);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.sample_size(20);
    g.bench_function("decode_validate", |b| {
        b.iter(|| {
            for (k, v) in &evs {
                black_box(d.decode(Some(k.as_bytes()), Some(v.as_bytes())).unwrap());
            }
        })
    });
    // Into a store that already holds every alias (revision 1); the measured events carry revision 2
    // (equal revisions apply), alternating between two versions so that each pass really changes state.
    let mut store = Store::new(4);
    for (k, v) in &evs {
        store.apply(d.decode(Some(k.as_bytes()), Some(v.as_bytes())).unwrap(), Default::default());
    }
    let base = events(100_000, 2);
    let variant =
        |f: &dyn Fn(&str) -> String| -> Vec<(String, String)> { base.iter().map(|(k, v)| (k.clone(), f(v))).collect() };
    type Events = Vec<(String, String)>;
    let cases: [(&str, Events, Events); 3] = [
        // A replay (rebuild after restart, duplicates): nothing changes.
        ("apply_replay", base.clone(), base.clone()),
        // Key rotation in one target (the common change).
        (
            "apply_repoint_one_target",
            base.clone(),
            variant(&|v| v.replace("key-hzz62f1cb66fa42qo", "key-hzz62f1cb66fa42qp")),
        ),
        // Every target re-pointed: four new key ids interned, four released.
        (
            "apply_repoint_all_targets",
            base.clone(),
            variant(&|v| v.replace("mrk-1234abcd", "mrk-5678abcd").replace("qo", "qp").replace("bb6a3d22", "cc6a3d22")),
        ),
    ];
    for (name, one, two) in &cases {
        let mut flip = false;
        g.bench_function(*name, |b| {
            b.iter(|| {
                flip = !flip;
                for (k, v) in if flip { two } else { one } {
                    let ev = d.decode(Some(k.as_bytes()), Some(v.as_bytes())).unwrap();
                    black_box(store.apply(ev, Default::default()));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
