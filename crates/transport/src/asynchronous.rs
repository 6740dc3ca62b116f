//! [`AsyncTransport`]: the [`Transport`](crate::Transport) contract as futures, for the
//! async cache and async backends (the text protocol over tokio).
//!
//! The methods return boxed futures ([`BoxFuture`]) so that the trait stays usable as
//! `dyn AsyncTransport`, which the async cache holds as `Arc<dyn AsyncTransport>` like the
//! blocking cache holds `Arc<dyn Transport>`; no runtime is named here.
//!
//! The contract is [`Transport`](crate::Transport)'s, method for method (same keys, same
//! results, same errors), plus one rule of its own: **a future dropped before it completes
//! leaves the backend in sync.** A request already written has its reply read and thrown
//! away by the backend; the connection is never handed to another request with that reply
//! still unread.

use std::future::Future;
use std::pin::Pin;

use crate::{
    check_key, Error, Item, ManyDelete, ManyRead, ManyStore, MetaItem, Result, ServerStats, Store,
    StoreBatch, StoreStatus,
};

/// A boxed, `Send` future: what every [`AsyncTransport`] method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A memcached backend driven by futures: [`Transport`](crate::Transport)'s operations with
/// the same meaning, for async callers.
///
/// The methods return boxed futures ([`BoxFuture`]) so that the trait stays usable as
/// `dyn AsyncTransport`; no runtime is named here. One rule beyond `Transport`'s: **a
/// future dropped before it completes leaves the backend in sync** (a request already
/// written has its reply read and thrown away; the connection is never handed to another
/// request with that reply unread).
pub trait AsyncTransport: Send + Sync + std::fmt::Debug {
    /// A short name of the backend, such as `tokio-text` or `memory`.
    fn name(&self) -> &'static str;

    /// Fetches one item, or `None` on a miss.
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Item>>>;

    /// Fetches many items; one entry per key, in the order of `keys`.
    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Item>>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.get(key).await?);
            }
            Ok(out)
        })
    }

    /// [`get_many`](AsyncTransport::get_many), with the keys of a server that failed while
    /// the others answered told apart
    /// ([`Transport::get_many_read`](crate::Transport::get_many_read)).
    fn get_many_read<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<ManyRead>> {
        Box::pin(async move { self.get_many(keys).await.map(ManyRead::all) })
    }

    /// Runs one store command ([`Transport::store`](crate::Transport::store)'s rules).
    fn store<'a>(&'a self, request: &'a Store<'a>) -> BoxFuture<'a, Result<StoreStatus>>;

    /// Runs many store commands; one status per request, in order
    /// ([`Transport::store_many`](crate::Transport::store_many)'s rules).
    fn store_many<'a>(
        &'a self,
        requests: &'a [Store<'a>],
    ) -> BoxFuture<'a, Result<Vec<StoreStatus>>> {
        Box::pin(async move {
            requests.iter().try_for_each(|r| check_key(r.key))?;
            let mut batch = StoreBatch::with_capacity(requests.len());
            for r in requests {
                batch.push(self.store(r).await)?;
            }
            batch.finish()
        })
    }

    /// [`store_many`](AsyncTransport::store_many), with the requests of a server that
    /// failed while the others answered told apart
    /// ([`Transport::store_many_each`](crate::Transport::store_many_each)).
    fn store_many_each<'a>(
        &'a self,
        requests: &'a [Store<'a>],
    ) -> BoxFuture<'a, Result<ManyStore>> {
        Box::pin(async move { self.store_many(requests).await.map(ManyStore::all) })
    }

    /// Deletes one item; `false` when there was none.
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>>;

    /// Deletes many items; one `bool` (was there an item) per key, in order.
    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.delete(key).await?);
            }
            Ok(out)
        })
    }

    /// [`delete_many`](AsyncTransport::delete_many), with the keys of a server that failed
    /// while the others answered told apart
    /// ([`Transport::delete_many_each`](crate::Transport::delete_many_each)).
    fn delete_many_each<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<ManyDelete>> {
        Box::pin(async move { self.delete_many(keys).await.map(ManyDelete::all) })
    }

    /// Deletes many items without learning which existed
    /// ([`Transport::delete_many_quiet`](crate::Transport::delete_many_quiet)'s rules).
    fn delete_many_quiet<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.delete_many(keys).await.map(|_| ()) })
    }

    /// Adds `delta` to a decimal value (wrapping at 2^64); `None` when the key holds no item.
    fn incr<'a>(&'a self, key: &'a [u8], delta: u64) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Subtracts `delta` from a decimal value (stopping at 0); `None` when the key holds no
    /// item.
    fn decr<'a>(&'a self, key: &'a [u8], delta: u64) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Sets a new exptime on an item; `false` when the key holds no item.
    fn touch<'a>(&'a self, key: &'a [u8], exptime: u32) -> BoxFuture<'a, Result<bool>>;

    /// Invalidates every item on every server (`flush_all`).
    fn flush_all(&self) -> BoxFuture<'_, Result<()>>;

    /// The statistics of every server, as [`Transport::stats`](crate::Transport::stats):
    /// a server that failed is listed with its failure.
    fn stats(&self) -> BoxFuture<'_, Result<Vec<ServerStats>>>;

    /// True when the backend speaks memcached 1.6's meta protocol.
    fn supports_meta(&self) -> bool {
        false
    }

    /// Closes the connections the backend holds; the next request opens new ones. The
    /// default does nothing (a backend without connections).
    fn close(&self) {}

    /// Meta get ([`Transport::meta_get`](crate::Transport::meta_get)).
    fn meta_get<'a>(
        &'a self,
        key: &'a [u8],
        recache_below: u32,
    ) -> BoxFuture<'a, Result<Option<MetaItem>>> {
        let _ = (key, recache_below);
        let name = self.name();
        Box::pin(async move {
            Err(Error::Unsupported {
                server: name.to_string(),
                command: "the meta protocol (mg)".into(),
            })
        })
    }

    /// Meta get of many keys, one entry per key in order.
    fn meta_get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
        recache_below: u32,
    ) -> BoxFuture<'a, Result<Vec<Option<MetaItem>>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.meta_get(key, recache_below).await?);
            }
            Ok(out)
        })
    }

    /// [`meta_get_many`](AsyncTransport::meta_get_many), with the keys of a server that
    /// failed while the others answered told apart.
    fn meta_get_many_read<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
        recache_below: u32,
    ) -> BoxFuture<'a, Result<ManyRead<MetaItem>>> {
        Box::pin(async move {
            self.meta_get_many(keys, recache_below)
                .await
                .map(ManyRead::all)
        })
    }

    /// `work` taken as the calling task's own: requests it makes, run on a task of their
    /// own (spawned from a destructor: a lease released after its caller's future was
    /// dropped), go where the caller's would, behind what the caller gave up on. Call it in
    /// the caller's task. Without it, such a request could overtake the caller's abandoned
    /// one on another connection: a lease's release that found no lease yet, before the
    /// lease's own `add` landed, left the lease behind (an outside audit). The default:
    /// `work` as it is (a backend that keeps no order between requests it has not read a
    /// reply to).
    fn as_caller(&self, work: BoxFuture<'static, ()>) -> BoxFuture<'static, ()> {
        work
    }

    /// Marks an item stale instead of deleting it
    /// ([`Transport::meta_invalidate`](crate::Transport::meta_invalidate)).
    fn meta_invalidate<'a>(
        &'a self,
        key: &'a [u8],
        grace: u32,
        cas: Option<u64>,
    ) -> BoxFuture<'a, Result<bool>> {
        let _ = (key, grace, cas);
        let name = self.name();
        Box::pin(async move {
            Err(Error::Unsupported {
                server: name.to_string(),
                command: "the meta protocol (md)".into(),
            })
        })
    }
}

macro_rules! forward_async_transport {
    ($($ptr:tt)*) => {
        impl<T: AsyncTransport + ?Sized> AsyncTransport for $($ptr)*<T> {
            fn name(&self) -> &'static str { (**self).name() }
            fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Item>>> { (**self).get(key) }
            fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Item>>>> { (**self).get_many(keys) }
            fn store<'a>(&'a self, request: &'a Store<'a>) -> BoxFuture<'a, Result<StoreStatus>> { (**self).store(request) }
            fn store_many<'a>(&'a self, requests: &'a [Store<'a>]) -> BoxFuture<'a, Result<Vec<StoreStatus>>> { (**self).store_many(requests) }
            fn store_many_each<'a>(&'a self, requests: &'a [Store<'a>]) -> BoxFuture<'a, Result<ManyStore>> { (**self).store_many_each(requests) }
            fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> { (**self).delete(key) }
            fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<bool>>> { (**self).delete_many(keys) }
            fn delete_many_each<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<ManyDelete>> { (**self).delete_many_each(keys) }
            fn delete_many_quiet<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>> { (**self).delete_many_quiet(keys) }
            fn incr<'a>(&'a self, key: &'a [u8], delta: u64) -> BoxFuture<'a, Result<Option<u64>>> { (**self).incr(key, delta) }
            fn decr<'a>(&'a self, key: &'a [u8], delta: u64) -> BoxFuture<'a, Result<Option<u64>>> { (**self).decr(key, delta) }
            fn touch<'a>(&'a self, key: &'a [u8], exptime: u32) -> BoxFuture<'a, Result<bool>> { (**self).touch(key, exptime) }
            fn flush_all(&self) -> BoxFuture<'_, Result<()>> { (**self).flush_all() }
            fn stats(&self) -> BoxFuture<'_, Result<Vec<ServerStats>>> { (**self).stats() }
            fn supports_meta(&self) -> bool { (**self).supports_meta() }
            fn close(&self) { (**self).close() }
            fn meta_get<'a>(&'a self, key: &'a [u8], recache_below: u32) -> BoxFuture<'a, Result<Option<MetaItem>>> { (**self).meta_get(key, recache_below) }
            fn meta_get_many<'a>(&'a self, keys: &'a [&'a [u8]], recache_below: u32) -> BoxFuture<'a, Result<Vec<Option<MetaItem>>>> { (**self).meta_get_many(keys, recache_below) }
            fn get_many_read<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<ManyRead>> { (**self).get_many_read(keys) }
            fn meta_get_many_read<'a>(&'a self, keys: &'a [&'a [u8]], recache_below: u32) -> BoxFuture<'a, Result<ManyRead<MetaItem>>> { (**self).meta_get_many_read(keys, recache_below) }
            fn meta_invalidate<'a>(&'a self, key: &'a [u8], grace: u32, cas: Option<u64>) -> BoxFuture<'a, Result<bool>> { (**self).meta_invalidate(key, grace, cas) }
            fn as_caller(&self, work: BoxFuture<'static, ()>) -> BoxFuture<'static, ()> { (**self).as_caller(work) }
        }
    };
}
forward_async_transport!(std::sync::Arc);
forward_async_transport!(Box);
