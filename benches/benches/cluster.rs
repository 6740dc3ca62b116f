//! Clusters: the placement lookup alone (no I/O), and `get_many` of 100 keys spread over three
//! memcached servers against the same on one server, with the text transport's pipelining
//! (every server gets its request before any reply is read) and, for contrast, the same keys
//! fetched one server after the other.
//!
//! `NEWCACHE_BENCH_QUICK=1` shortens every measurement (`cargo xtask bench --quick`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use newcache_placement::{Behaviors, Ring, Server};
use newcache_testkit::Memcached;
use newcache_transport::{Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport};

fn placement(c: &mut Criterion) {
    let servers: Vec<Server> = (0..10)
        .map(|i| Server::parse(&format!("10.0.0.{i}:11211:{}", 1 + i % 3)).expect("server"))
        .collect();
    // A typical wire key: newcache's hashed key (flavor-version-sha1hex).
    let key = b"prod-1-dd27204535de317c6202952eeb2043fad52e3fec";
    let mut g = c.benchmark_group("placement_10_servers");
    g.throughput(Throughput::Elements(1));
    for (name, behaviors) in [
        ("modula", vec![]),
        ("modula-md5", vec![("hash", "md5")]),
        ("ketama", vec![("ketama", "true")]),
        ("ketama-weighted", vec![("ketama_weighted", "true")]),
    ] {
        let mut b = Behaviors::default();
        for (n, v) in behaviors {
            b.set(n, v).expect("behavior");
        }
        let ring = Ring::new(&servers, &b.settings(&servers));
        g.bench_function(format!("lookup/{name}"), |bench| {
            bench.iter(|| black_box(ring.server_for_key(black_box(key))))
        });
        g.bench_function(format!("build/{name}"), |bench| {
            bench.iter(|| black_box(Ring::new(&servers, &b.settings(&servers)).points()))
        });
    }
    g.finish();
}

fn text(servers: &[Memcached]) -> TextTransport {
    TextTransport::new(TextConfig {
        servers: servers.iter().map(Memcached::addr).collect(),
        ..TextConfig::default()
    })
    .expect("text transport")
}

fn get_many(c: &mut Criterion) {
    let one = vec![Memcached::start()];
    let three = vec![Memcached::start(), Memcached::start(), Memcached::start()];
    let keys: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("cluster-bench:{i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let value = vec![b'v'; 100];

    let mut g = c.benchmark_group("cluster_get_many_100");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for (name, servers) in [("text-1-server", &one), ("text-3-servers", &three)] {
        let t = text(servers);
        for k in &refs {
            t.store(&Store::set(k, &value, 0, 3600)).expect("set");
        }
        assert!(t
            .get_many(&refs)
            .expect("get_many")
            .iter()
            .all(Option::is_some));
        g.bench_function(name, |b| {
            b.iter(|| black_box(t.get_many(&refs).expect("get_many")))
        });
    }
    // The same three servers read one after the other: what pipelining saves.
    let t = text(&three);
    let mut by_server: Vec<Vec<&[u8]>> = vec![Vec::new(); 3];
    for k in &refs {
        by_server[t.server_for_key(k).expect("placed")].push(k);
    }
    g.bench_function("text-3-servers-one-after-another", |b| {
        b.iter(|| {
            for batch in &by_server {
                black_box(t.get_many(batch).expect("get_many"));
            }
        })
    });
    #[cfg(feature = "binary")]
    {
        use newcache_transport_binary::{BinaryConfig, BinaryTransport};
        for (name, servers) in [
            ("libmemcached-text-1-server", &one),
            ("libmemcached-text-3-servers", &three),
        ] {
            let t = BinaryTransport::new(BinaryConfig {
                binary_protocol: false,
                ..BinaryConfig::new(servers.iter().map(Memcached::addr))
            })
            .expect("libmemcached");
            assert!(t
                .get_many(&refs)
                .expect("get_many")
                .iter()
                .all(Option::is_some));
            g.bench_function(name, |b| {
                b.iter(|| black_box(t.get_many(&refs).expect("get_many")))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = newcache_benches::config();
    targets = placement, get_many
}
criterion_main!(benches);
