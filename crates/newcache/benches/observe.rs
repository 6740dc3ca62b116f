//! What metrics and tracing cost on a get hit (features `metrics` and `tracing` on):
//! `cargo bench -p newcache --features metrics,tracing --bench observe`.
//!
//! One cache on one memcached, a 100-byte get hit, in three settings taking turns (each first,
//! second and third in turn) in short bursts (so a slow patch of a shared machine hits all
//! three alike):
//! - `nothing installed`: the features compiled in, no recorder and no subscriber (what a
//!   service that does not look pays: one check per counter);
//! - `prometheus + info`: a Prometheus recorder (metrics-exporter-prometheus) and a
//!   tracing subscriber at INFO (newcache's per-operation spans, at DEBUG, filtered out);
//! - `prometheus + debug spans`: the same with the subscriber at DEBUG, every span recorded
//!   (formatted to a sink).
//!
//! Prints the median time per get of each and its ratio to `nothing installed` (the median
//! of the ratios within each round, and their middle half), and the CPU time per get of the
//! calling thread, where the recording runs: what it adds to the get's latency, less noisy
//! than the wall times of round trips (a few µs of it move between bursts of the same
//! setting). With `NEWCACHE_OBSERVE_OUT` set, writes them there as TSV too, for the report
//! (`cargo xtask bench` does). Not criterion: its samples of one setting would all come
//! from one stretch of time.

use std::time::{Duration, Instant};

use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;

const ROUNDS: usize = 150;
const BURST: usize = 300;

/// CPU time this thread has run (Linux's `/proc/thread-self/schedstat`, in ns).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = text.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.expect("schedstat's first field"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks; there is nothing to list.
    }
    let quick = std::env::var_os("NEWCACHE_BENCH_QUICK").is_some();
    // `cargo bench` passes `--bench`; `cargo test --benches` (in `cargo xtask test`) does
    // not, and there a few rounds show the bench still runs.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = match (benching, quick) {
        (false, _) => 3,
        (true, true) => 30,
        (true, false) => ROUNDS,
    };
    let server = Memcached::start();
    let cache = Cache::from_url(&format!("newcache://{}/?name=bench", server.addr())).unwrap();
    cache
        .set("hit", "x".repeat(100).as_str(), Ttl::Seconds(3600))
        .unwrap();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let sink = || std::io::sink();
    let info = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(sink)
        .finish();
    let debug = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(sink)
        .finish();
    let info = tracing::Dispatch::new(info);
    let debug = tracing::Dispatch::new(debug);
    // The three settings (the TSV's rows, in this order): nothing installed, or the
    // Prometheus recorder with a subscriber.
    let settings = [
        ("nothing installed", None),
        ("prometheus + info", Some(&info)),
        ("prometheus + debug spans", Some(&debug)),
    ];

    // Per get: the wall time, and the CPU time of the calling thread (where the recording
    // runs, synchronously: every µs of it is a µs of the get's latency).
    let burst = |cache: &Cache| {
        let (start, cpu) = (Instant::now(), thread_cpu());
        for _ in 0..BURST {
            let v: Option<String> = cache.get("hit").unwrap();
            assert!(v.is_some());
        }
        let per_get = |d: Duration| d.as_secs_f64() * 1e6 / BURST as f64;
        (per_get(start.elapsed()), per_get(thread_cpu() - cpu))
    };
    let mut times: [Vec<(f64, f64)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Each setting goes first, second and third in turn: no setting always follows the
        // same one (whose caches and branch history it would inherit).
        for turn in 0..settings.len() {
            let i = (round + turn) % settings.len();
            let measured = match settings[i].1 {
                None => burst(&cache),
                Some(subscriber) => metrics::with_local_recorder(&prometheus, || {
                    tracing::dispatcher::with_default(subscriber, || burst(&cache))
                }),
            };
            times[i].push(measured);
        }
    }
    // Each setting against nothing installed within the same round, so a slow spell of the
    // machine moves both sides: the medians of those ratios and differences, and the
    // middle half of the ratios.
    let quantiles = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        [at(0.5), at(0.25), at(0.75)]
    };
    let per_round = |i: usize, f: fn((f64, f64), (f64, f64)) -> f64| {
        quantiles(
            times[i]
                .iter()
                .zip(&times[0])
                .map(|(a, b)| f(*a, *b))
                .collect(),
        )
    };
    let base_wall = quantiles(times[0].iter().map(|t| t.0).collect())[0];
    println!("observe: get hit, 100 B, {rounds} rounds x {BURST} gets per setting");
    let mut tsv = String::from(
        "setting\tmedian_us\tratio_p50\tratio_p25\tratio_p75\tcpu_us\tadded_cpu_us\tcpu_estimate\n",
    );
    for (i, (name, _)) in settings.iter().enumerate() {
        let [p50, p25, p75] = per_round(i, |a, b| a.0 / b.0);
        let us = quantiles(times[i].iter().map(|t| t.0).collect())[0];
        let cpu = quantiles(times[i].iter().map(|t| t.1).collect())[0];
        let added = per_round(i, |a, b| a.1 - b.1)[0];
        // The get's time with nothing installed, plus what the recording added on its thread.
        let estimate = (base_wall + added) / base_wall;
        println!(
            "  {name:<26} {us:>7.2} µs  {p50:.3}x the time of nothing installed (middle half {p25:.3}x - {p75:.3}x); CPU {cpu:.2} µs per get, {added:+.2} µs: {estimate:.3}x"
        );
        tsv.push_str(&format!(
            "{name}\t{us:.2}\t{p50:.4}\t{p25:.4}\t{p75:.4}\t{cpu:.3}\t{added:.3}\t{estimate:.4}\n"
        ));
    }
    if let Some(out) = std::env::var_os("NEWCACHE_OBSERVE_OUT") {
        std::fs::write(&out, tsv)
            .unwrap_or_else(|e| panic!("NEWCACHE_OBSERVE_OUT {}: {e}", out.to_string_lossy()));
    }
    // The recorder saw every get it was installed for.
    let text = prometheus.handle().render();
    assert!(
        text.contains("newcache_hits_total{cache=\"bench\",op=\"get\"}"),
        "{text}"
    );
}
