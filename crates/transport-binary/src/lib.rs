//! A newcache [`Transport`] over [libmemcached], the C client pylibmc wraps: memcached's
//! binary protocol (or libmemcached's text mode), pylibmc's behaviors, and libmemcached's
//! own key placement, so a Rust service and a pylibmc one agree on which server holds a key.
//!
//! Tested with **libmemcached 1.1.4** (libmemcached-awesome, Debian 12's `libmemcached-dev`)
//! against memcached 1.6.18.
//!
//! # Installing libmemcached
//!
//! * Debian/Ubuntu: `apt-get install libmemcached-dev` (it brings `libsasl2-dev`; SASL also
//!   needs the `libsasl2-modules` plugins at run time).
//! * macOS (Homebrew): `brew install libmemcached`.
//!
//! Building without it fails with one line saying so. `pkg-config` must be able to find
//! `libmemcached.pc`.
//!
//! # Example
//!
//! ```no_run
//! use newcache_transport::{Store, Transport};
//! use newcache_transport_binary::{BinaryConfig, BinaryTransport};
//!
//! let mut config = BinaryConfig::new(["10.0.0.1:11211", "10.0.0.2:11211:2"]);
//! config.behaviors.set("distribution", "consistent ketama")?;
//! config.behaviors.set("tcp_nodelay", "1")?;
//! let t = BinaryTransport::new(config)?; // connects lazily, on first use
//! t.store(&Store::set(b"greeting", b"hello", 0, 0))?;
//! assert_eq!(t.get(b"greeting")?.map(|i| i.value), Some(b"hello".to_vec()));
//! println!("greeting lives on {:?}", t.server_for_key(b"greeting")?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The pitfall: one handle shared across threads
//!
//! A libmemcached handle (`memcached_st`) holds its connections' read buffers and protocol
//! state; two threads using one handle at once interleave requests on the same socket and
//! read each other's replies (or crash). pylibmc users meet this as "use a `ClientPool`".
//! Here [`BinaryTransport`] is `Send + Sync` honestly: it keeps a pool of handles cloned
//! (`memcached_clone`) from one configured master, lends each to one thread at a time and
//! creates more on demand up to [`BinaryConfig::pool_size`]; a thread that finds them all
//! busy waits for one. Each handle has its own connections, so `pool_size` handles open up
//! to `pool_size` connections to every server.
//!
//! # Behaviors
//!
//! [`Behaviors`] takes pylibmc's names, values and units, and the transport applies them
//! exactly as pylibmc does: SASL credentials, then the protocol
//! (`MEMCACHED_BEHAVIOR_BINARY_PROTOCOL`), then every set behavior in pylibmc's table order
//! (the order below), then the servers. The order matters: `ketama` only sets the
//! distribution, `ketama_weighted` overwrites the key hash with MD5, and because `hash` comes
//! before both, `{"hash": "crc", "ketama_weighted": 1}` ends with MD5, as in pylibmc. The
//! continuum is built when the servers are added, after every behavior.
//!
//! | name | libmemcached behavior | value | what it does | default |
//! |---|---|---|---|---|
//! | `no_block` | `NO_BLOCK` | bool | asynchronous writes, flushed when a reply is needed | off |
//! | `tcp_nodelay` | `TCP_NODELAY` | bool | disable Nagle on every socket | on (libmemcached: off) |
//! | `tcp_keepalive` | `TCP_KEEPALIVE` | bool | `SO_KEEPALIVE` on every socket | off |
//! | `hash` | `HASH` | hash name | key hash that picks the server | `default` (one-at-a-time) |
//! | `ketama_hash` | `KETAMA_HASH` | hash name | hash that places servers on the ketama ring | unset |
//! | `ketama` | `KETAMA` | bool | on: distribution `consistent ketama`; off: `modula`. **The key hash is not changed** | off |
//! | `ketama_weighted` | `KETAMA_WEIGHTED` | bool | on: key and ring hash MD5, distribution `consistent weighted`; off: as `ketama` on | off |
//! | `distribution` | `DISTRIBUTION` | `modula`, `consistent`, `consistent ketama`, `random`, `consistent ketama spy`, `consistent weighted` | how keys map to servers | `modula` |
//! | `cas` | `SUPPORT_CAS` | bool | fetch CAS uniques (`gets` in text mode) | off in libmemcached, **on here** |
//! | `buffer_requests` | `BUFFER_REQUESTS` | bool | queue stores/deletes until a reply is needed (reported done at once) | off |
//! | `verify_keys` | `VERIFY_KEY` | bool | libmemcached checks text keys; refused in binary mode | off |
//! | `connect_timeout` | `CONNECT_TIMEOUT` | ms | connect timeout | 4000 in libmemcached, **250 here** |
//! | `send_timeout` | `SND_TIMEOUT` | µs | `SO_SNDTIMEO` (sockets are non-blocking: see `_poll_timeout`) | 0 in libmemcached, **the poll timeout here** |
//! | `receive_timeout` | `RCV_TIMEOUT` | µs | `SO_RCVTIMEO` (same) | 0 in libmemcached, **the poll timeout here** |
//! | `num_replicas` | `NUMBER_OF_REPLICAS` | count | also store on the next N servers | 0 |
//! | `auto_eject` | `AUTO_EJECT_HOSTS` | bool | eject a server after `failure_limit` failures (deprecated) | off |
//! | `retry_timeout` | `RETRY_TIMEOUT` | s | after `failure_limit` failures in a row, fail at once for this long before trying again (see [Failures](#failures)) | 2 |
//! | `remove_failed` | `REMOVE_FAILED_SERVERS` | count (non-zero = on) | eject a server after `failure_limit` failures (libmemcached's rules) | 0 |
//! | `failure_limit` | `SERVER_FAILURE_LIMIT` | count ≥ 1 | failures in a row before a server is left alone (or ejected) | 5 |
//! | `_io_msg_watermark` | `IO_MSG_WATERMARK` | count | queued messages before a flush | 500 |
//! | `_io_bytes_watermark` | `IO_BYTES_WATERMARK` | bytes | queued bytes before a flush | 66560 |
//! | `_io_key_prefetch` | `IO_KEY_PREFETCH` | count | multi-get keys sent before reading | 0 |
//! | `_sort_hosts` | `SORT_HOSTS` | bool | sort servers by name (changes `modula` placement) | off |
//! | `_poll_timeout` | `POLL_TIMEOUT` | ms | wait for a socket to be readable/writable: the read/write timeout | 5000 in libmemcached, **500 here** |
//! | `_socket_send_size` | `SOCKET_SEND_SIZE` | bytes | `SO_SNDBUF` | OS |
//! | `_socket_recv_size` | `SOCKET_RECV_SIZE` | bytes | `SO_RCVBUF` | OS |
//! | `dead_timeout` | `DEAD_TIMEOUT` | s | retry an ejected server after this long (0: never) | 0 |
//!
//! Hash names: `default`, `md5`, `crc`, `fnv1_64`, `fnv1a_64`, `fnv1_32`, `fnv1a_32`,
//! `murmur`, `hsieh`, `jenkins` (`murmur`/`hsieh` only when libhashkit was built with them;
//! otherwise [`BinaryTransport::new`] fails naming the behavior: Debian 12's libhashkit has
//! no `hsieh`). `_retry_timeout` is
//! accepted for `retry_timeout`, as pylibmc does. `_noreply`, `_hash_with_prefix_key`,
//! `namespace` and `pickle_protocol` are refused with the reason.
//!
//! **This transport's defaults.** Where a behavior is not set it keeps libmemcached's
//! default, except these: `connect_timeout` 250 ms ([`DEFAULT_CONNECT_TIMEOUT`]),
//! `_poll_timeout` 500 ms ([`DEFAULT_POLL_TIMEOUT`]; libmemcached's 4 s and 5 s would let
//! one dead server stall a request for seconds), `send_timeout` and `receive_timeout` the
//! poll timeout (no blocking socket call can wait longer than a poll), `cas` on (the
//! [`Transport`] returns CAS uniques) and `tcp_nodelay` on: without it, a binary-protocol
//! get **miss** waits about 44 ms for Nagle's algorithm and the server's delayed ACK
//! (measured here: 44 ms per miss off, 13 µs on; hits and the text protocol are not
//! affected), which pylibmc users also meet unless they set it. Set any of them to
//! override. How failures are counted differs from libmemcached's too: see below.
//!
//! # Failures
//!
//! As in newcache's text transport, so that both transports fail alike:
//!
//! * A connect failure, a timeout or an I/O error counts against the server; at
//!   `failure_limit` (default 5) of them in a row the server is left alone for
//!   `retry_timeout` (default 2 s): requests for its keys fail at once with
//!   [`Error::ServerDown`] (`server`, `retry_in`), then one more failure leaves it alone
//!   again and one success clears its record. The record is the transport's, shared by every
//!   pooled handle, and it counts read timeouts, which libmemcached does not: without it a
//!   hung server (accepting connections, answering nothing) cost every request on every
//!   handle its whole poll timeout for as long as it hung. libmemcached's own per-handle
//!   "left alone" state also waits for `failure_limit` failed connects in a row (its
//!   `SERVER_TIMEOUT_LIMIT`, 0 in libmemcached: one failed connect was an outage of
//!   `retry_timeout`). A server it leaves alone (`SERVER_TEMPORARILY_DISABLED`) or has
//!   ejected (`SERVER_MARKED_DEAD`; `retry_in` [`Duration::MAX`] with `dead_timeout` 0, as it
//!   never retries it) is [`Error::ServerDown`] too, as in the text transport.
//! * A cluster of **one** server never leaves it alone: there is nowhere else for its keys to
//!   go, and one slow reply must not fail every request for `retry_timeout`.
//! * With `remove_failed`, libmemcached's own rules decide when a server it cannot connect
//!   to is ejected (they decide where keys go, which must stay libmemcached's); a hung server
//!   is left alone as above but not ejected.
//! * Every call is bounded: a thread that finds all `pool_size` handles lent out waits in
//!   line at most the poll timeout for one (else [`Error::Timeout`] naming every server);
//!   a request waits at most `connect_timeout` for each new connection and `_poll_timeout`
//!   for each read or write, and libmemcached makes no retry of its own. Measured with 16
//!   threads on 8 handles, one of three servers SIGSTOPped, the defaults: the slowest call
//!   took 503 ms (3.05 s before: the wait for a handle had no bound, and every call on the
//!   hung server waited out its poll timeout, as libmemcached counts no read timeout).
//! * `get_many` returns the values of the servers that answered; a server that is left
//!   alone or fails during the call leaves its keys as misses; the call fails only when every
//!   server failed, or one failed otherwise (a reply it should not have sent).
//! * `store_many` and `delete_many` send every request, one after another on one handle,
//!   except to a server that already failed in the batch or is left alone; per-request
//!   conditions are statuses (an `add` of a taken key is `NotStored`), a value over the size
//!   limit is refused by itself; the answer is the first failed server's error (in the
//!   order the servers first appear in the batch), else the first other error, else the
//!   first refusal, else the statuses.
//!
//! # Replies
//!
//! libmemcached takes whatever bytes come next on a connection as the reply to its request:
//! it compares no item's key with the key asked for and does not check the binary protocol's
//! opaque. So the transport checks (see the `integrity` module): before a pooled handle is
//! used, a connection that owes no reply yet has bytes waiting (in libmemcached's buffer or
//! on the socket, one non-blocking `poll`) or was closed by the server is dropped; every
//! item returned (`get`, `get_many`, `gets`) must be of a key asked for, once; a request
//! that returns no item must not have read one; and no bytes may be left after a reply.
//! A failed check closes the handle's connections and is [`Error::Protocol`]. Reading the
//! socket and the buffered bytes needs libmemcached 1.1's private instance layout
//! (`libmemcached_sys::memcached_instance_fields`, checked against the linked library); with
//! another libmemcached the key checks remain, and `get_many` fails as a whole when any
//! server fails.
//!
//! What libmemcached still cannot be made to detect:
//!
//! * A stray reply that arrives in the instant between a request being written and its reply
//!   being read (a late duplicate racing the next request on the same connection) is read as
//!   that request's reply. For an item, the key check catches it, unless it is an older
//!   reply for the same key (an older value of that key, or a false miss). For a status or
//!   a number (`set`, `add`, `cas`, `delete`, `touch`, `incr`/`decr`) nothing in the reply
//!   names its request: another request's `STORED`, `NOT_FOUND` or counter value is taken
//!   as this one's (the leftover check then fails the request only when the real reply came
//!   in the same read).
//! * In text mode, such a reply read by a store that is not a store status (`END`, an item,
//!   `DELETED`, a number) trips an assertion in libmemcached (`storage.cc:257`, Debian builds
//!   it with assertions on) and **aborts the process**. The checks above make it depend on
//!   that race (an abort within about 1 ms of a reply), but cannot rule it out: prefer the
//!   binary protocol where replies may be duplicated (a misbehaving proxy or middlebox).
//! * A value that trickles in a few bytes at a time can hold a request longer than the poll
//!   timeout: libmemcached's timeout is per wait, not per request.
//!
//! # Sharing a cluster with django-newcache apps
//!
//! django-newcache's default `CACHE_BEHAVIORS` is `{'hash': 'crc'}`, which pylibmc applies
//! to libmemcached as `MEMCACHED_BEHAVIOR_HASH = MEMCACHED_HASH_CRC` with the default
//! `modula` distribution. For a cluster shared with Django apps that keep that default,
//! `hash = crc` is therefore the compatible choice: give this transport the same servers in
//! the same order and `config.behaviors.set("hash", "crc")` (in a newcache URL:
//! `binary=true&behaviors.hash=crc`), and libmemcached places every key on the same server
//! for both, so each side reads what the other wrote. Leaving `hash` at `default`
//! (one-at-a-time) puts most keys on another server than the Django apps expect: no
//! error, just misses. If the Django settings name other behaviors (`ketama`,
//! `distribution`, weights), set exactly those too; [`BinaryTransport::behaviors_in_effect`]
//! shows what libmemcached ended up with.
//!
//! # Errors
//!
//! Keys are checked ([`check_key`]) and values measured against
//! [`BinaryConfig::item_size_limit`] before any C call, so invalid input fails with
//! [`Error::InvalidKey`] / [`Error::ValueTooLarge`] and the value is not sent; a `set` of a
//! value over the limit deletes the key instead (one `memcached_delete`), as memcached
//! unlinks the old item of a `set` it refuses as too large. A value the server
//! itself refuses as too large (its `-I` is lower, or the key and item header push the item
//! over) is [`Error::ValueTooLarge`] too; the server's exact limit is not known to the client
//! then, so `limit` is reported as one byte below the size. libmemcached's
//! failures keep its own message (`memcached_last_error_message`, else
//! `memcached_strerror`): connection failures and failed DNS lookups map to
//! [`Error::Connect`], servers left alone or ejected to [`Error::ServerDown`] (see
//! [Failures](#failures)), SASL failures to [`Error::Auth`], a server's
//! `CLIENT_ERROR` to [`Error::Client`] (also an incr/decr of a non-numeric value in binary
//! mode, which libmemcached 1.1.4 reports only as an unknown read failure: the transport
//! reads the value to tell), `SERVER_ERROR` to [`Error::Server`], read and write failures
//! to [`Error::Io`], and anything else to [`Error::Backend`] with libmemcached's return
//! code and message. Four typed cases carry no message, because libmemcached's adds
//! nothing to them:
//!
//! * `MEMCACHED_TIMEOUT` is [`Error::Timeout`] whose `after` is the timeout that expired:
//!   `connect_timeout` for a connect, `_poll_timeout` for a reply or a send (libmemcached
//!   reports both alike; how the transport tells them apart is documented on its private
//!   `expired_timeout`, in short: by how long the call took, then by whether libmemcached
//!   marked the server as disconnected). A name lookup libmemcached reports as a timeout
//!   (`EAI_AGAIN`) is [`Error::Connect`] with the resolver's text.
//! * `MEMCACHED_ERROR` in text mode is the server's `ERROR` reply, memcached's answer to a
//!   command it does not know (`touch` before memcached 1.4.8): [`Error::Unsupported`]. The
//!   same value is `MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE`, and the binary protocol
//!   never produces it, so in binary mode or with a recorded detail it is
//!   [`Error::Backend`] with code and message, never "unsupported".
//! * `MEMCACHED_E2BIG` on a store is [`Error::ValueTooLarge`], as above.
//! * `SERVER_TEMPORARILY_DISABLED`, `SERVER_MARKED_DEAD` and `NO_SERVERS` are
//!   [`Error::ServerDown`] with `retry_in` from the server's retry time.
//!
//! In text mode an exptime past `i32::MAX` (an absolute time after 2038-01-19 03:14:07 UTC)
//! is refused with [`Error::Backend`] (code `MEMCACHED_INVALID_ARGUMENTS`, 38) and nothing is
//! sent: memcached's text protocol reads it as a negative number and drops the item at once
//! while `set` answers success. The binary protocol reads exptimes unsigned and keeps such
//! an expiry exactly (measured with memcached 1.6.18), so binary mode sends it.
//!
//! libmemcached itself closes a connection after any fatal error, and the transport closes
//! the handle's connections after a timeout that ends a multi-get or a reply that fails a
//! check (see [Replies](#replies)), so no connection is reused half-read.
//!
//! # Leak check
//!
//! `cargo xtask leakcheck` builds this transport's tests (the binary conformance suite in
//! `tests/tests/conformance_binary.rs`, and this crate's `transport`, `sasl` and `behaviors`
//! tests), runs each binary under valgrind
//! (`--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1`, one test thread)
//! against real memcached servers, prints valgrind's "definitely lost" and "ERROR SUMMARY"
//! lines per binary and fails on any definite leak or memory error. It installs valgrind
//! (as root, from Debian's packages) when it is missing. It takes minutes, so
//! `cargo xtask test` does not run it; run it after changing anything that owns C memory
//! (handles, results, fetched values, SASL data).
//!
//! [libmemcached]: https://awesomized.github.io/libmemcached/
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
#![warn(clippy::undocumented_unsafe_blocks)]

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use libmemcached_sys::*;
pub use newcache_transport::{
    check_key, Error, Item, Result, ServerStats, Store, StoreMode, StoreStatus, Transport,
    DEFAULT_ITEM_SIZE_LIMIT,
};

pub mod bare;
mod behaviors;
mod health;
mod integrity;
mod pool;

pub use behaviors::{
    distribution_to_libmemcached, hash_to_libmemcached, BehaviorError, Behaviors, Distribution,
    Hash,
};
use health::Health;
use pool::{Checkout, Handle, Pool, ResultBuf};

/// The connect timeout used when `connect_timeout` is not set: 250 ms.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// The read/write (poll) timeout used when `_poll_timeout` is not set: 500 ms.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// The default number of libmemcached handles (each with its own connections).
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The memcached port used when a server entry gives none.
pub const DEFAULT_PORT: u16 = newcache_placement::DEFAULT_PORT;

const BACKEND: &str = "libmemcached";

/// How to reach the servers and how to talk to them.
#[derive(Clone)]
pub struct BinaryConfig {
    /// The servers, each `"host:port"` or `"host:port:weight"` (`[v6addr]:port[:weight]`
    /// for IPv6; the port defaults to 11211, the weight to 1). Their order is the server
    /// index of [`BinaryTransport::server_index_for_key`], and with `modula` it decides
    /// placement, as in pylibmc.
    pub servers: Vec<String>,
    /// `true`: memcached's binary protocol (needed for SASL); `false`: libmemcached's text
    /// mode.
    pub binary_protocol: bool,
    /// libmemcached behaviors by pylibmc's names; see the crate documentation.
    pub behaviors: Behaviors,
    /// SASL user name (binary protocol only); set both it and `password`, or neither.
    pub username: Option<String>,
    /// SASL password.
    pub password: Option<String>,
    /// The most libmemcached handles (one per concurrent request) the transport creates.
    /// At least 1.
    pub pool_size: usize,
    /// Values larger than this many bytes are refused without being sent
    /// ([`Error::ValueTooLarge`]; a `set` of one deletes the key instead, as memcached does);
    /// memcached's default `-I 1m` unless told otherwise.
    pub item_size_limit: usize,
}

impl BinaryConfig {
    /// A configuration for these servers with every other setting at its default: binary
    /// protocol, no behaviors set, no SASL, [`DEFAULT_POOL_SIZE`] handles,
    /// [`DEFAULT_ITEM_SIZE_LIMIT`].
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        BinaryConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            ..BinaryConfig::default()
        }
    }
}

impl Default for BinaryConfig {
    fn default() -> Self {
        BinaryConfig {
            servers: Vec::new(),
            binary_protocol: true,
            behaviors: Behaviors::default(),
            username: None,
            password: None,
            pool_size: DEFAULT_POOL_SIZE,
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
        }
    }
}

impl fmt::Debug for BinaryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryConfig")
            .field("servers", &self.servers)
            .field("binary_protocol", &self.binary_protocol)
            .field("behaviors", &self.behaviors)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("item_size_limit", &self.item_size_limit)
            .finish()
    }
}

/// One configured server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerSpec {
    /// The host as handed to libmemcached (IPv6 without brackets, as pylibmc does).
    host: String,
    port: u16,
    weight: u32,
    /// `host:port` (`[v6]:port`), as errors and stats name the server.
    label: String,
}

fn parse_server(entry: &str) -> std::result::Result<ServerSpec, String> {
    let server = newcache_placement::Server::parse(entry).map_err(|e| match e {
        newcache_placement::PlacementError::BadServer { reason, .. } => reason,
        other => other.to_string(),
    })?;
    Ok(ServerSpec {
        label: server.address(),
        host: server.host,
        port: server.port,
        weight: server.weight,
    })
}

/// A [`Transport`] over libmemcached; see the crate documentation.
///
/// `Send + Sync`: share one (e.g. in an `Arc`) between threads; each request borrows one of
/// its libmemcached handles for its duration.
pub struct BinaryTransport {
    pool: Pool,
    servers: Vec<ServerSpec>,
    binary: bool,
    item_size_limit: usize,
    /// The connect timeout libmemcached holds (`MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT`).
    connect_timeout: Duration,
    /// The poll (read/write) timeout libmemcached holds (`MEMCACHED_BEHAVIOR_POLL_TIMEOUT`).
    poll_timeout: Duration,
    /// `retry_timeout` as libmemcached holds it.
    retry_timeout: Duration,
    /// `dead_timeout` as libmemcached holds it (0: an ejected server is never tried again).
    dead_timeout: Duration,
    /// Servers whose last connection failure was an authentication failure.
    auth_failed: Mutex<BTreeSet<String>>,
    /// Which servers are left alone after failing, for every handle of the pool.
    health: Health,
    /// The index in `servers` of the server at each position of a handle's list (the
    /// configured order, or sorted with `_sort_hosts`; every clone has the master's order).
    position_to_server: Vec<usize>,
}

/// Shows the servers, the pool size, the item size limit and, as `behaviors`, every behavior
/// as libmemcached holds it ([`BinaryTransport::behaviors_in_effect`], read from the live
/// handle), so a transport reached only as `dyn Transport` (e.g. through a cache built
/// from a URL) still shows what the configuration produced.
impl fmt::Debug for BinaryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryTransport")
            .field("name", &self.name())
            .field(
                "servers",
                &self.servers.iter().map(|s| &s.label).collect::<Vec<_>>(),
            )
            .field("pool_size", &self.pool.max())
            .field("item_size_limit", &self.item_size_limit)
            .field("behaviors", &self.behaviors_in_effect())
            .finish()
    }
}

fn invalid(message: String) -> Error {
    Error::Backend {
        backend: BACKEND,
        code: MEMCACHED_INVALID_ARGUMENTS as i32,
        message,
    }
}

fn out_of_memory(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        code: MEMCACHED_MEMORY_ALLOCATION_FAILURE as i32,
        message: format!("libmemcached could not allocate {what}"),
    }
}

/// Copies a C string libmemcached owns.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn c_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promises.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Copies `len` bytes libmemcached owns.
///
/// # Safety
///
/// `p` is NULL (then `len` is ignored) or points to `len` readable bytes.
unsafe fn c_bytes(p: *const c_char, len: usize) -> Vec<u8> {
    if p.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: p points to len readable bytes, as the caller promises.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec()
}

/// libmemcached's message for `rc` on `h`: the detailed last error when it is about `rc`,
/// else the generic text of `rc`.
fn message(h: &Handle, rc: memcached_return_t) -> String {
    Message::of_handle(h, rc).text
}

/// libmemcached's text for one failure.
#[derive(Debug, Clone)]
struct Message {
    /// The detailed message libmemcached recorded for the code, e.g. `(0x55d0) A TIMEOUT
    /// OCCURRED, time out,  host: 127.0.0.1:41681 -> ./src/libmemcached/io.cc:220`, else the
    /// code's generic text. libmemcached records details only for fatal codes and
    /// `CLIENT_ERROR` (`memcached_set_error` skips the others).
    text: String,
    /// `memcached_strerror` of the code, e.g. `A TIMEOUT OCCURRED`.
    generic: String,
}

impl Message {
    /// The handle's last error message when it is about `rc`, else the generic text.
    fn of_handle(h: &Handle, rc: memcached_return_t) -> Message {
        // SAFETY: h is a live handle used by this thread only; the returned strings are owned
        // by the handle (or static) and copied before the next libmemcached call.
        unsafe {
            let generic = c_string(memcached_strerror(h.as_ptr(), rc));
            let text = if memcached_last_error(h.as_ptr()) == rc {
                c_string(memcached_last_error_message(h.as_ptr()))
            } else {
                generic.clone()
            };
            Message { text, generic }
        }
    }

    /// True when libmemcached recorded more than the code's generic text.
    fn is_detailed(&self) -> bool {
        self.text != self.generic
    }

    /// What the detailed message says beyond the generic text, without the pointer,
    /// `host: ...` and ` -> file:line` parts libmemcached wraps it in: `time out` in the
    /// example above. Empty when there is no detail.
    fn detail(&self) -> &str {
        if !self.is_detailed() {
            return "";
        }
        let text = self.text.as_str();
        let rest = match text.find(self.generic.as_str()) {
            Some(at) => &text[at + self.generic.len()..],
            None => text
                .strip_prefix('(')
                .and_then(|t| t.split_once(") "))
                .map_or(text, |(_, t)| t),
        };
        let rest = rest.split(" -> ").next().unwrap_or(rest);
        let rest = rest.split("host: ").next().unwrap_or(rest);
        rest.trim_matches(|c: char| c == ',' || c.is_whitespace())
    }
}

/// One failed libmemcached call, as [`BinaryTransport::classify`] sees it.
struct Failure<'a> {
    rc: memcached_return_t,
    message: Message,
    /// The handle's `errno` for the failure, or 0.
    errno: i32,
    /// The server it is about, as configured.
    server: String,
    /// The command that failed, as memcached names it (`get`, `touch`, ...).
    command: &'a str,
    /// For `MEMCACHED_TIMEOUT`: the timeout that expired
    /// ([`BinaryTransport::expired_timeout`]).
    waited: Duration,
    /// For a server libmemcached leaves alone or has ejected: how long until it is tried
    /// again ([`BinaryTransport::retry_in`]).
    retry_in: Duration,
}

fn io_kind(errno: i32) -> io::ErrorKind {
    if errno == 0 {
        io::ErrorKind::Other
    } else {
        io::Error::from_raw_os_error(errno).kind()
    }
}

/// True when memcached's `incr` would read `value` as a 64-bit decimal number.
fn is_decimal(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .map(|s| s.trim_end_matches([' ', '\r', '\n', '\0']))
        .is_some_and(|s| !s.starts_with('+') && s.parse::<u64>().is_ok())
}

struct StatsContext {
    servers: Vec<((String, u16), BTreeMap<String, String>)>,
}

/// `memcached_stat_fn` collecting every statistic of every server.
unsafe extern "C" fn collect_stat(
    server: *const memcached_instance_st,
    key: *const c_char,
    key_length: usize,
    value: *const c_char,
    value_length: usize,
    context: *mut c_void,
) -> memcached_return_t {
    // A panic must not unwind into C; none is expected, and one would only lose a statistic.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: libmemcached passes the live server and key/value buffers of the given
        // lengths for the duration of the call, and `context` is the &mut StatsContext
        // `stats()` handed to memcached_stat_execute, alive and unaliased until it returns.
        let (name, port, key, value, ctx) = unsafe {
            (
                c_string(memcached_server_name(server)),
                memcached_server_port(server),
                String::from_utf8_lossy(&c_bytes(key, key_length)).into_owned(),
                String::from_utf8_lossy(&c_bytes(value, value_length)).into_owned(),
                &mut *context.cast::<StatsContext>(),
            )
        };
        let id = (name, port);
        match ctx.servers.iter_mut().find(|(s, _)| *s == id) {
            Some((_, stats)) => {
                stats.insert(key, value);
            }
            None => ctx.servers.push((id, BTreeMap::from([(key, value)]))),
        }
    }));
    MEMCACHED_SUCCESS
}

/// The index in `servers` of the server at each position of `h`'s list.
fn positions(h: &Handle, servers: &[ServerSpec]) -> Result<Vec<usize>> {
    // SAFETY: h is the live master handle, used by this thread only.
    let count = unsafe { memcached_server_count(h.as_ptr()) };
    (0..count)
        .map(|p| {
            // SAFETY: p is below the server count, so the instance is a live one of h; its
            // name is copied at once.
            let (host, port) = unsafe {
                let server = memcached_server_instance_by_position(h.as_ptr(), p);
                if server.is_null() {
                    (String::new(), 0)
                } else {
                    (
                        c_string(memcached_server_name(server)),
                        memcached_server_port(server),
                    )
                }
            };
            servers
                .iter()
                .position(|s| s.host == host && s.port == port)
                .ok_or_else(|| {
                    invalid(format!(
                        "libmemcached lists server {host}:{port}, which is not configured"
                    ))
                })
        })
        .collect()
}

impl BinaryTransport {
    /// Configures the transport. Connects to nothing: servers are resolved and connected on
    /// first use, so this never blocks on a server.
    ///
    /// Fails with [`Error::NoServers`] for an empty server list, and with
    /// [`Error::Backend`] (libmemcached's message and code) for a malformed server entry, a
    /// behavior libmemcached refuses (e.g. `verify_keys` in binary mode, as in pylibmc), SASL
    /// without the binary protocol, or a zero `pool_size`.
    pub fn new(config: BinaryConfig) -> Result<Self> {
        if config.servers.is_empty() {
            return Err(Error::NoServers);
        }
        if config.pool_size == 0 {
            return Err(invalid(
                "pool_size is 0; the transport needs at least one libmemcached handle".into(),
            ));
        }
        let servers = config
            .servers
            .iter()
            .map(|s| parse_server(s).map_err(|why| invalid(format!("server {s:?}: {why}"))))
            .collect::<Result<Vec<_>>>()?;

        let mut behaviors = config.behaviors.clone();
        behaviors
            .connect_timeout
            .get_or_insert(DEFAULT_CONNECT_TIMEOUT);
        let poll = *behaviors.poll_timeout.get_or_insert(DEFAULT_POLL_TIMEOUT);
        // Sockets are non-blocking and libmemcached waits in poll() with the poll timeout;
        // SO_SNDTIMEO/SO_RCVTIMEO get the same value so that no blocking path can wait
        // longer.
        behaviors.send_timeout.get_or_insert(poll);
        behaviors.receive_timeout.get_or_insert(poll);
        behaviors.cas.get_or_insert(true);
        behaviors.tcp_nodelay.get_or_insert(true);
        let settings = behaviors.settings().map_err(|e| invalid(format!("{e}")))?;
        let failure_limit = behaviors
            .failure_limit
            .unwrap_or(MEMCACHED_SERVER_FAILURE_LIMIT as u32);
        let remove_failed =
            behaviors.remove_failed.is_some_and(|n| n > 0) || behaviors.auto_eject == Some(true);
        // libmemcached leaves a server alone after its first failed connect (its
        // server_timeout_limit is 0); here only after failure_limit failed connects in a
        // row, and never the only server. With remove_failed its own rules stay: they
        // decide when it ejects a server, and so where keys go.
        let server_timeout_limit = if servers.len() == 1 {
            u64::from(u32::MAX)
        } else if remove_failed {
            0
        } else {
            u64::from(failure_limit)
        };

        let master = Handle::create().ok_or_else(|| out_of_memory("a handle"))?;
        let m = master.as_ptr();

        // pylibmc's order: SASL, protocol, behaviors, servers.
        match (&config.username, &config.password) {
            (None, None) => {}
            (Some(user), Some(password)) => {
                if !config.binary_protocol {
                    return Err(invalid(
                        "SASL authentication needs the binary protocol; set binary_protocol to true".into(),
                    ));
                }
                let user = CString::new(user.as_str())
                    .map_err(|_| invalid("the SASL username contains a NUL byte".into()))?;
                let password = CString::new(password.as_str())
                    .map_err(|_| invalid("the SASL password contains a NUL byte".into()))?;
                // SAFETY: m is the live master handle, owned here; libmemcached copies both
                // NUL-terminated strings, which outlive the call.
                let rc =
                    unsafe { memcached_set_sasl_auth_data(m, user.as_ptr(), password.as_ptr()) };
                if memcached_failed(rc) {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        code: rc as i32,
                        message: format!("memcached_set_sasl_auth_data: {}", message(&master, rc)),
                    });
                }
            }
            _ => {
                return Err(invalid(
                    "SASL needs both a username and a password; give both or neither".into(),
                ))
            }
        }

        let protocol = [(
            "binary",
            MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
            u64::from(config.binary_protocol),
            u8::from(config.binary_protocol).to_string(),
        )];
        let internal = [(
            "server_timeout_limit",
            MEMCACHED_BEHAVIOR_SERVER_TIMEOUT_LIMIT,
            server_timeout_limit,
            server_timeout_limit.to_string(),
        )];
        let all = protocol
            .into_iter()
            .chain(
                settings
                    .into_iter()
                    .map(|s| (s.name, s.flag, s.raw, s.shown)),
            )
            .chain(internal);
        for (name, flag, raw, shown) in all {
            // SAFETY: m is the live master handle, used by this thread only.
            let rc = unsafe { memcached_behavior_set(m, flag, raw) };
            if memcached_failed(rc) {
                return Err(Error::Backend {
                    backend: BACKEND,
                    code: rc as i32,
                    message: format!(
                        "libmemcached refused behavior {name} = {shown}: {}",
                        message(&master, rc)
                    ),
                });
            }
        }

        for spec in &servers {
            let host = CString::new(spec.host.as_str())
                .map_err(|_| invalid(format!("server {:?}: NUL byte in the host", spec.label)))?;
            // SAFETY: m is the live master handle; libmemcached copies the host name. No
            // connection is made and no name is resolved here.
            let rc = unsafe {
                memcached_server_add_with_weight(m, host.as_ptr(), spec.port, spec.weight)
            };
            if memcached_failed(rc) {
                return Err(Error::Backend {
                    backend: BACKEND,
                    code: rc as i32,
                    message: format!("cannot add server {}: {}", spec.label, message(&master, rc)),
                });
            }
        }

        // The timeouts as libmemcached holds them (in ms and s), which is what errors report.
        // SAFETY: m is the live master handle, used by this thread only; reading these
        // behaviors does no I/O.
        let (connect_timeout, poll_timeout, retry_timeout, dead_timeout) = unsafe {
            (
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT),
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT),
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT),
                memcached_behavior_get(m, MEMCACHED_BEHAVIOR_DEAD_TIMEOUT),
            )
        };
        let position_to_server = positions(&master, &servers)?;
        let retry_timeout = Duration::from_secs(retry_timeout);
        Ok(BinaryTransport {
            pool: Pool::new(master, config.pool_size),
            health: Health::new(servers.len(), failure_limit, retry_timeout, remove_failed),
            servers,
            binary: config.binary_protocol,
            item_size_limit: config.item_size_limit,
            connect_timeout: Duration::from_millis(connect_timeout),
            poll_timeout: Duration::from_millis(poll_timeout),
            retry_timeout,
            dead_timeout: Duration::from_secs(dead_timeout),
            auth_failed: Mutex::new(BTreeSet::new()),
            position_to_server,
        })
    }

    /// The server libmemcached places `key` on, as `(host, port)` with the host as
    /// configured: the placement oracle, from `memcached_server_by_key` on the configured
    /// handle (so it ignores servers a pooled handle has ejected under `remove_failed`).
    /// No I/O.
    pub fn server_for_key(&self, key: &[u8]) -> Result<(String, u16)> {
        check_key(key)?;
        self.pool.with_master(|h| {
            let mut rc = MEMCACHED_SUCCESS;
            // SAFETY: h is the master handle, used under the pool lock only; the key buffer
            // outlives the call and rc is a valid out pointer.
            let server = unsafe {
                memcached_server_by_key(h.as_ptr(), key.as_ptr().cast(), key.len(), &mut rc)
            };
            if server.is_null() {
                let label = self.all_servers();
                return Err(self.error(h, rc, label, "server_by_key"));
            }
            // SAFETY: server is a live instance of h; its name is copied at once.
            Ok(unsafe {
                (
                    c_string(memcached_server_name(server)),
                    memcached_server_port(server),
                )
            })
        })
    }

    /// The index in [`BinaryConfig::servers`] of the server `key` is placed on (see
    /// [`BinaryTransport::server_for_key`]).
    pub fn server_index_for_key(&self, key: &[u8]) -> Result<usize> {
        let (host, port) = self.server_for_key(key)?;
        self.servers
            .iter()
            .position(|s| s.host == host && s.port == port)
            .ok_or_else(|| Error::Backend {
                backend: BACKEND,
                code: MEMCACHED_FAILURE as i32,
                message: format!(
                    "libmemcached placed the key on {host}:{port}, which is not configured"
                ),
            })
    }

    /// The value libmemcached holds for a behavior (`memcached_behavior_get` on the
    /// configured handle), by pylibmc's name: what the configuration really produced,
    /// e.g. `hash` stays 0 (one-at-a-time) after `ketama`.
    pub fn behavior(&self, name: &str) -> std::result::Result<u64, BehaviorError> {
        let name = if name == "_retry_timeout" {
            "retry_timeout"
        } else {
            name
        };
        let flag = match name {
            "binary" => MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
            n => Behaviors::flag(n).ok_or_else(|| BehaviorError::Unknown {
                name: n.to_string(),
            })?,
        };
        if matches!(
            flag,
            MEMCACHED_BEHAVIOR_SOCKET_SEND_SIZE | MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE
        ) {
            return Err(BehaviorError::Unsupported {
                name: name.to_string(),
                reason: "libmemcached connects to a server to read it",
            });
        }
        // SAFETY: the master handle is used under the pool lock only; flag is a behavior
        // that memcached_behavior_get reads without I/O.
        Ok(self
            .pool
            .with_master(|h| unsafe { memcached_behavior_get(h.as_ptr(), flag) }))
    }

    /// Every behavior [`BinaryTransport::behavior`] can read, by pylibmc's name (and
    /// `binary`), with the value libmemcached holds on the configured handle: for tests and
    /// tools that check what a configuration (builder, URL) really set. `_socket_send_size`
    /// and `_socket_recv_size` are left out: libmemcached connects to a server to read them.
    /// No I/O.
    pub fn behaviors_in_effect(&self) -> BTreeMap<&'static str, u64> {
        std::iter::once("binary")
            .chain(Behaviors::NAMES.iter().copied())
            .filter_map(|name| Some((name, self.behavior(name).ok()?)))
            .collect()
    }

    fn all_servers(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The configured label of a libmemcached server.
    ///
    /// # Safety
    ///
    /// `server` is NULL or a live instance of a live handle.
    unsafe fn label_of(&self, server: *const memcached_instance_st) -> Option<String> {
        if server.is_null() {
            return None;
        }
        // SAFETY: server is a live instance, as the caller promises.
        let (host, port) = unsafe {
            (
                c_string(memcached_server_name(server)),
                memcached_server_port(server),
            )
        };
        Some(
            self.servers
                .iter()
                .find(|s| s.host == host && s.port == port)
                .map_or_else(|| format!("{host}:{port}"), |s| s.label.clone()),
        )
    }

    /// The server `key` maps to on `h`, for error messages.
    fn label_for_key(&self, h: &Handle, key: &[u8]) -> String {
        let mut rc = MEMCACHED_SUCCESS;
        // SAFETY: h is a live handle used by this thread only; no I/O is done.
        let server =
            unsafe { memcached_server_by_key(h.as_ptr(), key.as_ptr().cast(), key.len(), &mut rc) };
        // SAFETY: server is NULL or a live instance of h.
        unsafe { self.label_of(server) }.unwrap_or_else(|| self.all_servers())
    }

    /// The server whose connection failed last on `h`, else every server.
    fn label_for_failure(&self, h: &Handle) -> String {
        // SAFETY: h is a live handle used by this thread only.
        let server = unsafe { memcached_server_get_last_disconnect(h.as_ptr()) };
        // SAFETY: server is NULL or an instance owned by h.
        unsafe { self.label_of(server) }.unwrap_or_else(|| self.all_servers())
    }

    /// The typed error for a failed libmemcached call on `h`.
    fn error(&self, h: &Handle, rc: memcached_return_t, server: String, command: &str) -> Error {
        let failure = self.failure(h, rc, server, command);
        let rc = failure.rc;
        let error = self.classify(failure);
        self.remember_auth_failures(rc, error)
    }

    /// What libmemcached says about a failed call on `h` that returned `rc`.
    fn failure<'c>(
        &self,
        h: &Handle,
        rc: memcached_return_t,
        server: String,
        command: &'c str,
    ) -> Failure<'c> {
        // SAFETY: h is a live handle used by this thread only.
        let (last, errno) = unsafe {
            (
                memcached_last_error(h.as_ptr()),
                memcached_last_error_errno(h.as_ptr()),
            )
        };
        // A batch reports SOME_ERRORS; the specific failure is the handle's last error.
        let rc = if rc == MEMCACHED_SOME_ERRORS && memcached_failed(last) {
            last
        } else {
            rc
        };
        Failure {
            rc,
            message: Message::of_handle(h, rc),
            errno,
            waited: self.expired_timeout(h, &server),
            retry_in: self.retry_in(h, rc, &server),
            server,
            command,
        }
    }

    /// For a server libmemcached answers for without trying it (`SERVER_TEMPORARILY_DISABLED`
    /// inside its retry time, `SERVER_MARKED_DEAD` once ejected, `NO_SERVERS` when every one
    /// is): how long until it is tried again, from the server's retry time. An ejected
    /// server with `dead_timeout` 0 never is ([`Duration::MAX`]), as libmemcached 1.1.4's
    /// `backoff_handling` sets it no new retry time.
    fn retry_in(&self, h: &Handle, rc: memcached_return_t, server: &str) -> Duration {
        match rc {
            MEMCACHED_SERVER_MARKED_DEAD if self.dead_timeout.is_zero() => Duration::MAX,
            MEMCACHED_SERVER_MARKED_DEAD => self.retry_in_of(h, server, self.dead_timeout),
            MEMCACHED_SERVER_TEMPORARILY_DISABLED | MEMCACHED_NO_SERVERS => {
                self.retry_in_of(h, server, self.retry_timeout)
            }
            _ => Duration::ZERO,
        }
    }

    /// Which timeout expired when a call on `h` failed with `MEMCACHED_TIMEOUT` for
    /// `server`: [`BinaryConfig`]'s `connect_timeout` or `_poll_timeout`.
    ///
    /// libmemcached reports a connect that did not complete within `connect_timeout` and a
    /// reply (or a send) that did not come within `_poll_timeout` with the same code and the
    /// same message (`time out`, from one line of its `io.cc`), and no call tells its state,
    /// so the transport decides from what the two waits leave behind:
    ///
    /// 1. A wait that expires has lasted its whole timeout. A call that took less than one
    ///    of the two timeouts (and at least the other) cannot have waited for that one to
    ///    expire: the other did. With the defaults (250 ms connect, 500 ms poll) this
    ///    decides every connect timeout to a server with one address.
    /// 2. A call that lasted both is named after the longer timeout, which is the likelier:
    ///    the shorter one would have had to expire several times (one connect per address
    ///    of the host; a fresh connection's connect and then the poll wait is as likely).
    ///    The connect timeout is named only if libmemcached marked this server as the
    ///    handle's last disconnected one (`memcached_server_get_last_disconnect`), which it
    ///    does after a failed connect and, over TCP, never after a read or write timeout.
    ///
    /// `receive_timeout` and `send_timeout` (`SO_RCVTIMEO`, `SO_SNDTIMEO`) never expire as
    /// such: libmemcached's sockets are non-blocking and it waits in `poll()` with
    /// `_poll_timeout`, so that is what a read or write timeout reports.
    fn expired_timeout(&self, h: &Handle, server: &str) -> Duration {
        let (connect, poll) = (self.connect_timeout, self.poll_of(h));
        let took = h.elapsed();
        match (took >= connect, took >= poll) {
            (true, false) => connect,
            (false, true) => poll,
            _ if connect > poll && self.last_disconnected(h).as_deref() == Some(server) => connect,
            _ => poll,
        }
    }

    /// The configured label of the server libmemcached last disconnected on `h`, if any.
    fn last_disconnected(&self, h: &Handle) -> Option<String> {
        // SAFETY: h is a live handle used by this thread only.
        let server = unsafe { memcached_server_get_last_disconnect(h.as_ptr()) };
        // SAFETY: server is NULL or an instance owned by h.
        unsafe { self.label_of(server) }
    }

    /// After a failed connect (an authentication failure included) libmemcached answers
    /// requests to that server with "temporarily disabled" for `retry_timeout`. Keep calling
    /// that an authentication failure while the server's last real failure was one.
    fn remember_auth_failures(&self, rc: memcached_return_t, error: Error) -> Error {
        let mut failed = self
            .auth_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match error {
            Error::Auth { ref server, .. } => {
                failed.insert(server.clone());
                error
            }
            Error::ServerDown { server, retry_in }
                if rc == MEMCACHED_SERVER_TEMPORARILY_DISABLED =>
            {
                if failed.contains(&server) {
                    Error::Auth {
                        message: format!(
                            "libmemcached leaves the server alone for {retry_in:?} more after its authentication failed"
                        ),
                        server,
                    }
                } else {
                    Error::ServerDown { server, retry_in }
                }
            }
            Error::Connect { ref server, .. } | Error::Timeout { ref server, .. } => {
                failed.remove(server);
                error
            }
            other => other,
        }
    }

    /// The typed error for one failure. Every code maps to a variant whose text keeps
    /// libmemcached's message, except four typed cases whose message adds nothing:
    ///
    /// * `MEMCACHED_TIMEOUT` is [`Error::Timeout`] with the timeout that expired
    ///   ([`BinaryTransport::expired_timeout`]); libmemcached's detail is then only `time out`
    ///   (or `timeout was set to zero`, `timeout on interrupt or restart`) and the server.
    ///   libmemcached 1.1.4 also reports a name lookup that could not finish (getaddrinfo's
    ///   `EAI_AGAIN`) as a timeout, with the resolver's text as detail: that is a failure to
    ///   connect and becomes [`Error::Connect`] with the whole message.
    /// * `MEMCACHED_ERROR` is what libmemcached's text-protocol reader returns when the
    ///   server answers `ERROR`, memcached's reply to a command it does not know (`touch`
    ///   before memcached 1.4.8, for one): in text mode, with no detail recorded (libmemcached
    ///   records none for that reply, whose generic text is `ERROR was returned by server`),
    ///   it is [`Error::Unsupported`] naming the command. The header gives the same value to
    ///   `MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE`, and libmemcached's binary reader never
    ///   returns it (an unknown binary command is `UNKNOWN_READ_FAILURE`), so in binary mode,
    ///   or when a detail was recorded, it is [`Error::Backend`] with code and message: a
    ///   failure of the client's own, never mislabelled "unsupported".
    /// * `MEMCACHED_E2BIG` on a store is [`Error::ValueTooLarge`] (`ITEM TOO BIG` is all the
    ///   message says; see `store_on`); anywhere else it is [`Error::Backend`].
    /// * A server libmemcached answers for without trying it (`SERVER_TEMPORARILY_DISABLED`,
    ///   `SERVER_MARKED_DEAD`, `NO_SERVERS`) is [`Error::ServerDown`] with `retry_in`
    ///   ([`BinaryTransport::retry_in`]), what the text transport answers for a server it
    ///   leaves alone or has ejected.
    fn classify(&self, f: Failure<'_>) -> Error {
        let Failure {
            rc,
            message,
            errno,
            server,
            command,
            waited,
            retry_in,
        } = f;
        let connect_kind = |default| match io_kind(errno) {
            io::ErrorKind::Other => default,
            k => k,
        };
        match rc {
            // Answered without trying the server: the text transport's "down" answer.
            MEMCACHED_SERVER_MARKED_DEAD
            | MEMCACHED_SERVER_TEMPORARILY_DISABLED
            | MEMCACHED_NO_SERVERS => Error::ServerDown { server, retry_in },
            MEMCACHED_CONNECTION_FAILURE
            | MEMCACHED_HOST_LOOKUP_FAILURE
            | MEMCACHED_CONNECTION_BIND_FAILURE => Error::Connect {
                server,
                source: io::Error::new(
                    connect_kind(io::ErrorKind::ConnectionRefused),
                    message.text,
                ),
            },
            MEMCACHED_TIMEOUT => {
                let detail = message.detail().to_ascii_lowercase();
                if detail.is_empty() || detail.contains("time") {
                    Error::Timeout {
                        server,
                        after: waited,
                    }
                } else {
                    Error::Connect {
                        server,
                        source: io::Error::new(connect_kind(io::ErrorKind::TimedOut), message.text),
                    }
                }
            }
            MEMCACHED_AUTH_FAILURE | MEMCACHED_AUTH_PROBLEM | MEMCACHED_AUTH_CONTINUE => {
                Error::Auth {
                    server,
                    message: message.text,
                }
            }
            MEMCACHED_CLIENT_ERROR => Error::Client {
                server,
                message: message.text,
            },
            MEMCACHED_SERVER_ERROR | MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE => Error::Server {
                server,
                message: message.text,
            },
            MEMCACHED_ERROR if !self.binary && !message.is_detailed() => Error::Unsupported {
                server,
                command: command.to_string(),
            },
            MEMCACHED_WRITE_FAILURE
            | MEMCACHED_READ_FAILURE
            | MEMCACHED_UNKNOWN_READ_FAILURE
            | MEMCACHED_PARTIAL_READ
            | MEMCACHED_ERRNO => Error::Io {
                server,
                source: io::Error::new(io_kind(errno), message.text),
            },
            MEMCACHED_PROTOCOL_ERROR => Error::Protocol {
                server,
                detail: message.text,
            },
            _ => Error::Backend {
                backend: BACKEND,
                code: rc as i32,
                message: message.text,
            },
        }
    }

    fn value_too_large(&self, size: usize) -> Error {
        // When the server refuses a value under the configured limit (its -I is smaller, or
        // the key and item header push it over), its exact limit is not known here; all that
        // is known is that it is below the size.
        Error::refused_by_server(size, self.item_size_limit)
    }

    /// [`Error::ValueTooLarge`] when the value is over `item_size_limit`.
    fn check_size(&self, request: &Store<'_>) -> Result<()> {
        if request.value.len() > self.item_size_limit {
            return Err(Error::ValueTooLarge {
                size: request.value.len(),
                limit: self.item_size_limit,
            });
        }
        Ok(())
    }

    /// Runs one request whose key was checked: a value over `item_size_limit` is refused
    /// without being sent, and a `set` of one deletes the key instead, as memcached unlinks
    /// the old item of a `set` it refuses as too large (which it also does when it is the
    /// server that refuses: `MEMCACHED_E2BIG`).
    fn store_checked(&self, h: &Handle, r: &Store<'_>) -> Result<StoreStatus> {
        if let Err(too_large) = self.check_size(r) {
            if r.mode == StoreMode::Set {
                self.delete_on(h, r.key)?;
            }
            return Err(too_large);
        }
        self.store_on(h, r)
    }

    /// A handle for this request, within the request's poll timeout: a thread that finds
    /// every handle lent out (they may all be waiting on a hung server) waits in line for
    /// one at most three quarters of the poll timeout, else fails with [`Error::Timeout`]
    /// naming every server, and the request then gets what is left of it (a quarter at
    /// least, so a healthy server still has time to answer, and a timeout still says the
    /// server is slow), so waiting for a handle and then for a reply takes no longer than
    /// one poll timeout. Connections with bytes no request asked for are dropped first
    /// ([`BinaryTransport::drop_stale_connections`]).
    fn lease(&self) -> Result<pool::Lease<'_>> {
        let lease = match self.pool.checkout(self.poll_timeout * 3 / 4) {
            Ok(lease) => lease,
            Err(Checkout::NoHandle) => {
                return Err(out_of_memory(
                    "a handle clone placing keys as the configured handle",
                ))
            }
            Err(Checkout::Busy) => {
                return Err(Error::Timeout {
                    server: self.all_servers(),
                    after: self.poll_timeout * 3 / 4,
                })
            }
        };
        let shortened = lease
            .waited()
            .filter(|&w| w >= Duration::from_millis(1))
            .map(|w| {
                self.poll_timeout
                    .saturating_sub(w)
                    .max(Duration::from_millis(1))
            });
        lease.set_poll_timeout(shortened, self.poll_timeout);
        self.drop_stale_connections(&lease);
        lease.begin();
        Ok(lease)
    }

    /// Text mode only: memcached's text protocol reads an exptime as a signed 32-bit number,
    /// so one past `i32::MAX` (an absolute time after 2038-01-19 03:14:07 UTC) would read as
    /// negative and the item would be gone at once, with `set` reporting success. Refused,
    /// nothing sent. The binary protocol reads it unsigned and keeps it exactly.
    fn check_exptime(&self, exptime: u32) -> Result<()> {
        if self.binary {
            return Ok(());
        }
        newcache_transport::check_exptime(exptime)
    }

    /// Runs a multi-get of `keys` (distinct, valid, **sorted**) on `h` and reads every item.
    /// `asked` are the positions of the servers that hold the keys (none of them left
    /// alone).
    ///
    /// As in the text transport, a server that fails during the call (a failed connect, a
    /// timeout, an I/O error, or libmemcached's own "left alone" answer) leaves its keys as
    /// misses, and the others' items are returned; the call fails when every server asked
    /// failed (with the first one's error) or when a server failed otherwise. Each server's
    /// outcome goes to the failure record. An item for a key not asked for, or one returned
    /// twice, closes every connection and fails the call ([`Error::Protocol`]).
    fn fetch(&self, h: &Handle, keys: &[&[u8]], asked: &[usize]) -> Result<HashMap<Vec<u8>, Item>> {
        let mut items = HashMap::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(items);
        }
        h.begin();
        // Made before the request is sent, so no failure can leave the replies unread.
        let mut result = ResultBuf::new(h).ok_or_else(|| out_of_memory("a result"))?;
        let pointers: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr().cast()).collect();
        let lengths: Vec<usize> = keys.iter().map(|k| k.len()).collect();
        // SAFETY: h is a live handle used by this thread only; both arrays hold keys.len()
        // entries pointing into key buffers that outlive the call.
        let sent =
            unsafe { memcached_mget(h.as_ptr(), pointers.as_ptr(), lengths.as_ptr(), keys.len()) };

        let mut rc = MEMCACHED_SUCCESS;
        let mut stray = None;
        let mut next = 0;
        // Read to the end even after an error, so the handle is left between requests.
        loop {
            // SAFETY: h is live; result is caller-owned storage initialized for h, which
            // fetch_result fills and, at the end, only resets (never frees).
            let r = unsafe { memcached_fetch_result(h.as_ptr(), result.as_ptr(), &mut rc) };
            if r.is_null() {
                break;
            }
            // SAFETY: r is the live result just filled; its key and value buffers are valid
            // for the lengths reported and are copied before the next fetch.
            let (key, item) = unsafe {
                let key = c_bytes(
                    memcached_result_key_value(r),
                    memcached_result_key_length(r),
                );
                let cas = memcached_result_cas(r);
                let item = Item {
                    value: c_bytes(memcached_result_value(r), memcached_result_length(r)),
                    flags: memcached_result_flags(r),
                    cas: (cas != 0).then_some(cas),
                };
                (key, item)
            };
            // A server answers in the order it was asked: try the key after the last one
            // found before searching them all.
            let asked_for = if keys.get(next) == Some(&key.as_slice()) {
                Ok(next)
            } else {
                keys.binary_search(&key.as_slice())
            };
            let Ok(found) = asked_for else {
                // The stream is out of step: nothing after this is to be trusted.
                stray = Some(key);
                break;
            };
            next = found + 1;
            match items.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(item);
                }
                Entry::Occupied(twice) => {
                    stray = Some(twice.key().clone());
                    break;
                }
            }
        }
        drop(result);
        if let Some(key) = stray {
            self.reset(h);
            return Err(Error::Protocol {
                server: self.all_servers(),
                detail: format!(
                    "a multi-get of {} keys returned key {:?}, which it did not ask for (or twice): a duplicated or stray reply; the connections were closed",
                    keys.len(),
                    String::from_utf8_lossy(&key)
                ),
            });
        }

        // Which servers failed: libmemcached closes a connection that failed (or never
        // opens it), and a poll timeout over several servers ends the fetch with replies
        // still owed.
        let states: Option<Vec<(usize, InstanceFields)>> = asked
            .iter()
            .map(|&p| self.fields_at(h, p).map(|f| (p, f)))
            .collect();
        let Some(states) = states else {
            return self.fetch_ended_untolerant(h, items, sent, rc);
        };
        let owed = states.iter().any(|(_, f)| f.response_count > 0);
        if owed && !self.waited_out_the_poll(h) {
            // Not a timeout: libmemcached's fetch stops at a reply that is neither an item
            // nor an end, with the other servers' replies unread.
            self.reset(h);
            return Err(self.cut_short(rc));
        }
        let mut failed: Vec<(usize, Error)> = Vec::new();
        for &(p, f) in &states {
            if f.response_count > 0 {
                let server = self
                    .server_at(p)
                    .map_or_else(|| self.all_servers(), |i| self.label(i));
                failed.push((
                    p,
                    Error::Timeout {
                        server,
                        after: self.poll_of(h),
                    },
                ));
            } else if f.fd < 0 {
                failed.push((p, self.instance_failure(h, p, "get")));
            }
        }
        // An error of the call itself, when no server explains it (read before any reset,
        // which clears the handle's errors).
        let own_error = if !failed.is_empty() {
            None
        } else if memcached_failed(sent) {
            Some(self.error(h, sent, self.label_for_failure(h), "get"))
        } else if !matches!(rc, MEMCACHED_END | MEMCACHED_NOTFOUND | MEMCACHED_SUCCESS) {
            Some(self.error(h, rc, self.label_for_failure(h), "get"))
        } else {
            None
        };
        if owed {
            // Half-read replies are dropped with their connections.
            self.reset(h);
        } else {
            self.check_leftovers(h)?;
        }
        for &(p, _) in &states {
            if let Some(index) = self.server_at(p) {
                match failed.iter().find(|(q, _)| *q == p) {
                    Some((_, e)) => self.health.failed_with(index, e),
                    None => self.health.succeeded(index),
                }
            }
        }
        if let Some(e) = own_error {
            return Err(e);
        }
        let every_server_failed = failed.len() == states.len();
        let mut first = None;
        for (_, e) in failed {
            if !e.is_server_failure() {
                return Err(e);
            }
            first.get_or_insert(e);
        }
        match first {
            Some(e) if every_server_failed => Err(e),
            _ => Ok(items),
        }
    }

    /// The items of `keys`, in order; `distinct` keys among them.
    fn in_order(
        keys: &[&[u8]],
        distinct: usize,
        items: &mut HashMap<Vec<u8>, Item>,
    ) -> Vec<Option<Item>> {
        if distinct == keys.len() {
            // Every key once: each item goes to its one place, not copied.
            return keys.iter().map(|k| items.remove(*k)).collect();
        }
        keys.iter().map(|k| items.get(*k).cloned()).collect()
    }

    /// The end of a multi-get when libmemcached's private layout cannot be read (another
    /// libmemcached than 1.1.x): which server failed is not known, so any failure fails the
    /// call.
    fn fetch_ended_untolerant(
        &self,
        h: &Handle,
        items: HashMap<Vec<u8>, Item>,
        sent: memcached_return_t,
        rc: memcached_return_t,
    ) -> Result<HashMap<Vec<u8>, Item>> {
        self.check_nothing_owed(h, rc)?;
        if memcached_failed(sent) {
            return Err(self.error(h, sent, self.label_for_failure(h), "get"));
        }
        if !matches!(rc, MEMCACHED_END | MEMCACHED_NOTFOUND | MEMCACHED_SUCCESS) {
            return Err(self.error(h, rc, self.label_for_failure(h), "get"));
        }
        // libmemcached skips servers it cannot connect to when sending a multi-get, and
        // turns a read error before the first item into "not found"; both leave the
        // error on the handle (cleared at the start of every request).
        // SAFETY: h is a live handle used by this thread only.
        let last = unsafe { memcached_last_error(h.as_ptr()) };
        if memcached_failed(last) {
            return Err(self.error(h, last, self.label_for_failure(h), "get"));
        }
        Ok(items)
    }

    /// One key in the binary protocol through `memcached_get`: one non-quiet `GETK` in one
    /// write. A one-key `memcached_mget` sends a quiet `GETKQ` and then a `NOOP` in two
    /// writes, and waits for both answers (measured: 20% fewer gets per second). The item's
    /// key and CAS unique, which `memcached_get` does not return, are read from the handle's
    /// own result, where the fetch left them; an item of another key is
    /// [`Error::Protocol`], and the connections are closed.
    fn get_one(&self, h: &Handle, key: &[u8]) -> Result<Option<Item>> {
        h.begin();
        let (mut len, mut flags, mut rc) = (0usize, 0u32, MEMCACHED_SUCCESS);
        // SAFETY: h is a live handle used by this thread only; the key outlives the call and
        // the out pointers are valid locals.
        let value = unsafe {
            memcached_get(
                h.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                &mut len,
                &mut flags,
                &mut rc,
            )
        };
        // SAFETY: h is live; its own result was just filled by the fetch (on a hit) and is
        // read before the handle's next call; its key buffer holds the length reported.
        let (cas, other_key) = unsafe {
            let r = memcached_st_result(h.as_ptr());
            let (k, kl) = (
                memcached_result_key_value(r),
                memcached_result_key_length(r),
            );
            let same = !k.is_null() && std::slice::from_raw_parts(k.cast::<u8>(), kl) == key;
            (memcached_result_cas(r), (!same).then(|| c_bytes(k, kl)))
        };
        let cas = (cas != 0).then_some(cas);
        let hit = if !value.is_null() {
            // SAFETY: memcached_get returned a malloc'd buffer of `len` bytes that the caller
            // owns; it is copied, then freed once.
            let bytes = unsafe { c_bytes(value, len) };
            // SAFETY: as above; not used after this.
            unsafe { free(value.cast()) };
            Some(bytes)
        } else if matches!(rc, MEMCACHED_NOTFOUND | MEMCACHED_END) || memcached_failed(rc) {
            None
        } else {
            // A hit of an empty value: NULL, with success.
            Some(Vec::new())
        };
        if let Some(bytes) = hit {
            if let Some(other) = other_key {
                self.reset(h);
                return Err(self.wrong_reply(h, key, &other));
            }
            self.check_leftovers(h)?;
            return Ok(Some(Item {
                value: bytes,
                flags,
                cas,
            }));
        }
        // As in `fetch`: a poll timeout can end the read looking like a miss.
        self.check_nothing_owed(h, rc)?;
        match rc {
            MEMCACHED_NOTFOUND | MEMCACHED_END => {
                // A read error before the item also reads as "not found"; it stays on the
                // handle (cleared at the start of every request).
                // SAFETY: h is a live handle used by this thread only.
                let last = unsafe { memcached_last_error(h.as_ptr()) };
                if memcached_failed(last) && !matches!(last, MEMCACHED_NOTFOUND | MEMCACHED_END) {
                    return Err(self.error(h, last, self.label_for_key(h, key), "get"));
                }
                self.check_leftovers(h)?;
                Ok(None)
            }
            rc => Err(self.error(h, rc, self.label_for_key(h, key), "get")),
        }
    }

    /// After a read: libmemcached ends a fetch when poll() times out and reports it as the
    /// end of the items (with two or more servers, or a one-key get), so replies still owed
    /// mean a timeout. Then the handle's connections are closed, dropping the half-read
    /// replies, and the timeout is the error.
    ///
    /// libmemcached's fetch also stops, replies still owed, at a reply that is neither an
    /// item nor an end (a stray one); that is told from a timeout by the time the call took.
    fn check_nothing_owed(&self, h: &Handle, rc: memcached_return_t) -> Result<()> {
        let Some(server) = self.pending_server(h) else {
            return Ok(());
        };
        self.reset(h);
        if !self.waited_out_the_poll(h) {
            return Err(self.cut_short(rc));
        }
        Err(Error::Timeout {
            server,
            after: self.poll_of(h),
        })
    }

    /// Whether the request on `h` has lasted its whole poll timeout, as one that ended on
    /// a poll timeout has.
    fn waited_out_the_poll(&self, h: &Handle) -> bool {
        h.elapsed() >= self.poll_of(h)
    }

    /// The poll timeout of the request on `h`: the transport's, or what a wait for the
    /// handle left of it.
    fn poll_of(&self, h: &Handle) -> Duration {
        h.shortened_poll().unwrap_or(self.poll_timeout)
    }

    /// A fetch that stopped early at a reply out of place; `rc` is what it ended with.
    fn cut_short(&self, rc: memcached_return_t) -> Error {
        let name = RETURN_VALUES
            .iter()
            .find(|(_, v)| *v == rc)
            .map_or("an unknown code", |(n, _)| n);
        Error::Protocol {
            server: self.all_servers(),
            detail: format!(
                "a get stopped at a reply that was neither an item nor its end (libmemcached: {name}) with other replies still owed: an error reply, or a duplicated or stray one; the connections were closed"
            ),
        }
    }

    /// The first server of `h` that still owes replies.
    fn pending_server(&self, h: &Handle) -> Option<String> {
        // SAFETY: h is a live handle used by this thread only.
        let count = unsafe { memcached_server_count(h.as_ptr()) };
        (0..count).find_map(|i| {
            // SAFETY: i is below the server count, so the instance is a live one of h.
            unsafe {
                let server = memcached_server_instance_by_position(h.as_ptr(), i);
                if !server.is_null() && memcached_server_response_count(server) > 0 {
                    self.label_of(server)
                } else {
                    None
                }
            }
        })
    }

    fn store_on(&self, h: &Handle, r: &Store<'_>) -> Result<StoreStatus> {
        h.begin();
        let (p, k, kl) = (h.as_ptr(), r.key.as_ptr().cast::<c_char>(), r.key.len());
        let (v, vl) = (r.value.as_ptr().cast::<c_char>(), r.value.len());
        let (exp, fl) = (r.exptime as time_t, r.flags);
        // SAFETY: p is a live handle used by this thread only; the key and value buffers
        // are valid for the lengths given and outlive the call.
        let rc = unsafe {
            match r.mode {
                StoreMode::Set => memcached_set(p, k, kl, v, vl, exp, fl),
                StoreMode::Add => memcached_add(p, k, kl, v, vl, exp, fl),
                StoreMode::Replace => memcached_replace(p, k, kl, v, vl, exp, fl),
                StoreMode::Append => memcached_append(p, k, kl, v, vl, exp, fl),
                StoreMode::Prepend => memcached_prepend(p, k, kl, v, vl, exp, fl),
                StoreMode::Cas(cas) => memcached_cas(p, k, kl, v, vl, exp, fl, cas),
            }
        };
        self.check_no_stray_item(h, r.key)?;
        match (r.mode, rc) {
            (_, MEMCACHED_SUCCESS | MEMCACHED_STORED | MEMCACHED_BUFFERED) => {
                Ok(StoreStatus::Stored)
            }
            (StoreMode::Cas(_), MEMCACHED_DATA_EXISTS) => Ok(StoreStatus::Exists),
            (StoreMode::Cas(_), MEMCACHED_NOTFOUND) => Ok(StoreStatus::NotFound),
            // The binary protocol answers add on a taken key with "exists" and replace,
            // append or prepend on a free key with "not found".
            (_, MEMCACHED_NOTSTORED | MEMCACHED_DATA_EXISTS | MEMCACHED_NOTFOUND) => {
                Ok(StoreStatus::NotStored)
            }
            (_, MEMCACHED_E2BIG) => Err(self.value_too_large(r.value.len())),
            (mode, rc) => Err(self.error(h, rc, self.label_for_key(h, r.key), mode.command())),
        }
    }

    fn delete_on(&self, h: &Handle, key: &[u8]) -> Result<bool> {
        h.begin();
        // SAFETY: h is a live handle used by this thread only; the key outlives the call.
        let rc = unsafe { memcached_delete(h.as_ptr(), key.as_ptr().cast(), key.len(), 0) };
        self.check_no_stray_item(h, key)?;
        match rc {
            MEMCACHED_SUCCESS | MEMCACHED_DELETED | MEMCACHED_BUFFERED => Ok(true),
            MEMCACHED_NOTFOUND => Ok(false),
            rc => Err(self.error(h, rc, self.label_for_key(h, key), "delete")),
        }
    }

    fn incr_decr(&self, key: &[u8], delta: u64, incr: bool) -> Result<Option<u64>> {
        check_key(key)?;
        let h = self.lease()?;
        let position = self.position_for_key(&h, key);
        let server = position.and_then(|p| self.server_at(p));
        if let Some(i) = server {
            self.gate(i)?;
        }
        let outcome = self.incr_decr_on(&h, key, delta, incr, position);
        if let Some(i) = server {
            self.health.report(i, &outcome);
        }
        outcome
    }

    fn incr_decr_on(
        &self,
        h: &Handle,
        key: &[u8],
        delta: u64,
        incr: bool,
        position: Option<usize>,
    ) -> Result<Option<u64>> {
        let (p, k, kl) = (h.as_ptr(), key.as_ptr().cast::<c_char>(), key.len());
        let mut value = 0u64;
        // SAFETY: p is a live handle used by this thread only; the key outlives the call
        // and value is a valid out pointer. The key is its own group key, which places it
        // exactly as memcached_increment does, with a 64-bit delta.
        let rc = unsafe {
            if incr {
                memcached_increment_by_key(p, k, kl, k, kl, delta, &mut value)
            } else {
                memcached_decrement_by_key(p, k, kl, k, kl, delta, &mut value)
            }
        };
        self.check_no_stray_item(h, key)?;
        let command = if incr { "incr" } else { "decr" };
        match rc {
            MEMCACHED_SUCCESS => Ok(Some(value)),
            MEMCACHED_NOTFOUND => Ok(None),
            rc => {
                let err = self.error(h, rc, self.label_for_key(h, key), command);
                if self.binary && rc == MEMCACHED_UNKNOWN_READ_FAILURE {
                    // memcached answered DELTA_BADVAL ("non-numeric value"); libmemcached 1.1.4
                    // discards that body and reports an unknown read failure. Tell the two
                    // apart by the value itself.
                    let asked: Vec<usize> = position.into_iter().collect();
                    if let Ok(items) = self.fetch(h, &[key], &asked) {
                        if items.get(key).is_some_and(|i| !is_decimal(&i.value)) {
                            return Err(Error::Client {
                                server: self.label_for_key(h, key),
                                message: format!(
                                    "cannot increment or decrement non-numeric value (memcached's binary status DELTA_BADVAL; libmemcached reported: {})",
                                    err_message(&err)
                                ),
                            });
                        }
                    }
                }
                Err(err)
            }
        }
    }
}

fn err_message(err: &Error) -> String {
    match err {
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

impl Transport for BinaryTransport {
    fn name(&self) -> &'static str {
        if self.binary {
            "libmemcached-binary"
        } else {
            "libmemcached-text"
        }
    }

    fn close(&self) {
        self.pool.close_idle();
    }

    fn get(&self, key: &[u8]) -> Result<Option<Item>> {
        check_key(key)?;
        let h = self.lease()?;
        let position = self.position_for_key(&h, key);
        let server = position.and_then(|p| self.server_at(p));
        if let Some(i) = server {
            self.gate(i)?;
        }
        if self.binary {
            let outcome = self.get_one(&h, key);
            if let Some(i) = server {
                self.health.report(i, &outcome);
            }
            return outcome;
        }
        // `fetch` reports the server's outcome itself.
        let one = [position.unwrap_or(0)];
        let asked: &[usize] = if position.is_some() { &one } else { &[] };
        let mut items = self.fetch(&h, &[key], asked)?;
        Ok(items.remove(key))
    }

    /// One multi-get for every server's keys (libmemcached writes every server's request
    /// before reading a reply). A server that is left alone, or fails during the call,
    /// leaves its keys as misses, as in the text transport; the call fails only when every
    /// server failed, or one failed otherwise than by being unreachable, hung or down.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        for key in keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut distinct: Vec<&[u8]> = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let h = self.lease()?;
        if self.position_to_server.len() == 1 {
            // One server, never left alone: no placement to look up.
            let mut items = self.fetch(&h, &distinct, &[0])?;
            return Ok(Self::in_order(keys, distinct.len(), &mut items));
        }
        let mut asked_keys: Vec<&[u8]> = Vec::with_capacity(distinct.len());
        let mut asked: Vec<usize> = Vec::new();
        let mut down: Option<Error> = None;
        for &key in &distinct {
            let position = self.position_for_key(&h, key);
            if let Some(p) = position {
                if let Some(i) = self.server_at(p) {
                    if let Err(e) = self.gate(i) {
                        down.get_or_insert(e);
                        continue;
                    }
                }
                if !asked.contains(&p) {
                    asked.push(p);
                }
            }
            asked_keys.push(key);
        }
        if asked_keys.is_empty() {
            if let Some(e) = down {
                return Err(e);
            }
        }
        let mut items = self.fetch(&h, &asked_keys, &asked)?;
        Ok(Self::in_order(keys, distinct.len(), &mut items))
    }

    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        check_key(request.key)?;
        self.check_exptime(request.exptime)?;
        if request.mode != StoreMode::Set {
            // Refused before a handle is leased: nothing is sent.
            self.check_size(request)?;
        }
        let h = self.lease()?;
        let server = self.server_for(&h, request.key);
        if let Some(i) = server {
            self.gate(i)?;
        }
        let outcome = self.store_checked(&h, request);
        if let Some(i) = server {
            self.health.report(i, &outcome);
        }
        outcome
    }

    /// One request after another on one handle, every one of them sent, as
    /// [`Transport::store_many`] says and as the text transport does: a request refused as
    /// too large (by the limit or by the server) is refused by itself; a server that fails
    /// (or is left alone) gets no more of the batch, the other servers get all of theirs.
    /// The answer, once every request ran: the first failed server's error (in the order
    /// the servers first appear in the batch), else the first other error, else the first
    /// refusal, else one status per request.
    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        for r in requests {
            check_key(r.key)?;
        }
        for r in requests {
            self.check_exptime(r.exptime)?;
        }
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.lease()?;
        let mut batch = Batch::new(self.servers.len());
        let mut statuses = vec![StoreStatus::NotStored; requests.len()];
        for ((i, r), status) in requests.iter().enumerate().zip(statuses.iter_mut()) {
            let server = self.server_for(&h, r.key);
            if !batch.may_send(self, server, i) {
                continue;
            }
            let outcome = self.store_checked(&h, r);
            if let Some(s) = server {
                self.health.report(s, &outcome);
            }
            match outcome {
                Ok(st) => *status = st,
                Err(e @ Error::ValueTooLarge { .. }) => {
                    batch.refused.get_or_insert(e);
                }
                Err(e) => batch.failed(server, i, e),
            }
        }
        batch.answer(statuses)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        let h = self.lease()?;
        let server = self.server_for(&h, key);
        if let Some(i) = server {
            self.gate(i)?;
        }
        let outcome = self.delete_on(&h, key);
        if let Some(i) = server {
            self.health.report(i, &outcome);
        }
        outcome
    }

    /// Every key's delete is sent, as in `store_many`: a server that fails gets no more of
    /// the batch, the others get all of theirs; then the first failed server's error, else
    /// the first other error, else one result per key.
    fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        for key in keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.lease()?;
        let mut batch = Batch::new(self.servers.len());
        let mut deleted = vec![false; keys.len()];
        for ((i, key), slot) in keys.iter().enumerate().zip(deleted.iter_mut()) {
            let server = self.server_for(&h, key);
            if !batch.may_send(self, server, i) {
                continue;
            }
            let outcome = self.delete_on(&h, key);
            if let Some(s) = server {
                self.health.report(s, &outcome);
            }
            match outcome {
                Ok(d) => *slot = d,
                Err(e) => batch.failed(server, i, e),
            }
        }
        batch.answer(deleted)
    }

    fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.incr_decr(key, delta, true)
    }

    fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.incr_decr(key, delta, false)
    }

    fn touch(&self, key: &[u8], exptime: u32) -> Result<bool> {
        check_key(key)?;
        self.check_exptime(exptime)?;
        let h = self.lease()?;
        let server = self.server_for(&h, key);
        if let Some(i) = server {
            self.gate(i)?;
        }
        // SAFETY: h is a live handle used by this thread only; the key outlives the call.
        let rc = unsafe {
            memcached_touch(
                h.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                exptime as time_t,
            )
        };
        let outcome = self.check_no_stray_item(&h, key).and_then(|()| match rc {
            MEMCACHED_SUCCESS => Ok(true),
            MEMCACHED_NOTFOUND => Ok(false),
            rc => Err(self.error(&h, rc, self.label_for_key(&h, key), "touch")),
        });
        if let Some(i) = server {
            self.health.report(i, &outcome);
        }
        outcome
    }

    fn flush_all(&self) -> Result<()> {
        let h = self.lease()?;
        // SAFETY: h is a live handle used by this thread only.
        let rc = unsafe { memcached_flush(h.as_ptr(), 0) };
        if memcached_failed(rc) {
            return Err(self.error(&h, rc, self.label_for_failure(&h), "flush_all"));
        }
        self.check_leftovers(&h)
    }

    fn stats(&self) -> Result<Vec<ServerStats>> {
        let h = self.lease()?;
        let mut context = StatsContext {
            servers: Vec::new(),
        };
        // SAFETY: h is a live handle used by this thread only; collect_stat matches
        // memcached_stat_fn and gets a pointer to `context`, which outlives the call and is
        // not touched by anything else meanwhile. NULL args mean plain `stats`.
        let rc = unsafe {
            memcached_stat_execute(
                h.as_ptr(),
                ptr::null(),
                Some(collect_stat),
                (&mut context as *mut StatsContext).cast(),
            )
        };
        if memcached_failed(rc) {
            return Err(self.error(&h, rc, self.label_for_failure(&h), "stats"));
        }
        let mut out = Vec::with_capacity(self.servers.len());
        for spec in &self.servers {
            let id = (spec.host.clone(), spec.port);
            match context.servers.iter_mut().find(|(s, _)| *s == id) {
                Some((_, stats)) => out.push(ServerStats {
                    server: spec.label.clone(),
                    stats: std::mem::take(stats),
                }),
                None => return Err(self.server_failure(&h, spec, "stats")),
            }
        }
        self.check_leftovers(&h)?;
        Ok(out)
    }
}

impl BinaryTransport {
    /// The error libmemcached recorded on one server (which answered nothing).
    fn server_failure(&self, h: &Handle, spec: &ServerSpec, command: &str) -> Error {
        let position = (0..self.position_to_server.len())
            .find(|&p| self.server_at(p).and_then(|i| self.servers.get(i)) == Some(spec));
        match position {
            Some(p) => self.instance_failure(h, p, command),
            None => Error::Backend {
                backend: BACKEND,
                code: MEMCACHED_FAILURE as i32,
                message: format!("{} answered no statistics", spec.label),
            },
        }
    }

    /// The error libmemcached recorded on the server at position `p` of `h` (the last one:
    /// libmemcached keeps them newest first), which failed during the call just made.
    fn instance_failure(&self, h: &Handle, p: usize, command: &str) -> Error {
        let server = self
            .server_at(p)
            .map_or_else(|| self.all_servers(), |i| self.label(i));
        let instance = self.instance_at(h, p);
        if instance.is_null() {
            return Error::NoServers;
        }
        // SAFETY: instance is a live server of h; its error string is copied at once.
        let (rc, text) = unsafe {
            (
                memcached_server_error_return(instance),
                c_string(memcached_server_error(instance)),
            )
        };
        if !memcached_failed(rc) {
            return Error::Io {
                server,
                source: io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!(
                        "libmemcached closed the connection during {command} and recorded no error"
                    ),
                ),
            };
        }
        // SAFETY: memcached_strerror returns a static string.
        let generic = unsafe { c_string(memcached_strerror(h.as_ptr(), rc)) };
        let failure = Failure {
            rc,
            message: Message { text, generic },
            errno: 0,
            waited: self.expired_timeout(h, &server),
            retry_in: self.retry_in(h, rc, &server),
            server,
            command,
        };
        self.remember_auth_failures(rc, self.classify(failure))
    }
}

/// The outcome of a batch of per-key requests (`store_many`, `delete_many`) sent one after
/// another: the text transport's rules, so both transports answer a batch alike.
struct Batch {
    /// Per configured server: the first request of the batch that went to it (the order of
    /// the text transport's per-server groups) and, once it failed or was down, its error.
    servers: Vec<(Option<usize>, Option<Error>)>,
    /// The first error that is not a server failure, by (server order, request order).
    other: Option<((usize, usize), Error)>,
    /// The first request refused as too large, by request order.
    refused: Option<Error>,
}

impl Batch {
    fn new(servers: usize) -> Batch {
        Batch {
            servers: (0..servers).map(|_| (None, None)).collect(),
            other: None,
            refused: None,
        }
    }

    /// Whether request `i`, for `server`, is to be sent: not when the server already failed
    /// in this batch, or is left alone (that is then its failure).
    fn may_send(&mut self, t: &BinaryTransport, server: Option<usize>, i: usize) -> bool {
        let Some(slot) = server.and_then(|s| self.servers.get_mut(s)) else {
            return true;
        };
        slot.0.get_or_insert(i);
        if slot.1.is_some() {
            return false;
        }
        match server.map(|s| t.gate(s)) {
            Some(Err(e)) => {
                slot.1 = Some(e);
                false
            }
            _ => true,
        }
    }

    /// Request `i`, for `server`, failed with `e`.
    fn failed(&mut self, server: Option<usize>, i: usize, e: Error) {
        let slot = server.and_then(|s| self.servers.get_mut(s));
        match slot {
            Some(slot) if e.is_server_failure() => {
                slot.1.get_or_insert(e);
            }
            slot => {
                let rank = (slot.and_then(|s| s.0).unwrap_or(i), i);
                if self.other.as_ref().is_none_or(|(r, _)| rank < *r) {
                    self.other = Some((rank, e));
                }
            }
        }
    }

    fn answer<T>(self, results: Vec<T>) -> Result<Vec<T>> {
        let first_failed = self
            .servers
            .into_iter()
            .filter_map(|(first, e)| Some((first?, e?)))
            .min_by_key(|(first, _)| *first);
        if let Some((_, e)) = first_failed {
            return Err(e);
        }
        if let Some((_, e)) = self.other {
            return Err(e);
        }
        if let Some(e) = self.refused {
            return Err(e);
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_entries_parse_like_pylibmc() {
        let s = parse_server("10.0.0.1:11212:3").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.weight), ("10.0.0.1", 11212, 3));
        assert_eq!(s.label, "10.0.0.1:11212");
        let s = parse_server("cache.local").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.weight),
            ("cache.local", 11211, 1)
        );
        let s = parse_server("[::1]:22122:2").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.weight), ("::1", 22122, 2));
        assert_eq!(s.label, "[::1]:22122");
        let s = parse_server("[::1]").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 11211));
        for bad in [
            "",
            ":11211",
            "h:0",
            "h:70000",
            "h:1:0",
            "h:1:x",
            "::1:11211",
            "[::1",
            "h:1:2:3",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn decimal_values_are_what_memcached_increments() {
        for ok in [&b"0"[..], b"42", b"18446744073709551615", b"7   "] {
            assert!(is_decimal(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"abc",
            b"12ab",
            b"-1",
            b"18446744073709551616",
            b"+1",
        ] {
            assert!(!is_decimal(bad), "{bad:?}");
        }
    }

    /// A transport that never connects (nothing listens on port 1 and nothing is sent).
    fn unconnected(binary: bool) -> BinaryTransport {
        BinaryTransport::new(BinaryConfig {
            binary_protocol: binary,
            ..BinaryConfig::new(["127.0.0.1:1"])
        })
        .unwrap()
    }

    #[test]
    fn every_return_code_maps_to_a_typed_error_that_keeps_libmemcacheds_text() {
        // Every value from SUCCESS (0) to MAXIMUM_RETURN (49), and the alias
        // CONNECTION_SOCKET_CREATE_FAILURE = ERROR (11).
        let values: BTreeSet<memcached_return_t> = RETURN_VALUES.iter().map(|v| v.1).collect();
        assert_eq!(values, (0..=MEMCACHED_MAXIMUM_RETURN).collect());
        assert_eq!(RETURN_VALUES.len(), 51);
        for binary in [true, false] {
            let t = unconnected(binary);
            let h = t.lease().unwrap();
            for &(name, rc) in RETURN_VALUES {
                let failure = t.failure(&h, rc, "127.0.0.1:1".into(), "touch");
                let generic = failure.message.generic.clone();
                assert!(!generic.is_empty(), "{name}: no strerror text");
                let error = t.classify(failure);
                let shown = error.to_string();
                match (&error, rc) {
                    // The documented typed cases, whose message adds nothing.
                    (Error::Timeout { server, after }, MEMCACHED_TIMEOUT) => {
                        assert_eq!(server, "127.0.0.1:1");
                        assert!(
                            [DEFAULT_CONNECT_TIMEOUT, DEFAULT_POLL_TIMEOUT].contains(after),
                            "{after:?}"
                        );
                    }
                    (Error::Unsupported { server, command }, MEMCACHED_ERROR) if !binary => {
                        assert_eq!((server.as_str(), command.as_str()), ("127.0.0.1:1", "touch"));
                    }
                    // Answered without trying the server: the text transport's answer.
                    (
                        Error::ServerDown { server, .. },
                        MEMCACHED_SERVER_MARKED_DEAD
                        | MEMCACHED_SERVER_TEMPORARILY_DISABLED
                        | MEMCACHED_NO_SERVERS,
                    ) => assert_eq!(server, "127.0.0.1:1"),
                    _ => assert!(
                        shown.contains(&generic),
                        "{name} ({rc}, binary {binary}) became {error:?}, whose text {shown:?} lacks libmemcached's {generic:?}"
                    ),
                }
                if rc == MEMCACHED_ERROR && binary {
                    assert!(
                        matches!(error, Error::Backend { code: 11, .. }),
                        "{error:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_detailed_error_or_a_timeout_that_is_not_one_keeps_the_message() {
        let t = unconnected(false);
        let h = t.lease().unwrap();
        let failure = |rc, text: &str| Failure {
            rc,
            message: Message {
                text: text.to_string(),
                // SAFETY: memcached_strerror returns a static string.
                generic: unsafe { c_string(memcached_strerror(h.as_ptr(), rc)) },
            },
            errno: 0,
            server: "cache:11211".into(),
            command: "get",
            waited: DEFAULT_POLL_TIMEOUT,
            retry_in: Duration::ZERO,
        };
        // libmemcached's own text for a poll timeout (copied from a real one).
        let timeout = "(0x5606bb234970) A TIMEOUT OCCURRED, time out,  host: 127.0.0.1:41681 -> ./src/libmemcached/io.cc:220";
        assert_eq!(
            failure(MEMCACHED_TIMEOUT, timeout).message.detail(),
            "time out"
        );
        assert!(matches!(
            t.classify(failure(MEMCACHED_TIMEOUT, timeout)),
            Error::Timeout { after, .. } if after == DEFAULT_POLL_TIMEOUT
        ));
        // getaddrinfo's EAI_AGAIN, which libmemcached reports as MEMCACHED_TIMEOUT.
        let lookup = "(0x1) A TIMEOUT OCCURRED, Temporary failure in name resolution,  host: cache:11211 -> ./src/libmemcached/connect.cc:65";
        match t.classify(failure(MEMCACHED_TIMEOUT, lookup)) {
            Error::Connect { server, source } => {
                assert_eq!(server, "cache:11211");
                assert_eq!(source.kind(), io::ErrorKind::TimedOut);
                assert!(source.to_string().contains("name resolution"), "{source}");
            }
            other => panic!("{other:?}"),
        }
        // MEMCACHED_ERROR with a recorded detail is libmemcached's own failure (the value
        // is also CONNECTION_SOCKET_CREATE_FAILURE), not the server's "ERROR".
        let own = "(0x1) ERROR was returned by server, socket() failed -> x.cc:1";
        match t.classify(failure(MEMCACHED_ERROR, own)) {
            Error::Backend { code, message, .. } => {
                assert_eq!(code, 11);
                assert!(message.contains("socket() failed"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.classify(failure(MEMCACHED_ERROR, "ERROR was returned by server")),
            Error::Unsupported { .. }
        ));
    }

    #[test]
    fn the_transport_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BinaryTransport>();
    }

    #[test]
    fn config_debug_hides_the_password() {
        let c = BinaryConfig {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..BinaryConfig::new(["h:1"])
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
