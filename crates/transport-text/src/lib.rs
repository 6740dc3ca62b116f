//! memcached's text protocol in Rust: a sans-IO codec ([`proto`]) under a blocking
//! connection pool, one pool per server.
//!
//! - Every request is encoded into one buffer and written with one `write` call; replies are
//!   read into a small buffer the pooled connection keeps and parsed (and dropped from it) as
//!   they arrive, and the bulk of a large value is read from the socket straight into the
//!   `Vec` the [`Item`] returns, with no copy out of the read buffer. A reply makes no
//!   `setsockopt` unless it trickles in slowly (see the read timeout on [`TextConfig`]).
//! - Connections open lazily (building a transport never blocks) and go back to the pool only
//!   after a complete, well-formed reply. After an I/O error, a timeout or an unparsable reply
//!   the connection is dropped, never reused half-read; the next request opens a new one, so a
//!   server that comes back is used again.
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
pub mod proto;

pub use cluster::Failover;
pub use newcache_placement as placement;

use std::fmt;
use std::io::{self, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::Mutex;

use cluster::Cluster;
use newcache_placement::Behaviors;
use std::time::{Duration, Instant};

use newcache_transport::{
    check_key, Error, Item, MetaItem, Result, ServerStats, Store, StoreMode, StoreStatus,
    Transport, DEFAULT_ITEM_SIZE_LIMIT,
};
use proto::{Decoder, Expect, Meta, Reply, Status, Values};

/// Settings of a [`TextTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextConfig {
    /// Servers as `host:port`, `host` (port 11211) or `[v6addr]:port`, each optionally with
    /// a weight (`host:port:weight`) for weighted ketama. Their order matters for placement,
    /// as in pylibmc.
    pub servers: Vec<String>,
    /// Timeout for opening a connection.
    pub connect_timeout: Duration,
    /// Timeout for a whole reply to arrive (give or take 1/16 of it: a reply that takes many
    /// reads has the socket's timeout shortened to the time left only when the last setting
    /// would overshoot by more, so a reply that streams in quickly costs no `setsockopt`).
    pub read_timeout: Duration,
    /// Timeout for a request to be written.
    pub write_timeout: Duration,
    /// Idle connections kept per server.
    pub max_idle_per_server: usize,
    /// Values larger than this are refused without being sent (memcached's `-I`); a `set`
    /// of one deletes the key instead, as memcached does when it refuses a `set`.
    pub item_size_limit: usize,
    /// Key placement, by libmemcached's behavior names (`hash`, `ketama`, `ketama_weighted`,
    /// `distribution`, `_sort_hosts`). Default: libmemcached's modula over one-at-a-time.
    pub placement: Behaviors,
    /// What happens when a server fails.
    pub failover: Failover,
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
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
            placement: Behaviors::default(),
            failover: Failover::default(),
        }
    }
}

/// The read buffer's size when a connection opens, and the least a value still to come
/// must have left for it to be read straight into the value instead (see
/// `TextTransport::receive`).
const READ_BUF: usize = 16 * 1024;

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
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled all the room it was given: double the buffer (up to
    /// [`READ_BUF_MAX`]) before the next one.
    grow: bool,
}

impl ReadBuf {
    fn new() -> Self {
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
    fn filled_by(&mut self, n: usize, offered: usize) {
        self.end = (self.end + n).min(self.data.len());
        self.grow = n > 0 && n >= offered;
    }

    fn filled(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into: the unconsumed bytes (at most a partial line) move to the front
    /// first, and the buffer doubles when it is full of them, or when the last read filled
    /// it and it is below [`READ_BUF_MAX`].
    fn spare(&mut self) -> &mut [u8] {
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
    stream: TcpStream,
    rbuf: ReadBuf,
    wbuf: Vec<u8>,
}

/// One configured server and its idle connections.
struct Server {
    label: String,
    idle: Mutex<Vec<Conn>>,
}

/// memcached's text protocol over TCP; see the crate documentation.
pub struct TextTransport {
    servers: Vec<Server>,
    cluster: Cluster,
    config: TextConfig,
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
        if config.servers.is_empty() {
            return Err(Error::NoServers);
        }
        let specs = config
            .servers
            .iter()
            .map(|s| {
                placement::Server::parse(s).map_err(|e| Error::Protocol {
                    server: s.clone(),
                    detail: format!(
                        "{e}; a server is host, host:port, host:port:weight or [v6addr]:port"
                    ),
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
        let servers = specs
            .iter()
            .map(|s| Server {
                label: s.address(),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        let cluster = Cluster::new(specs, settings, config.failover);
        Ok(TextTransport {
            servers,
            cluster,
            config,
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

    fn server(&self, index: usize) -> Result<&Server> {
        self.servers.get(index).ok_or(Error::NoServers)
    }

    fn connect(&self, server: &Server) -> Result<Conn> {
        let connect_err = |source| Error::Connect {
            server: server.label.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = server
            .label
            .to_socket_addrs()
            .map_err(connect_err)?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.config.connect_timeout) {
                Ok(stream) => {
                    let setup = stream
                        .set_nodelay(true)
                        .and_then(|()| stream.set_read_timeout(Some(self.config.read_timeout)))
                        .and_then(|()| stream.set_write_timeout(Some(self.config.write_timeout)));
                    setup.map_err(connect_err)?;
                    return Ok(Conn {
                        stream,
                        rbuf: ReadBuf::new(),
                        wbuf: Vec::with_capacity(1024),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    fn checkout(&self, server: &Server) -> Result<Conn> {
        let idle = server.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => self.connect(server),
        }
    }

    /// Pools a connection whose replies were all read, its read buffer back at its size if
    /// it ever grew. The write buffer keeps its capacity: shrinking it made every store of a
    /// large value pay for growing it again (a 1 MB `set` took 4 times as long).
    fn checkin(&self, server: &Server, mut conn: Conn) {
        conn.wbuf.clear();
        conn.rbuf.shrink();
        if conn.rbuf.filled().is_empty() {
            if let Ok(mut idle) = server.idle.lock() {
                if idle.len() < self.config.max_idle_per_server {
                    idle.push(conn);
                }
            }
        }
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
        mut decoder: Decoder,
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
    /// restored first when `restore` (it was shortened while reading).
    fn put_back(&self, server: &Server, conn: Conn, restore: bool) -> Result<()> {
        if restore {
            conn.stream
                .set_read_timeout(Some(self.config.read_timeout))
                .map_err(|e| self.io_error(server, e, self.config.read_timeout))?;
        }
        self.checkin(server, conn);
        Ok(())
    }

    /// One request and its replies on one server's connection: `encode` fills the write
    /// buffer, then each expected reply is read in order. The connection returns to the pool
    /// only when every reply arrived whole.
    fn exchange(
        &self,
        index: usize,
        encode: impl FnOnce(&mut Vec<u8>),
        decoder: Decoder,
    ) -> Result<Reply> {
        let server = self.server(index)?;
        self.cluster.check_up(index)?;
        let mut head = Head::default();
        let outcome = (|| {
            let mut conn = self.checkout(server)?;
            encode(&mut conn.wbuf);
            head = Head::of(&conn.wbuf);
            self.send(server, &mut conn)?;
            let (reply, waited) = self.receive(server, &mut conn, decoder)?;
            // After an error reply memcached may still be reading what it could not parse
            // (the rest of a refused data block, say) and answer it later: such a connection
            // is dropped, not pooled.
            if matches!(
                reply,
                Reply::Status(Status::Error | Status::ClientError(_) | Status::ServerError(_))
            ) {
                return Ok(reply);
            }
            self.put_back(server, conn, waited)?;
            Ok(reply)
        })();
        let outcome = self.classify_close(index, head, outcome);
        self.cluster.report(index, &outcome);
        outcome
    }

    /// A connection closed before any reply to a command that servers may lack (`stats`,
    /// `flush_all`, meta commands...) is a proxy refusing the command (twemproxy closes the
    /// connection on what it does not proxy) when the server still answers `version` on a
    /// fresh connection: then it is [`Error::Unsupported`], and the server is not failing.
    fn classify_close<T>(&self, index: usize, head: Head, outcome: Result<T>) -> Result<T> {
        let closed = matches!(&outcome, Err(Error::Io { source, .. })
            if source.get_ref().is_some_and(|e| e.is::<ClosedWithoutReply>()));
        if !closed || !head.may_be_unsupported() {
            return outcome;
        }
        let alive = self.server(index).is_ok_and(|server| {
            self.connect(server).is_ok_and(|mut conn| {
                proto::encode_line(&mut conn.wbuf, "version");
                self.send(server, &mut conn).is_ok()
                    && matches!(
                        self.receive(server, &mut conn, Decoder::new(Expect::Status)),
                        Ok((Reply::Status(Status::Version(_)), _))
                    )
            })
        });
        if alive {
            return Err(Error::Unsupported {
                server: self.label(index),
                command: head.command(),
            });
        }
        outcome
    }

    fn one(&self, key: &[u8], encode: impl FnOnce(&mut Vec<u8>), expect: Expect) -> Result<Reply> {
        let index = self.server_for_key(key)?;
        self.exchange(index, encode, Decoder::new(expect))
    }

    fn status_error(&self, key: &[u8], status: Status, command: &str) -> Error {
        let server = self
            .server_for_key(key)
            .map(|i| self.label(i))
            .unwrap_or_default();
        status_to_error(server, status, command)
    }

    /// Groups positions `0..count` by the server of their key (`key_of`), in order of first
    /// appearance.
    fn by_server<'k>(
        &self,
        count: usize,
        key_of: impl Fn(usize) -> Option<&'k [u8]>,
    ) -> Result<Vec<(usize, Vec<usize>)>> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in 0..count {
            let Some(key) = key_of(i) else { continue };
            let s = self.server_for_key(key)?;
            match groups.iter_mut().find(|(server, _)| *server == s) {
                Some((_, members)) => members.push(i),
                None => {
                    // Room for an even share (twice it), so batches rarely reallocate.
                    let share = count.min(2 * count / self.servers.len().max(1) + 1);
                    let mut members = Vec::with_capacity(share);
                    members.push(i);
                    groups.push((s, members));
                }
            }
        }
        Ok(groups)
    }

    /// Pipelined across servers, in rounds: each round writes every server its next chunk
    /// of the batch before reading any reply, so a batch that fits one round (see
    /// [`RoundLimit`]) costs about one round trip however many servers it touches, and a
    /// larger one never has more unread replies or unsent request bytes per server than the
    /// socket buffers hold (no write-write deadlock with the server). `encode` writes the
    /// commands for a slice of a group's members and `cost(position)` estimates one
    /// member's request bytes; `replies` says what each chunk is answered with. Every reply
    /// kept comes with the range of the group's members it answers. Each group's outcome is
    /// its own: a down server fails its group only.
    fn pipelined(
        &self,
        groups: &[(usize, Vec<usize>)],
        encode: impl Fn(&mut Vec<u8>, &[usize]),
        cost: impl Fn(usize) -> usize,
        expect: Expect,
        replies: Replies,
        limit: RoundLimit,
    ) -> Vec<(usize, Result<Vec<Answer>>)> {
        let mut lanes: Vec<Lane<'_>> = groups
            .iter()
            .map(|(index, members)| Lane {
                index: *index,
                members,
                done: 0,
                round: 0..0,
                conn: None,
                head: Head::default(),
                shortened: false,
                outcome: Ok(Vec::new()),
            })
            .collect();
        loop {
            let mut sent = false;
            for lane in lanes.iter_mut() {
                if lane.outcome.is_err() || lane.done >= lane.members.len() {
                    continue;
                }
                let end = limit.chunk_end(lane.members, lane.done, &cost);
                let round = lane.done..end;
                match self.send_round(lane, round.clone(), &encode, replies) {
                    Ok(()) => {
                        lane.round = round;
                        sent = true;
                    }
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
                if let Err(e) = self.receive_round(lane, round, expect, replies) {
                    lane.fail(e);
                }
            }
        }
        lanes
            .into_iter()
            .map(|mut lane| {
                let index = lane.index;
                let mut outcome = std::mem::replace(&mut lane.outcome, Ok(Vec::new()));
                if outcome.is_ok() {
                    if let Some(conn) = lane.conn.take() {
                        let back = self
                            .server(index)
                            .and_then(|server| self.put_back(server, conn, lane.shortened));
                        if let Err(e) = back {
                            outcome = Err(e);
                        }
                    }
                }
                let outcome = self.classify_close(index, lane.head, outcome);
                self.cluster.report(index, &outcome);
                (index, outcome)
            })
            .collect()
    }

    /// Writes the lane's members `round` (opening its connection on the first round).
    fn send_round(
        &self,
        lane: &mut Lane<'_>,
        round: Range<usize>,
        encode: &impl Fn(&mut Vec<u8>, &[usize]),
        replies: Replies,
    ) -> Result<()> {
        let server = self.server(lane.index)?;
        let first = lane.conn.is_none();
        let mut conn = match lane.conn.take() {
            Some(conn) => conn,
            None => {
                self.cluster.check_up(lane.index)?;
                let conn = self.checkout(server)?;
                if let Ok(answers) = lane.outcome.as_mut() {
                    answers.reserve(match replies {
                        Replies::PerCommand => lane.members.len(),
                        Replies::One => 1,
                        Replies::Quiet => 0,
                    });
                }
                conn
            }
        };
        conn.wbuf.clear();
        encode(&mut conn.wbuf, lane.members.get(round).unwrap_or_default());
        if first {
            lane.head = Head::of(&conn.wbuf);
        }
        self.send(server, &mut conn)?;
        lane.conn = Some(conn);
        Ok(())
    }

    /// Reads the replies to the lane's members `round`. On an error the connection is
    /// dropped, unread.
    fn receive_round(
        &self,
        lane: &mut Lane<'_>,
        round: Range<usize>,
        expect: Expect,
        replies: Replies,
    ) -> Result<()> {
        let server = self.server(lane.index)?;
        let Some(mut conn) = lane.conn.take() else {
            return Ok(());
        };
        let Ok(answers) = lane.outcome.as_mut() else {
            return Ok(());
        };
        match replies {
            Replies::One => {
                // One reply for the whole chunk (a multi-get) holds up to `round.len()` values.
                let decoder = Decoder::with_capacity(expect, round.len());
                let (reply, short) = self.receive(server, &mut conn, decoder)?;
                lane.shortened |= short;
                answers.push((round, reply));
            }
            Replies::PerCommand => {
                for i in round {
                    let (reply, short) = self.receive(server, &mut conn, Decoder::new(expect))?;
                    lane.shortened |= short;
                    answers.push((i..i + 1, reply));
                }
            }
            Replies::Quiet => {
                // Nothing but errors until the closing VERSION; a server that ignored noreply
                // may also answer each command: at most one line per command, then VERSION.
                let mut lines = 0usize;
                loop {
                    let (reply, short) =
                        self.receive(server, &mut conn, Decoder::new(Expect::Status))?;
                    lane.shortened |= short;
                    match reply {
                        Reply::Status(Status::Version(_)) => break,
                        Reply::Status(Status::Deleted | Status::NotFound) => {}
                        other => answers.push((round.clone(), other)),
                    }
                    lines += 1;
                    if lines > round.len() {
                        return Err(Error::Protocol {
                            server: server.label.clone(),
                            detail: format!(
                                "more replies than the {} noreply commands sent, and no VERSION",
                                round.len()
                            ),
                        });
                    }
                }
            }
        }
        lane.conn = Some(conn);
        Ok(())
    }

    /// Every group's replies, or the first group's error (after every group was read).
    fn strict(outcomes: Vec<(usize, Result<Vec<Answer>>)>) -> Result<Vec<(usize, Vec<Answer>)>> {
        outcomes
            .into_iter()
            .map(|(index, outcome)| outcome.map(|replies| (index, replies)))
            .collect()
    }

    /// For reads: the replies of the servers that answered; a server that is down or failed
    /// leaves its keys as misses (libmemcached's multi-get does the same). An error when
    /// every server failed, or when one gave a reply that is an error of its own.
    fn tolerant(outcomes: Vec<(usize, Result<Vec<Answer>>)>) -> Result<Vec<(usize, Vec<Answer>)>> {
        let mut answered = Vec::with_capacity(outcomes.len());
        let mut first_failure = None;
        for (index, outcome) in outcomes {
            match outcome {
                Ok(replies) => answered.push((index, replies)),
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

    fn arith(&self, key: &[u8], delta: u64, incr: bool) -> Result<Option<u64>> {
        check_key(key)?;
        let reply = self.one(
            key,
            |b| proto::encode_arith(b, incr, key, delta),
            Expect::Status,
        )?;
        match reply {
            Reply::Status(Status::Number(n)) => Ok(Some(n)),
            Reply::Status(Status::NotFound) => Ok(None),
            Reply::Status(s) => Err(self.status_error(key, s, if incr { "incr" } else { "decr" })),
            other => Err(self.status_error(key, unexpected(other), "incr")),
        }
    }
}

impl TextTransport {
    /// `get_many` on a one-server cluster: one request, one reply, no grouping, so nothing is
    /// allocated but the result and its values.
    fn get_many_on_one_server(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        for key in keys {
            check_key(key)?;
        }
        let mut out = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(out);
        }
        let reply = self.exchange(
            0,
            |b| proto::encode_get(b, keys, true),
            Decoder::with_capacity(Expect::Values, keys.len()),
        )?;
        match reply {
            Reply::Values(values) => place_values(values, None, keys, &mut out),
            Reply::Status(s) => return Err(status_to_error(self.label(0), s, "gets")),
            other => return Err(status_to_error(self.label(0), unexpected(other), "gets")),
        }
        Ok(out)
    }

    /// Checks every key (nothing is sent when one is bad), then groups their positions by
    /// server.
    fn keys_by_server(&self, keys: &[&[u8]]) -> Result<Vec<(usize, Vec<usize>)>> {
        for key in keys {
            check_key(key)?;
        }
        self.by_server(keys.len(), |i| keys.get(i).copied())
    }

    /// One command per key, pipelined across servers: every reply with its key's position
    /// and its server's index. `reads` lets a down server's keys go unanswered (misses)
    /// instead of failing the whole call.
    fn per_key(
        &self,
        keys: &[&[u8]],
        encode: impl Fn(&mut Vec<u8>, &[u8]),
        overhead: usize,
        expect: Expect,
        reads: bool,
    ) -> Result<Vec<(usize, usize, Reply)>> {
        let groups = self.keys_by_server(keys)?;
        let limit = if reads {
            RoundLimit::VALUES
        } else {
            RoundLimit::STATUS
        };
        let outcomes = self.pipelined(
            &groups,
            |buf, members| {
                for key in members.iter().filter_map(|&i| keys.get(i)) {
                    encode(buf, key);
                }
            },
            |i| keys.get(i).map_or(0, |k| k.len() + overhead),
            expect,
            Replies::PerCommand,
            limit,
        );
        let replies = if reads {
            Self::tolerant(outcomes)?
        } else {
            Self::strict(outcomes)?
        };
        let mut out = Vec::with_capacity(keys.len());
        for (server, replies) in replies {
            let members = members_of(&groups, server);
            out.extend(
                replies
                    .into_iter()
                    .filter_map(|(round, r)| Some((*members.get(round.start)?, server, r))),
            );
        }
        Ok(out)
    }

    fn label(&self, server: usize) -> String {
        self.server(server)
            .map(|s| s.label.clone())
            .unwrap_or_default()
    }

    fn meta_value(&self, key: &[u8], reply: Reply) -> Result<Option<MetaItem>> {
        match reply {
            Reply::Meta(Meta::Value(item)) => Ok(Some(item)),
            Reply::Meta(Meta::Miss | Meta::NotFound) => Ok(None),
            Reply::Status(s) => Err(self.status_error(key, s, "mg")),
            other => Err(self.status_error(key, unexpected(other), "mg")),
        }
    }
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
}

/// One reply of a pipelined batch, with the range of the group's members it answers (one
/// member per reply, or a whole chunk for a multi-get).
type Answer = (Range<usize>, Reply);

/// One server's part of a pipelined batch while it runs.
struct Lane<'g> {
    index: usize,
    /// Positions (into the caller's keys or requests) grouped on this server.
    members: &'g [usize],
    /// Members already sent and answered.
    done: usize,
    /// Members sent in this round, their replies still unread.
    round: Range<usize>,
    conn: Option<Conn>,
    /// The first command sent, in case the server closes the connection on it.
    head: Head,
    /// The socket's read timeout was shortened and must be restored before reuse.
    shortened: bool,
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

/// What a pipelined round's chunk is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replies {
    /// One reply per command (stores, deletes, meta gets).
    PerCommand,
    /// One reply for the whole chunk (a multi-get; `flush_all`, `stats`).
    One,
    /// noreply commands closed by `version`: only error lines are kept.
    Quiet,
}

/// How much of a batch one pipelined round sends one server before reading its replies.
///
/// memcached stops reading a connection while it cannot send that connection's replies, so
/// a client that writes a whole large batch before reading blocks in its write until the
/// write timeout once the replies fill the socket buffers. A round stays below both sides'
/// buffers: for commands whose replies are one short status line (stores, deletes; at most
/// ~50 bytes each), at most [`RoundLimit::STATUS`]'s commands, so their replies always fit
/// in the client's receive buffer and the server never stops reading; for commands whose
/// replies carry values (of any size), at most [`RoundLimit::VALUES`]'s request bytes, so
/// the request always fits in the send and receive buffers even when the server stops
/// reading after the first keys. Every round has at least one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoundLimit {
    commands: usize,
    bytes: usize,
}

impl RoundLimit {
    /// Stores and deletes: 512 replies of at most ~50 bytes (25 KB unread at most); the
    /// byte bound only caps the write buffer.
    const STATUS: RoundLimit = RoundLimit {
        commands: 512,
        bytes: 1024 * 1024,
    };
    /// Multi-gets and meta gets: 32 KB of request, well inside loopback's and Linux's
    /// default socket buffers (16 KB send + 128 KB receive at least).
    const VALUES: RoundLimit = RoundLimit {
        commands: 4096,
        bytes: 32 * 1024,
    };

    /// The end of the chunk of `members` that starts at `start`: as many members as fit,
    /// at least one. `cost` takes a member (a position) and gives its request bytes.
    fn chunk_end(&self, members: &[usize], start: usize, cost: &impl Fn(usize) -> usize) -> usize {
        let mut bytes = 0usize;
        let mut end = start;
        for &member in members.get(start..).unwrap_or_default() {
            let c = cost(member);
            if end > start && (end - start >= self.commands || bytes.saturating_add(c) > self.bytes)
            {
                break;
            }
            bytes = bytes.saturating_add(c);
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

/// Request bytes of one key in a `gets` line.
fn get_cost(key: &[u8]) -> usize {
    key.len() + 1
}

/// Request bytes of a store command beyond its key and value (`set`, flags, exptime, length,
/// two line ends).
const STORE_OVERHEAD: usize = 48;

/// The positions grouped on server `index`.
fn members_of(groups: &[(usize, Vec<usize>)], index: usize) -> &[usize] {
    groups
        .iter()
        .find(|(server, _)| *server == index)
        .map_or(&[], |(_, members)| members.as_slice())
}

fn unexpected(reply: Reply) -> Status {
    Status::ClientError(format!("unexpected reply {reply:?}"))
}

/// Maps a status that is not the expected answer to a typed error.
fn status_to_error(server: String, status: Status, command: &str) -> Error {
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

/// True for memcached's refusal of an item over its `-I` (`SERVER_ERROR object too large
/// for cache`).
fn refused_as_too_large(message: &str) -> bool {
    message.contains("too large")
}

fn store_status(status: &Status) -> Option<StoreStatus> {
    match status {
        Status::Stored => Some(StoreStatus::Stored),
        Status::NotStored => Some(StoreStatus::NotStored),
        Status::Exists => Some(StoreStatus::Exists),
        Status::NotFound => Some(StoreStatus::NotFound),
        _ => None,
    }
}

/// Fills `out[i]` for every position whose key matches a returned value.
/// Fills `out[i]` for every position whose key matches a returned value; `members` are the
/// positions asked of this server (`None`: all of them, in order).
fn place_values(
    values: Values,
    members: Option<&[usize]>,
    keys: &[&[u8]],
    out: &mut [Option<Item>],
) {
    let identity: Vec<usize> = Vec::new();
    let (members, all) = match members {
        Some(m) => (m, false),
        None => (identity.as_slice(), true),
    };
    let count = if all { keys.len() } else { members.len() };
    let position = |m: usize| {
        if all {
            Some(m)
        } else {
            members.get(m).copied()
        }
    };
    let key_at = |m: usize| position(m).and_then(|i| keys.get(i)).copied();
    // memcached answers in the order of the request: match each value from a cursor, so a
    // batch of n keys costs n comparisons, not n squared.
    let mut cursor = 0;
    let mut matched = 0;
    for (key, item) in values {
        let key = key.as_bytes();
        let found = (cursor..count)
            .find(|&m| key_at(m) == Some(key))
            .or_else(|| (0..count).find(|&m| key_at(m) == Some(key)));
        if let Some(m) = found {
            cursor = m + 1;
            matched += 1;
            if let Some(slot) = position(m).and_then(|i| out.get_mut(i)) {
                *slot = Some(item);
            }
        }
    }
    // A key asked for twice and answered once (a proxy may merge them) is a hit twice.
    if matched == 0 || matched == count {
        return;
    }
    for m in 0..count {
        let Some(i) = position(m) else { continue };
        if out.get(i).is_some_and(Option::is_some) {
            continue;
        }
        let twin = (0..m)
            .filter_map(position)
            .find(|&e| keys.get(e) == keys.get(i) && out.get(e).is_some_and(Option::is_some));
        if let Some(e) = twin {
            let item = out.get(e).cloned().flatten();
            if let Some(slot) = out.get_mut(i) {
                *slot = item;
            }
        }
    }
}

impl Transport for TextTransport {
    fn name(&self) -> &'static str {
        "text"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Item>> {
        check_key(key)?;
        match self.one(key, |b| proto::encode_get(b, &[key], true), Expect::Values)? {
            Reply::Values(values) => Ok(values
                .into_iter()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, item)| item)),
            Reply::Status(s) => Err(self.status_error(key, s, "gets")),
            other => Err(self.status_error(key, unexpected(other), "gets")),
        }
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        if self.servers.len() == 1 && RoundLimit::VALUES.fits(keys.iter().map(|k| get_cost(k))) {
            return self.get_many_on_one_server(keys);
        }
        let groups = self.keys_by_server(keys)?;
        let mut out = vec![None; keys.len()];
        let replies = self.pipelined(
            &groups,
            |buf, members| {
                let mut batch: Vec<&[u8]> = Vec::with_capacity(members.len());
                batch.extend(members.iter().filter_map(|&i| keys.get(i).copied()));
                proto::encode_get(buf, &batch, true)
            },
            |i| keys.get(i).map_or(0, |k| get_cost(k)),
            Expect::Values,
            Replies::One,
            RoundLimit::VALUES,
        );
        for (index, replies) in Self::tolerant(replies)? {
            let members = members_of(&groups, index);
            for (round, reply) in replies {
                match reply {
                    Reply::Values(values) => {
                        let asked = members.get(round).unwrap_or_default();
                        place_values(values, Some(asked), keys, &mut out)
                    }
                    Reply::Status(s) => {
                        let label = self.server(index)?.label.clone();
                        return Err(status_to_error(label, s, "gets"));
                    }
                    Reply::Stats(_) | Reply::Meta(_) => {}
                }
            }
        }
        Ok(out)
    }

    /// A value over `item_size_limit` is refused before it is sent; for a `set`, one
    /// `delete` of the key goes instead (memcached unlinks the old item when it refuses a
    /// `set` as too large; so does this transport, so the old value is not served on).
    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        check_key(request.key)?;
        if let Err(too_large) = self.check_value(request.value) {
            if request.mode == StoreMode::Set {
                self.delete(request.key)?;
            }
            return Err(too_large);
        }
        let reply = self.one(
            request.key,
            |b| {
                proto::encode_store(
                    b,
                    request.mode,
                    request.key,
                    request.value,
                    request.flags,
                    request.exptime,
                    false,
                )
            },
            Expect::Status,
        )?;
        match reply {
            Reply::Status(ref s) if store_status(s).is_some() => {
                Ok(store_status(s).unwrap_or(StoreStatus::NotStored))
            }
            // memcached has unlinked the old item of a refused `set` itself.
            Reply::Status(Status::ServerError(ref m)) if refused_as_too_large(m) => Err(
                Error::refused_by_server(request.value.len(), self.config.item_size_limit),
            ),
            Reply::Status(s) => Err(self.status_error(request.key, s, request.mode.command())),
            other => Err(self.status_error(request.key, unexpected(other), request.mode.command())),
        }
    }

    /// Pipelined per server. A request over `item_size_limit` is refused by itself: a
    /// `set` sends `delete <key>` in its place (in order with the batch's other commands on
    /// that key), any other mode sends nothing; a request the server refuses as too large
    /// is refused the same way (memcached unlinks a refused `set`'s old item itself). Then,
    /// as [`Transport::store_many`] says, the first refusal in request order is the answer.
    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        for r in requests {
            check_key(r.key)?;
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
        // What goes on the wire for request `i`: its store, the delete of a refused `set`,
        // or nothing.
        let sent = |i: usize| {
            let r = requests.get(i)?;
            match (is_over(i), r.mode) {
                (false, _) => Some((r, false)),
                (true, StoreMode::Set) => Some((r, true)),
                (true, _) => None,
            }
        };
        let groups = self.by_server(requests.len(), |i| sent(i).map(|(r, _)| r.key))?;
        let replies = self.pipelined(
            &groups,
            |buf, members| {
                for (r, delete) in members.iter().filter_map(|&i| sent(i)) {
                    if delete {
                        proto::encode_delete(buf, r.key);
                    } else {
                        proto::encode_store(buf, r.mode, r.key, r.value, r.flags, r.exptime, false);
                    }
                }
            },
            |i| match sent(i) {
                Some((r, true)) => r.key.len() + 9,
                Some((r, false)) => r.key.len() + r.value.len() + STORE_OVERHEAD,
                None => 0,
            },
            Expect::Status,
            Replies::PerCommand,
            RoundLimit::STATUS,
        );
        let mut out = vec![StoreStatus::NotStored; requests.len()];
        for (index, replies) in Self::strict(replies)? {
            let members = members_of(&groups, index);
            for (round, reply) in replies {
                let Some((i, (r, delete))) =
                    members.get(round.start).and_then(|&i| Some((i, sent(i)?)))
                else {
                    continue;
                };
                let status = match reply {
                    Reply::Status(s) => s,
                    other => unexpected(other),
                };
                let command = if delete { "delete" } else { r.mode.command() };
                match status {
                    Status::Deleted | Status::NotFound if delete => {}
                    ref s if !delete && store_status(s).is_some() => {
                        if let (Some(slot), Some(st)) = (out.get_mut(i), store_status(s)) {
                            *slot = st;
                        }
                    }
                    Status::ServerError(ref m) if !delete && refused_as_too_large(m) => refuse(
                        i,
                        Error::refused_by_server(r.value.len(), self.config.item_size_limit),
                    ),
                    other => return Err(status_to_error(self.label(index), other, command)),
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
        match self.one(key, |b| proto::encode_delete(b, key), Expect::Status)? {
            Reply::Status(Status::Deleted) => Ok(true),
            Reply::Status(Status::NotFound) => Ok(false),
            Reply::Status(s) => Err(self.status_error(key, s, "delete")),
            other => Err(self.status_error(key, unexpected(other), "delete")),
        }
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        let mut out = vec![false; keys.len()];
        for (i, server, reply) in
            self.per_key(keys, proto::encode_delete, 9, Expect::Status, false)?
        {
            let deleted = match reply {
                Reply::Status(Status::Deleted) => true,
                Reply::Status(Status::NotFound) => false,
                Reply::Status(s) => return Err(status_to_error(self.label(server), s, "delete")),
                other => {
                    return Err(status_to_error(
                        self.label(server),
                        unexpected(other),
                        "delete",
                    ))
                }
            };
            if let Some(slot) = out.get_mut(i) {
                *slot = deleted;
            }
        }
        Ok(out)
    }

    /// `delete <key> noreply` for every key, each server's batch (in rounds of at most 512)
    /// ended by `version`: memcached sends nothing for a noreply command, not even an error
    /// (protocol.txt), so the one reply to read is `VERSION`, which comes after everything
    /// sent before it was processed and cannot be mistaken for a delete's reply. Lines before
    /// it (errors, or the replies of a server that ignores noreply) are read too, so no reply
    /// is ever left on a pooled connection; an error among them is returned after every
    /// server was read. A server that fails or is down fails the call, as in
    /// [`Transport::delete_many`].
    fn delete_many_quiet(&self, keys: &[&[u8]]) -> Result<()> {
        let groups = self.keys_by_server(keys)?;
        let outcomes = self.pipelined(
            &groups,
            |buf, members| {
                for key in members.iter().filter_map(|&i| keys.get(i)) {
                    proto::encode_delete_noreply(buf, key);
                }
                proto::encode_line(buf, "version");
            },
            |i| keys.get(i).map_or(0, |k| k.len() + 17),
            Expect::Status,
            Replies::Quiet,
            RoundLimit::STATUS,
        );
        for (index, answers) in Self::strict(outcomes)? {
            if let Some((_, reply)) = answers.into_iter().next() {
                let status = match reply {
                    Reply::Status(s) => s,
                    other => unexpected(other),
                };
                return Err(status_to_error(self.label(index), status, "delete"));
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
        match self.one(
            key,
            |b| proto::encode_touch(b, key, exptime),
            Expect::Status,
        )? {
            Reply::Status(Status::Touched) => Ok(true),
            Reply::Status(Status::NotFound) => Ok(false),
            Reply::Status(s) => Err(self.status_error(key, s, "touch")),
            other => Err(self.status_error(key, unexpected(other), "touch")),
        }
    }

    fn flush_all(&self) -> Result<()> {
        let groups: Vec<(usize, Vec<usize>)> =
            (0..self.servers.len()).map(|i| (i, vec![i])).collect();
        for (index, replies) in Self::strict(self.pipelined(
            &groups,
            |b, _| proto::encode_line(b, "flush_all"),
            |_| 11,
            Expect::Status,
            Replies::One,
            RoundLimit::STATUS,
        ))? {
            for (_, reply) in replies {
                if reply != Reply::Status(Status::Ok) {
                    let label = self.server(index)?.label.clone();
                    let status = match reply {
                        Reply::Status(s) => s,
                        other => unexpected(other),
                    };
                    return Err(status_to_error(label, status, "flush_all"));
                }
            }
        }
        Ok(())
    }

    fn supports_meta(&self) -> bool {
        true
    }

    fn meta_get(&self, key: &[u8], recache_below: u32) -> Result<Option<MetaItem>> {
        check_key(key)?;
        let reply = self.one(
            key,
            |b| proto::encode_meta_get(b, key, recache_below),
            Expect::Meta,
        )?;
        self.meta_value(key, reply)
    }

    fn meta_get_many(&self, keys: &[&[u8]], recache_below: u32) -> Result<Vec<Option<MetaItem>>> {
        let mut out = vec![None; keys.len()];
        let encode = |b: &mut Vec<u8>, k: &[u8]| proto::encode_meta_get(b, k, recache_below);
        for (i, _, reply) in self.per_key(keys, encode, 24, Expect::Meta, true)? {
            let key = keys.get(i).copied().unwrap_or_default();
            if let Some(slot) = out.get_mut(i) {
                *slot = self.meta_value(key, reply)?;
            }
        }
        Ok(out)
    }

    fn meta_invalidate(&self, key: &[u8], grace: u32) -> Result<bool> {
        check_key(key)?;
        match self.one(
            key,
            |b| proto::encode_meta_invalidate(b, key, grace),
            Expect::Meta,
        )? {
            Reply::Meta(Meta::Done) => Ok(true),
            Reply::Meta(Meta::NotFound | Meta::Miss) => Ok(false),
            Reply::Status(s) => Err(self.status_error(key, s, "md")),
            other => Err(self.status_error(key, unexpected(other), "md")),
        }
    }

    fn stats(&self) -> Result<Vec<ServerStats>> {
        let groups: Vec<(usize, Vec<usize>)> =
            (0..self.servers.len()).map(|i| (i, vec![i])).collect();
        let mut out = Vec::with_capacity(self.servers.len());
        for (index, replies) in Self::strict(self.pipelined(
            &groups,
            |b, _| proto::encode_line(b, "stats"),
            |_| 7,
            Expect::Stats,
            Replies::One,
            RoundLimit::VALUES,
        ))? {
            let label = self.server(index)?.label.clone();
            for (_, reply) in replies {
                match reply {
                    Reply::Stats(stats) => out.push(ServerStats {
                        server: label.clone(),
                        stats: stats.into_iter().collect(),
                    }),
                    Reply::Status(s) => return Err(status_to_error(label, s, "stats")),
                    Reply::Values(_) | Reply::Meta(_) => {
                        return Err(status_to_error(label, Status::End, "stats"))
                    }
                }
            }
        }
        Ok(out)
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
        };
        let members: Vec<usize> = (0..10).collect();
        let ten = |_: usize| 10;
        assert_eq!(limit.chunk_end(&members, 0, &ten), 2, "bytes bound");
        assert_eq!(limit.chunk_end(&members, 8, &ten), 10, "the tail");
        assert_eq!(limit.chunk_end(&members, 10, &ten), 10, "nothing left");
        assert_eq!(limit.chunk_end(&members, 0, &|_| 1), 3, "command bound");
        assert_eq!(
            limit.chunk_end(&members, 4, &|_| 100),
            5,
            "one oversized command"
        );
        assert!(limit.fits([10, 10].into_iter()));
        assert!(!limit.fits([10, 10, 10].into_iter()));
        assert!(!limit.fits([1, 1, 1, 1].into_iter()));
        // A get_many of 100 keys of 250 bytes, or a set_many of 100 values of 1 KB, is one
        // round: every server gets its request before any reply is read.
        assert!(RoundLimit::VALUES.fits(std::iter::repeat_n(get_cost(&[b'k'; 250]), 100)));
        assert!(RoundLimit::STATUS.fits(std::iter::repeat_n(250 + 1024 + STORE_OVERHEAD, 100)));
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
