//! The transport conformance suite against the text-protocol transport, talking to real
//! memcached servers: one server at the top level, three in `cluster`.

use newcache_tests::ServerFixture;
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

/// The same suite over three servers, so every multi-server path (key placement, batches
/// split per server and merged back in order, stats and flush_all of every server) runs.
mod cluster {
    newcache_tests::conformance_suite!(|| super::text_fixture(3));
}
