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
//!   [`TextConfig::idle_timeout`].
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
//!   protocol with the same placement and failover as an async transport: connections
//!   shared by any number of tasks, their requests written together, every reply matched
//!   in order.
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

mod cluster;
mod command;
mod pool;
pub mod proto;
mod stream;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tokio")]
pub mod tokio_transport;

pub use cluster::Failover;
pub use newcache_placement as placement;
#[cfg(feature = "tokio")]
pub use tokio_transport::{TokioIoStats, TokioTextTransport};

use std::fmt;
use std::io::{self, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use cluster::Cluster;
use command::{Cmd, Mismatch, NeedsMeta, Outcome, Wire};
use newcache_placement::Behaviors;
use newcache_transport::{
    check_key, Error, Item, MetaItem, Result, ServerStats, Store, StoreMode, StoreStatus,
    Transport, DEFAULT_ITEM_SIZE_LIMIT,
};
use pool::{Checkout, Permit, Pool};
use proto::{meta, Decoder, Expect, Meta, Reply, Status};
use stream::{Socket, Stream};

/// Which protocol the transport speaks to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Meta commands where the server speaks them, classic ones elsewhere (the default).
    /// Each server is probed once, on the first connection opened to it, with one tagged
    /// `mg` ([`proto::meta::encode_probe`]); the answer is kept for the life of the
    /// transport, and the server probed again only after it answers a meta command with
    /// `ERROR` (it was replaced by a memcached without meta). A probe that fails for another
    /// reason (the server is down, the reply is garbled) decides nothing: the next connection
    /// probes again.
    #[default]
    Auto,
    /// Meta commands only (memcached 1.6 and later); a server without them answers every
    /// request with an error.
    Meta,
    /// The classic text commands only, as memcached before 1.6 and proxies such as
    /// twemproxy speak them. A reply is checked against its request as far as that protocol
    /// allows (the keys of `VALUE` lines, the kind of status line, no byte after the reply,
    /// no byte waiting on an idle connection), but a duplicated reply of the same shape
    /// (`STORED`, a number, the same key's value) that arrives while the next request is in
    /// flight cannot be told from that request's own; the meta protocol's opaque tokens can.
    /// The meta-only operations ([`Transport::meta_get`], [`Transport::meta_invalidate`])
    /// are [`Error::Unsupported`].
    Classic,
}

impl Protocol {
    /// The name used in configuration: `auto`, `meta` or `classic`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Auto => "auto",
            Protocol::Meta => "meta",
            Protocol::Classic => "classic",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = BehaviorError;

    /// `auto`, `meta` or `classic` (also `text` and `ascii` for classic), in any case.
    ///
    /// ```
    /// use newcache_transport_text::Protocol;
    /// assert_eq!("Meta".parse::<Protocol>().unwrap(), Protocol::Meta);
    /// assert_eq!("classic".parse::<Protocol>().unwrap(), Protocol::Classic);
    /// assert!("binary".parse::<Protocol>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, BehaviorError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Protocol::Auto),
            "meta" => Ok(Protocol::Meta),
            "classic" | "text" | "ascii" => Ok(Protocol::Classic),
            _ => Err(BehaviorError(format!(
                "protocol {s:?}: expected auto, meta or classic"
            ))),
        }
    }
}

/// Settings of a [`TextTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextConfig {
    /// Servers as `host:port`, `host` (port 11211) or `[v6addr]:port`, each optionally with
    /// a weight (`host:port:weight`) for weighted ketama; or a unix-domain socket's absolute
    /// path, `/run/memcached.sock` (as pylibmc writes it) or `unix:/run/memcached.sock` (as
    /// python-memcached and Django do), placed as libmemcached places a socket server (its
    /// path, port 0; sockets and TCP servers mix in one ring). Their order matters for placement,
    /// as in pylibmc.
    pub servers: Vec<String>,
    /// Timeout for opening a connection.
    pub connect_timeout: Duration,
    /// Timeout for a whole reply to arrive (give or take 1/16 of it: a reply that takes many
    /// reads has the socket's timeout shortened to the time left only when the last setting
    /// would overshoot by more, so a reply that streams in quickly costs no `setsockopt`).
    /// Also how long a request waits for a connection when [`TextConfig::max_connections`]
    /// are busy.
    pub read_timeout: Duration,
    /// Timeout for a request to be written.
    pub write_timeout: Duration,
    /// Idle connections kept per server (more are closed when they come back, unless a
    /// caller is waiting for one).
    pub max_idle_per_server: usize,
    /// The most connections open to one server at once (0: no limit). A request that finds
    /// them all busy waits for one up to [`TextConfig::read_timeout`], then fails with
    /// [`Error::Timeout`] (which does not count as a failure of the server).
    ///
    /// Default 64: a blocking connection carries one request at a time, and on a LAN one
    /// round trip takes some tens of microseconds, so 64 connections already carry over a
    /// million requests a second, far more than one memcached serves; more only cost the
    /// server memory (a read buffer per connection) and file descriptors. 64 per process
    /// also keeps 16 processes under memcached's default limit of 1,024 connections (`-c`),
    /// where connections beyond it are refused.
    pub max_connections: usize,
    /// An idle connection is closed once it has been idle this long (zero: kept until the
    /// transport is dropped). Default 60 s, so an idle process does not hold connections on
    /// every server forever. A background thread, started with the first pooled
    /// connection, closes them (and stops with the transport).
    pub idle_timeout: Duration,
    /// Which protocol to speak: meta where the server has it (the default), or one of the
    /// two for every server.
    pub protocol: Protocol,
    /// Values larger than this are refused without being sent (memcached's `-I`); a `set`
    /// of one deletes the key instead, as memcached does when it refuses a `set`.
    pub item_size_limit: usize,
    /// Key placement, by libmemcached's behavior names (`hash`, `ketama`, `ketama_weighted`,
    /// `distribution`, `_sort_hosts`). Default: libmemcached's modula over one-at-a-time.
    pub placement: Behaviors,
    /// What happens when a server fails.
    pub failover: Failover,
    /// TLS to every server (memcached's `-Z`), verified against a CA; `None` (the default):
    /// plain connections. Needs the crate's `tls` feature: without it, a transport with TLS
    /// settings is refused ([`Error::Unsupported`]), never built in plain text.
    pub tls: Option<TlsConfig>,
    /// Async transport only (`TokioTextTransport`, feature `tokio`): connections opened to
    /// each server, each carrying any number of requests at once (auto-pipelined). Default
    /// 1; 0 is taken as 1. The blocking [`TextTransport`] ignores it.
    pub async_connections: usize,
    /// Async transport only (`TokioTextTransport`, feature `tokio`): requests queued per
    /// connection, waiting for its writer; past it a caller waits for room, up to its
    /// [`TextConfig::read_timeout`] ([`Error::Timeout`]). Default 1024; 0 is taken as 1.
    pub async_queue: usize,
}

/// TLS settings of a [`TextTransport`] (feature `tls`, rustls). Servers' certificates are
/// always verified: against the CA certificates in [`TlsConfig::ca_file`], for the name the
/// server was configured by (a host name or an IP address), or [`TlsConfig::server_name`].
/// There is no way to turn verification off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// A PEM file of the CA certificates that servers' certificates must chain to.
    pub ca_file: PathBuf,
    /// A PEM file of the client's certificate chain, for servers that ask for one
    /// (memcached's `ssl_verify_mode`); goes with [`TlsConfig::key_file`].
    pub cert_file: Option<PathBuf>,
    /// A PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name every server's certificate must carry, instead of the host it was configured
    /// by (needed for unix-domain sockets, which have no host name).
    pub server_name: Option<String>,
}

/// Why [`TextConfig::set_behavior`] refused a behavior.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BehaviorError(pub String);

impl fmt::Display for BehaviorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BehaviorError {}

/// The libmemcached behaviors the text transport honours, by pylibmc's names.
pub const BEHAVIORS: [&str; 16] = [
    "hash",
    "ketama_hash",
    "ketama",
    "ketama_weighted",
    "distribution",
    "_sort_hosts",
    "retry_timeout",
    "_retry_timeout",
    "failure_limit",
    "remove_failed",
    "auto_eject",
    "dead_timeout",
    "connect_timeout",
    "_poll_timeout",
    "tcp_nodelay",
    "verify_keys",
];

impl TextConfig {
    /// Sets one libmemcached behavior by pylibmc's name and in pylibmc's units, so one
    /// `CACHE_BEHAVIORS`-style list configures both transports: placement (`hash`, `ketama`,
    /// `ketama_weighted`, `distribution`, `_sort_hosts`; `ketama_hash` is accepted and, as in
    /// libmemcached 1.1.4, changes nothing), failover (`retry_timeout` and `dead_timeout` in
    /// seconds, `failure_limit`, `remove_failed`/`auto_eject`), `connect_timeout` and
    /// `_poll_timeout` (the read and write timeout) in milliseconds. `tcp_nodelay` and
    /// `verify_keys` are always on here and take only a true value. Any other behavior is an
    /// error naming the ones this transport takes.
    ///
    /// ```
    /// use newcache_transport_text::TextConfig;
    /// let mut config = TextConfig::default();
    /// config.set_behavior("ketama", "true").unwrap();
    /// config.set_behavior("remove_failed", "1").unwrap();
    /// config.set_behavior("retry_timeout", "1").unwrap();
    /// assert!(config.failover.remove_failed);
    /// assert!(config.set_behavior("buffer_requests", "1").is_err());
    /// ```
    pub fn set_behavior(&mut self, name: &str, value: &str) -> Result<(), BehaviorError> {
        let bad = |expected: &str| {
            BehaviorError(format!("behavior {name} = {value:?}: expected {expected}"))
        };
        let number = || {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("a whole number"))
        };
        let flag = || placement::parse_bool(name, value).map_err(|e| BehaviorError(e.to_string()));
        match self.placement.set(name, value) {
            Ok(true) => {
                if let Some(hash) = self.placement.hash.filter(|h| !h.is_computed()) {
                    self.placement.hash = None;
                    return Err(BehaviorError(format!(
                        "hash {hash} is not computed by the text transport (it places keys with default, md5, crc, fnv1_32, fnv1a_32, fnv1_64 and fnv1a_64); use the binary transport for it"
                    )));
                }
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => return Err(BehaviorError(e.to_string())),
        }
        match name {
            "retry_timeout" | "_retry_timeout" => {
                self.failover.retry_timeout = Duration::from_secs(number()?)
            }
            "dead_timeout" => self.failover.dead_timeout = Duration::from_secs(number()?),
            "failure_limit" => {
                let n = number()?;
                self.failover.failure_limit = u32::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("a whole number from 1"))?;
            }
            "remove_failed" => self.failover.remove_failed = number()? > 0,
            "auto_eject" => self.failover.remove_failed = flag()?,
            "connect_timeout" => self.connect_timeout = Duration::from_millis(number()?),
            "_poll_timeout" => {
                self.read_timeout = Duration::from_millis(number()?);
                self.write_timeout = self.read_timeout;
            }
            "tcp_nodelay" | "verify_keys" => {
                if !flag()? {
                    return Err(BehaviorError(format!(
                        "{name} is always on in the text transport and cannot be turned off"
                    )));
                }
            }
            _ => {
                return Err(BehaviorError(format!(
                    "behavior {name:?} is not one the text transport takes ({}); libmemcached's other behaviors need the binary transport",
                    BEHAVIORS.join(", ")
                )))
            }
        }
        Ok(())
    }
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            servers: Vec::new(),
            connect_timeout: Duration::from_millis(250),
            read_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_millis(500),
            max_idle_per_server: 16,
            max_connections: 64,
            idle_timeout: Duration::from_secs(60),
            protocol: Protocol::Auto,
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
            placement: Behaviors::default(),
            failover: Failover::default(),
            tls: None,
            async_connections: 1,
            async_queue: 1024,
        }
    }
}

/// The read buffer's size when a connection opens, and the least a value still to come
/// must have left for it to be read straight into the value instead (see
/// `TextTransport::receive`).
pub(crate) const READ_BUF: usize = 16 * 1024;

/// The most the read buffer grows to. Replies are consumed from it as they are parsed and
/// large values bypass it, so it never has to hold a reply; it grows (doubling) only while
/// reads keep filling it, so a large multi-get of small values takes fewer, larger reads.
/// It stays at its size while its connection is pooled (growing it again on every large
/// reply would cost more than it saves).
const READ_BUF_MAX: usize = 256 * 1024;

/// A reply that needs more than one read may run past its deadline by at most this part of
/// the read timeout (1/16: 31 ms of the default 500 ms) before the socket's read timeout is
/// shortened again (see `TextTransport::receive`).
const DEADLINE_SLACK: u32 = 16;

/// The reply bytes a connection has read and not yet consumed.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled all the room it was given: double the buffer (up to
    /// [`READ_BUF_MAX`]) before the next one.
    grow: bool,
}

impl ReadBuf {
    pub(crate) fn new() -> Self {
        ReadBuf {
            data: vec![0; READ_BUF],
            start: 0,
            end: 0,
            grow: false,
        }
    }

    /// Back to [`READ_BUF`] bytes if it ever grew past [`READ_BUF_MAX`] (only a buffer full
    /// of one unfinished line can, and lines are far shorter); it holds nothing when pooled.
    fn shrink(&mut self) {
        if self.data.len() > READ_BUF_MAX && self.filled().is_empty() {
            self.data.truncate(READ_BUF);
            self.data.shrink_to_fit();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Records `n` bytes read into the `offered` bytes [`ReadBuf::spare`] gave.
    pub(crate) fn filled_by(&mut self, n: usize, offered: usize) {
        self.end = (self.end + n).min(self.data.len());
        self.grow = n > 0 && n >= offered;
    }

    pub(crate) fn filled(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or_default()
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into: the unconsumed bytes (at most a partial line) move to the front
    /// first, and the buffer doubles when it is full of them, or when the last read filled
    /// it and it is below [`READ_BUF_MAX`].
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() || (self.grow && self.data.len() < READ_BUF_MAX) {
            let len = self.data.len().saturating_mul(2);
            self.data.resize(len, 0);
        }
        self.grow = false;
        self.data.get_mut(self.end..).unwrap_or_default()
    }
}

/// One open connection to one server.
struct Conn {
    stream: Stream,
    rbuf: ReadBuf,
    wbuf: Vec<u8>,
    /// The dialect it speaks, fixed when it opened.
    wire: Wire,
    /// The opaque token of its next meta request.
    opaque: u32,
    /// Its place in the server's count of open connections.
    _permit: Permit<Conn>,
}

impl Conn {
    fn new(stream: Stream, wire: Wire, mut permit: Permit<Conn>, first_opaque: u32) -> Conn {
        // When the connection goes, its place is freed once the server has closed its side.
        if let Ok(socket) = stream.socket().try_clone() {
            permit.attach(socket);
        }
        Conn {
            stream,
            rbuf: ReadBuf::new(),
            wbuf: Vec::with_capacity(1024),
            wire,
            opaque: first_opaque,
            _permit: permit,
        }
    }

    /// The next opaque token: never the same twice in a row of 2^32 requests.
    fn next_opaque(&mut self) -> u32 {
        let opaque = self.opaque;
        self.opaque = opaque.wrapping_add(1);
        opaque
    }

    /// Its permit, to open another connection in its place.
    fn into_permit(self) -> Permit<Conn> {
        self._permit
    }
}

/// What a server was found to speak ([`Server::wire`]).
pub(crate) const WIRE_UNKNOWN: u8 = 0;
pub(crate) const WIRE_META: u8 = 1;
pub(crate) const WIRE_CLASSIC: u8 = 2;

/// One configured server and its connections.
struct Server {
    label: String,
    /// Where it listens.
    endpoint: Endpoint,
    /// The name its TLS certificate must carry (with TLS).
    #[cfg(feature = "tls")]
    tls_name: Option<rustls::pki_types::ServerName<'static>>,
    pool: Pool<Conn>,
    /// With [`Protocol::Auto`]: what the server's probe found (`WIRE_*`).
    wire: AtomicU8,
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    /// `host:port` over TCP.
    Tcp(String),
    /// A unix-domain socket's path.
    Unix(PathBuf),
}

/// A connection just had: ready, or waiting for the reply to the probe sent on it (with
/// its token).
enum Opened {
    Ready(Conn),
    Probing(Conn, u32),
}

/// Why a connection could not be had.
enum Acquire {
    /// Every connection stayed busy (not a failure of the server).
    Busy(Error),
    /// Opening one failed.
    Failed(Error),
}

/// The thread that closes idle connections, started with the first pooled connection.
struct Reaper {
    started: Once,
    /// Set (and signalled) when the transport is dropped.
    stop: Arc<(Mutex<bool>, Condvar)>,
}

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
    reaper: Reaper,
}

impl fmt::Debug for TextTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextTransport")
            .field("servers", &self.servers())
            .finish()
    }
}

impl Drop for TextTransport {
    fn drop(&mut self) {
        let (stopped, signal) = &*self.reaper.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        signal.notify_all();
    }
}

impl TextTransport {
    /// A transport over these servers. Connects to nothing until the first request.
    pub fn new(config: TextConfig) -> Result<Self> {
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
            reaper: Reaper {
                started: Once::new(),
                stop: Arc::new((Mutex::new(false), Condvar::new())),
            },
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

    fn server(&self, index: usize) -> Result<&Server> {
        self.servers.get(index).ok_or(Error::NoServers)
    }

    /// A connection to the server (TLS set up, when configured).
    fn connect_stream(&self, server: &Server) -> Result<Stream> {
        let socket = self.connect_socket(server)?;
        #[cfg(feature = "tls")]
        if let (Some(config), Some(name)) = (&self.tls, &server.tls_name) {
            let deadline = Instant::now() + self.config.connect_timeout + self.config.read_timeout;
            return tls::handshake(config.clone(), name.clone(), socket, deadline)
                .map(|tls| Stream::Tls(Box::new(tls)))
                .map_err(|source| Error::Connect {
                    server: server.label.clone(),
                    source,
                });
        }
        Ok(Stream::Plain(socket))
    }

    /// A socket connected to the server, set up (no delay, read and write timeouts).
    fn connect_socket(&self, server: &Server) -> Result<Socket> {
        let connect_err = |source| Error::Connect {
            server: server.label.clone(),
            source,
        };
        let address = match &server.endpoint {
            Endpoint::Tcp(address) => address,
            Endpoint::Unix(path) => {
                // A local connect does not block on the network: no connect timeout needed.
                let stream = UnixStream::connect(path).map_err(connect_err)?;
                stream
                    .set_read_timeout(Some(self.config.read_timeout))
                    .and_then(|()| stream.set_write_timeout(Some(self.config.write_timeout)))
                    .map_err(connect_err)?;
                return Ok(Socket::Unix(stream));
            }
        };
        let addrs: Vec<SocketAddr> = address.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.config.connect_timeout) {
                Ok(stream) => {
                    let setup = stream
                        .set_nodelay(true)
                        .and_then(|()| stream.set_read_timeout(Some(self.config.read_timeout)))
                        .and_then(|()| stream.set_write_timeout(Some(self.config.write_timeout)));
                    setup.map_err(connect_err)?;
                    return Ok(Socket::Tcp(stream));
                }
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    fn new_conn(&self, stream: Stream, wire: Wire, permit: Permit<Conn>) -> Conn {
        // Each connection starts its tokens elsewhere, so a reply that strays from one
        // connection to another does not carry the token the other expects either.
        let seed = self
            .opened
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9);
        Conn::new(stream, wire, permit, seed)
    }

    /// Opens a connection in the place `permit` holds, in the dialect the server speaks;
    /// when that is not known yet, with the probe sent on it ([`TextTransport::end_probe`]
    /// reads its reply), so that a batch probes all its servers in one round trip.
    fn open(&self, server: &Server, permit: Permit<Conn>) -> Result<Opened> {
        let stream = self.connect_stream(server)?;
        #[cfg(feature = "tracing")]
        tracing::debug!(server = %server.label, "memcached connection opened");
        let wire = match self.config.protocol {
            Protocol::Meta => Wire::Meta,
            Protocol::Classic => Wire::Classic,
            Protocol::Auto => match server.wire.load(Ordering::Relaxed) {
                WIRE_META => Wire::Meta,
                WIRE_CLASSIC => Wire::Classic,
                _ => {
                    let mut conn = self.new_conn(stream, Wire::Meta, permit);
                    let opaque = conn.next_opaque();
                    meta::encode_probe(&mut conn.wbuf, opaque);
                    self.send(server, &mut conn)?;
                    conn.wbuf.clear();
                    return Ok(Opened::Probing(conn, opaque));
                }
            },
        };
        Ok(Opened::Ready(self.new_conn(stream, wire, permit)))
    }

    /// Reads the reply to the probe sent on `conn` with token `opaque`, which tells whether
    /// the server speaks the meta protocol with tags ([`meta::encode_probe`]):
    /// - a reply with the probe's tag: meta, and this connection is ready;
    /// - `ERROR` or `CLIENT_ERROR` (memcached before 1.6), or a meta reply without a token (a
    ///   server that does not echo them, whose replies cannot be matched): classic, on a new
    ///   connection;
    /// - the connection closed without a reply (twemproxy closes on commands it does not
    ///   know): classic when the server answers `version` on a new connection;
    /// - anything else (another token, garbage, a timeout, a connection lost): an error, and
    ///   the server is probed again on the next connection.
    fn end_probe(&self, server: &Server, mut conn: Conn, opaque: u32) -> Result<Conn> {
        let mut decoder = Decoder::new(Expect::Meta);
        match self.receive(server, &mut conn, &mut decoder) {
            Ok((reply, shortened)) => match probe_verdict(&reply, decoder.tag(), opaque) {
                Ok(ProbeVerdict::Meta) => {
                    if !conn.rbuf.filled().is_empty() {
                        return Err(self.mismatch(
                            server,
                            Mismatch("bytes after the reply to the meta probe".into()),
                        ));
                    }
                    server.wire.store(WIRE_META, Ordering::Relaxed);
                    conn.wire = Wire::Meta;
                    if shortened {
                        conn.stream
                            .set_read_timeout(Some(self.config.read_timeout))
                            .map_err(|e| self.io_error(server, e, self.config.read_timeout))?;
                    }
                    return Ok(conn);
                }
                // Classic, below.
                Ok(ProbeVerdict::Classic) => {}
                Err(m) => return Err(self.mismatch(server, m)),
            },
            Err(e) if closed_without_reply(&e) => {
                let permit = conn.into_permit();
                let stream = self.connect_stream(server)?;
                let mut conn = self.new_conn(stream, Wire::Classic, permit);
                if self.answers_version(server, &mut conn) {
                    server.wire.store(WIRE_CLASSIC, Ordering::Relaxed);
                    return Ok(conn);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        server.wire.store(WIRE_CLASSIC, Ordering::Relaxed);
        let permit = conn.into_permit();
        let stream = self.connect_stream(server)?;
        Ok(self.new_conn(stream, Wire::Classic, permit))
    }

    /// Sends `version` on `conn` and reads the reply: true when it is `VERSION ...` and
    /// nothing follows it (the connection is then in step, its read timeout as configured).
    fn answers_version(&self, server: &Server, conn: &mut Conn) -> bool {
        conn.wbuf.clear();
        proto::encode_line(&mut conn.wbuf, "version");
        let ok = self.send(server, conn).is_ok()
            && matches!(
                self.receive(server, conn, &mut Decoder::new(Expect::Status)),
                Ok((Reply::Status(Status::Version(_)), false))
            )
            && conn.rbuf.filled().is_empty();
        conn.wbuf.clear();
        ok
    }

    /// A connection to the server: an idle one (a classic one only when no byte waits on
    /// it), or a new one once fewer than `max_connections` are open, waiting up to the read
    /// timeout for either.
    fn checkout(&self, server: &Server) -> std::result::Result<Conn, Acquire> {
        match self.start_checkout(server)? {
            Opened::Ready(conn) => Ok(conn),
            Opened::Probing(conn, opaque) => self
                .end_probe(server, conn, opaque)
                .map_err(Acquire::Failed),
        }
    }

    /// [`TextTransport::checkout`], leaving a new connection's probe (if any) unread.
    fn start_checkout(&self, server: &Server) -> std::result::Result<Opened, Acquire> {
        loop {
            match server.pool.checkout(self.config.read_timeout) {
                Ok(Checkout::Idle(mut conn)) => {
                    if conn.wire == Wire::Classic && conn.stream.has_bytes_waiting() {
                        // A reply nobody asked for (a duplicate, a late one) or a closed
                        // connection: never read as the next request's reply.
                        continue;
                    }
                    return Ok(Opened::Ready(conn));
                }
                Ok(Checkout::Open(permit)) => {
                    return self.open(server, permit).map_err(Acquire::Failed)
                }
                Err(busy) => {
                    return Err(Acquire::Busy(Error::Timeout {
                        server: server.label.clone(),
                        after: busy.waited,
                    }))
                }
            }
        }
    }

    /// Pools a connection whose replies were all read, its read buffer back at its size if
    /// it ever grew. The write buffer keeps its capacity: shrinking it made every store of a
    /// large value pay for growing it again (a 1 MB `set` took 4 times as long).
    fn checkin(&self, server: &Server, mut conn: Conn) {
        conn.wbuf.clear();
        conn.rbuf.shrink();
        if conn.rbuf.filled().is_empty() && conn.stream.buffered() == 0 {
            server.pool.checkin(conn);
            self.start_reaper();
        }
    }

    /// Starts the thread that closes idle connections (once per transport, when the idle
    /// timeout is not zero). It holds the servers weakly and stops when the transport is
    /// dropped.
    fn start_reaper(&self) {
        if self.config.idle_timeout.is_zero() {
            return;
        }
        self.reaper.started.call_once(|| {
            let servers: Weak<[Server]> = Arc::downgrade(&self.servers);
            let stop = self.reaper.stop.clone();
            let tick = (self.config.idle_timeout / 4).max(Duration::from_millis(5));
            // Without the thread, idle connections are still closed when the pool is next
            // used (checkout closes the expired ones).
            let _ = std::thread::Builder::new()
                .name("newcache-idle".into())
                .spawn(move || loop {
                    {
                        let (stopped, signal) = &*stop;
                        let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
                        if *guard {
                            return;
                        }
                        let (guard, _) = signal
                            .wait_timeout(guard, tick)
                            .unwrap_or_else(|p| p.into_inner());
                        if *guard {
                            return;
                        }
                    }
                    let Some(servers) = servers.upgrade() else {
                        return;
                    };
                    for server in servers.iter() {
                        server.pool.close_expired();
                    }
                });
        });
    }

    fn io_error(&self, server: &Server, e: io::Error, timeout: Duration) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                server: server.label.clone(),
                after: timeout,
            },
            _ => Error::Io {
                server: server.label.clone(),
                source: e,
            },
        }
    }

    fn send(&self, server: &Server, conn: &mut Conn) -> Result<()> {
        conn.stream
            .write_all(&conn.wbuf)
            .and_then(|()| conn.stream.flush())
            .map_err(|e| self.io_error(server, e, self.config.write_timeout))
    }

    /// Reads one reply with `decoder`; also says whether the socket's read timeout was
    /// shortened on the way (to be restored before the connection is reused).
    ///
    /// The bytes the decoder consumed leave the read buffer after every parse, so the buffer
    /// holds at most a partial line and never grows with the reply (only with the rate it
    /// arrives at, up to [`READ_BUF_MAX`]). The rest of a large value (at least
    /// [`READ_BUF`] still to come) is read from the socket straight into the value's own
    /// `Vec` (with the read buffer behind it in the same `readv`, for what follows the
    /// value), so it is never copied out of the read buffer.
    ///
    /// The whole reply is bounded by the read timeout: the socket's read timeout bounds each
    /// read, and once a reply takes more than one read the socket's timeout is shortened to
    /// the time left, but only when the last setting would let a read run more than
    /// [`DEADLINE_SLACK`] of the read timeout past the reply's deadline. A reply that streams
    /// in quickly, however many reads it takes, makes no `setsockopt` at all.
    fn receive(
        &self,
        server: &Server,
        conn: &mut Conn,
        decoder: &mut Decoder,
    ) -> Result<(Reply, bool)> {
        let timeout = self.config.read_timeout;
        let slack = timeout / DEADLINE_SLACK;
        // The reply's deadline, and when the socket's timeout was last made to end there.
        let mut deadline: Option<(Instant, Instant)> = None;
        let mut shortened = false;
        let mut received = false;
        loop {
            let parsed = decoder
                .decode(conn.rbuf.filled())
                .map_err(|e| Error::Protocol {
                    server: server.label.clone(),
                    detail: e.0,
                })?;
            conn.rbuf.consume(decoder.consumed());
            if let Some(reply) = parsed {
                return Ok((reply, shortened));
            }
            match deadline {
                None => {
                    let now = Instant::now();
                    deadline = Some((now + timeout, now));
                }
                Some((end, set_at)) => {
                    let now = Instant::now();
                    let left = end.saturating_duration_since(now);
                    if left.is_zero() {
                        return Err(Error::Timeout {
                            server: server.label.clone(),
                            after: timeout,
                        });
                    }
                    // A read now may block until now + (end - set_at): past the deadline by
                    // now - set_at.
                    if now.saturating_duration_since(set_at) > slack {
                        conn.stream
                            .set_read_timeout(Some(left))
                            .map_err(|e| self.io_error(server, e, timeout))?;
                        shortened = true;
                        deadline = Some((end, now));
                    }
                }
            }
            let spare = conn.rbuf.spare();
            let offered = spare.len();
            let read = match decoder.value_spare().filter(|v| v.len() >= READ_BUF) {
                Some(value) => {
                    let room = value.len();
                    let mut bufs = [IoSliceMut::new(value), IoSliceMut::new(spare)];
                    conn.stream
                        .read_vectored(&mut bufs)
                        .map(|n| (n, n.min(room)))
                }
                None => conn.stream.read(spare).map(|n| (n, 0)),
            };
            let (n, direct) = match read {
                Ok(n) => n,
                // A socket read with a timeout is not restarted after the process was
                // stopped and continued (a debugger, a profiler attaching): read again; the
                // reply's deadline still holds.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(server, e, timeout)),
            };
            if n == 0 {
                let source = if received {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection mid-reply",
                    )
                } else {
                    io::Error::new(io::ErrorKind::UnexpectedEof, ClosedWithoutReply)
                };
                return Err(Error::Io {
                    server: server.label.clone(),
                    source,
                });
            }
            received = true;
            decoder.value_filled(direct);
            conn.rbuf.filled_by(n - direct, offered);
        }
    }

    /// Returns a connection whose replies were all read to the pool, its read timeout
    /// restored first when `restore` (it was shortened while reading). Bytes after the last
    /// awaited reply mean something on the connection is not what was asked for: in the
    /// classic protocol the replies just read may be someone else's, so that is an
    /// [`Error::Protocol`]; in meta every reply was matched by its tag, so the replies stand
    /// and only the connection is closed.
    fn finish(&self, server: &Server, mut conn: Conn, restore: bool) -> Result<()> {
        if conn.wire == Wire::Meta && server.wire.load(Ordering::Relaxed) != WIRE_META {
            // Meta spoken (with Protocol::Meta) and answered: the server knows it.
            server.wire.store(WIRE_META, Ordering::Relaxed);
        }
        // With TLS, bytes may also wait decrypted in the TLS session.
        let decrypted = conn.stream.buffered();
        if !conn.rbuf.filled().is_empty() || decrypted > 0 {
            return match conn.wire {
                Wire::Meta => Ok(()),
                Wire::Classic => Err(Error::Protocol {
                    server: server.label.clone(),
                    detail: format!(
                        "{} bytes followed the reply ({:?}...): it may have been the reply to another request, so the connection was closed",
                        conn.rbuf.filled().len() + decrypted,
                        String::from_utf8_lossy(conn.rbuf.filled().get(..40).unwrap_or(conn.rbuf.filled()))
                    ),
                }),
            };
        }
        if restore {
            conn.stream
                .set_read_timeout(Some(self.config.read_timeout))
                .map_err(|e| self.io_error(server, e, self.config.read_timeout))?;
        }
        self.checkin(server, conn);
        Ok(())
    }

    /// The error for a reply that does not answer its request.
    fn mismatch(&self, server: &Server, m: Mismatch) -> Error {
        Error::Protocol {
            server: server.label.clone(),
            detail: format!(
                "the reply does not answer its request ({}); the connection was closed",
                m.0
            ),
        }
    }

    /// The error for an error line (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) in reply to
    /// `cmd`: a store refused as too large is [`Error::ValueTooLarge`] naming its size.
    fn refusal(&self, label: &str, cmd: &Cmd<'_>, wire: Wire, status: Status) -> Error {
        refusal_error(label, cmd, wire, status, self.config.item_size_limit)
    }

    /// An error line to a meta command: a server that answers `ERROR` no longer knows meta
    /// (it was replaced by an older one): probe it again on the next connection.
    fn note_refusal(&self, server: &Server, wire: Wire, status: &Status) {
        if wire == Wire::Meta && *status == Status::Error && self.config.protocol == Protocol::Auto
        {
            server.wire.store(WIRE_UNKNOWN, Ordering::Relaxed);
        }
    }

    /// One keyed command on the server that holds its key: its outcome (an error line is an
    /// error). The connection returns to the pool only when the reply was the awaited one
    /// and arrived whole.
    fn run(&self, cmd: Cmd<'_>) -> Result<Outcome> {
        let index = self.server_for_key(cmd.key())?;
        let server = self.server(index)?;
        self.cluster.check_up(index)?;
        let conn = match self.checkout(server) {
            Ok(conn) => conn,
            Err(Acquire::Busy(e)) => return Err(e),
            Err(Acquire::Failed(e)) => {
                let outcome = Err(e);
                self.cluster.report(index, &outcome);
                return outcome;
            }
        };
        let mut head = Head::default();
        let outcome = self.exchange(server, conn, &cmd, &mut head);
        let outcome = self.classify_close(index, head, outcome);
        self.cluster.report(index, &outcome);
        outcome
    }

    fn exchange(
        &self,
        server: &Server,
        mut conn: Conn,
        cmd: &Cmd<'_>,
        head: &mut Head,
    ) -> Result<Outcome> {
        let wire = conn.wire;
        let opaque = conn.next_opaque();
        conn.wbuf.clear();
        if let Err(NeedsMeta(what)) = cmd.encode(&mut conn.wbuf, wire, opaque) {
            self.checkin(server, conn);
            return Err(Error::Unsupported {
                server: server.label.clone(),
                command: what.into(),
            });
        }
        *head = Head::of(&conn.wbuf);
        self.send(server, &mut conn)?;
        let mut decoder = Decoder::new(cmd.expect(wire));
        let (reply, shortened) = self.receive(server, &mut conn, &mut decoder)?;
        let outcome = command::interpret(cmd, wire, reply, decoder.tag(), opaque)
            .map_err(|m| self.mismatch(server, m))?;
        if let Outcome::Refused(status) = outcome {
            // After an error line memcached may still be reading what it could not parse
            // (the rest of a refused data block, say) and answer it later: the connection
            // is dropped, not pooled.
            self.note_refusal(server, wire, &status);
            return Err(self.refusal(&server.label, cmd, wire, status));
        }
        self.finish(server, conn, shortened)?;
        Ok(outcome)
    }

    /// A connection closed before any reply to a command that servers may lack (`stats`,
    /// `flush_all`, meta commands...) is a proxy refusing the command (twemproxy closes the
    /// connection on what it does not proxy) when the server still answers `version` on a
    /// fresh connection: then it is [`Error::Unsupported`], and the server is not failing.
    /// A meta command refused so makes an [`Protocol::Auto`] transport probe the server
    /// again.
    fn classify_close<T>(&self, index: usize, head: Head, outcome: Result<T>) -> Result<T> {
        let closed = matches!(&outcome, Err(e) if closed_without_reply(e));
        if !closed || !head.may_be_unsupported() {
            return outcome;
        }
        let Ok(server) = self.server(index) else {
            return outcome;
        };
        if head.is_meta() && server.wire.load(Ordering::Relaxed) == WIRE_META {
            // The server answered meta commands before: a connection closed now is a
            // connection lost (a restart, a network fault), not a refusal.
            return outcome;
        }
        let alive = match server.pool.checkout(self.config.connect_timeout) {
            Ok(Checkout::Idle(mut conn)) => {
                let alive = self.answers_version(server, &mut conn);
                if alive {
                    self.checkin(server, conn);
                }
                alive
            }
            Ok(Checkout::Open(permit)) => self.connect_stream(server).is_ok_and(|stream| {
                let mut conn = self.new_conn(stream, Wire::Classic, permit);
                self.answers_version(server, &mut conn)
            }),
            Err(_) => false,
        };
        if !alive {
            return outcome;
        }
        if head.is_meta() && self.config.protocol == Protocol::Auto {
            server.wire.store(WIRE_UNKNOWN, Ordering::Relaxed);
        }
        Err(Error::Unsupported {
            server: self.label(index),
            command: head.command(),
        })
    }

    /// Groups positions `0..count` by the server of their key (`key_of`), in order of first
    /// appearance.
    fn by_server<'k>(
        &self,
        count: usize,
        key_of: impl Fn(usize) -> Option<&'k [u8]>,
    ) -> Result<Vec<(usize, Vec<usize>)>> {
        group_by_server(count, self.servers.len(), key_of, |key| {
            self.server_for_key(key)
        })
    }

    /// Pipelined across servers, in rounds: each round writes every server its next chunk
    /// of the batch before reading any reply, so a batch that fits one round (see
    /// [`RoundLimit`]) costs about one round trip however many servers it touches, and a
    /// larger one never has more unread replies or unsent request bytes per server than the
    /// socket buffers hold (no write-write deadlock with the server). Each group's outcome is
    /// its own: a down server fails its group only; a reply that does not answer its request
    /// fails its group with [`Error::Protocol`] (the requests after it on that connection
    /// fail with it, the connection is closed). Lanes take their connections in server order,
    /// so two batches never wait for each other's connections in a circle when
    /// `max_connections` are busy.
    fn pipelined(
        &self,
        groups: &[(usize, Vec<usize>)],
        batch: Batch<'_>,
        limit: RoundLimit,
    ) -> Vec<(usize, Result<Vec<Answer>>)> {
        let mut lanes: Vec<Lane<'_>> = groups
            .iter()
            .enumerate()
            .map(|(position, (index, members))| Lane {
                position,
                index: *index,
                members,
                done: 0,
                round: 0..0,
                first_opaque: 0,
                probe: None,
                conn: None,
                head: Head::default(),
                shortened: false,
                refused: false,
                busy: false,
                outcome: Ok(Vec::new()),
            })
            .collect();
        lanes.sort_unstable_by_key(|lane| lane.index);
        self.connect_lanes(&mut lanes, batch);
        loop {
            let mut sent = false;
            for lane in lanes.iter_mut() {
                if lane.outcome.is_err() || lane.done >= lane.members.len() {
                    continue;
                }
                match self.send_round(lane, batch, limit) {
                    Ok(()) => sent = true,
                    Err(e) => lane.fail(e),
                }
            }
            if !sent {
                break;
            }
            for lane in lanes.iter_mut() {
                let round = std::mem::replace(&mut lane.round, 0..0);
                if round.is_empty() || lane.outcome.is_err() {
                    continue;
                }
                lane.done = round.end;
                if let Err(e) = self.receive_round(lane, round, batch) {
                    lane.fail(e);
                }
            }
        }
        lanes.sort_unstable_by_key(|lane| lane.position);
        lanes
            .into_iter()
            .map(|mut lane| {
                let index = lane.index;
                let mut outcome = std::mem::replace(&mut lane.outcome, Ok(Vec::new()));
                if let (Ok(_), Some(conn)) = (&outcome, lane.conn.take()) {
                    if !lane.refused {
                        let finished = self
                            .server(index)
                            .and_then(|server| self.finish(server, conn, lane.shortened));
                        if let Err(e) = finished {
                            outcome = Err(e);
                        }
                    }
                }
                let outcome = self.classify_close(index, lane.head, outcome);
                if !lane.busy {
                    self.cluster.report(index, &outcome);
                }
                (index, outcome)
            })
            .collect()
    }

    /// Gives every lane its connection: new ones' probes are all sent before any is read,
    /// so a batch's first use of its servers costs one round trip more, not one per server.
    fn connect_lanes(&self, lanes: &mut [Lane<'_>], batch: Batch<'_>) {
        let mut probing = false;
        for lane in lanes.iter_mut() {
            let started = self.server(lane.index).and_then(|server| {
                self.cluster.check_up(lane.index)?;
                match self.start_checkout(server) {
                    Ok(opened) => Ok(opened),
                    Err(Acquire::Busy(e)) => {
                        lane.busy = true;
                        Err(e)
                    }
                    Err(Acquire::Failed(e)) => Err(e),
                }
            });
            match started {
                Ok(Opened::Ready(conn)) => lane.conn = Some(conn),
                Ok(Opened::Probing(conn, opaque)) => {
                    lane.conn = Some(conn);
                    lane.probe = Some(opaque);
                    probing = true;
                }
                Err(e) => lane.fail(e),
            }
            if let Ok(answers) = lane.outcome.as_mut() {
                answers.reserve(match batch {
                    Batch::Line(..) => 1,
                    Batch::QuietDeletes(_) => 0,
                    Batch::Each(_) | Batch::Gets(_) => lane.members.len(),
                });
            }
        }
        if !probing {
            return;
        }
        for lane in lanes.iter_mut() {
            let Some(opaque) = lane.probe.take() else {
                continue;
            };
            let Some(conn) = lane.conn.take() else {
                continue;
            };
            match self
                .server(lane.index)
                .and_then(|server| self.end_probe(server, conn, opaque))
            {
                Ok(conn) => lane.conn = Some(conn),
                Err(e) => lane.fail(e),
            }
        }
    }

    /// Writes the lane's next chunk on its connection.
    fn send_round(&self, lane: &mut Lane<'_>, batch: Batch<'_>, limit: RoundLimit) -> Result<()> {
        let server = self.server(lane.index)?;
        let first = lane.done == 0;
        let Some(mut conn) = lane.conn.take() else {
            return Err(Error::Protocol {
                server: server.label.clone(),
                detail: "a batch lost its connection".into(),
            });
        };
        let wire = conn.wire;
        let end = limit.chunk_end(lane.members, lane.done, &|i| batch.cost(i), &|i| {
            batch.reply_cost(i, wire)
        });
        let round = lane.done..end;
        let members = lane.members.get(round.clone()).unwrap_or_default();
        conn.wbuf.clear();
        lane.first_opaque = conn.opaque;
        if let Err(NeedsMeta(what)) = batch.encode(&mut conn, members) {
            conn.wbuf.clear();
            self.checkin(server, conn);
            return Err(Error::Unsupported {
                server: server.label.clone(),
                command: what.into(),
            });
        }
        if first {
            lane.head = Head::of(&conn.wbuf);
        }
        self.send(server, &mut conn)?;
        lane.conn = Some(conn);
        lane.round = round;
        Ok(())
    }

    /// Reads the replies to the lane's members `round`, each checked against its request.
    /// On an error the connection is dropped, unread.
    fn receive_round(
        &self,
        lane: &mut Lane<'_>,
        round: Range<usize>,
        batch: Batch<'_>,
    ) -> Result<()> {
        let server = self.server(lane.index)?;
        let Some(mut conn) = lane.conn.take() else {
            return Ok(());
        };
        let Ok(answers) = lane.outcome.as_mut() else {
            return Ok(());
        };
        let members = lane.members.get(round.clone()).unwrap_or_default();
        let wire = conn.wire;
        let mut opaque = lane.first_opaque;
        match (batch, wire) {
            (Batch::Line(_, expect), _) => {
                let (reply, short) = self.receive(server, &mut conn, &mut Decoder::new(expect))?;
                lane.shortened |= short;
                if matches!(&reply, Reply::Status(s) if is_error_line(s)) {
                    lane.refused = true;
                }
                answers.push(Answer::Line(Box::new(reply)));
            }
            (Batch::Gets(keys), _) if gets_per_key(wire, members.len()) => {
                let asked = members.iter().filter_map(|&i| keys.get(i));
                let short = self.read_gets(server, &mut conn, asked, opaque, |m, item| {
                    if let Some(&i) = members.get(m) {
                        answers.push(Answer::Key(i, Outcome::Item(item)));
                    }
                })?;
                lane.shortened |= short;
            }
            (Batch::Gets(keys), _) => {
                let closer = match wire {
                    Wire::Meta => members
                        .last()
                        .and_then(|&i| keys.get(i))
                        .map(|&key| (opaque, key)),
                    Wire::Classic => None,
                };
                let mut items = vec![None; members.len()];
                let key_at = |m: usize| members.get(m).and_then(|&i| keys.get(i)).copied();
                let short = self.read_multi_get(
                    server,
                    &mut conn,
                    members.len(),
                    key_at,
                    &mut items,
                    closer,
                )?;
                lane.shortened |= short;
                for (&i, item) in members.iter().zip(items) {
                    answers.push(Answer::Key(i, Outcome::Item(item)));
                }
            }
            (Batch::Each(_), _) => {
                for &i in members {
                    let Some(cmd) = batch.cmd(i) else { continue };
                    let mut decoder = Decoder::new(cmd.expect(wire));
                    let (reply, short) = self.receive(server, &mut conn, &mut decoder)?;
                    lane.shortened |= short;
                    let outcome = command::interpret(&cmd, wire, reply, decoder.tag(), opaque)
                        .map_err(|m| self.mismatch(server, m))?;
                    opaque = opaque.wrapping_add(1);
                    match outcome {
                        Outcome::Refused(status) => {
                            self.note_refusal(server, wire, &status);
                            lane.refused = true;
                            answers.push(Answer::Refused(Some(i), cmd.name(wire), status));
                        }
                        outcome => answers.push(Answer::Key(i, outcome)),
                    }
                }
            }
            (Batch::QuietDeletes(keys), wire) => {
                let mut round = QuietRound::new(wire, opaque, members.len());
                let key_at = |n: usize| members.get(n).and_then(|&i| keys.get(i)).copied();
                loop {
                    let mut decoder = Decoder::new(round.expect());
                    let (reply, short) = self.receive(server, &mut conn, &mut decoder)?;
                    lane.shortened |= short;
                    match round
                        .take(reply, decoder.tag(), key_at)
                        .map_err(|m| self.mismatch(server, m))?
                    {
                        QuietStep::More => {}
                        QuietStep::Refused(s) => {
                            lane.refused = true;
                            answers.push(Answer::Refused(None, round.command(), s));
                        }
                        QuietStep::RefusedLast(s) => {
                            // Which delete an untagged error line answers is not known, nor
                            // whether the last one's reply is still to come: the connection
                            // is dropped with what is left on it.
                            lane.refused = true;
                            lane.done = lane.members.len();
                            answers.push(Answer::Refused(None, round.command(), s));
                            break;
                        }
                        QuietStep::Done => break,
                    }
                }
            }
        }
        if wire == Wire::Classic && !conn.rbuf.filled().is_empty() {
            // Bytes after a round's replies, before the next round was even sent: the
            // replies just read may have been someone else's.
            return Err(Error::Protocol {
                server: server.label.clone(),
                detail: format!(
                    "{} bytes followed the replies of a pipelined round; the connection was closed",
                    conn.rbuf.filled().len()
                ),
            });
        }
        lane.conn = Some(conn);
        Ok(())
    }

    /// Every group's answers, or the first group's error (after every group was read).
    pub(crate) fn strict<A>(outcomes: Vec<(usize, Result<A>)>) -> Result<Vec<(usize, A)>> {
        outcomes
            .into_iter()
            .map(|(index, outcome)| outcome.map(|answers| (index, answers)))
            .collect()
    }

    /// For reads: the answers of the servers that answered; a server that is down or failed
    /// leaves its keys as misses (libmemcached's multi-get does the same). An error when
    /// every server failed, or when one gave a reply that is an error of its own.
    pub(crate) fn tolerant<A>(outcomes: Vec<(usize, Result<A>)>) -> Result<Vec<(usize, A)>> {
        let mut answered = Vec::with_capacity(outcomes.len());
        let mut first_failure = None;
        for (index, outcome) in outcomes {
            match outcome {
                Ok(answers) => answered.push((index, answers)),
                Err(e) if e.is_server_failure() => {
                    first_failure.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match first_failure {
            Some(e) if answered.is_empty() => Err(e),
            _ => Ok(answered),
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.config.item_size_limit {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                limit: self.config.item_size_limit,
            });
        }
        Ok(())
    }

    /// `get_many` on a one-server cluster: one request (`gets` of every key, or one `mg`
    /// per key), its replies read straight into the result: nothing is allocated but the
    /// result and its values.
    fn get_many_on_one_server(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        let mut out = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(out);
        }
        let server = self.server(0)?;
        self.cluster.check_up(0)?;
        let conn = match self.checkout(server) {
            Ok(conn) => conn,
            Err(Acquire::Busy(e)) => return Err(e),
            Err(Acquire::Failed(e)) => {
                let outcome = Err(e);
                self.cluster.report(0, &outcome);
                return outcome;
            }
        };
        let mut head = Head::default();
        let outcome = self.multi_get_exchange(server, conn, keys, &mut out, &mut head);
        let outcome = self.classify_close(0, head, outcome);
        self.cluster.report(0, &outcome);
        outcome.map(|()| out)
    }

    fn multi_get_exchange(
        &self,
        server: &Server,
        mut conn: Conn,
        keys: &[&[u8]],
        out: &mut [Option<Item>],
        head: &mut Head,
    ) -> Result<()> {
        conn.wbuf.clear();
        if gets_per_key(conn.wire, keys.len()) {
            let first = conn.opaque;
            for key in keys {
                let opaque = conn.next_opaque();
                meta::encode_get(&mut conn.wbuf, key, opaque);
            }
            *head = Head::of(&conn.wbuf);
            self.send(server, &mut conn)?;
            let shortened = self.read_gets(server, &mut conn, keys, first, |m, item| {
                if let Some(slot) = out.get_mut(m) {
                    *slot = item;
                }
            })?;
            return self.finish(server, conn, shortened);
        }
        let closer = encode_multi_get(&mut conn, keys.iter().copied());
        *head = Head::of(&conn.wbuf);
        self.send(server, &mut conn)?;
        let shortened = self.read_multi_get(
            server,
            &mut conn,
            keys.len(),
            |m| keys.get(m).copied(),
            out,
            closer,
        )?;
        self.finish(server, conn, shortened)
    }

    /// Reads the replies to one `mg` per key, tagged from `first` on: each item (or miss)
    /// goes to `put(m, item)` for the `m`th key. An error line fails the call.
    fn read_gets<'k>(
        &self,
        server: &Server,
        conn: &mut Conn,
        keys: impl IntoIterator<Item = &'k &'k [u8]>,
        first: u32,
        mut put: impl FnMut(usize, Option<Item>),
    ) -> Result<bool> {
        let mut shortened = false;
        let mut opaque = first;
        for (m, key) in keys.into_iter().enumerate() {
            let cmd = Cmd::Get(key);
            let mut decoder = Decoder::new(Expect::Meta);
            let (reply, short) = self.receive(server, conn, &mut decoder)?;
            shortened |= short;
            match command::interpret(&cmd, Wire::Meta, reply, decoder.tag(), opaque)
                .map_err(|m| self.mismatch(server, m))?
            {
                Outcome::Item(item) => put(m, item),
                Outcome::Refused(status) => {
                    self.note_refusal(server, Wire::Meta, &status);
                    return Err(self.refusal(&server.label, &cmd, Wire::Meta, status));
                }
                other => {
                    return Err(self.mismatch(
                        server,
                        Mismatch(format!("{other:?} is not an answer to mg")),
                    ))
                }
            }
            opaque = opaque.wrapping_add(1);
        }
        Ok(shortened)
    }

    /// Reads a multi-get's reply: its `VALUE` block (every value of a key asked for, no
    /// key answered more often than asked, placed in `out[m]` for the `m`th key), and on a
    /// meta connection the tagged reply of the `mg` that closes it ([`encode_multi_get`]).
    /// Says whether the socket's read timeout was shortened.
    fn read_multi_get<'k>(
        &self,
        server: &Server,
        conn: &mut Conn,
        count: usize,
        key_at: impl Fn(usize) -> Option<&'k [u8]>,
        out: &mut [Option<Item>],
        closer: Option<(u32, &[u8])>,
    ) -> Result<bool> {
        let mut decoder = Decoder::with_capacity(Expect::Values, count);
        let (reply, mut shortened) = self.receive(server, conn, &mut decoder)?;
        match reply {
            Reply::Values(values) => {
                command::place_values(values, count, key_at, out)
                    .map_err(|m| self.mismatch(server, m))?;
            }
            Reply::Status(s) if is_error_line(&s) => {
                return Err(status_to_error(server.label.clone(), s, "gets"))
            }
            other => {
                return Err(self.mismatch(
                    server,
                    Mismatch(format!("{other:?} is not an answer to a multi-get")),
                ))
            }
        }
        if let Some((opaque, key)) = closer {
            let mut decoder = Decoder::new(Expect::Meta);
            let (reply, short) = self.receive(server, conn, &mut decoder)?;
            shortened |= short;
            match reply {
                Reply::Meta(Meta::Done | Meta::Miss) => decoder
                    .tag()
                    .check(opaque, key)
                    .map_err(|e| self.mismatch(server, Mismatch(e.0)))?,
                other => {
                    return Err(self.mismatch(
                        server,
                        Mismatch(format!(
                            "{other:?} where the multi-get's closing mg was due"
                        )),
                    ))
                }
            }
        }
        Ok(shortened)
    }

    /// Checks every key (nothing is sent when one is bad), then groups their positions by
    /// server.
    fn keys_by_server(&self, keys: &[&[u8]]) -> Result<Vec<(usize, Vec<usize>)>> {
        for key in keys {
            check_key(key)?;
        }
        self.by_server(keys.len(), |i| keys.get(i).copied())
    }

    fn label(&self, server: usize) -> String {
        self.server(server)
            .map(|s| s.label.clone())
            .unwrap_or_default()
    }
}

/// Appends deletes of `keys` (`count` of them) with no reply per key: `delete <key>
/// noreply` each and a closing `version` in the classic protocol; in meta `md <key> q`
/// each (memcached leaves out the `HD`) but the last, without `q`, whose tagged reply
/// closes the round; meta commands are tagged with the tokens `next_opaque` gives, in
/// order.
pub(crate) fn encode_quiet_deletes<'k>(
    out: &mut Vec<u8>,
    wire: Wire,
    keys: impl Iterator<Item = &'k [u8]>,
    count: usize,
    mut next_opaque: impl FnMut() -> u32,
) {
    match wire {
        Wire::Classic => {
            for key in keys {
                proto::encode_delete_noreply(out, key);
            }
            proto::encode_line(out, "version");
        }
        Wire::Meta => {
            let last = count.saturating_sub(1);
            for (n, key) in keys.enumerate() {
                meta::encode_delete(out, key, n != last, next_opaque());
            }
        }
    }
}

/// Reads the replies to a round of quiet deletes ([`encode_quiet_deletes`]), one at a
/// time, sans IO. Classic: nothing but errors until the closing `VERSION`; a server that
/// ignored `noreply` may also answer each command: at most one line per command, then
/// `VERSION`. Meta: `md q` hides `HD` (`NF` and errors still come); the last delete is not
/// quiet, so its tagged reply says every delete before it was processed. Replies come in
/// order: each tagged one is for a delete after the one before.
#[derive(Debug, Clone)]
pub(crate) struct QuietRound {
    wire: Wire,
    first_opaque: u32,
    count: usize,
    /// The first delete (of the round) a tagged reply may still answer.
    next: usize,
    lines: usize,
}

/// What one reply of a [`QuietRound`] came to.
#[derive(Debug)]
pub(crate) enum QuietStep {
    /// More replies are due.
    More,
    /// An error line; more replies are due (classic).
    Refused(Status),
    /// An error line, which carries no tag: which delete it answers is not known, nor
    /// whether the last one's reply is still to come (meta). The round ends with it.
    RefusedLast(Status),
    /// The round is over.
    Done,
}

impl QuietRound {
    /// A round of `count` deletes in `wire`, the first tagged `first_opaque` in meta.
    pub(crate) fn new(wire: Wire, first_opaque: u32, count: usize) -> Self {
        QuietRound {
            wire,
            first_opaque,
            count,
            next: 0,
            lines: 0,
        }
    }

    /// The kind of the next reply.
    pub(crate) fn expect(&self) -> Expect {
        match self.wire {
            Wire::Classic => Expect::Status,
            Wire::Meta => Expect::Meta,
        }
    }

    /// The command's name, for errors.
    pub(crate) fn command(&self) -> &'static str {
        match self.wire {
            Wire::Classic => "delete",
            Wire::Meta => "md",
        }
    }

    /// Takes the next reply (`tag` its decoder's); `key_at(n)` is the key of the round's
    /// `n`th delete. A reply that answers none of the deletes still awaited, or one reply
    /// too many, is a [`Mismatch`].
    pub(crate) fn take<'k>(
        &mut self,
        reply: Reply,
        tag: &meta::Tag,
        key_at: impl Fn(usize) -> Option<&'k [u8]>,
    ) -> std::result::Result<QuietStep, Mismatch> {
        let step = match self.wire {
            Wire::Classic => {
                let step = match reply {
                    Reply::Status(Status::Version(_)) => return Ok(QuietStep::Done),
                    Reply::Status(Status::Deleted | Status::NotFound) => QuietStep::More,
                    Reply::Status(s) if is_error_line(&s) => QuietStep::Refused(s),
                    other => {
                        return Err(Mismatch(format!("{other:?} is not an answer to a delete")))
                    }
                };
                self.lines += 1;
                if self.lines > self.count {
                    return Err(Mismatch(format!(
                        "more replies than the {} noreply deletes sent, and no VERSION",
                        self.count
                    )));
                }
                step
            }
            Wire::Meta => {
                self.lines += 1;
                match reply {
                    Reply::Status(s) if is_error_line(&s) => return Ok(QuietStep::RefusedLast(s)),
                    Reply::Meta(Meta::Done | Meta::NotFound) => {
                        let last = self.count.saturating_sub(1);
                        let at = tag
                            .opaque()
                            .map(|o| o.wrapping_sub(self.first_opaque) as usize)
                            .filter(|&at| at >= self.next && at <= last);
                        let Some((at, key)) = at.and_then(|at| Some((at, key_at(at)?))) else {
                            return Err(Mismatch(format!(
                                "{tag:?} answers none of the deletes still awaited"
                            )));
                        };
                        if tag.key() != Some(key) {
                            return Err(Mismatch(format!("{tag:?} names another key")));
                        }
                        if at == last {
                            return Ok(QuietStep::Done);
                        }
                        self.next = at + 1;
                    }
                    other => return Err(Mismatch(format!("{other:?} is not an answer to md"))),
                }
                if self.lines > self.count {
                    return Err(Mismatch(format!(
                        "more replies than the {} deletes sent",
                        self.count
                    )));
                }
                QuietStep::More
            }
        };
        Ok(step)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeVerdict {
    /// The probe's tag came back: meta with tags, on this connection.
    Meta,
    /// `ERROR` or `CLIENT_ERROR` (memcached before 1.6), or a meta reply without a token (a
    /// server that does not echo them, whose replies cannot be matched): classic, on a new
    /// connection.
    Classic,
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
        reply => Err(Mismatch(format!("{reply:?} ({tag:?}) to the meta probe"))),
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
        .map(|s| match socket_path(s) {
            // As libmemcached names a socket server: its path, port 0 (ketama points
            // are then `path:0-N`, as libmemcached's).
            Some(path) => Ok(placement::Server {
                host: path.to_string(),
                port: 0,
                weight: 1,
            }),
            None => placement::Server::parse(s).map_err(|e| Error::Protocol {
                server: s.clone(),
                detail: format!(
                    "{e}; a server is host, host:port, host:port:weight, [v6addr]:port, or a unix-domain socket's absolute path (/path or unix:/path)"
                ),
            }),
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

/// The path of a unix-domain socket server entry: `/path` (as pylibmc and libmemcached
/// write one) or `unix:/path` (as python-memcached, pymemcache and Django do).
pub(crate) fn socket_path(entry: &str) -> Option<&str> {
    let entry = entry.trim();
    let path = entry.strip_prefix("unix:").unwrap_or(entry);
    path.starts_with('/').then_some(path)
}

/// True for an [`Error::Io`] of a connection closed before any byte of the reply.
fn closed_without_reply(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if source.get_ref().is_some_and(|e| e.is::<ClosedWithoutReply>()))
}

pub(crate) fn is_error_line(status: &Status) -> bool {
    matches!(
        status,
        Status::Error | Status::ClientError(_) | Status::ServerError(_)
    )
}

/// The marker of an [`Error::Io`] for a connection closed before any byte of the reply.
#[derive(Debug)]
struct ClosedWithoutReply;

impl fmt::Display for ClosedWithoutReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server closed the connection without replying")
    }
}

impl std::error::Error for ClosedWithoutReply {}

/// The first word of a request (its command), kept without allocating in case the reply
/// needs explaining.
#[derive(Debug, Clone, Copy, Default)]
struct Head {
    bytes: [u8; 12],
    len: usize,
}

impl Head {
    fn of(request: &[u8]) -> Head {
        let word = request
            .split(|&b| b == b' ' || b == b'\r')
            .next()
            .unwrap_or_default();
        let mut head = Head::default();
        let len = word.len().min(head.bytes.len());
        if let (Some(dst), Some(src)) = (head.bytes.get_mut(..len), word.get(..len)) {
            dst.copy_from_slice(src);
            head.len = len;
        }
        head
    }

    fn word(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    fn command(&self) -> String {
        String::from_utf8_lossy(self.word()).into_owned()
    }

    /// Commands a memcached-speaking proxy may not carry.
    fn may_be_unsupported(&self) -> bool {
        matches!(
            self.word(),
            b"stats"
                | b"flush_all"
                | b"mg"
                | b"ms"
                | b"md"
                | b"ma"
                | b"mn"
                | b"me"
                | b"gat"
                | b"gats"
                | b"verbosity"
                | b"version"
                | b"cache_memlimit"
        )
    }

    /// A meta command.
    fn is_meta(&self) -> bool {
        matches!(self.word(), b"mg" | b"ms" | b"md" | b"ma" | b"mn" | b"me")
    }
}

/// One answer of a pipelined batch.
#[derive(Debug)]
enum Answer {
    /// A keyed command's outcome (never [`Outcome::Refused`]), with its key's position.
    Key(usize, Outcome),
    /// An error line, with the position of the command it answered when that is known, and
    /// the command's name.
    Refused(Option<usize>, &'static str, Status),
    /// The reply to a one-line command (`flush_all`, `stats`), boxed: a [`Reply`] keeps a
    /// value inline, and answers of keyed batches are many.
    Line(Box<Reply>),
}

/// One server's part of a pipelined batch while it runs.
struct Lane<'g> {
    /// Its group's position in the batch (lanes run in server order, answer in this one).
    position: usize,
    index: usize,
    /// Positions (into the caller's keys or requests) grouped on this server.
    members: &'g [usize],
    /// Members already sent and answered.
    done: usize,
    /// Members sent in this round, their replies still unread.
    round: Range<usize>,
    /// The opaque token of the round's first meta command (the others follow it).
    first_opaque: u32,
    /// The token of the probe sent on a new connection, its reply still unread.
    probe: Option<u32>,
    conn: Option<Conn>,
    /// The first command sent, in case the server closes the connection on it.
    head: Head,
    /// The socket's read timeout was shortened and must be restored before reuse.
    shortened: bool,
    /// An error line was read: the connection is not pooled.
    refused: bool,
    /// The lane failed waiting for a connection, which is no failure of the server.
    busy: bool,
    outcome: Result<Vec<Answer>>,
}

impl Lane<'_> {
    /// Fails the lane: its connection is dropped, never reused half-read.
    fn fail(&mut self, e: Error) {
        self.conn = None;
        self.round = 0..0;
        self.outcome = Err(e);
    }
}

/// What a pipelined batch sends each server for its members (positions into the caller's
/// keys or requests).
#[derive(Clone, Copy)]
enum Batch<'a> {
    /// One keyed command per member (none for a member it gives `None`).
    Each(&'a dyn Fn(usize) -> Option<Cmd<'a>>),
    /// A multi-get of the members' keys: one `gets` per round (closed in meta by a tagged
    /// `mg`, [`encode_multi_get`]), or in meta one `mg` per key for rounds of up to
    /// [`META_GETS_PER_KEY`] keys.
    Gets(&'a [&'a [u8]]),
    /// Deletes of the members' keys with no reply per key: `delete <key> noreply` and a
    /// closing `version` in the classic protocol; in meta `md <key> q` (memcached leaves out
    /// the `HD`) and a last `md` without `q`, whose tagged reply closes the round.
    QuietDeletes(&'a [&'a [u8]]),
    /// One command line per server (`flush_all`, `stats`), the same in either dialect.
    Line(&'static str, Expect),
}

/// Request bytes of one key in a multi-get or a quiet delete, beyond the key: the command,
/// its flags and the tag in meta.
const KEY_OVERHEAD: usize = 24;

impl<'a> Batch<'a> {
    fn cmd(&self, i: usize) -> Option<Cmd<'a>> {
        match *self {
            Batch::Each(cmd_of) => cmd_of(i),
            Batch::Gets(keys) => keys.get(i).map(|k| Cmd::Get(k)),
            Batch::QuietDeletes(_) | Batch::Line(..) => None,
        }
    }

    /// Member `i`'s request bytes, about.
    fn cost(&self, i: usize) -> usize {
        match *self {
            Batch::Each(_) => self.cmd(i).map_or(0, |c| c.cost()),
            Batch::Gets(keys) | Batch::QuietDeletes(keys) => {
                keys.get(i).map_or(0, |k| k.len() + KEY_OVERHEAD)
            }
            Batch::Line(line, _) => line.len() + 2,
        }
    }

    /// Member `i`'s reply bytes when they do not carry a value (a value's size is not
    /// known: value replies are bounded by their requests' bytes instead, see
    /// [`RoundLimit::VALUES`]).
    fn reply_cost(&self, i: usize, wire: Wire) -> usize {
        match (*self, wire) {
            (Batch::Each(_), _) => match self.cmd(i) {
                Some(Cmd::Get(_) | Cmd::MetaGet { .. }) | None => 0,
                Some(cmd) => cmd.reply_cost(wire),
            },
            (Batch::QuietDeletes(keys), Wire::Meta) => keys.get(i).map_or(0, |k| k.len() + 20),
            _ => 0,
        }
    }

    /// Appends the commands for `members` in the connection's dialect, each meta command
    /// tagged with the connection's next opaque token.
    fn encode(&self, conn: &mut Conn, members: &[usize]) -> std::result::Result<(), NeedsMeta> {
        let wire = conn.wire;
        match (*self, wire) {
            (Batch::Line(line, _), _) => proto::encode_line(&mut conn.wbuf, line),
            (Batch::Gets(keys), wire) if gets_per_key(wire, members.len()) => {
                for key in members.iter().filter_map(|&i| keys.get(i)) {
                    let opaque = conn.next_opaque();
                    meta::encode_get(&mut conn.wbuf, key, opaque);
                }
            }
            (Batch::Gets(keys), _) => {
                encode_multi_get(conn, members.iter().filter_map(|&i| keys.get(i).copied()));
            }
            (Batch::QuietDeletes(keys), wire) => {
                let opaque = &mut conn.opaque;
                encode_quiet_deletes(
                    &mut conn.wbuf,
                    wire,
                    members.iter().filter_map(|&i| keys.get(i).copied()),
                    members.len(),
                    || {
                        let token = *opaque;
                        *opaque = token.wrapping_add(1);
                        token
                    },
                );
            }
            (Batch::Each(_), _) => {
                for cmd in members.iter().filter_map(|&i| self.cmd(i)) {
                    let opaque = conn.next_opaque();
                    cmd.encode(&mut conn.wbuf, wire, opaque)?;
                }
            }
        }
        Ok(())
    }
}

/// How much of a batch one pipelined round sends one server before reading its replies.
///
/// memcached stops reading a connection while it cannot send that connection's replies, so
/// a client that writes a whole large batch before reading blocks in its write until the
/// write timeout once the replies fill the socket buffers. A round stays below both sides'
/// buffers: for commands whose replies are one short line (stores, deletes: a status line,
/// or a meta `HD` with the key and the token), at most [`RoundLimit::STATUS`]'s commands
/// and reply bytes, so their replies always fit in the client's receive buffer and the
/// server never stops reading; for commands whose replies carry values (of any size), at
/// most [`RoundLimit::VALUES`]'s request bytes, so the request always fits in the send and
/// receive buffers even when the server stops reading after the first keys. Every round has
/// at least one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoundLimit {
    commands: usize,
    bytes: usize,
    replies: usize,
}

impl RoundLimit {
    /// Stores and deletes: 512 replies, at most 64 KB of them unread; the request byte
    /// bound only caps the write buffer.
    const STATUS: RoundLimit = RoundLimit {
        commands: 512,
        bytes: 1024 * 1024,
        replies: 64 * 1024,
    };
    /// Multi-gets and meta gets: 32 KB of request, well inside loopback's and Linux's
    /// default socket buffers (16 KB send + 128 KB receive at least).
    const VALUES: RoundLimit = RoundLimit {
        commands: 4096,
        bytes: 32 * 1024,
        replies: usize::MAX,
    };

    /// The end of the chunk of `members` that starts at `start`: as many members as fit,
    /// at least one. `cost` and `reply_cost` take a member (a position) and give its
    /// request and (value-less) reply bytes.
    fn chunk_end(
        &self,
        members: &[usize],
        start: usize,
        cost: &impl Fn(usize) -> usize,
        reply_cost: &impl Fn(usize) -> usize,
    ) -> usize {
        let mut bytes = 0usize;
        let mut replies = 0usize;
        let mut end = start;
        for &member in members.get(start..).unwrap_or_default() {
            let c = cost(member);
            let r = reply_cost(member);
            if end > start
                && (end - start >= self.commands
                    || bytes.saturating_add(c) > self.bytes
                    || replies.saturating_add(r) > self.replies)
            {
                break;
            }
            bytes = bytes.saturating_add(c);
            replies = replies.saturating_add(r);
            end += 1;
        }
        end
    }

    /// True when a batch of these request costs fits one round.
    fn fits(&self, costs: impl Iterator<Item = usize>) -> bool {
        let mut count = 0usize;
        let mut bytes = 0usize;
        for c in costs {
            count += 1;
            bytes = bytes.saturating_add(c);
            if count > self.commands || bytes > self.bytes {
                return false;
            }
        }
        true
    }
}

/// The most keys a multi-get on a meta connection asks for with one `mg` each (every reply
/// tagged); more are one `gets` closed by a tagged `mg` ([`encode_multi_get`]). memcached
/// serves 20 commands of a connection per turn of its event loop (`-R`, default 20) and
/// writes their replies at once, so up to 20 `mg`s cost what one `gets` does; a pipeline of
/// 100 took 4 to 5 turns and writes (measured: 254 µs for 100 keys, against 35 µs for one
/// `gets`, and 91 µs for a `gets` and its closing `mg`, which memcached writes separately).
const META_GETS_PER_KEY: usize = 20;

/// True when a multi-get of `n` keys on a connection speaking `wire` is one `mg` per key.
pub(crate) fn gets_per_key(wire: Wire, n: usize) -> bool {
    wire == Wire::Meta && n <= META_GETS_PER_KEY
}

/// Appends a multi-get of `keys`: `gets <key>...`, and on a meta connection the tagged `mg`
/// of the last key that closes its reply ([`meta::encode_marker`]): one command for the
/// values, and right after them a token that no earlier reply carries, so no stray bytes
/// (a duplicate, an older reply) can sit before or inside the `VALUE` block unnoticed.
/// Returns the closing token and key.
fn encode_multi_get<'k>(
    conn: &mut Conn,
    keys: impl Iterator<Item = &'k [u8]>,
) -> Option<(u32, &'k [u8])> {
    let opaque = &mut conn.opaque;
    encode_multi_get_into(&mut conn.wbuf, conn.wire, keys, || {
        let token = *opaque;
        *opaque = token.wrapping_add(1);
        token
    })
}

/// [`encode_multi_get`] into any buffer, in `wire`, the closing `mg` tagged with the token
/// `next_opaque` gives (called once, in meta only).
pub(crate) fn encode_multi_get_into<'k>(
    out: &mut Vec<u8>,
    wire: Wire,
    keys: impl Iterator<Item = &'k [u8]>,
    next_opaque: impl FnOnce() -> u32,
) -> Option<(u32, &'k [u8])> {
    out.extend_from_slice(b"gets");
    let mut last = None;
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key);
        last = Some(key);
    }
    out.extend_from_slice(b"\r\n");
    match (wire, last) {
        (Wire::Meta, Some(key)) => {
            let opaque = next_opaque();
            meta::encode_marker(out, key, opaque);
            Some((opaque, key))
        }
        _ => None,
    }
}

/// Request bytes of one key of a multi-get (the `gets` line, and the closing `mg` in meta).
fn get_cost(key: &[u8]) -> usize {
    key.len() + KEY_OVERHEAD
}

fn unexpected(reply: Reply) -> Status {
    Status::ClientError(format!("unexpected reply {reply:?}"))
}

/// Maps a status that is not the expected answer to a typed error.
pub(crate) fn status_to_error(server: String, status: Status, command: &str) -> Error {
    match status {
        Status::Error => Error::Unsupported {
            server,
            command: command.to_string(),
        },
        Status::ClientError(message) => Error::Client { server, message },
        // A store refused as too large is mapped where the value's size is known (`store`,
        // `store_many`), to an `Error::ValueTooLarge` naming it.
        Status::ServerError(message) => Error::Server { server, message },
        other => Error::Protocol {
            server,
            detail: format!("unexpected reply {other:?} to {command}"),
        },
    }
}

/// The error for an error line (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) in reply to
/// `cmd`: a store refused as too large is [`Error::ValueTooLarge`] naming its size (with
/// the configured `item_size_limit`).
pub(crate) fn refusal_error(
    label: &str,
    cmd: &Cmd<'_>,
    wire: Wire,
    status: Status,
    item_size_limit: usize,
) -> Error {
    if let (Cmd::Store(s), Status::ServerError(m)) = (cmd, &status) {
        if refused_as_too_large(m) {
            return Error::refused_by_server(s.value.len(), item_size_limit);
        }
    }
    status_to_error(label.to_string(), status, cmd.name(wire))
}

/// True for memcached's refusal of an item over its `-I` (`SERVER_ERROR object too large
/// for cache`).
pub(crate) fn refused_as_too_large(message: &str) -> bool {
    message.contains("too large")
}

impl TextTransport {
    /// The error for an answer that is not a keyed outcome: an error line, or a reply that
    /// does not belong in a keyed batch.
    fn answer_error(&self, index: usize, answer: Answer) -> Error {
        let label = self.label(index);
        match answer {
            Answer::Refused(_, command, status) => status_to_error(label, status, command),
            Answer::Line(reply) => status_to_error(label, unexpected(*reply), "a batch"),
            Answer::Key(_, outcome) => Error::Protocol {
                server: label,
                detail: format!("unexpected outcome {outcome:?}"),
            },
        }
    }

    fn outcome_error(&self, key: &[u8], outcome: Outcome) -> Error {
        let label = self
            .server_for_key(key)
            .map(|i| self.label(i))
            .unwrap_or_default();
        Error::Protocol {
            server: label,
            detail: format!("unexpected outcome {outcome:?}"),
        }
    }
}

impl Transport for TextTransport {
    fn name(&self) -> &'static str {
        "text"
    }

    fn close(&self) {
        for server in self.servers.iter() {
            server.pool.close_idle();
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Item>> {
        check_key(key)?;
        match self.run(Cmd::Get(key))? {
            Outcome::Item(item) => Ok(item),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        if self.servers.len() == 1 && RoundLimit::VALUES.fits(keys.iter().map(|k| get_cost(k))) {
            for key in keys {
                check_key(key)?;
            }
            return self.get_many_on_one_server(keys);
        }
        let groups = self.keys_by_server(keys)?;
        let mut out = vec![None; keys.len()];
        let outcomes = self.pipelined(&groups, Batch::Gets(keys), RoundLimit::VALUES);
        for (index, answers) in Self::tolerant(outcomes)? {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Item(item)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = item;
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(out)
    }

    /// A value over `item_size_limit` is refused before it is sent; for a `set`, one
    /// `delete` of the key goes instead (memcached unlinks the old item when it refuses a
    /// `set` as too large; so does this transport, so the old value is not served on).
    ///
    /// A value the server refuses as too large (its `-I` is below `item_size_limit`) is
    /// [`Error::ValueTooLarge`] too. In the meta protocol memcached 1.6 then unlinks the old
    /// item whatever the mode (`add`, `replace`... too), where the classic commands unlink
    /// it only for `set`.
    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        check_key(request.key)?;
        newcache_transport::check_exptime(request.exptime)?;
        if let Err(too_large) = self.check_value(request.value) {
            if request.mode == StoreMode::Set {
                self.delete(request.key)?;
            }
            return Err(too_large);
        }
        match self.run(Cmd::Store(request))? {
            Outcome::Stored(status) => Ok(status),
            other => Err(self.outcome_error(request.key, other)),
        }
    }

    /// Pipelined per server. A request over `item_size_limit` is refused by itself: a
    /// `set` sends a delete of its key in its place (in order with the batch's other
    /// commands on that key), any other mode sends nothing; a request the server refuses as
    /// too large is refused the same way (memcached unlinks a refused `set`'s old item
    /// itself). Then, as [`Transport::store_many`] says, the first refusal in request order
    /// is the answer.
    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        for r in requests {
            check_key(r.key)?;
            newcache_transport::check_exptime(r.exptime)?;
        }
        // The first request refused as too large (by the limit or by the server), in order.
        let mut refused: Option<(usize, Error)> = None;
        let mut refuse = |i: usize, e: Error| {
            if refused.as_ref().is_none_or(|(first, _)| i < *first) {
                refused = Some((i, e));
            }
        };
        let mut over = vec![false; requests.len()];
        for ((i, r), over) in requests.iter().enumerate().zip(over.iter_mut()) {
            if let Err(e) = self.check_value(r.value) {
                *over = true;
                refuse(i, e);
            }
        }
        let is_over = |i: usize| over.get(i).copied().unwrap_or(false);
        let cmd_of = |i: usize| Cmd::for_store(requests.get(i)?, is_over(i));
        let groups = self.by_server(requests.len(), |i| cmd_of(i).map(|c| c.key()))?;
        let outcomes = self.pipelined(&groups, Batch::Each(&cmd_of), RoundLimit::STATUS);
        let mut out = vec![StoreStatus::NotStored; requests.len()];
        for (index, answers) in Self::strict(outcomes)? {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Stored(status)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = status;
                        }
                    }
                    // The delete of a `set` over the limit.
                    Answer::Key(_, Outcome::Deleted(_)) => {}
                    Answer::Refused(Some(i), command, Status::ServerError(m))
                        if refused_as_too_large(&m) =>
                    {
                        match requests.get(i) {
                            Some(r) if !is_over(i) => refuse(
                                i,
                                Error::refused_by_server(
                                    r.value.len(),
                                    self.config.item_size_limit,
                                ),
                            ),
                            _ => {
                                return Err(status_to_error(
                                    self.label(index),
                                    Status::ServerError(m),
                                    command,
                                ))
                            }
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        match refused {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        match self.run(Cmd::Delete(key))? {
            Outcome::Deleted(deleted) => Ok(deleted),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        let groups = self.keys_by_server(keys)?;
        let cmd_of = |i: usize| keys.get(i).map(|k| Cmd::Delete(k));
        let outcomes = self.pipelined(&groups, Batch::Each(&cmd_of), RoundLimit::STATUS);
        let mut out = vec![false; keys.len()];
        for (index, answers) in Self::strict(outcomes)? {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Deleted(deleted)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = deleted;
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(out)
    }

    /// Each server's keys deleted with no reply per key, in rounds of at most 512: in the
    /// classic protocol `delete <key> noreply` for each, then `version` (memcached sends
    /// nothing for a noreply command, not even an error, so the one reply to read is
    /// `VERSION`, which comes after everything sent before it was processed); in meta
    /// `md <key> q` (memcached leaves out `HD`, sends `NF` and errors) and a last `md`
    /// without `q`, whose tagged reply says every delete before it was processed. Lines
    /// before it are read and checked too, so no reply is ever left on a pooled connection;
    /// an error among them is returned after every server was read. A server that fails or
    /// is down fails the call, as in [`Transport::delete_many`].
    fn delete_many_quiet(&self, keys: &[&[u8]]) -> Result<()> {
        let groups = self.keys_by_server(keys)?;
        let outcomes = self.pipelined(&groups, Batch::QuietDeletes(keys), RoundLimit::STATUS);
        for (index, answers) in Self::strict(outcomes)? {
            if let Some(answer) = answers.into_iter().next() {
                return Err(self.answer_error(index, answer));
            }
        }
        Ok(())
    }

    fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.arith(key, delta, true)
    }

    fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.arith(key, delta, false)
    }

    fn touch(&self, key: &[u8], exptime: u32) -> Result<bool> {
        check_key(key)?;
        newcache_transport::check_exptime(exptime)?;
        match self.run(Cmd::Touch { key, exptime })? {
            Outcome::Touched(touched) => Ok(touched),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn flush_all(&self) -> Result<()> {
        let groups: Vec<(usize, Vec<usize>)> =
            (0..self.servers.len()).map(|i| (i, vec![i])).collect();
        let outcomes = self.pipelined(
            &groups,
            Batch::Line("flush_all", Expect::Status),
            RoundLimit::STATUS,
        );
        for (index, answers) in Self::strict(outcomes)? {
            for answer in answers {
                match answer {
                    Answer::Line(reply) => match *reply {
                        Reply::Status(Status::Ok) => {}
                        Reply::Status(status) => {
                            return Err(status_to_error(self.label(index), status, "flush_all"))
                        }
                        other => {
                            return Err(self.answer_error(index, Answer::Line(Box::new(other))))
                        }
                    },
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(())
    }

    /// True unless the transport speaks only the classic protocol ([`Protocol::Classic`]).
    /// With [`Protocol::Auto`] a server found without meta answers the meta operations
    /// with [`Error::Unsupported`].
    fn supports_meta(&self) -> bool {
        self.config.protocol != Protocol::Classic
    }

    fn meta_get(&self, key: &[u8], recache_below: u32) -> Result<Option<MetaItem>> {
        check_key(key)?;
        match self.run(Cmd::MetaGet { key, recache_below })? {
            Outcome::Meta(item) => Ok(item),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn meta_get_many(&self, keys: &[&[u8]], recache_below: u32) -> Result<Vec<Option<MetaItem>>> {
        let groups = self.keys_by_server(keys)?;
        let cmd_of = |i: usize| keys.get(i).map(|&key| Cmd::MetaGet { key, recache_below });
        let outcomes = self.pipelined(&groups, Batch::Each(&cmd_of), RoundLimit::VALUES);
        let mut out = vec![None; keys.len()];
        for (index, answers) in Self::tolerant(outcomes)? {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Meta(item)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = item;
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(out)
    }

    fn meta_invalidate(&self, key: &[u8], grace: u32) -> Result<bool> {
        check_key(key)?;
        match self.run(Cmd::Invalidate { key, grace })? {
            Outcome::Invalidated(found) => Ok(found),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn stats(&self) -> Result<Vec<ServerStats>> {
        let groups: Vec<(usize, Vec<usize>)> =
            (0..self.servers.len()).map(|i| (i, vec![i])).collect();
        let outcomes = self.pipelined(
            &groups,
            Batch::Line("stats", Expect::Stats),
            RoundLimit::VALUES,
        );
        let mut out = Vec::with_capacity(self.servers.len());
        for (index, answers) in Self::strict(outcomes)? {
            let label = self.label(index);
            for answer in answers {
                match answer {
                    Answer::Line(reply) => match *reply {
                        Reply::Stats(stats) => out.push(ServerStats {
                            server: label.clone(),
                            stats: stats.into_iter().collect(),
                        }),
                        Reply::Status(s) => return Err(status_to_error(label, s, "stats")),
                        other => {
                            return Err(self.answer_error(index, Answer::Line(Box::new(other))))
                        }
                    },
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(out)
    }
}

impl TextTransport {
    fn arith(&self, key: &[u8], delta: u64, incr: bool) -> Result<Option<u64>> {
        check_key(key)?;
        match self.run(Cmd::Arith { key, delta, incr })? {
            Outcome::Counter(n) => Ok(n),
            other => Err(self.outcome_error(key, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rounds_take_what_fits_and_at_least_one_command() {
        let limit = RoundLimit {
            commands: 3,
            bytes: 25,
            replies: 100,
        };
        let members: Vec<usize> = (0..10).collect();
        let ten = |_: usize| 10;
        let none = |_: usize| 0;
        assert_eq!(limit.chunk_end(&members, 0, &ten, &none), 2, "bytes bound");
        assert_eq!(limit.chunk_end(&members, 8, &ten, &none), 10, "the tail");
        assert_eq!(
            limit.chunk_end(&members, 10, &ten, &none),
            10,
            "nothing left"
        );
        assert_eq!(
            limit.chunk_end(&members, 0, &|_| 1, &none),
            3,
            "command bound"
        );
        assert_eq!(
            limit.chunk_end(&members, 4, &|_| 100, &none),
            5,
            "one oversized command"
        );
        assert_eq!(
            limit.chunk_end(&members, 0, &|_| 1, &|_| 60),
            1,
            "reply bytes bound"
        );
        assert!(limit.fits([10, 10].into_iter()));
        assert!(!limit.fits([10, 10, 10].into_iter()));
        assert!(!limit.fits([1, 1, 1, 1].into_iter()));
        // A get_many of 100 keys of 250 bytes, or a set_many of 100 values of 1 KB, is one
        // round: every server gets its request before any reply is read.
        assert!(RoundLimit::VALUES.fits(std::iter::repeat_n(get_cost(&[b'k'; 250]), 100)));
        let key = [b'k'; 250];
        let value = [b'v'; 1024];
        let set = Store::set(&key, &value, 0, 0);
        let cmd = Cmd::Store(&set);
        let members: Vec<usize> = (0..100).collect();
        for wire in [Wire::Meta, Wire::Classic] {
            assert_eq!(
                RoundLimit::STATUS
                    .chunk_end(&members, 0, &|_| cmd.cost(), &|_| cmd.reply_cost(wire)),
                100
            );
        }
    }

    #[test]
    fn the_read_buffer_compacts_and_grows() {
        let mut b = ReadBuf::new();
        let cap = b.data.len();
        b.end = cap;
        b.consume(10);
        assert_eq!(b.spare().len(), 10);
        b.end = cap;
        b.start = 0;
        assert_eq!(b.spare().len(), cap);
        assert_eq!(b.data.len(), cap * 2);
        b.consume(usize::MAX);
        assert_eq!((b.start, b.end), (0, 0));
    }

    #[test]
    fn the_read_buffer_grows_while_reads_fill_it_up_to_its_maximum() {
        let mut b = ReadBuf::new();
        // A read that leaves room: no growth.
        let offered = b.spare().len();
        b.filled_by(offered / 2, offered);
        b.consume(usize::MAX);
        assert_eq!(b.spare().len(), READ_BUF);
        // Reads that fill it: it doubles before the next read, up to READ_BUF_MAX.
        for _ in 0..10 {
            let offered = b.spare().len();
            b.filled_by(offered, offered);
            b.consume(usize::MAX);
        }
        assert_eq!(b.spare().len(), READ_BUF_MAX);
        // Pooled, it keeps that size; only a buffer past the maximum is shrunk.
        b.shrink();
        assert_eq!(b.data.len(), READ_BUF_MAX);
        b.data.resize(READ_BUF_MAX * 2, 0);
        b.shrink();
        assert_eq!(b.data.len(), READ_BUF);
    }
}
