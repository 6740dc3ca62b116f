//! The writing operations of [`Core`]: encoding a value for the wire (codec, envelope,
//! compression, herd bits), `set`/`add`/`replace`, `set_raw`, `set_many`, deletes,
//! counters, `touch`, `invalidate`. Written once over an [`Io`], like the reads in
//! [`crate::ops`].

use std::borrow::Cow;

use serde::Serialize;

use newcache_herd::{value_flags, Envelope, StorePlan};
use newcache_transport::{Item, ServerStats, Store, StoreMode, StoreStatus};

use crate::herd_read::{Opening, Stamp};
use crate::io::Io;
use crate::ops::{encode_error, store_op, Core, Encoded, Held};
#[cfg(feature = "pickle")]
use crate::EnvelopeFormat;
use crate::{codec, Error, Result, SetOptions};

/// An exptime that has passed: an absolute Unix time (past memcached's 30 days of relative
/// times) in January 1970. memcached stores an item with it as already expired.
const EXPIRED: u32 = newcache_transport::MAX_RELATIVE_EXPTIME + 1;

/// A store under `wire` of an empty item that has already expired, with `mode`: the server
/// decides as for any such store (an `add` when the key holds nothing, a `cas` when it
/// holds what the token came with), and leaves nothing under the key.
pub(crate) fn already_expired(wire: &[u8], mode: StoreMode) -> Store<'_> {
    Store::set(wire, &[], 0, EXPIRED).with_mode(mode)
}

impl Core {
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

    /// Whether a store with these options expires the value at once (a zero TTL): it then
    /// stores nothing.
    pub(crate) fn expires_at_once(&self, options: SetOptions) -> Result<bool> {
        Ok(self.plan(options, self.now_millis())?.expire_now)
    }

    /// The herd's plan for a store with these options, the cache's defaults filled in.
    pub(crate) fn plan(&self, options: SetOptions, now: u64) -> Result<StorePlan> {
        let ttl = options.ttl.or_default(self.config.default_ttl);
        let herd = options.herd.unwrap_or(self.config.herd);
        let server_now = || newcache_herd::Clock::now_secs(&newcache_herd::SystemClock);
        Ok(self.herd.plan_store_at(ttl, herd, now, server_now)?)
    }

    /// Whether `value` encodes with the cache's codec, for a store that sends nothing of it
    /// (a zero TTL): `Error::Encode` as any store of it would give.
    fn check_encodes<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        codec::with_encoding(value, self.config.codec, &mut Vec::new(), |_, _| ())
            .map_err(|e| encode_error(key, e))
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
        let plan = self.plan(options, now)?;
        if plan.expire_now {
            return Ok(None);
        }
        // Under herd=meta, learn whether the servers speak meta before the first store.
        self.meta_before_store(io).await;
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
        self.observer
            .op(store_op(mode), async move {
                let now = self.now_millis();
                let Some(plan) = self.store_plan(io, options, now).await? else {
                    // A zero TTL: the value would expire at once. A value that cannot be
                    // encoded is still an error, as with any TTL.
                    self.check_encodes(key, value)?;
                    // Answered as memcached answers such a store (Django's `timeout=0`),
                    // with nothing left under the key: `set` stores (the key is emptied),
                    // `add` when the key holds nothing and `cas` when it holds what the token
                    // came with (one `add` or `cas` of an item that has already expired: the
                    // server decides, as for any; a `cas` answered a conflict without asking,
                    // so a retry loop never ended: an outside audit), `replace` when it holds
                    // something (emptied).
                    return Ok(match mode {
                        StoreMode::Set => {
                            io.delete(wire).await?;
                            StoreStatus::Stored
                        }
                        StoreMode::Replace if io.delete(wire).await? => StoreStatus::Stored,
                        StoreMode::Add | StoreMode::Cas(_) => {
                            io.store(&already_expired(wire, mode)).await?
                        }
                        _ => StoreStatus::NotStored,
                    });
                };
                let status = self
                    .send_store(io, mode, key, wire, value, &plan, now)
                    .await?;
                if mode != StoreMode::Add || status != StoreStatus::NotStored {
                    return Ok(status);
                }
                // The key holds an item, but one whose value is past its soft expiry is no
                // value a `get` returns (`has_key` says false): `add` takes it over, as it
                // takes a key whose item memcached has expired. The herd keeps such an item
                // `herd_timeout` past its TTL, and an `add` used as a lock with a TTL
                // (Django's idiom) was refused that much longer (an outside audit). A `cas`
                // over the item read: of two adders, one stores. It costs a refused `add`
                // a read; a read that fails leaves the `add` refused, as it was answered.
                let over = match self.held(io, wire, now).await {
                    Ok(Held::Past(cas)) => StoreMode::Cas(cas),
                    Ok(Held::Nothing) => StoreMode::Add,
                    Ok(Held::Value) | Err(_) => return Ok(StoreStatus::NotStored),
                };
                Ok(
                    match self
                        .send_store(io, over, key, wire, value, &plan, now)
                        .await?
                    {
                        StoreStatus::Stored => StoreStatus::Stored,
                        _ => StoreStatus::NotStored,
                    },
                )
            })
            .await
    }

    /// Encodes `value` as `plan` says and sends it with `mode`.
    #[allow(clippy::too_many_arguments)]
    async fn send_store<I: Io, T: Serialize + ?Sized>(
        &self,
        io: &I,
        mode: StoreMode,
        key: &str,
        wire: &[u8],
        value: &T,
        plan: &StorePlan,
        now: u64,
    ) -> Result<StoreStatus> {
        // A str or bytes value goes to a blocking transport as the caller's own bytes: no
        // copy of it in between. An async transport gets a copy (the caller's bytes cannot
        // be held across an await; its write buffer copies them anyway).
        let mut buf = Vec::new();
        let encoded = codec::with_encoding(value, self.config.codec, &mut buf, |bytes, flags| {
            let (bytes, flags) = self.finish(key, Cow::Borrowed(bytes), flags, plan, now, 0)?;
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
        self.observer
            .op("set_raw", async move {
                let wire = self.wire_key(key)?;
                // Without the herd the flags go as given; with it, bits 8 and 11-31 hold its
                // state: a caller's flags there were overwritten (or, with bit 8, dropped),
                // and read back as another soft expiry (outside audits). Flags that read as
                // herd state (bit 8 with a unit in bits 11-12) are refused either way: stored
                // bare, every read took them for a soft expiry long past, `get_raw` answered
                // a miss and `get` re-stored the value with flags of its own (an outside
                // audit).
                if newcache_herd::is_enveloped(flags) {
                    return Err(Error::Encode {
                        key: key.to_owned(),
                        detail: format!(
                            "flags {flags:#x} set bit 8 and bits 11-12, which every newcache reader takes for the herd's state (a soft expiry), not flags; keep bit 8 or bits 11-12 clear"
                        ),
                    });
                }
                let now = self.now_millis();
                let plan = self.plan(options, now)?;
                if plan.expire_now {
                    io.delete(&wire).await?;
                    return Ok(());
                }
                let mut flags = flags;
                if let Some(soft) = plan.soft_expiry_millis {
                    if flags & !codec::ENCODING_BITS != 0 {
                        return Err(Error::Encode {
                            key: key.to_owned(),
                            detail: format!(
                                "flags {flags:#x} use bits the herd keeps its soft expiry in (8 and 11-31); store them with SetOptions::no_herd() to keep them as they are"
                            ),
                        });
                    }
                    flags |= self.herd_bits(Envelope::new(soft), now);
                }
                io.store(&Store::set(&wire, bytes, flags, plan.exptime))
                    .await?;
                Ok(())
            })
            .await
    }

    /// `set_many`: the keys that were not stored; [`Error::PartlyStored`] when a server
    /// failed while the others answered.
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
        self.observer
            .op("set_many", async move {
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
                            encoded.push((wire, e));
                        }
                        None => {
                            // Nothing is stored, but a value that cannot be encoded is still
                            // an error (and nothing is deleted).
                            self.check_encodes(key, &value)?;
                            expired.push(wire);
                        }
                    }
                    keys.push(key.to_owned());
                }
                if plan.is_none() {
                    // The values are expired already: their keys are deleted, and a failed
                    // server's keys are the error, as for stores.
                    let refs: Vec<&[u8]> = expired.iter().map(Vec::as_slice).collect();
                    let deleted = io.delete_many_each(&refs).await?;
                    return match deleted.failed.is_empty() {
                        true => Ok(Vec::new()),
                        false => Err(Error::PartlyStored {
                            failed: keyed(deleted.failed, |i| keys.get(i).cloned()),
                            not_stored: Vec::new(),
                        }),
                    };
                }
                let requests: Vec<Store<'_>> = encoded
                    .iter()
                    .map(|(wire, (bytes, flags, exptime))| {
                        Store::set(wire, bytes, *flags, *exptime)
                    })
                    .collect();
                let stored = io.store_many_each(&requests).await?;
                let mut failed = stored.failed.into_iter().peekable();
                let mut failed_keys = Vec::new();
                let mut not_stored = Vec::new();
                for (i, (key, status)) in keys.into_iter().zip(stored.statuses).enumerate() {
                    if let Some((_, e)) = failed.next_if(|(at, _)| *at == i) {
                        failed_keys.push((key, e));
                    } else if !status.is_stored() {
                        not_stored.push(key);
                    }
                }
                // A server failed while the others answered, or a value was refused as too
                // large: which keys were not written is the error.
                match failed_keys.is_empty() {
                    true => Ok(not_stored),
                    false => Err(Error::PartlyStored {
                        failed: failed_keys,
                        not_stored,
                    }),
                }
            })
            .await
    }

    /// `delete`: whether there was a value.
    pub(crate) async fn delete<I: Io>(&self, io: &I, key: &str) -> Result<bool> {
        self.observer
            .op("delete", async move {
                let wire = self.wire_key(key)?;
                Ok(io.delete(&wire).await?)
            })
            .await
    }

    /// `clear`: `flush_all` on every server.
    pub(crate) async fn clear<I: Io>(&self, io: &I) -> Result<()> {
        self.observer
            .op("clear", async move { Ok(io.flush_all().await?) })
            .await
    }

    /// `stats`: every server's statistics; a server that failed is listed with its failure
    /// (and counted in the errors, as a `get_many`'s unread key is).
    pub(crate) async fn stats<I: Io>(&self, io: &I) -> Result<Vec<ServerStats>> {
        self.observer
            .op("stats", async move {
                let servers = io.stats().await?;
                for failure in servers.iter().filter_map(|s| s.failure.as_ref()) {
                    self.observer.failed_key("stats", failure);
                }
                Ok(servers)
            })
            .await
    }

    /// `delete_many`: how many existed.
    pub(crate) async fn delete_many<I: Io, K: AsRef<str>>(
        &self,
        io: &I,
        keys: &[K],
    ) -> Result<usize> {
        self.observer
            .op("delete_many", async move {
                let wires = keys
                    .iter()
                    .map(|k| self.wire_key(k.as_ref()))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
                let deleted = io.delete_many_each(&refs).await?;
                let existed = deleted.existed();
                match deleted.failed.is_empty() {
                    true => Ok(existed),
                    false => Err(Error::PartlyDeleted {
                        failed: keyed(deleted.failed, |i| {
                            keys.get(i).map(|k| k.as_ref().to_owned())
                        }),
                        existed,
                    }),
                }
            })
            .await
    }

    /// `incr` / `decr`.
    pub(crate) async fn counter<I: Io>(
        &self,
        io: &I,
        key: &str,
        delta: u64,
        up: bool,
    ) -> Result<u64> {
        self.observer
            .op(if up { "incr" } else { "decr" }, async move {
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
            })
            .await
    }

    /// `touch`: a new TTL, and a new soft expiry for a herd-protected value.
    pub(crate) async fn touch<I: Io>(
        &self,
        io: &I,
        key: &str,
        options: SetOptions,
    ) -> Result<bool> {
        self.observer
            .op("touch", self.touch_unobserved(io, key, options))
            .await
    }

    /// `touch`, not counted (for operations made of it).
    pub(crate) async fn touch_unobserved<I: Io>(
        &self,
        io: &I,
        key: &str,
        options: SetOptions,
    ) -> Result<bool> {
        let wire = self.wire_key(key)?;
        let now = self.now_millis();
        let plan = self.plan(options, now)?;
        if plan.expire_now {
            return Ok(io.delete(&wire).await?);
        }
        let Some(item) = io.get(&wire).await? else {
            return Ok(false);
        };
        let opening = self.opening(&item, now);
        let stamp = match (&opening, plan.soft_expiry_millis) {
            (Some(o), soft) => self.stamp_for_new_ttl(&item, o, soft, now),
            // A bare value gains the herd state, unless its flags use the bits that would hold
            // it (another application's): ORed in, they made a soft expiry of nothing, and
            // the item's own bit 8 was taken for the herd's and later dropped (an outside
            // audit). memcached's own `touch` then, the flags left as they are.
            (None, Some(soft)) if item.flags & !codec::ENCODING_BITS == 0 => Some(Stamp {
                flags: item.flags | self.herd_bits(Envelope::new(soft), now),
                value: None,
            }),
            // Bare stays bare; a django-newcache tuple keeps its own expiry.
            _ => None,
        };
        let stamp = match stamp {
            Some(stamp) if stamp.value.is_some() || stamp.flags != item.flags => stamp,
            // A value that stays without herd state lives the TTL asked, not the herd
            // timeout longer.
            None if opening.is_none() => {
                let bare = self.plan(options.no_herd(), now)?;
                return Ok(io.touch(&wire, bare.exptime).await?);
            }
            _ => return Ok(io.touch(&wire, plan.exptime).await?),
        };
        // The soft expiry lives in the flags (or in the value), which `touch` cannot change:
        // rewrite the same value with CAS, so a concurrent write wins.
        let mode = item.cas.map_or(StoreMode::Replace, StoreMode::Cas);
        let value = match &stamp.value {
            Some(v) => v.as_slice(),
            None => &item.value,
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

    /// The herd state of a herd-protected `item` (`opening`) for a new TTL whose soft expiry
    /// is `soft` (`None`: without the herd): moved to it, or taken off (a django-newcache
    /// tuple keeps its own expiry then: `None`). For `touch`, and `incr_version`'s move.
    pub(crate) fn stamp_for_new_ttl(
        &self,
        item: &Item,
        opening: &Opening,
        soft: Option<u64>,
        now: u64,
    ) -> Option<Stamp> {
        match soft {
            Some(soft) => self.restamp(item, opening, Envelope::new(soft), now),
            None if opening.seed.is_none() => Some(Stamp {
                flags: value_flags(item.flags),
                value: None,
            }),
            None => None,
        }
    }

    /// `invalidate`: the value marked stale, not deleted.
    pub(crate) async fn invalidate<I: Io>(&self, io: &I, key: &str) -> Result<bool> {
        self.observer
            .op("invalidate", async move {
                let wire = self.wire_key(key)?;
                self.invalidate_wire(io, &wire, None).await
            })
            .await
    }

    /// [`Core::invalidate`] of a wire key: also how a multi-get that fails gives back the
    /// refreshes it won ([`Core::read_many`]). Under meta, with `cas`, only the item with
    /// that unique (`md <key> I C<cas>`: a value stored since is left as it is).
    pub(crate) async fn invalidate_wire<I: Io>(
        &self,
        io: &I,
        wire: &[u8],
        cas: Option<u64>,
    ) -> Result<bool> {
        if self.meta() {
            match io
                .meta_invalidate(wire, self.herd.invalidated_exptime(), cas)
                .await
            {
                Ok(found) => {
                    self.meta_answered();
                    return Ok(found);
                }
                // No meta protocol here: lease from now on; invalidate through the flags.
                Err(e) if self.meta_refused(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }

        for _ in 0..3 {
            let Some(item) = io.get(wire).await? else {
                return Ok(false);
            };
            let now = self.now_millis();
            let opening = self.opening(&item, now);
            let stale = self
                .herd
                .invalidated(opening.as_ref().map(|o| &o.envelope), now);
            let stamp = match &opening {
                Some(o) => self.restamp(&item, o, stale, now),
                // A bare value whose flags leave the herd's bits free is marked.
                None if item.flags & !codec::ENCODING_BITS == 0 => Some(Stamp {
                    flags: item.flags | self.herd_bits(stale, now),
                    value: None,
                }),
                // One whose flags use them (another application's) cannot be: ORed
                // in, they made a soft expiry of nothing (an outside audit: "true",
                // and the value served fresh) and took its bit 8 for the herd's.
                None => None,
            };
            let Some(stamp) = stamp else {
                // A django-newcache tuple whose expiry cannot move, or a value that
                // cannot carry the herd state: deleted instead.
                return Ok(io.delete(wire).await?);
            };
            let value = match &stamp.value {
                Some(v) => v.as_slice(),
                None => &item.value,
            };
            let mode = item.cas.map_or(StoreMode::Replace, StoreMode::Cas);
            let status = io
                .store(&Store {
                    mode,
                    key: wire,
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

/// A batch's failed requests (by position) named by their caller's keys (`key_of`).
fn keyed(
    failed: Vec<(usize, newcache_transport::Error)>,
    key_of: impl Fn(usize) -> Option<String>,
) -> Vec<(String, newcache_transport::Error)> {
    failed
        .into_iter()
        .filter_map(|(i, e)| Some((key_of(i)?, e)))
        .collect()
}
