//! Requests whose callers gave up on them, by caller: a caller's next request to the
//! server goes on the connection that carries its abandoned one, behind it.
//!
//! A request given up on (a `tokio::time::timeout` around it, a dropped future) may still
//! be written, or run, after its caller has moved on. Written on another connection, the
//! caller's next request could run first (memcached serves its connections on several
//! threads, and a classic-protocol connection carries one request at a time), and a `set`
//! given up on would then overwrite the value its caller set next. So each abandoned
//! request is noted with its caller (the tokio task, or the thread outside any task), and
//! until the reply is read, that caller's requests to the server go on the same
//! connection, queued behind it; other callers are not held up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::Handle;

/// Who made a request: its tokio task, or its thread when it runs outside any task
/// (`block_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::tokio_transport) enum Who {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

tokio::task_local! {
    /// The caller a task's requests are made for, when it runs work of another's
    /// ([`AsyncTransport::as_caller`](newcache_transport::AsyncTransport::as_caller)).
    static ACTING_FOR: Who;
}

impl Who {
    /// `work`, its requests taken as those of the caller running now.
    pub(in crate::tokio_transport) fn acting_for_now<F: std::future::Future>(
        work: F,
    ) -> impl std::future::Future<Output = F::Output> {
        ACTING_FOR.scope(Who::now(), work)
    }

    /// The caller running now (the one its task acts for, if any).
    pub(in crate::tokio_transport) fn now() -> Who {
        if let Ok(who) = ACTING_FOR.try_with(|who| *who) {
            return who;
        }
        match tokio::task::try_id() {
            Some(id) => Who::Task(id),
            None => Who::Thread(std::thread::current().id()),
        }
    }
}

/// One server's abandoned requests: each caller's, with the connection it is on.
#[derive(Default)]
pub(in crate::tokio_transport) struct Abandoned {
    /// How many entries there are: the route's look costs one load while there are none.
    count: AtomicUsize,
    /// The caller, the connection (its address, for [`Abandoned::forget`]), and a handle on
    /// it to route the caller's next requests to.
    entries: Mutex<Vec<(Who, usize, Handle)>>,
}

impl std::fmt::Debug for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Abandoned")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl Abandoned {
    fn lock(&self) -> MutexGuard<'_, Vec<(Who, usize, Handle)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `who` gave up on a request on connection `conn` (`handle`'s).
    pub(super) fn note(&self, who: Who, conn: usize, handle: &Handle) {
        let mut entries = self.lock();
        if !entries.iter().any(|(w, c, _)| *w == who && *c == conn) {
            entries.push((who, conn, handle.clone()));
            self.count.store(entries.len(), Ordering::Release);
        }
    }

    /// Connection `conn` has nothing abandoned in flight any more (or it failed).
    pub(super) fn forget(&self, conn: usize) {
        let gone: Vec<(Who, usize, Handle)> = {
            let mut entries = self.lock();
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *entries)
                .into_iter()
                .partition(|(_, c, _)| *c == conn);
            *entries = kept;
            self.count.store(entries.len(), Ordering::Release);
            gone
        };
        // The handles are let go once the list is unlocked.
        drop(gone);
    }

    /// The connection the calling task (or thread) has a request abandoned on, while it is
    /// open: its next request goes there.
    pub(in crate::tokio_transport) fn route(&self) -> Option<Handle> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let me = Who::now();
        self.lock()
            .iter()
            .find(|(who, _, handle)| *who == me && handle.is_open())
            .map(|(_, _, handle)| handle.clone())
    }
}
