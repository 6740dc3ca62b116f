//! memcached's text protocol in Rust: a sans-IO codec ([`proto`]) under a blocking
//! connection pool, one pool per server.
//!
//! - Every request is encoded into one buffer and written with one `write` call; replies are
//!   read into a buffer the pooled connection keeps and parsed incrementally.
//! - Connections open lazily (building a transport never blocks) and go back to the pool only
//!   after a complete, well-formed reply. After an I/O error, a timeout or an unparsable reply
//!   the connection is dropped, never reused half-read; the next request opens a new one, so a
//!   server that comes back is used again.
//! - Keys are checked and values measured before anything is written: a bad key or a value over
//!   the item size limit is a typed error and sends nothing.
//! - With several servers, keys are placed as libmemcached places them by default (modula over
//!   its one-at-a-time hash), and multi-key operations send every server its whole batch before
//!   reading any reply.
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
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![forbid(unsafe_code)]

pub mod placement;
pub mod proto;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use newcache_transport::{
    check_key, Error, Item, MetaItem, Result, ServerStats, Store, StoreStatus, Transport,
    DEFAULT_ITEM_SIZE_LIMIT,
};
use proto::{Decoder, Expect, Meta, Reply, Status};

/// Settings of a [`TextTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextConfig {
    /// Servers as `host:port`, `host` (port 11211) or `[v6addr]:port`.
    pub servers: Vec<String>,
    /// Timeout for opening a connection.
    pub connect_timeout: Duration,
    /// Timeout for a whole reply to arrive.
    pub read_timeout: Duration,
    /// Timeout for a request to be written.
    pub write_timeout: Duration,
    /// Idle connections kept per server.
    pub max_idle_per_server: usize,
    /// Values larger than this are refused before anything is sent (memcached's `-I`).
    pub item_size_limit: usize,
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
        }
    }
}

/// The reply bytes a connection has read and not yet consumed.
#[derive(Debug)]
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new() -> Self {
        ReadBuf {
            data: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        }
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

    /// Room to read into, making some by compacting or growing.
    fn spare(&mut self) -> &mut [u8] {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.data.len().saturating_mul(2);
                self.data.resize(len, 0);
            }
        }
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
    config: TextConfig,
}

impl fmt::Debug for TextTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextTransport")
            .field("servers", &self.servers())
            .finish()
    }
}

/// Normalises a server entry to `host:port`.
fn server_label(entry: &str) -> Result<String> {
    let entry = entry.trim();
    let bad = || Error::Protocol {
        server: entry.to_string(),
        detail: "a server must be host, host:port or [v6addr]:port".into(),
    };
    if entry.is_empty() {
        return Err(bad());
    }
    if entry.starts_with('[') {
        return match entry.rsplit_once("]:") {
            Some((_, port)) if port.parse::<u16>().is_ok() => Ok(entry.to_string()),
            _ if entry.ends_with(']') => Ok(format!("{entry}:11211")),
            _ => Err(bad()),
        };
    }
    match entry.split_once(':') {
        None => Ok(format!("{entry}:11211")),
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(entry.to_string())
        }
        _ => Err(bad()),
    }
}

impl TextTransport {
    /// A transport over these servers. Connects to nothing until the first request.
    pub fn new(config: TextConfig) -> Result<Self> {
        if config.servers.is_empty() {
            return Err(Error::NoServers);
        }
        let servers = config
            .servers
            .iter()
            .map(|s| {
                Ok(Server {
                    label: server_label(s)?,
                    idle: Mutex::new(Vec::new()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TextTransport { servers, config })
    }

    /// The servers, as `host:port`, in placement order.
    pub fn servers(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.label.clone()).collect()
    }

    /// The index (into [`TextTransport::servers`]) of the server that holds `key`.
    pub fn server_for_key(&self, key: &[u8]) -> usize {
        placement::modula(key, self.servers.len())
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

    fn checkin(&self, server: &Server, mut conn: Conn) {
        conn.wbuf.clear();
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

    /// Reads one reply of the expected kind.
    fn receive(&self, server: &Server, conn: &mut Conn, expect: Expect) -> Result<Reply> {
        let mut decoder = Decoder::new(expect);
        let mut deadline: Option<Instant> = None;
        loop {
            let parsed = decoder
                .decode(conn.rbuf.filled())
                .map_err(|e| Error::Protocol {
                    server: server.label.clone(),
                    detail: e.0,
                })?;
            if let Some(reply) = parsed {
                conn.rbuf.consume(decoder.consumed());
                return Ok(reply);
            }
            // The socket's read timeout bounds each read; after the first one, the remaining
            // time bounds the whole reply.
            match deadline {
                None => deadline = Some(Instant::now() + self.config.read_timeout),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout {
                            server: server.label.clone(),
                            after: self.config.read_timeout,
                        });
                    }
                    conn.stream
                        .set_read_timeout(Some(left))
                        .map_err(|e| self.io_error(server, e, self.config.read_timeout))?;
                }
            }
            let n = conn
                .stream
                .read(conn.rbuf.spare())
                .map_err(|e| self.io_error(server, e, self.config.read_timeout))?;
            if n == 0 {
                return Err(Error::Io {
                    server: server.label.clone(),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection mid-reply",
                    ),
                });
            }
            conn.rbuf.end += n;
        }
    }

    fn restore_read_timeout(&self, conn: &mut Conn) -> io::Result<()> {
        conn.stream.set_read_timeout(Some(self.config.read_timeout))
    }

    /// One request and its replies on one server's connection: `encode` fills the write
    /// buffer, then each expected reply is read in order. The connection returns to the pool
    /// only when every reply arrived whole.
    fn exchange(
        &self,
        index: usize,
        encode: impl FnOnce(&mut Vec<u8>),
        expects: &[Expect],
    ) -> Result<Vec<Reply>> {
        let server = self.server(index)?;
        let mut conn = self.checkout(server)?;
        encode(&mut conn.wbuf);
        self.send(server, &mut conn)?;
        let mut replies = Vec::with_capacity(expects.len());
        for &expect in expects {
            replies.push(self.receive(server, &mut conn, expect)?);
        }
        if expects.len() > 1 || conn.rbuf.data.len() > 64 * 1024 {
            self.restore_read_timeout(&mut conn)
                .map_err(|e| self.io_error(server, e, self.config.read_timeout))?;
        }
        self.checkin(server, conn);
        Ok(replies)
    }

    fn one(&self, key: &[u8], encode: impl FnOnce(&mut Vec<u8>), expect: Expect) -> Result<Reply> {
        let index = self.server_for_key(key);
        let mut replies = self.exchange(index, encode, &[expect])?;
        let server = &self.server(index)?.label;
        replies.pop().ok_or_else(|| Error::Protocol {
            server: server.clone(),
            detail: "no reply".into(),
        })
    }

    fn status_error(&self, key: &[u8], status: Status, command: &str) -> Error {
        let server = self
            .server(self.server_for_key(key))
            .map(|s| s.label.clone())
            .unwrap_or_default();
        status_to_error(server, status, command)
    }

    /// Groups positions of `keys` by server, in server order.
    fn by_server(
        &self,
        keys: impl Iterator<Item = usize>,
        key_of: impl Fn(usize) -> usize,
    ) -> Vec<(usize, Vec<usize>)> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in keys {
            let s = key_of(i);
            match groups.iter_mut().find(|(server, _)| *server == s) {
                Some((_, members)) => members.push(i),
                None => groups.push((s, vec![i])),
            }
        }
        groups
    }

    /// Pipelined across servers: every server's batch is written before any reply is read.
    /// `encode` writes the commands of one group; each group expects one reply per member,
    /// or one in all when `one_reply` is set.
    fn pipelined(
        &self,
        groups: &[(usize, Vec<usize>)],
        encode: impl Fn(&mut Vec<u8>, &[usize]),
        expect: Expect,
        one_reply: bool,
    ) -> Result<Vec<(usize, Vec<Reply>)>> {
        let mut sent = Vec::with_capacity(groups.len());
        for (index, members) in groups {
            let server = self.server(*index)?;
            let mut conn = self.checkout(server)?;
            encode(&mut conn.wbuf, members);
            self.send(server, &mut conn)?;
            sent.push((*index, members.len(), conn));
        }
        // On an error, the connections not yet read are dropped with `sent`, unread.
        let mut out = Vec::with_capacity(sent.len());
        for (index, count, mut conn) in sent {
            let server = self.server(index)?;
            let n = if one_reply { 1 } else { count };
            let mut replies = Vec::with_capacity(n);
            for _ in 0..n {
                replies.push(self.receive(server, &mut conn, expect)?);
            }
            self.restore_read_timeout(&mut conn)
                .map_err(|e| self.io_error(server, e, self.config.read_timeout))?;
            self.checkin(server, conn);
            out.push((index, replies));
        }
        Ok(out)
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
    /// Checks every key (nothing is sent when one is bad), then groups their positions by
    /// server.
    fn keys_by_server(&self, keys: &[&[u8]]) -> Result<Vec<(usize, Vec<usize>)>> {
        for key in keys {
            check_key(key)?;
        }
        Ok(self.by_server(0..keys.len(), |i| {
            keys.get(i).map_or(0, |k| self.server_for_key(k))
        }))
    }

    /// One command per key, pipelined across servers: every reply with its key's position
    /// and its server's index.
    fn per_key(
        &self,
        keys: &[&[u8]],
        encode: impl Fn(&mut Vec<u8>, &[u8]),
        expect: Expect,
    ) -> Result<Vec<(usize, usize, Reply)>> {
        let groups = self.keys_by_server(keys)?;
        let replies = self.pipelined(
            &groups,
            |buf, members| {
                for key in members.iter().filter_map(|&i| keys.get(i)) {
                    encode(buf, key);
                }
            },
            expect,
            false,
        )?;
        let mut out = Vec::with_capacity(keys.len());
        for ((server, replies), (_, members)) in replies.into_iter().zip(&groups) {
            out.extend(
                replies
                    .into_iter()
                    .zip(members)
                    .map(|(r, &i)| (i, server, r)),
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
        Status::ServerError(message) if message.contains("too large") => {
            Error::ValueTooLarge { size: 0, limit: 0 }
        }
        Status::ServerError(message) => Error::Server { server, message },
        other => Error::Protocol {
            server,
            detail: format!("unexpected reply {other:?} to {command}"),
        },
    }
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
fn place_values(
    values: Vec<(Vec<u8>, Item)>,
    members: &[usize],
    keys: &[&[u8]],
    out: &mut [Option<Item>],
) {
    for (key, item) in values {
        let mut matching = members
            .iter()
            .copied()
            .filter(|&i| keys.get(i).is_some_and(|k| *k == key.as_slice()));
        if let Some(first) = matching.next() {
            for dup in matching {
                if let Some(slot) = out.get_mut(dup) {
                    *slot = Some(item.clone());
                }
            }
            if let Some(slot) = out.get_mut(first) {
                *slot = Some(item);
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
                .find(|(k, _)| k.as_slice() == key)
                .map(|(_, item)| item)),
            Reply::Status(s) => Err(self.status_error(key, s, "gets")),
            other => Err(self.status_error(key, unexpected(other), "gets")),
        }
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        let groups = self.keys_by_server(keys)?;
        let mut out = vec![None; keys.len()];
        let replies = self.pipelined(
            &groups,
            |buf, members| {
                let batch: Vec<&[u8]> = members
                    .iter()
                    .filter_map(|&i| keys.get(i).copied())
                    .collect();
                proto::encode_get(buf, &batch, true)
            },
            Expect::Values,
            true,
        )?;
        for ((index, replies), (_, members)) in replies.into_iter().zip(&groups) {
            for reply in replies {
                match reply {
                    Reply::Values(values) => place_values(values, members, keys, &mut out),
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

    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        check_key(request.key)?;
        self.check_value(request.value)?;
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
            Reply::Status(Status::ServerError(m)) if m.contains("too large") => {
                Err(Error::ValueTooLarge {
                    size: request.value.len(),
                    limit: request.value.len().saturating_sub(1),
                })
            }
            Reply::Status(s) => Err(self.status_error(request.key, s, request.mode.command())),
            other => Err(self.status_error(request.key, unexpected(other), request.mode.command())),
        }
    }

    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        for r in requests {
            check_key(r.key)?;
            self.check_value(r.value)?;
        }
        let groups = self.by_server(0..requests.len(), |i| {
            requests.get(i).map_or(0, |r| self.server_for_key(r.key))
        });
        let replies = self.pipelined(
            &groups,
            |buf, members| {
                for r in members.iter().filter_map(|&i| requests.get(i)) {
                    proto::encode_store(buf, r.mode, r.key, r.value, r.flags, r.exptime, false);
                }
            },
            Expect::Status,
            false,
        )?;
        let mut out = vec![StoreStatus::NotStored; requests.len()];
        for ((index, replies), (_, members)) in replies.into_iter().zip(&groups) {
            for (reply, &i) in replies.into_iter().zip(members) {
                let status = match reply {
                    Reply::Status(ref s) => store_status(s),
                    _ => None,
                };
                match (status, reply) {
                    (Some(st), _) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = st;
                        }
                    }
                    (None, Reply::Status(s)) => {
                        let label = self.server(index)?.label.clone();
                        return Err(status_to_error(label, s, "set"));
                    }
                    (None, other) => {
                        let label = self.server(index)?.label.clone();
                        return Err(status_to_error(label, unexpected(other), "set"));
                    }
                }
            }
        }
        Ok(out)
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
        for (i, server, reply) in self.per_key(keys, proto::encode_delete, Expect::Status)? {
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
        for (index, replies) in self.pipelined(
            &groups,
            |b, _| proto::encode_line(b, "flush_all"),
            Expect::Status,
            true,
        )? {
            for reply in replies {
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
        for (i, _, reply) in self.per_key(keys, encode, Expect::Meta)? {
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
        for (index, replies) in self.pipelined(
            &groups,
            |b, _| proto::encode_line(b, "stats"),
            Expect::Stats,
            true,
        )? {
            let label = self.server(index)?.label.clone();
            for reply in replies {
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
    fn server_entries_are_normalised() {
        assert_eq!(server_label("h").unwrap(), "h:11211");
        assert_eq!(server_label("h:1").unwrap(), "h:1");
        assert_eq!(server_label("[::1]:5").unwrap(), "[::1]:5");
        assert_eq!(server_label("[::1]").unwrap(), "[::1]:11211");
        for bad in ["", "h:x", ":1", "[::1]:x", "h:1:2:3"] {
            assert!(server_label(bad).is_err(), "{bad}");
        }
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
}
