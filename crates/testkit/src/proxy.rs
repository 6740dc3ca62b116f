//! A fault-injecting TCP proxy between a client and one server, for tests that a client
//! never takes a reply for another request's: it relays what the client sends unchanged and
//! tampers with what the server sends back, chunk by chunk (a chunk is what one read from
//! the server returned: one reply, or several pipelined ones).
//!
//! Each chunk, independently, with the probabilities of [`Faults`] (per million):
//! - **duplicated in the same write** (the chunk twice in one `write`);
//! - **partly duplicated** (the chunk cut at a random byte and its first part sent twice:
//!   a segment a middlebox sent again, which ends mid-reply, often inside a value);
//! - **duplicated later** (the chunk again, [`Faults::later`] after it, from another thread,
//!   whatever the connection is doing then);
//! - **its line's first part carried to the next** (cut short of its first line end and
//!   sent again just before the next chunk: a duplicated part of one reply arriving while
//!   the next request is in flight, which runs into that reply's first line);
//! - **preceded by an older reply** (one of the last 64 chunks of this connection, sent
//!   again just before it);
//! - **preceded by garbage** (random bytes, some of them line ends);
//! - **preceded by a stray reply** (a whole reply line of the classic protocol, `END`,
//!   `STORED`, a number, an empty `VALUE` block, that no request asked for);
//! - **truncated** (a prefix of it, then both directions closed);
//! - **delayed** (held for a random time up to [`Faults::delay`]);
//! - **trickled** (written one byte per `write`, with `TCP_NODELAY`);
//! - **spliced** (a chunk ending in a value reply and one more reply: the value's tail cut
//!   by exactly that reply's length, so the value's data block takes the reply in and ends
//!   where the chunk ends, as a middlebox that lost bytes could make it).
//!
//! And every chunk, when [`Faults::pace()`] is set, at most that many bytes a second (a slow
//! link: a reply that keeps coming, steadily).
//!
//! ```no_run
//! use newcache_testkit::{Memcached, proxy::{FaultProxy, Faults}};
//! let server = Memcached::start();
//! let proxy = FaultProxy::start(server.socket_addr(), Faults::none().duplicate_later(10_000));
//! // Point the client at proxy.addr(); read what was done with proxy.counts().
//! ```

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to the server's replies: each fault's chance per chunk, per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// The chunk twice, in the same write.
    pub duplicate_now: u32,
    /// The chunk's first part (cut at a random byte) twice, then the rest.
    pub duplicate_part: u32,
    /// The chunk's first line, cut short of its end, sent again before the next chunk.
    pub carry_part: u32,
    /// The chunk again, [`Faults::later`] after it.
    pub duplicate_later: u32,
    /// How long after the original a late duplicate is sent (30 ms by default).
    pub later: Duration,
    /// An older chunk of the same connection sent again just before this one.
    pub replay_old: u32,
    /// Random bytes just before the chunk.
    pub garbage: u32,
    /// A whole classic reply (`END`, `STORED`, a number...) just before the chunk.
    pub stray_line: u32,
    /// Only a prefix of the chunk, then the connection closed.
    pub truncate: u32,
    /// The chunk held back for a random time below [`Faults::delay`].
    pub delayed: u32,
    /// The longest a delayed chunk is held.
    pub delay: Duration,
    /// The chunk written one byte at a time.
    pub trickle: u32,
    /// The pause between a trickled chunk's bytes (none by default).
    pub trickle_gap: Duration,
    /// A chunk that ends in a value reply (`VA`, `VALUE`) and one more reply: the value's
    /// tail cut by that reply's length, the reply inside its data block.
    pub splice_next: u32,
    /// Every chunk written at most this many bytes a second, in pieces of 8 KB (0: as fast
    /// as the client reads).
    pub pace: u64,
    /// Seeds the proxy's random choices (each connection gets its own stream).
    pub seed: u64,
}

impl Faults {
    /// No fault at all: a plain relay.
    pub fn none() -> Faults {
        Faults {
            duplicate_now: 0,
            duplicate_part: 0,
            carry_part: 0,
            duplicate_later: 0,
            later: Duration::from_millis(30),
            replay_old: 0,
            garbage: 0,
            stray_line: 0,
            truncate: 0,
            delayed: 0,
            delay: Duration::from_millis(100),
            trickle: 0,
            trickle_gap: Duration::ZERO,
            splice_next: 0,
            pace: 0,
            seed: 0x5eed_f00d_cafe_d00d,
        }
    }

    /// With duplicates in the same write, `per_million` of the chunks.
    pub fn duplicate_now(self, per_million: u32) -> Faults {
        Faults {
            duplicate_now: per_million,
            ..self
        }
    }

    /// With `per_million` of the chunks partly duplicated: cut at a random byte, the first
    /// part twice, then the rest (what the client reads as the first part, then bytes it
    /// has read already, mid-reply).
    pub fn duplicate_part(self, per_million: u32) -> Faults {
        Faults {
            duplicate_part: per_million,
            ..self
        }
    }

    /// With `per_million` of the chunks' first lines cut short of their end and sent again
    /// right before the next chunk (the two run into one line).
    pub fn carry_part(self, per_million: u32) -> Faults {
        Faults {
            carry_part: per_million,
            ..self
        }
    }

    /// With late duplicates, `per_million` of the chunks.
    pub fn duplicate_later(self, per_million: u32) -> Faults {
        Faults {
            duplicate_later: per_million,
            ..self
        }
    }

    /// With older replies injected before `per_million` of the chunks.
    pub fn replay_old(self, per_million: u32) -> Faults {
        Faults {
            replay_old: per_million,
            ..self
        }
    }

    /// With garbage before `per_million` of the chunks.
    pub fn garbage(self, per_million: u32) -> Faults {
        Faults {
            garbage: per_million,
            ..self
        }
    }

    /// With a whole classic reply line that nobody asked for before `per_million` of the
    /// chunks.
    pub fn stray_line(self, per_million: u32) -> Faults {
        Faults {
            stray_line: per_million,
            ..self
        }
    }

    /// With `per_million` of the chunks cut short and their connection closed.
    pub fn truncate(self, per_million: u32) -> Faults {
        Faults {
            truncate: per_million,
            ..self
        }
    }

    /// With `per_million` of the chunks held back for up to `delay`.
    pub fn delayed(self, per_million: u32, delay: Duration) -> Faults {
        Faults {
            delayed: per_million,
            delay,
            ..self
        }
    }

    /// With `per_million` of the chunks written one byte at a time.
    pub fn trickle(self, per_million: u32) -> Faults {
        Faults {
            trickle: per_million,
            ..self
        }
    }

    /// With `per_million` of the chunks written one byte at a time, `gap` apart: a reply
    /// that keeps arriving and never comes whole in time.
    pub fn trickle_slowly(self, per_million: u32, gap: Duration) -> Faults {
        Faults {
            trickle: per_million,
            trickle_gap: gap,
            ..self
        }
    }

    /// Every chunk written at `bytes_per_second`, 8 KB at a time: a reply that arrives
    /// steadily but slowly, as over a slow link.
    pub fn pace(self, bytes_per_second: u64) -> Faults {
        Faults {
            pace: bytes_per_second,
            ..self
        }
    }

    /// With `per_million` of the chunks that end in a value reply and one more reply
    /// spliced: the value cut short by that reply's length, so it takes the reply in.
    pub fn splice_next(self, per_million: u32) -> Faults {
        Faults {
            splice_next: per_million,
            ..self
        }
    }

    /// With this seed for the random choices.
    pub fn seed(self, seed: u64) -> Faults {
        Faults { seed, ..self }
    }
}

/// How many times the proxy did each thing, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Connections accepted.
    pub connections: u64,
    /// The most connections relayed at the same time.
    pub max_open: u64,
    /// Chunks relayed from the server.
    pub chunks: u64,
    /// Chunks duplicated in the same write.
    pub duplicated_now: u64,
    /// Chunks partly duplicated.
    pub duplicated_part: u64,
    /// First parts of chunks' first lines sent again before the next chunk.
    pub carried_part: u64,
    /// Late duplicates sent, counted just before their write (a client that has read one
    /// finds it counted).
    pub duplicated_later: u64,
    /// Late duplicates whose write has returned: the bytes are in the kernel, on their way
    /// to the client's socket (a test that needs one to have arrived waits on this).
    pub duplicated_later_written: u64,
    /// Older chunks sent again.
    pub replayed: u64,
    /// Garbage injections.
    pub garbage: u64,
    /// Stray reply lines injected.
    pub stray_lines: u64,
    /// Chunks truncated (and their connections closed).
    pub truncated: u64,
    /// Chunks delayed.
    pub delayed: u64,
    /// Chunks trickled one byte at a time.
    pub trickled: u64,
    /// Value replies cut by the length of the reply after them.
    pub spliced: u64,
    /// Reads of what clients sent (each at most one write of the client's, or less when
    /// the kernel splits it): a client that writes many requests with one write shows
    /// fewer reads than requests.
    pub client_reads: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    chunks: AtomicU64,
    duplicated_now: AtomicU64,
    duplicated_part: AtomicU64,
    carried_part: AtomicU64,
    duplicated_later: AtomicU64,
    duplicated_later_written: AtomicU64,
    replayed: AtomicU64,
    garbage: AtomicU64,
    stray_lines: AtomicU64,
    truncated: AtomicU64,
    delayed: AtomicU64,
    trickled: AtomicU64,
    spliced: AtomicU64,
    client_reads: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> FaultCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FaultCounts {
            connections: get(&self.connections),
            max_open: get(&self.max_open),
            chunks: get(&self.chunks),
            duplicated_now: get(&self.duplicated_now),
            duplicated_part: get(&self.duplicated_part),
            carried_part: get(&self.carried_part),
            duplicated_later: get(&self.duplicated_later),
            duplicated_later_written: get(&self.duplicated_later_written),
            replayed: get(&self.replayed),
            garbage: get(&self.garbage),
            stray_lines: get(&self.stray_lines),
            truncated: get(&self.truncated),
            delayed: get(&self.delayed),
            trickled: get(&self.trickled),
            spliced: get(&self.spliced),
            client_reads: get(&self.client_reads),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running fault-injecting proxy on a free loopback port. Dropping it stops accepting new
/// connections and closes the ones it relays.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    requests: Arc<Requests>,
}

/// What the proxy does to chosen requests ([`FaultProxy::cut_reply_to`],
/// [`FaultProxy::hold_request`]), shared by every connection.
#[derive(Debug, Default)]
struct Requests {
    /// The next request holding these bytes has its reply lost.
    cut: Mutex<Option<Vec<u8>>>,
    /// The next request holding the first bytes is held back until a request holding the
    /// second has been answered.
    hold: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// The request held back, and the connection to the server it goes on.
    held: Mutex<Option<(TcpStream, Vec<u8>)>>,
    /// The next request holding the first bytes has the second relayed right after its
    /// reply.
    junk: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

fn holds(bytes: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && bytes.windows(needle.len()).any(|w| w == needle)
}

/// Where the line holding `needle` begins in `bytes` (past the last line end before it):
/// the requests before it, read together with it, are not part of it.
fn line_of(bytes: &[u8], needle: &[u8]) -> usize {
    let Some(at) = bytes.windows(needle.len().max(1)).position(|w| w == needle) else {
        return 0;
    };
    bytes
        .get(..at)
        .and_then(|before| before.windows(2).rposition(|w| w == b"\r\n"))
        .map_or(0, |end| end + 2)
}

impl FaultProxy {
    /// Relays every connection made to it to `upstream`, tampering with the replies as
    /// `faults` says.
    pub fn start(upstream: SocketAddr, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind the fault proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the fault proxy's address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("a non-blocking listener: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(Mutex::new(faults));
        let counters = Arc::new(Counters::default());
        let open = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Requests::default());
        let (stop2, faults2, counters2, open2, requests2) = (
            stop.clone(),
            faults.clone(),
            counters.clone(),
            open.clone(),
            requests.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        n += 1;
                        bump(&counters2.connections);
                        let open = counters2.open.fetch_add(1, Ordering::Relaxed) + 1;
                        counters2.max_open.fetch_max(open, Ordering::Relaxed);
                        let _ = client.set_nonblocking(false);
                        let Ok(server) =
                            TcpStream::connect_timeout(&upstream, Duration::from_secs(2))
                        else {
                            counters2.open.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        };
                        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                            if let Ok(mut open) = open2.lock() {
                                open.push(c);
                                open.push(s);
                            }
                        }
                        let faults = faults2.clone();
                        let counters = counters2.clone();
                        let stop = stop2.clone();
                        let requests = requests2.clone();
                        std::thread::spawn(move || {
                            relay(client, server, faults, &counters, stop, n, requests);
                            counters.open.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        FaultProxy {
            addr,
            stop,
            faults,
            counters,
            open,
            requests,
        }
    }

    /// Loses the reply to the next request (on any connection) whose bytes hold `needle`:
    /// the request reaches the server, which runs it, and its connection is closed before
    /// the reply is relayed, as a connection cut just then would be.
    pub fn cut_reply_to(&self, needle: &[u8]) {
        if let Ok(mut cut) = self.requests.cut.lock() {
            *cut = Some(needle.to_vec());
        }
    }

    /// Holds back the next request (on any connection) whose bytes hold `needle` until a
    /// request holding `until` has been answered by the server, then sends it, and relays
    /// that answer 50 ms later: a request delayed on its way (in a busy server thread, a
    /// retransmitted segment) that runs after one sent later on another connection.
    pub fn hold_request(&self, needle: &[u8], until: &[u8]) {
        if let Ok(mut hold) = self.requests.hold.lock() {
            *hold = Some((needle.to_vec(), until.to_vec()));
        }
    }

    /// Relays `junk` right after the reply to the next request (on any connection) whose
    /// bytes hold `needle`, in the same write: bytes no request asked for, such as a
    /// middlebox's stray line, after a reply the server did send (the request ran).
    pub fn junk_after_reply_to(&self, needle: &[u8], junk: &[u8]) {
        if let Ok(mut next) = self.requests.junk.lock() {
            *next = Some((needle.to_vec(), junk.to_vec()));
        }
    }

    /// `127.0.0.1:PORT`, as a server list entry.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// What the proxy did so far.
    pub fn counts(&self) -> FaultCounts {
        self.counters.snapshot()
    }

    /// Changes the faults for every chunk from now on (open connections included).
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.faults.lock() {
            *f = faults;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(open) = self.open.lock() {
            for s in open.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// xorshift64*: the proxy's random choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with `per_million` chances in a million.
    fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.next() % 1_000_000 < u64::from(per_million)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }
}

/// Relays one connection: client to server as is, server to client through the faults.
fn relay(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Mutex<Faults>>,
    counters: &Arc<Counters>,
    stop: Arc<AtomicBool>,
    n: u64,
    requests: Arc<Requests>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Set when this connection sent the request whose reply is to be lost
    // ([`FaultProxy::cut_reply_to`]).
    let cut_next = Arc::new(AtomicBool::new(false));
    // Set when this connection sent the request a held one waits for
    // ([`FaultProxy::hold_request`]).
    let release_next = Arc::new(AtomicBool::new(false));
    // The bytes relayed after this connection's next reply
    // ([`FaultProxy::junk_after_reply_to`]).
    let junk_next: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let junking = junk_next.clone();
    // Client to server, unchanged.
    let reads = counters.clone();
    let cutting = cut_next.clone();
    let releasing = release_next.clone();
    let tamper = requests.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // This connection's request is the one held back: its way to the server stays
        // open for it when the client closes.
        let mut parked = false;
        loop {
            match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    bump(&reads.client_reads);
                    let sent = buf.get(..k).unwrap_or_default();
                    if let Ok(mut needle) = tamper.cut.lock() {
                        if needle.as_deref().is_some_and(|n| holds(sent, n)) {
                            *needle = None;
                            cutting.store(true, Ordering::SeqCst);
                        }
                    }
                    if let Ok(mut junk) = tamper.junk.lock() {
                        if junk.as_ref().is_some_and(|(n, _)| holds(sent, n)) {
                            if let (Some((_, bytes)), Ok(mut next)) = (junk.take(), junking.lock())
                            {
                                *next = Some(bytes);
                            }
                        }
                    }
                    if let (Ok(mut hold), Ok(mut held)) = (tamper.hold.lock(), tamper.held.lock()) {
                        match (hold.as_ref(), held.is_some()) {
                            (Some((needle, _)), false) if holds(sent, needle) => {
                                // Only that request is held: those read with it before it
                                // (a client's requests written moments apart, read
                                // together under load) go on. Holding the whole read held
                                // a request the test awaited the reply of.
                                let (before, request) = sent.split_at(line_of(sent, needle));
                                if to_server.write_all(before).is_err() {
                                    break;
                                }
                                if let Ok(stream) = to_server.try_clone() {
                                    *held = Some((stream, request.to_vec()));
                                    parked = true;
                                }
                                continue;
                            }
                            (Some((_, until)), true) if holds(sent, until) => {
                                *hold = None;
                                releasing.store(true, Ordering::SeqCst);
                            }
                            _ => {}
                        }
                    }
                    if to_server
                        .write_all(buf.get(..k).unwrap_or_default())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let still_held = parked && tamper.held.lock().is_ok_and(|h| h.is_some());
        if !still_held {
            let _ = to_server.shutdown(Shutdown::Write);
        }
    });
    // Writes to the client come from this thread and the late-duplicate thread: one at a
    // time.
    let to_client = Arc::new(Mutex::new(client));
    let (late_tx, late_rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    {
        let to_client = to_client.clone();
        let counters = counters.clone();
        std::thread::spawn(move || {
            while let Ok((at, bytes)) = late_rx.recv() {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let Ok(mut c) = to_client.lock() else { return };
                // Counted before the write, so a client that has read the duplicate finds it
                // counted.
                bump(&counters.duplicated_later);
                if c.write_all(&bytes).is_err() {
                    return;
                }
                bump(&counters.duplicated_later_written);
            }
        });
    }
    let mut server = server;
    let seed = faults.lock().map(|f| f.seed).unwrap_or(1);
    let mut rng = Rng::new(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut history: VecDeque<Vec<u8>> = VecDeque::with_capacity(64);
    let mut carried: Option<Vec<u8>> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let close = |to_client: &Mutex<TcpStream>, server: &TcpStream| {
        if let Ok(c) = to_client.lock() {
            let _ = c.shutdown(Shutdown::Both);
        }
        let _ = server.shutdown(Shutdown::Both);
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            close(&to_client, &server);
            return;
        }
        let chunk = match server.read(&mut buf) {
            Ok(0) | Err(_) => {
                close(&to_client, &server);
                return;
            }
            Ok(k) => buf.get(..k).unwrap_or_default().to_vec(),
        };
        bump(&counters.chunks);
        if cut_next.load(Ordering::SeqCst) {
            close(&to_client, &server);
            return;
        }
        let chunk = match junk_next.lock().ok().and_then(|mut next| next.take()) {
            Some(junk) => [chunk, junk].concat(),
            None => chunk,
        };
        if release_next.swap(false, Ordering::SeqCst) {
            let held = requests.held.lock().ok().and_then(|mut h| h.take());
            if let Some((mut stream, request)) = held {
                let _ = stream.write_all(&request);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let f = faults.lock().map(|f| *f).unwrap_or_else(|_| Faults::none());
        if rng.chance(f.delayed) {
            bump(&counters.delayed);
            let max = u64::try_from(f.delay.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            std::thread::sleep(Duration::from_micros(rng.next() % max));
        }
        let chunk = if rng.chance(f.splice_next) {
            match spliced(&chunk) {
                Some(cut) => {
                    bump(&counters.spliced);
                    cut
                }
                None => chunk,
            }
        } else {
            chunk
        };
        let mut out: Vec<u8> = Vec::with_capacity(chunk.len() * 2);
        if rng.chance(f.garbage) {
            bump(&counters.garbage);
            let len = 1 + rng.below(40);
            for _ in 0..len {
                let b = match rng.below(8) {
                    0 => b'\r',
                    1 => b'\n',
                    2 => b' ',
                    _ => (rng.next() & 0xff) as u8,
                };
                out.push(b);
            }
        }
        if rng.chance(f.stray_line) {
            bump(&counters.stray_lines);
            const LINES: [&[u8]; 5] = [
                b"END\r\n",
                b"STORED\r\n",
                b"NOT_FOUND\r\n",
                b"42\r\n",
                b"VALUE stray 0 2\r\nhi\r\nEND\r\n",
            ];
            out.extend_from_slice(
                LINES
                    .get(rng.below(LINES.len()))
                    .copied()
                    .unwrap_or_default(),
            );
        }
        if !history.is_empty() && rng.chance(f.replay_old) {
            bump(&counters.replayed);
            let at = rng.below(history.len());
            if let Some(old) = history.get(at) {
                out.extend_from_slice(old);
            }
        }
        if let Some(part) = carried.take() {
            bump(&counters.carried_part);
            out.extend_from_slice(&part);
        }
        if chunk.len() > 1 && rng.chance(f.duplicate_part) {
            bump(&counters.duplicated_part);
            let cut = 1 + rng.below(chunk.len() - 1);
            out.extend_from_slice(chunk.get(..cut).unwrap_or_default());
        }
        out.extend_from_slice(&chunk);
        if rng.chance(f.duplicate_now) {
            bump(&counters.duplicated_now);
            out.extend_from_slice(&chunk);
        }
        if rng.chance(f.duplicate_later) {
            let _ = late_tx.send((Instant::now() + f.later, chunk.clone()));
        }
        if rng.chance(f.carry_part) {
            let line = chunk
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or(chunk.len());
            if line > 0 {
                let cut = 1 + rng.below(line);
                carried = Some(chunk.get(..cut).unwrap_or_default().to_vec());
            }
        }
        if history.len() == 64 {
            history.pop_front();
        }
        history.push_back(chunk);
        let truncate = rng.chance(f.truncate);
        if truncate {
            bump(&counters.truncated);
            let keep = rng.below(out.len().max(1));
            out.truncate(keep);
        }
        let trickle = rng.chance(f.trickle);
        let written = match to_client.lock() {
            Ok(mut c) if trickle => {
                bump(&counters.trickled);
                out.iter().all(|b| {
                    if !f.trickle_gap.is_zero() {
                        std::thread::sleep(f.trickle_gap);
                    }
                    c.write_all(std::slice::from_ref(b)).is_ok()
                })
            }
            Ok(mut c) if f.pace > 0 => out.chunks(8 * 1024).all(|piece| {
                let micros = (piece.len() as u64).saturating_mul(1_000_000) / f.pace;
                std::thread::sleep(Duration::from_micros(micros));
                c.write_all(piece).is_ok()
            }),
            Ok(mut c) => c.write_all(&out).is_ok(),
            Err(_) => false,
        };
        if !written || truncate {
            close(&to_client, &server);
            return;
        }
    }
}

/// The replies of `chunk`, each whole (a line, and a value reply's data block): `None`
/// when the chunk does not end where a reply ends.
fn replies(chunk: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < chunk.len() {
        let rest = chunk.get(at..)?;
        let line_end = rest.windows(2).position(|w| w == b"\r\n")? + 2;
        let line = rest.get(..line_end - 2)?;
        let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let data = match words.as_slice() {
            [b"VA", len, ..] | [b"VALUE", _, _, len, ..] => {
                std::str::from_utf8(len).ok()?.parse::<usize>().ok()? + 2
            }
            _ => 0,
        };
        let end = at + line_end + data;
        if end > chunk.len() {
            return None;
        }
        out.push(at..end);
        at = end;
    }
    Some(out)
}

/// `chunk` with its next-to-last reply, a value reply, cut by the last reply's length (see
/// [`Faults::splice_next`]); `None` when the chunk does not end so, or the value is too
/// short for it.
fn spliced(chunk: &[u8]) -> Option<Vec<u8>> {
    let replies = replies(chunk)?;
    let [.., value, last] = replies.as_slice() else {
        return None;
    };
    let head = chunk.get(value.clone())?;
    let header = head.windows(2).position(|w| w == b"\r\n")? + 2;
    let is_value = head.starts_with(b"VA ") || head.starts_with(b"VALUE ");
    if !is_value || head.len() - header <= last.len() + 2 {
        return None;
    }
    let mut out = chunk.get(..value.end - last.len())?.to_vec();
    out.extend_from_slice(chunk.get(last.clone())?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_request_is_its_own_line_not_the_requests_read_before_it() {
        let read = b"mg midkey v O1\r\nmg slowkey v O2\r\n";
        assert_eq!(line_of(read, b"slowkey"), 16);
        assert_eq!(line_of(read, b"midkey"), 0);
        assert_eq!(line_of(b"mg slowkey v\r\n", b"slowkey"), 0);
    }

    #[test]
    fn a_value_and_the_reply_after_it_are_spliced_into_one_value() {
        let chunk = b"HD O1\r\nVA 10 O2\r\n0123456789\r\nHD O3\r\n";
        let cut = spliced(chunk).unwrap();
        // The value's ten bytes are now `01234HD O3`, ended by the reply's own line end.
        assert_eq!(cut, b"HD O1\r\nVA 10 O2\r\n01234HD O3\r\n".to_vec());
        assert_eq!(cut.len(), chunk.len() - 7);
        // Not a value before the last reply, or a value too short: left alone.
        assert_eq!(spliced(b"HD O1\r\nHD O2\r\n"), None);
        assert_eq!(spliced(b"VA 2 O2\r\nab\r\nHD O3\r\n"), None);
        assert_eq!(spliced(b"VA 10 O2\r\n0123"), None);
    }

    /// An echo server standing in for memcached: it answers each read with `REPLY <n>\r\n`.
    fn numbered_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let mut n = 0;
                    while let Ok(k) = s.read(&mut buf) {
                        if k == 0 {
                            return;
                        }
                        n += 1;
                        if s.write_all(format!("REPLY {n}\r\n").as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A client connection to the proxy; its reads wait up to 10 s, so a loaded machine
    /// slows these tests down but does not fail them.
    fn client(proxy: &FaultProxy) -> TcpStream {
        let c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    fn ask(s: &mut TcpStream) {
        s.write_all(b"x\r\n").unwrap();
    }

    /// The next `\r\n`-ended line, read a byte at a time so that nothing after it is taken.
    fn line(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !out.ends_with(b"\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1, "closed after {out:?}");
            out.push(b[0]);
        }
        out
    }

    /// Everything up to the proxy's close.
    fn until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn duplicates_now_and_later() {
        let upstream = numbered_server();
        let proxy = FaultProxy::start(upstream, Faults::none().duplicate_now(1_000_000));
        let mut c = client(&proxy);
        ask(&mut c);
        assert_eq!(line(&mut c), b"REPLY 1\r\n");
        assert_eq!(line(&mut c), b"REPLY 1\r\n");
        proxy.set_faults(Faults::none().duplicate_later(1_000_000));
        let asked = Instant::now();
        ask(&mut c);
        assert_eq!(line(&mut c), b"REPLY 2\r\n");
        assert_eq!(line(&mut c), b"REPLY 2\r\n");
        let late = asked.elapsed();
        assert!(
            late >= Faults::none().later,
            "the duplicate came after {late:?}"
        );
        proxy.set_faults(Faults::none());
        ask(&mut c);
        assert_eq!(line(&mut c), b"REPLY 3\r\n");
        let counts = proxy.counts();
        assert_eq!(
            (
                counts.duplicated_now,
                counts.duplicated_later,
                counts.connections
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn replays_truncates_and_trickles() {
        let upstream = numbered_server();
        let proxy = FaultProxy::start(upstream, Faults::none());
        let mut c = client(&proxy);
        ask(&mut c);
        assert_eq!(line(&mut c), b"REPLY 1\r\n");
        proxy.set_faults(Faults::none().replay_old(1_000_000).trickle(1_000_000));
        ask(&mut c);
        assert_eq!(line(&mut c), b"REPLY 1\r\n");
        assert_eq!(line(&mut c), b"REPLY 2\r\n");
        proxy.set_faults(Faults::none().truncate(1_000_000));
        ask(&mut c);
        let cut = until_closed(&mut c);
        assert!(b"REPLY 3\r\n".starts_with(&cut) && cut.len() < 9, "{cut:?}");
        let counts = proxy.counts();
        assert_eq!(
            (counts.replayed, counts.trickled, counts.truncated),
            (1, 1, 1)
        );
    }
}
