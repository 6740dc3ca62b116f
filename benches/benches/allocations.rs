//! Heap allocations per call on the get path, against a real memcached: `Cache::get` hit of a
//! 100-byte value and `Cache::get_many` of 100 keys through the text transport
//! (`newcache://ADDR/?transport=text`), with a miss, a set and the text transport alone
//! (`TextTransport::get`/`get_many`, no facade) beside them to say where the counts come from.
//! The value path (`clients::VALUE_PATH_ALLOCATIONS`): one set and one get of 100 KB through
//! `Cache` (a `String` and a `Vec<u8>` value) and `get_many` of 100 keys, beside the transport
//! alone doing the same, over the text transport and (feature `binary`) libmemcached's binary
//! protocol; there only the Rust side is counted (see below).
//!
//! Not criterion: dhat's counting allocator (this binary's global allocator; its unsafe code
//! lives in dhat, so the benches have none) counts the heap allocations (a reallocation counts
//! as one) and the bytes they ask for. Each case runs a few times first (connection,
//! buffers), then `N` times (`N_BIG` for the 100 KB cases; a handful under `cargo test`, which
//! runs this once as a smoke test); the report divides by that. The counts are deterministic,
//! so the number of calls is small. Nothing else runs while a case is counted: the process
//! has no other threads then.
//!
//! Prints a table; with `NEWCACHE_ALLOCATIONS_OUT=path` (`cargo xtask bench` sets it) also
//! writes `case<TAB>allocations per call<TAB>bytes per call` lines there for the report.
//! libmemcached's own allocations go through C `malloc`, which this allocator does not see,
//! so libmemcached is not measured here.

use std::hint::black_box;
use std::io::Write;

use newcache::{Cache, Ttl};
use newcache_benches::clients;
use newcache_testkit::Memcached;
use newcache_transport::{AsyncTransport, Store, Transport};
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
/// Calls per 100 KB case after the warm-up.
const N_BIG: u64 = 100;

/// One case's counts per call.
struct Counted {
    case: &'static str,
    per_call: [f64; 2],
}

/// Runs `f` a few times (connections, buffers), then `n` times, dropping each result inside
/// the counted region as a caller would; returns the counts per call.
fn count_n<T>(case: &'static str, n: u64, mut f: impl FnMut() -> T) -> Counted {
    for _ in 0..5 {
        drop(black_box(f()));
    }
    let before = snapshot();
    for _ in 0..n {
        drop(black_box(f()));
    }
    let after = snapshot();
    let per_call = [0, 1].map(|i| (after[i] - before[i]) as f64 / n as f64);
    Counted { case, per_call }
}

/// `cargo bench` passes `--bench`; `cargo test` does not, and then a few calls per case do.
fn calls(n: u64) -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        n
    } else {
        3
    }
}

/// [`count_n`] with `N` calls.
fn count<T>(case: &'static str, f: impl FnMut() -> T) -> Counted {
    count_n(case, calls(N), f)
}

/// [`count_n`] with `N_BIG` calls.
fn count_big<T>(case: &'static str, f: impl FnMut() -> T) -> Counted {
    count_n(case, calls(N_BIG), f)
}

/// One set and one get of `big` through `cache`, as a `T` (`String` or `Vec<u8>`).
fn set_get<'a, T, V>(cache: &'a Cache, key: &'a str, big: &'a V) -> impl FnMut() + 'a
where
    T: serde::de::DeserializeOwned + AsRef<[u8]> + 'static,
    V: serde::Serialize + ?Sized,
{
    move || {
        cache.set(key, big, Ttl::Seconds(3600)).expect("set");
        let got: Option<T> = cache.get(key).expect("get");
        assert_eq!(got.map(|v| v.as_ref().len()), Some(clients::BIG));
    }
}

/// One store and one get of `big` through the transport alone, with the flags the facade
/// stores a text value with.
fn store_get<'a>(
    t: &'a dyn Transport,
    key: &'a [u8],
    big: &'a [u8],
    flags: u32,
) -> impl FnMut() + 'a {
    move || {
        t.store(&Store::set(key, big, flags, 3600)).expect("store");
        let item = t.get(key).expect("get");
        assert_eq!(item.map(|i| i.value.len()), Some(clients::BIG));
    }
}

/// The value path's cases of `cache` (a `Cache` over `transport`) and of `transport` alone:
/// set+get of 100 KB (`String`, `Vec<u8>`, the transport alone) and get_many of 100 keys
/// (the facade, the transport alone), named by `names` in that order.
fn value_path(
    names: [&'static str; 5],
    cache: &Cache,
    transport: &dyn Transport,
    keys: &[String],
) -> Vec<Counted> {
    let [string, vec, store_get_case, many, transport_many] = names;
    let big_text = clients::big_value();
    let big_bytes = big_text.as_bytes().to_vec();
    // The transport alone stores the facade's bytes with its flags (text and the herd
    // state), under a key of its wire keys' length, and reads the facade's own wire keys.
    let flags = clients::big_flags(cache, transport, "big-string");
    let wire_big = cache.wire_key("big-transport").expect("wire key");
    let wire_many: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| cache.wire_key(k).expect("wire key"))
        .collect();
    let wire_refs: Vec<&[u8]> = wire_many.iter().map(Vec::as_slice).collect();
    vec![
        count_big(
            string,
            set_get::<String, str>(cache, "big-string", &big_text),
        ),
        count_big(
            vec,
            set_get::<Vec<u8>, Vec<u8>>(cache, "big-vec", &big_bytes),
        ),
        count_big(
            store_get_case,
            store_get(transport, &wire_big, big_text.as_bytes(), flags),
        ),
        count(many, || clients::all_hundred(cache.get_many(keys))),
        count(transport_many, || {
            let items = transport.get_many(&wire_refs).expect("get_many");
            assert!(items.iter().all(Option::is_some));
        }),
    ]
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
    text.store(&Store::set(b"raw-hit", value.as_bytes(), 0, 0))
        .expect("store");

    let mut results = vec![
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
        count("Cache::set 100 B", || {
            cache
                .set("set", value.as_str(), Ttl::Seconds(3600))
                .expect("set")
        }),
        count("TextTransport::get hit, 100 B", || {
            let item = text.get(b"raw-hit").expect("get");
            assert_eq!(item.map(|i| i.value.len()), Some(100));
        }),
    ];
    // The value path, text: the facade's and the transport's own cases.
    results.extend(value_path(
        [
            "Cache::set+get::<String> 100 KB",
            "Cache::set+get::<Vec<u8>> 100 KB",
            "TextTransport::store+get 100 KB",
            "Cache::get_many::<String> of 100 keys",
            "TextTransport::get_many of 100 keys",
        ],
        &cache,
        &text,
        &keys,
    ));
    // The same multi-get through a key function that returns each key as it is (a user's
    // closure), on the raw clients' own keys: the facade's allocations with no hashing.
    let identity = clients::identity_keys(&server.addr())
        .build()
        .expect("identity cache");
    let raw_keys = clients::seed_raw_many(&text, value.as_bytes());
    results.push(count(
        "Cache(identity keys)::get_many::<String> of 100 keys",
        || clients::all_hundred(identity.get_many(&raw_keys)),
    ));
    // The same two multi-gets through `AsyncCache` on a current-thread runtime (as the
    // interleaved bench drives it): the runtime's own allocations per call are counted too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (async_cache, async_identity) = rt.block_on(async {
        let url = format!("newcache://{}/?transport=text", server.addr());
        let hashed = newcache::AsyncCache::from_url(&url).expect("async cache");
        let identity = clients::identity_keys(&server.addr())
            .build_async()
            .expect("async identity cache");
        (hashed, identity)
    });
    let tokio_text = rt.block_on(async { clients::tokio_text_transport(&server.addr()) });
    rt.block_on(async_cache.set("hit", &value, newcache::Ttl::Seconds(3600)))
        .expect("set hit");
    results.push(count("AsyncCache::get::<String> hit, 100 B", || {
        rt.block_on(async_cache.get::<String>("hit"))
            .expect("get")
            .expect("hit")
    }));
    results.push(count("TokioTextTransport::get hit, 100 B", || {
        rt.block_on(tokio_text.get(b"raw-many-0"))
            .expect("get")
            .expect("hit")
    }));
    results.push(count("AsyncCache::get_many::<String> of 100 keys", || {
        clients::all_hundred(rt.block_on(async_cache.get_many(&keys)))
    }));
    results.push(count(
        "AsyncCache(identity keys)::get_many::<String> of 100 keys",
        || clients::all_hundred(rt.block_on(async_identity.get_many(&raw_keys))),
    ));
    // ...and over libmemcached's binary protocol: libmemcached's own buffers are C
    // `malloc`s, which this allocator does not see; the Rust side (the items, the facade) is
    // counted.
    #[cfg(feature = "binary")]
    {
        let binary = Cache::from_url(&format!("newcache://{}/?binary=true", server.addr()))
            .expect("binary cache");
        let wrapper = clients::wrapper_libmemcached(&server.addr())
            .into_iter()
            .find(|(n, _)| *n == "wrapper-libmemcached-binary")
            .map(|(_, t)| t)
            .expect("binary transport");
        results.extend(value_path(
            [
                "Cache(binary)::set+get::<String> 100 KB",
                "Cache(binary)::set+get::<Vec<u8>> 100 KB",
                "BinaryTransport::store+get 100 KB",
                "Cache(binary)::get_many::<String> of 100 keys",
                "BinaryTransport::get_many of 100 keys",
            ],
            &binary,
            &wrapper,
            &keys,
        ));
    }
    // Every case the report's value-path table names was counted.
    #[cfg(feature = "binary")]
    for (_, _, facade, transport) in clients::VALUE_PATH_ALLOCATIONS {
        for case in facade.iter().chain([transport]) {
            assert!(
                results.iter().any(|c| c.case == *case),
                "the value path names {case:?}, which is not counted here"
            );
        }
    }

    println!(
        "allocations per call ({} calls after a warm-up, {} for the 100 KB cases)",
        calls(N),
        calls(N_BIG)
    );
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
