//! The soak: `soak [--secs N] [--transport text|binary|async|all]`.
//!
//! Three memcached servers (testkit), one [`newcache::Cache`] over them with the default
//! settings, and 16 threads of mixed operations (get, get_many, set, add, delete, incr,
//! touch, set_many, get_or_set) over 3,200 keys, while the servers are stopped (SIGSTOP, then
//! SIGCONT), killed and restarted on a schedule spread over the run. `--secs N` (default 60)
//! is the whole run, shared by the phases one after the other: the text transport, then
//! with the `binary` feature built libmemcached's binary protocol (`binary=true`), then
//! the [`newcache::AsyncCache`] over the async text transport, its calls awaited from the
//! same 16 threads on one multi-thread runtime, so they share its auto-pipelined
//! connections ([`cache::Soaked`]). `--transport text`, `binary` or `async` runs one of
//! them for all of it.
//!
//! Every value is a string `<key>|<version>|<padding>|<checksum>`: it names its own key and
//! version and carries an FNV-1a checksum of the rest, so a wrong value is caught whatever
//! comes back (another key's value, a torn one, one of another type). Each thread writes only
//! its own 200 keys and keeps the set of versions each may hold: a failed write may or may not
//! have run, and a write that timed out against a stopped server runs when it is continued,
//! possibly after later writes, so its version stays possible for [`FLOAT`]; a restarted
//! server comes back empty, so a miss is always allowed. Reads cover other threads' keys too
//! (checked for key, checksum and the writer's version range). Each thread's counter must only
//! go up (a restart loses it; it is re-created above the last value seen).
//!
//! Prints operations, wrong values, errors by kind, the longest call (and per operation),
//! and VmRSS after the warm-up and at the end; exits 1 on any wrong value, on memory growth
//! over [`RSS_GROWTH_LIMIT_KB`], or on a call longer than [`CALL_LIMIT`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use newcache::{AsyncCache, Cache, SetOptions, Ttl};
use newcache_testkit::Memcached;
use newcache_tests::checked::{parse_value, value_of, Rng};

mod cache;
use cache::Soaked;

const SERVERS: usize = 3;
const THREADS: usize = 16;
const KEYS_PER_THREAD: usize = 200;
/// Values live 10 minutes: no soft expiry (so no herd refresh) falls inside a run.
const TTL: Ttl = Ttl::Seconds(600);

/// How long a failed write's effect stays possible. A write that timed out against a stopped
/// server sits in that server's socket buffer and runs when the server is continued (the
/// longest stop here is [`PAUSE`]); one against a killed server never runs.
const FLOAT: Duration = Duration::from_secs(5);

/// How long a server stays stopped: over twice the default read timeout (500 ms), so calls
/// to it time out rather than just wait.
const PAUSE: Duration = Duration::from_millis(1200);
/// How long a killed server stays down before it is restarted.
const DOWN: Duration = Duration::from_millis(800);

/// The longest a call may take. Default timeouts: connect 250 ms, write 500 ms, read 500 ms,
/// and a wait for a pooled connection capped at the read timeout (500 ms): one request to a
/// stopped server fails within 1.75 s. `get_or_set` is the longest path: when a lease `add`
/// timed out against a stopped server and ran after it was continued, nobody deletes the
/// lease key, and the next `get_or_set` of that key waits (by design, 20 ms polls) until the
/// lease expires: `lease_wait` (3 s) stored as whole seconds and one more, 4 s (memcached's
/// whole-second clock ends an item up to a second before its exptime, never after).
/// 4 s + one failing request (1.75 s) = 5.75 s; 6 s with scheduling
/// slack (16 workers on 2 cores). Every other operation is held to [`OTHER_CALL_LIMIT`].
const CALL_LIMIT: Duration = Duration::from_secs(6);
/// The longest a call other than `get_or_set` may take: `touch` is a read then a CAS store,
/// two requests; two failing requests (2 x 1.75 s) = 3.5 s, 4 s with slack.
const OTHER_CALL_LIMIT: Duration = Duration::from_secs(4);

/// How much VmRSS may grow between the end of the warm-up and the end of the run: 20 MiB.
/// The working set is fixed after the warm-up (16 threads, their models of 200 keys, pools of
/// connections with their buffers, values under 10 KB), so allocator noise stays a few MB;
/// a leak of one small buffer (~64 bytes) per operation over a 60 s run (~10^6 operations at
/// what 2 cores do) is well over 20 MiB. An absolute bound, not a percentage: the start is
/// small (~10 MB), so 50% would be tighter than the noise of restarting servers' connections.
const RSS_GROWTH_LIMIT_KB: u64 = 20 * 1024;

/// `<key>|<version>|<padding>|<checksum>` ([`value_of`]), as the text value stored.
fn text_value(key: &str, version: u64, pad: usize) -> String {
    // Keys and padding are ASCII: the bytes are always text.
    String::from_utf8_lossy(&value_of(key.as_bytes(), version, pad)).into_owned()
}

fn key_of(thread: usize, i: usize) -> String {
    format!("soak:{thread}:{i}")
}

/// Versions carry their writer: thread `t` writes `t << 40 | n`.
fn first_version(thread: usize) -> u64 {
    (thread as u64) << 40
}

/// What a thread (and then the run) saw.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    wrong: u64,
    errors: BTreeMap<String, u64>,
    examples: Vec<String>,
    /// The longest call per operation.
    longest: BTreeMap<&'static str, Duration>,
}

impl Tally {
    fn wrong(&mut self, what: String) {
        self.wrong += 1;
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }

    fn error(&mut self, e: &newcache::Error) {
        *self.errors.entry(error_kind(e)).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.wrong += other.wrong;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for e in other.examples {
            if self.examples.len() < 10 {
                self.examples.push(e);
            }
        }
        for (op, d) in other.longest {
            let l = self.longest.entry(op).or_default();
            *l = (*l).max(d);
        }
    }

    fn longest(&self) -> (&'static str, Duration) {
        self.longest
            .iter()
            .max_by_key(|(_, d)| **d)
            .map_or(("none", Duration::ZERO), |(op, d)| (*op, *d))
    }
}

/// The variant's name: `Timeout`, `Transport::ServerDown`, ...
fn error_kind(e: &newcache::Error) -> String {
    fn head(debug: String) -> String {
        let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
        debug[..end].to_string()
    }
    match e {
        newcache::Error::Transport(t) => format!("Transport::{}", head(format!("{t:?}"))),
        other => head(format!("{other:?}")),
    }
}

/// False when the request surely never reached a server: it was refused before any I/O
/// (the server is marked down, or no connection could be made).
fn sent(e: &newcache::Error) -> bool {
    use newcache_transport::Error as T;
    !matches!(
        e,
        newcache::Error::Transport(T::ServerDown { .. } | T::Connect { .. })
    )
}

/// One thread's keys and what each may hold.
struct Worker {
    thread: usize,
    cache: Soaked,
    keys: Vec<String>,
    /// Per key, the versions it may hold (a miss is always possible).
    possible: Vec<BTreeSet<u64>>,
    /// Per key, versions of failed writes, which may still land, and when they failed.
    floating: Vec<Vec<(u64, Instant)>>,
    counter: String,
    /// The counter's last value seen.
    counter_at: u64,
    next_version: u64,
    rng: Rng,
    tally: Tally,
}

impl Worker {
    fn new(thread: usize, cache: Soaked) -> Worker {
        Worker {
            thread,
            cache,
            keys: (0..KEYS_PER_THREAD).map(|i| key_of(thread, i)).collect(),
            possible: vec![BTreeSet::new(); KEYS_PER_THREAD],
            floating: vec![Vec::new(); KEYS_PER_THREAD],
            counter: format!("soak:{thread}:counter"),
            counter_at: (thread as u64 + 1) * 1_000_000_000_000,
            next_version: first_version(thread),
            rng: Rng(
                0x9E37_79B9_7F4A_7C15 ^ (thread as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
            ),
            tally: Tally::default(),
        }
    }

    fn fresh(&mut self, k: usize) -> (u64, String) {
        self.next_version += 1;
        let pad = match self.rng.below(40) {
            0 => 2_000 + self.rng.below(6_000) as usize,
            _ => self.rng.below(200) as usize,
        };
        (
            self.next_version,
            text_value(&self.keys[k], self.next_version, pad),
        )
    }

    /// Times one call.
    fn timed<R>(&mut self, op: &'static str, f: impl FnOnce(&Soaked) -> R) -> R {
        let started = Instant::now();
        let r = f(&self.cache);
        let took = started.elapsed();
        let l = self.tally.longest.entry(op).or_default();
        *l = (*l).max(took);
        self.tally.ops += 1;
        r
    }

    fn prune(&mut self, k: usize) {
        let now = Instant::now();
        self.floating[k].retain(|(_, at)| now.duration_since(*at) < FLOAT);
    }

    /// A write of `version` to key `k` was acknowledged: the key holds it, or a failed write
    /// that landed after it.
    fn stored(&mut self, k: usize, version: u64) {
        self.prune(k);
        self.possible[k] = self.floating[k].iter().map(|(v, _)| *v).collect();
        self.possible[k].insert(version);
    }

    /// A write of `version` to key `k` failed: it may have run, or may still run.
    fn maybe_stored(&mut self, k: usize, version: u64) {
        self.prune(k);
        self.possible[k].insert(version);
        self.floating[k].push((version, Instant::now()));
    }

    /// A write failed with `e`: unless it was never sent, it may have run.
    fn write_failed(&mut self, e: &newcache::Error, k: usize, version: u64) {
        self.tally.error(e);
        if sent(e) {
            self.maybe_stored(k, version);
        }
    }

    fn deleted(&mut self, k: usize) {
        self.prune(k);
        self.possible[k] = self.floating[k].iter().map(|(v, _)| *v).collect();
    }

    /// Checks a value read for `key`: its own key, its checksum, a version its writer made,
    /// and for this thread's keys a version the key may hold.
    fn check(&mut self, op: &str, key: &str, value: &str) {
        let (named, version) = match parse_value(value.as_bytes()) {
            Ok(p) => p,
            Err(why) => {
                let shown: String = value.chars().take(60).collect();
                return self.tally.wrong(format!("{op} {key}: {why}: {shown:?}"));
            }
        };
        if named != key.as_bytes() {
            return self.tally.wrong(format!(
                "{op} {key}: got the value of {} (version {version})",
                String::from_utf8_lossy(named)
            ));
        }
        let owner: usize = key
            .split(':')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(usize::MAX);
        if version >> 40 != owner as u64 {
            return self.tally.wrong(format!(
                "{op} {key}: version {version:#x} not from thread {owner}"
            ));
        }
        if owner == self.thread {
            let k: usize = key
                .rsplit(':')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(usize::MAX);
            if let Some(possible) = self.possible.get(k) {
                if !possible.contains(&version) {
                    let possible: Vec<u64> = possible.iter().map(|v| v & 0xff_ffff_ffff).collect();
                    self.tally.wrong(format!(
                        "{op} {key}: version {} the key cannot hold (possible {possible:?})",
                        version & 0xff_ffff_ffff
                    ));
                }
            }
        }
    }

    /// A key of another thread, or of this one.
    fn any_key(&mut self) -> String {
        let t = self.rng.below(THREADS as u64) as usize;
        key_of(t, self.rng.below(KEYS_PER_THREAD as u64) as usize)
    }

    fn step(&mut self) {
        let k = self.rng.below(KEYS_PER_THREAD as u64) as usize;
        match self.rng.below(100) {
            0..=24 => {
                let key = if self.rng.below(10) < 7 {
                    self.keys[k].clone()
                } else {
                    self.any_key()
                };
                match self.timed("get", |c| c.get::<String>(&key)) {
                    Ok(Some(v)) => self.check("get", &key, &v),
                    Ok(None) => {}
                    Err(e @ newcache::Error::Decode { .. }) => {
                        self.tally.wrong(format!("get {key}: {e}"));
                    }
                    Err(e) => self.tally.error(&e),
                }
            }
            25..=34 => {
                let n = 2 + self.rng.below(10) as usize;
                let keys: Vec<String> = (0..n)
                    .map(|_| {
                        if self.rng.below(2) == 0 {
                            let k = self.rng.below(KEYS_PER_THREAD as u64) as usize;
                            self.keys[k].clone()
                        } else {
                            self.any_key()
                        }
                    })
                    .collect();
                match self.timed("get_many", |c| c.get_many::<_, String>(&keys)) {
                    Ok(got) => {
                        let (map, failed) = got.into_parts();
                        for (key, e) in failed {
                            match &e {
                                // A key of a server that failed while the others answered:
                                // an error for that key, no wrong value.
                                newcache::Error::Transport(t) if t.is_server_failure() => {
                                    self.tally.error(&e)
                                }
                                _ => self.tally.wrong(format!("get_many {key}: {e}")),
                            }
                        }
                        for (key, v) in map {
                            if !keys.contains(&key) {
                                self.tally.wrong(format!("get_many: key {key} not asked"));
                            }
                            self.check("get_many", &key, &v);
                        }
                    }
                    Err(e) => self.tally.error(&e),
                }
            }
            35..=54 => {
                let (version, value) = self.fresh(k);
                let key = self.keys[k].clone();
                match self.timed("set", |c| c.set(&key, &value, TTL)) {
                    Ok(()) => self.stored(k, version),
                    Err(e) => self.write_failed(&e, k, version),
                }
            }
            55..=61 => {
                let (version, value) = self.fresh(k);
                let key = self.keys[k].clone();
                match self.timed("add", |c| c.add(&key, &value, TTL)) {
                    Ok(true) => self.stored(k, version),
                    Ok(false) => {}
                    Err(e) => self.write_failed(&e, k, version),
                }
            }
            62..=67 => {
                let key = self.keys[k].clone();
                match self.timed("delete", |c| c.delete(&key)) {
                    Ok(_) => self.deleted(k),
                    Err(e) => self.tally.error(&e),
                }
            }
            68..=77 => self.counter_step(),
            78..=83 => {
                let key = self.keys[k].clone();
                match self.timed("touch", |c| c.touch(&key, TTL)) {
                    Ok(_) => {}
                    Err(e) => {
                        self.tally.error(&e);
                        if sent(&e) {
                            // Its rewrite (same value, new flags) may land late: keep what
                            // the key may hold now possible past later writes.
                            self.prune(k);
                            let now = Instant::now();
                            let held: Vec<u64> = self.possible[k].iter().copied().collect();
                            self.floating[k].extend(held.into_iter().map(|v| (v, now)));
                        }
                    }
                }
            }
            84..=89 => {
                let mut ks: Vec<usize> = (0..4)
                    .map(|_| self.rng.below(KEYS_PER_THREAD as u64) as usize)
                    .collect();
                ks.sort_unstable();
                ks.dedup();
                let items: Vec<(usize, u64, String)> = ks
                    .into_iter()
                    .map(|k| {
                        let (v, value) = self.fresh(k);
                        (k, v, value)
                    })
                    .collect();
                let pairs: Vec<(String, &str)> = items
                    .iter()
                    .map(|(k, _, value)| (self.keys[*k].clone(), value.as_str()))
                    .collect();
                match self.timed("set_many", |c| c.set_many(pairs, TTL)) {
                    Ok(not_stored) => {
                        for (k, v, _) in &items {
                            if not_stored.contains(&self.keys[*k]) {
                                self.maybe_stored(*k, *v);
                            } else {
                                self.stored(*k, *v);
                            }
                        }
                    }
                    Err(e) => {
                        // One server's failure fails the call, but the live servers were
                        // sent their items (and stored them): any of them may be there.
                        self.tally.error(&e);
                        for (k, v, _) in &items {
                            self.maybe_stored(*k, *v);
                        }
                    }
                }
            }
            _ => {
                let (version, value) = self.fresh(k);
                let key = self.keys[k].clone();
                let loaded = std::cell::Cell::new(false);
                let got = self.timed("get_or_set", |c| {
                    c.get_or_set(&key, TTL, || {
                        loaded.set(true);
                        value
                    })
                });
                match got {
                    Ok(v) => {
                        if loaded.get() {
                            // The loader's value was stored (a failed store fails the call).
                            self.stored(k, version);
                        }
                        self.check("get_or_set", &key, &v);
                    }
                    Err(e @ newcache::Error::Decode { .. }) => {
                        self.tally.wrong(format!("get_or_set {key}: {e}"));
                    }
                    Err(e) if loaded.get() => self.write_failed(&e, k, version),
                    Err(e) => self.tally.error(&e),
                }
            }
        }
    }

    /// Increments the counter (it must go up), re-creating it above the last value seen when
    /// a restart lost it; now and then reads it (it must not be below the last value seen).
    fn counter_step(&mut self) {
        let key = self.counter.clone();
        if self.rng.below(5) == 0 {
            match self.timed("get", |c| c.get::<u64>(&key)) {
                Ok(Some(n)) if n < self.counter_at => {
                    let at = self.counter_at;
                    self.tally
                        .wrong(format!("get {key}: counter went back from {at} to {n}"));
                }
                Ok(_) => {}
                Err(e @ newcache::Error::Decode { .. }) => {
                    self.tally.wrong(format!("get {key}: {e}"));
                }
                Err(e) => self.tally.error(&e),
            }
            return;
        }
        match self.timed("incr", |c| c.incr(&key, 1)) {
            Ok(n) if n <= self.counter_at => {
                let at = self.counter_at;
                self.tally
                    .wrong(format!("incr {key}: counter went from {at} to {n}"));
            }
            Ok(n) => self.counter_at = n,
            Err(newcache::Error::NotFound { .. }) => {
                *self.tally.errors.entry("NotFound".into()).or_default() += 1;
                let next = self.counter_at + 1;
                let options = SetOptions::new(Ttl::Forever).no_herd();
                match self.timed("add", |c| c.add(&key, &next, options)) {
                    Ok(true) => self.counter_at = next,
                    Ok(false) => {}
                    Err(e) => self.tally.error(&e),
                }
            }
            Err(e) => self.tally.error(&e),
        }
    }
}

/// VmRSS of this process, in kB.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Text,
    Binary,
    Async,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Text => "text",
            Which::Binary => "binary (libmemcached)",
            Which::Async => "async (AsyncCache over the tokio text transport)",
        }
    }
}

/// One phase's result.
struct Outcome {
    tally: Tally,
    rss_start: u64,
    rss_end: u64,
    faults: BTreeMap<&'static str, u64>,
}

/// Runs one transport for `secs`: warm-up (no faults), then faults spread over the run, then
/// a fault-free tail, so the end's memory is measured with every server back.
fn phase(which: Which, secs: f64) -> Outcome {
    let mut servers: Vec<Memcached> = (0..SERVERS).map(|_| Memcached::start()).collect();
    let hosts: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let url = match which {
        Which::Text | Which::Async => format!("newcache://{}/", hosts.join(";")),
        Which::Binary => format!("newcache://{}/?binary=true", hosts.join(";")),
    };
    // The async cache's runtime: two workers (the machine's cores), its connections' tasks
    // on them; it lives until the phase's end.
    let runtime = match which {
        Which::Async => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}")),
        ),
        Which::Text | Which::Binary => None,
    };
    let cache = match &runtime {
        Some(rt) => AsyncCache::from_url(&url).map(|c| Soaked::Async(c, rt.handle().clone())),
        None => Cache::from_url(&url).map(Soaked::Blocking),
    }
    .unwrap_or_else(|e| panic!("cannot build {url}: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cache, stop) = (cache.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("soak-{t}"))
                .spawn(move || {
                    let mut w = Worker::new(t, cache);
                    // Counters start bare (no herd envelope), as incr needs.
                    let base = w.counter_at;
                    let _ = w
                        .cache
                        .set(&w.counter, &base, SetOptions::new(Ttl::Forever).no_herd());
                    while !stop.load(Ordering::Relaxed) {
                        w.step();
                    }
                    w.tally
                })
                .unwrap_or_else(|e| panic!("cannot spawn a worker: {e}"))
        })
        .collect();

    let total = Duration::from_secs_f64(secs);
    let warm = total.mul_f64(0.2).min(Duration::from_secs(3));
    let tail = total.mul_f64(0.1).min(Duration::from_secs(2));
    let faulted = total.saturating_sub(warm + tail);
    let started = Instant::now();
    std::thread::sleep(warm);
    let rss_start = rss_kb();

    // Events spread evenly: a stop, a kill, a stop then a kill while stopped; on each server
    // in turn.
    let events = ((faulted.as_secs_f64() / 2.5) as u32).max(3);
    let slot = faulted / events;
    let pause = PAUSE.min(slot.mul_f64(0.6));
    let down = DOWN.min(slot.mul_f64(0.4));
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in 0..events {
        let at = warm + slot * e;
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        let s = (e as usize + e as usize / 3) % SERVERS;
        let server = &mut servers[s];
        match e % 3 {
            0 => {
                server.pause();
                std::thread::sleep(pause);
                server.resume();
                *faults.entry("stopped+continued").or_default() += 1;
            }
            1 => {
                server.kill();
                std::thread::sleep(down);
                server.restart();
                *faults.entry("killed+restarted").or_default() += 1;
            }
            _ => {
                server.pause();
                std::thread::sleep(pause / 2);
                server.kill();
                std::thread::sleep(down / 2);
                server.restart();
                *faults.entry("stopped+killed+restarted").or_default() += 1;
            }
        }
    }
    std::thread::sleep(total.saturating_sub(started.elapsed()));
    let rss_end = rss_kb();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for w in workers {
        match w.join() {
            Ok(t) => tally.merge(t),
            Err(_) => tally.wrong("a worker panicked".into()),
        }
    }
    drop(cache);
    drop(runtime);
    Outcome {
        tally,
        rss_start,
        rss_end,
        faults,
    }
}

fn usage() -> ! {
    eprintln!("usage: soak [--secs N] [--transport text|binary|async|all]");
    std::process::exit(2);
}

fn main() {
    let mut secs = 60.0f64;
    let mut transports: Vec<Which> = vec![Which::Text];
    if cfg!(feature = "binary") {
        transports.push(Which::Binary);
    }
    transports.push(Which::Async);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => {
                secs = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s: &f64| *s >= 3.0)
                    .unwrap_or_else(|| {
                        eprintln!("--secs takes a number of seconds, at least 3");
                        usage()
                    })
            }
            "--transport" => {
                transports = match args.next().as_deref() {
                    Some("text") => vec![Which::Text],
                    Some("binary") if cfg!(feature = "binary") => vec![Which::Binary],
                    Some("binary") => {
                        eprintln!("--transport binary needs the `binary` feature (cargo run --features binary ...)");
                        std::process::exit(2);
                    }
                    Some("async") => vec![Which::Async],
                    Some("all") => transports,
                    _ => usage(),
                }
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let per_phase = secs / transports.len() as f64;
    let mut failed = false;
    for which in transports {
        println!(
            "soak: transport {}, {per_phase:.0} s, {SERVERS} servers, {THREADS} threads, {} keys",
            which.name(),
            THREADS * KEYS_PER_THREAD
        );
        let o = phase(which, per_phase);
        let t = &o.tally;
        let faults: Vec<String> = o.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("faults: {}", faults.join(", "));
        println!("operations: {}", t.ops);
        println!("wrong values: {}", t.wrong);
        for e in &t.examples {
            println!("  wrong: {e}");
        }
        let errors: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "errors: {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        );
        let (op, longest) = t.longest();
        println!(
            "longest call: {} ms ({op}; limit {} ms, {} ms for all but get_or_set)",
            longest.as_millis(),
            CALL_LIMIT.as_millis(),
            OTHER_CALL_LIMIT.as_millis()
        );
        let per_op: Vec<String> = t
            .longest
            .iter()
            .map(|(op, d)| format!("{op} {}", d.as_millis()))
            .collect();
        println!("longest by operation (ms): {}", per_op.join(", "));
        let growth = o.rss_end.saturating_sub(o.rss_start);
        println!(
            "memory (VmRSS): start {} (after warm-up), end {}, growth {} (limit {})",
            mb(o.rss_start),
            mb(o.rss_end),
            mb(growth),
            mb(RSS_GROWTH_LIMIT_KB)
        );
        let mut why = Vec::new();
        if t.wrong > 0 {
            why.push(format!("{} wrong values", t.wrong));
        }
        if growth > RSS_GROWTH_LIMIT_KB {
            why.push(format!("memory grew by {}", mb(growth)));
        }
        if longest > CALL_LIMIT {
            why.push(format!("a {op} call took {} ms", longest.as_millis()));
        }
        for (op, d) in &t.longest {
            if *op != "get_or_set" && *d > OTHER_CALL_LIMIT {
                why.push(format!("a {op} call took {} ms", d.as_millis()));
            }
        }
        if why.is_empty() {
            println!("result: ok");
        } else {
            println!("result: FAILED: {}", why.join("; "));
            failed = true;
        }
    }
    std::process::exit(i32::from(failed));
}
