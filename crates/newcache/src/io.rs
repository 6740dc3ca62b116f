//! How the cache's logic reaches a transport: the one seam between the blocking [`Cache`]
//! and the async [`AsyncCache`](crate::AsyncCache).
//!
//! Every operation (the key function, the herd decisions, the codec, and the sequence of
//! round trips a herd read or `get_or_set` needs) is written once, as an `async fn` over an
//! [`Io`]. The blocking cache runs it over [`Blocking`], whose futures are its transport's
//! blocking calls, ready at once, and drives it with [`block`] (one poll; no runtime); the
//! async cache awaits it over an async transport.
//!
//! [`Cache`]: crate::Cache

use std::future::Future;
#[cfg(feature = "tokio")]
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use newcache_transport::{
    Found, Item, MadeKeys, ManyDelete, ManyRead, ManyStore, MetaItem, ServerStats, Store,
    StoreStatus, Transport,
};

use crate::read_through::{Flight, Landed};

/// A transport's result.
pub(crate) type TResult<T> = newcache_transport::Result<T>;

/// The transport operations the cache's logic sends, and the two waits it makes (a pause
/// between lease polls, a wait for another caller's load).
pub(crate) trait Io: Sync {
    fn get<'a>(&'a self, key: &'a [u8]) -> impl Future<Output = TResult<Option<Item>>> + Send + 'a;
    /// A multi-get, the keys of a server that failed while others answered told apart.
    fn get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
    ) -> impl Future<Output = TResult<ManyRead>> + Send + 'a;
    /// Runs a multi-get whose keys are made as the transport asks
    /// ([`Transport::get_many_made`]) at once, handing each item to `found`, when this Io
    /// can without awaiting (`None`: make every key, then [`Io::get_many`]).
    fn get_many_now(&self, keys: &mut dyn MadeKeys, found: &mut Found<'_>) -> Option<TResult<()>>;
    fn store<'a>(
        &'a self,
        request: &'a Store<'a>,
    ) -> impl Future<Output = TResult<StoreStatus>> + Send + 'a;
    /// Stores at once, when this Io can without awaiting (`None`: use [`Io::store`]): lets a
    /// blocking store send a value borrowed for the call only (the caller's own bytes).
    fn store_now(&self, request: &Store<'_>) -> Option<TResult<StoreStatus>>;
    /// Many stores (a `set_many`, a multi-get's claims), the requests of a server that failed
    /// while the others answered told apart ([`Transport::store_many_each`]).
    fn store_many_each<'a>(
        &'a self,
        requests: &'a [Store<'a>],
    ) -> impl Future<Output = TResult<ManyStore>> + Send + 'a;
    fn delete<'a>(&'a self, key: &'a [u8]) -> impl Future<Output = TResult<bool>> + Send + 'a;
    /// Many deletes (a `delete_many`, a `set_many` of expired values), the keys of a server
    /// that failed while the others answered told apart ([`Transport::delete_many_each`]).
    fn delete_many_each<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
    ) -> impl Future<Output = TResult<ManyDelete>> + Send + 'a;
    fn arith<'a>(
        &'a self,
        key: &'a [u8],
        delta: u64,
        up: bool,
    ) -> impl Future<Output = TResult<Option<u64>>> + Send + 'a;
    fn touch<'a>(
        &'a self,
        key: &'a [u8],
        exptime: u32,
    ) -> impl Future<Output = TResult<bool>> + Send + 'a;
    fn meta_get<'a>(
        &'a self,
        key: &'a [u8],
        recache_below: u32,
    ) -> impl Future<Output = TResult<Option<MetaItem>>> + Send + 'a;
    /// A meta multi-get, the keys of a server that failed while others answered told apart.
    fn meta_get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
        recache_below: u32,
    ) -> impl Future<Output = TResult<ManyRead<MetaItem>>> + Send + 'a;
    fn meta_invalidate<'a>(
        &'a self,
        key: &'a [u8],
        grace: u32,
        cas: Option<u64>,
    ) -> impl Future<Output = TResult<bool>> + Send + 'a;
    fn flush_all(&self) -> impl Future<Output = TResult<()>> + Send + '_;
    fn stats(&self) -> impl Future<Output = TResult<Vec<ServerStats>>> + Send + '_;
    /// Deletes a key without waiting for the outcome, from a destructor (a lease key whose
    /// holder is done, however it left): blocking, it is sent at once; async, on a task.
    /// As [`release`] does, `when` the lease is in that state, `token` the caller's own.
    /// The release itself, awaited where the caller can, is [`release`].
    fn release(&self, key: Vec<u8>, token: Vec<u8>, when: Lease);
    /// Pauses the caller.
    fn sleep(&self, pause: Duration) -> impl Future<Output = ()> + Send + '_;
    /// Waits until `flight`'s leader is done, or `limit` has passed: how it stands then.
    fn wait_for<'a>(
        &'a self,
        flight: &'a Flight,
        limit: Duration,
    ) -> impl Future<Output = Landed> + Send + 'a;
}

/// Whether a lease release that failed is worth a second try: its connection broke or its
/// reply did not check out (the server answers; a new connection most likely goes
/// through). Not a timeout or a server down: that would only wait again.
fn worth_again(e: &newcache_transport::Error) -> bool {
    matches!(
        e,
        newcache_transport::Error::Io { .. } | newcache_transport::Error::Protocol { .. }
    )
}

/// Whether a conditional release deletes, given its read of the key: when the key holds
/// `value`, or could not be read (its server hung: the delete then lands when it is back,
/// as the `add` it undoes does); not when the key is gone or holds another's value.
fn may_release(read: TResult<Option<Item>>, value: &[u8]) -> bool {
    match read {
        Ok(Some(item)) => item.value == value,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// What a caller knows of the lease it releases, which says when its key is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// The caller holds it: deleted whatever the key holds.
    Held,
    /// Its `add` got no reply and the key could not be read after: deleted only while the
    /// key holds the caller's token or cannot be read for a hung server (the delete then
    /// lands when it is back, as the `add` it undoes does), not for a broken connection;
    /// a lease the caller does not hold is not taken from whoever does.
    Unsure,
    /// A release of it began and was given up on: deleted only while the key is read
    /// holding the caller's token (the first `delete` may have landed, and another
    /// caller's lease been taken since).
    Releasing,
}

/// Deletes a lease key, through either cache's Io, `when` the lease is in that state (read
/// first, but for a lease held). Tried twice when its connection failed ([`worth_again`]):
/// it most likely goes through on a new one, and a lease key left behind costs the next
/// cold `get_or_set` of the key its `lease_wait`. Else the key expires on its own. The
/// second try deletes only while the key is read holding `token`, the caller's own: the
/// first may have landed, its reply lost, and another caller's lease been taken since (a
/// read that fails too deleted it, and two loaders ran at once: a review).
pub(crate) async fn release<I: Io + ?Sized>(io: &I, key: &[u8], token: &[u8], when: Lease) {
    let delete = match when {
        Lease::Held => true,
        Lease::Unsure => {
            // A read whose connection broke is read again: the server answers, and a
            // second break leaves the key (it may be another's lease now: deleted, a third
            // caller loaded beside its holder, a review).
            let mut read = io.get(key).await;
            if read.as_ref().is_err_and(worth_again) {
                read = io.get(key).await;
            }
            !read.as_ref().is_err_and(worth_again) && may_release(read, token)
        }
        Lease::Releasing => {
            // A read whose connection broke is read again, as above: the key is deleted
            // only when it is read holding this caller's token either way, and a release
            // given up on its first broken read left the caller's own lease to cost the
            // next cold call `lease_wait` (a review: 4 s).
            let mut read = io.get(key).await;
            if read.as_ref().is_err_and(worth_again) {
                read = io.get(key).await;
            }
            holds(&read, token)
        }
    };
    if !delete {
        return;
    }
    if io.delete(key).await.as_ref().is_err_and(worth_again) && holds(&io.get(key).await, token) {
        let _ = io.delete(key).await;
    }
}

/// Whether a read of a lease key found it holding `token`.
fn holds(read: &TResult<Option<Item>>, token: &[u8]) -> bool {
    matches!(read, Ok(Some(item)) if item.value == token)
}

/// Awaits `request`, running `meanwhile` once its first poll has sent it and left it
/// waiting for the reply: work that needs no reply then overlaps the server's. A request
/// done at its first poll (a blocking one) runs no `meanwhile`.
pub(crate) async fn meanwhile<F: Future>(request: F, meanwhile: &impl Fn()) -> F::Output {
    let mut request = std::pin::pin!(request);
    let first = std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => out,
        Poll::Pending => {
            meanwhile();
            request.await
        }
    }
}

/// A blocking transport as an [`Io`]: each future is the blocking call, made when the
/// future is created and ready at once.
pub(crate) struct Blocking<'t>(pub(crate) &'t dyn Transport);

impl Io for Blocking<'_> {
    fn get<'a>(&'a self, key: &'a [u8]) -> impl Future<Output = TResult<Option<Item>>> + Send + 'a {
        std::future::ready(self.0.get(key))
    }
    fn get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
    ) -> impl Future<Output = TResult<ManyRead>> + Send + 'a {
        std::future::ready(self.0.get_many_read(keys))
    }
    fn get_many_now(&self, keys: &mut dyn MadeKeys, found: &mut Found<'_>) -> Option<TResult<()>> {
        Some(self.0.get_many_made(keys, found))
    }
    fn store<'a>(
        &'a self,
        request: &'a Store<'a>,
    ) -> impl Future<Output = TResult<StoreStatus>> + Send + 'a {
        std::future::ready(self.0.store(request))
    }
    fn store_now(&self, request: &Store<'_>) -> Option<TResult<StoreStatus>> {
        Some(self.0.store(request))
    }
    fn store_many_each<'a>(
        &'a self,
        requests: &'a [Store<'a>],
    ) -> impl Future<Output = TResult<ManyStore>> + Send + 'a {
        std::future::ready(self.0.store_many_each(requests))
    }
    fn delete<'a>(&'a self, key: &'a [u8]) -> impl Future<Output = TResult<bool>> + Send + 'a {
        std::future::ready(self.0.delete(key))
    }
    fn delete_many_each<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
    ) -> impl Future<Output = TResult<ManyDelete>> + Send + 'a {
        std::future::ready(self.0.delete_many_each(keys))
    }
    fn arith<'a>(
        &'a self,
        key: &'a [u8],
        delta: u64,
        up: bool,
    ) -> impl Future<Output = TResult<Option<u64>>> + Send + 'a {
        std::future::ready(if up {
            self.0.incr(key, delta)
        } else {
            self.0.decr(key, delta)
        })
    }
    fn touch<'a>(
        &'a self,
        key: &'a [u8],
        exptime: u32,
    ) -> impl Future<Output = TResult<bool>> + Send + 'a {
        std::future::ready(self.0.touch(key, exptime))
    }
    fn meta_get<'a>(
        &'a self,
        key: &'a [u8],
        recache_below: u32,
    ) -> impl Future<Output = TResult<Option<MetaItem>>> + Send + 'a {
        std::future::ready(self.0.meta_get(key, recache_below))
    }
    fn meta_get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
        recache_below: u32,
    ) -> impl Future<Output = TResult<ManyRead<MetaItem>>> + Send + 'a {
        std::future::ready(self.0.meta_get_many_read(keys, recache_below))
    }
    fn meta_invalidate<'a>(
        &'a self,
        key: &'a [u8],
        grace: u32,
        cas: Option<u64>,
    ) -> impl Future<Output = TResult<bool>> + Send + 'a {
        std::future::ready(self.0.meta_invalidate(key, grace, cas))
    }
    fn flush_all(&self) -> impl Future<Output = TResult<()>> + Send + '_ {
        std::future::ready(self.0.flush_all())
    }
    fn stats(&self) -> impl Future<Output = TResult<Vec<ServerStats>>> + Send + '_ {
        std::future::ready(self.0.stats())
    }
    fn release(&self, key: Vec<u8>, token: Vec<u8>, when: Lease) {
        block(release(self, &key, &token, when));
    }
    fn sleep(&self, pause: Duration) -> impl Future<Output = ()> + Send + '_ {
        std::thread::sleep(pause);
        std::future::ready(())
    }
    fn wait_for<'a>(
        &'a self,
        flight: &'a Flight,
        limit: Duration,
    ) -> impl Future<Output = Landed> + Send + 'a {
        std::future::ready(flight.wait_within(limit))
    }
}

/// Runs an operation written over [`Blocking`] to its end. Its futures are ready when they
/// are created, so one poll finishes it; should one ever not be, this polls again after
/// yielding the thread (never spinning a core at full speed, never panicking).
pub(crate) fn block<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// An async transport as an [`Io`] (feature `tokio`: the waits are tokio's).
#[cfg(feature = "tokio")]
pub(crate) struct Async<'t>(pub(crate) &'t Arc<dyn newcache_transport::AsyncTransport>);

#[cfg(feature = "tokio")]
impl Io for Async<'_> {
    fn get<'a>(&'a self, key: &'a [u8]) -> impl Future<Output = TResult<Option<Item>>> + Send + 'a {
        self.0.get(key)
    }
    fn get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
    ) -> impl Future<Output = TResult<ManyRead>> + Send + 'a {
        self.0.get_many_read(keys)
    }
    fn get_many_now(&self, _: &mut dyn MadeKeys, _: &mut Found<'_>) -> Option<TResult<()>> {
        None
    }
    fn store<'a>(
        &'a self,
        request: &'a Store<'a>,
    ) -> impl Future<Output = TResult<StoreStatus>> + Send + 'a {
        self.0.store(request)
    }
    fn store_now(&self, _: &Store<'_>) -> Option<TResult<StoreStatus>> {
        None
    }
    fn store_many_each<'a>(
        &'a self,
        requests: &'a [Store<'a>],
    ) -> impl Future<Output = TResult<ManyStore>> + Send + 'a {
        self.0.store_many_each(requests)
    }
    fn delete<'a>(&'a self, key: &'a [u8]) -> impl Future<Output = TResult<bool>> + Send + 'a {
        self.0.delete(key)
    }
    fn delete_many_each<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
    ) -> impl Future<Output = TResult<ManyDelete>> + Send + 'a {
        self.0.delete_many_each(keys)
    }
    fn arith<'a>(
        &'a self,
        key: &'a [u8],
        delta: u64,
        up: bool,
    ) -> impl Future<Output = TResult<Option<u64>>> + Send + 'a {
        if up {
            self.0.incr(key, delta)
        } else {
            self.0.decr(key, delta)
        }
    }
    fn touch<'a>(
        &'a self,
        key: &'a [u8],
        exptime: u32,
    ) -> impl Future<Output = TResult<bool>> + Send + 'a {
        self.0.touch(key, exptime)
    }
    fn meta_get<'a>(
        &'a self,
        key: &'a [u8],
        recache_below: u32,
    ) -> impl Future<Output = TResult<Option<MetaItem>>> + Send + 'a {
        self.0.meta_get(key, recache_below)
    }
    fn meta_get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
        recache_below: u32,
    ) -> impl Future<Output = TResult<ManyRead<MetaItem>>> + Send + 'a {
        self.0.meta_get_many_read(keys, recache_below)
    }
    fn meta_invalidate<'a>(
        &'a self,
        key: &'a [u8],
        grace: u32,
        cas: Option<u64>,
    ) -> impl Future<Output = TResult<bool>> + Send + 'a {
        self.0.meta_invalidate(key, grace, cas)
    }
    fn flush_all(&self) -> impl Future<Output = TResult<()>> + Send + '_ {
        self.0.flush_all()
    }
    fn stats(&self) -> impl Future<Output = TResult<Vec<ServerStats>>> + Send + '_ {
        self.0.stats()
    }
    fn release(&self, key: Vec<u8>, token: Vec<u8>, when: Lease) {
        // From a destructor, so on a task of the runtime in use; without one (the runtime is
        // shutting down) the key expires on its own after `lease_wait`.
        // The release goes where this caller's requests would: behind the lease `add` it
        // may have given up on (`as_caller`).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let transport = Arc::clone(self.0);
            let work = Box::pin(async move {
                release(&Async(&transport), &key, &token, when).await;
            });
            runtime.spawn(self.0.as_caller(work));
        }
    }
    fn sleep(&self, pause: Duration) -> impl Future<Output = ()> + Send + '_ {
        tokio::time::sleep(pause)
    }
    async fn wait_for(&self, flight: &Flight, limit: Duration) -> Landed {
        // Elapsed or not, how it stands is read after.
        let _ = tokio::time::timeout(limit, flight.done_async()).await;
        flight.landed()
    }
}
