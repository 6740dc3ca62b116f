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
//! to `pool_size` connections to every server; a handle idle for
//! [`BinaryConfig::idle_timeout`] (default 60 s) is dropped and its connections closed.
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
//! | `buffer_requests` | `BUFFER_REQUESTS` | bool | **refused when on**: libmemcached queues sets and deletes without reading their answers, so no store's result could be known | off |
//! | `verify_keys` | `VERIFY_KEY` | bool | libmemcached checks text keys; refused in binary mode | off |
//! | `connect_timeout` | `CONNECT_TIMEOUT` | ms ≥ 1 | connect timeout | 4000 in libmemcached, **250 here** |
//! | `send_timeout` | `SND_TIMEOUT` | µs ≥ 1 | `SO_SNDTIMEO` (sockets are non-blocking: see `_poll_timeout`) | 0 (none) in libmemcached, **the poll timeout here** |
//! | `receive_timeout` | `RCV_TIMEOUT` | µs ≥ 1 | `SO_RCVTIMEO` (same) | 0 (none) in libmemcached, **the poll timeout here** |
//! | `num_replicas` | `NUMBER_OF_REPLICAS` | count | also store on the next N servers | 0 |
//! | `auto_eject` | `AUTO_EJECT_HOSTS` | bool | eject a server after `failure_limit` failures (deprecated) | off |
//! | `retry_timeout` | `RETRY_TIMEOUT` | s (0: the next second) | after `failure_limit` failures in a row, fail at once for this long before trying again (see [Failures](#failures)) | 2 |
//! | `remove_failed` | `REMOVE_FAILED_SERVERS` | count (non-zero = on) | eject a server after `failure_limit` failures (libmemcached's rules) | 0 |
//! | `failure_limit` | `SERVER_FAILURE_LIMIT` | count ≥ 1 | failures in a row before a server is left alone (or ejected) | 5 |
//! | `_io_msg_watermark` | `IO_MSG_WATERMARK` | count | queued messages before a flush | 500 |
//! | `_io_bytes_watermark` | `IO_BYTES_WATERMARK` | bytes | queued bytes before a flush | 66560 |
//! | `_io_key_prefetch` | `IO_KEY_PREFETCH` | count | multi-get keys sent before reading | 0 |
//! | `_sort_hosts` | `SORT_HOSTS` | bool | sort servers by name (changes `modula` placement) | off |
//! | `_poll_timeout` | `POLL_TIMEOUT` | ms ≥ 1 | wait for a socket to be readable/writable: the read/write timeout | 5000 in libmemcached, **500 here** |
//! | `_socket_send_size` | `SOCKET_SEND_SIZE` | bytes | `SO_SNDBUF` | OS |
//! | `_socket_recv_size` | `SOCKET_RECV_SIZE` | bytes | `SO_RCVBUF` | OS |
//! | `dead_timeout` | `DEAD_TIMEOUT` | s | retry an ejected server after this long (0: never) | 0 |
//!
//! Hash names: `default`, `md5`, `crc`, `fnv1_64`, `fnv1a_64`, `fnv1_32`, `fnv1a_32`,
//! `murmur`, `hsieh`, `jenkins` (`murmur`/`hsieh` only when libhashkit was built with them;
//! otherwise [`BinaryTransport::new`] fails naming the behavior: Debian 12's libhashkit has
//! no `hsieh`). `_retry_timeout` is
//! accepted for `retry_timeout`, as pylibmc does. `_noreply`, `_hash_with_prefix_key`,
//! `namespace`, `pickle_protocol` and `buffer_requests` (when on: an `add` of a taken key
//! or a `cas` with an out-of-date token reported stored when nothing was) are refused with
//! the reason ([`BehaviorError::Unsupported`]). A socket or I/O timeout of 0
//! (`connect_timeout`, `_poll_timeout`, `send_timeout`, `receive_timeout`) is refused
//! ([`BehaviorError::BadValue`], saying to give at least 1 ms or 1 µs): libmemcached fails
//! every wait at once with a connect or poll timeout of 0 (requests fail as if the server
//! were dead, and a `set` the server stored reports failure) and sets no socket timeout with
//! a send or receive timeout of 0. `retry_timeout` and `dead_timeout` take 0, which means
//! something to libmemcached (try again at the next second; never retry an ejected server).
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
//!   is left alone as above but not ejected. libmemcached ejects a server inside the request
//!   that fails on it, and rebuilds its ring at once: a request's error names (and takes
//!   `retry_in` from) the server its key was placed on before the call, never the live
//!   server the key maps to afterwards.
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
//!   that race (an abort within about 1 ms of a reply), but cannot rule it out.
//! * In binary mode, libmemcached 1.1.4 trusts a reply header's lengths: a key length past
//!   its 250-byte key buffer, or past the body length in a `STAT` reply, makes it write past
//!   its own memory, and **the process dies** (an outside audit: a stack smash in `stats`,
//!   a segmentation fault in `get`, a heap abort in `get_many`, from one crafted header; and
//!   within 5,000 `stats` calls through a proxy that relays parts of replies twice). A
//!   middlebox that garbles replies can do it. Where replies may be duplicated, cut or
//!   garbled, use the text transport (memcached 1.6+, meta commands), not libmemcached in
//!   either mode.
//! * In binary mode, an `incr`/`decr` answered "out of memory" (memcached full, with `-M`
//!   or a slab class it cannot grow) trips an assertion in libmemcached (`auto.cc:32`) and
//!   aborts the process; libmemcached gives no way around it. The same answer to "auth
//!   error" is kept from happening: before an `incr`/`decr` and after a miss, a transport
//!   with no SASL credentials deletes a key no one uses (`newcache-sasl-probe`) to learn
//!   whether the server requires them (memcached `-S`), unless the server answered that
//!   within the last second on a connection the request did not open, and fails the request
//!   with [`Error::Auth`] when it does (without that, gets read as misses and `touch` as a
//!   key not found); a multi-get that fails asks each of its servers. A server restarted
//!   with `-S` is met on a new connection and asked there.
//! * A value that trickles in a few bytes at a time can hold a request longer than the poll
//!   timeout: libmemcached's timeout is per wait, not per request.
//! * In text mode, `SERVER_ERROR out of memory` (memcached's answer to a get when it cannot
//!   allocate the reply) and a bare `ERROR` in answer to a get are read as a miss:
//!   libmemcached ends the fetch as it ends a miss and keeps no error for either (a
//!   `CLIENT_ERROR` or another `SERVER_ERROR` it keeps, and the get is then an error). A
//!   `get_or_set` then loads. The binary protocol and the text transport report both.
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
//! [`BinaryConfig::item_size_limit`] (memcached's `-I`, less the key and the item header:
//! [`Store::value_limit`]) before any C call, so invalid input fails with
//! [`Error::InvalidKey`] / [`Error::ValueTooLarge`] and the value is not sent; a `set` of a
//! value over the limit deletes the key instead (one `memcached_delete`), as memcached
//! unlinks the old item of a `set` it refuses as too large. A value the server
//! itself refuses as too large (its `-I` is lower than configured) is
//! [`Error::ValueTooLarge`] too; the server's exact limit is not known to the client
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
//! * `MEMCACHED_TIMEOUT` is [`Error::Timeout`] whose `after` is `_poll_timeout`, for a
//!   reply or a send that did not come in time; a connect that did not complete within
//!   `connect_timeout` is [`Error::Connect`] (`TimedOut`, naming it), as on the text
//!   transport: nothing was sent. libmemcached reports both alike; how the transport tells
//!   them apart is documented on its private `expired_timeout`, in short: by how long the
//!   call took, then by whether libmemcached marked the server as disconnected. A name
//!   lookup libmemcached reports as a timeout (`EAI_AGAIN`) is [`Error::Connect`] with the
//!   resolver's text.
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

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use newcache_transport::{
    check_key, Error, Item, Result, ServerStats, Store, StoreMode, StoreStatus, Transport,
    DEFAULT_ITEM_SIZE_LIMIT,
};

mod admission;
pub mod bare;
mod batch;
mod behaviors;
mod config;
mod copy;
mod errors;
mod get;
mod health;
mod integrity;
mod pool;
mod setup;
mod stats;
mod store;
mod transport_impl;

pub use behaviors::{
    distribution_to_libmemcached, hash_to_libmemcached, BehaviorError, Behaviors, Distribution,
    Hash,
};
use config::ServerSpec;
pub use config::{
    BinaryConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_POLL_TIMEOUT,
    DEFAULT_POOL_SIZE, DEFAULT_PORT,
};
use health::Health;
use newcache_transport::IdleReaper;
use pool::Pool;

/// A [`Transport`] over libmemcached; see the crate documentation.
///
/// `Send + Sync`: share one (e.g. in an `Arc`) between threads; each request borrows one of
/// its libmemcached handles for its duration.
pub struct BinaryTransport {
    pool: Arc<Pool>,
    /// Handles idle this long are dropped, their connections closed (zero: never).
    idle_timeout: Duration,
    /// The thread that drops them, started with the first request.
    reaper: IdleReaper,
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
    /// Which servers are known to take requests without SASL credentials.
    admission: admission::Admission,
    /// Which servers are left alone after failing, for every handle of the pool.
    health: Health,
    /// The index in `servers` of the server at each position of a handle's list (the
    /// configured order, or sorted with `_sort_hosts`; every clone has the master's order).
    position_to_server: Vec<usize>,
    /// Each server's `item_size_max` (memcached's `-I`), as it said when it last refused a
    /// value as too large.
    item_size_max: Vec<newcache_transport::ItemSizeMax>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BinaryTransport>();
    }
}
