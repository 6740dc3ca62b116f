//! Benchmarks live in `benches/`; this library holds what they share.
//!
//! [`config`] is every bench's criterion configuration: full runs by default,
//! `NEWCACHE_BENCH_QUICK=1` (`cargo xtask bench --quick`) for a check that finishes in well
//! under a minute of measuring and still gives ratios worth reading.
#![deny(unsafe_code)]

use std::time::Duration;

use criterion::Criterion;

pub mod clients;
pub mod concurrent;

/// True in quick mode (`NEWCACHE_BENCH_QUICK` set).
pub fn quick() -> bool {
    std::env::var_os("NEWCACHE_BENCH_QUICK").is_some()
}

/// The criterion configuration of every bench: 20 samples over 2.5 s after 0.5 s of
/// warm-up, or, in quick mode, criterion's minimum of 10 samples over 0.2 s after 0.05 s,
/// with 2,000 bootstrap resamples instead of 100,000 (the analysis, not the measuring, is
/// what a quick run spends most of its time on otherwise).
pub fn config() -> Criterion {
    let base = Criterion::default().without_plots();
    if quick() {
        base.sample_size(10)
            .warm_up_time(Duration::from_millis(50))
            .measurement_time(Duration::from_millis(200))
            .nresamples(2_000)
    } else {
        base.sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_millis(2500))
    }
}
