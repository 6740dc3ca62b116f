//! What metrics and tracing cost on a get hit (features `metrics` and `tracing` on):
//! `cargo bench -p newcache --features metrics,tracing --bench observe`.
//!
//! One cache on one memcached, a 100-byte get hit, in three settings taking turns in short
//! bursts (so a slow patch of a shared machine hits all three alike):
//! - `nothing installed`: the features compiled in, no recorder and no subscriber (what a
//!   service that does not look pays: one check per counter);
//! - `prometheus + info`: a Prometheus recorder (metrics-exporter-prometheus) and a
//!   tracing subscriber at INFO (newcache's per-operation spans, at DEBUG, filtered out);
//! - `prometheus + debug spans`: the same with the subscriber at DEBUG, every span recorded
//!   (formatted to a sink).
//!
//! Prints the median time per get of each and its ratio to `nothing installed`. Not
//! criterion: its samples of one setting would all come from one stretch of time.

use std::time::{Duration, Instant};

use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;

const ROUNDS: usize = 60;
const BURST: usize = 300;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks; there is nothing to list.
    }
    let quick = std::env::var_os("NEWCACHE_BENCH_QUICK").is_some();
    let rounds = if quick { 10 } else { ROUNDS };
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

    let burst = |cache: &Cache| {
        let start = Instant::now();
        for _ in 0..BURST {
            let v: Option<String> = cache.get("hit").unwrap();
            assert!(v.is_some());
        }
        start.elapsed() / BURST as u32
    };
    let mut times: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        times[0].push(burst(&cache));
        times[1].push(metrics::with_local_recorder(&prometheus, || {
            tracing::dispatcher::with_default(&info, || burst(&cache))
        }));
        times[2].push(metrics::with_local_recorder(&prometheus, || {
            tracing::dispatcher::with_default(&debug, || burst(&cache))
        }));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let base = median(&mut times[0]);
    println!("observe: get hit, 100 B, {rounds} rounds x {BURST} gets per setting, medians");
    for (name, t) in [
        ("nothing installed", base),
        ("prometheus + info", median(&mut times[1])),
        ("prometheus + debug spans", median(&mut times[2])),
    ] {
        println!(
            "  {name:<26} {:>7.2} µs  {:.3}x the time of nothing installed",
            t.as_secs_f64() * 1e6,
            t.as_secs_f64() / base.as_secs_f64()
        );
    }
    // The recorder saw every get it was installed for.
    let text = prometheus.handle().render();
    assert!(
        text.contains("newcache_hits_total{cache=\"bench\",op=\"get\"}"),
        "{text}"
    );
}
