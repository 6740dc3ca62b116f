//! memcached's text protocol in Rust: a sans-IO codec ([`proto`]) under a blocking
//! connection pool, one pool per server.
//!
//! - **Every reply is matched to its request.** On memcached 1.6 and later every operation
//!   is a meta command (`mg`, `ms`, `md`, `ma`) carrying an opaque token that the connection
//!   never repeats and asking for the key back; a reply that does not echo both (a duplicate
//!   of an earlier reply, bytes from somewhere else) is an [`Error::Protocol`], the
//!   connection is closed, and the requests still waiting on it fail with that error. Each
//!   server is probed once, on its first connection, for meta support (see
//!   [`Protocol::Auto`]); servers and proxies without it (memcached before 1.6, twemproxy)
//!   get the classic commands, where the keys of `VALUE` lines are checked against the
//!   request's, any byte after the awaited reply fails the request, and a pooled connection
//!   with bytes waiting is closed instead of reused.
//! - Every request is encoded into one buffer and written with one `write` call; replies are
//!   read into a small buffer the pooled connection keeps and parsed (and dropped from it) as
//!   they arrive, and the bulk of a large value is read from the socket straight into the
//!   `Vec` the [`Item`] returns, with no copy out of the read buffer. A reply makes no
//!   `setsockopt` unless it trickles in slowly (see the read timeout on [`TextConfig`]).
//! - Connections open lazily (building a transport never blocks) and go back to the pool only
//!   after a complete, well-formed reply. After an I/O error, a timeout or an unparsable reply
//!   the connection is dropped, never reused half-read; the next request opens a new one, so a
//!   server that comes back is used again. At most [`TextConfig::max_connections`] are open
//!   per server (callers wait for one to come free), and idle ones are closed after
//!   [`TextConfig::idle_timeout`]. A connection idle for 10 ms or more is looked at (a
//!   non-blocking peek) before it is handed a request: one the server closed meanwhile (a
//!   restart, the server's own idle timeout) is dropped, so a restarted server's first
//!   requests succeed and none counts against it as a failure.
//! - Keys are checked and values measured before anything is written: a bad key is a typed
//!   error and sends nothing; a value over the item size limit is a typed error and is not
//!   sent, and a `set` of one deletes the key instead, as memcached unlinks the old item of a
//!   `set` it refuses as too large (so the value the caller meant to replace is not served).
//! - With several servers, keys are placed exactly as libmemcached places them with the same
//!   server list and behaviors ([`newcache_placement`]: modula or ketama, weighted or not,
//!   over libmemcached's hashes), and multi-key operations send every server its whole batch
//!   before reading any reply, so they cost about one round trip however many servers they
//!   touch. Batches too large for the socket buffers go in rounds of that kind, so memcached
//!   never stops reading a request while its replies wait to be read (no deadlock).
//! - A server that fails is left alone for a while and, with `remove_failed`, ejected from a
//!   consistent ring ([`Failover`], libmemcached's `retry_timeout`, `failure_limit`,
//!   `remove_failed` and `dead_timeout`); multi-gets read its keys as misses.
//! - With feature `tokio`, `TokioTextTransport` (module `tokio_transport`) speaks the same
//!   protocol with the same placement and failover as an async transport: in the meta
//!   protocol, connections shared by any number of tasks, their requests written
//!   together, every reply matched in order (classic connections carry one request at a
//!   time).
//!
//! ```no_run
//! use newcache_transport::{Store, Transport};
//! use newcache_transport_text::{TextConfig, TextTransport};
//!
//! let transport = TextTransport::new(TextConfig {
//!     servers: vec!["127.0.0.1:11211".into()],
//!     ..TextConfig::default()
//! })?;
//! transport.store(&Store::set(b"greeting", b"hello", 16, 300))?;
//! let item = transport.get(b"greeting")?;
//! assert_eq!(item.map(|i| i.value), Some(b"hello".to_vec()));
//! # Ok::<(), newcache_transport::Error>(())
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]
#![forbid(unsafe_code)]

mod batch;
mod cluster;
mod command;
mod config;
mod conn;
mod connect;
mod errors;
mod exchange;
mod lookup;
mod multi_get;
mod ops;
mod pool;
pub mod proto;
mod quiet;
mod stream;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_cuts;
#[cfg(feature = "tokio")]
pub mod tokio_transport;

pub use cluster::Failover;
pub use config::{
    BehaviorError, Protocol, TextConfig, TlsConfig, BEHAVIORS, MAX_ASYNC_CONNECTIONS,
    MAX_ASYNC_QUEUE, MAX_TIMEOUT,
};
pub use newcache_placement as placement;
#[cfg(feature = "tokio")]
pub use tokio_transport::{TokioIoStats, TokioTextTransport};

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

#[cfg(doc)]
use newcache_transport::Item;
use newcache_transport::{Error, IdleReaper, Result}; // the crate docs link to Error

use cluster::Cluster;
use command::Mismatch;
use pool::Pool;
use proto::{meta, Meta, Reply, Status};

use conn::{Endpoint, Server, WIRE_CLASSIC, WIRE_META, WIRE_UNKNOWN};

/// memcached's text protocol over TCP or unix-domain sockets, optionally TLS (feature
/// `tls`); see the crate documentation.
pub struct TextTransport {
    servers: Arc<[Server]>,
    /// The TLS client settings, when connections speak TLS.
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
    cluster: Cluster,
    config: TextConfig,
    /// Connections opened so far, which seeds each one's first opaque token.
    opened: AtomicU32,
    /// The thread that closes idle connections, started with the first pooled connection
    /// (it stops when the transport is dropped).
    reaper: IdleReaper,
}

impl fmt::Debug for TextTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextTransport")
            .field("servers", &self.servers())
            .finish()
    }
}

impl TextTransport {
    /// A transport over these servers. Connects to nothing until the first request.
    pub fn new(config: TextConfig) -> Result<Self> {
        let config = config.bounded();
        let (specs, settings) = server_specs(&config)?;
        let max_open = match config.max_connections {
            0 => usize::MAX,
            n => n,
        };
        #[cfg(feature = "tls")]
        let tls = config
            .tls
            .as_ref()
            .map(|t| {
                tls::client_config(t).map_err(|source| Error::Connect {
                    server: config.servers.join(","),
                    source,
                })
            })
            .transpose()?;
        #[cfg(not(feature = "tls"))]
        if config.tls.is_some() {
            return Err(Error::Unsupported {
                server: "the text transport".into(),
                command: "TLS (build newcache-transport-text with its `tls` feature)".into(),
            });
        }
        let servers = specs
            .iter()
            .map(|s| {
                let label = cluster::server_label(s);
                Ok(Server {
                    endpoint: if s.port == 0 {
                        Endpoint::Unix(PathBuf::from(&s.host))
                    } else {
                        Endpoint::Tcp(s.address())
                    },
                    #[cfg(feature = "tls")]
                    tls_name: match &config.tls {
                        Some(t) => {
                            Some(tls::server_name(t, s).map_err(|source| Error::Connect {
                                server: label.clone(),
                                source,
                            })?)
                        }
                        None => None,
                    },
                    label,
                    pool: Pool::new(max_open, config.max_idle_per_server, config.idle_timeout),
                    wire: AtomicU8::new(WIRE_UNKNOWN),
                    connected: AtomicBool::new(false),
                    item_size_max: Default::default(),
                })
            })
            .collect::<Result<Vec<Server>>>()?
            .into();
        let cluster = Cluster::new(specs, settings, config.failover);
        Ok(TextTransport {
            servers,
            #[cfg(feature = "tls")]
            tls,
            cluster,
            config,
            opened: AtomicU32::new(0),
            reaper: IdleReaper::default(),
        })
    }

    /// The servers, as `host:port`, in configuration order.
    pub fn servers(&self) -> Vec<String> {
        self.cluster.labels().to_vec()
    }

    /// The placement this transport resolved from its behaviors and servers.
    pub fn placement(&self) -> &placement::Settings {
        self.cluster.settings()
    }

    /// The index (into [`TextTransport::servers`]) of the server that holds `key` now:
    /// libmemcached's choice for the same servers and behaviors, skipping servers that
    /// failover has ejected. [`Error::ServerDown`] when no server is left to take it.
    pub fn server_for_key(&self, key: &[u8]) -> Result<usize> {
        self.cluster.place(key)
    }

    /// The protocol spoken to the server at `index` (into [`TextTransport::servers`]):
    /// [`Protocol::Meta`] or [`Protocol::Classic`], or `None` while a [`Protocol::Auto`]
    /// transport has not probed it yet (or there is no such server).
    pub fn server_protocol(&self, index: usize) -> Option<Protocol> {
        let server = self.servers.get(index)?;
        match self.config.protocol {
            Protocol::Auto => match server.wire.load(Ordering::Relaxed) {
                WIRE_META => Some(Protocol::Meta),
                WIRE_CLASSIC => Some(Protocol::Classic),
                _ => None,
            },
            forced => Some(forced),
        }
    }

    fn label(&self, server: usize) -> String {
        self.server(server)
            .map(|s| s.label.clone())
            .unwrap_or_default()
    }
}

/// Groups positions `0..count` by the server of their key (`key_of`; a position without a
/// key is left out), placed by `place`, in order of first appearance; `servers` is the
/// cluster's size.
pub(crate) fn group_by_server<'k>(
    count: usize,
    servers: usize,
    key_of: impl Fn(usize) -> Option<&'k [u8]>,
    place: impl Fn(&[u8]) -> Result<usize>,
) -> Result<Vec<(usize, Vec<usize>)>> {
    if servers == 1 {
        // One server holds every key: nothing to place (a placement of one server is 0).
        let mut members = Vec::with_capacity(count);
        members.extend((0..count).filter(|&i| key_of(i).is_some()));
        return Ok(if members.is_empty() {
            Vec::new()
        } else {
            vec![(0, members)]
        });
    }
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in 0..count {
        let Some(key) = key_of(i) else { continue };
        let s = place(key)?;
        match groups.iter_mut().find(|(server, _)| *server == s) {
            Some((_, members)) => members.push(i),
            None => {
                // Room for an even share (twice it), so batches rarely reallocate.
                let share = count.min(2 * count / servers.max(1) + 1);
                let mut members = Vec::with_capacity(share);
                members.push(i);
                groups.push((s, members));
            }
        }
    }
    Ok(groups)
}

/// What the reply to the meta probe ([`meta::encode_probe`]) says the server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeVerdict {
    /// The probe's tag came back: meta with tags, on this connection.
    Meta,
    /// `ERROR` or `CLIENT_ERROR` (memcached before 1.6), or a meta reply without a token (a
    /// server that does not echo them, whose replies cannot be matched): classic, on a new
    /// connection.
    Classic,
    /// `SERVER_ERROR` (or `ERROR` with a message: memcached at its connection limit): the
    /// server's own failure, which the request fails with, nothing judged.
    Failed(String),
}

/// Reads the reply to the probe tagged `opaque` (its decoder's `tag`); anything but the
/// probe's tag, an error line or an untagged meta reply is a [`Mismatch`] (the server is
/// probed again on the next connection). A connection closed without a reply is the
/// caller's to judge (a proxy that closes on commands it lacks: classic when it answers
/// `version`).
pub(crate) fn probe_verdict(
    reply: &Reply,
    tag: &meta::Tag,
    opaque: u32,
) -> std::result::Result<ProbeVerdict, Mismatch> {
    match reply {
        Reply::Meta(Meta::Miss | Meta::Done) if tag.check(opaque, meta::PROBE_KEY).is_ok() => {
            Ok(ProbeVerdict::Meta)
        }
        Reply::Meta(_) if tag.opaque().is_none() => Ok(ProbeVerdict::Classic),
        Reply::Status(Status::Error | Status::ClientError(_)) => Ok(ProbeVerdict::Classic),
        Reply::Status(Status::ServerError(message)) => Ok(ProbeVerdict::Failed(message.clone())),
        reply => Err(Mismatch(format!("{reply:?} ({tag:?}) to the meta probe"))),
    }
}

/// What the reply to `version` says, sent on a new connection after the probe's was closed
/// without a reply (a proxy that closes on commands it lacks): the classic protocol when it
/// is `VERSION ...` (`Ok`), or a proxy's own `SERVER_ERROR` (twemproxy with its memcached
/// gone: `SERVER_ERROR Connection refused`; `Err` of that [`Error::Server`], which the
/// request fails with, not "closed without replying"). `None` for anything else (`status`
/// is `None` when the reply was not one status line alone): the probe failed.
pub(crate) fn version_verdict(label: &str, status: Option<Status>) -> Option<Result<()>> {
    match status? {
        Status::Version(_) => Some(Ok(())),
        Status::ServerError(message) => Some(Err(Error::Server {
            server: label.to_string(),
            message,
        })),
        _ => None,
    }
}

/// The configured servers as placement sees them, and the placement settings resolved for
/// them: what both the blocking and the async transport are built from. No server entry
/// is an error, and so is a key hash the text transport does not compute.
pub(crate) fn server_specs(
    config: &TextConfig,
) -> Result<(Vec<placement::Server>, placement::Settings)> {
    if config.servers.is_empty() {
        return Err(Error::NoServers);
    }
    let specs = config
        .servers
        .iter()
        .map(|s| {
            // A parse error was `Error::Protocol`, "bad reply from memcached" (a review).
            placement::Server::parse_entry(s).map_err(|e| Error::BadServer {
                entry: s.clone(),
                detail: match e {
                    placement::PlacementError::BadServer { reason, .. } => reason,
                    other => other.to_string(),
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let settings = config.placement.settings(&specs);
    if !settings.hash.is_computed() {
        return Err(Error::Unsupported {
            server: "the text transport".into(),
            command: format!("the {} key hash (use the binary transport)", settings.hash),
        });
    }
    Ok((specs, settings))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use newcache_placement::Behaviors;
    use newcache_transport::Error;

    use super::*;

    #[test]
    fn keys_are_grouped_by_server_in_order_of_first_appearance() {
        let keys: [Option<&[u8]>; 5] = [Some(b"a"), None, Some(b"bb"), Some(b"c"), Some(b"dd")];
        let key_of = |i: usize| keys.get(i).copied().flatten();
        // Placed by length: two servers.
        let by_length = |key: &[u8]| Ok(key.len() % 2);
        let groups = group_by_server(keys.len(), 2, key_of, by_length).unwrap();
        assert_eq!(groups, [(1, vec![0, 3]), (0, vec![2, 4])]);
        // One server holds every key, without asking the placement.
        let never = |_: &[u8]| -> Result<usize> { panic!("one server is not placed") };
        let groups = group_by_server(keys.len(), 1, key_of, never).unwrap();
        assert_eq!(groups, [(0, vec![0, 2, 3, 4])]);
        assert!(group_by_server(1, 1, |_| None, never).unwrap().is_empty());
        assert!(group_by_server(0, 2, key_of, by_length).unwrap().is_empty());
        // A placement's error is the grouping's.
        let down = |_: &[u8]| -> Result<usize> { Err(Error::NoServers) };
        assert!(group_by_server(keys.len(), 2, key_of, down).is_err());
    }

    #[test]
    fn server_entries_are_normalised_and_bad_ones_refused() {
        let t = TextTransport::new(TextConfig {
            servers: vec![
                "h".into(),
                "h:1".into(),
                "[::1]:5".into(),
                "[::1]".into(),
                "w:2:3".into(),
            ],
            ..TextConfig::default()
        })
        .unwrap();
        assert_eq!(
            t.servers(),
            ["h:11211", "h:1", "[::1]:5", "[::1]:11211", "w:2"]
        );
        for bad in ["", "h:x", ":1", "[::1]:x", "h:1:2:3", "h:1:0"] {
            let config = TextConfig {
                servers: vec![bad.into()],
                ..TextConfig::default()
            };
            assert!(TextTransport::new(config).is_err(), "{bad}");
        }
        // An IPv6 address without brackets is a configuration error that says so, not "bad
        // reply from memcached" (a review).
        let config = TextConfig {
            servers: vec!["::1:11211".into()],
            ..TextConfig::default()
        };
        let e = TextTransport::new(config).unwrap_err();
        assert!(
            matches!(&e, Error::BadServer { .. }) && e.to_string().contains("in brackets"),
            "{e}"
        );
        assert_eq!(e.to_string().matches("::1:11211").count(), 1, "{e}");
        // One field too many is no IPv6 address.
        let config = TextConfig {
            servers: vec!["h:1:2:3".into()],
            ..TextConfig::default()
        };
        let e = TextTransport::new(config).unwrap_err();
        assert!(!e.to_string().contains("brackets"), "{e}");
    }

    #[test]
    fn behaviors_configure_placement_failover_and_timeouts() {
        let mut c = TextConfig::default();
        c.set_behavior("ketama_weighted", "true").unwrap();
        c.set_behavior("_retry_timeout", "1").unwrap();
        c.set_behavior("dead_timeout", "60").unwrap();
        c.set_behavior("failure_limit", "2").unwrap();
        c.set_behavior("auto_eject", "true").unwrap();
        c.set_behavior("connect_timeout", "100").unwrap();
        c.set_behavior("_poll_timeout", "300").unwrap();
        c.set_behavior("tcp_nodelay", "1").unwrap();
        assert_eq!(
            c.failover,
            Failover {
                retry_timeout: Duration::from_secs(1),
                failure_limit: 2,
                remove_failed: true,
                dead_timeout: Duration::from_secs(60),
            }
        );
        assert_eq!(c.connect_timeout, Duration::from_millis(100));
        assert_eq!(c.read_timeout, Duration::from_millis(300));
        c.servers = vec!["a:1".into(), "b:2".into()];
        let t = TextTransport::new(c.clone()).unwrap();
        assert_eq!(
            t.placement().distribution,
            placement::Distribution::ConsistentWeighted
        );
        assert_eq!(t.placement().hash, placement::Hash::Md5);
        for (name, value) in [
            ("failure_limit", "0"),
            ("tcp_nodelay", "0"),
            ("hash", "jenkins"),
            ("buffer_requests", "1"),
            ("retry_timeout", "soon"),
        ] {
            let err = c.set_behavior(name, value).unwrap_err();
            assert!(
                err.to_string().contains(name) || err.to_string().contains("jenkins"),
                "{err}"
            );
        }
        // A hash the text transport does not compute is refused at construction too.
        c.placement = Behaviors {
            hash: Some(placement::Hash::Murmur),
            ..Behaviors::default()
        };
        assert!(matches!(
            TextTransport::new(c),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn building_needs_a_server_but_no_connection() {
        assert!(matches!(
            TextTransport::new(TextConfig::default()),
            Err(Error::NoServers)
        ));
        let t = TextTransport::new(TextConfig {
            servers: vec!["127.0.0.1:1".into(), "localhost".into()],
            ..TextConfig::default()
        })
        .unwrap();
        assert_eq!(t.servers(), ["127.0.0.1:1", "localhost:11211"]);
    }
}
