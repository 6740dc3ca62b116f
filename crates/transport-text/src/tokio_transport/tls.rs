//! TLS on the async transport's connections (features `tokio` and `tls`): rustls'
//! connection state over a tokio socket, driven by hand as the plain halves are.
//!
//! A connection's reading (its task or a direct caller) and its writing (the writer or a
//! direct caller) share one [`TlsStream`]: the rustls state behind a lock held only for
//! non-blocking steps, never across an `.await`. Reading takes the plaintext rustls holds
//! first, then what the socket has, record by record; writing hands plaintext to rustls
//! and sends the records as far as the socket takes them now. Records left unsent (a
//! request's tail when the socket was full, or what a record read asked rustls to
//! answer) are sent by the next write, or by whoever waits for a reply: a read that finds
//! no plaintext sends them first, and is woken when the socket takes more. So a request
//! whose last record is still in rustls is never waited on by its reader alone.
//!
//! The handshake is done when the connection opens, within its budget; a certificate that
//! does not verify is an error of kind `InvalidData` whose source is the
//! [`rustls::Error`], as with the blocking transport.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tokio::net::{TcpStream, UnixStream};

/// The socket under TLS.
#[derive(Debug)]
pub(super) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// One non-blocking read, when the runtime saw the socket readable (`WouldBlock` with
    /// no system call when not).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_read(buf),
            Socket::Unix(s) => s.try_read(buf),
        }
    }

    /// One non-blocking `recv`, whatever the runtime last saw of the socket.
    fn recv_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        let socket = match self {
            Socket::Tcp(s) => socket2::SockRef::from(s),
            Socket::Unix(s) => socket2::SockRef::from(s),
        };
        (&*socket).read(buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_write(buf),
            Socket::Unix(s) => s.try_write(buf),
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(s) => s.poll_read_ready(cx),
            Socket::Unix(s) => s.poll_read_ready(cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(s) => s.poll_write_ready(cx),
            Socket::Unix(s) => s.poll_write_ready(cx),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.readable().await,
            Socket::Unix(s) => s.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.writable().await,
            Socket::Unix(s) => s.writable().await,
        }
    }
}

/// `io::Read` by one of the socket's non-blocking reads, for rustls' `read_tls`.
struct Reads<'a, F: FnMut(&Socket, &mut [u8]) -> io::Result<usize>>(&'a Socket, F);

impl<F: FnMut(&Socket, &mut [u8]) -> io::Result<usize>> Read for Reads<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (self.1)(self.0, buf)
    }
}

/// `io::Write` by the socket's non-blocking writes, for rustls' `write_tls`.
struct Writes<'a>(&'a Socket);

impl Write for Writes<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS connection, shared by the connection's read half and write half.
#[derive(Debug)]
pub(super) struct TlsStream {
    socket: Socket,
    tls: Mutex<Tls>,
}

#[derive(Debug)]
struct Tls {
    conn: ClientConnection,
    /// The socket's end was read: no more records come.
    eof: bool,
    /// Where the requests are cut into records.
    cuts: crate::tls_cuts::Cuts,
}

/// The error of a TLS state left by a panic elsewhere (its records cannot be trusted).
fn poisoned() -> io::Error {
    io::Error::other("the TLS state was left inconsistent by a panic; the connection was closed")
}

impl TlsStream {
    /// The TLS handshake on a connected socket (the caller bounds its time): the
    /// connection once the handshake is done and the client's last message sent.
    pub(super) async fn handshake(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        socket: Socket,
    ) -> io::Result<Arc<TlsStream>> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let stream = TlsStream {
            socket,
            tls: Mutex::new(Tls {
                conn,
                eof: false,
                cuts: Default::default(),
            }),
        };
        let mut heard = crate::tls::Heard::default();
        loop {
            let (handshaking, sending) = {
                let tls = stream.lock()?;
                (tls.conn.is_handshaking(), tls.conn.wants_write())
            };
            if sending {
                if !stream.send(&mut *stream.lock()?)? {
                    stream.socket.writable().await?;
                }
                continue;
            }
            if !handshaking {
                return Ok(Arc::new(stream));
            }
            stream.socket.readable().await?;
            // The failure of what was read, once the lock is let go.
            let failed = {
                let mut tls = stream.lock()?;
                let mut reads = Reads(&stream.socket, Socket::try_read);
                match tls
                    .conn
                    .read_tls(&mut crate::tls::Hearing(&mut reads, &mut heard))
                {
                    Ok(0) => return Err(heard.closed()),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                }
                stream.process(&mut tls).err()
            };
            if let Some(e) = failed {
                stream.hear_the_rest(&mut heard).await;
                return Err(heard.failed(e));
            }
        }
    }

    /// Reads the rest of a plain-text line the handshake failed on, for `heard` to say
    /// what it was, within [`crate::tls::REST_OF_LINE`] (the blocking handshake's rule).
    async fn hear_the_rest(&self, heard: &mut crate::tls::Heard) {
        let rest = async {
            let mut buf = [0u8; crate::tls::HEARD];
            while heard.line_unfinished() {
                if self.socket.readable().await.is_err() {
                    return;
                }
                match self.socket.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => heard.note(buf.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(crate::tls::REST_OF_LINE, rest).await;
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Tls>> {
        self.tls.lock().map_err(|_| poisoned())
    }

    /// Decrypts the records read; on a record that does not verify, sends the alert
    /// saying why (as rustls' own `complete_io` does) and fails with rustls' error.
    fn process(&self, tls: &mut Tls) -> Result<(), rustls::Error> {
        if let Err(e) = tls.conn.process_new_packets() {
            let _ = self.send(tls);
            return Err(e);
        }
        Ok(())
    }

    /// Sends the records rustls holds, as far as the socket takes them now: whether
    /// none is left.
    fn send(&self, tls: &mut Tls) -> io::Result<bool> {
        while tls.conn.wants_write() {
            match tls.conn.write_tls(&mut Writes(&self.socket)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Plaintext into `buf`: what rustls holds decrypted, else what the socket's reads by
    /// `recv` bring, decrypted. 0 at the end of the stream (a close without TLS's
    /// `close_notify` too: memcached closes so, and it is the same close as a plain
    /// socket's); `WouldBlock` when nothing is there.
    fn read_by(
        &self,
        buf: &mut [u8],
        recv: fn(&Socket, &mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut tls = self.lock()?;
        loop {
            match tls.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if tls.eof {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(e),
            }
            match tls.conn.read_tls(&mut Reads(&self.socket, recv)) {
                Ok(0) => tls.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            self.process(&mut tls)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // What the records asked to answer goes now, as far as the socket takes it. A
            // socket that no longer takes anything (the server replied, then closed) does
            // not cost the plaintext just decrypted: it is returned first, and the error
            // comes with the next read or write.
            if let Err(e) = self.send(&mut tls) {
                return match tls.conn.reader().read(buf) {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(e),
                };
            }
        }
    }

    /// Reads into `buf` if the runtime has seen the socket readable, or from what rustls
    /// holds; `WouldBlock`, registering nothing, when neither has plaintext.
    pub(super) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_by(buf, Socket::try_read)
    }

    /// Reads into `buf` with a `recv` whatever the runtime last saw of the socket.
    pub(super) fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_by(buf, Socket::recv_now)
    }

    /// Reads into `buf`, or `Pending` with the context's waker registered for the
    /// socket's next readiness, and for its room to write while records wait to be sent
    /// (the tail of a request whose reply this reader awaits).
    pub(super) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            let mut sent = false;
            if self.lock()?.conn.wants_write() {
                if let Poll::Ready(ready) = self.socket.poll_write_ready(cx) {
                    ready?;
                    self.send(&mut *self.lock()?)?;
                    sent = true;
                }
            }
            match self.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if sent => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Hands as much of `buf` as rustls takes to it, once every record before is sent,
    /// one record's worth at a time (whole commands, or one large command alone:
    /// [`Cuts`](crate::tls_cuts::Cuts)),
    /// and sends what the socket takes now: the bytes taken, `WouldBlock` when none (the
    /// socket is full). Records left unsent go with the next write, or are sent by the
    /// reader of the reply ([`TlsStream::poll_read`]).
    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut tls = self.lock()?;
        if !self.send(&mut tls)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Tls { conn, cuts, .. } = &mut *tls;
        let taken = crate::tls_cuts::hand_over(conn, cuts, buf)?;
        if taken == 0 && !buf.is_empty() {
            // With every record sent rustls takes plaintext, unless the connection is closing
            // (a `close_notify` sent): an error, not a wait (the socket is writable, so a
            // caller waiting for room would spin).
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection takes no more data (closing)",
            ));
        }
        self.send(&mut tls)?;
        Ok(taken)
    }

    /// Sends every record rustls holds, waiting for room.
    pub(super) async fn flush(&self) -> io::Result<()> {
        while !self.send(&mut *self.lock()?)? {
            self.socket.writable().await?;
        }
        Ok(())
    }

    /// Waits until the socket may take more.
    pub(super) async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    /// [`TlsStream::try_write`], or `Pending` with the waker registered for room.
    pub(super) fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            if let Err(e) = std::task::ready!(self.socket.poll_write_ready(cx)) {
                return Poll::Ready(Err(e));
            }
        }
    }

    /// Sends every record rustls holds, or `Pending` with the waker registered for room.
    pub(super) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.send(&mut *self.lock()?)? {
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = std::task::ready!(self.socket.poll_write_ready(cx)) {
                return Poll::Ready(Err(e));
            }
        }
    }

    /// Sends TLS's `close_notify`, then the records left.
    pub(super) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock()?.conn.send_close_notify();
        self.poll_flush(cx)
    }
}
