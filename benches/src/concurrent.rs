//! Concurrent callers doing get hits of 100-byte values on one memcached, for the
//! `async_concurrency` bench and the `syscalls` helper (which counts their system calls under
//! strace): one [`Driver`] per client and caller count, so both measure the same code.
//!
//! Clients ([`CLIENTS`]):
//!
//! - `newcache-async`: one [`AsyncCache`] (`newcache://ADDR/?read_timeout=10000`, see
//!   [`NEWCACHE_QUERY`]; its text transport's one auto-pipelined connection), `callers` tasks
//!   on a tokio multi-thread runtime with the default worker threads (one per core).
//! - `newcache-blocking`: one blocking [`Cache`] (the same URL; the text transport's pool,
//!   default `max_connections=64`, `max_idle=16`) shared by `callers` threads.
//! - `libmemcached-sys-text`: raw libmemcached, one bare handle per thread (text protocol,
//!   `TCP_NODELAY` on), feature `binary`.
//! - `memcache-crate-ascii`: the `memcache` crate, one `Client` (its pool of one
//!   connection) per thread, ASCII protocol (its faster mode in the transport bench).
//! - `async-memcached`: the `async-memcached` crate, one `Client` (one connection; its calls
//!   take `&mut self`) per task, on the same runtime as `newcache-async`.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use newcache::{AsyncCache, Cache, Ttl};

/// The caller counts of the bench.
pub const CALLERS: [usize; 4] = [1, 16, 64, 256];

/// The clients, in the order the bench runs them at each caller count.
pub const CLIENTS: [&str; 5] = [
    "newcache-async",
    "newcache-blocking",
    "libmemcached-sys-text",
    "memcache-crate-ascii",
    "async-memcached",
];

/// The client the async cache is held to at 64 callers (ops/s, ratio at least 2).
pub const BASELINE: &str = "libmemcached-sys-text";

/// The value every client reads: 100 bytes.
pub fn value() -> String {
    "x".repeat(100)
}

/// The tokio runtime of the async clients: multi-thread, default worker threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Latencies, HdrHistogram-like: exact below 128 ns, then 64 buckets per power of two (a
/// bucket is at most 1.6% wide), up to 2^40 ns (larger values land in the last bucket).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
}

const SUB: u32 = 64;
const EXACT: u64 = 2 * SUB as u64;
const MAX_EXP: u32 = 40;
const BUCKETS: usize = EXACT as usize + (MAX_EXP - 7 + 1) as usize * SUB as usize;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
        }
    }
}

impl Histogram {
    fn index(ns: u64) -> usize {
        if ns < EXACT {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros();
        if exp > MAX_EXP {
            return BUCKETS - 1;
        }
        let shift = exp - 7 + 1;
        let mantissa = (ns >> shift) - u64::from(SUB);
        EXACT as usize + (exp - 7) as usize * SUB as usize + mantissa as usize
    }

    /// The middle of bucket `i`, in ns.
    fn value_at(i: usize) -> f64 {
        if (i as u64) < EXACT {
            return i as f64;
        }
        let j = i - EXACT as usize;
        let exp = 7 + (j / SUB as usize) as u32;
        let mantissa = (j % SUB as usize) as u64 + u64::from(SUB);
        let shift = exp - 7 + 1;
        let low = (mantissa << shift) as f64;
        low + (1u64 << shift) as f64 / 2.0
    }

    /// Records one call's latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Calls recorded.
    pub fn len(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `q` quantile (0..=1) in ns, within a bucket's width; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.len();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value_at(i));
            }
        }
        None
    }
}

/// One caller's part of a run: when it started and finished, its latencies.
struct Part {
    start: Instant,
    end: Instant,
    latencies: Histogram,
}

/// The wall time of a run, from the first caller's start to the last one's finish; merges
/// the callers' latencies into `into`.
fn wall(parts: Vec<Part>, into: Option<&Mutex<Histogram>>) -> Duration {
    let start = parts.iter().map(|p| p.start).min();
    let end = parts.iter().map(|p| p.end).max();
    if let Some(into) = into {
        let mut h = into.lock().expect("histogram");
        for p in &parts {
            h.merge(&p.latencies);
        }
    }
    match (start, end) {
        (Some(s), Some(e)) => e.duration_since(s),
        _ => Duration::ZERO,
    }
}

/// Times `gets` calls of `get`, one after another: one caller's part.
fn part(gets: u64, mut get: impl FnMut()) -> Part {
    let mut latencies = Histogram::default();
    let start = Instant::now();
    for _ in 0..gets {
        let t = Instant::now();
        get();
        latencies.record(t.elapsed());
    }
    Part {
        start,
        end: Instant::now(),
        latencies,
    }
}

/// Runs `per_thread(thread index)` on `threads` threads, all released at once.
fn on_threads(threads: usize, per_thread: &(dyn Fn(usize) -> Part + Sync)) -> Vec<Part> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    per_thread(t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    })
}

enum Clients {
    Async(AsyncCache),
    Blocking(Cache),
    #[cfg(feature = "binary")]
    Libmemcached(Vec<Mutex<newcache_transport_binary::bare::Bare>>),
    Memcache(Vec<memcache::Client>),
    AsyncMemcached(Mutex<Vec<async_memcached::Client>>),
}

/// One client with `callers` concurrent callers, connected and warmed up.
pub struct Driver {
    callers: usize,
    clients: Clients,
    rt: tokio::runtime::Handle,
}

const HIT: &str = "conc-hit";

/// The only setting of both newcache clients that is not the default: `read_timeout` (which
/// also bounds the blocking pool's wait for a connection) 10 s instead of 500 ms, because
/// under strace (the syscalls helper) 256 threads wait longer than that for one of the
/// blocking pool's 64 connections. It changes no code path, only the deadline.
pub const NEWCACHE_QUERY: &str = "read_timeout=10000";
const RAW_HIT: &[u8] = b"conc-raw-hit";

impl Driver {
    /// Connects `client` (one of [`CLIENTS`]) for `callers` callers, stores its value, and
    /// warms it up with every caller doing two gets at once (connections opened, pools
    /// grown). `None` for a client not built in (libmemcached without feature `binary`).
    pub fn new(
        client: &str,
        addr: &str,
        callers: usize,
        rt: &tokio::runtime::Runtime,
    ) -> Option<Driver> {
        let value = value();
        let url = format!("newcache://{addr}/?{NEWCACHE_QUERY}");
        let clients = match client {
            "newcache-async" => {
                let cache = rt.block_on(async {
                    let cache = AsyncCache::from_url(&url).expect("async cache");
                    cache
                        .set(HIT, value.as_str(), Ttl::Forever)
                        .await
                        .expect("set");
                    cache
                });
                Clients::Async(cache)
            }
            "newcache-blocking" => {
                let cache = Cache::from_url(&url).expect("cache");
                cache.set(HIT, value.as_str(), Ttl::Forever).expect("set");
                Clients::Blocking(cache)
            }
            #[cfg(feature = "binary")]
            "libmemcached-sys-text" => {
                use newcache_transport_binary::bare::{Bare, Options};
                let handles = (0..callers)
                    .map(|_| {
                        let mut h = Bare::connect(addr, Options::TEXT).expect("libmemcached");
                        h.set(RAW_HIT, value.as_bytes()).expect("set");
                        Mutex::new(h)
                    })
                    .collect();
                Clients::Libmemcached(handles)
            }
            "memcache-crate-ascii" => {
                let clients: Vec<memcache::Client> = (0..callers)
                    .map(|_| {
                        memcache::Client::connect(format!("memcache://{addr}?protocol=ascii"))
                            .expect("memcache")
                    })
                    .collect();
                clients[0]
                    .set(
                        std::str::from_utf8(RAW_HIT).expect("key"),
                        value.as_str(),
                        0,
                    )
                    .expect("set");
                Clients::Memcache(clients)
            }
            "async-memcached" => {
                use async_memcached::AsciiProtocol;
                let clients = rt.block_on(async {
                    let mut clients = Vec::with_capacity(callers);
                    for _ in 0..callers {
                        clients.push(
                            async_memcached::Client::new(format!("tcp://{addr}"))
                                .await
                                .expect("async-memcached"),
                        );
                    }
                    clients[0]
                        .set(RAW_HIT, value.as_bytes(), None, None)
                        .await
                        .expect("set");
                    clients
                });
                Clients::AsyncMemcached(Mutex::new(clients))
            }
            _ => return None,
        };
        let driver = Driver {
            callers,
            clients,
            rt: rt.handle().clone(),
        };
        driver.run(2, None);
        Some(driver)
    }

    /// Every caller does `gets` get hits at once; returns the wall time from the first
    /// caller's start to the last one's finish, and adds every call's latency to `latencies`.
    pub fn run(&self, gets: u64, latencies: Option<&Mutex<Histogram>>) -> Duration {
        let callers = self.callers;
        let parts = match &self.clients {
            Clients::Async(cache) => self.rt.block_on(async {
                let barrier = Arc::new(tokio::sync::Barrier::new(callers));
                let tasks: Vec<_> = (0..callers)
                    .map(|_| {
                        let cache = cache.clone();
                        let barrier = barrier.clone();
                        tokio::spawn(async move {
                            barrier.wait().await;
                            let mut latencies = Histogram::default();
                            let start = Instant::now();
                            for _ in 0..gets {
                                let t = Instant::now();
                                let v: Option<String> = cache.get(HIT).await.expect("get");
                                black_box(v.expect("hit"));
                                latencies.record(t.elapsed());
                            }
                            Part {
                                start,
                                end: Instant::now(),
                                latencies,
                            }
                        })
                    })
                    .collect();
                let mut parts = Vec::with_capacity(callers);
                for t in tasks {
                    parts.push(t.await.expect("task"));
                }
                parts
            }),
            Clients::Blocking(cache) => on_threads(callers, &|_| {
                part(gets, || {
                    let v: Option<String> = cache.get(HIT).expect("get");
                    black_box(v.expect("hit"));
                })
            }),
            #[cfg(feature = "binary")]
            Clients::Libmemcached(handles) => on_threads(callers, &|t| {
                // Each thread owns its handle; the lock is never contended.
                let mut h = handles[t].lock().expect("handle");
                part(gets, || {
                    black_box(h.get(RAW_HIT).expect("get").expect("hit"));
                })
            }),
            Clients::Memcache(clients) => on_threads(callers, &|t| {
                let c = &clients[t];
                let key = std::str::from_utf8(RAW_HIT).expect("key");
                part(gets, || {
                    let v: Option<String> = c.get(key).expect("get");
                    black_box(v.expect("hit"));
                })
            }),
            Clients::AsyncMemcached(clients) => {
                let owned = std::mem::take(&mut *clients.lock().expect("clients"));
                let (parts, back) = self.rt.block_on(async {
                    use async_memcached::AsciiProtocol;
                    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
                    let tasks: Vec<_> = owned
                        .into_iter()
                        .map(|mut client| {
                            let barrier = barrier.clone();
                            tokio::spawn(async move {
                                barrier.wait().await;
                                let mut latencies = Histogram::default();
                                let start = Instant::now();
                                for _ in 0..gets {
                                    let t = Instant::now();
                                    let v = client.get(RAW_HIT).await.expect("get");
                                    black_box(v.expect("hit"));
                                    latencies.record(t.elapsed());
                                }
                                let part = Part {
                                    start,
                                    end: Instant::now(),
                                    latencies,
                                };
                                (part, client)
                            })
                        })
                        .collect();
                    let mut parts = Vec::with_capacity(callers);
                    let mut back = Vec::with_capacity(callers);
                    for t in tasks {
                        let (part, client) = t.await.expect("task");
                        parts.push(part);
                        back.push(client);
                    }
                    (parts, back)
                });
                *clients.lock().expect("clients") = back;
                parts
            }
        };
        wall(parts, latencies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for ns in 1..=100_000u64 {
            h.record(Duration::from_nanos(ns * 10));
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.len(), 100_000);
        for ns in [0u64, 1, 127, 128, 129, 255, 256, 1000, 123_456, 1 << 39] {
            let v = Histogram::value_at(Histogram::index(ns));
            assert!(
                (v - ns as f64).abs() <= (ns as f64 / 64.0).max(0.0) + 1.0,
                "{ns} {v}"
            );
        }
        let mut huge = Histogram::default();
        huge.record(Duration::from_secs(100_000));
        assert!(huge.quantile(1.0).is_some());
    }
}
