//! The section on what watching costs: the facade's `observe` bench (features `metrics` and
//! `tracing`), one 100-byte get hit in three settings taking turns.

use std::fmt::Write as _;

use super::Report;

/// The most a get hit may cost with a Prometheus recorder and a subscriber at INFO, as a
/// ratio to the same build with nothing installed (the "under 3%").
const TARGET: f64 = 1.03;

/// One setting's row of the bench's TSV.
struct Row {
    setting: String,
    median_us: f64,
    /// The median ratio of the wall times to nothing installed's, and the middle half.
    ratio: [f64; 3],
    /// CPU µs per get on the calling thread, and how many more than with nothing installed.
    cpu_us: f64,
    added_cpu_us: f64,
    /// Nothing installed's wall time plus the added CPU, over nothing installed's.
    estimate: f64,
}

fn rows(tsv: &str) -> Vec<Row> {
    tsv.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cells = line.split('\t');
            let setting = cells.next()?.to_string();
            let mut num = || cells.next()?.parse::<f64>().ok();
            let median_us = num()?;
            let ratio = [num()?, num()?, num()?];
            let (cpu_us, added_cpu_us, estimate) = (num()?, num()?, num()?);
            Some(Row {
                setting,
                median_us,
                ratio,
                cpu_us,
                added_cpu_us,
                estimate,
            })
        })
        .collect()
}

/// Writes the section, and its row of the targets table.
pub(super) fn section(r: &mut Report, tsv: &str) {
    let rows = rows(tsv);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## Metrics and tracing: what watching costs on a get hit\n\nThe facade's own bench (`cargo bench -p newcache --features metrics,tracing --bench observe`; `cargo xtask bench` runs it): one cache on its own memcached, a 100-byte get hit, built with both features, in three settings taking turns (in a rotating order) in bursts of 300 gets, 150 rounds. *nothing installed*: no recorder and no subscriber (a service that does not look pays one check per counter); *prometheus + info*: a Prometheus recorder (`metrics-exporter-prometheus`) and a `tracing` subscriber at INFO, which filters out newcache's per-operation spans (DEBUG); *prometheus + debug spans*: every span recorded and formatted (to a sink). Built without both features, the observing code is compiled out (`observe.rs`).\n\nThe recording runs on the caller's thread, inside the call: what it adds to the thread's CPU time per get it adds to the get's latency. That difference (the median of the differences within each round) is measured to a fraction of a µs, where the wall times of whole round trips move by several µs between bursts of the same setting; so the cost is judged by *CPU estimate*, nothing installed's time per get plus the added CPU, over nothing installed's time. The wall-time ratios are shown too, with their spread.\n\n| setting | µs per get (median) | vs nothing installed, wall | middle half of the rounds | caller's CPU µs per get | added CPU µs | CPU estimate |\n|---|---|---|---|---|---|---|"
    );
    for row in &rows {
        let [p50, p25, p75] = row.ratio;
        let _ = writeln!(
            r.md,
            "| {} | {:.2} | {p50:.3}x | {p25:.3}x - {p75:.3}x | {:.2} | {:+.2} | {:.3}x |",
            row.setting, row.median_us, row.cpu_us, row.added_cpu_us, row.estimate
        );
    }
    let _ = writeln!(r.md);
    let watched = rows.iter().find(|row| row.setting == "prometheus + info");
    let shown = watched.map_or("not measured".to_string(), |row| {
        let verdict = if row.estimate <= TARGET {
            "met"
        } else {
            "missed"
        };
        format!(
            "{:.3}x (CPU estimate; wall {:.3}x): {verdict}",
            row.estimate, row.ratio[0]
        )
    });
    let _ = writeln!(
        r.targets,
        "| metrics and tracing on a get hit (Prometheus recorder, subscriber at INFO) <= {TARGET:.2}x the time with nothing installed | {shown} |"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_tsv_reads_back() {
        let rows = rows("setting\tmedian_us\tratio_p50\tratio_p25\tratio_p75\tcpu_us\tadded_cpu_us\tcpu_estimate\nnothing installed\t78.66\t1.0000\t1.0000\t1.0000\t31.9\t0.000\t1.0000\nprometheus + info\t77.50\t0.9850\t0.9700\t1.0100\t32.4\t1.065\t1.0138\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].setting, "prometheus + info");
        assert_eq!(rows[1].ratio, [0.985, 0.97, 1.01]);
        assert_eq!(rows[1].added_cpu_us, 1.065);
        assert_eq!(rows[1].estimate, 1.0138);
    }
}
