//! Every cache operation, written once over an [`Io`]: the blocking [`Cache`](crate::Cache)
//! and the async `AsyncCache` both run these (see [`crate::io`]). What a cache is, apart
//! from its transport, is a [`Core`]; this file holds the reads, [`crate::write`] the
//! writes, [`crate::read_through`] `get_or_set`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use newcache_herd::{value_flags, Herd, ReadDecision, StaleAction};
use newcache_transport::{Item, MadeKeys, StoreMode, StoreStatus};

use crate::herd_read::{Looked, Opened, Over, Pending};
use crate::io::{meanwhile as io_meanwhile, Io};
use crate::many::Filling;
use crate::observe::{Event, Observer};
use crate::read_through::Flights;
use crate::wire_keys::WireKeys;
use crate::StalePolicy;
use crate::{codec, Clock, Config, Error, GetMany, KeyFunction, Peeked, RawValue, Result};

/// A cache apart from its transport: its settings, key function, clock and herd policy, and
/// what it learnt of its servers. Shared by the blocking and the async cache.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) key_function: Arc<dyn KeyFunction>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) herd: Herd,
    pub(crate) policy: Arc<dyn StalePolicy>,
    /// The policy serves every fresh value as it is ([`StalePolicy::serves_fresh`]; under
    /// `herd=meta` its fallback, `lease`, does too), read on every read's hot path.
    pub(crate) serves_fresh: bool,
    /// Set, for good, the first time a meta command comes back unsupported (twemproxy,
    /// memcached before 1.6): the cache then runs `lease` instead of its server-side policy.
    /// Shared with the cache at other versions ([`Core::at_version`]), as the servers are.
    pub(crate) meta_unsupported: Arc<AtomicBool>,
    /// Set once a probe (or any meta command) has told whether the servers speak meta;
    /// shared as `meta_unsupported` is: a per-call version probed again before its first
    /// store, one more round trip each time (an outside audit: 1,000 `with_version(3)` sets
    /// under meta took 133 ms against 63 ms).
    pub(crate) meta_probed: Arc<AtomicBool>,
    /// In-process single flight of `get_or_set` loaders, by wire key (which holds the
    /// version): shared with the cache at other versions too, and with every cache of the
    /// process on the same servers ([`flights_of`](crate::read_through::flights_of)).
    pub(crate) flights: Flights,
    /// Metrics and traces (features `metrics`, `tracing`).
    pub(crate) observer: Observer,
    /// True when the key function is the configuration's own (so a per-call version can
    /// build the same one at another version).
    pub(crate) builtin_key_function: bool,
}

/// What a read through the herd policy found.
pub(crate) enum Fetched<T> {
    /// A value to serve.
    Hit(T),
    /// The value is stale and this caller won the refresh: it should recompute, and store
    /// its value over this.
    Recompute(Over),
    /// No value at all.
    Cold,
}

/// A `store`'s value once encoded: already sent (by a transport that stores at once), or
/// owned, to be sent.
pub(crate) enum Encoded {
    Sent(newcache_transport::Result<StoreStatus>),
    Owned(Vec<u8>, u32),
}

/// The operation name a store runs as, in metrics and traces.
pub(crate) fn store_op(mode: StoreMode) -> &'static str {
    match mode {
        StoreMode::Set => "set",
        StoreMode::Add => "add",
        StoreMode::Replace => "replace",
        StoreMode::Cas(_) => "cas",
        StoreMode::Append => "append",
        StoreMode::Prepend => "prepend",
    }
}

/// A codec's message cut to its first 300 characters: a message that quotes the value
/// (a serde error of the caller's own type, say) must not carry a megabyte of it into logs.
pub(crate) fn bounded_detail(detail: String) -> String {
    const SHOWN: usize = 300;
    match detail.char_indices().nth(SHOWN) {
        None => detail,
        Some((end, _)) => format!(
            "{}... ({} bytes of message)",
            detail.get(..end).unwrap_or_default(),
            detail.len()
        ),
    }
}

/// What a key held when an `add` of it was refused ([`Core::held`]).
pub(crate) enum Held {
    /// A value a `get` would return, or one the server (or the policy) keeps serving.
    Value,
    /// A value past its soft expiry, with its item's CAS unique: no value a `get` returns.
    Past(u64),
    /// Nothing any more (it expired, or was deleted, since the `add`).
    Nothing,
}

/// The error for a value the codec could not encode.
pub(crate) fn encode_error(key: &str, e: codec::CodecError) -> Error {
    Error::Encode {
        key: key.to_owned(),
        detail: bounded_detail(e.0),
    }
}

impl Core {
    pub(crate) fn new(
        config: Config,
        key_function: Option<Arc<dyn KeyFunction>>,
        clock: Arc<dyn Clock>,
        policy: Arc<dyn StalePolicy>,
    ) -> Core {
        let builtin_key_function = key_function.is_none();
        let key_function = key_function.unwrap_or_else(|| config.builtin_key_function());
        let herd = Herd::new(config.herd_timeout);
        let observer = Observer::new(&config.name);
        let serves_fresh = policy.serves_fresh();
        Core {
            serves_fresh,
            observer,
            builtin_key_function,
            config,
            key_function,
            clock,
            herd,
            policy,
            meta_unsupported: Arc::new(AtomicBool::new(false)),
            meta_probed: Arc::new(AtomicBool::new(false)),
            flights: Flights::default(),
        }
    }

    /// The same cache at another key version (Django's per-call `version=`): a core of its
    /// own on the same transport, sharing what this one knows of the servers (whether they
    /// speak meta) and its single flights (by wire key, which holds the version). Only with
    /// a built-in key function, which the version is part of.
    pub(crate) fn at_version(&self, version: &str) -> Result<Core> {
        if !self.builtin_key_function {
            return Err(Error::Config(
                "a per-call version needs a built-in key function (newcache's or Django's), which the version is part of; a custom KeyFunction makes its own keys".into(),
            ));
        }
        let mut config = self.config.clone();
        config.version = version.to_owned();
        config.validate()?;
        let mut core = Core::new(
            config,
            None,
            Arc::clone(&self.clock),
            Arc::clone(&self.policy),
        );
        core.meta_unsupported = Arc::clone(&self.meta_unsupported);
        core.meta_probed = Arc::clone(&self.meta_probed);
        core.flights = Arc::clone(&self.flights);
        Ok(core)
    }

    /// This core's version plus `delta`, and the core at it.
    pub(crate) fn version_plus(&self, delta: i128) -> Result<(Core, i64)> {
        let current: i64 = self.config.version.parse().map_err(|_| {
            Error::Config(format!(
                "version {:?} is not a number; incr_version and decr_version need a numeric version",
                self.config.version
            ))
        })?;
        // In i128, so that `decr_version` by `i64::MIN` is a subtraction like any other (its
        // negation, clamped to `i64::MAX`, moved the value one version off: an outside audit).
        let version = i64::try_from(i128::from(current) + delta)
            .map_err(|_| Error::Config("the version would overflow".into()))?;
        Ok((self.at_version(&version.to_string())?, version))
    }

    /// The wire key `key` becomes, validated.
    pub(crate) fn wire_key(&self, key: &str) -> Result<Vec<u8>> {
        Ok(newcache_keyfn::make_key(self.key_function.as_ref(), key)?)
    }

    /// Runs `f` on the validated wire key of `key`, built in a buffer this thread reuses, so
    /// the read path allocates nothing for keys. (A nested call, e.g. from a loader, builds
    /// its own.)
    pub(crate) fn with_wire_key<R>(
        &self,
        key: &str,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        thread_local! {
            static WIRE_KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        WIRE_KEY.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                newcache_keyfn::write_valid_key(self.key_function.as_ref(), key, &mut buf)?;
                f(&buf)
            }
            Err(_) => f(&self.wire_key(key)?),
        })
    }

    /// The validated wire key of `key`, owned as a [`ShortKey`](newcache_transport::ShortKey)
    /// (inline up to 62 bytes, as newcache's hashed keys are): an async call keeps it across
    /// its awaits with no allocation, and its future stays small (a 250-byte inline key made
    /// `AsyncCache::get`'s 944 bytes).
    #[cfg(feature = "tokio")]
    pub(crate) fn short_wire_key(&self, key: &str) -> Result<newcache_transport::ShortKey> {
        self.with_wire_key(key, |wire| Ok(newcache_transport::ShortKey::new(wire)))
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
        flags: u32,
    ) -> Result<T> {
        codec::decode_bounded(item.value, 0, flags, self.config.inflate_limit).map_err(|e| {
            Error::Decode {
                key: key.to_owned(),
                flags,
                detail: bounded_detail(e.0),
            }
        })
    }

    /// Reads `wire` through the herd policy and decodes it.
    pub(crate) async fn fetch<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        op: &'static str,
        key: &str,
        wire: &[u8],
    ) -> Result<Fetched<T>> {
        let fetched = self.fetch_unobserved(io, op, key, wire).await?;
        Ok(self.counted(op, fetched))
    }

    /// `fetched`, counted as `op`'s hit or miss (a reader that should recompute misses).
    pub(crate) fn counted<T>(&self, op: &'static str, fetched: Fetched<T>) -> Fetched<T> {
        self.observer.event(
            op,
            match fetched {
                Fetched::Hit(_) => Event::Hit,
                Fetched::Recompute(_) | Fetched::Cold => Event::Miss,
            },
            1,
        );
        fetched
    }

    pub(crate) async fn fetch_unobserved<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        op: &'static str,
        key: &str,
        wire: &[u8],
    ) -> Result<Fetched<T>> {
        let fetched = self.fetch_item(io, op, wire).await;
        Ok(match fetched.map_err(|e| e.of_key(key))? {
            Fetched::Hit(opened) => Fetched::Hit(self.decode_opened_item(key, opened)?),
            Fetched::Recompute(over) => Fetched::Recompute(over),
            Fetched::Cold => Fetched::Cold,
        })
    }

    /// Decodes what [`Core::fetch_item`] found.
    pub(crate) fn decode_opened_item<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        (item, flags): (Item, u32),
    ) -> Result<T> {
        self.decode_vec(key, item, flags)
    }

    /// Reads `wire` through the herd policy: the item and its value flags, not decoded yet.
    pub(crate) async fn fetch_item<I: Io>(
        &self,
        io: &I,
        op: &'static str,
        wire: &[u8],
    ) -> Result<Fetched<(Item, u32)>> {
        let read = if self.meta() {
            self.meta_read(io, wire, self.herd.herd_timeout.max(1))
                .await?
        } else {
            None
        };
        let opened = match read {
            Some(None) => return Ok(Fetched::Cold),
            Some(Some(meta)) => {
                let looked = self.look_meta(op, meta, self.now_millis());
                self.settle_now(io, op, wire, looked).await
            }
            // Plain gets (under lease from the first meta refusal on, this read included).
            None => {
                let Some(item) = io.get(wire).await? else {
                    return Ok(Fetched::Cold);
                };
                self.open(io, op, wire, item, self.now_millis()).await
            }
        };
        Ok(match opened {
            Opened::Miss(over) => Fetched::Recompute(over),
            Opened::Gone => Fetched::Cold,
            Opened::Value { item, flags } => Fetched::Hit((item, flags)),
        })
    }

    /// `get`: the value, or `None` on a miss (or for the reader who should recompute).
    pub(crate) async fn get<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        key: &str,
        wire: &[u8],
    ) -> Result<Option<T>> {
        self.observer
            .op("get", async move {
                Ok(match self.fetch(io, "get", key, wire).await? {
                    Fetched::Hit(v) => Some(v),
                    Fetched::Recompute(_) | Fetched::Cold => None,
                })
            })
            .await
    }

    /// `get_raw`: a value's bytes and flags, herd rules applied (as `get` reads: under
    /// `herd=meta` the server's win flag too, so a reader that wins is told `None`).
    pub(crate) async fn get_raw<I: Io>(&self, io: &I, wire: &[u8]) -> Result<Option<RawValue>> {
        self.observer
            .op("get_raw", async move {
                let fetched = self.fetch_item(io, "get_raw", wire).await?;
                // Counted as `get`'s hits and misses are (they were not: an outside audit).
                Ok(match self.counted("get_raw", fetched) {
                    Fetched::Hit((item, flags)) => Some(RawValue {
                        bytes: item.value,
                        flags,
                    }),
                    Fetched::Recompute(_) | Fetched::Cold => None,
                })
            })
            .await
    }

    /// `get_many`: the values read, as a map keyed by the caller's keys, and the keys whose
    /// value could not be read.
    pub(crate) async fn get_many<I, K, T>(&self, io: &I, keys: &[K]) -> Result<GetMany<T>>
    where
        I: Io,
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        self.observer
            .op("get_many", async move {
                let filling = Filling::new(keys);
                let mut out = filling.taker();
                let mut failed: Vec<(usize, Error)> = Vec::new();
                let prepare = || filling.prepare();
                self.read_many(
                    io,
                    "get_many",
                    keys,
                    &prepare,
                    false,
                    |i, read: Result<T>| match read {
                        Ok(value) => out.insert(i, value),
                        Err(e) => failed.push((i, e)),
                    },
                )
                .await?;
                failed.sort_by_key(|(i, _)| *i);
                // A key asked twice is listed once, as the map holds it once.
                let mut listed = std::collections::HashSet::new();
                let failed = failed
                    .into_iter()
                    .map(|(i, e)| {
                        let key = keys.get(i).map_or("", AsRef::as_ref);
                        (key, e.of_key(key))
                    })
                    .filter(|(key, _)| listed.insert(*key))
                    .map(|(key, e)| {
                        self.observer.failed_key("get_many", &e);
                        (key.to_owned(), e)
                    })
                    .collect();
                Ok(out.finish(failed))
            })
            .await
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
        self.observer
            .op("get_many_ordered", async move {
                let mut out: Vec<Option<T>> =
                    std::iter::repeat_with(|| None).take(keys.len()).collect();
                let mut first_error: Option<(usize, Error)> = None;
                self.read_many(
                    io,
                    "get_many_ordered",
                    keys,
                    &|| {},
                    true,
                    |i, read: Result<T>| match read {
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
                    },
                )
                .await?;
                match first_error {
                    Some((_, e)) => Err(e),
                    None => Ok(out),
                }
            })
            .await
    }

    /// Reads many keys in one round trip per server, then sends the stale values' stores
    /// (claims, re-stores) in one batch, and hands `found` each value read (or why it could
    /// not be), by the key's index. Misses are not handed over.
    ///
    /// `all_or_nothing`: the caller fails the whole call on one key's failure
    /// (`get_many_ordered`), so its misses never reach anyone; a miss that is a refresh this
    /// reader won (a lease claim, a re-store, memcached's win) would leave the key claimed
    /// and unrefreshed for up to the herd timeout, every other reader served the old value
    /// (an outside audit). Then the stale values' stores are not sent once a key has
    /// failed, and a refresh won before a failure is given back ([`Core::invalidate_wire`]:
    /// the next reader wins it).
    async fn read_many<I, K, T>(
        &self,
        io: &I,
        op: &'static str,
        keys: &[K],
        meanwhile: &impl Fn(),
        all_or_nothing: bool,
        mut found: impl FnMut(usize, Result<T>),
    ) -> Result<()>
    where
        I: Io,
        K: AsRef<str>,
        T: DeserializeOwned + 'static,
    {
        // Hits and failures as they are handed over; the rest were misses.
        // (The failures in an atomic: read between the steps, while `found` holds it.)
        let (mut hits, failures) = (0u64, AtomicU64::new(0));
        let mut found = |i: usize, read: Result<T>| {
            match &read {
                Ok(_) => hits += 1,
                Err(_) => _ = failures.fetch_add(1, Ordering::Relaxed),
            }
            found(i, read)
        };
        // The keys whose refresh this reader won, for an all-or-nothing call to give back,
        // with the unique of the item memcached handed the win for (`herd=meta`).
        let mut won: Vec<(usize, Option<u64>)> = Vec::new();
        // The wire keys are made as the transport asks for them, so a transport that can
        // sends the first before the rest are made (`Transport::get_many_made`): when the key
        // function's keys are all valid or all refused. Else every key is made and checked
        // first, so that a refused key sends nothing.
        let mut made = WireKeys::new(self.key_function.as_ref(), keys, meanwhile);
        if !self.key_function.validity_is_fixed() {
            made.make_all()?;
        }
        let now = self.now_millis();
        // One pass: a fresh value is decoded as it comes; a stale one's store (claim or
        // re-store) waits, so that all of them go out in one batch.
        let mut stale: Vec<(usize, Pending)> = Vec::new();
        let mut take = |i: usize, looked: Option<Result<Looked>>| match looked {
            None => {}
            Some(Err(e)) => found(i, Err(e)),
            Some(Ok(Looked::Done(opened))) => self.decode_opened(keys, i, opened, &mut found),
            Some(Ok(Looked::Store(pending))) => stale.push((i, *pending)),
        };
        let metas = if self.meta() {
            let refs = made.all()?;
            let recache = self.herd.herd_timeout.max(1);
            match io_meanwhile(io.meta_get_many(&refs, recache), meanwhile).await {
                Ok(metas) => {
                    self.meta_answered();
                    Some(metas)
                }
                // No meta protocol here: lease from now on, starting with this read.
                Err(e) if self.meta_refused(&e) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        // The keys of a server that failed while the others answered: not read, and no
        // misses either: each is the caller's failure for its key (`GetMany::failed`).
        let unread = if let Some(metas) = metas {
            for (i, m) in metas.items.into_iter().enumerate() {
                let looked = m.map(|m| self.look_meta(op, m, now));
                if let (true, Some(Looked::Done(Opened::Miss(over)))) = (all_or_nothing, &looked) {
                    let cas = match over {
                        Over::Won(cas) => Some(*cas),
                        _ => None,
                    };
                    won.push((i, cas));
                }
                take(i, looked.map(Ok));
            }
            metas.unread
        } else {
            let now_read = io.get_many_now(&mut made, &mut |i, wire, item| {
                take(i, Some(Ok(self.look(op, wire, item, now))));
            });
            match now_read {
                Some(read) => {
                    read.map_err(|e| made.failure(e))?;
                    made.take_unread()
                }
                None => {
                    let refs = made.all()?;
                    let read = io_meanwhile(io.get_many(&refs), meanwhile).await?;
                    for (i, (item, wire)) in read.items.into_iter().zip(&refs).enumerate() {
                        take(i, item.map(|item| Ok(self.look(op, wire, item, now))));
                    }
                    read.unread
                }
            }
        };
        for (i, e) in unread {
            take(i, Some(Err(e.into())));
        }
        if all_or_nothing && failures.load(Ordering::Relaxed) > 0 {
            // The call fails: nothing to claim for it.
            stale.clear();
        }
        if !stale.is_empty() {
            let statuses = self
                .send_pending(
                    io,
                    stale
                        .iter()
                        .filter_map(|(i, p)| made.key(*i).map(|wire| (p, wire))),
                )
                .await;
            let mut statuses = statuses.into_iter();
            for (i, pending) in stale {
                let opened = self.settle(op, pending, statuses.next().flatten());
                if all_or_nothing && matches!(opened, Opened::Miss(_)) {
                    won.push((i, None));
                }
                self.decode_opened(keys, i, opened, &mut found);
            }
        }
        if failures.load(Ordering::Relaxed) > 0 {
            // Boxed: a rare path, kept out of every multi-get's future.
            let wins = won
                .into_iter()
                .filter_map(|(i, cas)| Some((made.key(i)?, cas)));
            Box::pin(self.give_back(io, wins)).await;
        }
        let asked = keys.len() as u64;
        self.observer.event(op, Event::Hit, hits);
        self.observer.event(
            op,
            Event::Miss,
            asked.saturating_sub(hits + failures.into_inner()),
        );
        Ok(())
    }

    /// Gives back the refreshes a multi-get won and cannot hand over (it fails): each key
    /// invalidated, so that the next reader recomputes it. memcached's win only for the
    /// item it came with (`md <key> I C<cas>`: a value stored since is left as it is).
    /// Best effort: the call's own error is what its caller hears.
    async fn give_back<'w, I: Io>(
        &self,
        io: &I,
        wins: impl Iterator<Item = (&'w [u8], Option<u64>)>,
    ) {
        for (wire, cas) in wins {
            let _ = self.invalidate_wire(io, wire, cas).await;
        }
    }

    /// Decodes one multi-get value, if the read opened to one, and hands it to `found`.
    #[inline]
    fn decode_opened<K: AsRef<str>, T: DeserializeOwned + 'static>(
        &self,
        keys: &[K],
        i: usize,
        opened: Opened,
        found: &mut impl FnMut(usize, Result<T>),
    ) {
        if let Opened::Value { item, flags } = opened {
            let key = keys.get(i).map_or("", AsRef::as_ref);
            found(i, self.decode_vec(key, item, flags));
        }
    }

    /// `has_key`: a value a `get` would return now; no side effects.
    pub(crate) async fn has_key<I: Io>(&self, io: &I, key: &str) -> Result<bool> {
        self.observer
            .op("has_key", async move {
                let looked = self.look_at(io, key).await?;
                Ok(looked.is_some_and(|p| !p.stale))
            })
            .await
    }

    /// `peek`: what `key` holds, herd state read, with no side effects at all.
    pub(crate) async fn peek<I: Io>(&self, io: &I, key: &str) -> Result<Option<Peeked>> {
        self.observer
            .op("peek", async move { self.look_at(io, key).await })
            .await
    }

    /// A read that decides nothing (`peek`, `has_key`): the item, and whether the server
    /// holds it as invalidated. Under `herd=meta` memcached hands its recompute token to the
    /// first meta read of an invalidated item, whatever that read asks for; a plain get
    /// over the meta protocol took it and dropped it, so no later reader ever recomputed
    /// and the invalidated value was served until it expired (an outside audit). So such a
    /// read asks with `mg`, and when the token comes hands it straight back (`md <key> I`,
    /// which gives it to the next reader; the item stays as it was, stale, alive another
    /// `2 x herd_timeout`).
    async fn read_only<I: Io>(&self, io: &I, wire: &[u8]) -> Result<Option<(Item, bool)>> {
        let read = if self.meta() {
            self.meta_read(io, wire, 1).await?
        } else {
            None
        };
        match read {
            Some(None) => Ok(None),
            Some(Some(meta)) => {
                if meta.win {
                    // Only the item read: one stored since is left as it is.
                    io.meta_invalidate(wire, self.herd.invalidated_exptime(), meta.item.cas)
                        .await?;
                }
                Ok(Some((meta.item, meta.win || meta.stale)))
            }
            None => Ok(io.get(wire).await?.map(|item| (item, false))),
        }
    }

    /// What an `add` refused under `wire` found there: whether it may take the key over
    /// ([`Held::Past`]: a value past its soft expiry, which a `get` would not return,
    /// with the CAS unique to store over). Under a policy whose server keeps the herd state
    /// (`meta`), the server decides what is served (a stale item's value goes on being
    /// served while one reader reloads it, and reading it takes the reload's token): an
    /// `add` there is memcached's own. So is one under a policy whose readers do not all
    /// claim the refresh with a `cas` (`reinsert`, a policy that serves a stale value).
    pub(crate) async fn held<I: Io>(&self, io: &I, wire: &[u8], now: u64) -> Result<Held> {
        if self.policy.server_side() {
            return Ok(Held::Value);
        }
        let Some(item) = io.get(wire).await? else {
            return Ok(Held::Nothing);
        };
        // Only where every reader of the stale value claims its refresh with a `cas` over
        // that very item (`lease`, `early` at the expiry), whatever its draw: a claim that
        // comes second then fails, as another reader's claim would, and the reader is
        // served the value it read, as a `get` beside a `set` may be. Not under `reinsert`,
        // whose reader re-stores the old value with a plain `set` (over the added one: an
        // outside audit), nor under a policy that may serve it.
        let past = match self.opening(&item, now) {
            Some(o) => {
                let claims = |u: f64| {
                    matches!(
                        self.policy.decide(&self.herd, &o.envelope, now, u),
                        StaleAction::Claim { .. }
                    )
                };
                self.herd.on_read(&o.envelope, now) != ReadDecision::Fresh
                    && claims(1.0)
                    && claims(f64::MIN_POSITIVE)
                    && claims(0.5)
            }
            _ => false,
        };
        Ok(match item.cas {
            Some(cas) if past => Held::Past(cas),
            _ => Held::Value,
        })
    }

    /// What `key` holds, herd state read, with no side effects at all.
    async fn look_at<I: Io>(&self, io: &I, key: &str) -> Result<Option<Peeked>> {
        let wire = self.wire_key(key)?;
        let Some((item, invalidated)) = self.read_only(io, &wire).await? else {
            return Ok(None);
        };
        let now = self.now_millis();
        let (stale, flags) = match self.opening(&item, now) {
            None => (invalidated, item.flags),
            Some(o) => (
                invalidated || self.herd.on_read(&o.envelope, now) != ReadDecision::Fresh,
                value_flags(item.flags),
            ),
        };
        let value = RawValue {
            bytes: item.value,
            flags,
        };
        Ok(Some(Peeked { value, stale }))
    }
}
