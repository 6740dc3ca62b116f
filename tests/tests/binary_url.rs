//! From a newcache URL (or the builder) to the live libmemcached handle: the behaviors named
//! in the URL are what `memcached_behavior_get` reads back from the transport a `Cache`
//! built, keys land where libmemcached with those behaviors places them, and SASL
//! credentials from the URL or the builder authenticate against a memcached `-S`.
//!
//! A `Cache` hands out its transport as `dyn Transport`, which cannot be downcast, so the
//! behaviors are read through the transport's `Debug`: `BinaryTransport` prints
//! `behaviors: {...}` from `BinaryTransport::behaviors_in_effect`, read from the live
//! handle. (These tests live here, not in `crates/transport-binary/tests`, because
//! `newcache` depends on the transport: a dev-dependency back on it would be a cycle.)
#![cfg(feature = "binary")]

#[path = "../../crates/transport-binary/tests/support/sasl_server.rs"]
mod sasl_server;

use std::collections::BTreeMap;

use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;
use newcache_transport::Error as TransportError;
use newcache_transport_binary::{
    distribution_to_libmemcached, hash_to_libmemcached, BinaryConfig, BinaryTransport,
    Distribution, Hash,
};
use sasl_server::SaslMemcached;

/// The behaviors libmemcached holds on the transport of `cache`, from its `Debug`.
fn live_behaviors(cache: &Cache) -> BTreeMap<String, u64> {
    let shown = format!("{:?}", cache.transport());
    let start = shown
        .find("behaviors: {")
        .unwrap_or_else(|| panic!("no behaviors in the transport's Debug: {shown}"))
        + "behaviors: {".len();
    let end = start + shown[start..].find('}').expect("end of the behaviors");
    shown[start..end]
        .split(", ")
        .map(|entry| {
            let (name, value) = entry
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad entry {entry:?} in {shown}"));
            let value = value.parse().unwrap_or_else(|e| panic!("{entry:?}: {e}"));
            (name.trim_matches('"').to_string(), value)
        })
        .collect()
}

/// What `binary=true&behaviors.hash=crc&behaviors.ketama=true&behaviors.retry_timeout=3`
/// must leave on the handle, by pylibmc's names.
fn expected_crc_ketama(binary: bool) -> Vec<(&'static str, u64)> {
    vec![
        ("binary", u64::from(binary)),
        ("hash", u64::from(hash_to_libmemcached(Hash::Crc))),
        // `ketama` sets the distribution only; the key hash stays crc.
        ("ketama", 1),
        (
            "distribution",
            u64::from(distribution_to_libmemcached(Distribution::ConsistentKetama)),
        ),
        ("retry_timeout", 3),
        // The facade's connect and read/write timeouts reach libmemcached (ms).
        ("connect_timeout", 250),
        ("_poll_timeout", 500),
        ("cas", 1),
        ("tcp_nodelay", 1),
    ]
}

fn assert_behaviors(cache: &Cache, expected: &[(&str, u64)], what: &str) {
    let live = live_behaviors(cache);
    for (name, value) in expected {
        assert_eq!(
            live.get(*name),
            Some(value),
            "{what}: behavior {name} on the live handle (all: {live:?})"
        );
    }
}

#[test]
fn behaviors_from_the_url_and_the_builder_are_on_the_live_handle() {
    let url = "newcache://a;b/?binary=true&behaviors.hash=crc&behaviors.ketama=true&behaviors.retry_timeout=3";
    // Building resolves and connects nothing, so hosts `a` and `b` need not exist.
    let cache = Cache::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(cache.transport().name(), "libmemcached-binary");
    assert_behaviors(&cache, &expected_crc_ketama(true), url);

    let text = url.replace("binary=true", "transport=libmemcached");
    let cache = Cache::from_url(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(cache.transport().name(), "libmemcached-text");
    assert_behaviors(&cache, &expected_crc_ketama(false), &text);

    let cache = Cache::builder()
        .servers(["a", "b"])
        .libmemcached(true)
        .behavior("hash", "crc")
        .behavior("ketama", "true")
        .behavior("retry_timeout", "3")
        .build()
        .unwrap_or_else(|e| panic!("builder: {e}"));
    assert_behaviors(&cache, &expected_crc_ketama(true), "builder");

    // Without behaviors, libmemcached's defaults (and this transport's four) are what the
    // handle holds, so the values above really came from the URL.
    let plain = Cache::from_url("newcache://a;b/?binary=true").unwrap();
    assert_behaviors(
        &plain,
        &[
            ("hash", 0),
            ("ketama", 0),
            ("distribution", 0),
            ("retry_timeout", 2),
        ],
        "no behaviors",
    );
    // A behavior given twice is refused, naming it, rather than one silently winning.
    let err = Cache::from_url("newcache://a/?binary=true&behaviors.hash=md5&behaviors.hash=crc")
        .unwrap_err();
    assert!(err.to_string().contains("behaviors.hash"), "{err}");
    // Every hash name reaches libmemcached as its own value.
    for (name, hash) in [
        ("md5", Hash::Md5),
        ("fnv1a_32", Hash::Fnv1a_32),
        ("crc", Hash::Crc),
    ] {
        let cache =
            Cache::from_url(&format!("newcache://a/?binary=true&behaviors.hash={name}")).unwrap();
        assert_behaviors(
            &cache,
            &[("hash", u64::from(hash_to_libmemcached(hash)))],
            name,
        );
    }
}

#[test]
fn keys_land_where_libmemcached_with_the_urls_behaviors_places_them() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let hosts: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let url = format!(
        "newcache://{}/?binary=true&behaviors.hash=crc&behaviors.ketama=true&behaviors.retry_timeout=3",
        hosts.join(";")
    );
    let cache = Cache::from_url(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    // The oracle: libmemcached configured directly with the same behaviors.
    let oracle = |behaviors: &[(&str, &str)]| {
        let mut config = BinaryConfig::new(hosts.clone());
        config.behaviors.set_all(behaviors.iter().copied()).unwrap();
        BinaryTransport::new(config).unwrap()
    };
    let crc_ketama = oracle(&[("hash", "crc"), ("ketama", "true")]);
    let modula = oracle(&[]);
    let mut differs = 0;
    for i in 0..60 {
        let key = format!("placed:{i}");
        cache.set(&key, &i, Ttl::Seconds(300)).unwrap();
        let wire = cache.wire_key(&key).unwrap();
        let expected = crc_ketama.server_index_for_key(&wire).unwrap();
        let holders: Vec<usize> = servers
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                let reply = m.raw(
                    &format!("get {}\r\n", String::from_utf8_lossy(&wire)),
                    b"END\r\n",
                );
                reply.starts_with(b"VALUE ")
            })
            .map(|(n, _)| n)
            .collect();
        assert_eq!(holders, [expected], "{key} ({wire:?})");
        if modula.server_index_for_key(&wire).unwrap() != expected {
            differs += 1;
        }
        assert_eq!(cache.get::<i32>(&key).unwrap(), Some(i));
    }
    // The behaviors matter: libmemcached's default placement puts many keys elsewhere.
    assert!(differs > 10, "only {differs} of 60 keys placed differently");
}

#[test]
fn sasl_credentials_from_the_url_and_the_builder_authenticate() {
    // A password with characters a URL must escape: '&' and '@'.
    let server = SaslMemcached::with_user("binary-url", "alice", "s3cr&t@x");
    let addr = server.addr();
    let good = format!("newcache://{addr}/?binary=true&username=alice&password=s3cr%26t%40x");
    let cache = Cache::from_url(&good).unwrap_or_else(|e| panic!("{good}: {e}"));
    cache.set("k", "v", Ttl::Seconds(60)).unwrap();
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v"));

    let builder = Cache::builder()
        .servers([addr.as_str()])
        .libmemcached(true)
        .credentials("alice", "s3cr&t@x")
        .build()
        .unwrap();
    assert_eq!(builder.get::<String>("k").unwrap().as_deref(), Some("v"));

    let wrong_url = format!("newcache://{addr}/?binary=true&username=alice&password=wrong");
    let wrong_builder = Cache::builder()
        .servers([addr.as_str()])
        .libmemcached(true)
        .credentials("alice", "s3cr&t")
        .build()
        .unwrap();
    for (what, cache) in [
        ("URL", Cache::from_url(&wrong_url).unwrap()),
        ("builder", wrong_builder),
    ] {
        match cache.get::<String>("k") {
            Err(newcache::Error::Transport(TransportError::Auth { server, message })) => {
                assert_eq!(server, addr);
                assert!(message.contains("AUTHENTICATION FAILURE"), "{message}");
            }
            other => panic!("{what} with a wrong password: expected an Auth error, got {other:?}"),
        }
        assert!(matches!(
            cache.set("k", "w", Ttl::Seconds(60)),
            Err(newcache::Error::Transport(TransportError::Auth { .. }))
        ));
    }
    // Nothing was overwritten by the refused set.
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v"));

    // SASL needs the binary protocol: the URL says so before anything connects.
    let err = Cache::from_url(&format!(
        "newcache://{addr}/?transport=libmemcached&username=alice&password=x"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("binary"), "{err}");
}
