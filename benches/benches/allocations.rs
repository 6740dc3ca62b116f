//! Heap allocations per call on the get path, against a real memcached: `Cache::get` hit of a
//! 100-byte value and `Cache::get_many` of 100 keys through the text transport
//! (`newcache://ADDR/?transport=text`), with a miss, a set and the text transport alone
//! (`TextTransport::get`/`get_many`, no facade) beside them to say where the counts come from.
//!
//! Not criterion: this binary's own global allocator counts the allocations (and
//! reallocations) of the calling thread and the bytes they ask for. Each case runs a few
//! times first (connection, buffers), then `N` times; the report divides by `N`. The counts
//! are deterministic, so `N` is small.
//!
//! Prints a table; with `NEWCACHE_ALLOCATIONS_OUT=path` (`cargo xtask bench` sets it) also
//! writes `case<TAB>allocations per call<TAB>reallocations per call<TAB>bytes per call`
//! lines there for the report. libmemcached's own allocations go through C `malloc`, which
//! this allocator does not see, so libmemcached is not measured here.
//!
//! This file and `src/raw_libmemcached.rs` are the only `unsafe` code of the benches.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;

use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;
use newcache_transport::{Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport};

/// The system allocator, counting per thread.
struct Counting;

thread_local! {
    // `const` initialisers without destructors: using them from inside the allocator never
    // allocates or registers anything.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static REALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>, by: u64) {
    // `try_with`: during thread teardown the slot may be gone; such calls are not counted.
    let _ = counter.try_with(|c| c.set(c.get() + by));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are this allocator's; the counting touches only thread-local cells
// and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCS, 1);
        bump(&BYTES, layout.size() as u64);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCS, 1);
        bump(&BYTES, layout.size() as u64);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(&REALLOCS, 1);
        bump(&BYTES, new_size.saturating_sub(layout.size()) as u64);
        // SAFETY: `ptr` and `layout` come from this allocator, i.e. from `System`, and the
        // caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's (allocations, reallocations, bytes) so far.
fn snapshot() -> [u64; 3] {
    [&ALLOCS, &REALLOCS, &BYTES].map(|c| c.with(Cell::get))
}

/// Calls per case after the warm-up.
const N: u64 = 1000;

/// One case's counts per call.
struct Counted {
    case: &'static str,
    per_call: [f64; 3],
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
    let per_call = [0, 1, 2].map(|i| (after[i] - before[i]) as f64 / N as f64);
    Counted { case, per_call }
}

fn main() {
    let server = Memcached::start();
    let value = "x".repeat(100);
    let keys: Vec<String> = (0..100).map(|i| format!("many-{i}")).collect();

    let cache =
        Cache::from_url(&format!("newcache://{}/?transport=text", server.addr())).expect("cache");
    cache
        .set("hit", value.as_str(), Ttl::Seconds(3600))
        .expect("set");
    cache
        .set_many(
            keys.iter().map(|k| (k.as_str(), value.as_str())),
            Ttl::Seconds(3600),
        )
        .expect("set_many");

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
            let got: HashMap<String, String> = cache.get_many(&keys).expect("get_many");
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

    println!("allocations per call (this thread; {N} calls after a warm-up)");
    println!(
        "{:<42} {:>12} {:>14} {:>10}",
        "case", "allocations", "reallocations", "bytes"
    );
    let mut tsv = String::new();
    for Counted { case, per_call } in &results {
        let [a, r, b] = per_call;
        println!("{case:<42} {a:>12.2} {r:>14.2} {b:>10.0}");
        tsv.push_str(&format!("{case}\t{a:.2}\t{r:.2}\t{b:.0}\n"));
    }
    if let Some(path) = std::env::var_os("NEWCACHE_ALLOCATIONS_OUT") {
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(tsv.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.to_string_lossy()));
    }
}
