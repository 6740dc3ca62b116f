//! The transport conformance suite, unchanged, against the async text transport
//! ([`TokioTextTransport`]) through [`BlockingAdapter`] (each call a `block_on` on a runtime
//! of the adapter's own), talking to real memcached servers: one server at the top level,
//! three in `cluster`, and the classic protocol on one server in `classic`.

use newcache_tests::{BlockingAdapter, ServerFixture};
use newcache_transport_text::{Protocol, TextConfig, TokioTextTransport};

/// `servers` fresh memcached processes and an async text transport over them.
fn tokio_fixture(servers: usize, protocol: Protocol) -> ServerFixture {
    ServerFixture::start(servers, |servers| {
        let config = TextConfig {
            servers,
            protocol,
            ..Default::default()
        };
        let transport = TokioTextTransport::new(config)
            .unwrap_or_else(|e| panic!("TokioTextTransport::new failed: {e}"));
        Box::new(BlockingAdapter::new(transport))
    })
}

newcache_tests::conformance_suite!(|| tokio_fixture(1, Protocol::Auto));

/// The same suite over three servers: key placement, batches split per server and merged
/// back in order, stats and flush_all of every server.
mod cluster {
    newcache_tests::conformance_suite!(|| super::tokio_fixture(3, super::Protocol::Auto));
}

/// The classic text commands (what memcached before 1.6 and proxies speak).
mod classic {
    newcache_tests::conformance_suite!(|| super::tokio_fixture(1, super::Protocol::Classic));
}
