//! `get_or_set`: the herd-safe read-through. A stale value goes to the policy's one winner;
//! a cold key to one loader per process (single flight) and one across processes (a lease
//! key stored with `add`), each wait bounded by `lease_wait`. Written once over an [`Io`],
//! for the blocking and the async cache.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use newcache_herd::{read_flags, value_flags};
use newcache_transport::{Item, Store, StoreMode, StoreStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::herd_read::{Opened, Over, Restore};
use crate::io::{Io, Lease};
use crate::observe::{Event, Observed};
use crate::ops::{Core, Fetched};
use crate::write::already_expired;
use crate::KeyFunction;
use crate::{Error, Result, SetOptions};

/// A table of single flights, by wire key.
pub(crate) type Flights = Arc<Mutex<HashMap<Vec<u8>, Arc<Flight>>>>;

/// The single flights every cache of this process of one name, transport and placement on
/// the same servers shares (`cluster` names them): two caches built from one URL.
/// One loader per process, as the docs say, not one per cache instance (an outside audit: two caches of
/// one process each loaded the same stale value under `early` and `reinsert`). Held while
/// a cache on that cluster lives.
pub(crate) fn flights_of(cluster: &str) -> Flights {
    type Registry = Mutex<HashMap<String, Weak<Mutex<HashMap<Vec<u8>, Arc<Flight>>>>>>;
    static ALL: OnceLock<Registry> = OnceLock::new();
    let Ok(mut all) = ALL.get_or_init(Registry::default).lock() else {
        return Flights::default();
    };
    if let Some(flights) = all.get(cluster).and_then(Weak::upgrade) {
        return flights;
    }
    all.retain(|_, flights| flights.strong_count() > 0);
    let flights = Flights::default();
    all.insert(cluster.to_owned(), Arc::downgrade(&flights));
    flights
}

/// One loader run that other callers in this process wait for.
pub(crate) struct Flight {
    /// It refreshes a stale value (early, `reinsert`, an item read without a claim), rather
    /// than loading a cold key.
    refresh: bool,
    /// When its leader began.
    began: Instant,
    /// The unique of the item a refresh read, when it had one: the item it stores over.
    read_cas: Option<u64>,
    landed: Mutex<Landed>,
    finished: Condvar,
    /// The item its leader loaded and no server took (one down or hung, or a
    /// `SERVER_ERROR` such as memcached's "out of memory storing object"): its followers
    /// are served it, where reading the key again found it still cold and each loaded in
    /// turn (an outside audit: 8 loads for 8 threads, each failing).
    unstored: Mutex<Option<Item>>,
    /// What its leader stored with a plain `set` over a value re-stored bare (`reinsert`,
    /// or a server without CAS), with its TTL: a follower whose own re-store of the old
    /// value may have landed after it puts it back ([`Flight::stored`]).
    stored: Mutex<Option<(Item, u32)>>,
    /// Wakes async waiters (feature `tokio`).
    #[cfg(feature = "tokio")]
    notify: tokio::sync::Notify,
}

/// How a [`Flight`] stands, as its followers find it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Landed {
    /// Its leader is still at it.
    #[default]
    Flying,
    /// Its leader is done: with a value, or cancelled or panicked (the key is then still
    /// cold, and a follower leads next).
    Done,
    /// Its leader's loader returned an error: its followers fail too, rather than each
    /// running its own loader against what just failed, one after another.
    LoaderFailed,
}

impl Flight {
    fn new(refresh: bool, read_cas: Option<u64>) -> Flight {
        Flight {
            refresh,
            began: Instant::now(),
            read_cas,
            landed: Mutex::default(),
            finished: Condvar::new(),
            unstored: Mutex::default(),
            stored: Mutex::default(),
            #[cfg(feature = "tokio")]
            notify: tokio::sync::Notify::new(),
        }
    }

    /// The item its leader loaded and no server took, if so.
    fn unstored(&self) -> Option<Item> {
        self.unstored.lock().ok().and_then(|item| item.clone())
    }

    /// What its leader stored over a bare re-store, and its TTL, if so.
    fn stored(&self) -> Option<(Item, u32)> {
        self.stored.lock().ok().and_then(|stored| stored.clone())
    }

    /// How it stands now.
    #[cfg(feature = "tokio")]
    pub(crate) fn landed(&self) -> Landed {
        self.landed.lock().map_or(Landed::Done, |landed| *landed)
    }

    /// Waits (blocking the thread) until the leader finishes (with a value, an error or a
    /// panic), or `limit` has passed: how it stands then.
    pub(crate) fn wait_within(&self, limit: Duration) -> Landed {
        let until = Instant::now() + limit;
        let Ok(mut landed) = self.landed.lock() else {
            return Landed::Done;
        };
        while *landed == Landed::Flying {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.finished.wait_timeout(landed, left) {
                Ok((guard, _)) => landed = guard,
                Err(_) => return Landed::Done,
            }
        }
        *landed
    }

    /// Waits (as a task) until the leader finishes.
    #[cfg(feature = "tokio")]
    pub(crate) async fn done_async(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a finish in between is not missed.
            notified.as_mut().enable();
            if self.landed() != Landed::Flying {
                return;
            }
            notified.await;
        }
    }

    fn finish(&self, landed: Landed) {
        if let Ok(mut now) = self.landed.lock() {
            *now = landed;
        }
        self.finished.notify_all();
        #[cfg(feature = "tokio")]
        self.notify.notify_waiters();
    }
}

/// The lease key of the item at `wire`, for `get_or_set`'s cold load across processes:
/// `newcache-lease-` and the SHA-1 of the wire key, whatever the cache's key function.
/// It was the caller's key with `:newcache-lease` appended, through the key function: with
/// a key function that does not hash (Django's prefix, an identity) a key of 240 bytes was
/// stored and read, and refused on a cold `get_or_set` only (its lease key was past 250
/// bytes); and a caller's own key of that name made `get_or_set` wait on it (and the
/// lease's release deleted it). An outside audit found both.
fn lease_key(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    newcache_keyfn::HashedKey::new("newcache", "lease")
        .write_key(&String::from_utf8_lossy(wire), &mut out);
    out
}

/// A token naming one lease taken (the lease key's value): this process and a count, so
/// that a waiter tells the holder it met from a later one.
fn lease_token() -> Vec<u8> {
    static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{at}-{n}", std::process::id()).into_bytes()
}

/// The token of whoever holds a lease key now (`None`: nobody, or it could not be read;
/// the next `add` of it tells).
async fn lease_holder<I: Io>(io: &I, lease_key: &[u8]) -> Option<Vec<u8>> {
    io.get(lease_key)
        .await
        .ok()
        .flatten()
        .map(|item| item.value)
}

/// Deletes `get_or_set`'s lease key when the loader that holds it is done, however it leaves
/// (value, error, panic, or an async caller that stopped waiting), so other processes need
/// not wait out its TTL.
pub(crate) struct LeaseGuard<'a, I: Io> {
    io: &'a I,
    key: Vec<u8>,
    /// The caller's token: the lease key's value when its `add` landed.
    token: Vec<u8>,
    /// What the caller knows of the lease, which says when the key is deleted.
    lease: Lease,
}

impl<'a, I: Io> LeaseGuard<'a, I> {
    /// A guard of `key`, taken with `token`, which the caller may not hold yet (its `add`
    /// may get no reply).
    fn new(io: &'a I, key: Vec<u8>, token: Vec<u8>) -> Self {
        LeaseGuard {
            io,
            key,
            token,
            lease: Lease::Unsure,
        }
    }

    /// Nothing to release after all (the `add` was refused, or is tried again).
    fn disarm(mut self) {
        self.key = Vec::new();
    }

    /// The lease is this caller's: released whatever the key holds then.
    fn hold(mut self) -> LeaseGuard<'a, I> {
        LeaseGuard {
            io: self.io,
            key: std::mem::take(&mut self.key),
            token: std::mem::take(&mut self.token),
            lease: Lease::Held,
        }
    }

    /// Releases the lease now, the key deleted only while it is read holding this caller's
    /// token ([`Lease::Releasing`]), whatever the caller knew of it.
    async fn release_if_own(mut self) {
        self.lease = Lease::Releasing;
        self.release().await;
    }

    /// Releases the lease now, the release awaited: on a normal exit, rather than from the
    /// destructor, which can only hand an async release to a task of the runtime (one that
    /// may not run again: a current-thread runtime whose `block_on` returned left the lease
    /// to another process's wait of `lease_wait`, an outside audit).
    ///
    /// A caller dropped while it awaits leaves the rest to the destructor, which deletes
    /// the key only while it is read holding this caller's token ([`Lease::Releasing`]):
    /// taken out before the await, the key's `delete` given up on was dropped unwritten
    /// and the lease left behind (an outside audit); kept as it was, the destructor deleted
    /// it again unconditionally, and when the first `delete` had landed, another process's
    /// lease taken in between went with it, and a second loader ran beside that one's (a
    /// review: 9 to 24 keys of 150 loaded twice at once).
    async fn release(mut self) {
        let when = std::mem::replace(&mut self.lease, Lease::Releasing);
        crate::io::release(self.io, &self.key, &self.token, when).await;
        self.key = Vec::new();
    }
}

impl<I: Io> Drop for LeaseGuard<'_, I> {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        // A failed delete leaves the key to expire on its own (after lease_wait).
        self.io.release(
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
            self.lease,
        );
    }
}

/// What a lease `add` that got no reply did, as the lease key tells when read after it.
enum LeaseAfterLoss {
    /// The key holds this caller's token: the `add` landed.
    Held,
    /// Another caller's token: the `add` was refused.
    Refused,
    /// No lease: the `add` did not land; try it again.
    Free,
    /// The key could not be read either.
    Unknown,
}

/// Reads `lease_key` after an `add` of `token` that got no reply: whether it landed.
async fn lease_after_loss<I: Io>(io: &I, lease_key: &[u8], token: &[u8]) -> LeaseAfterLoss {
    match io.get(lease_key).await {
        Ok(Some(item)) if item.value == token => LeaseAfterLoss::Held,
        Ok(Some(_)) => LeaseAfterLoss::Refused,
        Ok(None) => LeaseAfterLoss::Free,
        Err(_) => LeaseAfterLoss::Unknown,
    }
}

/// A `get_or_set` loader running: one that panics, or whose call is dropped before it
/// finishes (a timeout around an async `get_or_set`), is counted as a failed run (neither
/// was counted at all: outside audits).
struct LoaderRun<'a> {
    observer: &'a crate::observe::Observer,
    started: Instant,
    done: bool,
}

impl Drop for LoaderRun<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.observer.loader(self.started.elapsed(), true);
        }
    }
}

/// Ends a flight when the leader is done, however it leaves (value, error, panic or drop).
pub(crate) struct FlightGuard<'a> {
    core: &'a Core,
    wire: Vec<u8>,
    flight: Arc<Flight>,
    /// Its loader returned an error ([`Landed::LoaderFailed`]).
    failed: bool,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.core.flights.lock() {
            flights.remove(&self.wire);
        }
        self.flight.finish(if self.failed {
            Landed::LoaderFailed
        } else {
            Landed::Done
        });
    }
}

/// A `get_or_set` failure before it reaches the caller: the cache's, or the loader's own.
pub(crate) enum Through<E> {
    Cache(Error),
    Loader(E),
}

impl<E> From<Error> for Through<E> {
    fn from(e: Error) -> Self {
        Through::Cache(e)
    }
}

impl<E> Observed for Through<E> {
    fn kind(&self) -> &'static str {
        match self {
            Through::Cache(e) => e.kind(),
            Through::Loader(_) => "loader",
        }
    }

    fn server(&self) -> Option<&str> {
        match self {
            Through::Cache(e) => e.server(),
            Through::Loader(_) => None,
        }
    }
}

impl Core {
    /// The lease key of `key` ([`lease_key`]).
    pub(crate) fn lease_key(&self, key: &str) -> Result<Vec<u8>> {
        Ok(lease_key(&self.wire_key(key)?))
    }

    /// The flight of `wire`'s load in this process, and whether this caller leads it (it
    /// was not flying: the caller must end it, [`FlightGuard`]).
    fn flight(
        &self,
        wire: &[u8],
        refresh: bool,
        read_cas: Option<u64>,
    ) -> Result<(Arc<Flight>, bool)> {
        let mut flights = self
            .flights
            .lock()
            .map_err(|_| Error::Config("get_or_set flight table poisoned".into()))?;
        Ok(match flights.get(wire) {
            Some(f) => (f.clone(), false),
            None => {
                let f = Arc::new(Flight::new(refresh, read_cas));
                flights.insert(wire.to_vec(), f.clone());
                (f, true)
            }
        })
    }

    /// [`Error::Reentrant`] when this thread runs the loader of the flight of `wire` that a
    /// `get_or_set` of `key` is about to follow: called by that loader (on this cache or a
    /// twin sharing its flights), it would wait for its own load for ever. Where it meets
    /// no flight (a refresh served the old value, a claim's winner) it goes on as any call.
    fn not_its_own(&self, wire: &[u8], key: &str) -> Result<()> {
        if crate::reentry::loading_here(&self.flights, wire) {
            return Err(Error::Reentrant {
                key: key.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether a `get_or_set` in this process is loading `wire` now.
    pub(crate) fn refreshing(&self, wire: &[u8]) -> bool {
        self.flights
            .lock()
            .is_ok_and(|flights| flights.contains_key(wire))
    }

    /// Whether a `get_or_set` in this process refreshes the item of `wire` whose unique is
    /// `cas` (read past its soft expiry), so that a reader is served it rather than claim
    /// it for a second load: a refresh flight run by this thread (its loader reads its key:
    /// served the old value, not a nested load; a review), or a refresh of that very item (a cold
    /// load's waiter that then reads another process's stale value must claim it; an item
    /// invalidated since the refresh read it is no longer the one it stores over, and its
    /// claim goes to one more reader at once: a review saw 2.4 s of the invalidated value
    /// served) that has run for less than `lease_wait` (slower, it is taken for hung, as
    /// its waiters take it).
    pub(crate) fn refreshing_item(&self, wire: &[u8], cas: Option<u64>) -> bool {
        let Some(young) = self.flights.lock().ok().and_then(|flights| {
            flights
                .get(wire)
                .filter(|flight| flight.refresh)
                .map(|flight| {
                    flight.began.elapsed() < self.config.lease_wait
                        && (flight.read_cas.is_none() || flight.read_cas == cas)
                })
        }) else {
            return false;
        };
        young || crate::reentry::loading_here(&self.flights, wire)
    }
}

impl Core {
    /// `get_or_try_set` (see [`Cache::get_or_try_set`](crate::Cache::get_or_try_set)), with
    /// the loader as a future.
    pub(crate) async fn get_or_try_set<I, T, E, F, Fut>(
        &self,
        io: &I,
        key: &str,
        options: SetOptions,
        loader: F,
    ) -> Result<T, E>
    where
        I: Io,
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let outcome = self
            .observer
            .op("get_or_set", self.read_through(io, key, options, loader))
            .await;
        outcome.map_err(|e| match e {
            Through::Cache(e) => E::from(e),
            Through::Loader(e) => e,
        })
    }

    async fn read_through<I, T, E, F, Fut>(
        &self,
        io: &I,
        key: &str,
        options: SetOptions,
        mut loader: F,
    ) -> Result<T, Through<E>>
    where
        I: Io,
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        const OP: &str = "get_or_set";
        let wire = self.wire_key(key)?;
        // Counted once per call, by its first read: a hit, or a miss (then loaded or waited
        // for); the re-reads of the waits are not.
        let mut first = true;
        'read: loop {
            let fetched = self.fetch_unobserved::<I, T>(io, OP, key, &wire).await?;
            if std::mem::take(&mut first) {
                let event = match fetched {
                    Fetched::Hit(_) => Event::Hit,
                    Fetched::Recompute(_) | Fetched::Cold => Event::Miss,
                };
                self.observer.event(OP, event, 1);
            }
            match fetched {
                Fetched::Hit(v) => return Ok(v),
                // A refresh of a value this reader read (XFetch's early one): one per
                // process too. Readers that decide on it once the leader is on its way are
                // served the value (`Core::look` asks `refreshing`); one that decided in the
                // instant before waits for it.
                // The same for `reinsert`'s re-store (and an item read without a CAS
                // unique): every reader that read the stale key before the first re-store
                // landed re-stores it too, so without the flight each of them loaded (an
                // outside audit: 32 of 32 tasks).
                Fetched::Recompute(over @ (Over::Item(_) | Over::Any | Over::Restored(_))) => {
                    let read_cas = match over {
                        Over::Item(cas) => Some(cas),
                        _ => None,
                    };
                    let (flight, leader) = self.flight(&wire, true, read_cas)?;
                    if !leader {
                        self.not_its_own(&wire, key)?;
                        // Its value then, or (a leader slower than `lease_wait`, or hung)
                        // the old one: the leader is refreshing it, so it is served.
                        let landed = io.wait_for(&flight, self.config.lease_wait).await;
                        if let (Landed::Done, Over::Restored(restore)) = (landed, over) {
                            self.put_back(io, &wire, &flight, restore).await;
                        }
                        continue;
                    }
                    let guard = FlightGuard {
                        core: self,
                        wire: wire.clone(),
                        flight,
                        failed: false,
                    };
                    // A reader held up between its read and here may lead after another
                    // leader's whole flight, its value stored: the item read is gone, so
                    // the key is read again instead of loaded twice. With no unique to
                    // compare (`reinsert`, whose re-stored value is bare), a value fresh by
                    // its herd state is that flight's (an outside audit: with a fast loader,
                    // 71 of 150 stale events loaded twice in one process). Not for
                    // `Over::Any`: a re-stored django-newcache tuple, or an early refresh
                    // without uniques, reads as fresh itself, and nothing was refreshed
                    // (another audit: such a key was never loaded until it went cold).
                    let stored_since = match over {
                        Over::Item(_) | Over::Restored(_) => {
                            let now = io.get(&wire).await.map_err(Error::from)?;
                            now.is_some_and(|item| match over {
                                Over::Item(read) => item.cas.is_some_and(|cas| cas != read),
                                _ => self.is_fresh(&item),
                            })
                        }
                        _ => false,
                    };
                    if stored_since {
                        drop(guard);
                        continue;
                    }
                    let _guard = guard;
                    return self
                        .load_and_store(io, key, &wire, options, loader, over)
                        .await;
                }
                // A lease claim or memcached's win: one reader's across processes, which
                // loads at once (`Over::Won`).
                Fetched::Recompute(over) => {
                    return self
                        .load_and_store(io, key, &wire, options, loader, over)
                        .await
                }
                Fetched::Cold => {}
            }
            // A TTL that expires the value at once stores nothing: there is nothing to wait
            // for, and the callers that waited each found the key cold and loaded in turn
            // (an outside audit). Each loads at once, as a cache with nothing to share.
            if self.expires_at_once(options)? {
                return self
                    .load_and_store(io, key, &wire, options, loader, Over::Nothing)
                    .await;
            }
            // Cold: one loader per process. Its followers wait for its outcome: its value is
            // then there to read; after its loader's error they fail too (one failure, not
            // one loader run after another, each waiting out those before); after its panic
            // or cancellation the key is still cold, and one of them leads next. Every
            // `lease_wait` they read the key again: a value another process stored meanwhile
            // (its loader took the lease over from a hung one here) is served. They do not
            // take the load over themselves: with a loader slower than the lease, that made
            // one more load per lease in this process, and ran a failing loader once per
            // caller in turn (an outside audit: 16 runs by 16 threads, the last after 48 s).
            let (flight, leader) = self.flight(&wire, false, None)?;
            if !leader {
                self.not_its_own(&wire, key)?;
                let waited = Instant::now();
                loop {
                    match io.wait_for(&flight, self.config.lease_wait).await {
                        Landed::Done => {
                            self.observer.lease_wait(waited.elapsed());
                            if let Some(item) = flight.unstored() {
                                let now = self.now_millis();
                                if let Opened::Value { item, flags } =
                                    self.open(io, OP, &wire, item, now).await
                                {
                                    return self
                                        .decode_opened_item(key, (item, flags))
                                        .map_err(Through::Cache);
                                }
                            }
                            continue 'read;
                        }
                        Landed::LoaderFailed => {
                            self.observer.lease_wait(waited.elapsed());
                            return Err(Error::LoadFailed {
                                key: key.to_owned(),
                            }
                            .into());
                        }
                        Landed::Flying => {
                            match self
                                .read_after_wait(io, key, &wire, options, loader, waited)
                                .await
                            {
                                Ok(done) => return done,
                                Err(back) => loader = back,
                            }
                        }
                    }
                }
            }
            let mut guard = FlightGuard {
                core: self,
                wire: wire.clone(),
                flight,
                failed: false,
            };
            let loaded = self.cold_load(io, key, &wire, options, loader).await;
            // A loaded value the cache could not store (too large for the item size, or not
            // encodable) fails the waiters as a loader error does: they found the key still
            // cold and ran their loaders one after another, each failing the same way (an
            // outside audit: 222 runs for 222 calls, the last waiting 24 s). Not the
            // leader's other errors (a read lost while it waited for another process's
            // lease): its waiters read the key again, or lead next (failing them all on
            // one lost reply was another audit's finding).
            guard.failed = matches!(
                &loaded,
                Err(Through::Loader(_))
                    | Err(Through::Cache(
                        Error::Encode { .. }
                            | Error::Transport(newcache_transport::Error::ValueTooLarge { .. })
                    ))
            );
            return loaded;
        }
    }

    /// A cold key's load, by this process's leader: one across processes, by whoever adds
    /// the lease key; the others wait for its value.
    async fn cold_load<I, T, E, F, Fut>(
        &self,
        io: &I,
        key: &str,
        wire: &[u8],
        options: SetOptions,
        mut loader: F,
    ) -> Result<T, Through<E>>
    where
        I: Io,
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        const OP: &str = "get_or_set";
        // One loader across processes: whoever adds the lease key loads.
        let lease_key = lease_key(wire);
        // Whole seconds, rounded up, and one more: memcached's clock counts whole
        // seconds, so an item goes up to a second before its exptime (an outside audit:
        // a lease of 1 s lived 0.08 to 0.89 s, so a loader faster than `lease_wait`
        // got a second one beside it in another process).
        let lease_secs = u32::try_from(self.config.lease_wait.as_millis().div_ceil(1000))
            .unwrap_or(u32::MAX)
            .max(1)
            .saturating_add(1);
        // A lease held that long (and a second past it) by the same holder outlived its
        // TTL (something stored the key without one): a waiter then loads without it.
        let lease_life = Duration::from_secs(u64::from(lease_secs) + 1);
        // Whose lease it is: a waiter tells a holder that has kept it from a new one
        // that took it after it expired.
        let token = lease_token();
        let lease = Store {
            mode: StoreMode::Add,
            key: &lease_key,
            value: &token,
            flags: 0,
            exptime: lease_secs,
        };
        // When this caller began to wait, and since when it has waited on the holder it
        // met (whose token is kept).
        let mut waited: Option<(Instant, Instant, Option<Vec<u8>>)> = None;
        // Whether an `add` that got no reply was tried again already.
        let mut added_again = false;
        loop {
            // Armed before the `add` goes out: a caller dropped while it is in flight (a
            // `tokio::time::timeout` around `get_or_set`, a client that hung up) frees the
            // lease if its `add` landed. It was armed only once the reply came, and such a
            // drop left the lease key to cost the next cold call `lease_wait` (an outside
            // audit: 3 s).
            let sent = LeaseGuard::new(io, lease_key.clone(), token.clone());
            let mut leased = match io.store(&lease).await {
                Ok(status) => status.is_stored(),
                Err(e) if e.is_server_failure() => {
                    self.observer.failed_key(OP, &e);
                    // The `add` may have run before its reply was lost (a connection cut
                    // mid-reply, a timeout): the lease key says whether it did. Loading
                    // at once made a second loader run beside the holder's, after one lost
                    // reply on a healthy server, and its release deleted the holder's
                    // lease (an outside audit, 3 of 3 runs).
                    let maybe_ran = matches!(
                        e,
                        newcache_transport::Error::Io { .. }
                            | newcache_transport::Error::Timeout { .. }
                    );
                    let after = if maybe_ran {
                        lease_after_loss(io, &lease_key, &token).await
                    } else {
                        LeaseAfterLoss::Unknown
                    };
                    match after {
                        LeaseAfterLoss::Held => true,
                        LeaseAfterLoss::Refused => false,
                        LeaseAfterLoss::Free if !added_again => {
                            added_again = true;
                            sent.disarm();
                            continue;
                        }
                        // The lease key's server is down or hung while the value's
                        // answers: load without the lease across processes (still one
                        // loader per process) rather than fail a key whose server
                        // answers. The failure counts in the errors, so the outage shows.
                        LeaseAfterLoss::Free | LeaseAfterLoss::Unknown => {
                            // An `add` that may have run is released if it did, or the
                            // next cold call would wait out `lease_wait` for a lease
                            // nobody holds (a hung server runs the `add` once it is
                            // back: 3 of 5 lease keys were left after a SIGSTOP ended);
                            // not if the key holds another's token: that lease is theirs.
                            // Not after a refused or failed connect, or a server marked
                            // down: nothing was sent.
                            if !maybe_ran {
                                sent.disarm();
                                return self
                                    .load_and_store(io, key, wire, options, loader, Over::Nothing)
                                    .await;
                            }
                            let loaded = self
                                .load_and_store(io, key, wire, options, loader, Over::Nothing)
                                .await;
                            sent.release().await;
                            return loaded;
                        }
                    }
                }
                // Any other failure: the `add` may have run (a reply followed by bytes
                // nobody asked for is read, so it ran: left behind, its lease cost the next
                // cold call `lease_wait`, an outside audit). It was answered, so nothing is
                // pending on a hung server: released only while the key is read holding
                // this caller's token, never on a read that failed (as an unsure release
                // does: a read held up then took another process's lease, a review).
                Err(e) => {
                    sent.release_if_own().await;
                    return Err(Error::from(e).into());
                }
            };
            if !leased && added_again {
                // The `add` that got no reply may have landed after the read that found no
                // lease, and refused this one: then the lease is this caller's, and it
                // would have waited it out as another's (an outside audit: 4 s, at
                // `lease_wait` 3 s).
                leased = matches!(
                    lease_after_loss(io, &lease_key, &token).await,
                    LeaseAfterLoss::Held
                );
            }
            if leased {
                if let Some((began, _, _)) = waited {
                    self.observer.lease_wait(began.elapsed());
                }
                // Released (the key deleted) when the loader is done, awaited; from the
                // destructor when a panic or a drop ends it; before the flight guard, so
                // waiters that wake find the lease free.
                let lease = sent.hold();
                // A loader that finished between this caller's last read and its `add`
                // stored its value before freeing the lease: read once more.
                let loaded = match self.fetch_unobserved::<I, T>(io, OP, key, wire).await {
                    Err(e) => Err(e.into()),
                    Ok(Fetched::Hit(v)) => Ok(v),
                    Ok(Fetched::Recompute(over)) => {
                        self.load_and_store(io, key, wire, options, loader, over)
                            .await
                    }
                    Ok(Fetched::Cold) => {
                        self.load_and_store(io, key, wire, options, loader, Over::Nothing)
                            .await
                    }
                };
                lease.release().await;
                return loaded;
            }
            sent.disarm();
            // Another process holds the lease: wait for its value, and contend again,
            // since a holder that died frees the lease only when its key expires.
            let (began, since) = match &waited {
                Some((began, since, _)) => (*began, *since),
                None => {
                    let holder = lease_holder(io, &lease_key).await;
                    let now = Instant::now();
                    waited = Some((now, now, holder));
                    (now, now)
                }
            };
            if since.elapsed() >= lease_life {
                // Another process took the lease after the one this caller first met
                // expired (its loader slower than `lease_wait`): that is a new lease,
                // waited for afresh. Each waiter's own clock made every process load
                // once its wait ran out (an outside audit: 8 loads by 8 processes).
                let holder = lease_holder(io, &lease_key).await;
                if waited.as_ref().is_some_and(|(_, _, met)| *met != holder) {
                    waited = Some((began, Instant::now(), holder));
                    continue;
                }
                // The same holder past its TTL (something stored the key without one):
                // the wait is bounded by `lease_wait` all the same, so this caller loads.
                self.observer.lease_wait(began.elapsed());
                let over = match self.fetch_unobserved::<I, T>(io, OP, key, wire).await? {
                    Fetched::Hit(v) => return Ok(v),
                    Fetched::Recompute(over) => over,
                    Fetched::Cold => Over::Nothing,
                };
                return self
                    .load_and_store(io, key, wire, options, loader, over)
                    .await;
            }
            io.sleep(Duration::from_millis(20)).await;
            match self
                .read_after_wait(io, key, wire, options, loader, began)
                .await
            {
                Ok(done) => return done,
                Err(back) => loader = back,
            }
        }
    }

    /// A waiter's read of the key, after a wait for another caller's load (in this process
    /// or another): a value is served; a stale one whose refresh this read won (the claim,
    /// or memcached's win) is loaded and stored by this caller, or nobody refreshes it (the
    /// in-process waiter dropped such a win, and every process was served the old value for
    /// `herd_timeout` with no load: an outside audit); nothing yet, and the loader is handed
    /// back (`Err`) for the wait to go on. `began`: when the wait began, for its metric.
    async fn read_after_wait<I, T, E, F, Fut>(
        &self,
        io: &I,
        key: &str,
        wire: &[u8],
        options: SetOptions,
        loader: F,
        began: Instant,
    ) -> std::result::Result<Result<T, Through<E>>, F>
    where
        I: Io,
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let over = match self
            .fetch_unobserved::<I, T>(io, "get_or_set", key, wire)
            .await
        {
            Err(e) => return Ok(Err(e.into())),
            Ok(Fetched::Cold) => return Err(loader),
            Ok(Fetched::Hit(v)) => {
                self.observer.lease_wait(began.elapsed());
                return Ok(Ok(v));
            }
            Ok(Fetched::Recompute(over)) => over,
        };
        self.observer.lease_wait(began.elapsed());
        Ok(self
            .load_and_store(io, key, wire, options, loader, over)
            .await)
    }

    /// The unique to store over when `current`, the item a lease winner's `cas` found in place
    /// of the one it `claimed`, is only the same value claimed again by another reader once
    /// this winner's claim ran out (its loader took longer than `herd_timeout`): that claim
    /// is no newer than what this winner loaded, so the loaded value lands over it (and the
    /// other reader's, when it comes, finds a value it did not claim and is not stored).
    /// Otherwise `None`: a write, an invalidation or a delete is newer than the load.
    ///
    /// Told apart by the item: the same value bytes and type flags as claimed, and a soft
    /// expiry still ahead and at least `herd_timeout` past the claimed one's, which only a
    /// claim made after that ran out gives (an invalidation leaves it passed; an
    /// invalidation claimed again before this winner's claim ran out leaves it earlier).
    fn claimed_again(&self, claimed: &Item, current: &Item) -> Option<u64> {
        let soft = |item: &Item, at: u64| read_flags(item.flags, at).map(|e| e.soft_expiry_millis);
        let at = self.now_millis();
        let (was, is) = (soft(claimed, at)?, soft(current, at)?);
        let herd_timeout = u64::from(self.herd.herd_timeout) * 1000;
        let same = current.value == claimed.value
            && value_flags(current.flags) == value_flags(claimed.flags);
        (same && is > at && is >= was.saturating_add(herd_timeout))
            .then_some(current.cas)
            .flatten()
    }

    /// Leaves `bytes` (stored with `flags`) in this process's flight of `wire`, if one is
    /// under way, for its followers ([`Flight::unstored`]).
    fn leave_unstored(&self, wire: &[u8], bytes: &[u8], flags: u32) {
        let flight = self.flights.lock().ok().and_then(|f| f.get(wire).cloned());
        if let Some(flight) = flight {
            if let Ok(mut unstored) = flight.unstored.lock() {
                *unstored = Some(Item {
                    value: bytes.to_vec(),
                    flags,
                    cas: None,
                });
            }
        }
    }

    /// Leaves what the leader of `wire`'s flight stored over a bare re-store in its flight
    /// ([`Flight::stored`]).
    fn leave_stored(&self, wire: &[u8], bytes: &[u8], flags: u32, exptime: u32) {
        let flight = self.flights.lock().ok().and_then(|f| f.get(wire).cloned());
        if let Some(flight) = flight {
            if let Ok(mut stored) = flight.stored.lock() {
                let item = Item {
                    value: bytes.to_vec(),
                    flags,
                    cas: None,
                };
                *stored = Some((item, exptime));
            }
        }
    }

    /// A follower that re-stored the old value bare, once its flight's leader is done: its
    /// re-store may have landed after the leader's `set` of the new value (both plain
    /// sets), which was then lost, the old value served for the re-store's life
    /// (`herd_timeout`) with nothing to refresh it (seen once: "old" read after 16 threads'
    /// loads on a memcached without CAS, beside busy loops). When the leader stored and
    /// the key holds what this follower's re-store wrote (`restore`), the leader's value is
    /// put back, with `cas` where the server gives uniques; anything else there (the
    /// leader's value, an invalidation, another writer's value, nothing) stays. (Putting it
    /// back over anything not fresh undid invalidations and other writers' bare values
    /// that landed after the refresh: a review.) Nothing is loaded again (loading here made
    /// each follower load after a failed or cancelled refresh: a review). Best effort: a
    /// failure leaves the key as the race left it.
    async fn put_back<I: Io>(&self, io: &I, wire: &[u8], flight: &Flight, restore: Restore) {
        let Some((item, exptime)) = flight.stored() else {
            return;
        };
        match io.get(wire).await {
            Ok(Some(now)) if restore.wrote(&now) => {
                let mode = now.cas.map_or(StoreMode::Set, StoreMode::Cas);
                let request = Store::set(wire, &item.value, item.flags, exptime).with_mode(mode);
                if let Err(e) = io.store(&request).await {
                    self.observer.failed_key("get_or_set", &e);
                }
            }
            Ok(_) => {}
            Err(e) => self.observer.failed_key("get_or_set", &e),
        }
    }

    /// Runs the loader and stores its value under `wire` (`key`'s wire key) over what the key
    /// held before the load began (`over`), so that nothing written, invalidated or deleted
    /// while it ran is replaced by a value computed before that. When the key changed
    /// meanwhile, the value goes to the caller only.
    async fn load_and_store<I, T, E, F, Fut>(
        &self,
        io: &I,
        key: &str,
        wire: &[u8],
        options: SetOptions,
        loader: F,
        over: Over,
    ) -> Result<T, Through<E>>
    where
        I: Io,
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Not stored (EXISTS, NOT_FOUND, NOT_STORED) when the key changed while the loader
        // ran: what it holds then is newer than the loaded value.
        let (mut mode, claimed) = match over {
            Over::Item(cas) | Over::Won(cas) => (StoreMode::Cas(cas), None),
            Over::Nothing => (StoreMode::Add, None),
            Over::Any | Over::Restored(_) => (StoreMode::Set, None),
            // The claim changed the item's unique: read it now, before the load begins.
            Over::Claimed => match io.get(wire).await.map_err(Error::from)? {
                Some(item) => (item.cas.map_or(StoreMode::Set, StoreMode::Cas), Some(item)),
                // Deleted since the claim: store only if nothing is there once loaded.
                None => (StoreMode::Add, None),
            },
        };
        let mut run = LoaderRun {
            observer: &self.observer,
            started: Instant::now(),
            done: false,
        };
        let loaded = crate::reentry::run_marked(&self.flights, wire, loader).await;
        run.done = true;
        let took = run.started.elapsed();
        self.observer.loader(took, loaded.is_err());
        let value = loaded.map_err(Through::Loader)?;
        let compute = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
        let encoded = self
            .encode_computed(io, key, &value, options, compute)
            .await?;
        let stored = async {
            let Some((bytes, flags, exptime)) = &encoded else {
                // A zero TTL: the value expires at once. Over nothing, nothing is stored,
                // and a value another caller stored meanwhile stays (it was deleted: an
                // outside audit); over the item read, the key is emptied.
                if mode == StoreMode::Add {
                    return Ok(());
                }
                return io.delete(wire).await.map(|_| ());
            };
            // A few tries: each is past one more claim of the old value.
            for _ in 0..3 {
                let request = Store::set(wire, bytes, *flags, *exptime).with_mode(mode);
                let status = match io.store(&request).await {
                    // Too large over the item read: the key is emptied, as memcached empties
                    // it on a `set` too large and as `Cache::set` does (the `cas` left it,
                    // claimed: readers were served the old value as fresh for
                    // `2 x herd_timeout`, an outside audit), but only if it still holds that
                    // item (an item that has already expired, stored with the same `cas`):
                    // a value written meanwhile is newer, and stays. Over nothing, nothing
                    // is there.
                    Err(too_large @ newcache_transport::Error::ValueTooLarge { .. }) => {
                        if matches!(mode, StoreMode::Cas(_)) {
                            if let Err(e) = io.store(&already_expired(wire, mode)).await {
                                self.observer.failed_key("get_or_set", &e);
                            }
                        }
                        return Err(too_large);
                    }
                    status => status?,
                };
                if matches!(over, Over::Restored(_)) && status == StoreStatus::Stored {
                    self.leave_stored(wire, bytes, *flags, *exptime);
                }
                let Some(claimed) = claimed.as_ref().filter(|_| status == StoreStatus::Exists)
                else {
                    break;
                };
                match io.get(wire).await? {
                    Some(current) => match self.claimed_again(claimed, &current) {
                        Some(cas) => mode = StoreMode::Cas(cas),
                        None => break,
                    },
                    None => break,
                }
            }
            Ok::<(), newcache_transport::Error>(())
        };
        match stored.await {
            // The value is loaded: a server that failed to take it (down, hung, a cut
            // connection) or refused it with an error of its own (`SERVER_ERROR out of
            // memory storing object`: its callers each got that error, and each waiter
            // loaded again, an outside audit) costs the cache the value, not the caller,
            // nor this process's callers waiting for it (served it from the flight).
            // Counted in the errors, so the outage shows. (It may even have been stored: a
            // hung server applies the store once it is back.)
            Err(e)
                if e.is_server_failure()
                    || matches!(e, newcache_transport::Error::Server { .. }) =>
            {
                self.observer.failed_key("get_or_set", &e);
                if let Some((bytes, flags, _)) = &encoded {
                    self.leave_unstored(wire, bytes, *flags);
                }
                Ok(value)
            }
            stored => stored.map(|()| value).map_err(|e| Error::from(e).into()),
        }
    }
}
