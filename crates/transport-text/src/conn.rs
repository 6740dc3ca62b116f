//! One connection of the blocking transport and what it keeps: its socket, its read buffer
//! ([`ReadBuf`], shared with the async driver), the dialect it speaks and its next opaque
//! token; and the configured servers they belong to.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::time::Instant;

use newcache_transport::Error;

use crate::command::Wire;
use crate::pool::{Permit, Pool};
use crate::stream::Stream;

/// The read buffer's size when a connection opens, and the least a value still to come
/// must have left for it to be read straight into the value instead (see
/// `TextTransport::receive`).
pub(crate) const READ_BUF: usize = 16 * 1024;

/// The most the read buffer grows to. Replies are consumed from it as they are parsed and
/// large values bypass it, so it never has to hold a reply; it grows (doubling) only while
/// reads keep filling it, so a large multi-get of small values takes fewer, larger reads.
/// It stays at its size while its connection is pooled (growing it again on every large
/// reply would cost more than it saves).
pub(crate) const READ_BUF_MAX: usize = 256 * 1024;

/// A reply that needs more than one read may run past its deadline by at most this part of
/// the read timeout (1/16: 31 ms of the default 500 ms) before the socket's read timeout is
/// shortened again (see `TextTransport::receive`).
pub(crate) const DEADLINE_SLACK: u32 = 16;

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
    pub(crate) fn shrink(&mut self) {
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
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) rbuf: ReadBuf,
    pub(crate) wbuf: Vec<u8>,
    /// The dialect it speaks, fixed when it opened.
    pub(crate) wire: Wire,
    /// The opaque token of its next meta request.
    pub(crate) opaque: u32,
    /// When a batch over several servers wants its replies by: set for each round, so that
    /// the round's servers' read timeouts run at once, not one after another (three hung
    /// servers cost one read timeout, not three). `None` outside a batch.
    pub(crate) until: Option<Instant>,
    /// Its place in the server's count of open connections.
    pub(crate) _permit: Permit<Conn>,
}

impl Conn {
    pub(crate) fn new(
        stream: Stream,
        wire: Wire,
        mut permit: Permit<Conn>,
        first_opaque: u32,
    ) -> Conn {
        // When the connection goes, its place is freed once the server has closed its side.
        permit.attach(stream.socket().share());
        Conn {
            stream,
            rbuf: ReadBuf::new(),
            wbuf: Vec::with_capacity(1024),
            wire,
            opaque: first_opaque,
            until: None,
            _permit: permit,
        }
    }

    /// The next opaque token: never the same twice in a row of 2^32 requests.
    pub(crate) fn next_opaque(&mut self) -> u32 {
        let opaque = self.opaque;
        self.opaque = opaque.wrapping_add(1);
        opaque
    }

    /// Its permit, to open another connection in its place.
    pub(crate) fn into_permit(self) -> Permit<Conn> {
        self._permit
    }
}

/// What a server was found to speak ([`Server::wire`]).
pub(crate) const WIRE_UNKNOWN: u8 = 0;
pub(crate) const WIRE_META: u8 = 1;
pub(crate) const WIRE_CLASSIC: u8 = 2;

/// One configured server and its connections.
pub(crate) struct Server {
    pub(crate) label: String,
    /// Where it listens.
    pub(crate) endpoint: Endpoint,
    /// The name its TLS certificate must carry (with TLS).
    #[cfg(feature = "tls")]
    pub(crate) tls_name: Option<rustls::pki_types::ServerName<'static>>,
    pub(crate) pool: Pool<Conn>,
    /// With [`Protocol::Auto`](crate::Protocol::Auto): what the server's probe found (`WIRE_*`).
    pub(crate) wire: AtomicU8,
    /// Whether its last connect succeeded (false before the first): a batch opens
    /// connections side by side only where a connect may be slow (never tried, or failed
    /// last time), as a thread started per new connection cost a pool that opens
    /// connections all the time (one idle connection kept) 9-15% of its multi-gets (an
    /// outside audit).
    pub(crate) connected: AtomicBool,
    /// Its own `-I`, asked before a store it might refuse and unlink the old item for
    /// ([`Store::needs_server_limit`](newcache_transport::Store::needs_server_limit)).
    pub(crate) item_size_max: newcache_transport::ItemSizeMax,
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
pub(crate) enum Opened {
    Ready(Conn),
    Probing(Conn, u32),
}

/// What a checkout got from a server's pool: an idle connection, or a place for a new one.
pub(crate) enum Place {
    Idle(Conn),
    New(Permit<Conn>),
}

/// Why a connection could not be had.
pub(crate) enum Acquire {
    /// Every connection stayed busy (not a failure of the server).
    Busy(Error),
    /// Opening one failed.
    Failed(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

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
