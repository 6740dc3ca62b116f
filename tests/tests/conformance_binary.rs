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
