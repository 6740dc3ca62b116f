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
//! - `get_many` of 100: `transport`, `cache`, `ordered` (`get_many_ordered`) (blocking); `atransport`, `async` (tokio);
//!   with the default (hashing) key function: `hcache`, `hordered` (`get_many_ordered`),
//!   `hasync` (the `AsyncCache`), `hatransport` (the async transport on its wire keys), and
//!   `htransport` (the transport reading that cache's wire keys); with feature `binary`,
//!   that cache over libmemcached's binary protocol (`bcache`) and that transport alone on
//!   its wire keys (`btransport`), and raw
//!   libmemcached's text `memcached_mget` + `memcached_fetch_result` (the interleaved
//!   bench's `libmemcached-sys-text`, no value copied out): `raw` (the short keys), `hraw`
//!   (the hashed wire keys);
//! - get hit: `tget`, `cget` (blocking), `rget` (feature `binary`: raw libmemcached's text
//!   `memcached_get`, the value it allocates freed); `atget`, `aget` (tokio, one `block_on` per get);
//!   `atgetl`, `agetl` (tokio, every get awaited in one task, as a handler awaits them);
//! - set+get of 100 KB: `bigs` (the default cache, a `String`), `bigv` (a `Vec<u8>`),
//!   `bigt` (the transport alone, the same bytes and flags under a key of the same length);
//! - an `mn` round trip on a raw socket: `floor` (blocking), `afloor` (tokio);
//! - `c1:<client>`: the concurrency bench's driver with one caller doing get hits, on its
//!   multi-thread runtime, for any of its clients (`c1:newcache-async`,
//!   `c1:newcache-blocking`, `c1:async-memcached`, ...); on that runtime, one task doing
//!   get hits through the async text transport alone (`c1t`), an identity-keyed
//!   `AsyncCache` (`c1c`), or a raw tokio socket sending `$REQ` (default `get hit`; `c1f`).
//! - `alt:<mode>,<mode>,...`: the blocking modes above taking turns, ten calls each, as the
//!   interleaved bench's bursts do; prints each mode's mean time per call and its mean at
//!   each position of the burst (a mode that is slow only just after another ran is slow
//!   at the first positions only).
//!
//! Prints the mean time per call; with `SIZES` set, first the sizes of the async calls'
//! futures.

use std::time::Instant;

use newcache_benches::{clients, concurrent};
use newcache_testkit::Memcached;
use newcache_transport::{AsyncTransport, Store, Transport};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "cache".to_string());
    let calls: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let server = Memcached::with_args(&["-t", "1"]);
    let addr = server.addr();
    if mode == "c1f" {
        one_floor(&addr, calls);
        return;
    }
    if mode == "c1t" || mode == "c1c" {
        one_task(&mode, &addr, calls);
        return;
    }
    if let Some(client) = mode.strip_prefix("c1:") {
        one_caller(client, &addr, calls);
        return;
    }
    let text = clients::text_transport(&addr);
    let value = "x".repeat(100);
    let keys = clients::seed_raw_many(&text, value.as_bytes());
    let wire: Vec<&[u8]> = keys.iter().map(String::as_bytes).collect();
    text.store(&Store::set(b"hit", value.as_bytes(), 16, 0))
        .expect("store the hit");
    let cache = clients::identity_keys(&addr).build().expect("cache");
    // The default key function's cache, on its own 100 keys, and those keys' wire form.
    let hashed = newcache::Cache::builder()
        .servers([addr.as_str()])
        .build()
        .expect("hashed cache");
    let many = clients::many_keys();
    clients::seed(&hashed, &value, &many);
    let hashed_wire: Vec<Vec<u8>> = many
        .iter()
        .map(|k| hashed.wire_key(k).expect("wire key"))
        .collect();
    let hashed_refs: Vec<&[u8]> = hashed_wire.iter().map(Vec::as_slice).collect();
    // Raw libmemcached's text handle and its key arrays (feature `binary`).
    #[cfg(feature = "binary")]
    let bare = clients::bare_libmemcached(&addr);
    #[cfg(feature = "binary")]
    let bare_text = bare
        .iter()
        .find(|(n, _)| *n == "libmemcached-sys-text")
        .map(|(_, h)| h)
        .expect("raw libmemcached text");
    // The default cache over libmemcached's binary protocol, on the hashed cache's 100 keys
    // (`bcache`), and that transport alone reading their wire keys (`btransport`), as the
    // interleaved bench's `newcache-libmemcached-binary` and
    // `wrapper-libmemcached-binary-facade-wire-bytes`.
    #[cfg(feature = "binary")]
    let binary_cache = newcache::Cache::from_url(&format!("newcache://{addr}/?binary=true"))
        .expect("binary cache");
    #[cfg(feature = "binary")]
    let binary = clients::wrapper_libmemcached(&addr)
        .into_iter()
        .find(|(n, _)| *n == "wrapper-libmemcached-binary")
        .map(|(_, t)| t)
        .expect("binary transport");
    #[cfg(feature = "binary")]
    let (raw_keys, raw_hashed) = (
        newcache_transport_binary::bare::Keys::new(&keys),
        newcache_transport_binary::bare::Keys::new(&hashed_wire),
    );
    // set+get of 100 KB, as the interleaved bench's `set_get_100KB` rows: the default
    // cache storing a `String` (`bigs`) or a `Vec<u8>` (`bigv`), and the transport alone
    // storing those bytes with that cache's flags under a wire key of its length (`bigt`).
    let big_text = clients::big_value();
    let big_bytes = big_text.as_bytes().to_vec();
    let ttl = newcache::Ttl::Seconds(3600);
    let big_flags = clients::big_flags(&hashed, &text, "big");
    let big_wire = hashed.wire_key("big-transport").expect("wire key");
    let big = |n: Option<usize>| assert_eq!(n, Some(clients::BIG), "{mode}");
    let mut floor = clients::floor(&addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hashed_async = rt.block_on(async {
        newcache::Cache::builder()
            .servers([addr.as_str()])
            .build_async()
            .expect("hashed async cache")
    });
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
    // A multi-get that found all 100.
    fn hundred<T>(got: Result<Vec<Option<T>>, impl std::fmt::Debug>) {
        assert_eq!(got.expect("get_many").iter().flatten().count(), 100);
    }
    if std::env::var("SIZES").is_ok() {
        eprintln!(
            "AsyncCache::get future {} bytes; get_many {} bytes; transport get {} bytes",
            std::mem::size_of_val(&async_cache.get::<String>("hit")),
            std::mem::size_of_val(&async_cache.get_many::<_, String>(&keys)),
            std::mem::size_of_val(&async_text.get(b"hit"))
        );
    }
    let start = Instant::now();
    let in_one_task = mode == "agetl" || mode == "atgetl";
    if in_one_task {
        // Every get awaited in one task, as a service's handler awaits them, rather than
        // one `block_on` per get.
        rt.block_on(async {
            for _ in 0..calls {
                let found = if mode == "agetl" {
                    async_cache
                        .get::<String>("hit")
                        .await
                        .expect("get")
                        .iter()
                        .count()
                } else {
                    async_text.get(b"hit").await.expect("get").iter().count()
                };
                all(found, 1);
            }
        });
    }
    let mut one = |m: &str| match m {
        "transport" => hundred(text.get_many(&wire)),
        "atransport" => hundred(rt.block_on(async_text.get_many(&wire))),
        "cache" => clients::all_hundred(cache.get_many(&keys)),
        "ordered" => hundred(cache.get_many_ordered::<_, String>(&keys)),
        "htransport" => hundred(text.get_many(&hashed_refs)),
        "hcache" => clients::all_hundred(hashed.get_many(&many)),
        #[cfg(feature = "binary")]
        "bcache" => clients::all_hundred(binary_cache.get_many(&many)),
        #[cfg(feature = "binary")]
        "btransport" => hundred(binary.get_many(&hashed_refs)),
        "hordered" => hundred(hashed.get_many_ordered::<_, String>(&many)),
        "async" => clients::all_hundred(rt.block_on(async_cache.get_many(&keys))),
        "hasync" => clients::all_hundred(rt.block_on(hashed_async.get_many(&many))),
        "hatransport" => hundred(rt.block_on(async_text.get_many(&hashed_refs))),
        #[cfg(feature = "binary")]
        "raw" => all(
            bare_text.borrow_mut().get_many(&raw_keys).expect("mget").0,
            100,
        ),
        #[cfg(feature = "binary")]
        "hraw" => all(
            bare_text
                .borrow_mut()
                .get_many(&raw_hashed)
                .expect("mget")
                .0,
            100,
        ),
        #[cfg(feature = "binary")]
        "rget" => all(
            bare_text
                .borrow_mut()
                .get(b"hit")
                .expect("get")
                .iter()
                .count(),
            1,
        ),
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
        "bigt" => {
            text.store(&Store::set(&big_wire, big_text.as_bytes(), big_flags, 3600))
                .expect("set");
            big(text.get(&big_wire).expect("get").map(|i| i.value.len()));
        }
        "bigs" => {
            hashed.set("big-s", big_text.as_str(), ttl).expect("set");
            big(hashed.get::<String>("big-s").expect("get").map(|v| v.len()));
        }
        "bigv" => {
            hashed.set("big-v", &big_bytes, ttl).expect("set");
            big(hashed
                .get::<Vec<u8>>("big-v")
                .expect("get")
                .map(|v| v.len()));
        }
        "floor" => clients::floor_round_trip(&mut floor),
        "afloor" => rt.block_on(clients::tokio_floor_round_trip(&async_floor)),
        other => panic!(
            "unknown mode {other:?}: transport, atransport, cache, async, tget, atget, \
                 cget, aget, floor or afloor"
        ),
    };
    if let Some(list) = mode.strip_prefix("alt:") {
        let modes: Vec<&str> = list.split(',').collect();
        let mut took = vec![[0f64; 10]; modes.len()];
        for _ in 0..calls / 10 {
            for (m, t) in modes.iter().zip(&mut took) {
                for slot in t.iter_mut() {
                    let s = Instant::now();
                    one(m);
                    *slot += s.elapsed().as_secs_f64();
                }
            }
        }
        for (m, t) in modes.iter().zip(&took) {
            let per: Vec<String> = t
                .iter()
                .map(|x| format!("{:.0}", x * 1e6 / f64::from(calls / 10)))
                .collect();
            println!(
                "{m}: {:.1} µs per call; by position {}",
                t.iter().sum::<f64>() * 1e6 / f64::from(calls / 10 * 10),
                per.join(" ")
            );
        }
        return;
    }
    for _ in 0..if in_one_task { 0 } else { calls } {
        one(mode.as_str());
    }
    let per_call = start.elapsed().as_secs_f64() * 1e6 / f64::from(calls);
    println!("{mode}: {per_call:.1} µs per call");
}

/// `c1:<client>`: the concurrency bench's own driver ([`concurrent::Driver`]) with one
/// caller doing `calls` get hits, on the bench's multi-thread runtime.
fn one_caller(client: &str, addr: &str, calls: u32) {
    let rt = concurrent::runtime();
    let driver = concurrent::Driver::new(client, addr, 1, &rt)
        .unwrap_or_else(|| panic!("unknown client {client:?}: {:?}", concurrent::CLIENTS));
    let m = rt.metrics();
    let parks = |m: &tokio::runtime::RuntimeMetrics| -> u64 {
        (0..m.num_workers()).map(|w| m.worker_park_count(w)).sum()
    };
    let p0 = parks(&m);
    let took = driver.run(u64::from(calls), None);
    eprintln!(
        "parks per call {:.2}",
        (parks(&m) - p0) as f64 / f64::from(calls)
    );
    let per_call = took.as_secs_f64() * 1e6 / f64::from(calls);
    println!("c1:{client}: {per_call:.1} µs per call");
}

/// `c1t` / `c1c`: one task doing get hits through the async text transport alone (`c1t`)
/// or an identity-keyed `AsyncCache` (`c1c`), on the concurrency bench's runtime.
fn one_task(mode: &str, addr: &str, calls: u32) {
    let rt = concurrent::runtime();
    let value = concurrent::value();
    let took = rt.block_on(async {
        let text = std::sync::Arc::new(clients::tokio_text_transport(addr));
        text.store(&Store::set(b"hit", value.as_bytes(), 16, 0))
            .await
            .expect("store");
        let cache = clients::identity_keys(addr).build_async().expect("cache");
        let mode = mode.to_string();
        tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..calls {
                if mode == "c1t" {
                    assert!(text.get(b"hit").await.expect("get").is_some());
                } else {
                    assert!(cache.get::<String>("hit").await.expect("get").is_some());
                }
            }
            start.elapsed()
        })
        .await
        .expect("task")
    });
    let per_call = took.as_secs_f64() * 1e6 / f64::from(calls);
    println!("{mode}: {per_call:.1} µs per call");
}

/// `c1f`: one task on the concurrency bench's runtime sending `$REQ` (default
/// `get hit`) on a raw tokio socket and reading until the reply's last line.
fn one_floor(addr: &str, calls: u32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = concurrent::runtime();
    let value = concurrent::value();
    let req = format!(
        "{}\r\n",
        std::env::var("REQ").unwrap_or_else(|_| "get hit".into())
    );
    let end: &'static [u8] = if req.starts_with("mg") {
        b"\r\n"
    } else {
        b"END\r\n"
    };
    let took = rt.block_on(async {
        let text = clients::tokio_text_transport(addr);
        text.store(&Store::set(b"hit", value.as_bytes(), 16, 0))
            .await
            .expect("store");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16384];
            let start = Instant::now();
            for _ in 0..calls {
                s.write_all(req.as_bytes()).await.expect("write");
                let mut got = 0;
                loop {
                    let n = s.read(&mut buf[got..]).await.expect("read");
                    assert!(n > 0);
                    got += n;
                    if got > 100 && buf[..got].ends_with(end) {
                        break;
                    }
                }
            }
            start.elapsed()
        })
        .await
        .expect("task")
    });
    let per_call = took.as_secs_f64() * 1e6 / f64::from(calls);
    println!("c1f: {per_call:.1} µs per call");
}
