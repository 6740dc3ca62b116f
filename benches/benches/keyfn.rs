//! Key function micro-benchmarks: short and 1 KB keys through each built-in.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use newcache_keyfn::{write_valid_key, HashedKey, PrefixedKey};
use std::hint::black_box;

fn key_functions(c: &mut Criterion) {
    let short = "user:42:profile".to_string();
    let long = "k".repeat(1024);
    let hashed = HashedKey::new("staging", 2);
    let prefixed = PrefixedKey::new("site", 2);
    let mut group = c.benchmark_group("keyfn");
    for (name, key) in [("short", &short), ("1KB", &long)] {
        group.throughput(Throughput::Bytes(key.len() as u64));
        group.bench_with_input(BenchmarkId::new("hashed", name), key, |b, key| {
            let mut out = Vec::with_capacity(64);
            b.iter(|| {
                out.clear();
                write_valid_key(&hashed, black_box(key), &mut out).expect("valid");
                black_box(&out);
            })
        });
    }
    group.bench_function(BenchmarkId::new("django", "short"), |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            write_valid_key(&prefixed, black_box(&short), &mut out).expect("valid");
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = newcache_benches::config();
    targets = key_functions
}
criterion_main!(benches);
