// The `Cache` facade end to end against a real memcached: django-newcache's own tests,
// ported, and what newcache adds. Items are read back past newcache, through the raw
// protocol and through the `memcache` crate, an independent client.
//
// Included by one test file per transport, each defining `TRANSPORT`: the URL parameters
// that select it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use newcache::{Cache, Error, ManualClock, SetOptions, Ttl, HERD_FLAG};
use newcache_testkit::Memcached;
use newcache_tests::fixtures::at_once;

/// An item's value type, herd and codec bits (0-10): the herd state above them changes with
/// the clock.
fn kind(flags: u32) -> u32 {
    flags & 0x7ff
}

const NOW: u64 = 1_800_000_000;

struct Env {
    server: Memcached,
    cache: Cache,
    clock: ManualClock,
}

/// A fresh memcached and a cache on it with flavor `test` (unless the parameters choose
/// Django's key function), version 1, a manual clock at the
/// present, and the URL's extra parameters.
fn env(params: &str) -> Env {
    env_on(Memcached::start(), params)
}

/// [`env`] on a memcached of the caller's.
fn env_on(server: Memcached, params: &str) -> Env {
    let clock = ManualClock::at_secs(newcache::Clock::now_secs(&newcache::SystemClock));
    // Django's key function takes a key_prefix, not a flavor (which building refuses).
    let flavor = if params.contains("key_function=django") {
        ""
    } else {
        "flavor=test&"
    };
    let url = format!(
        "newcache://{}/?{flavor}version=1&{TRANSPORT}&{params}",
        server.addr()
    );
    let cache = newcache::Builder::from_url(&url)
        .unwrap()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    Env {
        server,
        cache,
        clock,
    }
}

impl Env {
    /// A current-thread runtime and an `AsyncCache` (text transport) on this env's server,
    /// with its flavor and version: the same keys as `self.cache`.
    fn async_cache(&self) -> (tokio::runtime::Runtime, newcache::AsyncCache) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("newcache://{}/?flavor=test&version=1", self.server.addr());
        let cache = rt.block_on(async { newcache::Builder::from_url(&url)?.build_async() });
        (rt, cache.unwrap())
    }

    fn wire(&self, key: &str) -> String {
        String::from_utf8(self.cache.wire_key(key).unwrap()).unwrap()
    }

    /// `key`'s `get_or_set` lease key on the server: its TTL (-1 = never).
    fn lease(&self, key: &str) -> Option<i64> {
        let lease = String::from_utf8(self.cache.lease_key(key).unwrap()).unwrap();
        self.meta_wire(&lease).map(|(_, ttl, _)| ttl)
    }

    /// `mg KEY f t v` on the server: (flags, remaining TTL (-1 = never), value).
    fn meta(&self, key: &str) -> Option<(u32, i64, Vec<u8>)> {
        self.meta_wire(&self.wire(key))
    }

    /// [`Env::meta`] of a wire key.
    fn meta_wire(&self, wire: &str) -> Option<(u32, i64, Vec<u8>)> {
        let reply = self
            .server
            .raw(&format!("mg {wire} f t v\r\n"), b"\r\n");
        if reply.starts_with(b"EN") {
            return None;
        }
        // VA <len> f<flags> t<ttl>\r\n<data>\r\n
        let text = String::from_utf8_lossy(&reply).into_owned();
        let header = text.lines().next().unwrap().to_string();
        let mut parts = header.split(' ');
        assert_eq!(parts.next(), Some("VA"), "{text}");
        let len: usize = parts.next().unwrap().parse().unwrap();
        let mut flags = 0;
        let mut ttl = 0;
        for p in parts {
            match p.split_at(1) {
                ("f", v) => flags = v.parse().unwrap(),
                ("t", v) => ttl = v.parse().unwrap(),
                _ => {}
            }
        }
        let start = header.len() + 2;
        let mut value = reply[start..].to_vec();
        while value.len() < len + 2 {
            // The rest of the value had not arrived in the first read.
            let more = self
                .server
                .raw(&format!("get {wire}\r\n"), b"END\r\n");
            let text = String::from_utf8_lossy(&more);
            let body_start = text.find("\r\n").unwrap() + 2;
            value = more[body_start..body_start + len].to_vec();
            value.extend_from_slice(b"\r\n");
        }
        value.truncate(len);
        Some((flags, ttl, value))
    }

    /// The item as the `memcache` crate (another client) reads it: (bytes, flags).
    fn other_client(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let client =
            memcache::Client::connect(format!("memcache://{}?protocol=ascii", self.server.addr()))
                .unwrap();
        client.get::<(Vec<u8>, u32)>(&self.wire(key)).unwrap()
    }
}

// The cases, by subject: each file is included here, in the including file's module.
include!("ported.rs");
include!("adds.rs");
include!("herd.rs");
include!("api.rs");
