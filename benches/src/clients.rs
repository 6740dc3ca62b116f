//! The clients every transport bench compares, built on one server address: the facade
//! over each transport, the text transport alone, our libmemcached wrapper alone, bare
//! libmemcached (the baseline), the `memcache` crate, and the loopback floor; the async
//! text transport alone and the loopback floor on tokio.

#[cfg(feature = "binary")]
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;

use newcache::{Cache, Ttl};
use newcache_transport::{Store, Transport};
#[cfg(feature = "binary")]
use newcache_transport_binary::bare;

/// A cache builder for `addr` whose key function returns each key as it is (a user's
/// `Fn(&str) -> String`): the facade with no key function's cost, reading the keys the raw
/// clients use. Build a `Cache` with `build`, an `AsyncCache` with `build_async` (inside a
/// tokio runtime).
pub fn identity_keys(addr: &str) -> newcache::Builder {
    Cache::builder()
        .servers([addr])
        .key_function(|key: &str| key.to_string())
}

/// The keys of the raw clients' multi-get (`raw-many-0` to `raw-many-99`), each stored
/// through `transport` with `value` (flags 16, text, as Python's clients store a `str`; no
/// expiry).
pub fn seed_raw_many(transport: &dyn Transport, value: &[u8]) -> Vec<String> {
    let keys: Vec<String> = (0..100).map(|i| format!("raw-many-{i}")).collect();
    for key in &keys {
        transport
            .store(&Store::set(key.as_bytes(), value, 16, 0))
            .expect("store");
    }
    keys
}

/// Checks that a multi-get of 100 keys read every value.
pub fn all_hundred(got: newcache::Result<newcache::GetMany<String>>) {
    let got = got.expect("get_many");
    assert!(got.is_complete(), "{:?}", got.failed());
    assert_eq!(got.len(), 100);
}

/// The facade over each transport: (name, cache).
pub fn caches(addr: &str) -> Vec<(&'static str, Cache)> {
    let url = |q: &str| format!("newcache://{addr}/?{q}");
    let mut out = vec![(
        "newcache-text",
        Cache::from_url(&url("transport=text")).expect("text"),
    )];
    #[cfg(feature = "binary")]
    {
        out.push((
            "newcache-libmemcached-binary",
            Cache::from_url(&url("binary=true")).expect("binary"),
        ));
        out.push((
            "newcache-libmemcached-text",
            Cache::from_url(&url("transport=libmemcached")).expect("lm text"),
        ));
    }
    out.push((
        "newcache-memory",
        Cache::from_url("newcache:///?transport=memory").expect("memory"),
    ));
    out
}

/// Bare libmemcached through `libmemcached-sys` (the baseline): one handle, the calls a C
/// program makes, `TCP_NODELAY` on, text and binary protocol.
#[cfg(feature = "binary")]
pub fn bare_libmemcached(addr: &str) -> Vec<(&'static str, RefCell<bare::Bare>)> {
    use bare::{Bare, Options};
    [
        ("libmemcached-sys-text", Options::TEXT),
        ("libmemcached-sys-binary", Options::BINARY),
    ]
    .into_iter()
    .map(|(name, options)| {
        let handle = Bare::connect(addr, options).expect("libmemcached");
        (name, RefCell::new(handle))
    })
    .collect()
}

/// The text transport with no facade (no key function, herd or codec).
pub fn text_transport(addr: &str) -> newcache_transport_text::TextTransport {
    newcache_transport_text::TextTransport::new(newcache_transport_text::TextConfig {
        servers: vec![addr.to_string()],
        ..Default::default()
    })
    .expect("text transport")
}

/// libmemcached with no facade (our thin safe wrapper over it), text and binary.
#[cfg(feature = "binary")]
pub fn wrapper_libmemcached(
    addr: &str,
) -> Vec<(&'static str, newcache_transport_binary::BinaryTransport)> {
    use newcache_transport_binary::{BinaryConfig, BinaryTransport};
    [
        ("wrapper-libmemcached-text", false),
        ("wrapper-libmemcached-binary", true),
    ]
    .into_iter()
    .map(|(name, binary_protocol)| {
        let config = BinaryConfig {
            binary_protocol,
            ..BinaryConfig::new([addr])
        };
        (name, BinaryTransport::new(config).expect("libmemcached"))
    })
    .collect()
}

/// The `memcache` crate, ASCII and its default binary protocol.
pub fn memcache_peers(addr: &str) -> Vec<(&'static str, memcache::Client)> {
    vec![
        (
            "memcache-crate-ascii",
            memcache::Client::connect(format!("memcache://{addr}?protocol=ascii"))
                .expect("memcache"),
        ),
        (
            "memcache-crate-binary",
            memcache::Client::connect(format!("memcache://{addr}")).expect("memcache"),
        ),
    ]
}

/// The floor: a raw TCP connection for `mn` ping-pongs, Nagle off.
pub fn floor(addr: &str) -> TcpStream {
    let floor = TcpStream::connect(addr).expect("connect");
    floor.set_nodelay(true).expect("nodelay");
    floor
}

/// One `mn` round trip on the floor connection.
pub fn floor_round_trip(floor: &mut TcpStream) {
    let mut buf = [0u8; 16];
    floor.write_all(b"mn\r\n").expect("write");
    let n = floor.read(&mut buf).expect("read");
    assert!(n > 0, "memcached closed the floor connection");
}

/// The async text transport with no facade, for `addr` (build it inside a tokio runtime).
pub fn tokio_text_transport(addr: &str) -> newcache_transport_text::TokioTextTransport {
    newcache_transport_text::TokioTextTransport::new(newcache_transport_text::TextConfig {
        servers: vec![addr.to_string()],
        ..Default::default()
    })
    .expect("async text transport")
}

/// The floor on tokio: a raw tokio TCP connection for `mn` ping-pongs, Nagle off (connect
/// it inside the runtime that drives it). Beside [`floor`], what the runtime's wait for a
/// reply (`epoll_wait` and a wake-up) costs before any client code runs.
pub async fn tokio_floor(addr: &str) -> tokio::net::TcpStream {
    let floor = tokio::net::TcpStream::connect(addr).await.expect("connect");
    floor.set_nodelay(true).expect("nodelay");
    floor
}

/// One `mn` round trip on the tokio floor connection: the request written, then the reply
/// awaited and read.
pub async fn tokio_floor_round_trip(floor: &tokio::net::TcpStream) {
    let mut written = 0;
    let request = b"mn\r\n";
    while let Some(rest) = request.get(written..).filter(|r| !r.is_empty()) {
        floor.writable().await.expect("writable");
        match floor.try_write(rest) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
    let mut buf = [0u8; 16];
    loop {
        floor.readable().await.expect("readable");
        match floor.try_read(&mut buf) {
            Ok(n) => {
                assert!(n > 0, "memcached closed the floor connection");
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The size of the large value of the `set_get_100KB` rows: 100 KB.
pub const BIG: usize = 100 * 1024;

/// The large value of the `set_get_100KB` rows, as text (`String` rows store it as it is,
/// `Vec<u8>` rows its bytes).
pub fn big_value() -> String {
    "x".repeat(BIG)
}

/// Stores the large value through `cache` under `key`, and returns the flags it carries on
/// the wire (text, and the herd state), as `transport` reads them: what the `set_get_100KB`
/// rows of the transport alone store with the same bytes.
pub fn big_flags(cache: &Cache, transport: &dyn Transport, key: &str) -> u32 {
    cache
        .set(key, big_value().as_str(), Ttl::Seconds(3600))
        .expect("set the large value");
    transport
        .get(&cache.wire_key(key).expect("wire key"))
        .expect("get the large value")
        .expect("the large value stored")
        .flags
}

/// The value path's targets: (operation, facade row, the transport alone it is held to).
/// The facade must run at 0.95x or better of the transport beneath it, measured
/// interleaved; the transport rows read and write what the facade does (its wire keys, or
/// keys of their length, and its bytes and flags), so the ratio is the facade's own cost.
pub const VALUE_PATH: &[(&str, &str, &str)] = &[
    ("set_get_100KB", "newcache-text-string", "transport-text"),
    ("set_get_100KB", "newcache-text-vec", "transport-text"),
    (
        "set_get_100KB",
        "newcache-libmemcached-binary-string",
        "wrapper-libmemcached-binary",
    ),
    (
        "set_get_100KB",
        "newcache-libmemcached-binary-vec",
        "wrapper-libmemcached-binary",
    ),
    (
        "get_many_100",
        "newcache-text",
        "transport-text-facade-wire-bytes",
    ),
    (
        "get_many_100",
        "newcache-libmemcached-binary",
        "wrapper-libmemcached-binary-facade-wire-bytes",
    ),
    // The same, with no key function's cost on either side: the facade through an identity
    // key function, both reading the raw clients' own short keys.
    ("get_many_100", "newcache-text-identity", "transport-text"),
];

/// The value path's target: facade / transport alone.
pub const VALUE_PATH_TARGET: f64 = 0.95;

/// The value path's allocation counts (the `allocations` bench's cases): (operation,
/// transport, the facade's cases, the transport alone's case).
pub const VALUE_PATH_ALLOCATIONS: &[(&str, &str, &[&str], &str)] = &[
    (
        "set+get 100 KB",
        "text",
        &[
            "Cache::set+get::<String> 100 KB",
            "Cache::set+get::<Vec<u8>> 100 KB",
        ],
        "TextTransport::store+get 100 KB",
    ),
    (
        "get_many of 100 keys",
        "text",
        &[
            "Cache::get_many::<String> of 100 keys",
            "Cache(identity keys)::get_many::<String> of 100 keys",
        ],
        "TextTransport::get_many of 100 keys",
    ),
    (
        "set+get 100 KB",
        "libmemcached binary",
        &[
            "Cache(binary)::set+get::<String> 100 KB",
            "Cache(binary)::set+get::<Vec<u8>> 100 KB",
        ],
        "BinaryTransport::store+get 100 KB",
    ),
    (
        "get_many of 100 keys",
        "libmemcached binary",
        &["Cache(binary)::get_many::<String> of 100 keys"],
        "BinaryTransport::get_many of 100 keys",
    ),
];

/// The facade's 100 keys of the multi-get rows.
pub fn many_keys() -> Vec<String> {
    (0..100).map(|i| format!("many-{i}")).collect()
}

/// Stores what the facade rows read: `value` under `hit` and under every key of `keys`.
pub fn seed(cache: &Cache, value: &str, keys: &[String]) {
    cache.set("hit", value, Ttl::Seconds(3600)).expect("set");
    cache
        .set_many(keys.iter().map(|k| (k.as_str(), value)), Ttl::Seconds(3600))
        .expect("set_many");
}
