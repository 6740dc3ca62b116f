//! Async concurrency (issue 12 item 7): 1, 16, 64 and 256 concurrent callers doing get hits
//! of 100-byte values on one memcached (`-t 2`), total operations per second and per-call
//! latency, for every client of [`newcache_benches::concurrent`]: one `AsyncCache` shared by
//! that many tokio tasks (multi-thread runtime, default worker threads), the blocking `Cache`
//! shared by that many threads, raw libmemcached with one handle per thread, the `memcache`
//! crate with one client per thread, and `async-memcached` with one client per task.
//!
//! Each criterion sample releases every caller at once and times from the first caller's
//! start to the last one's finish (`iter_custom`; an iteration is one get per caller, so the
//! throughput is `callers` gets per iteration). Flat sampling (every sample the same number
//! of iterations): criterion's default linear sampling takes at least 55 iterations per row,
//! which at 256 callers of the slower clients is many seconds. Every call's latency goes into a histogram
//! per row (warm-up samples included); at the end the bench prints p50/p99 per row and, with
//! `NEWCACHE_ASYNC_CONCURRENCY_OUT=FILE` (set by `cargo xtask bench`), writes
//! `client<TAB>callers<TAB>calls<TAB>p50 ns<TAB>p99 ns<TAB>ops/s` lines for the report
//! (ops/s there: all calls over all samples' wall time; the report's ops/s is criterion's).
//!
//! `NEWCACHE_BENCH_QUICK=1` shortens every measurement (`cargo xtask bench --quick`).

use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use newcache_benches::concurrent::{self, Driver, Histogram, CALLERS, CLIENTS};
use newcache_testkit::Memcached;

/// One row's figures over the whole run.
struct Row {
    client: &'static str,
    callers: usize,
    latencies: Mutex<Histogram>,
    /// Gets done and wall time spent, over every sample.
    done: Mutex<(u64, Duration)>,
}

fn async_concurrency(c: &mut Criterion) {
    // 256 connections per client at the most, several clients connected at once (one caller
    // count at a time): room above memcached's default of 1024 in the testkit.
    let server = Memcached::with_args(&["-t", "2", "-c", "4096"]);
    let addr = server.addr();
    let rt = concurrent::runtime();
    let mut rows: Vec<Row> = Vec::new();

    let mut g = c.benchmark_group("async_concurrent_get_hit");
    g.sampling_mode(SamplingMode::Flat);
    for callers in CALLERS {
        g.throughput(Throughput::Elements(callers as u64));
        for client in CLIENTS {
            let Some(driver) = Driver::new(client, &addr, callers, &rt) else {
                continue;
            };
            let row = Row {
                client,
                callers,
                latencies: Mutex::new(Histogram::default()),
                done: Mutex::new((0, Duration::ZERO)),
            };
            g.bench_function(format!("{client}/{callers}"), |b| {
                b.iter_custom(|iters| {
                    let wall = driver.run(iters, Some(&row.latencies));
                    let mut done = row.done.lock().expect("done");
                    done.0 += iters * callers as u64;
                    done.1 += wall;
                    wall
                })
            });
            rows.push(row);
            // Its connections close here, before the next client connects.
            drop(driver);
        }
    }
    g.finish();
    drop(rt);

    let mut tsv = String::new();
    println!("\nasync_concurrent_get_hit: latency per call over the whole run (warm-up included)");
    println!(
        "{:<24} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "client", "callers", "calls", "p50 µs", "p99 µs", "ops/s"
    );
    for row in &rows {
        let h = row.latencies.lock().expect("histogram");
        let (gets, wall) = *row.done.lock().expect("done");
        let p50 = h.quantile(0.5).unwrap_or(f64::NAN);
        let p99 = h.quantile(0.99).unwrap_or(f64::NAN);
        let ops = gets as f64 / wall.as_secs_f64().max(1e-9);
        println!(
            "{:<24} {:>7} {:>10} {:>10.1} {:>10.1} {:>10.0}",
            row.client,
            row.callers,
            h.len(),
            p50 / 1000.0,
            p99 / 1000.0,
            ops
        );
        tsv.push_str(&format!(
            "{}\t{}\t{}\t{p50:.0}\t{p99:.0}\t{ops:.0}\n",
            row.client,
            row.callers,
            h.len()
        ));
    }
    if let Some(out) = std::env::var_os("NEWCACHE_ASYNC_CONCURRENCY_OUT") {
        std::fs::write(&out, tsv).expect("write NEWCACHE_ASYNC_CONCURRENCY_OUT");
    }
}

criterion_group! {
    name = benches;
    config = newcache_benches::config();
    targets = async_concurrency
}
criterion_main!(benches);
