//! Owned libmemcached handles, the pool that lends them to one thread at a time, and
//! caller-owned result storage.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::Deref;
use std::ptr::{self, NonNull};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use libmemcached_sys::*;

/// One `memcached_st`, freed (with its connections and SASL data) on drop.
///
/// `Send` but not `Sync`: a handle may move to another thread, but only one thread may use
/// it at a time. Here a `Handle` is reachable by one thread only: the one holding its
/// [`Lease`], or the one holding the pool's mutex (for the master).
pub(crate) struct Handle {
    memc: NonNull<memcached_st>,
    /// When the current request on this handle began ([`Handle::begin`]): how long a failed
    /// call waited tells which of libmemcached's timeouts expired (see `expired_timeout`).
    began: Cell<Instant>,
    /// The poll timeout set on the handle when it is not the transport's: what was left of
    /// it for a request that first waited for a handle ([`Handle::set_poll_timeout`]).
    shortened: Cell<Option<Duration>>,
}

// SAFETY: a memcached_st holds no thread-local state and no pointer into a thread's stack;
// libmemcached only forbids using one handle from two threads at once. A Handle is !Sync,
// so moving it between threads never lets two threads reach it together.
unsafe impl Send for Handle {}

impl Handle {
    /// A new, empty handle (no servers, libmemcached's default behaviors).
    pub(crate) fn create() -> Option<Handle> {
        // SAFETY: a NULL argument asks libmemcached to allocate the handle; ownership of the
        // returned pointer passes to the Handle, which frees it exactly once in Drop.
        NonNull::new(unsafe { memcached_create(ptr::null_mut()) }).map(Handle::own)
    }

    fn own(memc: NonNull<memcached_st>) -> Handle {
        Handle {
            memc,
            began: Cell::new(Instant::now()),
            shortened: Cell::new(None),
        }
    }

    /// Sets the handle's poll timeout for the next request: `shortened`, or the transport's
    /// `configured` one (`None`; the handle was cloned with it). A behavior set is a field
    /// store in libmemcached; it is made only when the value changes.
    pub(crate) fn set_poll_timeout(&self, shortened: Option<Duration>, configured: Duration) {
        if shortened == self.shortened.get() {
            return;
        }
        let ms = shortened.unwrap_or(configured).as_millis().max(1);
        // SAFETY: the handle is live and used by this thread only; setting the poll timeout
        // only stores the value.
        unsafe {
            memcached_behavior_set(
                self.as_ptr(),
                MEMCACHED_BEHAVIOR_POLL_TIMEOUT,
                u64::try_from(ms).unwrap_or(u64::MAX),
            )
        };
        self.shortened.set(shortened);
    }

    /// The poll timeout of the current request, when it was shortened.
    pub(crate) fn shortened_poll(&self) -> Option<Duration> {
        self.shortened.get()
    }

    /// Marks the start of a request (a lease does it; so does each call of a batch), and
    /// forgets the server libmemcached last disconnected, which tells a connect timeout
    /// from a reply's (`expired_timeout`): libmemcached keeps it past later successes, so a
    /// connect that failed on this handle long before named a later request's reply
    /// timeout a failure to connect (nothing sent), where the request had gone out (a
    /// review: an `incr` the server received).
    pub(crate) fn begin(&self) {
        self.began.set(Instant::now());
        // SAFETY: the handle is live and used by this thread only; resetting only clears
        // a pointer libmemcached keeps.
        unsafe { memcached_reset_last_disconnected_server(self.as_ptr()) };
    }

    /// The time since [`Handle::begin`].
    pub(crate) fn elapsed(&self) -> Duration {
        self.began.get().elapsed()
    }

    /// A copy of this handle's servers, behaviors and SASL data, without its connections,
    /// placing every key where this handle does.
    ///
    /// libmemcached 1.1.4's `memcached_clone` copies the distribution but not the weighted
    /// ketama flag (`ketama.weighted_`, set by `ketama_weighted`), so a clone of a
    /// `ketama_weighted` handle would build an unweighted ring and place keys elsewhere
    /// (pylibmc's `Client.clone()` has the same flaw). Setting the distribution again on
    /// the clone sets the flag from it and rebuilds the ring, touching no hash.
    pub(crate) fn duplicate(&self) -> Option<Handle> {
        // SAFETY: self is a live handle used by this thread only (see the type's docs); a
        // NULL destination makes libmemcached allocate the clone, owned by the new Handle.
        let clone = NonNull::new(unsafe { memcached_clone(ptr::null_mut(), self.memc.as_ptr()) })
            .map(Handle::own)?;
        let weighted = |h: &Handle| {
            // SAFETY: a live handle used by this thread only; reading a behavior changes
            // nothing.
            unsafe { memcached_behavior_get(h.as_ptr(), MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED) }
        };
        if weighted(self) != weighted(&clone) {
            // SAFETY: the clone is live and reachable from this thread only (not lent yet).
            let rc = unsafe {
                memcached_behavior_set(
                    clone.as_ptr(),
                    MEMCACHED_BEHAVIOR_DISTRIBUTION,
                    MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED as u64,
                )
            };
            if memcached_failed(rc) || weighted(self) != weighted(&clone) {
                return None;
            }
        }
        Some(clone)
    }

    /// A copy of this handle's behaviors and SASL data for one server alone (`host` as
    /// libmemcached takes it), without connections: what asks one server of a cluster
    /// when a request on all of them stops at the first that fails.
    pub(crate) fn alone(&self, host: &CStr, port: u16, weight: u32) -> Option<Handle> {
        // SAFETY: self is a live handle used by this thread only; a NULL destination makes
        // libmemcached allocate the clone, owned by the new Handle.
        let one = NonNull::new(unsafe { memcached_clone(ptr::null_mut(), self.memc.as_ptr()) })
            .map(Handle::own)?;
        // SAFETY: the clone is live and reachable from this thread only.
        unsafe { memcached_servers_reset(one.as_ptr()) };
        (!memcached_failed(add_server(&one, host, port, weight))).then_some(one)
    }

    /// The raw pointer, for libmemcached calls; valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut memcached_st {
        self.memc.as_ptr()
    }
}

/// Adds a server to `h`: a unix-domain socket (port 0, its path in `host`) as pylibmc adds
/// one, port 0 (libmemcached would take port 0 of a host for 11211, and name ring points
/// `path-N` where pylibmc's are `path:0-N`), else `host:port`. No connection is made and no
/// name is resolved.
pub(crate) fn add_server(h: &Handle, host: &CStr, port: u16, weight: u32) -> memcached_return_t {
    // SAFETY: h is a live handle used by this thread only; libmemcached copies the
    // NUL-terminated host name (or path), which outlives the call.
    unsafe {
        if port == 0 {
            memcached_server_add_unix_socket_with_weight(h.as_ptr(), host.as_ptr(), weight)
        } else {
            memcached_server_add_with_weight(h.as_ptr(), host.as_ptr(), port, weight)
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from memcached_create/memcached_clone, is owned by this
        // Handle alone, and is freed only here. Results created on it (ResultBuf) borrow the
        // Handle, so they are gone by now.
        unsafe { memcached_free(self.memc.as_ptr()) }
    }
}

/// Storage for one `memcached_result_st` that this process owns, so `memcached_fetch_result`
/// only resets it at the end of a fetch (it frees only results it allocated itself). Freed
/// (its value buffer) exactly once on drop, on every path.
pub(crate) struct ResultBuf<'h> {
    storage: Box<MaybeUninit<memcached_result_st>>,
    _handle: PhantomData<&'h Handle>,
}

impl<'h> ResultBuf<'h> {
    /// Initializes the storage for fetches on `handle`.
    pub(crate) fn new(handle: &'h Handle) -> Option<ResultBuf<'h>> {
        let mut storage = Box::new(MaybeUninit::<memcached_result_st>::zeroed());
        // SAFETY: handle is live and outlives the ResultBuf ('h); storage is a heap slot of
        // the header's size and alignment (checked by libmemcached-sys's layout test) that
        // never moves while the result is in use.
        let result = unsafe { memcached_result_create(handle.as_ptr(), storage.as_mut_ptr()) };
        if result.is_null() {
            return None;
        }
        Some(ResultBuf {
            storage,
            _handle: PhantomData,
        })
    }

    /// The result, for `memcached_fetch_result` and the `memcached_result_*` accessors.
    pub(crate) fn as_ptr(&mut self) -> *mut memcached_result_st {
        self.storage.as_mut_ptr()
    }
}

impl Drop for ResultBuf<'_> {
    fn drop(&mut self) {
        // SAFETY: the storage was initialized by memcached_result_create (new() returns no
        // ResultBuf otherwise) and is not allocated by libmemcached, so this frees only its
        // value buffer, once; the handle it refers to is still alive ('h).
        unsafe { memcached_result_free(self.storage.as_mut_ptr()) }
    }
}

/// Why [`Pool::checkout`] lent no handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkout {
    /// libmemcached could not make a clone (no memory, or it would not take the weighted
    /// ring).
    NoHandle,
    /// Every handle stayed lent out for the whole wait.
    Busy,
}

struct State {
    /// Configured once; cloned into pool handles; never connects.
    master: Handle,
    /// Handles given back, each with when: the oldest first, taken last.
    idle: Vec<(Handle, Instant)>,
    created: usize,
    /// The tickets of the threads waiting in `checkout` for a handle to come back, first
    /// come first: a thread arriving while others wait queues behind them, so no waiter is
    /// starved by threads that keep taking the handles it waits for.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

impl State {
    /// An idle handle, or a new one while fewer than `max` were made.
    fn take(&mut self, max: usize) -> Option<Result<Handle, Checkout>> {
        if let Some((handle, _)) = self.idle.pop() {
            return Some(Ok(handle));
        }
        if self.created < max {
            return Some(match self.master.duplicate() {
                Some(handle) => {
                    self.created += 1;
                    Ok(handle)
                }
                None => Err(Checkout::NoHandle),
            });
        }
        None
    }
}

/// Handles lent to one thread at a time: up to `max` clones of a configured master, made
/// on demand; a thread that finds all of them lent out waits for one to come back, in
/// turn.
pub(crate) struct Pool {
    state: Mutex<State>,
    returned: Condvar,
    max: usize,
    /// A handle idle this long is dropped, and its connections closed (zero: never).
    idle_timeout: Duration,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code that can panic runs under the lock with the state half-changed, so a poisoned
    // lock still guards a consistent state.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool of at most `max` (at least 1) handles cloned from `master`, each dropped
    /// (its connections closed) once idle for `idle_timeout` (zero: never).
    pub(crate) fn new(master: Handle, max: usize, idle_timeout: Duration) -> Pool {
        Pool {
            state: Mutex::new(State {
                master,
                idle: Vec::new(),
                created: 0,
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            returned: Condvar::new(),
            max: max.max(1),
            idle_timeout,
        }
    }

    /// The most handles the pool makes.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Borrows a handle for the calling thread, its request clock started. A thread that
    /// finds every handle lent out waits in line for one, at most `wait`
    /// ([`Checkout::Busy`] then): the handles may all be stuck on a hung server.
    pub(crate) fn checkout(&self, wait: Duration) -> Result<Lease<'_>, Checkout> {
        let mut state = lock(&self.state);
        let expired = self.expired(&mut state);
        if !expired.is_empty() {
            // Freed outside the lock: each closes its sockets.
            drop(state);
            drop(expired);
            state = lock(&self.state);
        }
        if state.queue.is_empty() {
            if let Some(taken) = state.take(self.max) {
                return taken.map(|handle| Lease::new(self, handle, None));
            }
        }
        let queued = Instant::now();
        let deadline = queued + wait;
        let ticket = state.next_ticket;
        state.next_ticket = state.next_ticket.wrapping_add(1);
        state.queue.push_back(ticket);
        loop {
            if state.queue.front() == Some(&ticket) {
                if let Some(taken) = state.take(self.max) {
                    state.queue.pop_front();
                    let more = !state.queue.is_empty() && !state.idle.is_empty();
                    drop(state);
                    if more {
                        // The next in line may take another idle handle.
                        self.returned.notify_all();
                    }
                    let waited = queued.elapsed();
                    return taken.map(|handle| Lease::new(self, handle, Some(waited)));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                state.queue.retain(|&t| t != ticket);
                drop(state);
                // Whoever is first in line now may be waiting on a handle already idle.
                self.returned.notify_all();
                return Err(Checkout::Busy);
            }
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Drops every idle handle, and with it its connections (the transport's `close`): the
    /// next checkout makes a new one. Handles lent out come back as usual.
    pub(crate) fn close_idle(&self) {
        let idle = {
            let mut state = lock(&self.state);
            let idle = std::mem::take(&mut state.idle);
            state.created = state.created.saturating_sub(idle.len());
            idle
        };
        // Freed outside the lock: each closes its sockets.
        drop(idle);
    }

    /// Drops the handles idle for longer than the idle timeout (the transport's reaper
    /// thread, and every checkout).
    pub(crate) fn close_expired(&self) {
        let expired = self.expired(&mut lock(&self.state));
        drop(expired);
    }

    /// Takes the handles idle for longer than the idle timeout out of the pool, to be
    /// dropped once the lock is released (the next checkout makes new ones).
    fn expired(&self, state: &mut State) -> Vec<(Handle, Instant)> {
        if self.idle_timeout.is_zero() {
            return Vec::new();
        }
        match state.idle.first() {
            Some((_, oldest)) if oldest.elapsed() >= self.idle_timeout => {}
            _ => return Vec::new(),
        }
        let stale = state
            .idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= self.idle_timeout)
            .count();
        state.created = state.created.saturating_sub(stale);
        state.idle.drain(..stale).collect()
    }

    /// Runs `f` on the master handle, under the pool's lock (the master never does I/O).
    pub(crate) fn with_master<R>(&self, f: impl FnOnce(&Handle) -> R) -> R {
        let state = lock(&self.state);
        f(&state.master)
    }

    fn give_back(&self, handle: Handle) {
        let mut state = lock(&self.state);
        state.idle.push((handle, Instant::now()));
        // Wake the waiters only when there are some: a notify is a futex system call each
        // time, one per request otherwise. All of them, as only the first in line takes it.
        let wake = !state.queue.is_empty();
        drop(state);
        if wake {
            self.returned.notify_all();
        }
    }
}

/// A handle lent by the [`Pool`]; goes back to it on drop, on every path.
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    /// Taken out only in `Drop`, so every other use sees a live handle: no `Option` to
    /// unwrap, no path that could panic.
    handle: ManuallyDrop<Handle>,
    /// How long the thread waited in line for the handle, when it had to.
    waited: Option<Duration>,
}

impl<'p> Lease<'p> {
    fn new(pool: &'p Pool, handle: Handle, waited: Option<Duration>) -> Lease<'p> {
        handle.begin();
        Lease {
            pool,
            handle: ManuallyDrop::new(handle),
            waited,
        }
    }

    /// How long the thread waited in line for this handle; `None` when one was free.
    pub(crate) fn waited(&self) -> Option<Duration> {
        self.waited
    }
}

impl Deref for Lease<'_> {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // SAFETY: `handle` is taken exactly once, here, and `self` is never used again after
        // drop, so the ManuallyDrop is not read after the take.
        let handle = unsafe { ManuallyDrop::take(&mut self.handle) };
        self.pool.give_back(handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn pool(max: usize) -> Pool {
        Pool::new(Handle::create().expect("a handle"), max, Duration::ZERO)
    }

    #[test]
    fn a_thread_that_finds_every_handle_lent_waits_at_most_its_wait() {
        let p = pool(1);
        let held = p.checkout(Duration::ZERO).expect("the only handle");
        let started = Instant::now();
        assert!(matches!(
            p.checkout(Duration::from_millis(50)),
            Err(Checkout::Busy)
        ));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(1));
        drop(held);
        assert!(
            p.checkout(Duration::ZERO).is_ok(),
            "a returned handle is lent again"
        );
    }

    #[test]
    fn waiters_are_served_in_turn_not_starved_by_newcomers() {
        let p = pool(1);
        let held = p.checkout(Duration::ZERO).expect("the only handle");
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let lease = p.checkout(Duration::from_secs(5));
                let got = Instant::now();
                (lease.is_ok(), got)
            });
            std::thread::sleep(Duration::from_millis(50));
            // Newcomers that take and return the handle as fast as they can.
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        drop(p.checkout(Duration::from_secs(5)));
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(50));
            let released = Instant::now();
            drop(held);
            let (ok, got) = waiter.join().expect("waiter");
            stop.store(true, Ordering::Relaxed);
            assert!(ok);
            assert!(
                got.duration_since(released) < Duration::from_millis(500),
                "the first waiter waited {:?} after the handle came back",
                got.duration_since(released)
            );
        });
    }
}
