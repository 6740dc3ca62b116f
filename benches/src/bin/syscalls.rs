//! One client doing one operation `n` times against a running memcached, for `strace -c`:
//! `syscalls <server addr> <client> <op> <n>`. `cargo xtask bench` runs it under strace with
//! `n` = 0 and `n` = N and divides the difference by N: system calls per operation, with
//! setup and warm-up subtracted.
//!
//! Clients: `newcache-text` (the facade), `newcache-text-identity` (the facade with a key
//! function that returns the key as it is: the wire keys are the transport's and the raw
//! clients'), `transport-text` (no facade),
//! `libmemcached-sys-text`, `libmemcached-sys-binary` (bare C calls through `libmemcached-sys`,
//! feature `binary`), `memcache-crate-ascii`, `memcache-crate-binary`.
//! Ops: `get` (a hit of 100 bytes), `set` (100 bytes), `get_many` (100 keys).
//!
//! Concurrent callers: op `get-cC` (e.g. `get-c64`) runs `C` callers of one of the
//! `async_concurrency` bench's clients (`newcache_benches::concurrent::CLIENTS`:
//! `newcache-async`, `newcache-blocking`, `libmemcached-sys-text`, `memcache-crate-ascii`,
//! `async-memcached`), exactly as the bench drives them, sharing `n` get hits of 100 bytes
//! (`n / C` each; `n` = 0 still connects, warms up and releases every caller).

use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, client, op, n] = args.as_slice() else {
        eprintln!("usage: syscalls <server addr> <client> <op> <n>");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("n");
    if let Some(callers) = op.strip_prefix("get-c") {
        let callers: usize = callers.parse().expect("callers");
        concurrent(addr, client, callers, n as u64);
        return;
    }
    let value = vec![b'x'; 100];
    let keys: Vec<String> = (0..100).map(|i| format!("sys-many-{i}")).collect();
    let mut run: Box<dyn FnMut(&str)> = match client.as_str() {
        "newcache-text" | "newcache-text-identity" => {
            let cache = if client == "newcache-text" {
                newcache::Cache::from_url(&format!("newcache://{addr}/?transport=text"))
            } else {
                newcache_benches::clients::identity_keys(addr).build()
            }
            .expect("cache");
            let v = String::from_utf8(value.clone()).expect("utf8");
            for k in keys.iter().chain([&"sys-hit".to_string()]) {
                cache
                    .set(k, v.as_str(), newcache::Ttl::Forever)
                    .expect("set");
            }
            Box::new(move |op| match op {
                "get" => {
                    black_box(cache.get::<String>("sys-hit").expect("get"));
                }
                "set" => cache
                    .set("sys-set", v.as_str(), newcache::Ttl::Forever)
                    .expect("set"),
                _ => {
                    newcache_benches::clients::all_hundred(cache.get_many(&keys));
                }
            })
        }
        "transport-text" => {
            use newcache_transport::{Store, Transport};
            let t =
                newcache_transport_text::TextTransport::new(newcache_transport_text::TextConfig {
                    servers: vec![addr.clone()],
                    ..Default::default()
                })
                .expect("transport");
            for k in keys.iter().map(String::as_str).chain(["sys-hit"]) {
                t.store(&Store::set(k.as_bytes(), &value, 0, 0))
                    .expect("set");
            }
            let refs: Vec<Vec<u8>> = keys.iter().map(|k| k.clone().into_bytes()).collect();
            Box::new(move |op| match op {
                "get" => {
                    black_box(t.get(b"sys-hit").expect("get"));
                }
                "set" => {
                    t.store(&Store::set(b"sys-set", &value, 0, 0)).expect("set");
                }
                _ => {
                    let r: Vec<&[u8]> = refs.iter().map(Vec::as_slice).collect();
                    black_box(t.get_many(&r).expect("get_many"));
                }
            })
        }
        #[cfg(feature = "binary")]
        "libmemcached-sys-text" | "libmemcached-sys-binary" => {
            use newcache_transport_binary::bare::{Bare, Keys, Options};
            let options = if client == "libmemcached-sys-binary" {
                Options::BINARY
            } else {
                Options::TEXT
            };
            let mut h = Bare::connect(addr, options).expect("libmemcached");
            for k in keys.iter().map(String::as_str).chain(["sys-hit"]) {
                h.set(k.as_bytes(), &value).expect("set");
            }
            let keys = Keys::new(&keys);
            Box::new(move |op| match op {
                "get" => {
                    black_box(h.get(b"sys-hit").expect("get").expect("hit"));
                }
                "set" => h.set(b"sys-set", &value).expect("set"),
                _ => assert_eq!(h.get_many(&keys).expect("get_many").0, 100),
            })
        }
        "memcache-crate-ascii" | "memcache-crate-binary" => {
            let url = if client == "memcache-crate-ascii" {
                format!("memcache://{addr}?protocol=ascii")
            } else {
                format!("memcache://{addr}")
            };
            let c = memcache::Client::connect(url).expect("memcache");
            let v = String::from_utf8(value.clone()).expect("utf8");
            for k in keys.iter().map(String::as_str).chain(["sys-hit"]) {
                c.set(k, v.as_str(), 0).expect("set");
            }
            let refs: Vec<String> = keys.clone();
            Box::new(move |op| match op {
                "get" => {
                    black_box(c.get::<String>("sys-hit").expect("get"));
                }
                "set" => c.set("sys-set", v.as_str(), 0).expect("set"),
                _ => {
                    let r: Vec<&str> = refs.iter().map(String::as_str).collect();
                    black_box(c.gets::<String>(&r).expect("gets"));
                }
            })
        }
        other => {
            eprintln!("unknown client {other}");
            std::process::exit(2);
        }
    };
    // One warm-up call (connections, buffers), then the measured ones.
    run(op);
    for _ in 0..n {
        run(op);
    }
}

/// `callers` concurrent callers of `client` sharing `n` get hits (see the module docs).
fn concurrent(addr: &str, client: &str, callers: usize, n: u64) {
    use newcache_benches::concurrent::{runtime, Driver};
    let rt = runtime();
    let Some(driver) = Driver::new(client, addr, callers, &rt) else {
        eprintln!("unknown client {client}");
        std::process::exit(2);
    };
    driver.run(n / callers as u64, None);
}
