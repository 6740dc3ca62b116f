//! Herd envelope and value codec micro-benchmarks, and the three together (key function +
//! envelope + codec), which is what the facade adds to every operation.

use criterion::{criterion_group, criterion_main, Criterion};
use newcache::codec::{self, ValueCodec};
use newcache_herd::{Envelope, Herd, Ttl};
use newcache_keyfn::{write_valid_key, HashedKey};
use serde::{Deserialize, Serialize};
use std::hint::black_box;

#[derive(Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn envelope(c: &mut Criterion) {
    let payload = vec![b'x'; 100];
    let mut group = c.benchmark_group("envelope");
    group.bench_function("encode_100B", |b| {
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            out.clear();
            Envelope::new(black_box(1_800_000_000_000)).encode(black_box(&payload), &mut out);
            black_box(&out);
        })
    });
    let mut bytes = Vec::new();
    Envelope::new(1_800_000_000_000).encode(&payload, &mut bytes);
    group.bench_function("decode_100B", |b| {
        b.iter(|| black_box(Envelope::decode(black_box(&bytes)).expect("valid")))
    });
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let text = "x".repeat(100);
    let profile = Profile {
        id: 42,
        name: "Ada".into(),
        tags: vec!["a".into(), "b".into()],
    };
    let mut group = c.benchmark_group("codec");
    group.bench_function("raw_text_100B_encode", |b| {
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            out.clear();
            black_box(
                codec::encode(black_box(text.as_str()), &mut out, ValueCodec::Bincode)
                    .expect("encodes"),
            );
        })
    });
    group.bench_function("raw_text_100B_decode", |b| {
        b.iter(|| {
            black_box(codec::decode::<String>(
                black_box(text.as_bytes()),
                codec::FLAG_TEXT,
            ))
        })
    });
    for codec in [ValueCodec::Bincode, ValueCodec::Json] {
        let name = codec.name();
        let mut encoded = Vec::new();
        let flags = codec::encode(&profile, &mut encoded, codec).expect("encodes");
        group.bench_function(format!("{name}_struct_encode"), |b| {
            let mut out = Vec::with_capacity(128);
            b.iter(|| {
                out.clear();
                black_box(codec::encode(black_box(&profile), &mut out, codec).expect("encodes"));
            })
        });
        group.bench_function(format!("{name}_struct_decode"), |b| {
            b.iter(|| black_box(codec::decode::<Profile>(black_box(&encoded), flags)))
        });
    }
    group.finish();
}

fn facade_overhead(c: &mut Criterion) {
    let kf = HashedKey::new("staging", 2);
    let herd = Herd::new(60);
    let text = "x".repeat(100);
    let mut g = c.benchmark_group("facade_overhead");
    g.bench_function("set_100B", |b| {
        let mut key = Vec::with_capacity(64);
        let mut value = Vec::with_capacity(160);
        b.iter(|| {
            key.clear();
            value.clear();
            write_valid_key(&kf, black_box("user:42:profile"), &mut key).expect("valid");
            let plan = herd.plan_store(Ttl::Seconds(300), true, black_box(1_800_000_000_000));
            if let Some(soft) = plan.soft_expiry_millis {
                Envelope::new(soft).encode_header(&mut value);
            }
            black_box(
                codec::encode(text.as_str(), &mut value, ValueCodec::Bincode).expect("encodes"),
            );
            black_box((&key, &value, plan.exptime));
        })
    });
    // The read side: the key, opening the envelope, decoding the value.
    let mut stored = Vec::new();
    Envelope::new(1_900_000_000_000).encode_header(&mut stored);
    let flags = codec::encode(text.as_str(), &mut stored, ValueCodec::Bincode).expect("encodes");
    g.bench_function("get_100B", |b| {
        let mut key = Vec::with_capacity(64);
        b.iter(|| {
            key.clear();
            write_valid_key(&kf, black_box("user:42:profile"), &mut key).expect("valid");
            let (envelope, rest) = Envelope::decode(black_box(&stored)).expect("envelope");
            let fresh = herd.on_read(&envelope, black_box(1_800_000_000_000));
            let value: String = codec::decode(rest, flags).expect("decodes");
            black_box((&key, fresh, value));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = newcache_benches::config();
    targets = envelope, codecs, facade_overhead
}
criterion_main!(benches);
