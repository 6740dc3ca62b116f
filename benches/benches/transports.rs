//! Transports through the whole `Cache` facade (key function + herd envelope + codec), with
//! peers in the same run against the same memcached: the baseline, raw libmemcached through
//! bare `libmemcached-sys` calls (`libmemcached-sys-text`, `libmemcached-sys-binary`, see
//! `newcache_transport_binary::bare`), libmemcached through `newcache-transport-binary` with no facade,
//! the text transport with no facade, the `memcache` crate, and the loopback floor (a raw `mn`
//! ping-pong on one TCP connection).
//!
//! `NEWCACHE_BENCH_QUICK=1` shortens every measurement (`cargo xtask bench --quick`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use newcache::Ttl;
use newcache_benches::clients;
use newcache_testkit::Memcached;
#[cfg(feature = "binary")]
use newcache_transport_binary::bare;
use std::hint::black_box;

fn transports(c: &mut Criterion) {
    // One worker thread: memcached hands each new connection to its workers in turn, and
    // on this 2-core machine a row's speed then depends on which worker (and so which core)
    // its connection landed on. With one worker every row's connection is served alike, so
    // rows differ only by their client.
    let server = Memcached::with_args(&["-t", "1"]);
    let value = "x".repeat(100);
    let addr = server.addr();
    let caches = clients::caches(&addr);
    #[cfg(feature = "binary")]
    let raw = clients::wrapper_libmemcached(&addr);
    #[cfg(feature = "binary")]
    let bare = clients::bare_libmemcached(&addr);
    let text = clients::text_transport(&addr);
    let peers = clients::memcache_peers(&addr);
    let keys = clients::many_keys();
    for (_, cache) in &caches {
        clients::seed(cache, &value, &keys);
    }

    // The floor: one `mn` round trip on a raw TCP connection.
    let mut floor = clients::floor(&addr);

    let mut g = c.benchmark_group("get_hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("loopback-floor-mn", |b| {
        b.iter(|| clients::floor_round_trip(&mut floor))
    });
    for (name, cache) in &caches {
        g.bench_function(*name, |b| {
            b.iter(|| black_box(cache.get::<String>("hit").expect("get")))
        });
    }
    #[cfg(feature = "binary")]
    for (name, t) in &raw {
        use newcache_transport::{Store, Transport};
        t.store(&Store::set(b"raw-hit", value.as_bytes(), 16, 0))
            .expect("store");
        g.bench_function(*name, |b| {
            b.iter(|| black_box(t.get(b"raw-hit").expect("get")))
        });
    }
    {
        use newcache_transport::{Store, Transport};
        text.store(&Store::set(b"raw-hit", value.as_bytes(), 16, 0))
            .expect("store");
        g.bench_function("transport-text", |b| {
            b.iter(|| black_box(text.get(b"raw-hit").expect("get")))
        });
    }
    #[cfg(feature = "binary")]
    for (name, c) in &bare {
        c.borrow_mut()
            .set(b"raw-hit", value.as_bytes())
            .expect("set");
        g.bench_function(*name, |b| {
            b.iter(|| black_box(c.borrow_mut().get(b"raw-hit").expect("get").expect("hit")))
        });
    }
    for (name, client) in &peers {
        client.set("peer-hit", value.as_str(), 0).expect("set");
        g.bench_function(*name, |b| {
            b.iter(|| black_box(client.get::<String>("peer-hit").expect("get")))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("get_miss");
    g.throughput(Throughput::Elements(1));
    for (name, cache) in &caches {
        g.bench_function(*name, |b| {
            b.iter(|| black_box(cache.get::<String>("absent").expect("get")))
        });
    }
    #[cfg(feature = "binary")]
    for (name, t) in &raw {
        use newcache_transport::Transport;
        g.bench_function(*name, |b| {
            b.iter(|| black_box(t.get(b"absent").expect("get")))
        });
    }
    #[cfg(feature = "binary")]
    for (name, c) in &bare {
        g.bench_function(*name, |b| {
            b.iter(|| assert!(c.borrow_mut().get(b"absent").expect("get").is_none()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("set_100B");
    g.throughput(Throughput::Elements(1));
    for (name, cache) in &caches {
        g.bench_function(*name, |b| {
            b.iter(|| {
                cache
                    .set("set", value.as_str(), Ttl::Seconds(3600))
                    .expect("set")
            })
        });
    }
    #[cfg(feature = "binary")]
    for (name, t) in &raw {
        use newcache_transport::{Store, Transport};
        g.bench_function(*name, |b| {
            b.iter(|| {
                t.store(&Store::set(b"raw-set", value.as_bytes(), 16, 3600))
                    .expect("store")
            })
        });
    }
    #[cfg(feature = "binary")]
    for (name, c) in &bare {
        g.bench_function(*name, |b| {
            b.iter(|| {
                c.borrow_mut()
                    .set(b"raw-set", value.as_bytes())
                    .expect("set")
            })
        });
    }
    // Raw libmemcached storing what the facade puts on the wire for the same set: its
    // hashed key and the value (stored bare: the herd state rides in the flags). Separates
    // the facade's CPU cost from the cost of its longer key at the server.
    #[cfg(feature = "binary")]
    if let Some((_, c)) = bare.first() {
        let (_, cache) = &caches[0];
        let wire = cache.wire_key("set").expect("wire key");
        g.bench_function("libmemcached-sys-text-facade-wire-bytes", |b| {
            b.iter(|| c.borrow_mut().set(&wire, value.as_bytes()).expect("set"))
        });
    }
    {
        use newcache_transport::{Store, Transport};
        g.bench_function("transport-text", |b| {
            b.iter(|| {
                text.store(&Store::set(b"raw-set", value.as_bytes(), 16, 3600))
                    .expect("store")
            })
        });
    }
    for (name, client) in &peers {
        g.bench_function(*name, |b| {
            b.iter(|| client.set("peer-set", value.as_str(), 3600).expect("set"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("get_many_100");
    g.throughput(Throughput::Elements(100));
    for (name, cache) in &caches {
        g.bench_function(*name, |b| {
            b.iter(|| clients::all_hundred(cache.get_many(&keys)))
        });
    }
    #[cfg(feature = "binary")]
    for (name, t) in &raw {
        use newcache_transport::Transport;
        let raw_keys = clients::seed_raw_many(t, value.as_bytes());
        let refs: Vec<&[u8]> = raw_keys.iter().map(String::as_bytes).collect();
        g.bench_function(*name, |b| {
            b.iter(|| black_box(t.get_many(&refs).expect("get_many")))
        });
    }
    {
        use newcache_transport::Transport;
        let raw_keys = clients::seed_raw_many(&text, value.as_bytes());
        let refs: Vec<&[u8]> = raw_keys.iter().map(String::as_bytes).collect();
        g.bench_function("transport-text", |b| {
            b.iter(|| black_box(text.get_many(&refs).expect("get_many")))
        });
        #[cfg(feature = "binary")]
        {
            let short_keys = bare::Keys::new(&raw_keys);
            for (name, c) in &bare {
                g.bench_function(*name, |b| {
                    b.iter(|| {
                        let (hits, bytes) = c.borrow_mut().get_many(&short_keys).expect("get_many");
                        assert_eq!((hits, bytes), (100, 10_000));
                    })
                });
            }
            // Raw libmemcached reading exactly what the facade reads: its 100 hashed wire
            // keys and the items the facade stored (each value bare, as the facade stores it).
            if let (Some((_, c)), Some((_, cache))) = (bare.first(), caches.first()) {
                let wire: Vec<Vec<u8>> = keys
                    .iter()
                    .map(|k| cache.wire_key(k).expect("wire key"))
                    .collect();
                let wire = bare::Keys::new(&wire);
                g.bench_function("libmemcached-sys-text-facade-wire-bytes", |b| {
                    b.iter(|| {
                        let (hits, bytes) = c.borrow_mut().get_many(&wire).expect("get_many");
                        assert_eq!((hits, bytes), (100, 10_000));
                    })
                });
            }
        }
    }
    for (name, client) in &peers {
        let peer_keys: Vec<String> = (0..100).map(|i| format!("peer-many-{i}")).collect();
        for k in &peer_keys {
            client.set(k, value.as_str(), 0).expect("set");
        }
        let refs: Vec<&str> = peer_keys.iter().map(String::as_str).collect();
        g.bench_function(*name, |b| {
            b.iter(|| black_box(client.gets::<String>(&refs).expect("gets")))
        });
    }
    g.finish();

    // One set and one get of 100 KB: the facade with a `String` and a `Vec<u8>` value, and
    // each transport alone storing and reading the same bytes.
    let big_text = clients::big_value();
    let big = big_text.as_bytes().to_vec();
    let mut g = c.benchmark_group("set_get_100KB");
    g.throughput(Throughput::Elements(1));
    for (name, cache) in &caches {
        g.bench_function(format!("{name}-string"), |b| {
            b.iter(|| {
                cache
                    .set("big-string", big_text.as_str(), Ttl::Seconds(3600))
                    .expect("set");
                black_box(cache.get::<String>("big-string").expect("get"))
            })
        });
        g.bench_function(format!("{name}-vec"), |b| {
            b.iter(|| {
                cache.set("big", &big, Ttl::Seconds(3600)).expect("set");
                black_box(cache.get::<Vec<u8>>("big").expect("get"))
            })
        });
    }
    {
        use newcache_transport::{Store, Transport};
        g.bench_function("transport-text", |b| {
            b.iter(|| {
                text.store(&Store::set(b"raw-big", &big, 16, 3600))
                    .expect("store");
                black_box(text.get(b"raw-big").expect("get"))
            })
        });
    }
    // The libmemcached transport alone in the protocol the facade rows use (binary=true).
    #[cfg(feature = "binary")]
    for (name, t) in raw.iter().filter(|(n, _)| n.ends_with("-binary")) {
        use newcache_transport::{Store, Transport};
        g.bench_function(*name, |b| {
            b.iter(|| {
                t.store(&Store::set(b"raw-big", &big, 16, 3600))
                    .expect("store");
                black_box(t.get(b"raw-big").expect("get"))
            })
        });
    }
    #[cfg(feature = "binary")]
    for (name, c) in &bare {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut c = c.borrow_mut();
                c.set(b"raw-big", &big).expect("set");
                black_box(c.get(b"raw-big").expect("get"))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = newcache_benches::config();
    targets = transports
}
criterion_main!(benches);
