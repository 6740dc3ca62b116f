//! One server's connections: a cap on how many are open at once, callers waiting (up to a
//! deadline) for one to come free, and idle connections closed once idle for too long.
//!
//! Every open connection holds a [`Permit`]; dropping the connection (for whatever reason)
//! drops the permit, which frees its place and wakes one waiting caller. A permit tied to the
//! connection's socket ([`Permit::attach`]) frees its place only once the server has closed
//! its side too (or after [`CLOSE_WAIT`]): it half-closes the socket, and the pool's closer
//! thread waits for the server's end of file, so the server never counts more than
//! `max_open` connections from this pool, even while connections are being replaced. Idle
//! connections are kept most recently used last, so the ones idle longest are at the front
//! and are closed first.

use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::stream::Socket;

/// The longest a closed connection holds its place waiting for the server to close its side
/// (a hung server never does).
pub(crate) const CLOSE_WAIT: Duration = Duration::from_millis(100);

/// A server's pool of connections of type `C`.
pub(crate) struct Pool<C> {
    shared: Arc<Shared<C>>,
    /// The most connections open at once.
    max_open: usize,
    /// The most idle connections kept (more are kept while callers wait).
    max_idle: usize,
    /// Idle connections are closed after this long (zero: never).
    idle_timeout: Duration,
}

struct Shared<C> {
    state: Mutex<State<C>>,
    freed: Condvar,
    /// To the closer thread (started with the first connection opened).
    closer: Mutex<Option<Sender<Socket>>>,
}

impl<C> Shared<C> {
    /// One connection fewer: its place goes to a waiting caller, if any.
    fn release(&self) {
        let mut state = lock(&self.state);
        state.open = state.open.saturating_sub(1);
        if state.waiting > 0 {
            self.freed.notify_one();
        }
    }
}

struct State<C> {
    /// Idle connections and when each went idle, the most recently used last.
    idle: Vec<(C, Instant)>,
    /// Connections open (idle, in use, or being opened).
    open: usize,
    /// Callers waiting for a connection.
    waiting: usize,
}

/// A place in a pool's count of open connections; freed when dropped.
pub(crate) struct Permit<C> {
    shared: Weak<Shared<C>>,
    /// A second handle on the connection's socket, half-closed when the permit goes.
    socket: Option<Socket>,
}

impl<C> Permit<C> {
    /// Ties the permit to its connection's socket (a second handle on it, [`Socket::share`]):
    /// when the permit is dropped, after the connection's own handle, the socket is
    /// half-closed and the place freed once the server has closed its side.
    pub(crate) fn attach(&mut self, socket: Socket) {
        self.socket = Some(socket);
    }
}

impl<C> Drop for Permit<C> {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if let Some(socket) = self.socket.take() {
            // The server reads the end of file and closes its side, which the closer reads.
            let handed = socket.shutdown(Shutdown::Write).is_ok()
                && lock(&shared.closer)
                    .as_ref()
                    .is_some_and(|closer| closer.send(socket).is_ok());
            if handed {
                return;
            }
        }
        shared.release();
    }
}

/// The closer thread of a pool: holds half-closed sockets until the server closes its side
/// (end of file) or [`CLOSE_WAIT`] passes, then frees their places. Stops when the pool is
/// dropped and nothing is pending.
fn closer<C>(incoming: Receiver<Socket>, shared: Weak<Shared<C>>) {
    let mut pending: Vec<(Socket, Instant)> = Vec::new();
    let add = |pending: &mut Vec<(Socket, Instant)>, socket: Socket| {
        if socket.set_nonblocking(true).is_ok() {
            pending.push((socket, Instant::now() + CLOSE_WAIT));
        } else if let Some(shared) = shared.upgrade() {
            shared.release();
        }
    };
    loop {
        if pending.is_empty() {
            match incoming.recv() {
                Ok(socket) => add(&mut pending, socket),
                Err(_) => return,
            }
        }
        while let Ok(socket) = incoming.try_recv() {
            add(&mut pending, socket);
        }
        let now = Instant::now();
        let mut buf = [0u8; 4096];
        let before = pending.len();
        pending.retain_mut(|(socket, deadline)| loop {
            match socket.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return now < *deadline,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        });
        if let Some(shared) = shared.upgrade() {
            for _ in pending.len()..before {
                shared.release();
            }
        }
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// What a checkout got.
pub(crate) enum Checkout<C> {
    /// An idle connection, and how long it sat idle.
    Idle(C, Duration),
    /// A place for a new connection: open it and keep the permit with it.
    Open(Permit<C>),
}

/// Every connection stayed busy until the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy {
    /// How long the caller waited.
    pub(crate) waited: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: Send + 'static> Pool<C> {
    /// A pool of at most `max_open` connections (at least 1), keeping at most `max_idle`
    /// idle, each closed after `idle_timeout` idle (zero: never).
    pub(crate) fn new(max_open: usize, max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    idle: Vec::new(),
                    open: 0,
                    waiting: 0,
                }),
                freed: Condvar::new(),
                closer: Mutex::new(None),
            }),
            max_open: max_open.max(1),
            max_idle,
            idle_timeout,
        }
    }

    /// An idle connection, or a place to open one; waits up to `wait` for one to come free
    /// when `max_open` are open.
    pub(crate) fn checkout(&self, wait: Duration) -> Result<Checkout<C>, Busy> {
        let mut started: Option<Instant> = None;
        let mut state = lock(&self.shared.state);
        loop {
            let expired = self.expired(&mut state);
            if !expired.is_empty() {
                // Closing them frees their places (and takes the lock): not under it.
                drop(state);
                drop(expired);
                state = lock(&self.shared.state);
                continue;
            }
            if let Some((conn, since)) = state.idle.pop() {
                return Ok(Checkout::Idle(conn, since.elapsed()));
            }
            if state.open < self.max_open {
                state.open += 1;
                drop(state);
                self.start_closer();
                return Ok(Checkout::Open(Permit {
                    shared: Arc::downgrade(&self.shared),
                    socket: None,
                }));
            }
            let now = Instant::now();
            let since = *started.get_or_insert(now);
            let waited = now.saturating_duration_since(since);
            let Some(left) = wait.checked_sub(waited).filter(|l| !l.is_zero()) else {
                return Err(Busy { waited });
            };
            state.waiting += 1;
            let (guard, _) = self
                .shared
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner());
            state = guard;
            state.waiting = state.waiting.saturating_sub(1);
        }
    }

    /// Starts the closer thread, once (without it, places are freed as soon as their
    /// connections are dropped).
    fn start_closer(&self) {
        let mut closer = lock(&self.shared.closer);
        if closer.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::downgrade(&self.shared);
        let started = std::thread::Builder::new()
            .name("newcache-close".into())
            .spawn(move || crate::pool::closer(rx, shared));
        if started.is_ok() {
            *closer = Some(tx);
        }
    }

    /// Takes back a connection whose replies were all read: kept idle (while fewer than
    /// `max_idle` are, or a caller waits for it), else closed.
    pub(crate) fn checkin(&self, conn: C) {
        let mut state = lock(&self.shared.state);
        if state.idle.len() < self.max_idle || state.waiting > 0 {
            state.idle.push((conn, Instant::now()));
            if state.waiting > 0 {
                self.shared.freed.notify_one();
            }
            return;
        }
        drop(state);
        drop(conn);
    }

    /// Closes every idle connection now (the transport's `close`); connections in use stay
    /// with their callers and are kept or closed when they come back.
    pub(crate) fn close_idle(&self) {
        let idle = std::mem::take(&mut lock(&self.shared.state).idle);
        // Dropped once the lock is released: each closes its socket.
        drop(idle);
    }

    /// Closes the connections idle for longer than the idle timeout.
    pub(crate) fn close_expired(&self) {
        let expired = self.expired(&mut lock(&self.shared.state));
        drop(expired);
    }

    /// Takes the connections idle for longer than the idle timeout out of the pool (to be
    /// dropped once the lock is released).
    fn expired(&self, state: &mut State<C>) -> Vec<(C, Instant)> {
        if self.idle_timeout.is_zero() {
            return Vec::new();
        }
        let Some((_, oldest)) = state.idle.first() else {
            return Vec::new();
        };
        if oldest.elapsed() < self.idle_timeout {
            return Vec::new();
        }
        let stale = state
            .idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= self.idle_timeout)
            .count();
        state.idle.drain(..stale).collect()
    }

    /// Connections open now, and how many of them are idle.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = lock(&self.shared.state);
        (state.open, state.idle.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in connection: its number and its permit.
    struct Fake(#[allow(dead_code)] u32, #[allow(dead_code)] Permit<Fake>);

    fn open(pool: &Pool<Fake>, n: u32) -> Fake {
        match pool.checkout(Duration::ZERO) {
            Ok(Checkout::Open(p)) => Fake(n, p),
            Ok(Checkout::Idle(c, _)) => c,
            Err(e) => panic!("no connection: {e:?}"),
        }
    }

    #[test]
    fn at_most_max_open_and_a_dropped_connection_frees_its_place() {
        let pool = Pool::new(2, 8, Duration::ZERO);
        let a = open(&pool, 1);
        let b = open(&pool, 2);
        assert_eq!(pool.counts(), (2, 0));
        let started = Instant::now();
        let busy = pool.checkout(Duration::from_millis(50)).err().unwrap();
        assert!(busy.waited >= Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(a);
        assert_eq!(pool.counts(), (1, 0));
        let c = open(&pool, 3);
        pool.checkin(b);
        pool.checkin(c);
        assert_eq!(pool.counts(), (2, 2));
    }

    #[test]
    fn a_waiting_caller_gets_the_connection_checked_in() {
        let pool = Arc::new(Pool::new(1, 0, Duration::ZERO));
        let held = open(&pool, 1);
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || match pool.checkout(Duration::from_secs(5)) {
                Ok(Checkout::Idle(Fake(n, _), _)) => n,
                Ok(Checkout::Open(_)) => 0,
                Err(e) => panic!("{e:?}"),
            })
        };
        while lock(&pool.shared.state).waiting == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // max_idle is 0, but a caller waits: it is handed the connection.
        pool.checkin(held);
        assert_eq!(waiter.join().unwrap(), 1);
    }

    #[test]
    fn idle_connections_close_after_the_idle_timeout() {
        // Long enough that a stalled test thread does not expire the second one early.
        let pool = Pool::new(4, 4, Duration::from_millis(300));
        let a = open(&pool, 1);
        let b = open(&pool, 2);
        pool.checkin(a);
        std::thread::sleep(Duration::from_millis(350));
        pool.checkin(b);
        assert_eq!(pool.counts(), (2, 2));
        pool.close_expired();
        assert_eq!(pool.counts(), (1, 1), "only the one idle for 350 ms");
        std::thread::sleep(Duration::from_millis(350));
        assert!(pool
            .checkout(Duration::ZERO)
            .is_ok_and(|c| matches!(c, Checkout::Open(_))));
    }
}
