//! Which `get_or_set` loads the current thread is running, so that a loader that calls
//! `get_or_set` of its own key where that call would follow a load of the key in this
//! process (the key cold: its own) is told so ([`Error::Reentrant`](crate::Error::Reentrant))
//! instead of waiting for ever on the very load it runs in (it joined its own single
//! flight as a follower: an outside audit). A load is marked while its loader is called and
//! while its future is polled: a blocking loader runs inside the call, an async one inside
//! the polls of the caller's task, and a `get_or_set` it makes starts inside them too.
//! A loader that hands the inner call to another task or thread and waits for it is not
//! seen.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use crate::read_through::Flights;

thread_local! {
    /// The loads running on this thread, innermost last: the single-flight table each
    /// belongs to (by address: the caches of one name on one cluster share it) and its wire
    /// key.
    static LOADING: RefCell<Vec<(usize, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

/// A load of `wire` in `flights` marked as running on this thread until dropped (`true`:
/// it was marked, and is unmarked then).
struct Mark(bool);

impl Mark {
    fn enter(flights: &Flights, wire: &[u8]) -> Mark {
        let marked = LOADING.try_with(|loading| {
            loading.try_borrow_mut().is_ok_and(|mut loading| {
                loading.push((table(flights), wire.to_vec()));
                true
            })
        });
        Mark(marked.unwrap_or(false))
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        if !self.0 {
            return;
        }
        let _ = LOADING.try_with(|loading| {
            if let Ok(mut loading) = loading.try_borrow_mut() {
                loading.pop();
            }
        });
    }
}

fn table(flights: &Flights) -> usize {
    Arc::as_ptr(flights) as usize
}

/// Whether this thread is running a loader of `wire` in `flights` now.
pub(crate) fn loading_here(flights: &Flights, wire: &[u8]) -> bool {
    let table = table(flights);
    LOADING
        .try_with(|loading| {
            loading.try_borrow().is_ok_and(|loading| {
                loading
                    .iter()
                    .any(|(at, key)| *at == table && key.as_slice() == wire)
            })
        })
        .unwrap_or(false)
}

/// Calls `loader` and awaits its future with the load of `wire` in `flights` marked as
/// running on this thread (the call, and each poll).
pub(crate) async fn run_marked<F, Fut>(flights: &Flights, wire: &[u8], loader: F) -> Fut::Output
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let future = {
        let _mark = Mark::enter(flights, wire);
        loader()
    };
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _mark = Mark::enter(flights, wire);
        future.as_mut().poll(cx)
    })
    .await
}
