//! Herd state (in the flags) and value codec micro-benchmarks, and the three together (key function +
//! envelope + codec), which is what the facade adds to every operation.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use newcache::codec::{self, ValueCodec};
use newcache_herd::{read_flags, value_flags, Envelope, Herd, Ttl};
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
    let mut group = c.benchmark_group("envelope");
    // The herd state rides in the item's flags: encoding and reading it touch no value bytes.
    group.bench_function("to_flags", |b| {
        b.iter(|| {
            black_box(
                Envelope::new(black_box(1_800_000_300_000)).flags(black_box(1_800_000_000_000), 60),
            )
        })
    });
    let flags = 16 | Envelope::new(1_800_000_300_000).flags(1_800_000_000_000, 60);
    group.bench_function("read_flags", |b| {
        b.iter(|| black_box(read_flags(black_box(flags), black_box(1_800_000_100_000))))
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
    // 100 KB through the plain codec as the facade does it: encoded into a buffer of its
    // own, decoded by taking the transport's buffer over (`decode_vec`; the buffer's copy is
    // setup, not measured). A `String` is one copy in and none out; a `Vec<u8>` goes through
    // serde's sequence path, one element at a time, both ways.
    let big_text = newcache_benches::clients::big_value();
    let big_bytes = big_text.as_bytes().to_vec();
    let mut encoded_text = Vec::new();
    let text_flags =
        codec::encode(big_text.as_str(), &mut encoded_text, ValueCodec::Bincode).expect("encodes");
    let mut encoded_bytes = Vec::new();
    let bytes_flags =
        codec::encode(&big_bytes, &mut encoded_bytes, ValueCodec::Bincode).expect("encodes");
    group.bench_function("string_100KB_encode", |b| {
        let mut out = Vec::with_capacity(big_text.len());
        b.iter(|| {
            out.clear();
            black_box(
                codec::encode(black_box(big_text.as_str()), &mut out, ValueCodec::Bincode)
                    .expect("encodes"),
            );
        })
    });
    group.bench_function("string_100KB_decode", |b| {
        b.iter_batched(
            || encoded_text.clone(),
            |v| black_box(codec::decode_vec::<String>(v, 0, text_flags).expect("decodes")),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("vec_u8_100KB_encode", |b| {
        let mut out = Vec::with_capacity(big_bytes.len());
        b.iter(|| {
            out.clear();
            black_box(
                codec::encode(black_box(&big_bytes), &mut out, ValueCodec::Bincode)
                    .expect("encodes"),
            );
        })
    });
    group.bench_function("vec_u8_100KB_decode", |b| {
        b.iter_batched(
            || encoded_bytes.clone(),
            |v| black_box(codec::decode_vec::<Vec<u8>>(v, 0, bytes_flags).expect("decodes")),
            BatchSize::LargeInput,
        )
    });
    // What a copy of 100 KB costs on this machine, for scale.
    group.bench_function("memcpy_100KB", |b| {
        let mut out = Vec::with_capacity(big_bytes.len());
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&big_bytes));
            black_box(&out);
        })
    });
    for codec in [ValueCodec::Bincode, ValueCodec::Json, ValueCodec::Pickle] {
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
            let now = black_box(1_800_000_000_000);
            let plan = herd
                .plan_store(Ttl::Seconds(300), true, now)
                .expect("a TTL memcached keeps");
            let mut flags =
                codec::encode(text.as_str(), &mut value, ValueCodec::Bincode).expect("encodes");
            if let Some(soft) = plan.soft_expiry_millis {
                flags |= Envelope::new(soft).flags(now, herd.herd_timeout);
            }
            black_box((&key, &value, flags, plan.exptime));
        })
    });
    // The read side: the key, reading the herd state from the flags, decoding the value.
    let mut stored = Vec::new();
    let flags = codec::encode(text.as_str(), &mut stored, ValueCodec::Bincode).expect("encodes")
        | Envelope::new(1_900_000_000_000).flags(1_800_000_000_000, 60);
    g.bench_function("get_100B", |b| {
        let mut key = Vec::with_capacity(64);
        b.iter(|| {
            key.clear();
            write_valid_key(&kf, black_box("user:42:profile"), &mut key).expect("valid");
            let now = black_box(1_800_000_000_000);
            let Some(envelope) = read_flags(black_box(flags), now) else {
                unreachable!("written with the flags format")
            };
            let fresh = herd.on_read(&envelope, now);
            let value: String =
                codec::decode(black_box(&stored), value_flags(flags)).expect("decodes");
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
