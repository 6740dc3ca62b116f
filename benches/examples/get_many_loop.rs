//! One operation in a loop, for a profiler or `perf stat`: a `get_many` of 100 short keys,
//! or a get hit of 100 bytes, through each layer, blocking and on tokio. The caches use an
//! identity key function (the same wire keys as the transports'), on a memcached of their
//! own (`-t 1`); the async modes run on a current-thread runtime this thread drives
//! (`block_on`), as the interleaved bench runs them.
//!
//! ```text
//! cargo build --profile bench -p newcache-benches --features binary --example get_many_loop
//! perf record -F 5000 --no-inherit --call-graph dwarf,16384 \
//!     target/release/examples/get_many_loop cache 8000
//! perf stat -i -e task-clock,syscalls:sys_enter_epoll_wait \
//!     target/release/examples/get_many_loop atransport 20000
//! ```
//!
//! Arguments: the mode, then the number of calls (20,000 by default). Modes:
//! - `get_many` of 100: `transport`, `cache` (blocking); `atransport`, `async` (tokio);
//! - get hit: `tget`, `cget` (blocking); `atget`, `aget` (tokio);
//! - an `mn` round trip on a raw socket: `floor` (blocking), `afloor` (tokio).
//!
//! Prints the mean time per call.

use std::collections::HashMap;
use std::time::Instant;

use newcache_benches::clients;
use newcache_testkit::Memcached;
use newcache_transport::{AsyncTransport, Store, Transport};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "cache".to_string());
    let calls: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let server = Memcached::with_args(&["-t", "1"]);
    let addr = server.addr();
    let text = clients::text_transport(&addr);
    let value = "x".repeat(100);
    let keys = clients::seed_raw_many(&text, value.as_bytes());
    let wire: Vec<&[u8]> = keys.iter().map(String::as_bytes).collect();
    text.store(&Store::set(b"hit", value.as_bytes(), 16, 0))
        .expect("store the hit");
    let cache = clients::identity_keys(&addr).build().expect("cache");
    let mut floor = clients::floor(&addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (async_cache, async_text, async_floor) = rt.block_on(async {
        let cache = clients::identity_keys(&addr)
            .build_async()
            .expect("async cache");
        (
            cache,
            clients::tokio_text_transport(&addr),
            clients::tokio_floor(&addr).await,
        )
    });
    // What one call found, out of what it asked for.
    let all = |found: usize, asked: usize| assert_eq!(found, asked, "{mode}: misses");
    let start = Instant::now();
    for _ in 0..calls {
        match mode.as_str() {
            "transport" => all(
                text.get_many(&wire)
                    .expect("get_many")
                    .iter()
                    .flatten()
                    .count(),
                100,
            ),
            "atransport" => all(
                rt.block_on(async_text.get_many(&wire))
                    .expect("get_many")
                    .iter()
                    .flatten()
                    .count(),
                100,
            ),
            "cache" => {
                let got: HashMap<String, String> = cache
                    .get_many(&keys)
                    .expect("get_many")
                    .into_complete()
                    .expect("values");
                all(got.len(), 100);
            }
            "async" => {
                let got: HashMap<String, String> = rt
                    .block_on(async_cache.get_many(&keys))
                    .expect("get_many")
                    .into_complete()
                    .expect("values");
                all(got.len(), 100);
            }
            "tget" => all(text.get(b"hit").expect("get").iter().count(), 1),
            "atget" => all(
                rt.block_on(async_text.get(b"hit"))
                    .expect("get")
                    .iter()
                    .count(),
                1,
            ),
            "cget" => all(cache.get::<String>("hit").expect("get").iter().count(), 1),
            "aget" => all(
                rt.block_on(async_cache.get::<String>("hit"))
                    .expect("get")
                    .iter()
                    .count(),
                1,
            ),
            "floor" => clients::floor_round_trip(&mut floor),
            "afloor" => rt.block_on(clients::tokio_floor_round_trip(&async_floor)),
            other => panic!(
                "unknown mode {other:?}: transport, atransport, cache, async, tget, atget, \
                 cget, aget, floor or afloor"
            ),
        }
    }
    let per_call = start.elapsed().as_secs_f64() * 1e6 / f64::from(calls);
    println!("{mode}: {per_call:.1} µs per call");
}
