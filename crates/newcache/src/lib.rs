//! newcache: a memcached cache client with django-newcache's ideas.
//!
//! - **Key function.** Every key goes through a [`KeyFunction`] before it reaches the wire.
//!   The default is `{flavor}-{version}-{sha1 hex(key)}`: any key becomes legal, bumping the
//!   version invalidates everything, and flavors share a cluster without colliding.
//! - **Thundering-herd mitigation.** Values are stored with a soft expiry; the item lives
//!   `herd_timeout` seconds longer. Under the default policy, [`Policy::Lease`], exactly one
//!   reader after the soft expiry gets a miss (it claims the refresh with CAS) and recomputes
//!   while everyone else is served the old value; [`Policy::Reinsert`] is django-newcache's
//!   own, racy scheme, [`Policy::Meta`] memcached 1.6's win flag, [`Policy::Early`] XFetch.
//!   [`Cache::get_or_set`] reads through with one loader run per expiry (and one per missing
//!   key across threads and processes); [`Cache::invalidate`] marks a value stale instead of
//!   deleting it. See docs/herd.md.
//! - **Infinite timeouts**, and TTLs past 30 days sent as the absolute times memcached needs.
//! - **Transports** by Cargo feature: `text` (memcached's text protocol in Rust, default),
//!   `binary` (libmemcached, the C client pylibmc wraps: `binary=true` in the URL for its binary
//!   protocol, `transport=libmemcached` for its text mode, `behaviors.NAME=value` for pylibmc's
//!   behaviors), `memory` (in-process, for tests); `tokio` adds [`AsyncCache`] over the text
//!   protocol's async transport, `tls` TLS for the text transports. Asking for a transport
//!   whose feature is off is an error, never a silent fallback.
//! - **Clusters**: servers separated by `;`, weights as `host:port:weight`; both transports
//!   place keys where libmemcached does with the same `behaviors.*` (the text transport takes
//!   the placement, failover and timeout ones), so pylibmc clients share the cluster.
//! - **Values**: any serde type. Strings, integers, booleans and bytes are stored as Python's
//!   clients store them, the herd's soft expiry in the item's flags, so a Django app reads
//!   them as its own; `codec=pickle` does the same for structured values, and what Python
//!   cannot read makes it raise ([`codec`], docs/python-interop.md). Values Python wrote are
//!   read: pickles, compressed values, django-newcache's herd tuple ([`EnvelopeFormat`]).
//!
//! Data flows one way: [`Cache`] -> key function -> codec and herd state (in the item's flags)
//! -> transport -> wire.
//!
//! # Example
//!
//! Against a real memcached (the example starts one; in a service the URL names yours):
//!
//! ```
//! # #[cfg(feature = "text")] {
//! use newcache::{Cache, Error, SetOptions, Ttl};
//!
//! # let server = newcache_testkit::Memcached::start();
//! # let url = format!("newcache://{}/?flavor=staging&version=2", server.addr());
//! // url = "newcache://127.0.0.1:11211/?flavor=staging&version=2"
//! let cache = Cache::from_url(&url)?;
//! assert_eq!(cache.wire_key("games")?, b"staging-2-dd27204535de317c6202952eeb2043fad52e3fec");
//! cache.set("games", &vec!["chess", "go"], Ttl::Seconds(300))?;
//! let games: Option<Vec<String>> = cache.get("games")?;
//! assert_eq!(games.unwrap(), ["chess", "go"]);
//!
//! // Counters are stored bare (herd off) so the server can increment them.
//! cache.set("hits", &10u64, SetOptions::new(Ttl::Seconds(60)).no_herd())?;
//! assert_eq!(cache.incr("hits", 5)?, 15);
//! assert!(matches!(cache.incr("missing", 1), Err(Error::NotFound { .. })));
//! # }
//! # Ok::<(), newcache::Error>(())
//! ```
//!
//! For unit tests of your own code, `transport=memory` (feature `memory`) needs no server.
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

/// README.md's examples, compiled as doctests (whole programs, as a user pastes them).
#[cfg(all(doctest, feature = "text", feature = "tokio"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "tokio")]
mod async_cache;
pub mod codec;
mod config;
mod error;
mod extras;
mod herd_read;
mod io;
mod many;
mod observe;
mod ops;
mod read_through;
mod reentry;
mod wire_keys;
mod write;

use io::{block, Blocking};
use ops::Core;

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "tokio")]
pub use async_cache::AsyncCache;
pub use codec::ValueCodec;
pub use config::{
    Builder, Config, EnvelopeFormat, KeyFunctionKind, Secret, TransportKind, WireProtocol,
};
pub use error::{Error, Result};
pub use extras::CasToken;
pub use many::{GetMany, GetManyIntoIter, GetManyIter};
pub use newcache_herd::{
    Clock, ManualClock, Policy, StaleAction, StalePolicy, SystemClock, Ttl, Xfetch, HERD_FLAG,
};
pub use newcache_keyfn::{HashedKey, InvalidKey, KeyFunction, PrefixedKey};
pub use newcache_transport::{self as transport, Item, Transport};

use newcache_transport::{StoreMode, StoreStatus};

/// How one store treats expiry and herd protection.
///
/// A [`Ttl`] or a number of seconds converts into it, so `cache.set(k, &v, 60)` and
/// `cache.set(k, &v, Ttl::Forever)` both work; `SetOptions::new(ttl).no_herd()` stores bare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// How long the value lives.
    pub ttl: Ttl,
    /// Herd protection for this store; `None` follows the cache's setting.
    pub herd: Option<bool>,
}

impl SetOptions {
    /// Options with this TTL and the cache's herd setting.
    pub fn new(ttl: Ttl) -> Self {
        SetOptions { ttl, herd: None }
    }

    /// Stores the value without herd protection: no soft expiry, and the item expires exactly
    /// at its TTL (no herd timeout added).
    pub fn no_herd(self) -> Self {
        SetOptions {
            herd: Some(false),
            ..self
        }
    }
}

impl From<Ttl> for SetOptions {
    fn from(ttl: Ttl) -> Self {
        SetOptions::new(ttl)
    }
}

impl From<u64> for SetOptions {
    fn from(secs: u64) -> Self {
        SetOptions::new(Ttl::Seconds(secs))
    }
}

impl From<std::time::Duration> for SetOptions {
    fn from(d: std::time::Duration) -> Self {
        SetOptions::new(d.into())
    }
}

/// A value as stored: its bytes and its flags (newcache's herd state removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    /// The value's bytes.
    pub bytes: Vec<u8>,
    /// The value's flags: newcache's herd state (bit 8 with a unit in bits 11-12, and
    /// bits 11-31) removed; any other application's bits as stored.
    pub flags: u32,
}

impl RawValue {
    /// The value for people: text and numbers as they are, anything else described; a
    /// compressed value inflated up to [`DEFAULT_INFLATE_LIMIT`](codec::DEFAULT_INFLATE_LIMIT).
    pub fn display(&self) -> String {
        codec::display(&self.bytes, self.flags)
    }

    /// [`RawValue::display`], a compressed value inflated up to `inflate_limit` bytes (a
    /// cache's own, `cache.config().inflate_limit`, so what the cache reads is shown).
    pub fn display_within(&self, inflate_limit: usize) -> String {
        codec::display_within(&self.bytes, self.flags, inflate_limit)
    }

    /// The value for people, or what its bytes are when they show no value a reader would
    /// take (text that is not UTF-8, a pickle or a compressed value that does not read,
    /// flags no codec knows): [`codec::show_within`], a compressed value inflated up to
    /// `inflate_limit` bytes. The CLI's `get` prints the one and fails with the other.
    pub fn show_within(&self, inflate_limit: usize) -> std::result::Result<String, String> {
        codec::show_within(&self.bytes, self.flags, inflate_limit)
    }
}

/// What [`Cache::peek`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The value as stored.
    pub value: RawValue,
    /// True when the value is past its soft expiry: a `get` now would start its refresh.
    pub stale: bool,
}

/// A memcached cache: `Send + Sync`, cheap to clone (clones share connections).
///
/// Build one with [`Cache::from_url`] or [`Cache::builder`]. Building never blocks on a
/// server; connections open on first use and reopen after a server comes back.
#[derive(Clone)]
pub struct Cache {
    core: Arc<Core>,
    transport: Arc<dyn Transport>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.core.config)
            .field("transport", &self.transport)
            .finish()
    }
}

impl Cache {
    /// A cache configured by a `newcache://` URL (see [`Config::from_url`]).
    pub fn from_url(url: &str) -> Result<Cache> {
        Builder::from_url(url)?.build()
    }

    /// A builder for every setting, a custom key function, transport or clock.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_parts(core: Core, transport: Arc<dyn Transport>) -> Cache {
        Cache {
            core: Arc::new(core),
            transport,
        }
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The transport underneath (for tools and tests).
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The wire key `key` becomes, validated. Needs no server.
    pub fn wire_key(&self, key: &str) -> Result<Vec<u8>> {
        self.core.wire_key(key)
    }

    /// The key [`get_or_set`](Cache::get_or_set) adds while it loads `key` cold, so that
    /// one process loads: `newcache-lease-` and the SHA-1 of `key`'s wire key, whatever
    /// the key function (for tools and tests). Needs no server.
    pub fn lease_key(&self, key: &str) -> Result<Vec<u8>> {
        self.core.lease_key(key)
    }

    /// The transport as the shared operations see it.
    fn io(&self) -> Blocking<'_> {
        Blocking(self.transport.as_ref())
    }

    /// Runs `f` on the validated wire key of `key` ([`Core::with_wire_key`]: no allocation).
    fn with_wire_key<R>(&self, key: &str, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        self.core.with_wire_key(key, f)
    }

    /// Fetches and decodes a value; `None` on a miss (or for the first reader after its
    /// soft expiry, who should recompute it).
    pub fn get<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<T>> {
        self.with_wire_key(key, |wire| block(self.core.get(&self.io(), key, wire)))
    }

    /// Fetches a value's bytes and flags without decoding (herd rules apply as for `get`).
    /// An item whose herd state cannot be read (another application's use of the flag bits
    /// newcache keeps it in) comes as stored, every flag kept. The value is what the herd's
    /// envelope holds: a compressed value comes compressed (flag 8 kept), except inside
    /// django-newcache's pickled tuple, which must be inflated to be opened: its value
    /// comes inflated, as the pickle it is (flag 1).
    pub fn get_raw(&self, key: &str) -> Result<Option<RawValue>> {
        self.with_wire_key(key, |wire| block(self.core.get_raw(&self.io(), wire)))
    }

    /// Fetches many values in one round trip per server. The result ([`GetMany`]) reads as a
    /// map keyed by the caller's own keys, holding the hits only, in the order asked, with no
    /// allocation per key ([`GetMany::into_map`] makes a `HashMap` of it). A value that is
    /// there but cannot be decoded is left out of it and listed in [`GetMany::failed`] with
    /// its error, so the others still arrive; so is each key of a server that failed while
    /// the others answered (a timeout, a refused connection, a server marked down: not a
    /// miss, so [`GetMany::is_complete`] is false). When every server asked failed, or one
    /// gave a reply that is not memcached's, the call fails. A key asked twice is read
    /// twice: it has its last value, and none when either read was a miss (one read of a
    /// stale key may win its refresh while the other is served the old value).
    ///
    /// The keys are made as the transport asks for them ([`Transport::get_many_made`]); the
    /// text transport makes (and checks) every key first, so a key memcached cannot take
    /// sends nothing, then sends one request per server, and the returned map's keys are
    /// copied and indexed while memcached answers.
    pub fn get_many<K, T>(&self, keys: &[K]) -> Result<GetMany<T>>
    where
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        block(self.core.get_many(&self.io(), keys))
    }

    /// Fetches many values like [`get_many`](Cache::get_many), as one entry per key in the
    /// order of `keys` (`None` for a miss, or for the reader who should recompute): no map,
    /// no owned keys. A value that is there but cannot be decoded, or a key whose server
    /// failed while the others answered, fails the call with its error (the first such
    /// key's); use `get_many` to keep the others. A key asked twice is read twice, each
    /// entry its own read: a `None` among them may be this caller's won refresh.
    pub fn get_many_ordered<K, T>(&self, keys: &[K]) -> Result<Vec<Option<T>>>
    where
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        block(self.core.get_many_ordered(&self.io(), keys))
    }

    /// True when `key` holds a value a `get` would return now. Has no side effects: a stale
    /// value is reported absent but left for the next `get` to handle.
    pub fn has_key(&self, key: &str) -> Result<bool> {
        block(self.core.has_key(&self.io(), key))
    }

    /// What `key` holds, herd state read, with no side effects at all: a value past its
    /// soft expiry is returned (with `stale` set) and left for the next `get` to handle, so
    /// looking never claims a refresh nor re-stores anything. An item whose flags hold no
    /// herd state newcache reads (another application's use of bit 8) is returned as
    /// stored, every flag kept. For tools and operators (the CLI's `get`); services read
    /// with [`get`](Cache::get).
    pub fn peek(&self, key: &str) -> Result<Option<Peeked>> {
        block(self.core.peek(&self.io(), key))
    }

    fn store<T: Serialize + ?Sized>(
        &self,
        mode: StoreMode,
        key: &str,
        value: &T,
        options: SetOptions,
    ) -> Result<StoreStatus> {
        self.with_wire_key(key, |wire| {
            block(self.core.store(&self.io(), mode, key, wire, value, options))
        })
    }

    /// Stores a value. With herd protection (the default) and a finite TTL, the value gets a
    /// soft expiry (in the item's flags) and the item lives `herd_timeout` seconds longer.
    /// A zero TTL deletes the key (the value expires at once, as Django's `timeout=0`).
    pub fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        self.store(StoreMode::Set, key, value, options.into())
            .map(|_| ())
    }

    /// Stores a value only if `key` holds none; `true` when stored. With a zero TTL nothing
    /// is left stored (the value expires at once): `true` when the key held nothing. Under
    /// `lease` and `early`, a value past its TTL (the herd keeps its item `herd_timeout`
    /// longer) is none: `add` takes the key over, one adder of several (a `cas` over it),
    /// so a lock taken with `add` and a TTL frees at its TTL; a `get` at that moment may
    /// still be served the old value, as a `get` beside a `set` may be. Such a lock is read
    /// with `add` and `delete`, not `get`: a `get` past its TTL claims its refresh, as of any
    /// cached value, and serves it on meanwhile. Under `reinsert` and `meta`, whose readers
    /// re-store or keep serving a stale value, `add` is memcached's own: refused until the
    /// item expires. Store a lock with [`SetOptions::no_herd`] to leave the herd out.
    pub fn add<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<bool> {
        Ok(self
            .store(StoreMode::Add, key, value, options.into())?
            .is_stored())
    }

    /// Stores a value only if `key` holds one; `true` when stored. With a zero TTL the
    /// value expires at once: the key's value is deleted, `true` when it held one.
    pub fn replace<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<bool> {
        Ok(self
            .store(StoreMode::Replace, key, value, options.into())?
            .is_stored())
    }

    /// Stores a value's raw bytes with these flags (herd rules apply as for `set`).
    ///
    /// With the herd on, flags in the bits it keeps its state in (8 and 11-31) are refused
    /// ([`Error::Encode`]); store them with `SetOptions::no_herd()`. Flags with bit 8 and
    /// one of bits 11-12 are refused either way: every reader takes them for herd state.
    pub fn set_raw(
        &self,
        key: &str,
        bytes: &[u8],
        flags: u32,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        block(
            self.core
                .set_raw(&self.io(), key, bytes, flags, options.into()),
        )
    }

    /// Stores many values, one round trip per server. Unlike django-newcache's `set_many`,
    /// the items' real TTL includes the herd timeout, exactly as `set` does. Returns the keys
    /// that were not stored, as Django's `set_many` does.
    ///
    /// Every server gets its items, whatever happens to the others. When some servers failed
    /// (or are down) while others answered, the error is [`Error::PartlyStored`]: the keys
    /// of the failed servers, each with its failure, and the keys the others did not store;
    /// every other key was written. A value over the item size limit is not sent (its key's
    /// old value is deleted, the other items are sent) and is listed in the same error with
    /// its [`newcache_transport::Error::ValueTooLarge`]. When every server failed, the first
    /// one's error.
    pub fn set_many<K, T, I>(&self, items: I, options: impl Into<SetOptions>) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = (K, T)>,
        K: AsRef<str>,
        T: Serialize,
    {
        block(self.core.set_many(&self.io(), items, options.into()))
    }

    /// Deletes a value; `true` when there was one.
    pub fn delete(&self, key: &str) -> Result<bool> {
        block(self.core.delete(&self.io(), key))
    }

    /// Deletes many values, one round trip per server; returns how many existed.
    ///
    /// Every server gets its keys, whatever happens to the others. When some servers failed
    /// (or are down) while others answered, the error is [`Error::PartlyDeleted`]: the keys
    /// of the failed servers, each with its failure; every other key was deleted. When every
    /// server failed, the first one's error.
    pub fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<usize> {
        block(self.core.delete_many(&self.io(), keys))
    }

    /// Adds `delta` to a counter (wrapping at 2^64) and returns the new value. A missing key
    /// is [`Error::NotFound`]; store counters with herd off ([`SetOptions::no_herd`]).
    pub fn incr(&self, key: &str, delta: u64) -> Result<u64> {
        block(self.core.counter(&self.io(), key, delta, true))
    }

    /// Subtracts `delta` from a counter (stopping at 0) and returns the new value.
    pub fn decr(&self, key: &str, delta: u64) -> Result<u64> {
        block(self.core.counter(&self.io(), key, delta, false))
    }

    /// Gives a value a new TTL; `false` when the key holds none. A herd-protected value gets a
    /// new soft expiry too (rewritten with CAS, so a concurrent write wins): an invalidated
    /// value touched is fresh again, its invalidation undone. A value whose flags use the
    /// bits the herd keeps its state in (8 and 11-31: another application's) gets
    /// memcached's own `touch`, its flags left as they are.
    pub fn touch(&self, key: &str, options: impl Into<SetOptions>) -> Result<bool> {
        block(self.core.touch(&self.io(), key, options.into()))
    }

    /// Marks a value stale instead of deleting it (the usual invalidation on write): the next
    /// reader recomputes under the cache's herd policy, while the others are served the old
    /// value for up to twice the herd timeout (from the last invalidation: a key invalidated
    /// more often than its loader runs keeps serving the value from before the first one,
    /// docs/herd.md). `false` when the key holds no value.
    /// [`Cache::delete`] still deletes, and so does this for a value that cannot be marked:
    /// one whose flags use the bits the herd keeps its state in (8 and 11-31: another
    /// application's), and a django-newcache tuple whose expiry cannot move (past 2038).
    pub fn invalidate(&self, key: &str) -> Result<bool> {
        block(self.core.invalidate(&self.io(), key))
    }

    /// Invalidates every value on every server (`flush_all`). An error when any server
    /// failed: the others are flushed all the same.
    pub fn clear(&self) -> Result<()> {
        block(self.core.clear(&self.io()))
    }

    /// Every server's statistics, in the configured order. A server that could not be asked
    /// (down, hung past the read timeout) is listed with its
    /// [`failure`](newcache_transport::ServerStats::failure) and no statistics, and counts in
    /// `newcache_errors_total`; the call fails only when every server failed.
    pub fn stats(&self) -> Result<Vec<newcache_transport::ServerStats>> {
        block(self.core.stats(&self.io()))
    }

    /// Returns the cached value, or runs `loader`, stores its result and returns it: the
    /// herd-safe way to read through. See [`Cache::get_or_try_set`].
    pub fn get_or_set<T, F>(
        &self,
        key: &str,
        options: impl Into<SetOptions>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> T,
    {
        self.get_or_try_set(key, options, || Ok::<T, Error>(loader()))
    }

    /// Returns the cached value, or runs `loader` and stores its result, with exactly one
    /// loader run where the cache can arrange it:
    ///
    /// - a stale value: the policy's winner (one caller under `lease`, `early` at the expiry
    ///   and `meta`) runs the loader and stores; the others are served the old value;
    /// - no value at all (cold): callers in this process share one loader run (single
    ///   flight): the others wait for its outcome, reading the key again every
    ///   `lease_wait` (a value another process stored meanwhile is served); across
    ///   processes, the caller that stores
    ///   the lease key ([`lease_key`](Cache::lease_key)) with `add` (its TTL is `lease_wait`, rounded up
    ///   to whole seconds, and one second more) loads, and the others poll for its value every 20 ms, contending
    ///   for the lease key again as they poll. A loader that dies (a killed process) leaves
    ///   the key to expire, and then exactly one waiter, in whatever process, takes the lease
    ///   over and loads; a loader slower than `lease_wait` gets a second one beside it. So a
    ///   slow or crashed loader costs a bounded wait, never a hang and never a stampede.
    ///
    /// The loaded value is stored only over what the key held when the load began (a `cas`
    /// against that item, or an `add` when there was none): a `set`, an `invalidate` or a
    /// `delete` that lands while the loader runs is newer than what it read, so the caller
    /// gets the loaded value and the key keeps the newer state (`reinsert` keeps the seed's
    /// plain `set`). One exception: on a key that had no value, a `delete` or an
    /// `invalidate` (or a `set` then either) that lands while the loader runs leaves nothing
    /// for the `add` to meet, as memcached keeps no trace of a delete and an invalidation
    /// has nothing to mark, so the loaded value is stored. A server that fails to take the
    /// loaded value (down, hung, a cut connection, or a `SERVER_ERROR` such as memcached's
    /// "out of memory storing object") costs the cache that value, not the caller: the call
    /// returns it, the calls in this process waiting for that load are served it too, and
    /// the failure counts in the errors.
    ///
    /// A loader error reaches its caller and stores nothing; on the stale path the old value
    /// stays (under `lease` and `early` the claim keeps the others on it for `herd_timeout`,
    /// then the next caller retries; under `meta` and `reinsert` it is served for what is left
    /// of its `herd_timeout`, then the key is cold), on the cold path the lease key is deleted and the callers in this process
    /// that were waiting for that loader fail too, with [`Error::LoadFailed`], running no
    /// loader of their own (each used to run its own after the one before it failed, so the
    /// last of 50 waited 50 failures). So does a loaded value the cache cannot store (over
    /// the item size limit: its caller gets [`Error::Transport`] with `ValueTooLarge`). A TTL
    /// that expires at once (`Ttl::Seconds(0)`) stores nothing, so there is nothing to share:
    /// every such call runs its loader. A panicking loader releases the lease key and the
    /// flight too, and one of the waiters loads next. A loader that calls `get_or_set` of
    /// its own key (on this cache, or another built from the same URL) where that call would
    /// wait for the very load it runs in (the key cold) gets [`Error::Reentrant`] from it;
    /// on a refresh the inner call goes on as any reader's (docs/herd.md). `E` is the loader's error type, which must take the cache's errors
    /// too.
    pub fn get_or_try_set<T, E, F>(
        &self,
        key: &str,
        options: impl Into<SetOptions>,
        loader: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        block(
            self.core
                .get_or_try_set(&self.io(), key, options.into(), || {
                    std::future::ready(loader())
                }),
        )
    }

    /// Fetches a value with its CAS token, for a read-modify-write with [`Cache::cas`]
    /// (herd rules as for `get`: the reader that should recompute gets `None`).
    pub fn gets<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<(T, CasToken)>> {
        block(self.core.gets(&self.io(), key))
    }

    /// Stores `value` only if `key` still holds what [`Cache::gets`] read with `token`:
    /// [`Error::CasConflict`] when it was written or deleted in between (read again and
    /// retry). The value gets a new soft expiry like any `set`.
    pub fn cas<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        token: CasToken,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        block(self.core.cas(&self.io(), key, value, token, options.into()))
    }

    /// Adds bytes to the end of the value `key` holds; `false` when it holds none. For
    /// text and bytes values (a Python client then reads the longer text). Bytes added to a
    /// pickle are not seen by Python (its unpickler stops at the pickle's end and returns the
    /// old value) and make newcache's read of it a decode error; added to a bincode value
    /// they break it. The item keeps its
    /// flags and TTL, so a herd-protected value keeps its soft expiry. Refused
    /// ([`Error::NotAppendable`]) on a cache that compresses values or writes
    /// django-newcache's tuple.
    pub fn append(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<bool> {
        block(self.core.extend(&self.io(), key, bytes.as_ref(), false))
    }

    /// Adds bytes to the front of the value `key` holds; see [`Cache::append`]. Only for
    /// text and bytes values: bytes in front of a pickle (a `bool`, a value under
    /// `codec=pickle`, anything a Django app stored but text and numbers) make pymemcache
    /// and python-memcached, and Django's caches over them, read a miss (they drop a pickle
    /// that does not load), pylibmc raise, and newcache's read a decode error.
    pub fn prepend(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<bool> {
        block(self.core.extend(&self.io(), key, bytes.as_ref(), true))
    }

    /// Fetches a value and gives it a new TTL (and a herd-protected value a new soft
    /// expiry), as `get` then `touch`: two round trips.
    pub fn get_and_touch<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        options: impl Into<SetOptions>,
    ) -> Result<Option<T>> {
        block(self.core.get_and_touch(&self.io(), key, options.into()))
    }

    /// This cache at another key version, for one call or many (Django's `version=`
    /// argument): `cache.with_version(3)?.get("k")`. Shares the connections; needs a
    /// built-in key function.
    pub fn with_version(&self, version: impl fmt::Display) -> Result<Cache> {
        Ok(Cache {
            core: Arc::new(self.core.at_version(&version.to_string())?),
            transport: Arc::clone(&self.transport),
        })
    }

    /// Moves `key`'s value from this cache's version to that version plus `delta` (Django's
    /// `incr_version`) and returns the new version; the value keeps its flags and gets the
    /// default TTL, as in Django, its soft expiry moved with it (a bare value stays bare). [`Error::NotFound`] when the key
    /// holds no value; the version must be a number. A delta of 0 leaves the value as it is
    /// (Django's deletes it).
    pub fn incr_version(&self, key: &str, delta: i64) -> Result<i64> {
        block(
            self.core
                .move_version(&self.io(), "incr_version", key, delta.into()),
        )
    }

    /// [`Cache::incr_version`] by `-delta`.
    pub fn decr_version(&self, key: &str, delta: i64) -> Result<i64> {
        block(
            self.core
                .move_version(&self.io(), "decr_version", key, -i128::from(delta)),
        )
    }

    /// Closes the connections the transport holds idle (Django's `close`): the next call
    /// opens new ones. Calls in flight finish on theirs.
    pub fn close(&self) {
        self.transport.close();
    }

    /// The stale policy in effect: the one the cache was built with, except that a
    /// server-side policy (`herd=meta`) on a server that refuses meta commands (twemproxy,
    /// memcached before 1.6) is [`Policy::Lease`] from the first refusal of a meta command:
    /// the cache's first read, or the probe it sends before its first store. The switch is
    /// sticky, made once per cache, logged at WARN (feature `tracing`) and counted in
    /// `newcache_meta_fallbacks_total` (feature `metrics`); this accessor shows it too
    /// (`stale_policy().name()` turns from `"meta"` to `"lease"`). It sends nothing itself.
    pub fn stale_policy(&self) -> &dyn StalePolicy {
        self.core.stale_policy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn cache_is_send_sync_and_clone() {
        assert_send_sync::<Cache>();
    }

    #[test]
    fn set_options_convert_from_ttls_and_seconds() {
        assert_eq!(SetOptions::from(60), SetOptions::new(Ttl::Seconds(60)));
        assert_eq!(
            SetOptions::from(Ttl::Forever).no_herd(),
            SetOptions {
                ttl: Ttl::Forever,
                herd: Some(false)
            }
        );
    }

    #[cfg(feature = "text")]
    #[test]
    fn building_never_touches_a_server() {
        // A listener that records connections: building opens none, the first request one.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cache = Cache::from_url(&format!(
            "newcache://{addr}/?read_timeout=100&write_timeout=100"
        ))
        .unwrap();
        let clone = cache.clone();
        assert_eq!(
            clone.wire_key("games").unwrap(),
            b"-1-dd27204535de317c6202952eeb2043fad52e3fec"
        );
        // Let a connection, had one been started, reach the listener's queue.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            listener.accept().map(drop).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "building the cache connected to the server"
        );
        // The listener never answers, so the get fails (a read timeout), but it connected.
        assert!(cache.get::<String>("games").is_err());
        assert!(
            listener.accept().is_ok(),
            "the first request opens a connection"
        );
        // Nothing listens on port 1: building still succeeds at once.
        assert!(Cache::from_url("newcache://127.0.0.1:1/").is_ok());
    }
}
