//! The transport's settings: [`TextConfig`], the protocol it speaks ([`Protocol`]), TLS
//! ([`TlsConfig`]) and pylibmc's behaviors by name ([`BEHAVIORS`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use newcache_placement::Behaviors;
use newcache_transport::{Result, DEFAULT_ITEM_SIZE_LIMIT};

use crate::{placement, Failover};
// What the docs link to.
#[cfg(doc)]
use crate::{proto, TextTransport};
#[cfg(doc)]
use newcache_transport::{Error, Transport};

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
    /// flight cannot be told from that request's own, nor can a number line sent twice in
    /// part (`300` then `3000000015` reads as one longer number); the meta protocol's
    /// opaque tokens can.
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
    /// Timeout for a request to be written: the whole request, however many writes it
    /// takes (each write is bounded by the socket's timeout, shortened to the time left
    /// once a request takes more than one). Under TLS too, as is the read timeout, and the
    /// handshake is bounded by the connect and read timeouts together.
    pub write_timeout: Duration,
    /// Idle connections kept per server (more are closed when they come back, unless a
    /// caller is waiting for one).
    pub max_idle_per_server: usize,
    /// The most connections open to one server at once (0: no limit). A request that finds
    /// them all busy waits for one up to [`TextConfig::read_timeout`], then fails with
    /// [`Error::Timeout`] (which does not count as a failure of the server). The async
    /// transport keeps to it on servers that speak only the classic protocol and over TLS,
    /// up to [`MAX_ASYNC_CONNECTIONS`] (0: that many), and to
    /// [`TextConfig::async_connections`] on the others.
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
    /// memcached's `-I`: a value whose item would be larger (the value, the key and the
    /// item header, [`Store::value_limit`]) is refused without being sent; a `set` of one
    /// deletes the key instead, as memcached does when it refuses a `set`.
    ///
    /// [`Store::value_limit`]: newcache_transport::Store::value_limit
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
    /// each server that speaks the meta protocol, each carrying any number of requests at
    /// once (auto-pipelined). Default 1; 0 is taken as 1, more than
    /// [`MAX_ASYNC_CONNECTIONS`] as that many. The classic protocol's replies
    /// carry no tag to match them by, so there each connection carries one request at a
    /// time, and they are opened as needed up to [`TextConfig::max_connections`]; so do TLS
    /// connections (memcached before 1.6.39 can leave a pipelined request over TLS
    /// unanswered), which ignore this setting. The blocking [`TextTransport`] ignores it.
    pub async_connections: usize,
    /// Async transport only (`TokioTextTransport`, feature `tokio`): requests queued per
    /// connection, waiting for its writer; past it a caller waits for room, up to its
    /// [`TextConfig::read_timeout`] ([`Error::Timeout`]). Default 1024; 0 is taken as 1,
    /// more than [`MAX_ASYNC_QUEUE`] as that many.
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

/// The longest any of [`TextConfig`]'s timeouts is taken as: a day. A longer one is taken as
/// a day (`u64::MAX` ms overflowed the deadlines made from it).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The most connections the async transport opens to one server
/// ([`TextConfig::async_connections`]; on a server that speaks only the classic protocol,
/// [`TextConfig::max_connections`]): each is a slot made when the transport is built, so a
/// million asked for took half a gigabyte before the first request, and four billion
/// aborted the process (an outside audit). memcached's own default is 1,024 connections in
/// all (`-c`).
pub const MAX_ASYNC_CONNECTIONS: usize = 1024;

/// The most requests the async transport queues per connection
/// ([`TextConfig::async_queue`]): tokio's channels take at most 2^61 - 1, and a larger
/// queue panicked at the first request (an outside audit); past a million queued requests
/// a caller's wait is its timeout anyway.
pub const MAX_ASYNC_QUEUE: usize = 1 << 20;

impl TextConfig {
    /// These settings with every timeout at most [`MAX_TIMEOUT`], and the async transport's
    /// connections and queue from 1 to [`MAX_ASYNC_CONNECTIONS`] and [`MAX_ASYNC_QUEUE`]:
    /// what the transports use.
    pub(crate) fn bounded(mut self) -> Self {
        for timeout in [
            &mut self.connect_timeout,
            &mut self.read_timeout,
            &mut self.write_timeout,
            &mut self.idle_timeout,
        ] {
            *timeout = (*timeout).min(MAX_TIMEOUT);
        }
        self.async_connections = self.async_connections.clamp(1, MAX_ASYNC_CONNECTIONS);
        self.async_queue = self.async_queue.clamp(1, MAX_ASYNC_QUEUE);
        self
    }

    /// Sets one libmemcached behavior by pylibmc's name and in pylibmc's units, so one
    /// `CACHE_BEHAVIORS`-style list configures both transports: placement (`hash`, `ketama`,
    /// `ketama_weighted`, `distribution`, `_sort_hosts`; `ketama_hash` is accepted and, as in
    /// libmemcached 1.1.4, changes nothing), failover (`retry_timeout` and `dead_timeout` in
    /// seconds, `failure_limit`, `remove_failed`/`auto_eject`), `connect_timeout` and
    /// `_poll_timeout` (the read and write timeout) in milliseconds, from 1 to a day (0
    /// would fail every request as if its server were down). `tcp_nodelay` and
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
    /// assert!(config.set_behavior("connect_timeout", "0").is_err());
    /// assert!(config.set_behavior("_poll_timeout", "99999999999").is_err());
    /// assert!(config.set_behavior("retry_timeout", "3000000000").is_err());
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
        // Seconds, as libmemcached keeps them: an `int`, so the same values are taken here
        // as by the libmemcached transport.
        let seconds = || {
            number().and_then(|n| {
                (n <= i32::MAX as u64)
                    .then(|| Duration::from_secs(n))
                    .ok_or_else(|| bad("seconds from 0 to 2147483647"))
            })
        };
        // A socket timeout, in milliseconds: from 1 ms (0 failed every request as a server
        // failure, and ejected healthy servers under remove_failed) to a day, as the
        // facade's own connect_timeout and read_timeout.
        let millis = || {
            number().and_then(|n| {
                (1..=86_400_000)
                    .contains(&n)
                    .then(|| Duration::from_millis(n))
                    .ok_or_else(|| bad("milliseconds from 1 to 86400000 (a day)"))
            })
        };
        match name {
            "retry_timeout" | "_retry_timeout" => self.failover.retry_timeout = seconds()?,
            "dead_timeout" => self.failover.dead_timeout = seconds()?,
            "failure_limit" => {
                let n = number()?;
                self.failover.failure_limit = u32::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("a whole number from 1"))?;
            }
            "remove_failed" => self.failover.remove_failed = number()? > 0,
            "auto_eject" => self.failover.remove_failed = flag()?,
            "connect_timeout" => self.connect_timeout = millis()?,
            "_poll_timeout" => {
                self.read_timeout = millis()?;
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
