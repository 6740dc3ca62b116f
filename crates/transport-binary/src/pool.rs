//! Owned libmemcached handles, the pool that lends them to one thread at a time, and
//! caller-owned result storage.

use std::cell::Cell;
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
        }
    }

    /// Marks the start of a request (a lease does it; so does each call of a batch).
    pub(crate) fn begin(&self) {
        self.began.set(Instant::now());
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

    /// The raw pointer, for libmemcached calls; valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut memcached_st {
        self.memc.as_ptr()
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

struct State {
    /// Configured once; cloned into pool handles; never connects.
    master: Handle,
    idle: Vec<Handle>,
    created: usize,
    /// Threads waiting in `checkout` for a handle to come back.
    waiting: usize,
}

/// Handles lent to one thread at a time: up to `max` clones of a configured master, made
/// on demand; a thread that finds all of them lent out waits for one to come back.
pub(crate) struct Pool {
    state: Mutex<State>,
    returned: Condvar,
    max: usize,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code that can panic runs under the lock with the state half-changed, so a poisoned
    // lock still guards a consistent state.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool of at most `max` (at least 1) handles cloned from `master`.
    pub(crate) fn new(master: Handle, max: usize) -> Pool {
        Pool {
            state: Mutex::new(State {
                master,
                idle: Vec::new(),
                created: 0,
                waiting: 0,
            }),
            returned: Condvar::new(),
            max: max.max(1),
        }
    }

    /// The most handles the pool makes.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Borrows a handle for the calling thread, its request clock started; `None` only when
    /// libmemcached cannot make a clone (no memory, or it would not take the weighted ring).
    pub(crate) fn checkout(&self) -> Option<Lease<'_>> {
        let mut state = lock(&self.state);
        loop {
            if let Some(handle) = state.idle.pop() {
                return Some(Lease::new(self, handle));
            }
            if state.created < self.max {
                let handle = state.master.duplicate()?;
                state.created += 1;
                return Some(Lease::new(self, handle));
            }
            state.waiting += 1;
            state = self
                .returned
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }

    /// Runs `f` on the master handle, under the pool's lock (the master never does I/O).
    pub(crate) fn with_master<R>(&self, f: impl FnOnce(&Handle) -> R) -> R {
        let state = lock(&self.state);
        f(&state.master)
    }

    fn give_back(&self, handle: Handle) {
        let mut state = lock(&self.state);
        state.idle.push(handle);
        // Wake a waiter only when there is one: a notify is a futex system call each time,
        // one per request otherwise.
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.returned.notify_one();
        }
    }
}

/// A handle lent by the [`Pool`]; goes back to it on drop, on every path.
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    /// Taken out only in `Drop`, so every other use sees a live handle: no `Option` to
    /// unwrap, no path that could panic.
    handle: ManuallyDrop<Handle>,
}

impl<'p> Lease<'p> {
    fn new(pool: &'p Pool, handle: Handle) -> Lease<'p> {
        handle.begin();
        Lease {
            pool,
            handle: ManuallyDrop::new(handle),
        }
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
