//! A server name's addresses, looked up by the system's resolver within the connect
//! timeout, one lookup per name at a time.
//!
//! `getaddrinfo` cannot be cut short, and a DNS server that does not answer held every
//! connect for the resolver's own timeout (glibc: 5 s, twice; an outside audit measured
//! 10 s a call). So a lookup runs on a thread of its own, and its callers wait for it up to
//! their timeout; one given up on ends on its thread, its answer dropped. Callers that come
//! while a name's lookup runs wait for that one rather than start their own: a thread per
//! connect, each living the resolver's 10 s, had 236 threads alive after 3 s of 16 callers
//! (a review; 64 callers would keep thousands). Nothing is kept once a lookup ends: the
//! next connect looks the name up again, so a changed DNS record is seen.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A lookup's answer, shared by its callers (an `io::Error` is not `Clone`: its kind and
/// text).
type Found = Result<Vec<SocketAddr>, (io::ErrorKind, String)>;

/// One running lookup: its answer once it has one.
#[derive(Default)]
struct Running {
    found: Mutex<Option<Found>>,
    ready: Condvar,
}

/// The lookups running, by name.
static RUNNING: Mutex<Option<HashMap<String, Arc<Running>>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `address`'s socket addresses: an IP address and port as they are, and a name as the
/// system's resolver gives it, waited for up to `timeout` (the connect timeout).
pub(crate) fn lookup(address: &str, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    lookup_with(address, timeout, |name| {
        name.to_socket_addrs().map(Iterator::collect)
    })
}

/// [`lookup`], names looked up by `resolve` (on a thread of its own, unless the name's
/// lookup is running already).
fn lookup_with(
    address: &str,
    timeout: Duration,
    resolve: impl FnOnce(String) -> io::Result<Vec<SocketAddr>> + Send + 'static,
) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let until = Instant::now() + timeout;
    let (running, start) = {
        let mut all = lock(&RUNNING);
        let all = all.get_or_insert_with(HashMap::new);
        match all.get(address) {
            Some(running) => (Arc::clone(running), false),
            None => {
                let running = Arc::new(Running::default());
                all.insert(address.to_string(), Arc::clone(&running));
                (running, true)
            }
        }
    };
    if start {
        let name = address.to_string();
        let shared = Arc::clone(&running);
        let spawned = std::thread::Builder::new()
            .name("newcache-lookup".into())
            .spawn(move || {
                // Taken off the running ones however the lookup ends (a resolver that
                // panicked would have left every later connect waiting for it).
                let _done = Done(&name, &shared);
                let found = resolve(name.clone()).map_err(|e| (e.kind(), e.to_string()));
                *lock(&shared.found) = Some(found);
                shared.ready.notify_all();
            });
        if let Err(e) = spawned {
            forget(address, &running);
            return Err(e);
        }
    }
    let mut found = lock(&running.found);
    loop {
        if let Some(found) = found.as_ref() {
            return found
                .clone()
                .map_err(|(kind, text)| io::Error::new(kind, text));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the name was not looked up within {timeout:?} (the connect timeout)"),
            ));
        }
        found = running
            .ready
            .wait_timeout(found, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Takes a lookup off the running ones when its thread ends.
struct Done<'a>(&'a str, &'a Arc<Running>);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        forget(self.0, self.1);
    }
}

/// Takes `name`'s lookup off the running ones, when it is still `running` (not a newer one).
fn forget(name: &str, running: &Arc<Running>) {
    if let Some(all) = lock(&RUNNING).as_mut() {
        if all.get(name).is_some_and(|r| Arc::ptr_eq(r, running)) {
            all.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A name lookup that does not answer (a DNS server that is down) fails the connect
    /// with a timeout within the connect timeout, not the resolver's own; one that answers
    /// gives its addresses, and an IP address needs no lookup.
    #[test]
    fn a_name_lookup_is_waited_for_up_to_the_connect_timeout() {
        let started = Instant::now();
        let e = lookup_with("hung.example:11211", Duration::from_millis(100), |_| {
            std::thread::sleep(Duration::from_secs(5));
            Ok(Vec::new())
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let found = lookup_with("answers.example:11211", Duration::from_secs(5), |name| {
            assert_eq!(name, "answers.example:11211");
            Ok(vec![addr("10.0.0.1:11211")])
        })
        .unwrap();
        assert_eq!(found, vec![addr("10.0.0.1:11211")]);
        let e = lookup_with("refused.example:11211", Duration::from_secs(5), |_| {
            Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let literal = lookup_with("[::1]:11211", Duration::ZERO, |_| unreachable!()).unwrap();
        assert_eq!(literal, vec![addr("[::1]:11211")]);
        let local = lookup("localhost:11211", Duration::from_secs(5)).unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");
    }

    /// Callers of a name whose lookup hangs share one lookup (one thread), each giving up
    /// at its timeout; once it ends, the next caller looks the name up again.
    #[test]
    fn callers_of_a_hung_name_share_one_lookup() {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let callers: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(|| {
                    lookup_with("shared.example:11211", Duration::from_millis(100), |_| {
                        STARTED.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(600));
                        Ok(vec![addr("10.0.0.2:11211")])
                    })
                })
            })
            .collect();
        for caller in callers {
            let e = caller.join().unwrap().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        }
        assert_eq!(STARTED.load(Ordering::SeqCst), 1);
        // A caller while it still runs gets its answer; after it ended, a new lookup.
        let found = lookup_with("shared.example:11211", Duration::from_secs(2), |_| {
            unreachable!("the running lookup answers")
        });
        assert_eq!(found.unwrap(), vec![addr("10.0.0.2:11211")]);
        std::thread::sleep(Duration::from_millis(50));
        let again = lookup_with("shared.example:11211", Duration::from_secs(2), |_| {
            Ok(vec![addr("10.0.0.3:11211")])
        });
        assert_eq!(again.unwrap(), vec![addr("10.0.0.3:11211")]);
    }
}
