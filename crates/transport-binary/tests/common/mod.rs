//! Helpers shared by the integration tests.
#![allow(dead_code)]

use newcache_testkit::Memcached;
use newcache_transport_binary::{BinaryConfig, BinaryTransport};

/// A transport over `servers`, in binary or text mode, with `config` adjusting the rest.
pub fn connect_with(
    servers: &[&Memcached],
    binary: bool,
    config: impl FnOnce(&mut BinaryConfig),
) -> BinaryTransport {
    let mut c = BinaryConfig::new(servers.iter().map(|s| s.addr()));
    c.binary_protocol = binary;
    config(&mut c);
    BinaryTransport::new(c).unwrap_or_else(|e| panic!("BinaryTransport::new: {e}"))
}

/// A transport over `servers` with the default configuration.
pub fn connect(servers: &[&Memcached], binary: bool) -> BinaryTransport {
    connect_with(servers, binary, |_| {})
}

/// Whether `server` holds `key`, asked over a raw text connection past any client.
pub fn holds(server: &Memcached, key: &str) -> bool {
    let reply = server.raw(&format!("get {key}\r\n"), b"END\r\n");
    reply.starts_with(b"VALUE ")
}

/// Runs a test body once in binary mode and once in text mode, as two `#[test]`s.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod binary_mode {
            $( #[test] fn $name() { super::$name(true) } )*
        }
        mod text_mode {
            $( #[test] fn $name() { super::$name(false) } )*
        }
    };
}
