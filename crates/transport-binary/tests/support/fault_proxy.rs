//! A TCP relay between a client and one memcached that duplicates some of the server's
//! replies: the same bytes again in the same write, or again about 30 ms later, as a
//! misbehaving network middlebox or a retransmitting proxy would. Used by the reliability
//! tests: no reply may ever reach the wrong request.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the relay tampers with the server's replies.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// One chunk the server sent in this many is duplicated (0: none).
    pub one_in: u64,
    /// Duplicate in the same write (`true`), or alternate between the same write and a late
    /// copy (`false`).
    pub same_write_only: bool,
    /// How long after the original a late copy is sent.
    pub delay: Duration,
}

impl Faults {
    /// Every chunk duplicated about `delay` later (start the relay with `late_only`), or
    /// alternately in the same write and later.
    pub fn every_reply_late(delay: Duration) -> Faults {
        Faults {
            one_in: 1,
            same_write_only: false,
            delay,
        }
    }
}

/// A running relay; it stops accepting when dropped (open connections run until closed).
pub struct FaultProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    duplicated: Arc<AtomicU64>,
    late_sent: Arc<AtomicU64>,
    held: Held,
}

/// Late copies held back until [`FaultProxy::release_held`]: the client connection each
/// goes to, and the bytes.
type Held = Arc<Mutex<Vec<(Arc<Mutex<TcpStream>>, Vec<u8>)>>>;

impl FaultProxy {
    /// Relays every connection to `upstream`, tampering as `faults` says.
    pub fn start(upstream: SocketAddr, faults: Faults) -> FaultProxy {
        FaultProxy::start_with(upstream, faults, false)
    }

    /// As [`FaultProxy::start`]; with `late_only`, every duplicate is a late one.
    pub fn start_with(upstream: SocketAddr, faults: Faults, late_only: bool) -> FaultProxy {
        FaultProxy::start_inner(upstream, faults, late_only, false)
    }

    /// Every reply is copied, and the copies are held until [`FaultProxy::release_held`]
    /// sends them: a late reply exactly when a test wants it.
    pub fn holding_copies(upstream: SocketAddr) -> FaultProxy {
        let faults = Faults {
            one_in: 1,
            same_write_only: false,
            delay: Duration::ZERO,
        };
        FaultProxy::start_inner(upstream, faults, true, true)
    }

    fn start_inner(
        upstream: SocketAddr,
        faults: Faults,
        late_only: bool,
        hold: bool,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let duplicated = Arc::new(AtomicU64::new(0));
        let late_sent = Arc::new(AtomicU64::new(0));
        let held: Held = Arc::new(Mutex::new(Vec::new()));
        let (stop2, dup2, late2) = (stop.clone(), duplicated.clone(), late_sent.clone());
        let held2 = hold.then(|| held.clone());
        std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        let counters = (dup2.clone(), late2.clone());
                        let held = held2.clone();
                        std::thread::spawn(move || {
                            relay(client, upstream, faults, late_only, seed, counters, held)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FaultProxy {
            addr,
            stop,
            duplicated,
            late_sent,
            held,
        }
    }

    /// `127.0.0.1:PORT` of the relay, as a server list entry.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How many chunks were duplicated so far.
    pub fn duplicated(&self) -> u64 {
        self.duplicated.load(Ordering::Relaxed)
    }

    /// Sends every held copy to its client now, and returns how many there were.
    pub fn release_held(&self) -> usize {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        for (client, bytes) in &held {
            if let Ok(mut w) = client.lock() {
                let _ = w.write_all(bytes);
            }
        }
        held.len()
    }

    /// Waits (up to 5 s) until `n` late copies in all have been written to their clients
    /// (`n` = [`FaultProxy::duplicated`] with only late copies: all of them).
    pub fn wait_for_late_copies(&self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.late_sent.load(Ordering::Relaxed) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} late copies were sent",
                self.late_sent.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn next(state: &mut u64) -> u64 {
    // xorshift64*
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    faults: Faults,
    late_only: bool,
    seed: u64,
    (duplicated, late_sent): (Arc<AtomicU64>, Arc<AtomicU64>),
    held: Option<Held>,
) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // client -> server, untouched.
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    // server -> client, some chunks duplicated.
    let to_client = Arc::new(Mutex::new(client));
    let mut from_server = server;
    let mut rng = seed | 1;
    let mut buf = [0u8; 16384];
    let mut alternate = false;
    loop {
        let n = match from_server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf[..n].to_vec();
        let dup = faults.one_in > 0 && next(&mut rng) % faults.one_in == 0;
        let late = dup && (late_only || (!faults.same_write_only && alternate));
        if dup {
            alternate = !alternate;
            duplicated.fetch_add(1, Ordering::Relaxed);
        }
        let mut out = chunk.clone();
        if dup && !late {
            out.extend_from_slice(&chunk);
        }
        // A held copy is queued before the original goes out, so a client that has the
        // original finds its copy held.
        let late = match (late, &held) {
            (true, Some(held)) => {
                if let Ok(mut held) = held.lock() {
                    held.push((to_client.clone(), chunk.clone()));
                }
                false
            }
            _ => late,
        };
        let written = to_client
            .lock()
            .map(|mut w| w.write_all(&out).is_ok())
            .unwrap_or(false);
        if !written {
            // The client is gone (it closed the connection): no late copy will follow, and
            // `wait_for_late_copies` must not wait for it.
            if late {
                late_sent.fetch_add(1, Ordering::Relaxed);
            }
            break;
        }
        if late {
            let (w, delay, sent) = (to_client.clone(), faults.delay, late_sent.clone());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                if let Ok(mut w) = w.lock() {
                    let _ = w.write_all(&chunk);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
    let closed = to_client.lock().map(|w| w.shutdown(Shutdown::Both));
    drop(closed);
}
