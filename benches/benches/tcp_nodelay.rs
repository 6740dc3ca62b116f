//! Does a libmemcached get miss wait for Nagle's algorithm without `TCP_NODELAY`?
//!
//! Bare libmemcached (through `libmemcached-sys`), one handle, a get of a key that is not
//! there, with `MEMCACHED_BEHAVIOR_TCP_NODELAY` off (libmemcached's default) and on, text and
//! binary protocol, read two ways: `memcached_get`, and a one-key `memcached_mget` +
//! `memcached_fetch_result` (how wrappers built on `mget`, `newcache-transport-binary`
//! included, read one key). Flat sampling, so a row that waits tens of milliseconds per call
//! still finishes in about a second.
//!
//! Without the `binary` feature there is nothing to measure.
//!
//! `NEWCACHE_BENCH_QUICK=1` shortens every measurement (`cargo xtask bench --quick`).

use criterion::{criterion_group, criterion_main, Criterion};

#[cfg(feature = "binary")]
fn tcp_nodelay(c: &mut Criterion) {
    use criterion::{SamplingMode, Throughput};
    use newcache_testkit::Memcached;
    use newcache_transport_binary::bare::{Bare, Keys, Options};

    let server = Memcached::start();
    let absent = Keys::new(&["absent"]);
    let mut g = c.benchmark_group("get_miss_tcp_nodelay");
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    for (protocol, binary) in [("text", false), ("binary", true)] {
        for tcp_nodelay in [false, true] {
            let options = Options {
                binary,
                tcp_nodelay,
            };
            let mut h = Bare::connect(&server.addr(), options).expect("libmemcached");
            let nodelay = if tcp_nodelay { "on" } else { "off" };
            g.bench_function(format!("{protocol}/memcached_get/nodelay-{nodelay}"), |b| {
                b.iter(|| assert_eq!(h.get(b"absent").expect("get"), None))
            });
            g.bench_function(format!("{protocol}/mget-1-key/nodelay-{nodelay}"), |b| {
                b.iter(|| assert_eq!(h.get_via_mget(&absent).expect("mget"), None))
            });
        }
    }
    g.finish();
}

#[cfg(not(feature = "binary"))]
fn tcp_nodelay(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = newcache_benches::config();
    targets = tcp_nodelay
}
criterion_main!(benches);
