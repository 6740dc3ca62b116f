//! The thread that closes a pool's idle connections, shared by the blocking transports.

use std::sync::{Arc, Condvar, Mutex, Once, Weak};
use std::time::Duration;

/// A thread, started once, that calls a function on a weakly held pool every tick: the
/// closer of connections idle past a transport's idle timeout. It stops when the
/// `IdleReaper` is dropped (with its transport) or the pool is gone, whichever comes first,
/// so a dropped transport leaves no thread behind.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use newcache_transport::IdleReaper;
///
/// let pool = Arc::new(Mutex::new(vec![1, 2, 3]));
/// let reaper = IdleReaper::default();
/// reaper.start("doc-reaper", Duration::from_millis(5), Arc::downgrade(&pool), |p| {
///     p.lock().unwrap().clear();
/// });
/// while !pool.lock().unwrap().is_empty() {
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// drop(reaper); // the thread stops
/// ```
#[derive(Debug)]
pub struct IdleReaper {
    started: Once,
    /// Set (and signalled) when the reaper is dropped.
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Default for IdleReaper {
    fn default() -> Self {
        IdleReaper {
            started: Once::new(),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
        }
    }
}

impl IdleReaper {
    /// Starts the thread, named `name`, the first time it is called (later calls do
    /// nothing): every `tick` it calls `reap` on what `target` still holds. A thread the
    /// system will not start is not retried: the pool then closes its idle connections
    /// only when it is next used.
    pub fn start<T: ?Sized + Send + Sync + 'static>(
        &self,
        name: &str,
        tick: Duration,
        target: Weak<T>,
        reap: fn(&T),
    ) {
        self.started.call_once(|| {
            let stop = self.stop.clone();
            let _ = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || loop {
                    {
                        let (stopped, signal) = &*stop;
                        let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
                        if *guard {
                            return;
                        }
                        let (guard, _) = signal
                            .wait_timeout(guard, tick)
                            .unwrap_or_else(|p| p.into_inner());
                        if *guard {
                            return;
                        }
                    }
                    let Some(target) = target.upgrade() else {
                        return;
                    };
                    reap(&target);
                });
        });
    }
}

impl Drop for IdleReaper {
    fn drop(&mut self) {
        let (stopped, signal) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        signal.notify_all();
    }
}
