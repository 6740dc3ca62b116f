//! The transport conformance suite against the libmemcached transport (feature `binary`),
//! talking to real memcached servers: binary protocol and libmemcached's text mode, each on
//! one server and on a cluster of three.
#![cfg(feature = "binary")]

use newcache_tests::{Fixture, ServerFixture};
use newcache_transport_binary::{BinaryConfig, BinaryTransport};

/// `servers` fresh memcached processes and a libmemcached transport over them.
fn fixture(servers: usize, binary_protocol: bool) -> ServerFixture {
    ServerFixture::start(servers, |servers| {
        let config = BinaryConfig {
            binary_protocol,
            ..BinaryConfig::new(servers)
        };
        Box::new(
            BinaryTransport::new(config)
                .unwrap_or_else(|e| panic!("BinaryTransport::new failed: {e}")),
        )
    })
}

/// libmemcached writes a multi-get (`memcached_mget`) before it reads the replies
/// (`memcached_fetch_result`), in either protocol, on one server or several: the caller is
/// told in between.
#[test]
fn get_many_made_says_when_its_request_is_out() {
    for (servers, binary_protocol) in [(1, true), (1, false), (3, true)] {
        let fixture = fixture(servers, binary_protocol);
        newcache_tests::conformance::get_many_made_says_when_its_request_is_out(
            fixture.transport(),
        );
    }
}

/// memcached's binary protocol, one server.
mod binary {
    newcache_tests::conformance_suite!(|| super::fixture(1, true));

    /// Three servers, so key placement, per-server batches, stats and flush_all of every
    /// server run too.
    mod cluster {
        newcache_tests::conformance_suite!(|| super::super::fixture(3, true));
    }
}

/// libmemcached's text mode, one server.
mod text {
    newcache_tests::conformance_suite!(|| super::fixture(1, false));

    /// Three servers.
    mod cluster {
        newcache_tests::conformance_suite!(|| super::super::fixture(3, false));
    }
}

/// Through twemproxy whose memcached has gone, a get is answered `SERVER_ERROR Connection
/// refused` (the proxy's word that it cannot reach the server): an error from both the
/// libmemcached text mode and the Rust text transport, never a miss (an outage must not read
/// as a cold cache). See `text_mode_a_client_error_to_a_get_is_an_error_not_a_miss` in the
/// transport's own tests for the reply libmemcached did report as a miss.
#[test]
fn a_proxys_server_error_to_a_get_is_an_error_not_a_miss() {
    use newcache_testkit::{Memcached, Twemproxy};
    use newcache_transport::{Store, Transport};
    let backend = Memcached::start();
    let proxy = Twemproxy::start(&[&backend]);
    let libmemcached_text = BinaryTransport::new(BinaryConfig {
        binary_protocol: false,
        ..BinaryConfig::new(vec![proxy.addr()])
    })
    .expect("libmemcached text transport");
    let text = newcache_transport_text::TextTransport::new(newcache_transport_text::TextConfig {
        servers: vec![proxy.addr()],
        protocol: newcache_transport_text::Protocol::Classic,
        ..newcache_transport_text::TextConfig::default()
    })
    .expect("text transport");
    let transports: [(&str, &dyn Transport); 2] =
        [("libmemcached text", &libmemcached_text), ("text", &text)];
    for (name, t) in transports {
        t.store(&Store::set(b"k", b"v", 0, 0)).expect("set");
        assert_eq!(
            t.get(b"k").expect("get").map(|i| i.value),
            Some(b"v".to_vec()),
            "{name}"
        );
    }
    drop(backend);
    for (name, t) in transports {
        for round in 0..2 {
            let got = t.get(b"k");
            assert!(got.is_err(), "{name}, get {round}: {got:?}");
            let many = t.get_many(&[b"k", b"other"]);
            assert!(many.is_err(), "{name}, get_many {round}: {many:?}");
        }
    }
}
