//! Concurrency: 1, 2, 4 and 8 threads sharing one `Cache` (text transport, built from
//! `newcache://ADDR/?transport=text`; get hit of 100 bytes through the whole facade), total
//! operations per second, against libmemcached with one bare handle per thread (through
//! `libmemcached-sys`, text protocol, `TCP_NODELAY` on: what a C or pylibmc program does), on
//! one memcached (`-t 4`). Each sample times `iters` gets on every thread at once, from a
//! common start to the last thread's finish (`iter_custom`).
//!
//! `NEWCACHE_BENCH_QUICK=1` shortens every measurement (`cargo xtask bench --quick`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;

const THREADS: [usize; 4] = [1, 2, 4, 8];

/// Runs `per_thread(thread index, iterations)` on `threads` threads at once and returns
/// the wall time from the common start to the last finish.
fn timed(threads: usize, iters: u64, per_thread: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    per_thread(t, iters);
                    Instant::now()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .map_or(Duration::ZERO, |end| end.duration_since(start))
    })
}

fn concurrency(c: &mut Criterion) {
    let server = Memcached::start();
    let value = "x".repeat(100);
    let cache =
        Cache::from_url(&format!("newcache://{}/?transport=text", server.addr())).expect("cache");
    cache
        .set("hit", value.as_str(), Ttl::Seconds(3600))
        .expect("set");

    let mut g = c.benchmark_group("concurrent_get_hit");
    for threads in THREADS {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(format!("newcache-text/{threads}"), |b| {
            b.iter_custom(|iters| {
                timed(threads, iters, &|_, n| {
                    for _ in 0..n {
                        black_box(cache.get::<String>("hit").expect("get"));
                    }
                })
            })
        });
        #[cfg(feature = "binary")]
        {
            use newcache_transport_binary::bare::{Bare, Options};
            let handles: Vec<std::sync::Mutex<Bare>> = (0..threads)
                .map(|_| {
                    let mut h = Bare::connect(&server.addr(), Options::TEXT).expect("handle");
                    h.set(b"bare-hit", value.as_bytes()).expect("set");
                    std::sync::Mutex::new(h)
                })
                .collect();
            g.bench_function(format!("libmemcached-sys-text/{threads}"), |b| {
                b.iter_custom(|iters| {
                    timed(threads, iters, &|t, n| {
                        // Each thread owns its handle; the lock is never contended.
                        let mut h = handles[t].lock().expect("handle");
                        for _ in 0..n {
                            black_box(h.get(b"bare-hit").expect("get").expect("hit"));
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = newcache_benches::config();
    targets = concurrency
}
criterion_main!(benches);
