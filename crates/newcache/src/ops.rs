//! Every cache operation, written once over an [`Io`]: the blocking [`Cache`](crate::Cache)
//! and the async `AsyncCache` both run these (see [`crate::io`]). What a cache is, apart
//! from its transport, is a [`Core`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use newcache_herd::{value_flags, Envelope, Herd, ReadDecision, StorePlan};
use newcache_transport::{Item, Store, StoreMode, StoreStatus};

use crate::herd_read::{Looked, Opened, Pending, Stamp};
use crate::io::Io;
use crate::read_through::Flight;
#[cfg(feature = "pickle")]
use crate::EnvelopeFormat;
use crate::{codec, Clock, Config, Error, GetMany, KeyFunction, Peeked, RawValue, Result};
use crate::{SetOptions, StalePolicy};

/// A cache apart from its transport: its settings, key function, clock and herd policy, and
/// what it learnt of its servers. Shared by the blocking and the async cache.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) key_function: Arc<dyn KeyFunction>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) herd: Herd,
    pub(crate) policy: Arc<dyn StalePolicy>,
    /// Set, for good, the first time a meta command comes back unsupported (twemproxy,
    /// memcached before 1.6): the cache then runs `lease` instead of its server-side policy.
    pub(crate) meta_unsupported: AtomicBool,
    /// Set once a probe (or any meta command) has told whether the servers speak meta.
    pub(crate) meta_probed: AtomicBool,
    /// In-process single flight of `get_or_set` loaders, by wire key.
    pub(crate) flights: Mutex<HashMap<Vec<u8>, Arc<Flight>>>,
}

/// What a read through the herd policy found.
pub(crate) enum Fetched<T> {
    /// A value to serve.
    Hit(T),
    /// The value is stale and this caller won the refresh: it should recompute.
    Recompute,
    /// No value at all.
    Cold,
}

/// A `store`'s value once encoded: already sent (by a transport that stores at once), or
/// owned, to be sent.
enum Encoded {
    Sent(newcache_transport::Result<StoreStatus>),
    Owned(Vec<u8>, u32),
}

/// The error for a value the codec could not encode.
pub(crate) fn encode_error(key: &str, e: codec::CodecError) -> Error {
    Error::Encode {
        key: key.to_owned(),
        detail: e.0,
    }
}

impl Core {
    pub(crate) fn new(
        config: Config,
        key_function: Arc<dyn KeyFunction>,
        clock: Arc<dyn Clock>,
        policy: Arc<dyn StalePolicy>,
    ) -> Core {
        let herd = Herd::new(config.herd_timeout);
        Core {
            config,
            key_function,
            clock,
            herd,
            policy,
            meta_unsupported: AtomicBool::new(false),
            meta_probed: AtomicBool::new(false),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The wire key `key` becomes, validated.
    pub(crate) fn wire_key(&self, key: &str) -> Result<Vec<u8>> {
        Ok(newcache_keyfn::make_key(self.key_function.as_ref(), key)?)
    }

    pub(crate) fn now_millis(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Decodes a fetched value, taking the item's buffer over (a `String` value is that
    /// buffer).
    pub(crate) fn decode_vec<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        item: Item,
        offset: usize,
        flags: u32,
    ) -> Result<T> {
        codec::decode_bounded(item.value, offset, flags, self.config.inflate_limit).map_err(|e| {
            Error::Decode {
                key: key.to_owned(),
                flags,
                detail: e.0,
            }
        })
    }

    /// Reads `wire` through the herd policy and decodes it.
    pub(crate) async fn fetch<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        key: &str,
        wire: &[u8],
    ) -> Result<Fetched<T>> {
        if self.meta(io).await {
            let recache = self.herd.herd_timeout.max(1);
            match io.meta_get(wire, recache).await {
                Ok(None) => return Ok(Fetched::Cold),
                Ok(Some(meta)) => {
                    let looked = self.look_meta(wire, meta, self.now_millis())?;
                    return match self.settle_now(io, wire, looked).await {
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

        let Some(item) = io.get(wire).await? else {
            return Ok(Fetched::Cold);
        };
        match self.open(io, wire, item, self.now_millis()).await? {
            Opened::Miss => Ok(Fetched::Recompute),
            Opened::Gone => Ok(Fetched::Cold),
            Opened::Value {
                item,
                offset,
                flags,
            } => self.decode_vec(key, item, offset, flags).map(Fetched::Hit),
        }
    }

    /// `get`: the value, or `None` on a miss (or for the reader who should recompute).
    pub(crate) async fn get<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        key: &str,
        wire: &[u8],
    ) -> Result<Option<T>> {
        Ok(match self.fetch(io, key, wire).await? {
            Fetched::Hit(v) => Some(v),
            Fetched::Recompute | Fetched::Cold => None,
        })
    }

    /// `get_raw`: a value's bytes and flags, herd rules applied.
    pub(crate) async fn get_raw<I: Io>(&self, io: &I, wire: &[u8]) -> Result<Option<RawValue>> {
        let Some(item) = io.get(wire).await? else {
            return Ok(None);
        };
        Ok(match self.open(io, wire, item, self.now_millis()).await? {
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
    }

    /// `get_many`: the values read, as a map keyed by the caller's keys, and the keys whose
    /// value could not be read.
    pub(crate) async fn get_many<I, K, T>(&self, io: &I, keys: &[K]) -> Result<GetMany<T>>
    where
        I: Io,
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        let mut out = HashMap::with_capacity(keys.len());
        let mut failed: Vec<(usize, Error)> = Vec::new();
        self.read_many(io, keys, |i, read: Result<T>| {
            let key = keys.get(i).map_or("", AsRef::as_ref);
            match read {
                Ok(value) => {
                    out.insert(key.to_owned(), value);
                }
                Err(e) => failed.push((i, e)),
            }
        })
        .await?;
        failed.sort_by_key(|(i, _)| *i);
        let failed = failed
            .into_iter()
            .map(|(i, e)| (keys.get(i).map_or("", AsRef::as_ref).to_owned(), e))
            .collect();
        Ok(GetMany::new(out, failed))
    }

    /// `get_many_ordered`: one entry per key, in order; a value that cannot be read fails
    /// the call with its error.
    pub(crate) async fn get_many_ordered<I, K, T>(
        &self,
        io: &I,
        keys: &[K],
    ) -> Result<Vec<Option<T>>>
    where
        I: Io,
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
        let mut first_error: Option<(usize, Error)> = None;
        self.read_many(io, keys, |i, read: Result<T>| match read {
            Ok(value) => {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(value);
                }
            }
            Err(e) => {
                if first_error.as_ref().is_none_or(|(at, _)| i < *at) {
                    first_error = Some((i, e));
                }
            }
        })
        .await?;
        match first_error {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    }

    /// Reads many keys in one round trip per server, then sends the stale values' stores
    /// (claims, re-stores) in one batch, and hands `found` each value read (or why it could
    /// not be), by the key's index. Misses are not handed over.
    async fn read_many<I, K, T>(
        &self,
        io: &I,
        keys: &[K],
        mut found: impl FnMut(usize, Result<T>),
    ) -> Result<()>
    where
        I: Io,
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        // Every wire key in one buffer: two allocations for the lot, not one per key.
        let mut buf = Vec::with_capacity(keys.len() * 64);
        let mut ends = Vec::with_capacity(keys.len());
        for k in keys {
            newcache_keyfn::write_valid_key(self.key_function.as_ref(), k.as_ref(), &mut buf)?;
            ends.push(buf.len());
        }
        let mut refs: Vec<&[u8]> = Vec::with_capacity(keys.len());
        let mut start = 0;
        for &end in &ends {
            refs.push(buf.get(start..end).unwrap_or_default());
            start = end;
        }
        let now = self.now_millis();
        let metas = if self.meta(io).await {
            let recache = self.herd.herd_timeout.max(1);
            match io.meta_get_many(&refs, recache).await {
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
        let mut stale: Vec<(usize, Pending)> = Vec::new();
        let mut take = |i: usize, looked: Option<Result<Looked>>| match looked {
            None => {}
            Some(Err(e)) => found(i, Err(e)),
            Some(Ok(Looked::Done(opened))) => self.decode_opened(keys, i, opened, &mut found),
            Some(Ok(Looked::Store(pending))) => stale.push((i, pending)),
        };
        match metas {
            Some(metas) => {
                for (i, (m, wire)) in metas.into_iter().zip(&refs).enumerate() {
                    take(i, m.map(|m| self.look_meta(wire, m, now)));
                }
            }
            None => {
                let items = io.get_many(&refs).await?;
                for (i, (item, wire)) in items.into_iter().zip(&refs).enumerate() {
                    take(i, item.map(|item| self.look(wire, item, now)));
                }
            }
        }
        if !stale.is_empty() {
            let statuses = self
                .send_pending(
                    io,
                    stale
                        .iter()
                        .filter_map(|(i, p)| refs.get(*i).map(|wire| (p, *wire))),
                )
                .await;
            let mut statuses = statuses.into_iter();
            for (i, pending) in stale {
                let opened = pending.settle(statuses.next());
                self.decode_opened(keys, i, opened, &mut found);
            }
        }
        Ok(())
    }

    /// Decodes one multi-get value, if the read opened to one, and hands it to `found`.
    fn decode_opened<K: AsRef<str>, T: DeserializeOwned + 'static>(
        &self,
        keys: &[K],
        i: usize,
        opened: Opened,
        found: &mut impl FnMut(usize, Result<T>),
    ) {
        if let Opened::Value {
            item,
            offset,
            flags,
        } = opened
        {
            let key = keys.get(i).map_or("", AsRef::as_ref);
            found(i, self.decode_vec(key, item, offset, flags));
        }
    }

    /// `has_key`: a value a `get` would return now; no side effects.
    pub(crate) async fn has_key<I: Io>(&self, io: &I, key: &str) -> Result<bool> {
        match self.peek(io, key).await {
            Ok(peeked) => Ok(peeked.is_some_and(|p| !p.stale)),
            // Herd state that does not open holds no value a `get` would return.
            Err(Error::Decode { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `peek`: what `key` holds, herd state read, with no side effects at all.
    pub(crate) async fn peek<I: Io>(&self, io: &I, key: &str) -> Result<Option<Peeked>> {
        let wire = self.wire_key(key)?;
        let Some(mut item) = io.get(&wire).await? else {
            return Ok(None);
        };
        let now = self.now_millis();
        let (stale, offset) = match self.opening(&wire, &item, now)? {
            None => (false, 0),
            Some(o) => (
                self.herd.on_read(&o.envelope, now) != ReadDecision::Fresh,
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

    /// Encodes a value for `key` per the options, recording in the herd state how long the
    /// value took to compute: (bytes, flags, exptime), or `None` when the TTL is zero (the
    /// value expires at once).
    pub(crate) async fn encode_computed<I: Io, T: Serialize + ?Sized>(
        &self,
        io: &I,
        key: &str,
        value: &T,
        options: SetOptions,
        compute_millis: u32,
    ) -> Result<Option<(Vec<u8>, u32, u32)>> {
        let now = self.now_millis();
        let Some(plan) = self.store_plan(io, options, now).await? else {
            return Ok(None);
        };
        Ok(Some(self.encode_planned(
            key,
            value,
            &plan,
            now,
            compute_millis,
        )?))
    }

    /// Encodes a value under a store plan: (bytes, flags, exptime).
    fn encode_planned<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        plan: &StorePlan,
        now: u64,
        compute_millis: u32,
    ) -> Result<(Vec<u8>, u32, u32)> {
        // Room for a small value, so typical values need no regrowth.
        let mut bytes = Vec::with_capacity(256);
        let flags = codec::encode(value, &mut bytes, self.config.codec)
            .map_err(|e| encode_error(key, e))?;
        let (bytes, flags) =
            self.finish(key, Cow::Owned(bytes), flags, plan, now, compute_millis)?;
        Ok((bytes.into_owned(), flags, plan.exptime))
    }

    /// How a store with these options goes now; `None` when the TTL is zero (the value
    /// expires at once).
    async fn store_plan<I: Io>(
        &self,
        io: &I,
        options: SetOptions,
        now: u64,
    ) -> Result<Option<StorePlan>> {
        let ttl = options.ttl.or_default(self.config.default_ttl);
        let herd = options.herd.unwrap_or(self.config.herd);
        let plan = self.herd.plan_store(ttl, herd, now)?;
        if plan.expire_now {
            return Ok(None);
        }
        // Under herd=meta, learn whether the servers speak meta before the first store.
        self.meta(io).await;
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
            (plan.soft_expiry_millis, self.config.envelope)
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
        let config = &self.config;
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

    /// `set`, `add`, `replace`: a zero TTL deletes (for `set`) or stores nothing.
    pub(crate) async fn store<I: Io, T: Serialize + ?Sized>(
        &self,
        io: &I,
        mode: StoreMode,
        key: &str,
        wire: &[u8],
        value: &T,
        options: SetOptions,
    ) -> Result<StoreStatus> {
        let now = self.now_millis();
        let Some(plan) = self.store_plan(io, options, now).await? else {
            if mode == StoreMode::Set {
                io.delete(wire).await?;
                return Ok(StoreStatus::Stored);
            }
            return Ok(StoreStatus::NotStored);
        };
        // A str or bytes value goes to a blocking transport as the caller's own bytes: no
        // copy of it in between. An async transport gets a copy (the caller's bytes cannot
        // be held across an await; its write buffer copies them anyway).
        let mut buf = Vec::new();
        let encoded = codec::with_encoding(value, self.config.codec, &mut buf, |bytes, flags| {
            let (bytes, flags) = self.finish(key, Cow::Borrowed(bytes), flags, &plan, now, 0)?;
            let request = Store {
                mode,
                key: wire,
                value: &bytes,
                flags,
                exptime: plan.exptime,
            };
            Ok::<_, Error>(match io.store_now(&request) {
                Some(outcome) => Encoded::Sent(outcome),
                None => Encoded::Owned(bytes.into_owned(), flags),
            })
        })
        .map_err(|e| encode_error(key, e))??;
        Ok(match encoded {
            Encoded::Sent(outcome) => outcome?,
            Encoded::Owned(bytes, flags) => {
                io.store(&Store {
                    mode,
                    key: wire,
                    value: &bytes,
                    flags,
                    exptime: plan.exptime,
                })
                .await?
            }
        })
    }

    /// `set_raw`: bytes and flags as given, herd rules as for `set`.
    pub(crate) async fn set_raw<I: Io>(
        &self,
        io: &I,
        key: &str,
        bytes: &[u8],
        flags: u32,
        options: SetOptions,
    ) -> Result<()> {
        let wire = self.wire_key(key)?;
        let ttl = options.ttl.or_default(self.config.default_ttl);
        let herd = options.herd.unwrap_or(self.config.herd);
        let now = self.now_millis();
        let plan = self.herd.plan_store(ttl, herd, now)?;
        if plan.expire_now {
            io.delete(&wire).await?;
            return Ok(());
        }
        let mut flags = value_flags(flags);
        if let Some(soft) = plan.soft_expiry_millis {
            flags |= self.herd_bits(Envelope::new(soft), now);
        }
        io.store(&Store::set(&wire, bytes, flags, plan.exptime))
            .await?;
        Ok(())
    }

    /// `set_many`: the keys that were not stored.
    pub(crate) async fn set_many<I, K, T, It>(
        &self,
        io: &I,
        items: It,
        options: SetOptions,
    ) -> Result<Vec<String>>
    where
        I: Io,
        It: IntoIterator<Item = (K, T)>,
        K: AsRef<str>,
        T: Serialize,
    {
        let now = self.now_millis();
        let plan = self.store_plan(io, options, now).await?;
        let mut keys = Vec::new();
        let mut encoded = Vec::new();
        let mut expired = Vec::new();
        for (key, value) in items {
            let key = key.as_ref();
            let wire = self.wire_key(key)?;
            match &plan {
                Some(plan) => {
                    let e = self.encode_planned(key, &value, plan, now, 0)?;
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
            io.delete_many_quiet(&refs).await?;
        }
        let requests: Vec<Store<'_>> = encoded
            .iter()
            .map(|(wire, (bytes, flags, exptime))| Store::set(wire, bytes, *flags, *exptime))
            .collect();
        let statuses = io.store_many(&requests).await?;
        Ok(keys
            .into_iter()
            .zip(statuses)
            .filter(|(_, s)| !s.is_stored())
            .map(|(k, _)| k)
            .collect())
    }

    /// `delete_many`: how many existed.
    pub(crate) async fn delete_many<I: Io, K: AsRef<str>>(
        &self,
        io: &I,
        keys: &[K],
    ) -> Result<usize> {
        let wires = keys
            .iter()
            .map(|k| self.wire_key(k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        Ok(io
            .delete_many(&refs)
            .await?
            .into_iter()
            .filter(|d| *d)
            .count())
    }

    /// `incr` / `decr`.
    pub(crate) async fn counter<I: Io>(
        &self,
        io: &I,
        key: &str,
        delta: u64,
        up: bool,
    ) -> Result<u64> {
        let wire = self.wire_key(key)?;
        match io.arith(&wire, delta, up).await {
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

    /// `touch`: a new TTL, and a new soft expiry for a herd-protected value.
    pub(crate) async fn touch<I: Io>(
        &self,
        io: &I,
        key: &str,
        options: SetOptions,
    ) -> Result<bool> {
        let wire = self.wire_key(key)?;
        let now = self.now_millis();
        let ttl = options.ttl.or_default(self.config.default_ttl);
        let herd = options.herd.unwrap_or(self.config.herd);
        let plan = self.herd.plan_store(ttl, herd, now)?;
        if plan.expire_now {
            return Ok(io.delete(&wire).await?);
        }
        let Some(item) = io.get(&wire).await? else {
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
            _ => return Ok(io.touch(&wire, plan.exptime).await?),
        };
        // The soft expiry lives in the flags (or in the value), which `touch` cannot change:
        // rewrite the same value with CAS, so a concurrent write wins.
        let mode = item.cas.map_or(StoreMode::Replace, StoreMode::Cas);
        let value = match &stamp.value {
            Some(v) => v.as_slice(),
            None => item.value.get(offset..).unwrap_or_default(),
        };
        let status = io
            .store(&Store {
                mode,
                key: &wire,
                value,
                flags: stamp.flags,
                exptime: plan.exptime,
            })
            .await?;
        Ok(status == StoreStatus::Stored || status == StoreStatus::Exists)
    }

    /// `invalidate`: the value marked stale, not deleted.
    pub(crate) async fn invalidate<I: Io>(&self, io: &I, key: &str) -> Result<bool> {
        let wire = self.wire_key(key)?;
        if self.meta(io).await {
            match io
                .meta_invalidate(&wire, self.herd.invalidated_exptime())
                .await
            {
                Ok(found) => return Ok(found),
                // No meta protocol here: lease from now on; invalidate through the flags.
                Err(e) if self.meta_refused(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }

        for _ in 0..3 {
            let Some(item) = io.get(&wire).await? else {
                return Ok(false);
            };
            let now = self.now_millis();
            let opening = self.opening(&wire, &item, now)?;
            let stale = self
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
                return Ok(io.delete(&wire).await?);
            };
            let offset = opening.as_ref().map_or(0, |o| o.offset);
            let value = match &stamp.value {
                Some(v) => v.as_slice(),
                None => item.value.get(offset..).unwrap_or_default(),
            };
            let mode = item.cas.map_or(StoreMode::Replace, StoreMode::Cas);
            let status = io
                .store(&Store {
                    mode,
                    key: &wire,
                    value,
                    flags: stamp.flags,
                    exptime: self.herd.invalidated_exptime(),
                })
                .await?;
            match status {
                StoreStatus::Stored => return Ok(true),
                StoreStatus::NotFound | StoreStatus::NotStored => return Ok(false),
                // Written in between: invalidate the newer value too.
                StoreStatus::Exists => continue,
            }
        }
        Ok(true)
    }
}
