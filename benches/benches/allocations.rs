//! Heap allocations per call on the get path, against a real memcached: `Cache::get` hit of a
//! 100-byte value and `Cache::get_many` of 100 keys through the text transport
//! (`newcache://ADDR/?transport=text`), with a miss, a set and the text transport alone
//! (`TextTransport::get`/`get_many`, no facade) beside them to say where the counts come from.
//!
//! Not criterion: dhat's counting allocator (this binary's global allocator; its unsafe code
//! lives in dhat, so the benches have none) counts the heap allocations (a reallocation counts
//! as one) and the bytes they ask for. Each case runs a few times first (connection,
//! buffers), then `N` times; the report divides by `N`. The counts are deterministic, so `N`
//! is small. Nothing else runs while a case is counted: the process has no other threads
//! then.
//!
//! Prints a table; with `NEWCACHE_ALLOCATIONS_OUT=path` (`cargo xtask bench` sets it) also
//! writes `case<TAB>allocations per call<TAB>bytes per call` lines there for the report.
//! libmemcached's own allocations go through C `malloc`, which this allocator does not see,
//! so libmemcached is not measured here.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;

use newcache::{Cache, Ttl};
use newcache_benches::clients;
use newcache_testkit::Memcached;
use newcache_transport::{Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// The process's (allocations, bytes) so far.
fn snapshot() -> [u64; 2] {
    let stats = dhat::HeapStats::get();
    [stats.total_blocks, stats.total_bytes]
}

/// Calls per case after the warm-up.
const N: u64 = 1000;

/// One case's counts per call.
struct Counted {
    case: &'static str,
    per_call: [f64; 2],
}

/// Runs `f` a few times (connections, buffers), then `N` times, dropping each result inside
/// the counted region as a caller would; returns the counts per call.
fn count<T>(case: &'static str, mut f: impl FnMut() -> T) -> Counted {
    for _ in 0..5 {
        drop(black_box(f()));
    }
    let before = snapshot();
    for _ in 0..N {
        drop(black_box(f()));
    }
    let after = snapshot();
    let per_call = [0, 1].map(|i| (after[i] - before[i]) as f64 / N as f64);
    Counted { case, per_call }
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let server = Memcached::start();
    let value = "x".repeat(100);
    let keys = clients::many_keys();

    let cache =
        Cache::from_url(&format!("newcache://{}/?transport=text", server.addr())).expect("cache");
    clients::seed(&cache, &value, &keys);

    let text = TextTransport::new(TextConfig {
        servers: vec![server.addr()],
        ..TextConfig::default()
    })
    .expect("text transport");
    let raw_keys: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("raw-many-{i}").into_bytes())
        .collect();
    let raw_refs: Vec<&[u8]> = raw_keys.iter().map(Vec::as_slice).collect();
    for k in raw_refs.iter().copied().chain([&b"raw-hit"[..]]) {
        text.store(&Store::set(k, value.as_bytes(), 0, 0))
            .expect("store");
    }

    let results = [
        count("Cache::get::<String> hit, 100 B", || {
            let v: Option<String> = cache.get("hit").expect("get");
            assert_eq!(v.map(|v| v.len()), Some(100));
        }),
        count("Cache::get_raw hit, 100 B", || {
            let v = cache.get_raw("hit").expect("get_raw");
            assert_eq!(v.map(|v| v.bytes.len()), Some(100));
        }),
        count("Cache::get::<String> miss", || {
            let v: Option<String> = cache.get("absent").expect("get");
            assert!(v.is_none());
        }),
        count("Cache::get_many::<String> of 100 keys", || {
            let got: HashMap<String, String> = cache
                .get_many(&keys)
                .expect("get_many")
                .into_complete()
                .expect("get_many");
            assert_eq!(got.len(), 100);
        }),
        count("Cache::set 100 B", || {
            cache
                .set("set", value.as_str(), Ttl::Seconds(3600))
                .expect("set")
        }),
        count("TextTransport::get hit, 100 B", || {
            let item = text.get(b"raw-hit").expect("get");
            assert_eq!(item.map(|i| i.value.len()), Some(100));
        }),
        count("TextTransport::get_many of 100 keys", || {
            let items = text.get_many(&raw_refs).expect("get_many");
            assert!(items.iter().all(Option::is_some));
        }),
    ];

    println!("allocations per call ({N} calls after a warm-up)");
    println!("{:<42} {:>12} {:>10}", "case", "allocations", "bytes");
    let mut tsv = String::new();
    for Counted { case, per_call } in &results {
        let [a, b] = per_call;
        println!("{case:<42} {a:>12.2} {b:>10.0}");
        tsv.push_str(&format!("{case}\t{a:.2}\t{b:.0}\n"));
    }
    if let Some(path) = std::env::var_os("NEWCACHE_ALLOCATIONS_OUT") {
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(tsv.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.to_string_lossy()));
    }
}
