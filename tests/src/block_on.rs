//! [`BlockingAdapter`]: any [`AsyncTransport`] as a blocking [`Transport`], so the
//! conformance suite (written against `&dyn Transport`) runs unchanged against async
//! backends.
//!
//! ```ignore
//! let t = BlockingAdapter::new(TokioTextTransport::new(config)?);
//! newcache_tests::conformance::set_then_get_returns_the_exact_bytes(&fixture_over(t));
//! ```

use newcache_transport::{
    AsyncTransport, Item, ManyStore, MetaItem, Result, ServerStats, Store, StoreStatus, Transport,
};
use tokio::runtime::Runtime;

/// An async transport and a tokio runtime of its own; each [`Transport`] call is a
/// `block_on` of the same [`AsyncTransport`] call. Calls from many threads at once run
/// concurrently on the runtime (a multi-threaded one, two workers), so requests of
/// different threads share the async transport's connections as tasks would.
#[derive(Debug)]
pub struct BlockingAdapter<T> {
    transport: T,
    runtime: Runtime,
}

impl<T: AsyncTransport> BlockingAdapter<T> {
    /// Wraps `transport` with a new multi-threaded runtime (two workers, I/O and timers).
    /// Panics when the runtime cannot be built.
    pub fn new(transport: T) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"));
        BlockingAdapter { transport, runtime }
    }

    /// The async transport under the adapter.
    pub fn inner(&self) -> &T {
        &self.transport
    }

    /// The adapter's runtime (to run async code against the same connections).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

impl<T: AsyncTransport> Transport for BlockingAdapter<T> {
    fn name(&self) -> &'static str {
        self.transport.name()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Item>> {
        self.runtime.block_on(self.transport.get(key))
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        self.runtime.block_on(self.transport.get_many(keys))
    }

    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        self.runtime.block_on(self.transport.store(request))
    }

    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        self.runtime.block_on(self.transport.store_many(requests))
    }

    fn store_many_each(&self, requests: &[Store<'_>]) -> Result<ManyStore> {
        self.runtime
            .block_on(self.transport.store_many_each(requests))
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.runtime.block_on(self.transport.delete(key))
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        self.runtime.block_on(self.transport.delete_many(keys))
    }

    fn delete_many_quiet(&self, keys: &[&[u8]]) -> Result<()> {
        self.runtime
            .block_on(self.transport.delete_many_quiet(keys))
    }

    fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.runtime.block_on(self.transport.incr(key, delta))
    }

    fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.runtime.block_on(self.transport.decr(key, delta))
    }

    fn touch(&self, key: &[u8], exptime: u32) -> Result<bool> {
        self.runtime.block_on(self.transport.touch(key, exptime))
    }

    fn flush_all(&self) -> Result<()> {
        self.runtime.block_on(self.transport.flush_all())
    }

    fn stats(&self) -> Result<Vec<ServerStats>> {
        self.runtime.block_on(self.transport.stats())
    }

    fn supports_meta(&self) -> bool {
        self.transport.supports_meta()
    }

    fn close(&self) {
        self.transport.close()
    }

    fn meta_get(&self, key: &[u8], recache_below: u32) -> Result<Option<MetaItem>> {
        self.runtime
            .block_on(self.transport.meta_get(key, recache_below))
    }

    fn meta_get_many(&self, keys: &[&[u8]], recache_below: u32) -> Result<Vec<Option<MetaItem>>> {
        self.runtime
            .block_on(self.transport.meta_get_many(keys, recache_below))
    }

    fn meta_invalidate(&self, key: &[u8], grace: u32, cas: Option<u64>) -> Result<bool> {
        self.runtime
            .block_on(self.transport.meta_invalidate(key, grace, cas))
    }
}
