//! The transport conformance suite against the text-protocol transport, talking to real
//! memcached servers: one server at the top level, three in `cluster`.

use newcache_tests::{Fixture, ServerFixture};
use newcache_transport_text::{TextConfig, TextTransport};

/// `servers` fresh memcached processes and a text transport over them.
fn text_fixture(servers: usize) -> ServerFixture {
    ServerFixture::start(servers, |servers| {
        let config = TextConfig {
            servers,
            ..Default::default()
        };
        Box::new(
            TextTransport::new(config).unwrap_or_else(|e| panic!("TextTransport::new failed: {e}")),
        )
    })
}

newcache_tests::conformance_suite!(|| text_fixture(1));

/// On one server, a multi-get of many keys is written before its replies are read: the
/// caller is told when.
#[test]
fn get_many_made_says_when_its_request_is_out() {
    let fixture = text_fixture(1);
    newcache_tests::conformance::get_many_made_says_when_its_request_is_out(fixture.transport());
}

/// The same suite over three servers, so every multi-server path (key placement, batches
/// split per server and merged back in order, stats and flush_all of every server) runs.
mod cluster {
    newcache_tests::conformance_suite!(|| super::text_fixture(3));
}
