//! Multi-key batches over TLS, timed: a blocking `Cache` over a verified TLS connection to a
//! memcached of its own (`-Z`, certificates made here), doing `set_many` of 100 values of
//! 100 bytes, `delete_many` of those 100 keys and a `get_many` of them (all misses), 300
//! calls of each per round, three rounds; prints the mean time per call. What it shows is
//! how the requests' TLS records cost memcached (see `tls_cuts` in newcache-transport-text).
//!
//! ```text
//! cargo run --release -p newcache-tests --features tls --example tls_batches
//! ```
//!
//! Needs memcached built with TLS (Debian's is) on the PATH.

use std::time::Instant;

use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;

#[path = "../tests/tls/pki.rs"]
mod pki;

fn main() {
    let dir = std::env::temp_dir().join(format!("newcache-tls-batches-{}", std::process::id()));
    let pki = pki::Pki::make(dir.clone());
    let server = Memcached::tls(&pki.path("server.pem"), &pki.path("server-key.pem"));
    let url = format!(
        "newcache://{}/?tls=true&tls_ca={}",
        server.tls_addr(),
        pki.path("ca.pem").display()
    );
    let cache = Cache::from_url(&url).expect("a cache over TLS");
    let keys: Vec<String> = (0..100).map(|i| format!("k-{i}")).collect();
    let value = "v".repeat(100);
    const CALLS: u32 = 300;
    for round in 0..3 {
        let started = Instant::now();
        for _ in 0..CALLS {
            let items = keys.iter().map(|k| (k.as_str(), &value));
            cache.set_many(items, Ttl::Seconds(60)).expect("set_many");
        }
        let set = started.elapsed() / CALLS;
        let started = Instant::now();
        for _ in 0..CALLS {
            cache.delete_many(&keys).expect("delete_many");
        }
        let delete = started.elapsed() / CALLS;
        let started = Instant::now();
        for _ in 0..CALLS {
            cache.get_many::<_, String>(&keys).expect("get_many");
        }
        let get = started.elapsed() / CALLS;
        println!(
            "round {round}: set_many(100) {set:?}, delete_many(100) {delete:?}, get_many(100) {get:?} per call"
        );
    }
    drop(server);
    std::fs::remove_dir_all(dir).ok();
}
