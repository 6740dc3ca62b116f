//! The cache a soak drives: the blocking [`Cache`], or the [`AsyncCache`] with each worker
//! thread awaiting its calls on one multi-thread runtime (`Handle::block_on`), so the 16
//! workers' requests share its auto-pipelined connections as concurrent tasks' do. The
//! methods are the caches' own, with their signatures, so a worker's step reads the same
//! for both.

use newcache::{AsyncCache, Cache, GetMany, Result, SetOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::runtime::Handle;

/// A soaked cache ([module documentation](self)).
#[derive(Clone)]
pub enum Soaked {
    /// The blocking cache.
    Blocking(Cache),
    /// The async cache, and the runtime its calls are awaited on.
    Async(AsyncCache, Handle),
}

impl Soaked {
    pub fn get<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<T>> {
        match self {
            Soaked::Blocking(c) => c.get(key),
            Soaked::Async(c, h) => h.block_on(c.get(key)),
        }
    }

    pub fn get_many<K, T>(&self, keys: &[K]) -> Result<GetMany<T>>
    where
        K: AsRef<str> + Sync,
        T: DeserializeOwned + Send + 'static,
    {
        match self {
            Soaked::Blocking(c) => c.get_many(keys),
            Soaked::Async(c, h) => h.block_on(c.get_many(keys)),
        }
    }

    pub fn set<T: Serialize + ?Sized + Sync>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        match self {
            Soaked::Blocking(c) => c.set(key, value, options),
            Soaked::Async(c, h) => h.block_on(c.set(key, value, options)),
        }
    }

    pub fn add<T: Serialize + ?Sized + Sync>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<bool> {
        match self {
            Soaked::Blocking(c) => c.add(key, value, options),
            Soaked::Async(c, h) => h.block_on(c.add(key, value, options)),
        }
    }

    pub fn set_many<K, T, I>(&self, items: I, options: impl Into<SetOptions>) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = (K, T)> + Send,
        K: AsRef<str>,
        T: Serialize,
    {
        match self {
            Soaked::Blocking(c) => c.set_many(items, options),
            Soaked::Async(c, h) => h.block_on(c.set_many(items, options)),
        }
    }

    pub fn delete(&self, key: &str) -> Result<bool> {
        match self {
            Soaked::Blocking(c) => c.delete(key),
            Soaked::Async(c, h) => h.block_on(c.delete(key)),
        }
    }

    pub fn incr(&self, key: &str, delta: u64) -> Result<u64> {
        match self {
            Soaked::Blocking(c) => c.incr(key, delta),
            Soaked::Async(c, h) => h.block_on(c.incr(key, delta)),
        }
    }

    pub fn touch(&self, key: &str, options: impl Into<SetOptions>) -> Result<bool> {
        match self {
            Soaked::Blocking(c) => c.touch(key, options),
            Soaked::Async(c, h) => h.block_on(c.touch(key, options)),
        }
    }

    /// `get_or_set` with a plain loader (the async cache's runs it in its future).
    pub fn get_or_set<T, F>(
        &self,
        key: &str,
        options: impl Into<SetOptions>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        match self {
            Soaked::Blocking(c) => c.get_or_set(key, options, loader),
            Soaked::Async(c, h) => {
                h.block_on(c.get_or_set(key, options, || async move { loader() }))
            }
        }
    }
}
