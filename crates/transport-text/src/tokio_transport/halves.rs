//! A connection's socket halves, TCP or Unix, plain or TLS, as concrete types: the
//! connection's task and a direct caller poll them by hand (readiness, non-blocking
//! writes), which boxed `AsyncRead`/`AsyncWrite` objects would not let them do.

use std::io;
use std::pin::Pin;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{tcp, unix};

#[cfg(feature = "tls")]
use super::tls::TlsStream;

/// The read half of a connection.
#[derive(Debug)]
pub(super) enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    /// TLS, its state shared with the write half.
    #[cfg(feature = "tls")]
    Tls(Arc<TlsStream>),
}

/// The write half of a connection.
#[derive(Debug)]
pub(super) enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
    /// TLS, its state shared with the read half.
    #[cfg(feature = "tls")]
    Tls(Arc<TlsStream>),
}

impl ReadHalf {
    /// Reads into `buf`: the bytes read (0 at the end of the stream), or `Pending` with
    /// the context's waker registered for the socket's next readiness.
    pub(super) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        #[cfg(feature = "tls")]
        if let ReadHalf::Tls(t) = self {
            return t.poll_read(cx, buf);
        }
        let mut rb = tokio::io::ReadBuf::new(buf);
        match Pin::new(self).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads into `buf` if the runtime has seen the socket readable (one non-blocking
    /// `recv`); `WouldBlock` at once, with no system call and no waker registered, if not.
    pub(super) fn try_read_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(r) => r.try_read(buf),
            ReadHalf::Unix(r) => r.try_read(buf),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(t) => t.try_read(buf),
        }
    }

    /// Reads into `buf` with one non-blocking `recv`, whatever the runtime last saw of the
    /// socket's readiness (`WouldBlock` when it holds nothing).
    pub(super) fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        let socket = match self {
            ReadHalf::Tcp(r) => socket2::SockRef::from(r.as_ref()),
            ReadHalf::Unix(r) => socket2::SockRef::from(r.as_ref()),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(t) => return t.read_now(buf),
        };
        io::Read::read(&mut &*socket, buf)
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(t) => {
                let n = std::task::ready!(t.poll_read(cx, buf.initialize_unfilled()))?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl WriteHalf {
    /// Writes what the socket takes now, without waiting.
    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Tcp(w) => w.try_write(buf),
            WriteHalf::Unix(w) => w.try_write(buf),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(t) => t.try_write(buf),
        }
    }

    pub(super) async fn writable(&self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(w) => w.writable().await,
            WriteHalf::Unix(w) => w.writable().await,
            #[cfg(feature = "tls")]
            WriteHalf::Tls(t) => t.writable().await,
        }
    }

    /// Writes all of `buf` (with TLS, its last record sent too).
    pub(super) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = buf.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        #[cfg(feature = "tls")]
        if let WriteHalf::Tls(t) = self {
            t.flush().await?;
        }
        Ok(())
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Unix(w) => Pin::new(w).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(t) => t.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(t) => t.poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(t) => t.poll_shutdown(cx),
        }
    }
}
