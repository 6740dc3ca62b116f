//! [`AsyncCache`]: the cache for async services (feature `tokio`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use newcache_transport::{AsyncTransport, ServerStats, StoreMode, StoreStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::io::Async;
use crate::ops::Core;
use crate::{
    Builder, CasToken, Config, Error, GetMany, Peeked, RawValue, Result, SetOptions, StalePolicy,
};

/// A memcached cache for async code on tokio: every operation of [`Cache`](crate::Cache),
/// as a future. `Clone + Send + Sync`; clones share connections.
///
/// It is the same cache as [`Cache`](crate::Cache): built from the same URL or builder, with
/// the same key function, herd policies, codecs and wire format, and the same code decides
/// what to send (only the transport differs), so values and their herd state written by one
/// are read by the other. Its text transport keeps `async_connections` connections per
/// server (default 1) shared by every task: on memcached 1.6+ (the meta protocol) requests
/// from concurrent tasks are written together and their replies matched to them in order,
/// each checked against the request it answers; in the classic protocol (older servers,
/// proxies) and over TLS each connection carries one request at a time, up to
/// `max_connections`. Nothing blocks a runtime thread, and a future dropped before it completes
/// (a `tokio::time::timeout`, a client that hung up) leaves its connection in sync.
///
/// Use it inside a tokio runtime with its I/O and time drivers on (`enable_all`). Each
/// connection's task runs on the runtime of the first request that opened it: a cache
/// shared between runtimes works while that runtime is driven (a multi-thread runtime
/// always is); one opened by a current-thread runtime whose `block_on` has returned waits
/// for that runtime, and requests from elsewhere time out until it runs again or is
/// dropped (a blocking call inside that `block_on` does the same). Those timeouts count as
/// the server's failures, as any timeout does: a healthy server is left alone for
/// `retry_timeout` (its keys fail fast), though not ejected. One cache per runtime, or one
/// multi-thread runtime, avoids that.
///
/// What it does not take that `Cache` does: `transport=libmemcached` (whose calls block a
/// thread), refused when it is built, with a configuration error. TLS (`tls=true`, feature
/// `tls`) it speaks as `Cache` does, certificates verified the same way.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use newcache::{AsyncCache, Ttl};
///
/// // url = "newcache://127.0.0.1:11211/" in a service
/// let cache = AsyncCache::from_url("newcache:///?transport=memory")?;
/// cache.set("greeting", "hello", Ttl::Seconds(60)).await?;
/// let greeting: Option<String> = cache.get("greeting").await?;
/// assert_eq!(greeting.as_deref(), Some("hello"));
///
/// // One loader run per expiry, across tasks and processes.
/// let n: u64 = cache
///     .get_or_set("answer", Ttl::Seconds(60), || async { 42 })
///     .await?;
/// assert_eq!(n, 42);
/// # Ok::<(), newcache::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct AsyncCache {
    core: Arc<Core>,
    transport: Arc<dyn AsyncTransport>,
}

impl fmt::Debug for AsyncCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncCache")
            .field("config", &self.core.config)
            .field("transport", &self.transport)
            .finish()
    }
}

impl AsyncCache {
    /// A cache configured by a `newcache://` URL (see [`Config::from_url`]).
    pub fn from_url(url: &str) -> Result<AsyncCache> {
        Builder::from_url(url)?.build_async()
    }

    /// A builder for every setting; finish it with [`Builder::build_async`].
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_parts(core: Core, transport: Arc<dyn AsyncTransport>) -> AsyncCache {
        AsyncCache {
            core: Arc::new(core),
            transport,
        }
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The transport underneath (for tools and tests).
    pub fn transport(&self) -> &Arc<dyn AsyncTransport> {
        &self.transport
    }

    /// The wire key `key` becomes, validated. Needs no server.
    pub fn wire_key(&self, key: &str) -> Result<Vec<u8>> {
        self.core.wire_key(key)
    }

    /// The key [`get_or_set`](AsyncCache::get_or_set) adds while it loads `key` cold
    /// ([`Cache::lease_key`](crate::Cache::lease_key)). Needs no server.
    pub fn lease_key(&self, key: &str) -> Result<Vec<u8>> {
        self.core.lease_key(key)
    }

    fn io(&self) -> Async<'_> {
        Async(&self.transport)
    }

    /// Fetches and decodes a value; `None` on a miss (or for the first reader after its
    /// soft expiry, who should recompute it). [`Cache::get`](crate::Cache::get).
    pub async fn get<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<T>> {
        let wire = self.core.short_wire_key(key)?;
        self.core.get(&self.io(), key, &wire).await
    }

    /// Fetches a value's bytes and flags without decoding (herd rules apply as for `get`).
    pub async fn get_raw(&self, key: &str) -> Result<Option<RawValue>> {
        let wire = self.core.short_wire_key(key)?;
        self.core.get_raw(&self.io(), &wire).await
    }

    /// Fetches many values in one round trip per server
    /// ([`Cache::get_many`](crate::Cache::get_many)).
    pub async fn get_many<K, T>(&self, keys: &[K]) -> Result<GetMany<T>>
    where
        K: AsRef<str> + Sync,
        T: DeserializeOwned + 'static,
    {
        self.core.get_many(&self.io(), keys).await
    }

    /// Fetches many values as one entry per key, in order
    /// ([`Cache::get_many_ordered`](crate::Cache::get_many_ordered)).
    pub async fn get_many_ordered<K, T>(&self, keys: &[K]) -> Result<Vec<Option<T>>>
    where
        K: AsRef<str> + Sync,
        T: DeserializeOwned + 'static,
    {
        self.core.get_many_ordered(&self.io(), keys).await
    }

    /// True when `key` holds a value a `get` would return now; no side effects.
    pub async fn has_key(&self, key: &str) -> Result<bool> {
        self.core.has_key(&self.io(), key).await
    }

    /// What `key` holds, herd state read, with no side effects at all
    /// ([`Cache::peek`](crate::Cache::peek)).
    pub async fn peek(&self, key: &str) -> Result<Option<Peeked>> {
        self.core.peek(&self.io(), key).await
    }

    async fn store<T: Serialize + ?Sized + Sync>(
        &self,
        mode: StoreMode,
        key: &str,
        value: &T,
        options: SetOptions,
    ) -> Result<StoreStatus> {
        let wire = self.core.short_wire_key(key)?;
        self.core
            .store(&self.io(), mode, key, &wire, value, options)
            .await
    }

    /// Stores a value ([`Cache::set`](crate::Cache::set)).
    pub async fn set<T: Serialize + ?Sized + Sync>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        self.store(StoreMode::Set, key, value, options.into())
            .await
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
    pub async fn add<T: Serialize + ?Sized + Sync>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<bool> {
        Ok(self
            .store(StoreMode::Add, key, value, options.into())
            .await?
            .is_stored())
    }

    /// Stores a value only if `key` holds one; `true` when stored. With a zero TTL the
    /// value expires at once: the key's value is deleted, `true` when it held one.
    pub async fn replace<T: Serialize + ?Sized + Sync>(
        &self,
        key: &str,
        value: &T,
        options: impl Into<SetOptions>,
    ) -> Result<bool> {
        Ok(self
            .store(StoreMode::Replace, key, value, options.into())
            .await?
            .is_stored())
    }

    /// Stores a value's raw bytes with these flags (herd rules apply as for `set`).
    ///
    /// With the herd on, flags in the bits it keeps its state in (8 and 11-31) are refused
    /// ([`Error::Encode`]); store them with `SetOptions::no_herd()`. Flags with bit 8 and
    /// one of bits 11-12 are refused either way: every reader takes them for herd state.
    pub async fn set_raw(
        &self,
        key: &str,
        bytes: &[u8],
        flags: u32,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        self.core
            .set_raw(&self.io(), key, bytes, flags, options.into())
            .await
    }

    /// Stores many values, one round trip per server; returns the keys that were not stored
    /// ([`Cache::set_many`](crate::Cache::set_many)).
    pub async fn set_many<K, T, I>(
        &self,
        items: I,
        options: impl Into<SetOptions>,
    ) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = (K, T)> + Send,
        K: AsRef<str>,
        T: Serialize,
    {
        self.core.set_many(&self.io(), items, options.into()).await
    }

    /// Deletes a value; `true` when there was one.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.core.delete(&self.io(), key).await
    }

    /// Deletes many values, one round trip per server; returns how many existed.
    ///
    /// Every server gets its keys, whatever happens to the others. When some servers failed
    /// (or are down) while others answered, the error is [`Error::PartlyDeleted`](crate::Error::PartlyDeleted): the keys
    /// of the failed servers, each with its failure; every other key was deleted. When every
    /// server failed, the first one's error.
    pub async fn delete_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<usize> {
        self.core.delete_many(&self.io(), keys).await
    }

    /// Adds `delta` to a counter and returns the new value ([`Cache::incr`](crate::Cache::incr)).
    pub async fn incr(&self, key: &str, delta: u64) -> Result<u64> {
        self.core.counter(&self.io(), key, delta, true).await
    }

    /// Subtracts `delta` from a counter (stopping at 0) and returns the new value.
    pub async fn decr(&self, key: &str, delta: u64) -> Result<u64> {
        self.core.counter(&self.io(), key, delta, false).await
    }

    /// Gives a value a new TTL; `false` when the key holds none
    /// ([`Cache::touch`](crate::Cache::touch)).
    pub async fn touch(&self, key: &str, options: impl Into<SetOptions>) -> Result<bool> {
        self.core.touch(&self.io(), key, options.into()).await
    }

    /// Marks a value stale instead of deleting it
    /// ([`Cache::invalidate`](crate::Cache::invalidate)).
    pub async fn invalidate(&self, key: &str) -> Result<bool> {
        self.core.invalidate(&self.io(), key).await
    }

    /// Invalidates every value on every server (`flush_all`). An error when any server
    /// failed: the others are flushed all the same.
    pub async fn clear(&self) -> Result<()> {
        self.core.clear(&self.io()).await
    }

    /// Every server's statistics, in the configured order. A server that could not be asked
    /// (down, hung past the read timeout) is listed with its
    /// [`failure`](newcache_transport::ServerStats::failure) and no statistics, and counts in
    /// `newcache_errors_total`; the call fails only when every server failed.
    pub async fn stats(&self) -> Result<Vec<ServerStats>> {
        self.core.stats(&self.io()).await
    }

    /// Returns the cached value, or awaits `loader`, stores its result and returns it
    /// ([`AsyncCache::get_or_try_set`]).
    pub async fn get_or_set<T, F, Fut>(
        &self,
        key: &str,
        options: impl Into<SetOptions>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.get_or_try_set(key, options, || async { Ok::<T, Error>(loader().await) })
            .await
    }

    /// Returns the cached value, or awaits `loader` and stores its result, with exactly one
    /// loader run where the cache can arrange it, as
    /// [`Cache::get_or_try_set`](crate::Cache::get_or_try_set): the stale value's one winner
    /// loads while the others are served the old value; a cold key has one loader per
    /// process (the other tasks await its outcome, holding no thread) and one across
    /// processes (the lease key). A task dropped while it loads a cold key releases the
    /// flight and the lease key, so another caller loads next (the lease key's delete runs
    /// on a task of the runtime: when that runtime does not run again, as a `block_on`
    /// whose runtime is then dropped, the key stays until it expires, and the next cold
    /// caller in any process waits up to `lease_wait` for it); a task dropped while it
    /// refreshes a stale value leaves its claim in place, so the others are served the old
    /// value until `herd_timeout` has passed (as when a process dies mid-refresh), and the
    /// next caller then refreshes it. A loader that awaits `get_or_set` of its own key where it
    /// would wait for its own load gets [`Error::Reentrant`] from it; one that spawns that call as a task of its own and
    /// awaits the task is not told: the two wait for each other for ever.
    pub async fn get_or_try_set<T, E, F, Fut>(
        &self,
        key: &str,
        options: impl Into<SetOptions>,
        loader: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.core
            .get_or_try_set(&self.io(), key, options.into(), loader)
            .await
    }

    /// Fetches a value with its CAS token ([`Cache::gets`](crate::Cache::gets)).
    pub async fn gets<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<(T, CasToken)>> {
        self.core.gets(&self.io(), key).await
    }

    /// Stores only if `key` still holds what `gets` read ([`Cache::cas`](crate::Cache::cas)).
    pub async fn cas<T: Serialize + ?Sized + Sync>(
        &self,
        key: &str,
        value: &T,
        token: CasToken,
        options: impl Into<SetOptions>,
    ) -> Result<()> {
        self.core
            .cas(&self.io(), key, value, token, options.into())
            .await
    }

    /// Adds bytes to the end of the value ([`Cache::append`](crate::Cache::append)).
    pub async fn append(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<bool> {
        self.core
            .extend(&self.io(), key, bytes.as_ref(), false)
            .await
    }

    /// Adds bytes to the front of the value ([`Cache::prepend`](crate::Cache::prepend)).
    pub async fn prepend(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<bool> {
        self.core
            .extend(&self.io(), key, bytes.as_ref(), true)
            .await
    }

    /// Fetches a value and gives it a new TTL
    /// ([`Cache::get_and_touch`](crate::Cache::get_and_touch)).
    pub async fn get_and_touch<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        options: impl Into<SetOptions>,
    ) -> Result<Option<T>> {
        self.core
            .get_and_touch(&self.io(), key, options.into())
            .await
    }

    /// This cache at another key version ([`Cache::with_version`](crate::Cache::with_version)).
    pub fn with_version(&self, version: impl fmt::Display) -> Result<AsyncCache> {
        Ok(AsyncCache {
            core: Arc::new(self.core.at_version(&version.to_string())?),
            transport: Arc::clone(&self.transport),
        })
    }

    /// Moves `key`'s value to the version plus `delta`; returns the new version
    /// ([`Cache::incr_version`](crate::Cache::incr_version)).
    pub async fn incr_version(&self, key: &str, delta: i64) -> Result<i64> {
        self.core
            .move_version(&self.io(), "incr_version", key, delta.into())
            .await
    }

    /// [`AsyncCache::incr_version`] by `-delta`.
    pub async fn decr_version(&self, key: &str, delta: i64) -> Result<i64> {
        self.core
            .move_version(&self.io(), "decr_version", key, -i128::from(delta))
            .await
    }

    /// Closes the connections the transport holds (Django's `close`); the next call opens
    /// new ones.
    pub fn close(&self) {
        self.transport.close();
    }

    /// The stale policy in effect ([`Cache::stale_policy`](crate::Cache::stale_policy)).
    pub fn stale_policy(&self) -> &dyn StalePolicy {
        self.core.stale_policy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "memory")]
    fn assert_send<T: Send>(_: &T) {}

    #[cfg(feature = "memory")]
    #[test]
    fn futures_are_send_and_the_cache_is_shared() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<AsyncCache>();
        let cache = AsyncCache::from_url("newcache:///?transport=memory").unwrap();
        // Every operation's future can go to tokio::spawn.
        assert_send(&cache.get::<String>("k"));
        assert_send(&cache.get_many::<_, String>(&["a", "b"]));
        assert_send(&cache.get_many_ordered::<_, String>(&["a", "b"]));
        assert_send(&cache.set("k", "v", 60));
        assert_send(&cache.set_many(vec![("a", 1)], 60));
        assert_send(&cache.get_or_set("k", 60, || async { 1u32 }));
        assert_send(&cache.invalidate("k"));
        assert_send(&cache.touch("k", 60));
    }

    /// A read's future is moved whole wherever it goes (into a task, a `block_on`, the
    /// caller's own future): the rare paths (a stale value's store, the meta probe) are
    /// boxed apart and no layer holds its operation twice, so a get's stays small (944
    /// bytes when this was written, 2424 before; with `metrics` and `tracing` 1024, 2992
    /// before).
    #[cfg(feature = "memory")]
    #[test]
    fn a_reads_future_stays_small() {
        let cache = AsyncCache::from_url("newcache:///?transport=memory").unwrap();
        // A one-key read holds its wire key inline up to 62 bytes (`ShortKey`): a key held
        // inline at memcached's 250 made `get`'s future 944 bytes, 1024 with `metrics` and
        // `tracing`.
        for (what, size, limit) in [
            ("get", std::mem::size_of_val(&cache.get::<String>("k")), 960),
            (
                "get_many",
                std::mem::size_of_val(&cache.get_many::<_, String>(&["a"])),
                // 1280, and 24 more for the wins a failing `get_many_ordered` gives back.
                1304,
            ),
            ("get_raw", std::mem::size_of_val(&cache.get_raw("k")), 960),
        ] {
            assert!(
                size <= limit,
                "{what}'s future is {size} bytes (limit {limit})"
            );
        }
    }

    /// The in-memory backend gives the runtime a turn now and then: a task calling it in a
    /// loop let no other task run, and a timeout around the loop never fired (an outside
    /// audit: it hung on a current-thread runtime).
    #[cfg(feature = "memory")]
    #[test]
    fn a_loop_on_the_memory_backend_lets_the_runtime_run_other_tasks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let cache = AsyncCache::from_url("newcache:///?transport=memory").unwrap();
            let setter = cache.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                setter
                    .set("flag", "1", crate::Ttl::Seconds(60))
                    .await
                    .unwrap();
            });
            let waited = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while cache.get::<String>("flag").await.unwrap().is_none() {}
            })
            .await;
            assert!(waited.is_ok(), "the other task ran");
            let endless = tokio::time::timeout(std::time::Duration::from_millis(50), async {
                loop {
                    let _ = cache.get::<String>("missing").await;
                }
            })
            .await;
            assert!(endless.is_err(), "the timeout fired");
        });
    }

    #[test]
    fn libmemcached_is_refused_with_a_reason() {
        let e = AsyncCache::from_url("newcache://127.0.0.1:11211/?binary=true").unwrap_err();
        assert!(e.to_string().contains("libmemcached"), "{e}");
    }
}
