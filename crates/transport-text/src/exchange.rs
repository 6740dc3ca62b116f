//! One request and its reply on one connection: writing it, reading the reply within the
//! read timeout (large values straight into their own buffer), returning the connection to
//! the pool only when nothing unexpected came, and the typed errors on the way.

use std::io::{self, IoSliceMut, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use newcache_transport::{Error, Result};

use crate::command::{Cmd, Mismatch, NeedsMeta, Outcome, Wire};
use crate::conn::{Acquire, Conn, Server, DEADLINE_SLACK, READ_BUF, WIRE_META, WIRE_UNKNOWN};
use crate::connect::Closed;
use crate::errors::{closed_without_reply, refusal_error, ClosedWithoutReply};
use crate::pool::Checkout;
use crate::proto::{Decoder, Reply, Status};
use crate::{Protocol, TextTransport};

/// The least a reply's first byte is awaited in a batch whose deadline has passed.
const MIN_WAIT: Duration = Duration::from_millis(1);

impl TextTransport {
    pub(crate) fn io_error(&self, server: &Server, e: io::Error, timeout: Duration) -> Error {
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

    /// Writes the request in `conn.wbuf`, the whole of it within the write timeout. The
    /// socket's write timeout bounds each write; when a request takes more than one (a
    /// large value, a server reading slowly), it is shortened to the time left, restored at
    /// the end. With only the socket's timeout, every write that made some progress began
    /// it again: a 20 MB set to a server reading 640 KB/s took 32 s to fail with a 300 ms
    /// write timeout (an outside audit).
    pub(crate) fn send(&self, server: &Server, conn: &mut Conn) -> Result<()> {
        let timeout = self.config.write_timeout;
        let slack = timeout / DEADLINE_SLACK;
        let start = Instant::now();
        // When the socket's timeout was last made to end at the deadline.
        let mut set_at = start;
        let mut shortened = false;
        let mut written = 0;
        let sent = loop {
            let step = match conn.wbuf.get(written..).filter(|rest| !rest.is_empty()) {
                Some(rest) => conn.stream.write(rest).and_then(|n| match n {
                    0 => Err(io::ErrorKind::WriteZero.into()),
                    n => {
                        written += n;
                        Ok(false)
                    }
                }),
                // All of it handed over: what TLS still holds goes out.
                None => conn.stream.flush().map(|()| true),
            };
            match step {
                Ok(true) => break Ok(()),
                // Written whole: on to the flush, at once.
                Ok(false) if written >= conn.wbuf.len() => continue,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
            let now = Instant::now();
            let left = timeout.saturating_sub(now.saturating_duration_since(start));
            if left.is_zero() {
                break Err(io::ErrorKind::TimedOut.into());
            }
            // A write now may block until now + (the setting's length): past the deadline
            // by now - set_at.
            if now.saturating_duration_since(set_at) > slack {
                if let Err(e) = conn.stream.set_write_timeout(Some(left)) {
                    break Err(e);
                }
                (set_at, shortened) = (now, true);
            }
        };
        let restored = if shortened {
            conn.stream.set_write_timeout(Some(timeout))
        } else {
            Ok(())
        };
        sent.and(restored)
            .map_err(|e| self.io_error(server, e, timeout))
    }

    /// Reads one reply with `decoder`; also says whether the socket's read timeout was
    /// shortened on the way (to be restored before the connection is reused).
    ///
    /// The bytes the decoder consumed leave the read buffer after every parse, so the buffer
    /// holds at most a partial line and never grows with the reply (only with the rate it
    /// arrives at, up to [`READ_BUF_MAX`](crate::conn::READ_BUF_MAX)). The rest of a large value (at least
    /// [`READ_BUF`] still to come) is read from the socket straight into the value's own
    /// `Vec` (with the read buffer behind it in the same `readv`, for what follows the
    /// value), so it is never copied out of the read buffer.
    ///
    /// The whole reply is bounded by the read timeout: the socket's read timeout bounds each
    /// read, and once a reply takes more than one read the socket's timeout is shortened to
    /// the time left, but only when the last setting would let a read run more than
    /// [`DEADLINE_SLACK`] of the read timeout past the reply's deadline. A reply that streams
    /// in quickly, however many reads it takes, makes no `setsockopt` at all. In a batch over
    /// several servers, a server's first byte in a round is awaited only until the round's
    /// deadline ([`Conn::until`]), or the slack when that has passed: while one hung server
    /// is waited out, the others' replies arrive, and three hung servers cost one read
    /// timeout, not three. Once the server has answered, the deadline is dropped.
    pub(crate) fn receive(
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
        // The first byte is awaited only until the batch's deadline (`Conn::until`).
        let mut awaiting_first = false;
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
                    let mut end = now + timeout;
                    // In a batch, the first byte is awaited until the round's deadline, but
                    // at least the slack, so that a reply already waiting is still read.
                    if let Some(until) = conn.until {
                        let first = until.max(now + slack.max(MIN_WAIT));
                        if first + slack < end {
                            conn.stream
                                .set_read_timeout(Some(first.saturating_duration_since(now)))
                                .map_err(|e| self.io_error(server, e, timeout))?;
                            (end, shortened, awaiting_first) = (first, true, true);
                        }
                    }
                    deadline = Some((end, now));
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
                // reply's deadline still holds. Under TLS, bytes came but not a whole record
                // yet: the server answers (its first byte, not its first record, ends a
                // batch's wait for it).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if conn.stream.is_tls() {
                        self.answered(server, conn, &mut awaiting_first, &mut deadline)?;
                    }
                    continue;
                }
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
            self.answered(server, conn, &mut awaiting_first, &mut deadline)?;
            decoder.value_filled(direct);
            conn.rbuf.filled_by(n - direct, offered);
        }
    }

    /// The server answers this round: its later replies get the whole read timeout each,
    /// as outside a batch (a healthy server slower than the round, its replies coming one
    /// by one, lost its lane with the round's deadline on each); when its first byte was
    /// awaited only until the round's deadline, the rest of its reply has the whole read
    /// timeout.
    fn answered(
        &self,
        server: &Server,
        conn: &mut Conn,
        awaiting_first: &mut bool,
        deadline: &mut Option<(Instant, Instant)>,
    ) -> Result<()> {
        conn.until = None;
        if std::mem::take(awaiting_first) {
            let timeout = self.config.read_timeout;
            let now = Instant::now();
            conn.stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| self.io_error(server, e, timeout))?;
            *deadline = Some((now + timeout, now));
        }
        Ok(())
    }

    /// Returns a connection whose replies were all read to the pool, its read timeout
    /// restored first when `restore` (it was shortened while reading). Bytes after the last
    /// awaited reply mean something on the connection is not what was asked for, and the
    /// replies just read do not stand ([`Error::Protocol`], the connection closed): in the
    /// classic protocol they may be someone else's; in meta each header was matched by its
    /// tag, but a value may have taken in bytes that were not its own (a segment a
    /// middlebox sent twice, mid-value, whose copy ended on a line end: 1,534 wrong values
    /// in 3 s of 16 threads under `Faults::duplicate_part` when meta replies stood).
    pub(crate) fn finish(&self, server: &Server, mut conn: Conn, restore: bool) -> Result<()> {
        if conn.wire == Wire::Meta && server.wire.load(Ordering::Relaxed) != WIRE_META {
            // Meta spoken (with Protocol::Meta) and answered: the server knows it.
            server.wire.store(WIRE_META, Ordering::Relaxed);
        }
        // With TLS, bytes may also wait decrypted in the TLS session.
        let decrypted = conn.stream.buffered();
        if !conn.rbuf.filled().is_empty() || decrypted > 0 {
            return Err(Error::Protocol {
                server: server.label.clone(),
                detail: format!(
                    "{} bytes followed the reply ({:?}...): the reply may hold another request's bytes, so the connection was closed",
                    conn.rbuf.filled().len() + decrypted,
                    String::from_utf8_lossy(conn.rbuf.filled().get(..40).unwrap_or(conn.rbuf.filled()))
                ),
            });
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
    pub(crate) fn mismatch(&self, server: &Server, m: Mismatch) -> Error {
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
    pub(crate) fn refusal(&self, label: &str, cmd: &Cmd<'_>, wire: Wire, status: Status) -> Error {
        refusal_error(label, cmd, wire, status, self.config.item_size_limit)
    }

    /// An error line to a meta command: a server that answers `ERROR` no longer knows meta
    /// (it was replaced by an older one): probe it again on the next connection.
    pub(crate) fn note_refusal(&self, server: &Server, wire: Wire, status: &Status) {
        if wire == Wire::Meta && *status == Status::Error && self.config.protocol == Protocol::Auto
        {
            server.wire.store(WIRE_UNKNOWN, Ordering::Relaxed);
        }
    }

    /// One keyed command on the server that holds its key: its outcome (an error line is an
    /// error). The connection returns to the pool only when the reply was the awaited one
    /// and arrived whole.
    pub(crate) fn run(&self, cmd: Cmd<'_>) -> Result<Outcome> {
        let index = self.server_for_key(cmd.key())?;
        let server = self.server(index)?;
        let ticket = self.cluster.check_up(index)?;
        let conn = match self.checkout(server) {
            Ok(conn) => conn,
            Err(Acquire::Busy(e)) => return Err(e),
            Err(Acquire::Failed(e)) => {
                let outcome = Err(e);
                self.cluster.report(index, ticket, &outcome);
                return outcome;
            }
        };
        let mut head = Head::default();
        let outcome = self.exchange(server, conn, &cmd, &mut head);
        let outcome = self.classify_close(index, head, outcome);
        self.cluster.report(index, ticket, &outcome);
        outcome
    }

    pub(crate) fn exchange(
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
        let outcome = crate::command::interpret(cmd, wire, reply, decoder.tag(), opaque)
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
    /// fresh connection and closes it on a command nobody knows: then it is
    /// [`Error::Unsupported`], and the server is not failing. A server that answers that
    /// command (memcached's `ERROR`) did not refuse this one by closing: the connection was
    /// cut, after the command may have run, and the error says so (it was `Unsupported`,
    /// "not supported", for a `flush_all` or an `incr` that had run: an outside audit). A
    /// meta command refused so makes an [`Protocol::Auto`] transport probe the server
    /// again.
    pub(crate) fn classify_close<T>(
        &self,
        index: usize,
        head: Head,
        outcome: Result<T>,
    ) -> Result<T> {
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
        let judge = |conn: &mut Conn| match self.version_reply(server, conn) {
            Ok(Some(Status::Version(_))) if self.closes_on_unknown_commands(server, conn) => {
                Closer::Refuses
            }
            // `version` (as long as a binary header) closed too: a binary-only memcached.
            Err(Closed) => Closer::BinaryOnly,
            _ => Closer::Neither,
        };
        let closer = match server.pool.checkout(self.config.connect_timeout) {
            Ok(Checkout::Idle(mut conn, _)) => judge(&mut conn),
            Ok(Checkout::Open(permit)) => match self.connect_stream(server) {
                Ok(stream) => judge(&mut self.new_conn(stream, Wire::Classic, permit)),
                Err(_) => Closer::Neither,
            },
            Err(_) => Closer::Neither,
        };
        match closer {
            Closer::Neither => return outcome,
            Closer::BinaryOnly => return Err(crate::errors::probe_closed(&server.label)),
            Closer::Refuses => {}
        }
        if head.is_meta() && self.config.protocol == Protocol::Auto {
            server.wire.store(WIRE_UNKNOWN, Ordering::Relaxed);
        }
        Err(Error::Unsupported {
            server: self.label(index),
            command: head.command(),
        })
    }
}

impl TextTransport {
    /// A batch whose connection was reset or closed before any reply, on a server at its
    /// connection limit (`-c`): memcached writes `ERROR Too many open connections` on a
    /// connection it accepts and closes it before reading, and a batch's large write meets
    /// the close before that line is read ("reset by peer": an outside review saw it for 6
    /// of 6 `store_many` calls with a protocol given, and the server marked down after). A
    /// new connection is then answered the same line: the batch fails with the server's
    /// error, which says that nothing ran, and the server is not counted as failing. Not
    /// when an idle connection is there (the limit refuses new connections only).
    pub(crate) fn refused_at_limit<T>(&self, index: usize, outcome: Result<T>) -> Result<T> {
        let cut = match &outcome {
            Err(e) if closed_without_reply(e) => true,
            Err(Error::Io { source, .. }) => matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        };
        if !cut {
            return outcome;
        }
        let Ok(server) = self.server(index) else {
            return outcome;
        };
        let mut conn = match server.pool.checkout(Duration::ZERO) {
            Ok(Checkout::Open(permit)) => match self.connect_stream(server) {
                Ok(stream) => self.new_conn(stream, Wire::Classic, permit),
                Err(_) => return outcome,
            },
            Ok(Checkout::Idle(conn, _)) => {
                server.pool.checkin(conn);
                return outcome;
            }
            Err(_) => return outcome,
        };
        match self.version_reply(server, &mut conn) {
            Ok(Some(Status::ServerError(message)))
                if message.starts_with(crate::proto::TOO_MANY_CONNECTIONS) =>
            {
                Err(Error::Server {
                    server: server.label.clone(),
                    message,
                })
            }
            _ => outcome,
        }
    }
}

/// Why a server closed a connection without replying ([`TextTransport::classify_close`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closer {
    /// It refuses the command (a proxy that closes on what it does not carry).
    Refuses,
    /// It takes only the binary protocol.
    BinaryOnly,
    /// Neither: the connection was cut.
    Neither,
}

/// The first word of a request (its command), kept without allocating in case the reply
/// needs explaining.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Head {
    bytes: [u8; 12],
    len: usize,
}

impl Head {
    pub(crate) fn of(request: &[u8]) -> Head {
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

    pub(crate) fn word(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    pub(crate) fn command(&self) -> String {
        String::from_utf8_lossy(self.word()).into_owned()
    }

    /// Commands a memcached-speaking proxy may not carry.
    pub(crate) fn may_be_unsupported(&self) -> bool {
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
    pub(crate) fn is_meta(&self) -> bool {
        matches!(self.word(), b"mg" | b"ms" | b"md" | b"ma" | b"mn" | b"me")
    }
}
