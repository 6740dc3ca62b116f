//! What a connection reads and writes: a TCP or unix-domain socket, optionally under TLS
//! (feature `tls`).

use std::io::{self, IoSliceMut, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// A connected socket: TCP, or a unix-domain socket (memcached's `-s`). Shared, not
/// duplicated, by the connection and its pool permit ([`Socket::share`]): one file
/// descriptor per connection (`try_clone` gave each pooled connection two).
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(Arc<TcpStream>),
    Unix(Arc<UnixStream>),
}

impl Socket {
    /// A TCP connection.
    pub(crate) fn tcp(stream: TcpStream) -> Socket {
        Socket::Tcp(Arc::new(stream))
    }

    /// A unix-domain socket connection.
    pub(crate) fn unix(stream: UnixStream) -> Socket {
        Socket::Unix(Arc::new(stream))
    }

    /// A second handle on the same socket (the same file descriptor): closed when the last
    /// handle goes.
    pub(crate) fn share(&self) -> Socket {
        match self {
            Socket::Tcp(s) => Socket::Tcp(Arc::clone(s)),
            Socket::Unix(s) => Socket::Unix(Arc::clone(s)),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(how),
            Socket::Unix(s) => s.shutdown(how),
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nonblocking(on),
            Socket::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(timeout),
            Socket::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_write_timeout(timeout),
            Socket::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// True when bytes wait to be read, or the socket was closed (or cannot be asked).
    /// Three system calls (non-blocking on, peek, off).
    fn has_bytes_waiting(&self) -> bool {
        if self.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let peeked = match self {
            Socket::Tcp(s) => s.peek(&mut byte),
            // UnixStream::peek is not stable: a plain read, as the byte read means the
            // connection is not reused anyway.
            Socket::Unix(s) => {
                let mut s: &UnixStream = s;
                s.read(&mut byte)
            }
        };
        let waiting = !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        self.set_nonblocking(false).is_err() || waiting
    }
}

// Through `&TcpStream` / `&UnixStream`, which read and write as the owned streams do.
impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&**s).read(buf),
            Socket::Unix(s) => (&**s).read(buf),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&**s).read_vectored(bufs),
            Socket::Unix(s) => (&**s).read_vectored(bufs),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&**s).write(buf),
            Socket::Unix(s) => (&**s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&**s).write_vectored(bufs),
            Socket::Unix(s) => (&**s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's byte stream: a socket, or TLS over one.
pub(crate) enum Stream {
    Plain(Socket),
    #[cfg(feature = "tls")]
    /// TLS, and where its records are cut ([`Cuts`](crate::tls_cuts::Cuts)).
    Tls(
        Box<rustls::StreamOwned<rustls::ClientConnection, Socket>>,
        crate::tls_cuts::Cuts,
    ),
}

impl Stream {
    /// The socket under the stream.
    pub(crate) fn socket(&self) -> &Socket {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s, _) => s.get_ref(),
        }
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }

    /// True under TLS.
    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(..) => true,
        }
    }

    /// True when bytes wait to be read on an idle connection (on the socket, or decrypted
    /// and not yet read), or it was closed (or cannot be asked): such a connection is not
    /// reused.
    pub(crate) fn has_bytes_waiting(&mut self) -> bool {
        match self {
            Stream::Plain(s) => s.has_bytes_waiting(),
            #[cfg(feature = "tls")]
            Stream::Tls(s, _) => {
                s.get_ref().has_bytes_waiting()
                    || s.conn
                        .process_new_packets()
                        .map_or(true, |state| state.plaintext_bytes_to_read() > 0)
            }
        }
    }

    /// The plaintext bytes a TLS connection has decrypted and not handed out yet (none on a
    /// plain socket): bytes after a reply that the read buffer cannot see.
    pub(crate) fn buffered(&mut self) -> usize {
        match self {
            Stream::Plain(_) => 0,
            #[cfg(feature = "tls")]
            Stream::Tls(s, _) => s
                .conn
                .process_new_packets()
                .map_or(0, |state| state.plaintext_bytes_to_read()),
        }
    }
}

/// Under TLS, a read or a write makes one socket call at the most, as on a plain socket,
/// and says `Interrupted` when it moved bytes but has no more to hand over yet: the caller
/// looks at its deadline before the next (`TextTransport::receive` and `send`). rustls'
/// own stream reads until a whole record has come (up to 16 KB) and writes until all is
/// sent, each socket call with the socket's whole timeout: a server sending a byte every
/// 20 ms held a `get` with a 300 ms read timeout for 7.8 s, and a 20 KB value for 34 s
/// (an outside audit).
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s, _) => tls_read(s, buf),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_vectored(bufs),
            #[cfg(feature = "tls")]
            Stream::Tls(s, _) => match bufs.iter_mut().find(|b| !b.is_empty()) {
                Some(buf) => tls_read(s, buf),
                None => Ok(0),
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s, cuts) => {
                // What TLS holds goes out first, one socket write at a time.
                tls_write_some(s)?;
                Ok(crate::tls_cuts::hand_over(&mut s.conn, cuts, buf)?)
            }
        }
    }

    /// Sends what TLS still holds, one socket write per call (`Interrupted` while more is
    /// left); a no-op on a plain socket.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s, _) => tls_write_some(s),
        }
    }
}

/// One socket read's worth of a TLS stream: the plaintext decrypted (what was already
/// there, else after one read of the socket), `Interrupted` when the read brought bytes but
/// no whole record yet.
#[cfg(feature = "tls")]
fn tls_read(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, Socket>,
    buf: &mut [u8],
) -> io::Result<usize> {
    let rustls::StreamOwned { conn, sock } = s;
    if conn.wants_write() {
        // An alert or a key update to answer first.
        let _ = conn.write_tls(sock)?;
    }
    if conn.wants_read() {
        let n = conn.read_tls(sock)?;
        if let Err(e) = conn.process_new_packets() {
            // The alert saying why, as rustls' own stream sends it.
            let _ = conn.write_tls(sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if n > 0 && conn.wants_read() {
            return Err(io::ErrorKind::Interrupted.into());
        }
    }
    conn.reader().read(buf)
}

/// One socket write of what TLS holds, if it holds anything; `Interrupted` when some is
/// still left.
#[cfg(feature = "tls")]
fn tls_write_some(s: &mut rustls::StreamOwned<rustls::ClientConnection, Socket>) -> io::Result<()> {
    let rustls::StreamOwned { conn, sock } = s;
    if !conn.wants_write() {
        return Ok(());
    }
    if conn.write_tls(sock)? == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    if conn.wants_write() {
        return Err(io::ErrorKind::Interrupted.into());
    }
    Ok(())
}
