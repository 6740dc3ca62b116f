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
//!   behaviors), `memory` (in-process, for tests). Asking for a transport whose feature is off
//!   is an error, never a silent fallback.
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

pub mod codec;
mod config;
mod error;
mod herd_read;
mod many;
mod read_through;

use herd_read::{Looked, Opened, Pending, Stamp};
use read_through::Flight;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use codec::ValueCodec;
pub use config::{
    Builder, Config, EnvelopeFormat, KeyFunctionKind, Secret, TransportKind, WireProtocol,
};
pub use error::{Error, Result};
pub use many::GetMany;
pub use newcache_herd::{
    Clock, ManualClock, Policy, StaleAction, StalePolicy, SystemClock, Ttl, Xfetch, HERD_FLAG,
};
pub use newcache_keyfn::{HashedKey, InvalidKey, KeyFunction, PrefixedKey};
pub use newcache_transport::{self as transport, Item, Transport};

use newcache_herd::{value_flags, Envelope, Herd, ReadDecision, StorePlan};
use newcache_transport::{Store, StoreMode, StoreStatus};

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

/// A value as stored: its bytes and its type flags (the herd bits removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    /// The value's bytes.
    pub bytes: Vec<u8>,
    /// The value's flags (the herd bit removed).
    pub flags: u32,
}

impl RawValue {
    /// The value for people: text and numbers as they are, anything else described.
    pub fn display(&self) -> String {
        codec::display(&self.bytes, self.flags)
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

struct Inner {
    config: Config,
    key_function: Arc<dyn KeyFunction>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    herd: Herd,
    policy: Arc<dyn StalePolicy>,
    /// Set, for good, the first time a meta command comes back unsupported (twemproxy,
    /// memcached before 1.6): the cache then runs `lease` instead of its server-side policy.
    meta_unsupported: AtomicBool,
    /// Set once a probe (or any meta command) has told whether the servers speak meta.
    meta_probed: AtomicBool,
    /// In-process single flight of `get_or_set` loaders, by wire key.
    flights: Mutex<HashMap<Vec<u8>, Arc<Flight>>>,
}

/// What a read through the herd policy found.
enum Fetched<T> {
    /// A value to serve.
    Hit(T),
    /// The value is stale and this caller won the refresh: it should recompute.
    Recompute,
    /// No value at all.
    Cold,
}

/// The error for a value the codec could not encode.
fn encode_error(key: &str, e: codec::CodecError) -> Error {
    Error::Encode {
        key: key.to_owned(),
        detail: e.0,
    }
}

/// A memcached cache: `Send + Sync`, cheap to clone (clones share connections).
///
/// Build one with [`Cache::from_url`] or [`Cache::builder`]. Building never blocks on a
/// server; connections open on first use and reopen after a server comes back.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.inner.config)
            .field("transport", &self.inner.transport)
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

    pub(crate) fn from_parts(
        config: Config,
        key_function: Arc<dyn KeyFunction>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        policy: Arc<dyn StalePolicy>,
    ) -> Cache {
        let herd = Herd::new(config.herd_timeout);
        Cache {
            inner: Arc::new(Inner {
                config,
                key_function,
                transport,
                clock,
                herd,
                policy,
                meta_unsupported: AtomicBool::new(false),
                meta_probed: AtomicBool::new(false),
                flights: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The transport underneath (for tools and tests).
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    /// The wire key `key` becomes, validated. Needs no server.
    pub fn wire_key(&self, key: &str) -> Result<Vec<u8>> {
        Ok(newcache_keyfn::make_key(
            self.inner.key_function.as_ref(),
            key,
        )?)
    }

    /// Runs `f` on the validated wire key of `key`, built in a buffer this thread reuses, so
    /// the read path allocates nothing for keys. (A nested call, e.g. from a loader, builds its
    /// own.)
    fn with_wire_key<R>(&self, key: &str, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        thread_local! {
            static WIRE_KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        WIRE_KEY.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                newcache_keyfn::write_valid_key(self.inner.key_function.as_ref(), key, &mut buf)?;
                f(&buf)
            }
            Err(_) => f(&self.wire_key(key)?),
        })
    }

    fn now_millis(&self) -> u64 {
        self.inner.clock.now_millis()
    }

    /// Decodes a fetched value, taking the item's buffer over (a `String` value is that
    /// buffer).
    fn decode_vec<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        item: Item,
        offset: usize,
        flags: u32,
    ) -> Result<T> {
        codec::decode_bounded(item.value, offset, flags, self.inner.config.inflate_limit).map_err(
            |e| Error::Decode {
                key: key.to_owned(),
                flags,
                detail: e.0,
            },
        )
    }

    /// Fetches and decodes a value; `None` on a miss (or for the first reader after its
    /// soft expiry, who should recompute it).
    pub fn get<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<T>> {
        self.with_wire_key(key, |wire| {
            Ok(match self.fetch(key, wire)? {
                Fetched::Hit(v) => Some(v),
                Fetched::Recompute | Fetched::Cold => None,
            })
        })
    }

    fn fetch<T: DeserializeOwned + 'static>(&self, key: &str, wire: &[u8]) -> Result<Fetched<T>> {
        if self.meta() {
            let recache = self.inner.herd.herd_timeout.max(1);
            match self.inner.transport.meta_get(wire, recache) {
                Ok(None) => return Ok(Fetched::Cold),
                Ok(Some(meta)) => {
                    return match self.open_meta(wire, meta, self.now_millis())? {
                        Opened::Miss => Ok(Fetched::Recompute),
                        Opened::Gone => Ok(Fetched::Cold),
                        Opened::Value {
                            item,
                            offset,
                            flags,
                        } => self.decode_vec(key, item, offset, flags).map(Fetched::Hit),
                    };
                }
                // No meta protocol here: lease from now on, starting with this read.
                Err(e) if self.meta_refused(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }

        let Some(item) = self.inner.transport.get(wire)? else {
            return Ok(Fetched::Cold);
        };
        match self.open(wire, item, self.now_millis())? {
            Opened::Miss => Ok(Fetched::Recompute),
            Opened::Gone => Ok(Fetched::Cold),
            Opened::Value {
                item,
                offset,
                flags,
            } => self.decode_vec(key, item, offset, flags).map(Fetched::Hit),
        }
    }

    /// Fetches a value's bytes and flags without decoding (herd rules apply as for `get`).
    pub fn get_raw(&self, key: &str) -> Result<Option<RawValue>> {
        self.with_wire_key(key, |wire| {
            let Some(item) = self.inner.transport.get(wire)? else {
                return Ok(None);
            };
            Ok(match self.open(wire, item, self.now_millis())? {
                Opened::Miss | Opened::Gone => None,
                Opened::Value {
                    mut item,
                    offset,
                    flags,
                } => {
                    item.value.drain(..offset);
                    Some(RawValue {
                        bytes: item.value,
                        flags,
                    })
                }
            })
        })
    }

    /// Fetches many values in one round trip per server. The result reads as a map keyed by
    /// the caller's own keys, holding the hits only; a value that is there but cannot be
    /// decoded is left out of it and listed in [`GetMany::failed`] with its error, so the
    /// others still arrive. A failure of the servers fails the call.
    pub fn get_many<K, T>(&self, keys: &[K]) -> Result<GetMany<T>>
    where
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        // Every wire key in one buffer: two allocations for the lot, not one per key.
        let mut buf = Vec::with_capacity(keys.len() * 64);
        let mut ends = Vec::with_capacity(keys.len());
        for k in keys {
            newcache_keyfn::write_valid_key(
                self.inner.key_function.as_ref(),
                k.as_ref(),
                &mut buf,
            )?;
            ends.push(buf.len());
        }
        let mut refs: Vec<&[u8]> = Vec::with_capacity(keys.len());
        let mut start = 0;
        for &end in &ends {
            refs.push(buf.get(start..end).unwrap_or_default());
            start = end;
        }
        let now = self.now_millis();
        let metas = if self.meta() {
            let recache = self.inner.herd.herd_timeout.max(1);
            match self.inner.transport.meta_get_many(&refs, recache) {
                Ok(metas) => Some(metas),
                // No meta protocol here: lease from now on, starting with this read.
                Err(e) if self.meta_refused(&e) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        // One pass: a fresh value is decoded as it comes; a stale one's store (claim or
        // re-store) waits, so that all of them go out in one batch.
        let mut out = HashMap::with_capacity(keys.len());
        let mut failed: Vec<(usize, Error)> = Vec::new();
        let mut stale: Vec<(usize, Pending)> = Vec::new();
        let looks: Box<dyn Iterator<Item = Option<Result<Looked>>> + '_> = match metas {
            Some(metas) => Box::new(
                metas
                    .into_iter()
                    .zip(&refs)
                    .map(|(m, wire)| m.map(|m| self.look_meta(wire, m, now))),
            ),
            None => Box::new(
                self.inner
                    .transport
                    .get_many(&refs)?
                    .into_iter()
                    .zip(&refs)
                    .map(|(item, wire)| item.map(|item| self.look(wire, item, now))),
            ),
        };
        for (i, looked) in looks.enumerate() {
            match looked {
                None => {}
                Some(Err(e)) => failed.push((i, e)),
                Some(Ok(Looked::Done(opened))) => {
                    self.decode_into(keys, i, opened, &mut out, &mut failed)
                }
                Some(Ok(Looked::Store(pending))) => stale.push((i, pending)),
            }
        }
        if !stale.is_empty() {
            let statuses = self.send_pending(
                stale
                    .iter()
                    .filter_map(|(i, p)| refs.get(*i).map(|wire| (p, *wire))),
            );
            let mut statuses = statuses.into_iter();
            for (i, pending) in stale {
                let opened = pending.settle(statuses.next());
                self.decode_into(keys, i, opened, &mut out, &mut failed);
            }
            failed.sort_by_key(|(i, _)| *i);
        }
        let failed = failed
            .into_iter()
            .map(|(i, e)| (keys.get(i).map_or("", AsRef::as_ref).to_owned(), e))
            .collect();
        Ok(GetMany::new(out, failed))
    }

    /// Decodes one `get_many` value into the map, or records why it could not be.
    fn decode_into<K: AsRef<str>, T: DeserializeOwned + 'static>(
        &self,
        keys: &[K],
        i: usize,
        opened: Opened,
        out: &mut HashMap<String, T>,
        failed: &mut Vec<(usize, Error)>,
    ) {
        if let Opened::Value {
            item,
            offset,
            flags,
        } = opened
        {
            let key = keys.get(i).map_or("", AsRef::as_ref);
            match self.decode_vec(key, item, offset, flags) {
                Ok(value) => {
                    out.insert(key.to_owned(), value);
                }
                Err(e) => failed.push((i, e)),
            }
        }
    }

    /// True when `key` holds a value a `get` would return now. Has no side effects: a stale
    /// value is reported absent but left for the next `get` to handle.
    pub fn has_key(&self, key: &str) -> Result<bool> {
        match self.peek(key) {
            Ok(peeked) => Ok(peeked.is_some_and(|p| !p.stale)),
            // Herd state that does not open holds no value a `get` would return.
            Err(Error::Decode { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What `key` holds, herd state read, with no side effects at all: a value past its
    /// soft expiry is returned (with `stale` set) and left for the next `get` to handle, so
    /// looking never claims a refresh nor re-stores anything. For tools and operators (the
    /// CLI's `get`); services read with [`get`](Cache::get).
    pub fn peek(&self, key: &str) -> Result<Option<Peeked>> {
        let wire = self.wire_key(key)?;
        let Some(mut item) = self.inner.transport.get(&wire)? else {
            return Ok(None);
        };
        let now = self.now_millis();
        let (stale, offset) = match self.opening(&wire, &item, now)? {
            None => (false, 0),
            Some(o) => (
                self.inner.herd.on_read(&o.envelope, now) != ReadDecision::Fresh,
                o.offset,
            ),
        };
        item.value.drain(..offset);
        Ok(Some(Peeked {
            value: RawValue {
                bytes: item.value,
                flags: value_flags(item.flags),
            },
            stale,
        }))
    }

    /// Encodes a value for `key` per the options: (bytes, flags, exptime), or `None` when the
    /// TTL is zero (the value expires at once).
    fn encode<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: SetOptions,
        now: u64,
    ) -> Result<Option<(Vec<u8>, u32, u32)>> {
        self.encode_computed(key, value, options, now, 0)
    }

    /// Like `encode`, recording in the herd state how long the value took to compute.
    fn encode_computed<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: SetOptions,
        now: u64,
        compute_millis: u32,
    ) -> Result<Option<(Vec<u8>, u32, u32)>> {
        let Some(plan) = self.store_plan(options, now)? else {
            return Ok(None);
        };
        // Room for a small value, so typical values need no regrowth.
        let mut bytes = Vec::with_capacity(256);
        let flags = codec::encode(value, &mut bytes, self.inner.config.codec)
            .map_err(|e| encode_error(key, e))?;
        let (bytes, flags) =
            self.finish(key, Cow::Owned(bytes), flags, &plan, now, compute_millis)?;
        Ok(Some((bytes.into_owned(), flags, plan.exptime)))
    }

    /// How a store with these options goes now; `None` when the TTL is zero (the value
    /// expires at once).
    fn store_plan(&self, options: SetOptions, now: u64) -> Result<Option<StorePlan>> {
        let ttl = options.ttl.or_default(self.inner.config.default_ttl);
        let herd = options.herd.unwrap_or(self.inner.config.herd);
        let plan = self.inner.herd.plan_store(ttl, herd, now)?;
        if plan.expire_now {
            return Ok(None);
        }
        // Under herd=meta, learn whether the servers speak meta before the first store.
        self.meta();
        Ok(Some(plan))
    }

    /// An encoded value as it goes on the wire: in django-newcache's tuple when the cache
    /// writes that format, zlib-compressed when told to and smaller, and its flags with the
    /// herd bits. Borrowed bytes stay borrowed unless one of those rewrites them.
    fn finish<'b>(
        &self,
        key: &str,
        bytes: Cow<'b, [u8]>,
        flags: u32,
        plan: &StorePlan,
        now: u64,
        compute_millis: u32,
    ) -> Result<(Cow<'b, [u8]>, u32)> {
        #[cfg(feature = "pickle")]
        if let (Some(soft), EnvelopeFormat::DjangoNewcache) =
            (plan.soft_expiry_millis, self.inner.config.envelope)
        {
            // django-newcache's tuple carries the soft expiry itself, in Unix seconds.
            let tuple = codec::pickle::wrap_marker(&bytes, flags, soft / 1000)
                .map_err(|e| encode_error(key, e))?;
            return Ok(self.compress(Cow::Owned(tuple), codec::FLAG_PICKLE));
        }
        let _ = key;
        let (bytes, mut flags) = self.compress(bytes, flags);
        // The soft expiry rides in the flags, the value stays as Python reads it. Under the
        // meta policy too: the server decides the win, and a cache that falls back to lease
        // (or reads with another policy) finds the same protection.
        if let Some(soft) = plan.soft_expiry_millis {
            let envelope = Envelope {
                soft_expiry_millis: soft,
                compute_millis,
            };
            flags |= self.herd_bits(envelope, now);
        }
        Ok((bytes, flags))
    }

    /// Compresses an encoded value as pylibmc does (flag 8) when the cache is told to and it
    /// gets smaller; values past the inflate limit stay as they are, so every value this cache
    /// writes, it can read.
    fn compress<'b>(&self, bytes: Cow<'b, [u8]>, flags: u32) -> (Cow<'b, [u8]>, u32) {
        let config = &self.inner.config;
        match config.compress_threshold {
            Some(threshold) if bytes.len() >= threshold && bytes.len() <= config.inflate_limit => {
                match codec::deflate(&bytes) {
                    Some(compressed) => (Cow::Owned(compressed), flags | codec::FLAG_ZLIB),
                    None => (bytes, flags),
                }
            }
            _ => (bytes, flags),
        }
    }

    fn store<T: Serialize + ?Sized>(
        &self,
        mode: StoreMode,
        key: &str,
        value: &T,
        options: SetOptions,
    ) -> Result<StoreStatus> {
        self.with_wire_key(key, |wire| {
            let now = self.now_millis();
            let Some(plan) = self.store_plan(options, now)? else {
                if mode == StoreMode::Set {
                    self.inner.transport.delete(wire)?;
                    return Ok(StoreStatus::Stored);
                }
                return Ok(StoreStatus::NotStored);
            };
            // A str or bytes value goes to the transport as the caller's own bytes: no copy
            // of it in between.
            let mut buf = Vec::new();
            codec::with_encoding(value, self.inner.config.codec, &mut buf, |bytes, flags| {
                let (bytes, flags) =
                    self.finish(key, Cow::Borrowed(bytes), flags, &plan, now, 0)?;
                Ok(self.inner.transport.store(&Store {
                    mode,
                    key: wire,
                    value: &bytes,
                    flags,
                    exptime: plan.exptime,
                })?)
            })
            .map_err(|e| encode_error(key, e))?
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

    /// Stores a value only if `key` holds none; `true` when stored.
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

    /// Stores a value only if `key` holds one; `true` when stored.
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
    pub fn set_raw(
        &self,
        key: &str,
        bytes: &[u8],
        flags: u32,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        let wire = self.wire_key(key)?;
        let options = options.into();
        let ttl = options.ttl.or_default(self.inner.config.default_ttl);
        let herd = options.herd.unwrap_or(self.inner.config.herd);
        let now = self.now_millis();
        let plan = self.inner.herd.plan_store(ttl, herd, now)?;
        if plan.expire_now {
            self.inner.transport.delete(&wire)?;
            return Ok(());
        }
        let mut flags = value_flags(flags);
        if let Some(soft) = plan.soft_expiry_millis {
            flags |= self.herd_bits(Envelope::new(soft), now);
        }
        self.inner
            .transport
            .store(&Store::set(&wire, bytes, flags, plan.exptime))?;
        Ok(())
    }

    /// Stores many values, one round trip per server. Unlike django-newcache's `set_many`,
    /// the items' real TTL includes the herd timeout, exactly as `set` does. Returns the keys
    /// that were not stored.
    ///
    /// An error (a server down, a value over the item size limit) fails the call as a whole,
    /// but the items for the other servers were still sent and may be stored: after an
    /// error, read back what matters, or write again.
    pub fn set_many<K, T, I>(&self, items: I, options: impl Into<SetOptions>) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = (K, T)>,
        K: AsRef<str>,
        T: Serialize,
    {
        let options = options.into();
        let now = self.now_millis();
        let mut keys = Vec::new();
        let mut encoded = Vec::new();
        let mut expired = Vec::new();
        for (key, value) in items {
            let key = key.as_ref();
            let wire = self.wire_key(key)?;
            match self.encode(key, &value, options, now)? {
                Some(e) => {
                    keys.push(key.to_owned());
                    encoded.push((wire, e));
                }
                None => expired.push(wire),
            }
        }
        if !expired.is_empty() {
            // The deletes' results are not needed (the keys are gone either way), so they go
            // without per-key replies where the transport can (`delete ... noreply`).
            let refs: Vec<&[u8]> = expired.iter().map(Vec::as_slice).collect();
            self.inner.transport.delete_many_quiet(&refs)?;
        }
        let requests: Vec<Store<'_>> = encoded
            .iter()
            .map(|(wire, (bytes, flags, exptime))| Store::set(wire, bytes, *flags, *exptime))
            .collect();
        let statuses = self.inner.transport.store_many(&requests)?;
        Ok(keys
            .into_iter()
            .zip(statuses)
            .filter(|(_, s)| !s.is_stored())
            .map(|(k, _)| k)
            .collect())
    }

    /// Deletes a value; `true` when there was one.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let wire = self.wire_key(key)?;
        Ok(self.inner.transport.delete(&wire)?)
    }

    /// Deletes many values, one round trip per server; returns how many existed.
    pub fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<usize> {
        let wires = keys
            .iter()
            .map(|k| self.wire_key(k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        Ok(self
            .inner
            .transport
            .delete_many(&refs)?
            .into_iter()
            .filter(|d| *d)
            .count())
    }

    fn counter(&self, key: &str, delta: u64, up: bool) -> Result<u64> {
        let wire = self.wire_key(key)?;
        let result = if up {
            self.inner.transport.incr(&wire, delta)
        } else {
            self.inner.transport.decr(&wire, delta)
        };
        match result {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(Error::NotFound {
                key: key.to_owned(),
            }),
            Err(newcache_transport::Error::Client { message, .. })
                if message.contains("non-numeric") =>
            {
                Err(Error::NotNumeric {
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds `delta` to a counter (wrapping at 2^64) and returns the new value. A missing key
    /// is [`Error::NotFound`]; store counters with herd off ([`SetOptions::no_herd`]).
    pub fn incr(&self, key: &str, delta: u64) -> Result<u64> {
        self.counter(key, delta, true)
    }

    /// Subtracts `delta` from a counter (stopping at 0) and returns the new value.
    pub fn decr(&self, key: &str, delta: u64) -> Result<u64> {
        self.counter(key, delta, false)
    }

    /// Gives a value a new TTL; `false` when the key holds none. A herd-protected value gets a
    /// new soft expiry too (rewritten with CAS, so a concurrent write wins).
    pub fn touch(&self, key: &str, options: impl Into<SetOptions>) -> Result<bool> {
        let wire = self.wire_key(key)?;
        let options = options.into();
        let now = self.now_millis();
        let ttl = options.ttl.or_default(self.inner.config.default_ttl);
        let herd = options.herd.unwrap_or(self.inner.config.herd);
        let plan = self.inner.herd.plan_store(ttl, herd, now)?;
        if plan.expire_now {
            return self.delete(key);
        }
        let Some(item) = self.inner.transport.get(&wire)? else {
            return Ok(false);
        };
        let opening = self.opening(&wire, &item, now)?;
        let stamp = match (&opening, plan.soft_expiry_millis) {
            (Some(o), Some(soft)) => self.restamp(&item, o, Envelope::new(soft), now),
            (Some(o), None) if o.seed.is_none() => Some(Stamp {
                flags: value_flags(item.flags),
                value: None,
            }),
            (None, Some(soft)) => Some(Stamp {
                flags: item.flags | self.herd_bits(Envelope::new(soft), now),
                value: None,
            }),
            // Bare stays bare; a django-newcache tuple keeps its own expiry.
            _ => None,
        };
        let offset = opening.as_ref().map_or(0, |o| o.offset);
        let stamp = match stamp {
            Some(stamp) if offset != 0 || stamp.value.is_some() || stamp.flags != item.flags => {
                stamp
            }
            _ => return Ok(self.inner.transport.touch(&wire, plan.exptime)?),
        };
        // The soft expiry lives in the flags (or in the value), which `touch` cannot change:
        // rewrite the same value with CAS, so a concurrent write wins.
        let mode = item.cas.map_or(StoreMode::Replace, StoreMode::Cas);
        let value = match &stamp.value {
            Some(v) => v.as_slice(),
            None => item.value.get(offset..).unwrap_or_default(),
        };
        let status = self.inner.transport.store(&Store {
            mode,
            key: &wire,
            value,
            flags: stamp.flags,
            exptime: plan.exptime,
        })?;
        Ok(status == StoreStatus::Stored || status == StoreStatus::Exists)
    }

    /// Marks a value stale instead of deleting it (the usual invalidation on write): the next
    /// reader recomputes under the cache's herd policy, while the others are served the old
    /// value for up to twice the herd timeout. `false` when the key holds no value.
    /// [`Cache::delete`] still deletes.
    pub fn invalidate(&self, key: &str) -> Result<bool> {
        let wire = self.wire_key(key)?;
        if self.meta() {
            match self
                .inner
                .transport
                .meta_invalidate(&wire, self.inner.herd.invalidated_exptime())
            {
                Ok(found) => return Ok(found),
                // No meta protocol here: lease from now on; invalidate through the flags.
                Err(e) if self.meta_refused(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }

        for _ in 0..3 {
            let Some(item) = self.inner.transport.get(&wire)? else {
                return Ok(false);
            };
            let now = self.now_millis();
            let opening = self.opening(&wire, &item, now)?;
            let stale = self
                .inner
                .herd
                .invalidated(opening.as_ref().map(|o| &o.envelope), now);
            let stamp = match &opening {
                Some(o) => self.restamp(&item, o, stale, now),
                None => Some(Stamp {
                    flags: item.flags | self.herd_bits(stale, now),
                    value: None,
                }),
            };
            let Some(stamp) = stamp else {
                // A django-newcache tuple whose expiry cannot move: delete it instead.
                return Ok(self.inner.transport.delete(&wire)?);
            };
            let offset = opening.as_ref().map_or(0, |o| o.offset);
            let value = match &stamp.value {
                Some(v) => v.as_slice(),
                None => item.value.get(offset..).unwrap_or_default(),
            };
            let mode = item.cas.map_or(StoreMode::Replace, StoreMode::Cas);
            let status = self.inner.transport.store(&Store {
                mode,
                key: &wire,
                value,
                flags: stamp.flags,
                exptime: self.inner.herd.invalidated_exptime(),
            })?;
            match status {
                StoreStatus::Stored => return Ok(true),
                StoreStatus::NotFound | StoreStatus::NotStored => return Ok(false),
                // Written in between: invalidate the newer value too.
                StoreStatus::Exists => continue,
            }
        }
        Ok(true)
    }

    /// Invalidates every value on every server (`flush_all`).
    pub fn clear(&self) -> Result<()> {
        Ok(self.inner.transport.flush_all()?)
    }

    /// Every server's statistics.
    pub fn stats(&self) -> Result<Vec<newcache_transport::ServerStats>> {
        Ok(self.inner.transport.stats()?)
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
