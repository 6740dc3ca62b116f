//! `get_or_set`: the herd-safe read-through. A stale value goes to the policy's one winner;
//! a cold key to one loader per process (single flight) and one across processes (a lease
//! key stored with `add`), each wait bounded by `lease_wait`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use newcache_transport::{Store, StoreMode, Transport};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Fetched;
use crate::{Cache, Error, Result, SetOptions};

/// One loader run that other callers in this process wait for.
#[derive(Default)]
pub(crate) struct Flight {
    done: Mutex<bool>,
    finished: Condvar,
}

impl Flight {
    /// Waits until the leader finishes (with a value, an error or a panic).
    pub(crate) fn wait(&self) {
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        while !*done {
            match self.finished.wait(done) {
                Ok(guard) => done = guard,
                Err(_) => return,
            }
        }
    }
}

/// Deletes `get_or_set`'s lease key when the loader that holds it is done, however it leaves
/// (value, error or panic), so other processes need not wait out its TTL.
pub(crate) struct LeaseGuard<'a> {
    transport: &'a dyn Transport,
    key: Vec<u8>,
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        // A failed delete leaves the key to expire on its own (after lease_wait).
        let _ = self.transport.delete(&self.key);
    }
}

/// Ends a flight when the leader is done, however it leaves (value, error or panic).
pub(crate) struct FlightGuard<'a> {
    cache: &'a Cache,
    wire: Vec<u8>,
    flight: Arc<Flight>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.cache.inner.flights.lock() {
            flights.remove(&self.wire);
        }
        if let Ok(mut done) = self.flight.done.lock() {
            *done = true;
        }
        self.flight.finished.notify_all();
    }
}

impl Cache {
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
    ///   flight): the others wait for its outcome; across processes, the caller that stores
    ///   the lease key `{key}:newcache-lease` with `add` (its TTL is `lease_wait`, rounded up
    ///   to whole seconds) loads, and the others poll for its value every 20 ms, contending
    ///   for the lease key again as they poll. A loader that dies (a killed process) leaves
    ///   the key to expire, and then exactly one waiter, in whatever process, takes the lease
    ///   over and loads; a loader slower than `lease_wait` gets a second one beside it. So a
    ///   slow or crashed loader costs a bounded wait, never a hang and never a stampede.
    ///
    /// A loader error reaches its caller and stores nothing; on the stale path the old value
    /// stays (the claim keeps the others on it for `herd_timeout`, then the next caller
    /// retries), on the cold path the lease key is deleted and, if other callers in this
    /// process were waiting, one of them runs its own loader next (one at a time, not all at
    /// once). A panicking loader releases the lease key and the flight too. `E` is the
    /// loader's error type, which must take the cache's errors too.
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
        let options = options.into();
        let wire = self.wire_key(key)?;
        loop {
            match self.fetch::<T>(key, &wire)? {
                Fetched::Hit(v) => return Ok(v),
                Fetched::Recompute => return self.load_and_store(key, options, loader),
                Fetched::Cold => {}
            }
            // Cold: one loader per process.
            let (flight, leader) = {
                let mut flights = self
                    .inner
                    .flights
                    .lock()
                    .map_err(|_| Error::Config("get_or_set flight table poisoned".into()))?;
                match flights.get(&wire) {
                    Some(f) => (f.clone(), false),
                    None => {
                        let f = Arc::new(Flight::default());
                        flights.insert(wire.clone(), f.clone());
                        (f, true)
                    }
                }
            };
            if !leader {
                // The leader's outcome, not this caller's clock: its value is then there to
                // read, or (after its error or panic) the key is still cold and one of the
                // waiters leads next. The leader's own wait is bounded (below).
                flight.wait();
                continue;
            }
            let _guard = FlightGuard {
                cache: self,
                wire: wire.clone(),
                flight,
            };
            // One loader across processes: whoever adds the lease key loads.
            let lease_key = self.wire_key(&format!("{key}:newcache-lease"))?;
            // Whole seconds, rounded up: the key outlives the others' wait for it.
            let lease_secs = u32::try_from(self.inner.config.lease_wait.as_millis().div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1);
            let lease = Store {
                mode: StoreMode::Add,
                key: &lease_key,
                value: b"1",
                flags: 0,
                exptime: lease_secs,
            };
            loop {
                if self
                    .inner
                    .transport
                    .store(&lease)
                    .map_err(Error::from)?
                    .is_stored()
                {
                    // Dropped (the key deleted) when the loader is done, even by a panic;
                    // before the flight guard, so waiters that wake find the lease free.
                    let _lease = LeaseGuard {
                        transport: self.inner.transport.as_ref(),
                        key: lease_key.clone(),
                    };
                    // A loader that finished between this caller's last read and its `add`
                    // stored its value before freeing the lease: read once more.
                    return match self.fetch::<T>(key, &wire)? {
                        Fetched::Hit(v) => Ok(v),
                        Fetched::Recompute | Fetched::Cold => {
                            self.load_and_store(key, options, loader)
                        }
                    };
                }
                // Another process holds the lease: wait for its value, and contend again,
                // since a holder that died frees the lease only when its key expires.
                std::thread::sleep(Duration::from_millis(20));
                match self.fetch::<T>(key, &wire)? {
                    Fetched::Hit(v) => return Ok(v),
                    Fetched::Recompute => return self.load_and_store(key, options, loader),
                    Fetched::Cold => {}
                }
            }
        }
    }

    pub(crate) fn load_and_store<T, E, F>(
        &self,
        key: &str,
        options: SetOptions,
        loader: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        let started = Instant::now();
        let value = loader()?;
        let compute = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let wire = self.wire_key(key)?;
        match self.encode_computed(key, &value, options, self.now_millis(), compute)? {
            Some((bytes, flags, exptime)) => {
                self.inner
                    .transport
                    .store(&Store::set(&wire, &bytes, flags, exptime))
                    .map_err(Error::from)?;
            }
            None => {
                self.inner.transport.delete(&wire).map_err(Error::from)?;
            }
        }
        Ok(value)
    }
}
