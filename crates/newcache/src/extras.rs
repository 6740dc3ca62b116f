//! The rest of Django's cache API, and memcached's: CAS (`gets` / `cas`), `append` /
//! `prepend`, get-and-touch, per-call versions (`incr_version` / `decr_version`), written
//! once over an [`Io`] for both caches.

use serde::de::DeserializeOwned;
use serde::Serialize;

use newcache_transport::{Store, StoreMode, StoreStatus};

use crate::io::Io;
use crate::ops::{Core, Fetched};
#[cfg(feature = "pickle")]
use crate::EnvelopeFormat;
use crate::{Error, Result, SetOptions, Ttl};

/// The CAS unique of a value read by [`gets`](crate::Cache::gets): hand it to
/// [`cas`](crate::Cache::cas) to store only if nobody wrote the key in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CasToken(pub(crate) u64);

impl CasToken {
    /// The server's CAS unique.
    pub fn unique(&self) -> u64 {
        self.0
    }
}

impl Core {
    /// `gets`: the value and its CAS token, herd rules as for `get`.
    pub(crate) async fn gets<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        key: &str,
    ) -> Result<Option<(T, CasToken)>> {
        self.observer
            .op("gets", async move {
                let wire = self.wire_key(key)?;
                let found = self.fetch_with_cas::<I, T>(io, "gets", key, &wire).await?;
                match found {
                    Some((value, Some(cas))) => Ok(Some((value, CasToken(cas)))),
                    Some((_, None)) => Err(Error::Config(
                        "the transport returned no CAS unique (libmemcached with behaviors.cas=false, or a memcached started with -C, which gives every item the unique 0?); gets and cas need CAS on".into(),
                    )),
                    None => Ok(None),
                }
            })
            .await
    }

    /// A read through the herd policy that keeps the item's CAS unique.
    async fn fetch_with_cas<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        op: &'static str,
        key: &str,
        wire: &[u8],
    ) -> Result<Option<(T, Option<u64>)>> {
        // Counted as `get`'s hits and misses are (they were not: an outside audit).
        Ok(
            match self.counted(op, self.fetch_item(io, op, wire).await?) {
                Fetched::Hit(opened) => {
                    let cas = opened.0.cas;
                    Some((self.decode_opened_item(key, opened)?, cas))
                }
                Fetched::Recompute(_) | Fetched::Cold => None,
            },
        )
    }

    /// `cas`: stores only if the key still holds the value `token` came with.
    pub(crate) async fn cas<I: Io, T: Serialize + ?Sized>(
        &self,
        io: &I,
        key: &str,
        value: &T,
        token: CasToken,
        options: SetOptions,
    ) -> Result<()> {
        let wire = self.wire_key(key)?;
        let status = self
            .store(io, StoreMode::Cas(token.0), key, &wire, value, options)
            .await?;
        match status {
            StoreStatus::Stored => Ok(()),
            StoreStatus::Exists | StoreStatus::NotFound | StoreStatus::NotStored => {
                Err(Error::CasConflict {
                    key: key.to_owned(),
                })
            }
        }
    }

    /// `append` (`front`: `prepend`): bytes added to the stored value; `false` when the key
    /// holds none.
    pub(crate) async fn extend<I: Io>(
        &self,
        io: &I,
        key: &str,
        bytes: &[u8],
        front: bool,
    ) -> Result<bool> {
        let op = if front { "prepend" } else { "append" };
        self.observer
            .op(op, async move {
                self.check_appendable(key)?;
                let wire = self.wire_key(key)?;
                let request = Store {
                    mode: if front {
                        StoreMode::Prepend
                    } else {
                        StoreMode::Append
                    },
                    key: &wire,
                    value: bytes,
                    flags: 0,
                    exptime: 0,
                };
                Ok(io.store(&request).await?.is_stored())
            })
            .await
    }

    /// Refuses `append`/`prepend` where the stored bytes are not the value itself.
    fn check_appendable(&self, key: &str) -> Result<()> {
        let refuse = |reason: &str| {
            Err(Error::NotAppendable {
                key: key.to_owned(),
                reason: reason.to_owned(),
            })
        };
        #[cfg(feature = "pickle")]
        if self.config.envelope == EnvelopeFormat::DjangoNewcache {
            return refuse("this cache writes django-newcache's pickled herd tuple (envelope=django-newcache), which bytes added to the end or the front would break; use set");
        }
        if self.config.compress_threshold.is_some() {
            return refuse("this cache compresses values (compress_threshold), and bytes added to compressed data break it; use set");
        }
        Ok(())
    }

    /// `get_and_touch`: the value, and a new TTL for it (a new soft expiry too when it is
    /// herd-protected), in two round trips.
    pub(crate) async fn get_and_touch<I: Io, T: DeserializeOwned + 'static>(
        &self,
        io: &I,
        key: &str,
        options: SetOptions,
    ) -> Result<Option<T>> {
        self.observer
            .op("get_and_touch", async move {
                let wire = self.wire_key(key)?;
                // The TTL is checked before anything is sent: a TTL no store takes failed
                // only after a hit, and a miss answered `None` for it (an outside audit).
                self.plan(options, self.now_millis())?;
                match self.fetch::<I, T>(io, "get_and_touch", key, &wire).await? {
                    Fetched::Hit(value) => {
                        self.touch_unobserved(io, key, options).await?;
                        Ok(Some(value))
                    }
                    Fetched::Recompute(_) | Fetched::Cold => Ok(None),
                }
            })
            .await
    }

    /// `incr_version` (and `decr_version`, by a negative `delta`): moves `key`'s item from
    /// this cache's version to `version + delta` (flags and all; the TTL becomes the default
    /// one, as in Django, and the soft expiry moves with it), and returns the new version.
    /// `op` names it in metrics and spans (`decr_version`'s were labelled `incr_version`: an
    /// outside audit).
    pub(crate) async fn move_version<I: Io>(
        &self,
        io: &I,
        op: &'static str,
        key: &str,
        delta: i128,
    ) -> Result<i64> {
        let (to, version) = self.version_plus(delta)?;
        self.observer
            .op(op, async move {
                let to = &to;
                let old = self.wire_key(key)?;
                let new = to.wire_key(key)?;
                let Some(item) = io.get(&old).await? else {
                    return Err(Error::NotFound {
                        key: key.to_owned(),
                    });
                };
                // A move to the same wire key (a delta of 0) leaves the value where it is:
                // stored then deleted, it was gone (as in Django, whose `incr_version(key,
                // 0)` loses the value: an outside audit).
                if new == old {
                    return Ok(version);
                }
                let now = self.now_millis();
                let plan = self.plan(SetOptions::new(Ttl::Default), now)?;
                // The herd state moves with the TTL: kept as it was, a value moved to the
                // default TTL vanished while it still read fresh, and nobody was chosen to
                // recompute it (an outside audit). A bare value stays bare, living the
                // default TTL.
                let (stamp, exptime) = match self.opening(&item, now) {
                    Some(o) => (
                        self.stamp_for_new_ttl(&item, &o, plan.soft_expiry_millis, now),
                        plan.exptime,
                    ),
                    None => (
                        None,
                        self.plan(SetOptions::new(Ttl::Default).no_herd(), now)?
                            .exptime,
                    ),
                };
                let (flags, value) = match &stamp {
                    Some(stamp) => (stamp.flags, stamp.value.as_deref().unwrap_or(&item.value)),
                    None => (item.flags, item.value.as_slice()),
                };
                io.store(&Store::set(&new, value, flags, exptime)).await?;
                io.delete(&old).await?;
                Ok(version)
            })
            .await
    }
}
