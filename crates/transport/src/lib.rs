//! The contract between newcache and a memcached backend.
//!
//! A [`Transport`] moves items (value bytes, 32-bit flags, CAS) between the process and a
//! cluster of memcached servers. It knows nothing of what keys mean, of herds or of codecs:
//! the `newcache` facade runs the key function and the herd policy before anything reaches a
//! transport. Every backend (the Rust text protocol, libmemcached, the in-memory one) implements
//! this one trait, and one conformance suite runs unchanged against all of them.
//!
//! Keys given to a transport are wire keys. Every transport checks them with
//! [`validate_key`] before sending anything, so a key that would break the protocol never
//! reaches a server.
//!
//! # Example
//!
//! The in-memory backend (feature `memory`) honours TTLs, flags and CAS like a server:
//!
//! ```
//! # #[cfg(feature = "memory")] {
//! use newcache_transport::{MemoryTransport, Store, StoreStatus, Transport};
//!
//! let t = MemoryTransport::new();
//! let status = t.store(&Store::set(b"greeting", b"hello", 16, 0)).unwrap();
//! assert_eq!(status, StoreStatus::Stored);
//! let item = t.get(b"greeting").unwrap().expect("just stored");
//! assert_eq!((item.value.as_slice(), item.flags), (&b"hello"[..], 16));
//! assert_eq!(t.incr(b"missing", 1).unwrap(), None);
//! # }
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

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::Duration;

mod asynchronous;
pub use asynchronous::{AsyncTransport, BoxFuture};

mod failures;
pub use failures::{FailureTicket, FailureTickets};

mod many_read;
pub use many_read::ManyRead;

mod many_store;
pub use many_store::{ManyDelete, ManyStore};

mod made;
pub use made::{
    get_many_made_at_once, get_many_made_with, get_many_of_made, made_key, make_all, Found,
    MadeKeys, Premade, KEYS_ON_STACK,
};

#[cfg(feature = "memory")]
mod memory;
mod reaper;
mod server_limit;
mod short_key;
#[cfg(feature = "memory")]
pub use memory::MemoryTransport;
pub use reaper::IdleReaper;
pub use server_limit::ItemSizeMax;
pub use short_key::{ShortKey, SHORT_KEY_INLINE};

/// The longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// Exptimes above this many seconds (30 days) are read by memcached as absolute Unix times.
pub const MAX_RELATIVE_EXPTIME: u32 = 60 * 60 * 24 * 30;

/// memcached's default item size limit (`-I 1m`), used when a backend is not told otherwise.
pub const DEFAULT_ITEM_SIZE_LIMIT: usize = 1024 * 1024;

/// The bytes memcached adds to a value to make its item, besides the key: the item header
/// (48), the CAS unique (8), the key's terminating NUL (1) and the value's `\r\n` (2); a
/// nonzero flags word takes 4 more. memcached refuses an item larger than its `-I`, so the
/// largest value it stores is `-I` less these, less the key ([`Store::value_limit`]).
///
/// Measured on memcached 1.6.18 at `-I` 512k, 1m, 2m and 4m, keys of 1 to 250 bytes, flags 0
/// and nonzero: the largest value stored was always `-I - 59 - key length` (4 fewer with
/// flags). A server started with `-C` (no CAS) takes 8 bytes more, which a client cannot
/// see; such values are refused here, on the safe side.
pub const ITEM_OVERHEAD: usize = 59;

/// The smallest `-I` memcached starts with (its `ITEM_SIZE_MAX_LOWER_LIMIT`, 1 KiB): a value
/// within [`Store::value_limit`] of it fits every server ([`Store::needs_server_limit`]).
pub const ITEM_SIZE_MAX_LOWER_LIMIT: usize = 1024;

/// Result type of every transport operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One item as stored on a server.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    /// The value bytes, exactly as stored.
    pub value: Vec<u8>,
    /// The item's 32-bit client flags.
    pub flags: u32,
    /// The item's CAS unique, when the backend fetched it.
    pub cas: Option<u64>,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Item")
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("flags", &self.flags)
            .field("cas", &self.cas)
            .finish()
    }
}

/// How a store command treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if the key holds no item.
    Add,
    /// Store only if the key holds an item.
    Replace,
    /// Append the bytes to an existing item's value (flags and exptime are ignored).
    Append,
    /// Prepend the bytes to an existing item's value (flags and exptime are ignored).
    Prepend,
    /// Store only if the item's CAS unique still equals this one.
    Cas(u64),
}

impl StoreMode {
    /// The text-protocol command name of this mode.
    pub fn command(self) -> &'static str {
        match self {
            StoreMode::Set => "set",
            StoreMode::Add => "add",
            StoreMode::Replace => "replace",
            StoreMode::Append => "append",
            StoreMode::Prepend => "prepend",
            StoreMode::Cas(_) => "cas",
        }
    }
}

/// What a server answered to a store command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreStatus {
    /// The item was stored.
    Stored,
    /// The condition of `add`, `replace`, `append` or `prepend` did not hold.
    NotStored,
    /// `cas`: the item was changed by someone else since its CAS unique was read.
    Exists,
    /// `cas`: the item does not exist (any more).
    NotFound,
}

impl StoreStatus {
    /// True when the item was stored.
    pub fn is_stored(self) -> bool {
        self == StoreStatus::Stored
    }
}

/// One store request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store<'a> {
    /// What to do with an existing item.
    pub mode: StoreMode,
    /// The wire key.
    pub key: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
    /// The item's client flags.
    pub flags: u32,
    /// memcached's exptime: 0 never expires, up to [`MAX_RELATIVE_EXPTIME`] is seconds from
    /// now, anything larger is an absolute Unix time.
    pub exptime: u32,
}

impl<'a> Store<'a> {
    /// A `set` request.
    pub fn set(key: &'a [u8], value: &'a [u8], flags: u32, exptime: u32) -> Self {
        Store {
            mode: StoreMode::Set,
            key,
            value,
            flags,
            exptime,
        }
    }

    /// The same request with another mode.
    pub fn with_mode(self, mode: StoreMode) -> Self {
        Store { mode, ..self }
    }

    /// The largest value memcached started with `-I item_size_limit` stores under this
    /// request's key and flags: the limit less [`ITEM_OVERHEAD`], the key and, for nonzero
    /// flags, 4 bytes.
    ///
    /// ```
    /// use newcache_transport::Store;
    /// let limit = 1024 * 1024;
    /// assert_eq!(Store::set(b"k", b"", 0, 0).value_limit(limit), 1_048_516);
    /// assert_eq!(Store::set(b"k", b"", 16, 0).value_limit(limit), 1_048_512);
    /// ```
    pub fn value_limit(&self, item_size_limit: usize) -> usize {
        let flags = if self.flags == 0 { 0 } else { 4 };
        item_size_limit.saturating_sub(ITEM_OVERHEAD + self.key.len() + flags)
    }

    /// True when memcached started with `-I item_size_limit` would refuse this value as too
    /// large ([`Store::value_limit`]).
    pub fn is_too_large(&self, item_size_limit: usize) -> bool {
        self.value.len() > self.value_limit(item_size_limit)
    }

    /// True when this request is not a `set` and its value is large enough for some server
    /// to refuse it (over [`Store::value_limit`] of [`ITEM_SIZE_MAX_LOWER_LIMIT`]): then a
    /// meta-protocol transport checks it against that server's own `-I` before sending it
    /// ([`ItemSizeMax`]). memcached 1.6 unlinks the old item of any `ms` it cannot allocate
    /// (too large, or out of memory under `-M`), whatever its mode, so a refused `add`,
    /// `replace`, `cas`, `append` or `prepend` would delete the value it did not replace
    /// (the classic commands unlink only for `set`, which is what a refused `set` should do).
    pub fn needs_server_limit(&self) -> bool {
        self.mode != StoreMode::Set && self.is_too_large(ITEM_SIZE_MAX_LOWER_LIMIT)
    }

    /// [`Error::ValueTooLarge`], naming the value's size and [`Store::value_limit`], when
    /// [`Store::is_too_large`].
    pub fn check_size(&self, item_size_limit: usize) -> Result<()> {
        if self.is_too_large(item_size_limit) {
            return Err(Error::ValueTooLarge {
                size: self.value.len(),
                limit: self.value_limit(item_size_limit),
            });
        }
        Ok(())
    }

    /// The [`Error::ValueTooLarge`] for this value when the server refused it as too large
    /// ([`Error::refused_by_server`], with [`Store::value_limit`] of `item_size_limit`).
    pub fn refused_by_server(&self, item_size_limit: usize) -> Error {
        Error::refused_by_server(self.value.len(), self.value_limit(item_size_limit))
    }

    /// [`Store::refused_by_server`], naming the server's own limit for this key when its
    /// `item_size_max` (memcached's `-I`, from `stats settings`) is known and puts the
    /// value over it.
    ///
    /// ```
    /// use newcache_transport::{Error, Store};
    /// let big = vec![0u8; 700_000];
    /// let refused = Store::set(b"k", &big, 0, 0).refused_by_server_at(Some(512 * 1024), 1 << 20);
    /// assert!(matches!(refused, Error::ValueTooLarge { size: 700_000, limit: 524_228 }));
    /// ```
    pub fn refused_by_server_at(
        &self,
        item_size_max: Option<usize>,
        item_size_limit: usize,
    ) -> Error {
        match item_size_max.map(|max| self.value_limit(max)) {
            Some(limit) if limit < self.value.len() => Error::ValueTooLarge {
                size: self.value.len(),
                limit,
            },
            _ => self.refused_by_server(item_size_limit),
        }
    }
}

/// An item read with memcached 1.6's meta protocol, with what the server said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaItem {
    /// The item.
    pub item: Item,
    /// `W`: this reader won the right to recompute the value (exactly one reader gets it).
    pub win: bool,
    /// `X`: the item was marked stale (by an invalidation).
    pub stale: bool,
    /// `Z`: another reader already holds the win; this one is served the current value.
    pub win_taken: bool,
}

/// Statistics of one server, as its `stats` command reports them.
///
/// A server that could not be asked (down, hung past the read timeout, marked down by
/// failover) is listed with its [`failure`](ServerStats::failure) and no statistics, so one
/// server's outage does not hide the others' figures; [`Transport::stats`] fails only when
/// every server failed.
#[derive(Debug)]
pub struct ServerStats {
    /// The server, as configured (`host:port`).
    pub server: String,
    /// Every statistic the server reported, by name; empty when it failed.
    pub stats: BTreeMap<String, String>,
    /// Why the server's statistics could not be read (an [`Error::is_server_failure`]);
    /// `None` when it answered.
    pub failure: Option<Error>,
}

impl ServerStats {
    /// The `item_size_max` of a server's `stats settings` (memcached's `-I`, bytes).
    pub fn item_size_max(&self) -> Option<usize> {
        self.stats.get("item_size_max")?.trim().parse().ok()
    }

    /// The statistics a server answered with.
    pub fn answered(server: String, stats: BTreeMap<String, String>) -> Self {
        ServerStats {
            server,
            stats,
            failure: None,
        }
    }

    /// A server whose statistics could not be read, and why.
    pub fn failed(server: String, failure: Error) -> Self {
        ServerStats {
            server,
            stats: BTreeMap::new(),
            failure: Some(failure),
        }
    }

    /// Each server's statistics, in the order given, or the first failure when every
    /// server failed (a cluster with no server answering has no statistics to show).
    pub fn all_or_first_failure(mut servers: Vec<ServerStats>) -> Result<Vec<ServerStats>> {
        if servers.iter().all(|s| s.failure.is_some()) {
            if let Some(e) = servers.iter_mut().find_map(|s| s.failure.take()) {
                return Err(e);
            }
        }
        Ok(servers)
    }
}

/// Why a wire key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// memcached has no empty keys.
    #[error("the key is empty")]
    Empty,
    /// memcached keys are at most 250 bytes.
    #[error("the key is {len} bytes long; memcached allows at most {MAX_KEY_LEN}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A space or control character would end the key early on the wire.
    #[error("the key has byte {byte:#04x} at offset {offset}; spaces and control characters are not allowed")]
    ForbiddenByte {
        /// The offending byte.
        byte: u8,
        /// Its position in the key.
        offset: usize,
    },
}

/// A key in an error message: quoted as `{:?}` shows it, and past 100 characters its first
/// 100 and its length (a 10,000-byte key is not printed whole, twice).
///
/// ```
/// use newcache_transport::Abridged;
///
/// assert_eq!(Abridged("two words").to_string(), "\"two words\"");
/// let long = "k".repeat(300);
/// assert_eq!(
///     Abridged(&long).to_string(),
///     format!("\"{}\"... (300 bytes)", "k".repeat(100))
/// );
/// ```
pub struct Abridged<'a>(pub &'a str);

impl fmt::Display for Abridged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 100;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((end, _)) => {
                let head = self.0.get(..end).unwrap_or_default();
                write!(f, "{head:?}... ({} bytes)", self.0.len())
            }
        }
    }
}

/// Checks that `key` can go on the wire: 1 to 250 bytes, no space, no control character
/// (bytes 0x00-0x20 and 0x7f). Bytes of 0x80 and above (UTF-8) are allowed, as memcached does.
#[inline]
pub fn validate_key(key: &[u8]) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: key.len() });
    }
    // Keys are checked on every request and nearly all of them are fine: eight bytes at a
    // time first, then byte by byte only to name the one that is not.
    if !has_forbidden_byte(key) {
        return Ok(());
    }
    let forbidden = |b: u8| b <= b' ' || b == 0x7f;
    match key.iter().enumerate().find(|&(_, &b)| forbidden(b)) {
        Some((offset, &byte)) => Err(KeyError::ForbiddenByte { byte, offset }),
        None => Ok(()),
    }
}

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// The high bit of every byte of a word.
const HIGHS: u64 = ONES * 0x80;

/// Whether any byte of `word` is a space, a control character (`0x00`-`0x20`) or `0x7f`.
/// The borrow trick for "some byte below n" (exact as a whole for n <= 0x80, and bytes with
/// the high bit set never count): `0x21` for the spaces and controls, and a zero byte of
/// `word ^ 0x7f..` for DEL.
#[inline]
fn word_has_forbidden_byte(word: u64) -> bool {
    let below_bang = word.wrapping_sub(ONES * 0x21) & !word & HIGHS;
    let del = word ^ (ONES * 0x7f);
    let is_del = del.wrapping_sub(ONES) & !del & HIGHS;
    (below_bang | is_del) != 0
}

/// Whether `key` has any byte [`validate_key`] refuses, eight bytes at a time: a key of 8 to
/// 16 bytes as its first and last eight (overlapping), a longer one as whole words and its
/// last eight; a key under eight bytes padded with an allowed byte.
fn has_forbidden_byte(key: &[u8]) -> bool {
    let word = |w: &[u8; 8]| word_has_forbidden_byte(u64::from_ne_bytes(*w));
    match (key.first_chunk::<8>(), key.last_chunk::<8>()) {
        (Some(first), Some(last)) if key.len() <= 16 => word(first) | word(last),
        // Every chunk is eight bytes (`chunks_exact`); one that was not would count as
        // forbidden, and the byte-by-byte pass would decide.
        (Some(_), Some(last)) => key.chunks_exact(8).fold(word(last), |seen, chunk| {
            seen | chunk.try_into().map_or(true, word)
        }),
        _ => {
            let mut padded = [b'a'; 8];
            for (slot, &b) in padded.iter_mut().zip(key) {
                *slot = b;
            }
            word(&padded)
        }
    }
}

/// Runs `store` on each request in turn with [`Transport::store_many`]'s rules for refusals:
/// a value over the item size limit ([`Error::ValueTooLarge`]) does not stop the others, and
/// once all have run the first refusal is the answer; any other error stops the batch. For
/// transports that store one request at a time.
pub fn store_each<'a>(
    requests: &[Store<'a>],
    mut store: impl FnMut(&Store<'a>) -> Result<StoreStatus>,
) -> Result<Vec<StoreStatus>> {
    let mut batch = StoreBatch::with_capacity(requests.len());
    for r in requests {
        batch.push(store(r))?;
    }
    batch.finish()
}

/// The outcomes of a batch of stores sent one at a time, under [`Transport::store_many`]'s
/// rules for refusals (what [`store_each`] runs; async transports feed it by hand).
#[derive(Debug, Default)]
pub struct StoreBatch {
    statuses: Vec<StoreStatus>,
    refused: Option<Error>,
}

impl StoreBatch {
    /// A batch expecting `n` outcomes.
    pub fn with_capacity(n: usize) -> Self {
        StoreBatch {
            statuses: Vec::with_capacity(n),
            refused: None,
        }
    }

    /// Records one store's outcome: a refusal as too large is kept for the end and the batch
    /// goes on; any other error is returned, and the batch should stop with it.
    pub fn push(&mut self, outcome: Result<StoreStatus>) -> Result<()> {
        match outcome {
            Ok(status) => self.statuses.push(status),
            Err(e @ Error::ValueTooLarge { .. }) => {
                self.refused.get_or_insert(e);
                self.statuses.push(StoreStatus::NotStored);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The statuses, or the first refusal.
    pub fn finish(self) -> Result<Vec<StoreStatus>> {
        match self.refused {
            Some(e) => Err(e),
            None => Ok(self.statuses),
        }
    }
}

/// The last exptime memcached keeps (as an absolute Unix time: 2038-01-19 03:14:07 UTC).
pub const MAX_EXPTIME: u32 = i32::MAX as u32;

/// Refuses an exptime past [`MAX_EXPTIME`] with [`Error::ExptimeTooLate`].
pub fn check_exptime(exptime: u32) -> Result<()> {
    if exptime > MAX_EXPTIME {
        return Err(Error::ExptimeTooLate { exptime });
    }
    Ok(())
}

/// Like [`validate_key`], but gives the transport [`Error`] that names the key.
#[inline]
pub fn check_key(key: &[u8]) -> Result<()> {
    validate_key(key).map_err(|reason| Error::InvalidKey {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    })
}

/// How a [`Error::ServerDown`] message says when the server is tried again.
fn retry_text(retry_in: Duration) -> String {
    if retry_in == Duration::MAX {
        "it is not retried (ejected for good: dead_timeout is 0; a new client uses it again)"
            .to_string()
    } else {
        format!("it is retried in {retry_in:?}")
    }
}

/// Everything a transport can fail with. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An exptime past what memcached keeps: as an absolute time, later than 2038-01-19
    /// 03:14:07 UTC ([`MAX_EXPTIME`]). Its text and meta protocols read such a number as
    /// negative and drop the item at once, with the store reported as a success, so it is
    /// refused and nothing is sent.
    #[error("exptime {exptime} is past 2038-01-19 03:14:07 UTC ({MAX_EXPTIME}), the last expiry memcached keeps (it reads a larger one as negative and drops the item at once); nothing was sent: use a shorter TTL, or 0 for no expiry")]
    ExptimeTooLate {
        /// The exptime asked for.
        exptime: u32,
    },
    /// The wire key would break the protocol; nothing was sent.
    #[error("invalid key {}: {reason}", Abridged(.key))]
    InvalidKey {
        /// The key, lossily decoded as UTF-8.
        key: String,
        /// What is wrong with it.
        reason: KeyError,
    },
    /// The value is larger than the server accepts, and was not stored.
    ///
    /// A `set` ([`StoreMode::Set`]) of such a value also removes the key's old item, as
    /// memcached does when it refuses a `set` as too large, so readers never keep getting the
    /// value the caller tried to replace: a transport that refuses the value itself sends one
    /// delete of the key instead of the `set`, and a server that refuses it has already
    /// unlinked the old item. `add`, `replace`, `cas`, `append` and `prepend` over the limit
    /// send nothing and leave the existing item alone. When the transport refuses the value
    /// itself, `limit` is the largest value memcached at the configured item size limit
    /// (`-I`) stores under this key and flags ([`Store::value_limit`]: measured exact on
    /// memcached 1.6); when the server refuses a value the transport let through (its `-I`
    /// is lower than configured), the transport asks it for its `item_size_max` (`stats
    /// settings`) and `limit` is the same computation at the server's own `-I`
    /// ([`Store::refused_by_server_at`]); only when the server does not say is it the
    /// configured one or, when the value is not over that, one byte below the size (see
    /// [`Error::refused_by_server`]): in every case the limit is at most `limit`, which is
    /// what the message says.
    #[error("value of {size} bytes as stored (compressed, when compress_threshold compressed it) is over the item size limit: at most {limit} bytes fit under this key (item_size_limit, memcached's -I, less the key and the item header; fewer if the server's own -I is lower); store less, turn compression on if it is off (compress_threshold; a value over inflate_limit is stored as it is, so that it can be read back), or raise memcached's -I and item_size_limit")]
    ValueTooLarge {
        /// The value's size in bytes, as it was to be stored (after compression, when the
        /// cache compressed it).
        size: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// The transport has no server to talk to.
    #[error("no memcached server is configured; give at least one host:port")]
    NoServers,
    /// A configured server entry that names no server (nothing was sent).
    #[error("server {entry:?} is not a server: {detail}; give host, host:port, host:port:weight, [v6addr]:port, or a unix-domain socket's absolute path (/path or unix:/path)")]
    BadServer {
        /// The entry as configured.
        entry: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A connection could not be opened.
    #[error("cannot connect to memcached at {server}: {source}; is it running and reachable?")]
    Connect {
        /// The server, as configured.
        server: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server did not answer (or accept a request) in time: a request sent may have
    /// run. The blocking transports drop the connection; the async one keeps it while the
    /// reply may still come whole (up to twice the read timeout), reading it to nobody.
    #[error("memcached at {server} did not answer within {after:?}, so a request sent may or may not have run; it may be overloaded or hung (raise the read/write timeout if this is expected)")]
    Timeout {
        /// The server, as configured.
        server: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// Reading or writing failed: a request sent may have run. The connection was dropped.
    #[error("I/O error talking to memcached at {server}: {source} (a request sent may or may not have run)")]
    Io {
        /// The server, as configured.
        server: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server's reply could not be parsed, or did not answer the request it came for
    /// (another key, another token, bytes nobody asked for). The connection was dropped,
    /// and every request in flight on it failed so: each may or may not have run, and as
    /// memcached still reads what reached it before the close, a write that failed so may
    /// land after a later one that succeeded on a new connection (`cas` orders writes that
    /// must not cross).
    #[error("bad reply from memcached at {server}: {detail}; the connection was closed, so a request sent on it may or may not have run, and may still run after later ones (is it really memcached, or a proxy that speaks its protocol, and is nothing between them changing the bytes?)")]
    Protocol {
        /// The server, as configured.
        server: String,
        /// What was wrong with the reply.
        detail: String,
    },
    /// The server reported an error of its own (`SERVER_ERROR`).
    #[error("memcached at {server} reported SERVER_ERROR {message}")]
    Server {
        /// The server, as configured.
        server: String,
        /// The server's message.
        message: String,
    },
    /// The server refused the request (`CLIENT_ERROR`), e.g. incr on a non-numeric value.
    #[error("memcached at {server} refused the request: CLIENT_ERROR {message}")]
    Client {
        /// The server, as configured.
        server: String,
        /// The server's message.
        message: String,
    },
    /// The server (or proxy) does not know the command.
    #[error(
        "{server} does not support {command}; it may be an old memcached or a proxy that lacks it"
    )]
    Unsupported {
        /// The server, as configured.
        server: String,
        /// The command it refused.
        command: String,
    },
    /// The server failed recently and is left alone until its retry time: the request failed
    /// at once, without connecting (libmemcached's `retry_timeout` / `dead_timeout`).
    #[error("memcached at {server} is marked down after failing; {} (this request failed fast without connecting)", retry_text(*.retry_in))]
    ServerDown {
        /// The server, as configured (or `every server` when none is left to take the key).
        server: String,
        /// How long until the server is tried again; [`Duration::MAX`] when it never is
        /// (ejected with `remove_failed` and `dead_timeout` 0, as libmemcached does: build a
        /// new client to use it again).
        retry_in: Duration,
    },
    /// SASL authentication failed.
    #[error("authentication with memcached at {server} failed: {message}; check the username and password")]
    Auth {
        /// The server, as configured.
        server: String,
        /// The backend's message.
        message: String,
    },
    /// An async transport was called outside a tokio runtime: nothing was sent.
    #[error("an async memcached call ran outside a tokio runtime; nothing was sent: await it inside one, built with its I/O and time drivers on (tokio's Builder::enable_all, or #[tokio::main])")]
    NoRuntime,
    /// An error reported by a backend library (libmemcached), with its own code and message.
    #[error("{backend} error {code}: {message}")]
    Backend {
        /// The backend library.
        backend: &'static str,
        /// The library's own return code.
        code: i32,
        /// The library's own message.
        message: String,
    },
}

impl Error {
    /// The [`Error::ValueTooLarge`] for a value of `size` bytes that the server refused as too
    /// large, when the server's own limit is not known (it did not answer `stats settings`;
    /// [`Store::refused_by_server_at`] names it when it did): `limit` is
    /// `configured_limit` (the largest value the transport lets through for this key,
    /// [`Store::value_limit`]) when the value is over it, else one byte below the size: all
    /// that is known then is that the server's limit is below the size.
    ///
    /// ```
    /// use newcache_transport::Error;
    /// let err = Error::refused_by_server(1_048_576, 1_048_576);
    /// assert!(matches!(err, Error::ValueTooLarge { size: 1_048_576, limit: 1_048_575 }));
    /// ```
    pub fn refused_by_server(size: usize, configured_limit: usize) -> Error {
        Error::ValueTooLarge {
            size,
            limit: configured_limit.min(size.saturating_sub(1)),
        }
    }

    /// True when the server could not be reached or was skipped as down: a connect failure,
    /// a timeout, an I/O error or [`Error::ServerDown`]. A cluster client treats such a
    /// server's keys as misses on reads.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Io { .. }
                | Error::ServerDown { .. }
        )
    }

    /// A short, stable name of the error's kind, for metrics and logs (`connect`,
    /// `timeout`, `io`, `protocol`, `server`, `client`, `unsupported`, `server_down`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ExptimeTooLate { .. } => "exptime_too_late",
            Error::InvalidKey { .. } => "invalid_key",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::NoServers => "no_servers",
            Error::BadServer { .. } => "bad_server",
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Io { .. } => "io",
            Error::Protocol { .. } => "protocol",
            Error::Server { .. } => "server",
            Error::Client { .. } => "client",
            Error::Unsupported { .. } => "unsupported",
            Error::ServerDown { .. } => "server_down",
            Error::Auth { .. } => "auth",
            Error::Backend { .. } => "backend",
            Error::NoRuntime => "no_runtime",
        }
    }

    /// The server the error came from, when it names one.
    pub fn server(&self) -> Option<&str> {
        match self {
            Error::Connect { server, .. }
            | Error::Timeout { server, .. }
            | Error::Io { server, .. }
            | Error::Protocol { server, .. }
            | Error::Server { server, .. }
            | Error::Client { server, .. }
            | Error::Unsupported { server, .. }
            | Error::ServerDown { server, .. }
            | Error::Auth { server, .. } => Some(server),
            Error::ExptimeTooLate { .. }
            | Error::InvalidKey { .. }
            | Error::ValueTooLarge { .. }
            | Error::NoServers
            | Error::BadServer { .. }
            | Error::NoRuntime
            | Error::Backend { .. } => None,
        }
    }

    /// True for errors after which the connection must not be reused (and was dropped):
    /// I/O errors, timeouts and unparsable replies.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Io { .. }
                | Error::Protocol { .. }
        )
    }
}

/// A memcached backend: moves items between this process and a cluster of servers.
///
/// Implementations place keys on servers themselves, are `Send + Sync`, and are shared by
/// many threads at once. A connection that saw an I/O error, a timeout or an unparsable reply
/// is dropped, never reused half-read.
pub trait Transport: Send + Sync + fmt::Debug {
    /// A short name of the backend, such as `text` or `memory`.
    fn name(&self) -> &'static str;

    /// Fetches one item, or `None` on a miss.
    fn get(&self, key: &[u8]) -> Result<Option<Item>>;

    /// Fetches many items; the result has one entry per key, in the order of `keys`.
    /// Backends send each server one request for all its keys.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// [`get_many`](Transport::get_many), with the keys of a server that failed while the
    /// others answered told apart ([`ManyRead::unread`]), where `get_many` reads them as
    /// misses, as libmemcached's multi-get does. By default `get_many`'s answer, every key
    /// read (a backend that fails the whole call when a server fails needs no more).
    fn get_many_read(&self, keys: &[&[u8]]) -> Result<ManyRead> {
        self.get_many(keys).map(ManyRead::all)
    }

    /// Fetches many items whose keys are made during the call ([`MadeKeys`]), and hands each
    /// item over to `found` with its key's index and key; misses are not handed over.
    ///
    /// The same reads as [`get_many`](Transport::get_many) of the made keys. A backend may
    /// send the first keys before the rest are made, so the server answers them while the
    /// caller makes the others, and hand items over as their replies are read. An error from
    /// [`MadeKeys::make`] fails the call with that error once the replies to the keys already
    /// sent are read. The items are the call's answer only when it returns `Ok`: a backend
    /// may hand some over before it has checked the replies that follow (one out of step
    /// there fails the call), so on an error drop everything it handed over. By default
    /// every key is made first and `get_many` sends them.
    fn get_many_made(&self, keys: &mut dyn MadeKeys, found: &mut Found<'_>) -> Result<()> {
        get_many_made_at_once(self, keys, found)
    }

    /// Runs one store command.
    ///
    /// A value over the item size limit is [`Error::ValueTooLarge`] and is not stored; a
    /// `set` of one deletes the key first (one delete sent instead of the `set`), as memcached
    /// unlinks the old item when it refuses a `set` as too large, so the old value is not
    /// served any more. When that delete fails, its error is returned instead (the old value
    /// may then still be there). Other modes over the limit send nothing.
    fn store(&self, request: &Store<'_>) -> Result<StoreStatus>;

    /// Runs many store commands; the result has one status per request, in order.
    ///
    /// Every key is checked first: an invalid key is [`Error::InvalidKey`] and nothing is
    /// sent. A request whose value is over the item size limit (the transport's or the
    /// server's) is refused by itself, as [`Transport::store`] refuses it: the other requests
    /// still run, a refused `set` deletes its key, and once every request has run the call
    /// returns [`Error::ValueTooLarge`] for the first refused request (in request order), with
    /// that value's size, instead of the statuses (read the keys back to learn what was
    /// stored). Per-request conditions are statuses, never errors: an `add` of a taken key is
    /// [`StoreStatus::NotStored`] and so on. Any other error (a server that is down or fails)
    /// is returned as such, and any subset of the requests may then have run.
    ///
    /// The default runs [`Transport::store`] per request.
    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        requests.iter().try_for_each(|r| check_key(r.key))?;
        store_each(requests, |r| self.store(r))
    }

    /// [`store_many`](Transport::store_many), with the requests of a server that failed
    /// while the others answered, and those refused as too large, told apart
    /// ([`ManyStore::failed`]), where `store_many` fails the whole call: every live server
    /// still gets and answers its requests. An error when every server failed, or as
    /// `store_many` answers otherwise (an invalid key, an error the server reported). By
    /// default `store_many`'s answer, every request answered (a backend that fails the whole
    /// call when a server fails needs no more; a value over the limit is then its error).
    fn store_many_each(&self, requests: &[Store<'_>]) -> Result<ManyStore> {
        self.store_many(requests).map(ManyStore::all)
    }

    /// Deletes one item; `false` when there was none.
    fn delete(&self, key: &[u8]) -> Result<bool>;

    /// Deletes many items; one `bool` (was there an item) per key, in order.
    fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        keys.iter().map(|k| self.delete(k)).collect()
    }

    /// [`delete_many`](Transport::delete_many), with the keys of a server that failed while
    /// the others answered told apart ([`ManyDelete::failed`]), where `delete_many` fails
    /// the whole call: every live server still gets and answers its deletes. An error when
    /// every server failed, or as `delete_many` answers otherwise (an invalid key, an error
    /// the server reported). By default `delete_many`'s answer, every key answered (a
    /// backend that fails the whole call when a server fails needs no more).
    fn delete_many_each(&self, keys: &[&[u8]]) -> Result<ManyDelete> {
        self.delete_many(keys).map(ManyDelete::all)
    }

    /// Deletes many items without learning which existed (fire-and-forget, as Django's
    /// `delete_many`, which returns nothing). Every key is checked first: an invalid key is
    /// [`Error::InvalidKey`] and nothing is sent. `Ok(())` means every server that holds one
    /// of the keys took its deletes and reported no error; otherwise the error is the one
    /// [`Transport::delete_many`] would give (a server that is down or fails, or an error
    /// the server reported), and any subset of the keys may have been deleted: delete again
    /// to be sure. On return no reply is left unread on any connection.
    ///
    /// The default runs [`Transport::delete_many`] and drops its results. Backends override
    /// it to skip the per-key replies (the text transport sends `delete <key> noreply` and
    /// ends each server's batch with one `version`, whose reply says the server processed
    /// everything before it).
    fn delete_many_quiet(&self, keys: &[&[u8]]) -> Result<()> {
        self.delete_many(keys).map(|_| ())
    }

    /// Adds `delta` to a decimal value (wrapping at 2^64); `None` when the key holds no item.
    fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>>;

    /// Subtracts `delta` from a decimal value (stopping at 0); `None` when the key holds no item.
    fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>>;

    /// Sets a new exptime on an item; `false` when the key holds no item.
    fn touch(&self, key: &[u8], exptime: u32) -> Result<bool>;

    /// Invalidates every item on every server (`flush_all`).
    fn flush_all(&self) -> Result<()>;

    /// The statistics of every server, in the configured order; a server that failed is
    /// listed with its failure ([`ServerStats::failure`]). An error only when every server
    /// failed, or when one answered with an error.
    fn stats(&self) -> Result<Vec<ServerStats>>;

    /// True when the backend speaks memcached 1.6's meta protocol ([`Transport::meta_get`]).
    fn supports_meta(&self) -> bool {
        false
    }

    /// Closes the connections the backend holds idle; the next request opens new ones.
    /// Requests in flight finish on theirs. The default does nothing (a backend without
    /// connections).
    fn close(&self) {}

    /// Meta get (`mg <key> v f c t R<recache_below>`): the item, and the win flag, handed to
    /// exactly one reader once the item's remaining TTL drops below `recache_below` seconds
    /// or once it was marked stale. `None` on a miss.
    fn meta_get(&self, key: &[u8], recache_below: u32) -> Result<Option<MetaItem>> {
        let _ = (key, recache_below);
        Err(Error::Unsupported {
            server: self.name().to_string(),
            command: "the meta protocol (mg)".into(),
        })
    }

    /// Meta get of many keys, one entry per key in order; one round trip per server where the
    /// backend can.
    fn meta_get_many(&self, keys: &[&[u8]], recache_below: u32) -> Result<Vec<Option<MetaItem>>> {
        keys.iter()
            .map(|k| self.meta_get(k, recache_below))
            .collect()
    }

    /// [`meta_get_many`](Transport::meta_get_many), with the keys of a server that failed
    /// while the others answered told apart, as [`get_many_read`](Transport::get_many_read).
    fn meta_get_many_read(&self, keys: &[&[u8]], recache_below: u32) -> Result<ManyRead<MetaItem>> {
        self.meta_get_many(keys, recache_below).map(ManyRead::all)
    }

    /// Marks an item stale instead of deleting it (`md <key> I T<grace>`): the next meta reader
    /// wins the recompute, the others are served the stale value for up to `grace` seconds.
    /// With `cas`, only the item with that CAS unique (`C<cas>`): one stored since is left
    /// as it is. `false` when the key holds no item (or, with `cas`, another one).
    fn meta_invalidate(&self, key: &[u8], grace: u32, cas: Option<u64>) -> Result<bool> {
        let _ = (key, grace, cas);
        Err(Error::Unsupported {
            server: self.name().to_string(),
            command: "the meta protocol (md)".into(),
        })
    }
}

macro_rules! forward_transport {
    ($($ptr:tt)*) => {
        impl<T: Transport + ?Sized> Transport for $($ptr)*<T> {
            fn name(&self) -> &'static str { (**self).name() }
            fn get(&self, key: &[u8]) -> Result<Option<Item>> { (**self).get(key) }
            fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> { (**self).get_many(keys) }
            fn get_many_made(&self, keys: &mut dyn MadeKeys, found: &mut Found<'_>) -> Result<()> { (**self).get_many_made(keys, found) }
            fn store(&self, request: &Store<'_>) -> Result<StoreStatus> { (**self).store(request) }
            fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> { (**self).store_many(requests) }
            fn store_many_each(&self, requests: &[Store<'_>]) -> Result<ManyStore> { (**self).store_many_each(requests) }
            fn delete(&self, key: &[u8]) -> Result<bool> { (**self).delete(key) }
            fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> { (**self).delete_many(keys) }
            fn delete_many_each(&self, keys: &[&[u8]]) -> Result<ManyDelete> { (**self).delete_many_each(keys) }
            fn delete_many_quiet(&self, keys: &[&[u8]]) -> Result<()> { (**self).delete_many_quiet(keys) }
            fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> { (**self).incr(key, delta) }
            fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> { (**self).decr(key, delta) }
            fn touch(&self, key: &[u8], exptime: u32) -> Result<bool> { (**self).touch(key, exptime) }
            fn flush_all(&self) -> Result<()> { (**self).flush_all() }
            fn stats(&self) -> Result<Vec<ServerStats>> { (**self).stats() }
            fn supports_meta(&self) -> bool { (**self).supports_meta() }
            fn close(&self) { (**self).close() }
            fn meta_get(&self, key: &[u8], recache_below: u32) -> Result<Option<MetaItem>> { (**self).meta_get(key, recache_below) }
            fn meta_get_many(&self, keys: &[&[u8]], recache_below: u32) -> Result<Vec<Option<MetaItem>>> { (**self).meta_get_many(keys, recache_below) }
            fn get_many_read(&self, keys: &[&[u8]]) -> Result<ManyRead> { (**self).get_many_read(keys) }
            fn meta_get_many_read(&self, keys: &[&[u8]], recache_below: u32) -> Result<ManyRead<MetaItem>> { (**self).meta_get_many_read(keys, recache_below) }
            fn meta_invalidate(&self, key: &[u8], grace: u32, cas: Option<u64>) -> Result<bool> { (**self).meta_invalidate(key, grace, cas) }
        }
    };
}
forward_transport!(std::sync::Arc);
forward_transport!(Box);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_1_to_250_printable_bytes_are_valid() {
        assert_eq!(validate_key(b"a"), Ok(()));
        assert_eq!(validate_key(&[b'k'; 250]), Ok(()));
        assert_eq!(validate_key("ünïcode".as_bytes()), Ok(()));
    }

    #[test]
    fn empty_long_spaced_and_control_keys_are_refused() {
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
        assert_eq!(
            validate_key(&[b'k'; 251]),
            Err(KeyError::TooLong { len: 251 })
        );
        assert_eq!(
            validate_key(b"a b"),
            Err(KeyError::ForbiddenByte {
                byte: b' ',
                offset: 1
            })
        );
        assert_eq!(
            validate_key(b"ab\r\n"),
            Err(KeyError::ForbiddenByte {
                byte: b'\r',
                offset: 2
            })
        );
        assert_eq!(
            validate_key(b"\x7f"),
            Err(KeyError::ForbiddenByte {
                byte: 0x7f,
                offset: 0
            })
        );
    }

    /// The word-at-a-time check agrees with the byte-by-byte rule for every byte value at
    /// every position of keys of 1 to 20 bytes, and at the ends of keys of 250 bytes.
    #[test]
    fn every_byte_value_at_every_position_is_judged_as_byte_by_byte() {
        let refused = |b: u8| b <= b' ' || b == 0x7f;
        for len in (1..=20).chain([249, 250]) {
            for pos in 0..len {
                if len > 20 && pos > 10 && pos < len - 10 {
                    continue;
                }
                for byte in 0..=255u8 {
                    let mut key = vec![b'k'; len];
                    key[pos] = byte;
                    let expected = if refused(byte) {
                        Err(KeyError::ForbiddenByte { byte, offset: pos })
                    } else {
                        Ok(())
                    };
                    assert_eq!(
                        validate_key(&key),
                        expected,
                        "len {len}, byte {byte:#04x} at {pos}"
                    );
                }
            }
        }
    }

    /// Neighbouring bytes do not hide a forbidden one or invent one (the borrow of one byte's
    /// subtraction runs into the next): pairs of bytes around the bounds, side by side.
    #[test]
    fn bytes_next_to_the_bounds_do_not_mask_each_other() {
        let edges = [
            0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x7e, 0x7f, 0x80, 0x81, 0xa0, 0xa1, 0xfe, 0xff,
        ];
        let refused = |b: u8| b <= b' ' || b == 0x7f;
        for &a in &edges {
            for &b in &edges {
                for at in 0..15 {
                    let mut key = [b'k'; 16];
                    key[at] = a;
                    key[at + 1] = b;
                    let first = [(at, a), (at + 1, b)]
                        .into_iter()
                        .find(|&(_, x)| refused(x));
                    let expected = first.map_or(Ok(()), |(offset, byte)| {
                        Err(KeyError::ForbiddenByte { byte, offset })
                    });
                    assert_eq!(validate_key(&key), expected, "{a:#04x} {b:#04x} at {at}");
                }
            }
        }
    }

    #[test]
    fn utf8_keys_are_allowed_and_lengths_are_bounded() {
        assert_eq!(validate_key("clé-ü-日本".as_bytes()), Ok(()));
        assert_eq!(validate_key(&[b'x'; 250]), Ok(()));
        assert_eq!(
            validate_key(&[b'x'; 251]),
            Err(KeyError::TooLong { len: 251 })
        );
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
    }

    #[test]
    fn check_key_names_the_key() {
        let err = check_key(b"bad key").unwrap_err();
        assert!(err.to_string().contains("\"bad key\""), "{err}");
        assert!(!err.is_connection_error());
    }
}
