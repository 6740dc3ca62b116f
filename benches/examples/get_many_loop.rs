//! `get_many` of 100 short keys in a loop, for a profiler: the text transport alone, the
//! blocking `Cache`, or the `AsyncCache`, the caches through an identity key function (the
//! same wire keys as the transport's), on a memcached of their own (`-t 1`).
//!
//! ```text
//! cargo build --profile bench -p newcache-benches --features binary --example get_many_loop
//! perf record -F 5000 --no-inherit --call-graph dwarf,16384 \
//!     target/release/examples/get_many_loop cache 8000
//! ```
//!
//! Arguments: `transport`, `cache` or `async`, then the number of calls (20,000 by default).
//! Prints the mean time per call.

use std::collections::HashMap;
use std::time::Instant;

use newcache_testkit::Memcached;
use newcache_transport::Transport;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "cache".to_string());
    let calls: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let server = Memcached::with_args(&["-t", "1"]);
    let addr = server.addr();
    let text = newcache_benches::clients::text_transport(&addr);
    let value = "x".repeat(100);
    let keys = newcache_benches::clients::seed_raw_many(&text, value.as_bytes());
    let wire: Vec<&[u8]> = keys.iter().map(String::as_bytes).collect();
    let cache = newcache_benches::clients::identity_keys(&addr)
        .build()
        .expect("cache");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let async_cache = rt.block_on(async {
        newcache_benches::clients::identity_keys(&addr)
            .build_async()
            .expect("async cache")
    });
    let start = Instant::now();
    for _ in 0..calls {
        let found = match mode.as_str() {
            "transport" => text
                .get_many(&wire)
                .expect("get_many")
                .iter()
                .filter(|item| item.is_some())
                .count(),
            "cache" => {
                let got: HashMap<String, String> = cache
                    .get_many(&keys)
                    .expect("get_many")
                    .into_complete()
                    .expect("values");
                got.len()
            }
            "async" => {
                let got: HashMap<String, String> = rt
                    .block_on(async_cache.get_many(&keys))
                    .expect("get_many")
                    .into_complete()
                    .expect("values");
                got.len()
            }
            other => panic!("unknown mode {other:?}: transport, cache or async"),
        };
        assert_eq!(found, 100);
    }
    let per_call = start.elapsed().as_secs_f64() * 1e6 / f64::from(calls);
    println!("{mode}: {per_call:.1} µs per get_many of 100");
}
