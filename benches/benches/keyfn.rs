//! Key function micro-benchmarks: short and 1 KB keys through each built-in, and a
//! multi-get's 100 short keys hashed one at a time or four at a time (`write_keys`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use newcache_keyfn::{write_valid_key, HashedKey, KeyFunction, PrefixedKey};
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
    let hundred: Vec<String> = (0..100).map(|i| format!("user:{i}:profile")).collect();
    let hundred: Vec<&str> = hundred.iter().map(String::as_str).collect();
    group.throughput(Throughput::Elements(100));
    group.bench_function(BenchmarkId::new("hashed_100", "one_at_a_time"), |b| {
        let mut out = Vec::with_capacity(8192);
        b.iter(|| {
            out.clear();
            for key in black_box(&hundred) {
                hashed.write_key(key, &mut out);
            }
            black_box(&out);
        })
    });
    group.bench_function(BenchmarkId::new("hashed_100", "four_at_a_time"), |b| {
        let (mut out, mut ends) = (Vec::with_capacity(8192), Vec::with_capacity(100));
        b.iter(|| {
            out.clear();
            ends.clear();
            // As a multi-get makes them (newcache's WireKeys): four keys per call.
            for four in black_box(&hundred).chunks(4) {
                hashed.write_keys(four, &mut out, &mut ends);
            }
            black_box((&out, &ends));
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
