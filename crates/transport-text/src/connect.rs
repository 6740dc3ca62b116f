//! Getting a connection: opening one (TCP, unix socket, TLS), the meta probe on a server's
//! first connection, the pool (check out, check in) and the thread that closes idle ones.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
#[cfg(feature = "tls")]
use std::time::Instant;

use newcache_transport::{Error, Result};

use crate::command::{Mismatch, Wire};
use crate::conn::{Acquire, Conn, Endpoint, Opened, Place, Server, WIRE_CLASSIC, WIRE_META};
use crate::errors::{closed_without_reply, UNKNOWN_COMMAND};
use crate::pool::{Checkout, Permit};
use crate::proto::{self, meta, Decoder, Expect, Reply, Status};
use crate::stream::{Socket, Stream};
use crate::{probe_verdict, version_verdict, ProbeVerdict, Protocol, TextTransport};

/// How long a pooled connection sits idle before its next checkout looks at it (one
/// non-blocking peek) for a close or bytes nobody asked for. A server that restarts takes
/// longer than this, so the connections it closed are dropped before any request is sent
/// on them; a connection reused sooner (a busy pool) is handed out as it is. The async
/// transport's idle connections are looked at by the same rule.
pub(crate) const LOOK_AFTER_IDLE: Duration = Duration::from_millis(10);

impl TextTransport {
    pub(crate) fn server(&self, index: usize) -> Result<&Server> {
        self.servers.get(index).ok_or(Error::NoServers)
    }

    /// A connection to the server (TLS set up, when configured).
    pub(crate) fn connect_stream(&self, server: &Server) -> Result<Stream> {
        let socket = self.connect_socket(server)?;
        #[cfg(feature = "tls")]
        if let (Some(config), Some(name)) = (&self.tls, &server.tls_name) {
            let deadline = Instant::now() + self.config.connect_timeout + self.config.read_timeout;
            return crate::tls::handshake(
                config.clone(),
                name.clone(),
                socket,
                deadline,
                self.config.read_timeout,
            )
            .map(|tls| Stream::Tls(Box::new(tls), crate::tls_cuts::Cuts::default()))
            .map_err(|source| crate::tls::connect_error(server.label.clone(), source));
        }
        Ok(Stream::Plain(socket))
    }

    /// A socket connected to the server, set up (no delay, read and write timeouts).
    pub(crate) fn connect_socket(&self, server: &Server) -> Result<Socket> {
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
                return Ok(Socket::unix(stream));
            }
        };
        let addrs =
            crate::lookup::lookup(address, self.config.connect_timeout).map_err(connect_err)?;
        let stream = connect_each(&addrs, self.config.connect_timeout).map_err(connect_err)?;
        let setup = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(self.config.read_timeout)))
            .and_then(|()| stream.set_write_timeout(Some(self.config.write_timeout)));
        setup.map_err(connect_err)?;
        Ok(Socket::tcp(stream))
    }

    pub(crate) fn new_conn(&self, stream: Stream, wire: Wire, permit: Permit<Conn>) -> Conn {
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
    pub(crate) fn open(&self, server: &Server, permit: Permit<Conn>) -> Result<Opened> {
        let connected = self.connect_stream(server);
        server.connected.store(connected.is_ok(), Ordering::Relaxed);
        let stream = connected?;
        #[cfg(feature = "tracing")]
        tracing::debug!(server = %server.label, "memcached connection opened");
        let wire = match self.config.protocol {
            Protocol::Meta => Wire::Meta,
            Protocol::Classic => Wire::Classic,
            Protocol::Auto => match server.wire.load(Ordering::Relaxed) {
                WIRE_META => Wire::Meta,
                WIRE_CLASSIC => Wire::Classic,
                _ => {
                    let (conn, opaque) = self.send_probe(server, stream, permit)?;
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
    ///   server that does not echo them, whose replies cannot be matched): classic;
    /// - the connection closed without a reply (twemproxy closes on commands it does not
    ///   know): classic when the server answers `version` on a new connection, or answers it
    ///   with `SERVER_ERROR` (twemproxy with its memcached gone: the request then fails with
    ///   that [`Error::Server`]);
    /// - anything else (another token, garbage, a timeout, a connection lost): an error, and
    ///   the server is probed again on the next connection.
    ///
    /// Classic is for good (the server is not probed again), so one probe's word is not
    /// taken for it: a second probe, on a new connection, must say so too. A stray line or
    /// a connection cut at the first probe made a memcached 1.6 classic for the process's
    /// life, where replies cannot be matched to requests (an outside audit: a stray `EN`
    /// before the probe's reply, then a stray `VALUE` read as a hit).
    pub(crate) fn end_probe(&self, server: &Server, conn: Conn, opaque: u32) -> Result<Conn> {
        let permit = match self.judge_probe(server, conn, opaque)? {
            Judged::Meta(conn) => return Ok(conn),
            Judged::Classic(permit) => permit,
        };
        let stream = self.connect_stream(server)?;
        let (conn, opaque) = self.send_probe(server, stream, permit)?;
        let permit = match self.judge_probe(server, conn, opaque)? {
            Judged::Meta(conn) => return Ok(conn),
            Judged::Classic(permit) => permit,
        };
        server.wire.store(WIRE_CLASSIC, Ordering::Relaxed);
        let stream = self.connect_stream(server)?;
        Ok(self.new_conn(stream, Wire::Classic, permit))
    }

    /// A connection on `stream` in the place `permit` holds, the meta probe sent on it:
    /// the connection and the probe's token.
    fn send_probe(
        &self,
        server: &Server,
        stream: Stream,
        permit: Permit<Conn>,
    ) -> Result<(Conn, u32)> {
        let mut conn = self.new_conn(stream, Wire::Meta, permit);
        let opaque = conn.next_opaque();
        meta::encode_probe(&mut conn.wbuf, opaque);
        self.send(server, &mut conn)?;
        conn.wbuf.clear();
        Ok((conn, opaque))
    }

    /// One probe's verdict ([`TextTransport::end_probe`]): meta (the server marked so, the
    /// connection ready), or classic (its place given back, nothing marked yet).
    fn judge_probe(&self, server: &Server, mut conn: Conn, opaque: u32) -> Result<Judged> {
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
                    Ok(Judged::Meta(conn))
                }
                Ok(ProbeVerdict::Classic) => Ok(Judged::Classic(conn.into_permit())),
                Ok(ProbeVerdict::Failed(message)) => Err(Error::Server {
                    server: server.label.clone(),
                    message,
                }),
                Err(m) => Err(self.mismatch(server, m)),
            },
            Err(ref e) if closed_without_reply(e) => {
                let permit = conn.into_permit();
                let stream = self.connect_stream(server)?;
                let mut conn = self.new_conn(stream, Wire::Classic, permit);
                let status = self.version_reply(server, &mut conn).ok().flatten();
                match version_verdict(&server.label, status) {
                    Some(Ok(())) => Ok(Judged::Classic(conn.into_permit())),
                    Some(Err(e)) => Err(e),
                    None => Err(crate::errors::probe_closed(&server.label)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// The server closed the connection without a reply ([`TextTransport::version_reply`]).
#[derive(Debug)]
pub(crate) struct Closed;

impl TextTransport {
    /// Whether the server closes a connection on a command it does not know, asked on
    /// `conn` ([`UNKNOWN_COMMAND`]): a proxy that closes the connection on what it does not
    /// proxy (twemproxy) does; memcached answers `ERROR`. The connection is spent.
    pub(crate) fn closes_on_unknown_commands(&self, server: &Server, conn: &mut Conn) -> bool {
        conn.wbuf.clear();
        proto::encode_line(&mut conn.wbuf, UNKNOWN_COMMAND);
        let closed = match self.send(server, conn) {
            Ok(()) => matches!(
                self.receive(server, conn, &mut Decoder::new(Expect::Status)),
                Err(e) if closed_without_reply(&e)
            ),
            Err(e) => closed_without_reply(&e),
        };
        conn.wbuf.clear();
        closed
    }

    /// Sends `version` on `conn` and reads the reply: the status line it got, when nothing
    /// follows it; `None` for anything else (no reply in time, more than one line);
    /// [`Closed`] when the server closed the connection without a reply.
    pub(crate) fn version_reply(
        &self,
        server: &Server,
        conn: &mut Conn,
    ) -> std::result::Result<Option<Status>, Closed> {
        conn.wbuf.clear();
        proto::encode_line(&mut conn.wbuf, "version");
        let status = match self.send(server, conn) {
            Ok(()) => match self.receive(server, conn, &mut Decoder::new(Expect::Status)) {
                Ok((Reply::Status(status), false)) if conn.rbuf.filled().is_empty() => {
                    Ok(Some(status))
                }
                Err(e) if closed_without_reply(&e) => Err(Closed),
                _ => Ok(None),
            },
            Err(e) if closed_without_reply(&e) => Err(Closed),
            Err(_) => Ok(None),
        };
        conn.wbuf.clear();
        status
    }

    /// A connection to the server: an idle one (a classic one, or one idle for
    /// [`LOOK_AFTER_IDLE`] or longer, only when no byte waits on it and it is not closed),
    /// or a new one once fewer than `max_connections` are open, waiting up to the read
    /// timeout for either.
    pub(crate) fn checkout(&self, server: &Server) -> std::result::Result<Conn, Acquire> {
        match self.start_checkout(server)? {
            Opened::Ready(conn) => Ok(conn),
            Opened::Probing(conn, opaque) => self
                .end_probe(server, conn, opaque)
                .map_err(Acquire::Failed),
        }
    }

    /// [`TextTransport::checkout`], leaving a new connection's probe (if any) unread.
    pub(crate) fn start_checkout(&self, server: &Server) -> std::result::Result<Opened, Acquire> {
        match self.acquire(server, self.config.read_timeout)? {
            Place::Idle(conn) => Ok(Opened::Ready(conn)),
            Place::New(permit) => self.open(server, permit).map_err(Acquire::Failed),
        }
    }

    /// An idle connection to the server, or a place in its pool for a new one, waiting up to
    /// `wait` for either (a batch's lanes share one such wait).
    pub(crate) fn acquire(
        &self,
        server: &Server,
        wait: Duration,
    ) -> std::result::Result<Place, Acquire> {
        loop {
            match server.pool.checkout(wait) {
                Ok(Checkout::Idle(mut conn, idle_for)) => {
                    // A classic connection is looked at on every reuse: a reply nobody asked
                    // for (a duplicate, a late one) would be read as the next request's. Any
                    // connection idle for a while is looked at too: one the server closed
                    // meanwhile (restarted, or its idle timeout) would fail the request it
                    // was handed, and count against the server as a failure.
                    let look = conn.wire == Wire::Classic || idle_for >= LOOK_AFTER_IDLE;
                    if look && conn.stream.has_bytes_waiting() {
                        continue;
                    }
                    return Ok(Place::Idle(conn));
                }
                Ok(Checkout::Open(permit)) => return Ok(Place::New(permit)),
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
    pub(crate) fn checkin(&self, server: &Server, mut conn: Conn) {
        conn.wbuf.clear();
        conn.until = None;
        conn.rbuf.shrink();
        if conn.rbuf.filled().is_empty() && conn.stream.buffered() == 0 {
            server.pool.checkin(conn);
            self.start_reaper();
        }
    }

    /// Starts the thread that closes idle connections (once per transport, when the idle
    /// timeout is not zero). It holds the servers weakly and stops when the transport is
    /// dropped.
    pub(crate) fn start_reaper(&self) {
        if self.config.idle_timeout.is_zero() {
            return;
        }
        // Without the thread, idle connections are still closed when the pool is next used
        // (checkout closes the expired ones).
        let servers: Weak<[Server]> = Arc::downgrade(&self.servers);
        let tick = (self.config.idle_timeout / 4).max(Duration::from_millis(5));
        self.reaper
            .start("newcache-idle", tick, servers, |servers| {
                for server in servers {
                    server.pool.close_expired();
                }
            });
    }
}

/// A TCP connection to the first of `addrs` that takes one, each tried in turn with the
/// whole connect `timeout`, as libmemcached (and so pylibmc) tries them: a host whose first
/// address is down (a broken IPv6 route beside a working IPv4 one) is still reached, at the
/// cost of one timeout per address that is down. (A deadline shared by all the addresses,
/// as the async transport's connect has, was tried: the live second address was then never
/// tried, a review found.)
fn connect_each(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => match not_to_itself(stream.local_addr(), stream.peer_addr()) {
                Ok(()) => return Ok(stream),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A connect to a port nobody listens on reaches itself when the system hands the
/// connecting socket that very port from its ephemeral range (a server on a port in that
/// range, down): the SYN meets itself and the connection opens (TCP's simultaneous open),
/// and what is written on it is read back as the reply. Such a connection is refused, as
/// a connect to a closed port is.
pub(crate) fn not_to_itself(
    local: io::Result<SocketAddr>,
    peer: io::Result<SocketAddr>,
) -> io::Result<()> {
    match (local, peer) {
        (Ok(local), Ok(peer)) if local == peer => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "nothing listens on {peer}: the connection reached itself (the system gave it \
                 that port as its own, from its ephemeral range)"
            ),
        )),
        _ => Ok(()),
    }
}

/// What one meta probe found ([`TextTransport::end_probe`]).
enum Judged {
    /// Meta: the connection, ready.
    Meta(Conn),
    /// Classic: the connection's place, to open another in.
    Classic(Permit<Conn>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use newcache_testkit::Blackhole;
    use std::net::TcpListener;
    use std::time::Instant;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A host whose first address is down (its connects time out) is reached on its second:
    /// each address gets the whole connect timeout.
    #[test]
    fn an_address_that_is_down_gives_way_to_the_next() {
        let hole = Blackhole::start();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let started = Instant::now();
        let stream = connect_each(&[addr(&hole.addr()), open], Duration::from_millis(200)).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open);
        assert!(started.elapsed() >= Duration::from_millis(190));
        let e = connect_each(&[addr(&hole.addr())], Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    }

    /// An address that refuses at once leaves the next the time: it is connected.
    #[test]
    fn a_refused_address_gives_way_to_the_next() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let stream = connect_each(&[closed, open], Duration::from_millis(300)).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open);
        let e = connect_each(&[], Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
