//! Reading criterion's results (means, repeated runs, ratios) and the report being written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{BASELINE, FLOOR};

/// criterion's mean time per iteration in ns from one `estimates.json`.
pub(super) fn estimate(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("mean")?.get("point_estimate")?.as_f64()
}

/// Time per iteration in ns of a bench: the median over its repeated runs (criterion
/// baselines `rep1`, `rep2`... that `cargo xtask bench` saves), or its one run (`new`).
pub(super) fn mean_ns(dir: &Path, group: &str, bench: &str) -> Option<f64> {
    let at = dir.join(group).join(bench);
    let mut reps: Vec<f64> = std::fs::read_dir(&at)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rep"))
                .filter_map(|e| estimate(&e.path().join("estimates.json")))
                .collect()
        })
        .unwrap_or_default();
    if reps.is_empty() {
        return estimate(&at.join("new/estimates.json"));
    }
    reps.sort_by(f64::total_cmp);
    reps.get(reps.len() / 2).copied()
}

/// Each repeated run's time per iteration in ns, by baseline name (`rep1`, `rep2`...), or
/// the one run's (`new`).
pub(super) fn rep_times(dir: &Path, group: &str, bench: &str) -> Vec<(String, f64)> {
    let at = dir.join(group).join(bench);
    let reps: Vec<(String, f64)> = std::fs::read_dir(&at)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with("rep")
                        .then(|| estimate(&e.path().join("estimates.json")).map(|ns| (name, ns)))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    if reps.is_empty() {
        return estimate(&at.join("new/estimates.json"))
            .map(|ns| vec![("new".to_string(), ns)])
            .unwrap_or_default();
    }
    reps
}

/// How many times faster `a` ran than `b` (both per iteration of the same work): within
/// each repeated run that measured both, `b`'s time over `a`'s, then the median of those.
/// A slow spell of the machine that falls on one run then moves both sides of that run's
/// ratio, where a ratio of two medians could pair `a`'s slow run with `b`'s fast one.
pub(super) fn speedup(
    dir: &Path,
    (group_a, a): (&str, &str),
    (group_b, b): (&str, &str),
) -> Option<f64> {
    let theirs = rep_times(dir, group_b, b);
    let mut ratios: Vec<f64> = rep_times(dir, group_a, a)
        .into_iter()
        .filter_map(|(rep, ours)| {
            let (_, t) = theirs.iter().find(|(r, _)| *r == rep)?;
            Some(t / ours)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied()
}

/// How many repeated runs the transport groups' figures are the median of.
pub(super) fn repetitions(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("get_hit").join(BASELINE))
        .map(|e| {
            e.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rep"))
                .count()
        })
        .unwrap_or(0)
        .max(1)
}

/// Every bench of a group, by its name (which may contain `/`), sorted.
pub(super) fn benches(dir: &Path, group: &str) -> Vec<String> {
    fn walk(base: &Path, at: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(at) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let is_bench = path.join("new/estimates.json").is_file()
                || path.join("rep1/estimates.json").is_file();
            if is_bench {
                if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            } else if entry.file_name() != "report" {
                walk(base, &path, out);
            }
        }
    }
    let base: PathBuf = dir.join(group);
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

pub(super) fn ratio(a: f64, b: Option<f64>) -> String {
    b.map_or("-".into(), |b| format!("{:.2}x", a / b))
}

pub(super) fn shown(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}x"))
}

pub(super) struct Report {
    pub(super) dir: PathBuf,
    pub(super) md: String,
    /// Rows of the targets table from sections before it (the async concurrency targets).
    pub(super) targets: String,
    /// Why those targets were missed, for the targets' list of reasons.
    pub(super) why: Vec<String>,
}

impl Report {
    pub(super) fn ops(&self, group: &str, bench: &str, per_iter: f64) -> Option<f64> {
        mean_ns(&self.dir, group, bench).map(|ns| per_iter * 1e9 / ns)
    }

    /// One table of ops/s with ratios to the baseline and the floor; returns its rows.
    pub(super) fn transport_table(
        &mut self,
        group: &str,
        title: &str,
        per_iter: f64,
    ) -> Vec<(String, f64)> {
        let names = benches(&self.dir, group);
        if names.is_empty() {
            return Vec::new();
        }
        let mut rows: Vec<(String, f64)> = names
            .iter()
            .filter_map(|n| self.ops(group, n, per_iter).map(|o| (n.clone(), o)))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        let _ = writeln!(
            self.md,
            "### {title}\n\n| client | ops/s | vs libmemcached-sys-text | vs floor |\n|---|---|---|---|"
        );
        for (name, ops) in &rows {
            // The floor is one round trip: only one-round-trip operations compare to it.
            let vs_floor = if per_iter == 1.0 && group != "set_get_100KB" {
                shown(speedup(&self.dir, (group, name), ("get_hit", FLOOR)))
            } else {
                "-".into()
            };
            let _ = writeln!(
                self.md,
                "| {name} | {ops:.0} | {} | {vs_floor} |",
                shown(speedup(&self.dir, (group, name), (group, BASELINE)))
            );
        }
        let _ = writeln!(self.md);
        rows
    }

    /// A table of time per operation for micro-benchmarks.
    pub(super) fn micro_table(&mut self, group: &str, title: &str) {
        let names = benches(&self.dir, group);
        if names.is_empty() {
            return;
        }
        let _ = writeln!(self.md, "### {title}\n\n| bench | time per op |\n|---|---|");
        for name in names {
            if let Some(ns) = mean_ns(&self.dir, group, &name) {
                let shown = if ns >= 10_000.0 {
                    format!("{:.1} µs", ns / 1000.0)
                } else {
                    format!("{ns:.0} ns")
                };
                let _ = writeln!(self.md, "| {name} | {shown} |");
            }
        }
        let _ = writeln!(self.md);
    }
}
