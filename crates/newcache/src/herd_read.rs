//! The herd read path every read shares: what a fetched item's herd state says (`opening`),
//! what the stale policy decides for this reader (`look`, `look_meta`), the one store a stale
//! read sends before it answers (`Pending`), and whether the servers speak meta. Deciding is
//! kept apart from sending, so `get_many` can send all of its stores in one batch.

use std::future::Future;
use std::sync::atomic::Ordering;

use newcache_herd::{read_flags, value_flags, Envelope, ReadDecision, StaleAction};
use newcache_transport::{Item, Store, StoreMode, StoreStatus};

#[cfg(feature = "pickle")]
use crate::codec;
use crate::io::Io;
use crate::observe::Event;
use crate::ops::Core;
use crate::{Policy, Result, StalePolicy};

/// The key `herd=meta`'s probe reads (never written).
pub(crate) const META_PROBE_KEY: &[u8] = b"newcache:meta-probe";

/// A uniform draw in (0, 1] for XFetch, from the standard library's randomly keyed hasher
/// (no random-number crate needed for one draw per read).
pub(crate) fn uniform() -> f64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        // xorshift64* state, seeded once per thread from the std's random hasher keys.
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    let bits = STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    // 53 random bits, shifted into (0, 1].
    ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// What a loaded value is stored over (`get_or_set`): the key as it was just before the load
/// began, and only if nothing changed it since. A value written, an invalidation or a delete
/// that lands while the loader runs is newer than what the loader read, so the loaded value
/// must not replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// The item with this CAS unique (`cas`): the item this reader read before deciding to
    /// load (XFetch's early refresh, a stale item read without a claim).
    Item(u64),
    /// memcached's win under `herd=meta`, for the item with this unique: stored over it as
    /// [`Over::Item`]. memcached hands it to one reader per item (again after every store
    /// and every invalidation), so its reader loads even while another caller in this
    /// process refreshes the key: waiting for that caller dropped a win that came after an
    /// invalidation, whose loader's value was then refused, and nobody refreshed the key
    /// until the item expired (an outside audit).
    Won(u64),
    /// A lease claim's item: the claim's own store gave it a new unique that memcached's
    /// `cas` reply does not say, so the winner reads the item once more before it loads and
    /// stores over what it read then.
    Claimed,
    /// Nothing: the key was empty before the load began (`add`).
    Nothing,
    /// Whatever is there (`set`): items read without CAS uniques, and `reinsert`'s re-store
    /// of a django-newcache tuple (its expiry moved, so it reads as fresh).
    Any,
    /// Whatever is there (`set`), after this reader re-stored the stale value bare
    /// (`reinsert`, the seed's policy): a value fresh by its herd state found in its place
    /// later was stored since, by another caller's refresh ([`Core::is_fresh`]). With the
    /// re-store's [`Restore`], to tell it from any other item found there later.
    Restored(Restore),
}

/// What a bare re-store wrote, to know it again: its flags and a digest of its bytes
/// (this process's own, compared in this process only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restore {
    flags: u32,
    digest: u64,
}

impl Restore {
    fn of(value: &[u8], flags: u32) -> Restore {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut hasher);
        Restore {
            flags,
            digest: hasher.finish(),
        }
    }

    /// `item` is what this re-store wrote (or the same bytes and flags written again).
    pub(crate) fn wrote(&self, item: &Item) -> bool {
        *self == Restore::of(&item.value, item.flags)
    }
}

impl Over {
    fn item(cas: Option<u64>) -> Over {
        cas.map_or(Over::Any, Over::Item)
    }
}

/// What a fetched item turned out to be once its herd state was looked at.
pub(crate) enum Opened {
    /// Recompute: the value is stale and this reader won the refresh (or, under XFetch,
    /// refreshes early); what to store the value it loads over.
    Miss(Over),
    /// The item vanished between the read and the claim (deleted or evicted): a cold miss,
    /// for `get_or_set`'s single flight and lease key, not a won refresh.
    Gone,
    Value {
        item: Item,
        flags: u32,
    },
}

/// Where a herd-protected item keeps its state, once looked at.
pub(crate) struct Opening {
    pub(crate) envelope: Envelope,
    /// django-newcache's tuple: the state is inside the pickled value.
    #[cfg(feature = "pickle")]
    pub(crate) seed: Option<Seed>,
    #[cfg(not(feature = "pickle"))]
    pub(crate) seed: Option<std::convert::Infallible>,
}

/// django-newcache's tuple, as found in an item's value.
#[cfg(feature = "pickle")]
pub(crate) struct Seed {
    pub(crate) tuple: codec::pickle::MarkerTuple,
    /// Whether the item holds the tuple zlib-compressed (flags 1 | 8: pylibmc's
    /// `min_compress_len`, or `compress_threshold` here): its restamped tuple is compressed
    /// again.
    compressed: bool,
    /// The compressed tuple inflated, until [`Opening::inflated`] hands it over.
    inflated: Option<Vec<u8>>,
}

impl Opening {
    /// `item` with the compressed django-newcache tuple it holds replaced by the tuple
    /// inflated (flags 1), so that it is inflated once; any other item as it is.
    pub(crate) fn inflated(&mut self, item: Item) -> Item {
        #[cfg(feature = "pickle")]
        if let Some(value) = self.seed.as_mut().and_then(|s| s.inflated.take()) {
            return Item {
                value,
                flags: codec::FLAG_PICKLE,
                ..item
            };
        }
        item
    }
}

/// What a reader does with a fetched item: answer at once, or first send one store.
pub(crate) enum Looked {
    Done(Opened),
    /// Boxed: a stale read is rare, and every fresh value's answer is moved through the
    /// steps of a multi-get.
    Store(Box<Pending>),
}

/// The store a stale read sends before it answers, not sent yet: the seed's bare re-store,
/// or lease's claim (a CAS store of the same value with its soft expiry pushed forward).
pub(crate) struct Pending {
    item: Item,
    /// The value's flags (the herd bit and state removed).
    flags: u32,
    /// The claim's CAS unique; `None` for a re-store of the value.
    claim: Option<u64>,
    /// What the stored item carries instead of the fetched one: new flags (the herd bits of
    /// the pushed-forward envelope, or none for a bare re-store) and, for a django-newcache
    /// tuple, the tuple with its expiry moved.
    stamp: Stamp,
    exptime: u32,
}

/// A value's herd state rewritten: the flags to store, and new bytes when the state lives in
/// the value (a django-newcache tuple).
pub(crate) struct Stamp {
    pub(crate) flags: u32,
    pub(crate) value: Option<Vec<u8>>,
}

impl Pending {
    pub(crate) fn request<'a>(&'a self, wire: &'a [u8]) -> Store<'a> {
        let value = match &self.stamp.value {
            Some(value) => value.as_slice(),
            None => &self.item.value,
        };
        Store {
            mode: self.claim.map_or(StoreMode::Set, StoreMode::Cas),
            key: wire,
            value,
            flags: self.stamp.flags,
            exptime: self.exptime,
        }
    }

    /// The reader's answer once the store's outcome (`None`: it failed) is known.
    pub(crate) fn settle(self, status: Option<StoreStatus>) -> Opened {
        if self.claim.is_none() {
            // A re-store: this reader recomputes; a failed re-store only weakens the
            // protection for the others.
            return Opened::Miss(match self.stamp.value {
                None => Over::Restored(Restore::of(&self.item.value, self.stamp.flags)),
                Some(_) => Over::Any,
            });
        }
        match status {
            // This reader won the refresh; everyone else now reads the claimed value,
            // fresh for another herd timeout.
            Some(StoreStatus::Stored) => Opened::Miss(Over::Claimed),
            // Nothing left to claim: every reader that held the stale value would "win" here,
            // so it is a cold miss instead.
            Some(StoreStatus::NotFound) => Opened::Gone,
            // Another reader claimed it (or a writer replaced it) first: serve the old value.
            _ => Opened::Value {
                item: self.item,
                flags: self.flags,
            },
        }
    }
}

/// Whether a value with no herd state in its flags may be django-newcache's pickled tuple,
/// whose herd state is inside the value ([`Core::opening`] reads it).
fn may_carry_seed(flags: u32) -> bool {
    use crate::codec::{FLAG_PICKLE, FLAG_ZLIB};
    cfg!(feature = "pickle") && (flags == FLAG_PICKLE || flags == FLAG_PICKLE | FLAG_ZLIB)
}

impl Core {
    /// Whether `item` carries herd state that is before its soft expiry now.
    pub(crate) fn is_fresh(&self, item: &Item) -> bool {
        let now = self.now_millis();
        self.opening(item, now)
            .is_some_and(|o| self.herd.on_read(&o.envelope, now) == ReadDecision::Fresh)
    }

    /// The herd state of a fetched item: `None` for a bare value (another application's
    /// bit 8 included: [`read_flags`]); the flags' envelope; for django-newcache's pickled
    /// `(Marker, value, expiry)` tuple, its expiry. The value starts at byte 0 in each.
    pub(crate) fn opening(&self, item: &Item, now: u64) -> Option<Opening> {
        match read_flags(item.flags, now) {
            Some(envelope) => Some(Opening {
                envelope,
                seed: None,
            }),
            #[cfg(feature = "pickle")]
            None if may_carry_seed(item.flags) => {
                // A pickle that is not django-newcache's herd tuple (a `Marker` elsewhere in
                // it, a broken pickle, a compressed one that does not inflate) holds no herd
                // state: it is a plain value, whose decoding says what it holds, and whose
                // bytes `get_raw` returns.
                let compressed = item.flags & codec::FLAG_ZLIB != 0;
                let inflated = match compressed {
                    true => match codec::inflate(&item.value, self.config.inflate_limit) {
                        Ok(inflated) => Some(inflated),
                        Err(_) => return None,
                    },
                    false => None,
                };
                let pickle = inflated.as_deref().unwrap_or(&item.value);
                let Ok(Some(tuple)) = codec::pickle::marker(pickle) else {
                    return None;
                };
                // django-newcache serves the value while `expiry >= int(time.time())`.
                let secs = u64::try_from(tuple.expiry_secs.saturating_add(1)).unwrap_or(0);
                Some(Opening {
                    envelope: Envelope::new(secs.saturating_mul(1000)),
                    seed: Some(Seed {
                        tuple,
                        compressed,
                        inflated,
                    }),
                })
            }
            None => None,
        }
    }

    /// The item's herd state moved to `envelope` (written now): new flags, and new bytes for
    /// a django-newcache tuple; `None` when such a tuple's expiry cannot be moved in place.
    pub(crate) fn restamp(
        &self,
        item: &Item,
        opening: &Opening,
        envelope: Envelope,
        now: u64,
    ) -> Option<Stamp> {
        #[cfg(not(feature = "pickle"))]
        let _ = opening;
        #[cfg(feature = "pickle")]
        if let Some(seed) = &opening.seed {
            let secs = (envelope.soft_expiry_millis / 1000).saturating_sub(1);
            let tuple = seed.inflated.as_deref().unwrap_or(&item.value);
            let value = codec::pickle::with_expiry(tuple, &seed.tuple, secs)?;
            if !seed.compressed {
                return Some(Stamp {
                    flags: item.flags,
                    value: Some(value),
                });
            }
            // Compressed again, as it was stored.
            return Some(match codec::deflate(&value) {
                Some(compressed) => Stamp {
                    flags: codec::FLAG_PICKLE | codec::FLAG_ZLIB,
                    value: Some(compressed),
                },
                None => Stamp {
                    flags: codec::FLAG_PICKLE,
                    value: Some(value),
                },
            });
        }
        Some(Stamp {
            flags: value_flags(item.flags) | self.herd_bits(envelope, now),
            value: None,
        })
    }

    /// The herd bits of `envelope` for an item written now.
    pub(crate) fn herd_bits(&self, envelope: Envelope, now: u64) -> u32 {
        envelope.flags(now, self.herd.herd_timeout)
    }

    /// Looks into a fetched item under the stale policy: a fresh value (or a bare one) is
    /// opened, and a stale one is a miss for this reader, after one store that keeps the others
    /// on the old value: `reinsert` re-stores it bare for the herd timeout (django-newcache's
    /// policy), `lease` claims the refresh with CAS. That store is returned unsent, so that
    /// `get_many` sends all of its stores in one `store_many`; `open` sends it at once.
    pub(crate) fn look(&self, op: &'static str, wire: &[u8], item: Item, now: u64) -> Looked {
        if let Some(flags) = self.served_as_is(item.flags, now) {
            return Looked::Done(Opened::Value { item, flags });
        }
        self.look_further(op, wire, item, now)
    }

    /// The common cases of [`Core::look`], decided from an item's flags alone as the rest
    /// of it would decide them, with no event: a bare value (no herd state in the flags,
    /// and not a pickle that may be django-newcache's tuple), and the herd state in the
    /// flags before its soft expiry under a policy that serves every such value. The value
    /// flags of such an item, served from byte 0; `None`: ask [`Core::look`].
    #[inline]
    fn served_as_is(&self, flags: u32, now: u64) -> Option<u32> {
        let as_is = match read_flags(flags, now) {
            None => !may_carry_seed(flags),
            Some(envelope) => {
                self.serves_fresh && self.herd.on_read(&envelope, now) == ReadDecision::Fresh
            }
        };
        as_is.then(|| value_flags(flags))
    }

    /// [`Core::look`] past its common cases: a seed, or a value the policy judges.
    fn look_further(&self, op: &'static str, wire: &[u8], item: Item, now: u64) -> Looked {
        let Some(mut opening) = self.opening(&item, now) else {
            let flags = item.flags;
            return Looked::Done(Opened::Value { item, flags });
        };
        let item = opening.inflated(item);
        let flags = if opening.seed.is_some() {
            item.flags
        } else {
            value_flags(item.flags)
        };
        let serve = |item: Item| Looked::Done(Opened::Value { item, flags });
        // A value before its soft expiry, under a policy that serves every such value: the
        // decision would serve it, with no event, so it is not asked for (nor `u` drawn).
        if self.serves_fresh && self.herd.on_read(&opening.envelope, now) == ReadDecision::Fresh {
            return serve(item);
        }
        let action = match self
            .stale_policy()
            .decide(&self.herd, &opening.envelope, now, uniform())
        {
            // A `get_or_set` in this process refreshes it already: served, as the others are
            // (an outside audit: 146 of 200 tasks of one process refreshed one value under
            // `early`, ahead of the expiry; past it, under `reinsert`, the leader re-stored
            // it already, or will). So is a claim past the expiry while an early refresh of
            // this process runs: the claim was a second load in the process, and its new
            // unique made the early refresh's `cas` fail (another audit: 5 of 9 refreshes
            // loaded twice in one process, and 5 of 13 loaded values were thrown away).
            StaleAction::RecomputeEarly | StaleAction::ReinsertBare { .. }
                if self.refreshing(wire) =>
            {
                StaleAction::Serve
            }
            StaleAction::Claim { .. } if self.refreshing_item(wire, item.cas) => StaleAction::Serve,
            action => action,
        };
        let event = match &action {
            _ if !crate::observe::ENABLED => None,
            StaleAction::RecomputeEarly | StaleAction::ReinsertBare { .. } => Some(Event::ClaimWon),
            StaleAction::Serve
                if self.herd.on_read(&opening.envelope, now) != ReadDecision::Fresh =>
            {
                Some(Event::StaleServed)
            }
            StaleAction::Serve | StaleAction::Claim { .. } => None,
        };
        if let Some(event) = event {
            self.observer.event(op, event, 1);
        }
        let unclaimed = Over::item(item.cas);
        match action {
            // XFetch: this reader recomputes ahead of the expiry; nothing is stored, the
            // others keep being served.
            StaleAction::RecomputeEarly => Looked::Done(Opened::Miss(unclaimed)),
            StaleAction::Serve => serve(item),
            // Everyone else keeps being served the old value while this reader recomputes:
            // the value bare (a django-newcache tuple with its expiry moved past the re-store,
            // which its readers serve the same way).
            StaleAction::ReinsertBare { exptime } => {
                let stamp = if opening.seed.is_some() {
                    let until = now.saturating_add(u64::from(exptime).saturating_mul(1000));
                    self.restamp(&item, &opening, Envelope::new(until), now)
                } else {
                    Some(Stamp { flags, value: None })
                };
                match stamp {
                    Some(stamp) => Looked::Store(Box::new(Pending {
                        item,
                        flags,
                        claim: None,
                        stamp,
                        exptime,
                    })),
                    None => Looked::Done(Opened::Miss(Over::Any)),
                }
            }
            StaleAction::Claim { envelope, exptime } => {
                let stamp = self.restamp(&item, &opening, envelope, now);
                match (item.cas, stamp) {
                    (Some(cas), Some(stamp)) => Looked::Store(Box::new(Pending {
                        item,
                        flags,
                        claim: Some(cas),
                        stamp,
                        exptime,
                    })),
                    // A django-newcache tuple whose expiry cannot move in place (past 2038):
                    // this reader recomputes, the others keep the old value until it lands.
                    (_, None) => Looked::Done(Opened::Miss(unclaimed)),
                    // No CAS uniques, no claim: the seed's re-store. The cache refuses to be
                    // built that way (lease over libmemcached with CAS off); only a transport
                    // of the caller's own, or a value read with herd off, gets here.
                    (None, Some(_)) => {
                        let exptime = self.herd.herd_timeout.max(1);
                        let until = now.saturating_add(u64::from(exptime).saturating_mul(1000));
                        let stamp = match opening.seed {
                            Some(_) => self.restamp(&item, &opening, Envelope::new(until), now),
                            None => None,
                        };
                        Looked::Store(Box::new(Pending {
                            item,
                            flags,
                            claim: None,
                            stamp: stamp.unwrap_or(Stamp { flags, value: None }),
                            exptime,
                        }))
                    }
                }
            }
        }
    }

    /// `look`, with its store (if any) sent at once when the returned future is awaited.
    pub(crate) fn open<'a, I: Io>(
        &'a self,
        io: &'a I,
        op: &'static str,
        wire: &'a [u8],
        item: Item,
        now: u64,
    ) -> impl Future<Output = Opened> + Send + 'a {
        let looked = self.look(op, wire, item, now);
        self.settle_now(io, op, wire, looked)
    }

    /// Sends a look's store (if any) on its own and settles the read by its outcome.
    ///
    /// Not an `async fn`: one would hold the look (the item, or the store to send) as its
    /// argument, in every read's future. A look that needs no store is the value itself; a
    /// stale value's store, the rare read, is a boxed future of its own.
    pub(crate) fn settle_now<'a, I: Io>(
        &'a self,
        io: &'a I,
        op: &'static str,
        wire: &'a [u8],
        looked: Looked,
    ) -> impl Future<Output = Opened> + Send + 'a {
        let settled = match looked {
            Looked::Done(opened) => Ok(opened),
            Looked::Store(pending) => Err(Box::pin(self.store_pending(io, op, wire, *pending))),
        };
        async move {
            match settled {
                Ok(opened) => opened,
                Err(store) => store.await,
            }
        }
    }

    /// Sends a look's store on its own and settles the read by its outcome.
    async fn store_pending<I: Io>(
        &self,
        io: &I,
        op: &'static str,
        wire: &[u8],
        pending: Pending,
    ) -> Opened {
        let status = io.store(&pending.request(wire)).await.ok();
        self.settle(op, pending, status)
    }

    /// [`Pending::settle`], counted: a claim this reader won, or lost (and then it is
    /// served the stale value).
    pub(crate) fn settle(
        &self,
        op: &'static str,
        pending: Pending,
        status: Option<StoreStatus>,
    ) -> Opened {
        let claim = pending.claim.is_some();
        let opened = pending.settle(status);
        if claim {
            match opened {
                Opened::Miss(_) => self.observer.event(op, Event::ClaimWon, 1),
                Opened::Value { .. } => {
                    self.observer.event(op, Event::ClaimLost, 1);
                    self.observer.event(op, Event::StaleServed, 1);
                }
                Opened::Gone => {}
            }
        }
        opened
    }

    /// True when the server keeps the herd state (`herd=meta`, and the server has not
    /// refused a meta command yet). A read needs no probe first: its own meta command is
    /// one (a refusal switches the cache to lease and the read is answered under lease).
    pub(crate) fn meta(&self) -> bool {
        self.policy.server_side() && !self.meta_unsupported.load(Ordering::Relaxed)
    }

    /// [`Core::meta`] before a store: until a meta command was answered, the cache probes
    /// first ([`Core::probe_meta`]), so that it knows before it writes (a server refusing
    /// meta commands switches it to lease here).
    pub(crate) async fn meta_before_store<I: Io>(&self, io: &I) -> bool {
        if self.policy.server_side() && !self.meta_probed.load(Ordering::Relaxed) {
            // Boxed: the probe runs once per cache, not in every store's future.
            Box::pin(self.probe_meta(io)).await;
        }
        self.meta()
    }

    /// A meta command was answered: no probe is needed before a store.
    pub(crate) fn meta_answered(&self) {
        if !self.meta_probed.load(Ordering::Relaxed) {
            self.meta_probed.store(true, Ordering::Relaxed);
        }
    }

    /// The meta read of `wire` (`mg ... R<recache_below>`; `Some(None)` is a miss), for a
    /// cache whose [`meta`](Core::meta) said yes. `None` when the server refused the meta
    /// command: the cache is under lease from then on, and reads `wire` with a plain get.
    /// (The caller asks `meta` itself, so that a cache without a server-side policy pays
    /// nothing more on its reads than that one check.)
    pub(crate) async fn meta_read<I: Io>(
        &self,
        io: &I,
        wire: &[u8],
        recache_below: u32,
    ) -> Result<Option<Option<newcache_transport::MetaItem>>> {
        match io.meta_get(wire, recache_below).await {
            Ok(read) => {
                self.meta_answered();
                Ok(Some(read))
            }
            Err(e) if self.meta_refused(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Learns whether the servers speak the meta protocol, before the cache first stores
    /// under `herd=meta` (unless a meta read came first): one meta read of a key nobody
    /// uses (a key of the caller's could be an invalidated one, whose recompute token any
    /// `mg` takes). A refusal (twemproxy, memcached before 1.6) switches the cache to
    /// `lease` for good; any other failure (a server down) leaves the question open for the
    /// next store.
    pub(crate) async fn probe_meta<I: Io>(&self, io: &I) {
        match io.meta_get(META_PROBE_KEY, 1).await {
            Ok(_) => self.meta_answered(),
            Err(e) => {
                if self.meta_refused(&e) {
                    self.meta_probed.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// After a meta command failed: true (and the cache switched to `lease` for good) when
    /// the server does not speak the meta protocol, so the caller should retry under lease.
    pub(crate) fn meta_refused(&self, error: &newcache_transport::Error) -> bool {
        let refused = matches!(error, newcache_transport::Error::Unsupported { .. });
        if refused && !self.meta_unsupported.swap(true, Ordering::Relaxed) {
            self.observer.meta_fallback();
        }
        refused
    }

    /// The stale policy in effect: the one the cache was built with, except that a
    /// server-side policy (`herd=meta`) on a server that refuses meta commands (twemproxy,
    /// memcached before 1.6) is [`Policy::Lease`] from the first refusal of a meta command:
    /// the cache's first read, or the probe it sends before its first store. The switch is
    /// sticky, made once per cache, and silent: this accessor is how to see it
    /// (`stale_policy().name()` turns from `"meta"` to `"lease"`). It sends nothing itself.
    pub(crate) fn stale_policy(&self) -> &dyn StalePolicy {
        if self.policy.server_side() && self.meta_unsupported.load(Ordering::Relaxed) {
            return &Policy::Lease;
        }
        self.policy.as_ref()
    }

    /// A meta read: the win flag means "recompute" for a value that carries herd state or
    /// was invalidated; everything else is served.
    ///
    /// memcached hands out the win when less than the herd timeout is left of the item's
    /// TTL: for a herd-protected value that is its soft expiry passed, but a value stored
    /// without herd state (herd off, or by a Python client) lives only its TTL, so its win
    /// says nothing of it: it is served until it expires, as under every other policy (a
    /// lock stored with herd off does not read as free).
    pub(crate) fn look_meta(
        &self,
        op: &'static str,
        meta: newcache_transport::MetaItem,
        now: u64,
    ) -> Looked {
        let opening = self.opening(&meta.item, now);
        if meta.win && (meta.stale || opening.is_some()) {
            self.observer.event(op, Event::ClaimWon, 1);
            // `md ... I` and every store give the item a new unique, so the winner's value
            // lands only if neither came while it loaded.
            let over = meta.item.cas.map_or(Over::Any, Over::Won);
            return Looked::Done(Opened::Miss(over));
        }
        if meta.win_taken {
            self.observer.event(op, Event::ClaimLost, 1);
        }
        if meta.win_taken || meta.stale {
            self.observer.event(op, Event::StaleServed, 1);
        }
        // The server keeps the herd state: everything but the win is served. (A soft expiry
        // in the flags says what the server's remaining TTL says: the item lives the herd
        // timeout past it, and the win comes when less than that is left. Judging the flags
        // as well would hand out a second win.)
        let item = match opening {
            Some(mut opening) => opening.inflated(meta.item),
            None => meta.item,
        };
        let flags = value_flags(item.flags);
        Looked::Done(Opened::Value { item, flags })
    }

    /// Sends the stale items' stores of one multi-get (re-stores, claims) in one
    /// `store_many`, as django-newcache's `set_multi` did: each pending store with its wire
    /// key. Returns the stores' outcomes in that order, `None` for a store whose server
    /// failed (empty when no read was stale, or when the batch failed: that only weakens
    /// the protection, since re-stores are misses either way and a claim that may not have
    /// landed serves the old value). A server that fails between the read and its claims
    /// (the read skips a server already down) costs only its own keys' claims, not those of
    /// the servers that answered.
    pub(crate) async fn send_pending<'a, I: Io>(
        &self,
        io: &I,
        stale: impl Iterator<Item = (&'a Pending, &'a [u8])>,
    ) -> Vec<Option<StoreStatus>> {
        let requests: Vec<Store<'_>> = stale.map(|(pending, wire)| pending.request(wire)).collect();
        if requests.is_empty() {
            return Vec::new();
        }
        let Ok(stored) = io.store_many_each(&requests).await else {
            return Vec::new();
        };
        let mut statuses: Vec<Option<StoreStatus>> =
            stored.statuses.into_iter().map(Some).collect();
        for (i, _) in &stored.failed {
            if let Some(status) = statuses.get_mut(*i) {
                *status = None;
            }
        }
        statuses
    }
}
