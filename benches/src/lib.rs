//! Benchmarks live in `benches/`; this library holds what they share.
//!
//! [`config`] is every bench's criterion configuration: full runs by default,
//! `NEWCACHE_BENCH_QUICK=1` (`cargo xtask bench --quick`) for a check that finishes in about
//! a minute and still gives ratios worth reading.

use std::time::Duration;

use criterion::Criterion;

/// True in quick mode (`NEWCACHE_BENCH_QUICK` set).
pub fn quick() -> bool {
    std::env::var_os("NEWCACHE_BENCH_QUICK").is_some()
}

/// The criterion configuration of every bench: 20 samples over 2.5 s after 0.5 s of
/// warm-up, or 10 samples over 0.3 s after 0.1 s in quick mode.
pub fn config() -> Criterion {
    let (samples, warm_up, measure) = if quick() {
        (10, 100, 300)
    } else {
        (20, 500, 2500)
    };
    Criterion::default()
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(warm_up))
        .measurement_time(Duration::from_millis(measure))
        .without_plots()
}
