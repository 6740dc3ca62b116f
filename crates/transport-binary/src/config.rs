//! How the transport is configured: [`BinaryConfig`], its defaults (the `DEFAULT_*`
//! constants) and the parsing of one server entry.

use std::fmt;
use std::time::Duration;

use newcache_transport::DEFAULT_ITEM_SIZE_LIMIT;

use crate::Behaviors;

/// The connect timeout used when `connect_timeout` is not set: 250 ms.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// The read/write (poll) timeout used when `_poll_timeout` is not set: 500 ms.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a handle stays idle before it is dropped when `idle_timeout` is not set: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default number of libmemcached handles (each with its own connections).
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The memcached port used when a server entry gives none.
pub const DEFAULT_PORT: u16 = newcache_placement::DEFAULT_PORT;

/// How to reach the servers and how to talk to them.
#[derive(Clone)]
pub struct BinaryConfig {
    /// The servers, each `"host:port"` or `"host:port:weight"` (`[v6addr]:port[:weight]`
    /// for IPv6; the port defaults to 11211, the weight to 1). Their order is the server
    /// index of [`BinaryTransport::server_index_for_key`], and with `modula` it decides
    /// placement, as in pylibmc.
    ///
    /// [`BinaryTransport::server_index_for_key`]: crate::BinaryTransport::server_index_for_key
    pub servers: Vec<String>,
    /// `true`: memcached's binary protocol (needed for SASL); `false`: libmemcached's text
    /// mode.
    pub binary_protocol: bool,
    /// libmemcached behaviors by pylibmc's names; see the crate documentation.
    pub behaviors: Behaviors,
    /// SASL user name (binary protocol only); set both it and `password`, or neither.
    pub username: Option<String>,
    /// SASL password.
    pub password: Option<String>,
    /// The most libmemcached handles (one per concurrent request) the transport creates.
    /// At least 1.
    pub pool_size: usize,
    /// A handle idle this long is dropped and its connections closed, by a thread the
    /// transport starts with its first request (and at the next request in any case), so
    /// that a burst does not leave `pool_size` connections open to every server for good.
    /// Default 60 s, as the text transport's; zero: never.
    pub idle_timeout: Duration,
    /// memcached's `-I`, default 1 MiB: a value whose item would be larger (the value, the
    /// key and the item header, [`Store::value_limit`]) is refused without being sent
    /// ([`Error::ValueTooLarge`]; a `set` of one deletes the key instead, as memcached does).
    ///
    /// [`Store::value_limit`]: newcache_transport::Store::value_limit
    ///
    /// [`Error::ValueTooLarge`]: crate::Error::ValueTooLarge
    pub item_size_limit: usize,
}

impl BinaryConfig {
    /// A configuration for these servers with every other setting at its default: binary
    /// protocol, no behaviors set, no SASL, [`DEFAULT_POOL_SIZE`] handles,
    /// [`DEFAULT_ITEM_SIZE_LIMIT`].
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        BinaryConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            ..BinaryConfig::default()
        }
    }
}

impl Default for BinaryConfig {
    fn default() -> Self {
        BinaryConfig {
            servers: Vec::new(),
            binary_protocol: true,
            behaviors: Behaviors::default(),
            username: None,
            password: None,
            pool_size: DEFAULT_POOL_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
        }
    }
}

impl fmt::Debug for BinaryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryConfig")
            .field("servers", &self.servers)
            .field("binary_protocol", &self.binary_protocol)
            .field("behaviors", &self.behaviors)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("idle_timeout", &self.idle_timeout)
            .field("item_size_limit", &self.item_size_limit)
            .finish()
    }
}

/// One configured server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerSpec {
    /// The host as handed to libmemcached (IPv6 without brackets, as pylibmc does).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) weight: u32,
    /// `host:port` (`[v6]:port`), as errors and stats name the server.
    pub(crate) label: String,
}

pub(crate) fn parse_server(entry: &str) -> std::result::Result<ServerSpec, String> {
    // A unix-domain socket is its path with port 0, as pylibmc adds one (it was added as a
    // host with port 11211, so ketama hashed `path-N` where pylibmc hashes `path:0-N`, and
    // 21 of 50 keys read as misses against what the text transport and pylibmc stored: an
    // outside audit; `unix:/path` was refused).
    let server = newcache_placement::Server::parse_entry(entry).map_err(|e| match e {
        newcache_placement::PlacementError::BadServer { reason, .. } => reason,
        other => other.to_string(),
    })?;
    Ok(ServerSpec {
        label: if server.port == 0 {
            server.host.clone()
        } else {
            server.address()
        },
        host: server.host,
        port: server.port,
        weight: server.weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_entries_parse_like_pylibmc() {
        let s = parse_server("10.0.0.1:11212:3").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.weight), ("10.0.0.1", 11212, 3));
        assert_eq!(s.label, "10.0.0.1:11212");
        let s = parse_server("cache.local").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.weight),
            ("cache.local", 11211, 1)
        );
        let s = parse_server("[::1]:22122:2").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.weight), ("::1", 22122, 2));
        assert_eq!(s.label, "[::1]:22122");
        let s = parse_server("[::1]").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 11211));
        for bad in [
            "",
            ":11211",
            "h:0",
            "h:70000",
            "h:1:0",
            "h:1:x",
            "::1:11211",
            "[::1",
            "h:1:2:3",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn config_debug_hides_the_password() {
        let c = BinaryConfig {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..BinaryConfig::new(["h:1"])
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
