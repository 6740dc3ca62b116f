//! Turns criterion's results into `docs/benchmarks.md` and `docs/benchmarks.svg`:
//! `report <criterion dir> <docs dir> <command that measured> [--syscalls FILE]
//! [--allocations FILE] [--interleaved FILE] [--async-concurrency FILE] [--observe FILE]`,
//! the files written by `cargo xtask bench` (the `syscalls` helper under strace, the
//! `allocations`, `interleaved` and `async_concurrency` benches, and the facade's `observe`
//! bench).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use newcache_benches::clients::{VALUE_PATH, VALUE_PATH_ALLOCATIONS, VALUE_PATH_TARGET};
use plotters::prelude::*;

// In a folder of its own: a file in src/bin/ would be a binary of its own.
#[path = "report/observe.rs"]
mod observe;

/// Transport groups: (criterion group, title, operations per iteration).
const GROUPS: &[(&str, &str, f64)] = &[
    ("get_hit", "get hit", 1.0),
    ("get_miss", "get miss", 1.0),
    ("set_100B", "set 100 B", 1.0),
    ("get_many_100", "get_many of 100 (keys/s)", 100.0),
    ("set_get_100KB", "set+get 100 KB (pairs/s)", 1.0),
];
/// Bare libmemcached through `libmemcached-sys`, text protocol: every ratio's baseline.
const BASELINE: &str = "libmemcached-sys-text";
const BASELINE_BINARY: &str = "libmemcached-sys-binary";
const FLOOR: &str = "loopback-floor-mn";

/// criterion's mean time per iteration in ns from one `estimates.json`.
fn estimate(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("mean")?.get("point_estimate")?.as_f64()
}

/// Time per iteration in ns of a bench: the median over its repeated runs (criterion
/// baselines `rep1`, `rep2`... that `cargo xtask bench` saves), or its one run (`new`).
fn mean_ns(dir: &Path, group: &str, bench: &str) -> Option<f64> {
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
fn rep_times(dir: &Path, group: &str, bench: &str) -> Vec<(String, f64)> {
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
fn speedup(dir: &Path, (group_a, a): (&str, &str), (group_b, b): (&str, &str)) -> Option<f64> {
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
fn repetitions(dir: &Path) -> usize {
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
fn benches(dir: &Path, group: &str) -> Vec<String> {
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

fn ratio(a: f64, b: Option<f64>) -> String {
    b.map_or("-".into(), |b| format!("{:.2}x", a / b))
}

fn shown(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}x"))
}

struct Report {
    dir: PathBuf,
    md: String,
    /// Rows of the targets table from sections before it (the async concurrency targets).
    targets: String,
    /// Why those targets were missed, for the targets' list of reasons.
    why: Vec<String>,
}

impl Report {
    fn ops(&self, group: &str, bench: &str, per_iter: f64) -> Option<f64> {
        mean_ns(&self.dir, group, bench).map(|ns| per_iter * 1e9 / ns)
    }

    /// One table of ops/s with ratios to the baseline and the floor; returns its rows.
    fn transport_table(&mut self, group: &str, title: &str, per_iter: f64) -> Vec<(String, f64)> {
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
    fn micro_table(&mut self, group: &str, title: &str) {
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

fn chart(path: &Path, rows: &[(String, f64)]) -> Result<(), Box<dyn std::error::Error>> {
    let height = 60 + 26 * rows.len() as u32;
    let root = SVGBackend::new(path, (760, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().map(|r| r.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "get hit, ops/s (one connection, loopback, same run)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..max, (0..rows.len()).into_segmented())?;
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (name, ops))| {
        let color = if name.starts_with("newcache") || name == "transport-text" {
            RGBColor(42, 157, 143)
        } else {
            RGBColor(141, 153, 174)
        };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*ops, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }))?;
    root.present()?;
    Ok(())
}

/// A command's first line of output, or `None` when it cannot run.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_string())
}

/// The version of a crate in the workspace's `Cargo.lock`.
fn locked_version(package: &str) -> Option<String> {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    let wanted = format!("name = \"{package}\"");
    lines.find(|l| l.trim() == wanted)?;
    let version = lines.next()?.trim().strip_prefix("version = ")?;
    Some(version.trim_matches('"').to_string())
}

/// The machine and the versions this run measured, found where it runs.
fn machine() -> String {
    let unknown = || "unknown".to_string();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(unknown, |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| unknown(), |k| k.trim().to_string());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = first_line(&rustc, &["-V"]).unwrap_or_else(unknown);
    let memcached = first_line("memcached", &["-V"]).unwrap_or_else(unknown);
    let libmemcached = first_line("pkg-config", &["--modversion", "libmemcached"])
        .map_or_else(unknown, |v| format!("libmemcached {v}"));
    let strace = first_line("strace", &["-V"]).unwrap_or_else(|| "no strace".into());
    let krate = |name: &str| {
        locked_version(name).map_or_else(|| format!("{name} ?"), |v| format!("{name} {v}"))
    };
    format!(
        "| what | this run |\n|---|---|\n| machine | {cores} cores, {cpu}; {os}, Linux {kernel} |\n| toolchain | {rustc}; {} |\n| server | {memcached}, started per bench with `-m 64` and `-t 4` (`-t 1` for the one-connection transport and interleaved benches, `-t 2` for the async concurrency bench), loopback |\n| C library | {libmemcached} (Debian's `libmemcached-dev`), linked through `libmemcached-sys` |\n| peers | the `{}` crate; `{}` (async concurrency) |\n| tracing | {strace} |\n",
        krate("criterion"),
        krate("memcache"),
        krate("async-memcached"),
    )
}

/// A time in nanoseconds, in the unit that reads best.
fn duration(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The `interleaved` bench's figures: per operation, each client's ops/s and every pair's
/// ratio (median and middle half of the rounds).
#[derive(Default)]
struct Interleaved {
    ops: Vec<(String, String, f64)>,
    ratios: Vec<(String, String, String, [f64; 3])>,
}

impl Interleaved {
    fn parse(tsv: &str) -> Interleaved {
        let mut out = Interleaved::default();
        for line in tsv.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["ops", op, client, ops] => {
                    if let Ok(ops) = ops.parse() {
                        out.ops.push((op.to_string(), client.to_string(), ops));
                    }
                }
                ["ratio", op, a, b, p50, p25, p75] => {
                    if let (Ok(p50), Ok(p25), Ok(p75)) = (p50.parse(), p25.parse(), p75.parse()) {
                        out.ratios.push((
                            op.to_string(),
                            a.to_string(),
                            b.to_string(),
                            [p50, p25, p75],
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// How many times faster `a` ran than `b` on `op`: (median, p25, p75) over the rounds.
    fn ratio(&self, op: &str, a: &str, b: &str) -> Option<[f64; 3]> {
        self.ratios
            .iter()
            .find(|(o, x, y, _)| o == op && x == a && y == b)
            .map(|(_, _, _, r)| *r)
    }

    fn clients(&self, op: &str) -> Vec<(String, f64)> {
        self.ops
            .iter()
            .filter(|(o, _, _)| o == op)
            .map(|(_, c, ops)| (c.clone(), *ops))
            .collect()
    }
}

/// The interleaved ratios, one table per operation, then the value path's.
fn interleaved_section(r: &mut Report, inter: &Interleaved) {
    if inter.ops.is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## Ratios, interleaved (what the targets are checked on)\n\nThe `interleaved` bench (`benches/benches/interleaved.rs`): within each round every client runs a short burst of the operation (50 gets or sets, 10 multi-gets, 10 set+get pairs), a different client first each round, against one memcached with one worker thread (`-t 1`, so every client's connection is served alike). A ratio is the median over the rounds of the ratio within a round, with the middle half of the rounds beside it. On this shared machine the speed drifts by tens of percent over the seconds criterion spends on one row, which moves criterion's ratios between rows; within a round of a few milliseconds the machine is the same for every client.\n"
    );
    for (op, title) in [
        ("get_hit", "get hit"),
        ("set_100B", "set 100 B"),
        ("get_many_100", "get_many of 100 (keys/s)"),
        ("set_get_100KB", "set+get 100 KB (pairs/s)"),
    ] {
        let clients = inter.clients(op);
        let Some((base, _)) = clients.first() else {
            continue;
        };
        let _ = writeln!(
            r.md,
            "### {title}\n\n| client | ops/s | vs {base} | middle half of the rounds | vs the transport alone |\n|---|---|---|---|---|"
        );
        for (client, ops) in &clients {
            let (median, spread) = match inter.ratio(op, client, base) {
                Some([p50, p25, p75]) => (format!("{p50:.2}x"), format!("{p25:.2}x - {p75:.2}x")),
                None => ("1.00x".to_string(), "-".to_string()),
            };
            // A facade row of the value path: its ratio to the transport beneath it.
            let alone = VALUE_PATH
                .iter()
                .find(|(o, facade, _)| *o == op && facade == client)
                .and_then(|(_, _, transport)| {
                    inter
                        .ratio(op, client, transport)
                        .map(|[p50, _, _]| format!("{p50:.2}x (`{transport}`)"))
                })
                .unwrap_or_else(|| "-".to_string());
            let _ = writeln!(
                r.md,
                "| {client} | {ops:.0} | {median} | {spread} | {alone} |"
            );
        }
        let _ = writeln!(r.md);
    }
    let rows: Vec<String> = VALUE_PATH
        .iter()
        .filter_map(|(op, facade, transport)| {
            let [p50, p25, p75] = inter.ratio(op, facade, transport)?;
            let verdict = if p50 >= VALUE_PATH_TARGET {
                "met"
            } else {
                "missed"
            };
            Some(format!(
                "| {op} | {facade} | {transport} | {p50:.2}x | {p25:.2}x - {p75:.2}x | {verdict} |"
            ))
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            r.md,
            "### The value path: the facade over the transport alone\n\nEach `Cache` row against the transport beneath it, in the same rounds. The transport rows do what the facade does on the wire: for set+get, the same 100 KB with the same flags (text and the herd state) under a key of the facade's wire key's length; for get_many, the facade's own 100 wire keys and items (`-facade-wire-bytes`). `-string` rows store and read a `String`, `-vec` rows a `Vec<u8>`. Target: {VALUE_PATH_TARGET:.2}x or better.\n\n| operation | facade | transport alone | facade / transport | middle half of the rounds | target |\n|---|---|---|---|---|---|\n{}\n",
            rows.join("\n")
        );
    }
}

/// Command-line arguments.
struct Args {
    criterion: PathBuf,
    docs: PathBuf,
    command: String,
    syscalls: Option<PathBuf>,
    allocations: Option<PathBuf>,
    interleaved: Option<PathBuf>,
    async_concurrency: Option<PathBuf>,
    observe: Option<PathBuf>,
}

fn args() -> Args {
    let usage = || -> ! {
        eprintln!(
            "usage: report <criterion dir> <docs dir> <command> [--syscalls FILE] [--allocations FILE] [--interleaved FILE] [--async-concurrency FILE] [--observe FILE]"
        );
        std::process::exit(2)
    };
    let mut it = std::env::args().skip(1);
    let (Some(criterion), Some(docs), Some(command)) = (it.next(), it.next(), it.next()) else {
        usage()
    };
    let mut args = Args {
        criterion: criterion.into(),
        docs: docs.into(),
        command,
        syscalls: None,
        allocations: None,
        interleaved: None,
        async_concurrency: None,
        observe: None,
    };
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") && args.syscalls.is_none() {
            // The older form: the syscalls file as a fourth argument.
            args.syscalls = Some(flag.into());
            continue;
        }
        let Some(file) = it.next() else { usage() };
        match flag.as_str() {
            "--syscalls" => args.syscalls = Some(file.into()),
            "--allocations" => args.allocations = Some(file.into()),
            "--interleaved" => args.interleaved = Some(file.into()),
            "--async-concurrency" => args.async_concurrency = Some(file.into()),
            "--observe" => args.observe = Some(file.into()),
            _ => usage(),
        }
    }
    args
}

fn main() {
    let args = args();
    let command = &args.command;
    let mut r = Report {
        dir: args.criterion.clone(),
        md: String::new(),
        targets: String::new(),
        why: Vec::new(),
    };
    let _ = writeln!(r.md, "# Benchmarks\n");
    let _ = writeln!(
        r.md,
        "Measured by `{command}` (regenerate with it; the code is `benches/`, the report `benches/src/bin/report.rs`), criterion means. Each bench starts its own memcached; clients use one connection, sequentially, with 100-byte values unless said. **Read the ratios**: the machine is shared and noisy, so absolute figures move between runs while ratios from one run hold. Quick mode (`--quick`) samples briefly; run `cargo xtask bench` for the figures to quote.\n\n{}",
        machine()
    );
    let _ = writeln!(
        r.md,
        "Rows:\n\n- `newcache-*`: the whole `Cache` facade (key function + herd state in the flags + codec) over each transport; in set+get 100 KB, `-string` stores and reads a `String`, `-vec` a `Vec<u8>`.\n- `transport-text`: the Rust text transport alone (no key function, herd or codec).\n- `libmemcached-sys-text`, `libmemcached-sys-binary`: **the baseline**, raw libmemcached: one handle and the C calls a C program makes (`memcached_get`, `memcached_set`, `memcached_mget` + `memcached_fetch_result` into a result it owns), as bare `libmemcached-sys` FFI calls (`newcache_transport_binary::bare`), `MEMCACHED_BEHAVIOR_TCP_NODELAY` = 1.\n- `wrapper-libmemcached-*`: our `newcache-transport-binary` (pool, key checks, items) without the facade.\n- `memcache-crate-*`: the `memcache` crate, ASCII and its default binary protocol.\n- `loopback-floor-mn`: a raw `mn` ping-pong on one TCP connection: the floor for one round trip.\n\n`vs libmemcached-sys-text` is the ratio to raw libmemcached's text protocol on the same operation in the same run; `vs floor` to the floor's round trips per second.\n"
    );

    let reps = repetitions(&r.dir);
    let _ = writeln!(
        r.md,
        "## Transports, one connection\n\n{}\n",
        if reps > 1 {
            format!("Each ops/s figure is the median of {reps} runs of the whole transport bench, one after another (so every row is measured early, mid and late in the run); each ratio is the median of the {reps} ratios taken within one run, so a slow spell of the machine that falls on one run moves both sides of that run's ratio.")
        } else {
            "One run of the transport bench.".to_string()
        }
    );
    let mut hit_rows = Vec::new();
    for (group, title, per_iter) in GROUPS {
        let rows = r.transport_table(group, title, *per_iter);
        if *group == "get_hit" {
            // The chart compares network clients; the in-process memory backend is off it.
            hit_rows = rows
                .into_iter()
                .filter(|(n, _)| n != "newcache-memory")
                .collect();
        }
    }
    let _ = writeln!(r.md, "![get hit, ops/s](benchmarks.svg)\n");

    let inter = Interleaved::parse(
        &args
            .interleaved
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default(),
    );
    interleaved_section(&mut r, &inter);

    tcp_nodelay(&mut r);
    concurrency(&mut r);
    let syscalls = args
        .syscalls
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let latencies = args
        .async_concurrency
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let docs = &args.docs;
    async_concurrency(
        &mut r,
        &latencies,
        syscalls.as_deref().unwrap_or_default(),
        &docs.join(ASYNC_CHART),
    );

    if let Some(text) = args
        .observe
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        observe::section(&mut r, &text);
    }

    // Clusters.
    let names = benches(&r.dir, "cluster_get_many_100");
    if !names.is_empty() {
        let _ = writeln!(
            r.md,
            "## Clusters: get_many of 100 keys, 1 server vs 3 (keys/s)\n\n| client | keys/s |\n|---|---|"
        );
        for name in names {
            if let Some(ops) = r.ops("cluster_get_many_100", &name, 100.0) {
                let _ = writeln!(r.md, "| {name} | {ops:.0} |");
            }
        }
        let _ = writeln!(
            r.md,
            "\nThe text transport writes every server's request before reading any reply (`text-3-servers`), so three servers cost about what one does; `one-after-another` reads the same three servers in turn.\n"
        );
    }

    let allocations = args
        .allocations
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    allocations_section(&mut r, &allocations);
    if let Some(text) = &syscalls {
        syscalls_section(&mut r, text);
    }

    let _ = writeln!(r.md, "## Micro-benchmarks\n");
    r.micro_table("keyfn", "Key functions");
    r.micro_table("envelope", "Herd state in the flags");
    r.micro_table("codec", "Value codec");
    r.micro_table(
        "facade_overhead",
        "Key function + herd flags + codec, one set and one get (no I/O)",
    );
    r.micro_table("placement_10_servers", "Placement, 10 servers");

    targets(&mut r, &allocations, &inter);

    std::fs::write(docs.join("benchmarks.md"), &r.md).expect("write benchmarks.md");
    if let Err(e) = chart(&docs.join("benchmarks.svg"), &hit_rows) {
        eprintln!("report: cannot draw the chart: {e}");
        std::process::exit(1);
    }
    println!(
        "wrote {}/benchmarks.md and {}/benchmarks.svg",
        docs.display(),
        docs.display()
    );
}

/// Raw libmemcached's get miss with `TCP_NODELAY` off and on (the `tcp_nodelay` bench).
fn tcp_nodelay(r: &mut Report) {
    const GROUP: &str = "get_miss_tcp_nodelay";
    if benches(&r.dir, GROUP).is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## TCP_NODELAY: raw libmemcached's get miss, Nagle on and off\n\nOne raw libmemcached handle (as in `libmemcached-sys-*`), a key that is not there, time per miss with `MEMCACHED_BEHAVIOR_TCP_NODELAY` off (libmemcached's default) and on. `memcached_get` is what a C program calls; `mget-1-key` is a one-key `memcached_mget` + `memcached_fetch_result`, how libmemcached-based wrappers (our `newcache-transport-binary` included) read one key.\n\n| protocol | call | TCP_NODELAY off | TCP_NODELAY on | off / on |\n|---|---|---|---|---|"
    );
    let mut stalls = Vec::new();
    for protocol in ["text", "binary"] {
        for call in ["memcached_get", "mget-1-key"] {
            let at = |nodelay: &str| {
                mean_ns(
                    &r.dir,
                    GROUP,
                    &format!("{protocol}_{call}_nodelay-{nodelay}"),
                )
            };
            let (off, on) = (at("off"), at("on"));
            let show = |ns: Option<f64>| {
                ns.map_or("-".into(), |ns| {
                    format!("{} ({:.0}/s)", duration(ns), 1e9 / ns)
                })
            };
            let times = match (off, on) {
                (Some(off), Some(on)) => format!("{:.0}x", off / on),
                _ => "-".into(),
            };
            if off.is_some_and(|ns| ns > 5e6) {
                stalls.push(format!(
                    "{protocol} `{call}` ({})",
                    off.map_or_else(String::new, duration)
                ));
            }
            let _ = writeln!(
                r.md,
                "| {protocol} | `{call}` | {} | {} | {times} |",
                show(off),
                show(on)
            );
        }
    }
    let finding = if stalls.is_empty() {
        "**This run: no miss waited for Nagle**; every row is one round trip.".to_string()
    } else {
        format!(
            "**This run: without `TCP_NODELAY` a miss waits for the delayed ACK in {}**; with it every miss is one round trip.",
            stalls.join(", ")
        )
    };
    let _ = writeln!(
        r.md,
        "\n{finding} Why (seen with `strace` on libmemcached 1.1.4): a binary `mget` writes the key's quiet `GETKQ` and then the `NOOP` that ends the batch as **two** `sendto` calls. On a miss the server answers the quiet `GETKQ` with nothing, so nothing carries the ACK of the first segment back; Nagle's algorithm holds the small `NOOP` until the server's delayed ACK fires (about 40 ms on Linux), and only then does the server see the `NOOP` and reply. On a hit the value's reply carries the ACK at once. Binary `memcached_get` sends one non-quiet `GETK` in one write and the text protocol sends one line, so neither waits. The ~23 misses/s seen before were this: a binary one-key `mget` miss without `TCP_NODELAY`. Every libmemcached handle in these benches, and `newcache-transport-binary` by default, sets `TCP_NODELAY`.\n"
    );
}

/// Threads sharing one `Cache` against one raw handle per thread (the `concurrency` bench).
fn concurrency(r: &mut Report) {
    const GROUP: &str = "concurrent_get_hit";
    if benches(&r.dir, GROUP).is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## Concurrency: get hit, total ops/s\n\n1, 2, 4 and 8 threads share one `Cache` (`newcache://ADDR/?transport=text`: the text transport's pool of connections); raw libmemcached gets one handle per thread (`libmemcached-sys`, text protocol), as a C or pylibmc program would. Each sample starts every thread at once and stops at the last one's finish (criterion's `iter_custom`); memcached runs 4 worker threads on the same 2 cores.\n\n| threads | newcache-text | libmemcached-sys-text, handle per thread | ratio |\n|---|---|---|---|"
    );
    for threads in [1u32, 2, 4, 8] {
        let per = f64::from(threads);
        // criterion files `<client>/<threads>` as `<client>_<threads>`.
        let ours = r.ops(GROUP, &format!("newcache-text_{threads}"), per);
        let theirs = r.ops(GROUP, &format!("libmemcached-sys-text_{threads}"), per);
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            r.md,
            "| {threads} | {} | {} | {} |",
            show(ours),
            show(theirs),
            ours.map_or("-".into(), |o| ratio(o, theirs))
        );
    }
    let _ = writeln!(r.md);
}

/// Heap allocations per call (the `allocations` bench's TSV).
fn allocations_section(r: &mut Report, tsv: &str) {
    let rows: Vec<Vec<&str>> = tsv
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 3)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## Heap allocations per call\n\nThe `allocations` bench (`benches/benches/allocations.rs`): dhat's counting global allocator, against a real memcached; counts per call (a reallocation counts as an allocation), averaged over 1,000 calls (100 for the 100 KB cases) after a warm-up (they are the same every call). libmemcached allocates with C `malloc`, which a Rust allocator does not see: its rows (`binary`, `BinaryTransport`) count the Rust side only (the items, the facade).\n\n| call | allocations | bytes asked for |\n|---|---|---|"
    );
    for f in &rows {
        let _ = writeln!(r.md, "| {} | {} | {} |", f[0], f[1], f[2]);
    }
    let find = |case: &str| rows.iter().find(|f| f.first() == Some(&case));
    let shown = |f: &Vec<&str>| format!("{} ({} B)", f[1], f[2]);
    let mut table = String::new();
    for (op, transport, facade_cases, alone_case) in VALUE_PATH_ALLOCATIONS {
        let Some(alone) = find(alone_case) else {
            continue;
        };
        for case in *facade_cases {
            let Some(facade) = find(case) else {
                continue;
            };
            let extra = match (facade[1].parse::<f64>(), alone[1].parse::<f64>()) {
                (Ok(a), Ok(b)) => format!("{:+.0}", a - b),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                table,
                "| {op} | {transport} | `{case}` | {} | {} | {extra} |",
                shown(facade),
                shown(alone)
            );
        }
    }
    if !table.is_empty() {
        let _ = writeln!(
            r.md,
            "\n### The value path: the facade against the transport alone\n\n| operation | transport | facade call | facade: allocations (bytes) | the transport alone | facade's extra allocations |\n|---|---|---|---|---|---|\n{table}"
        );
    }
    let _ = writeln!(
        r.md,
        "\nWhere they come from (found with a backtrace-capturing allocator, dhat, over the same calls; the counts above are this run's, the attribution is from when this was written). Values are stored bare (the herd state rides in the item's flags), so nothing is stripped from a value on the way out:\n\n- `TextTransport::get` hit, 1: the `Vec` the decoder copies the value into out of the connection's read buffer (`proto::Decoder::decode`), returned as the `Item`'s value. A miss allocates nothing.\n- `Cache::get_raw` hit, 1: that same `Vec`, returned as it is.\n- `Cache::get::<String>` hit, 1: that same `Vec`, handed over as the `String` (`codec::decode_vec`: the UTF-8 checked, no copy). The wire key goes into a reused per-thread buffer: no allocation.\n- `Cache::set`, 1: the 256-byte buffer the value is encoded into (`Cache::encode_computed`).\n- `Cache::set+get::<String>` of 100 KB, 3 against the transport's 1: the set's 256-byte buffer, grown once to the value's size (a reallocation), into which the value is copied before the transport copies it into the connection's write buffer; the get's value is the transport's buffer handed over.\n- `Cache::set+get::<Vec<u8>>` of 100 KB, 4: the same three, and a second 100 KB `Vec`: serde reads a `Vec<u8>` as a sequence, so its visitor builds a new `Vec` one byte at a time out of the transport's buffer (which is then freed) instead of taking it over; on the set side it is written one byte at a time too (*Value codec*: `vec_u8_100KB_*` against `string_100KB_*`).\n- `TextTransport::get_many` of 100, 102: the 100 values, the result `Vec<Option<Item>>` and the decoder's list of values (`proto::Values::with_capacity`).\n- `Cache::get_many::<String>` of 100, 105 more than the transport (over either transport): the returned map's 101 (100 owned `String` keys and its table; the 100 values are the transport's buffers handed over) and 4 of bookkeeping (the wire-key buffer, its end offsets and slices, the list of reads looked at).\n"
    );
}

/// System calls per operation (the `syscalls` helper under `strace -c -f`).
fn syscalls_section(r: &mut Report, tsv: &str) {
    let mut ops = 200;
    let mut table: Vec<(String, [String; 3], [String; 3])> = Vec::new();
    for line in tsv.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let ["#ops", n] = f.as_slice() {
            ops = n.parse().unwrap_or(ops);
            continue;
        }
        let [client, op, total, rest @ ..] = f.as_slice() else {
            continue;
        };
        if op.starts_with("get-c") {
            // Concurrent callers: in *Async concurrency*.
            continue;
        }
        let which = rest.first().copied().unwrap_or_default();
        let col = match *op {
            "get" => 0,
            "set" => 1,
            _ => 2,
        };
        let at = match table.iter().position(|(c, _, _)| c == client) {
            Some(at) => at,
            None => {
                table.push((client.to_string(), Default::default(), Default::default()));
                table.len() - 1
            }
        };
        if let Some((_, totals, names)) = table.get_mut(at) {
            totals[col] = total.to_string();
            names[col] = which.to_string();
        }
    }
    if table.is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## System calls per operation\n\n`strace -c -f` of the `syscalls` helper (`benches/src/bin/syscalls.rs`) doing {ops} operations, minus a run doing none (setup and one warm-up call subtracted), divided by {ops}; the server is not traced. get: a hit of 100 bytes; set: 100 bytes; get_many: 100 keys, all hits.\n\n| client | get hit | set 100 B | get_many of 100 |\n|---|---|---|---|"
    );
    for (client, [g, s, m], _) in &table {
        let _ = writeln!(r.md, "| {client} | {g} | {s} | {m} |");
    }
    let _ = writeln!(
        r.md,
        "\nWhich calls, per operation:\n\n| client | get hit | set 100 B | get_many of 100 |\n|---|---|---|---|"
    );
    for (client, _, [g, s, m]) in &table {
        let _ = writeln!(r.md, "| {client} | {g} | {s} | {m} |");
    }
    let _ = writeln!(r.md);
}

/// The targets, checked against this run (`allocations`: the allocations TSV).
/// Every ratio is the interleaved bench's where it measured the pair, else criterion's
/// [`speedup`] (the median of the ratios within each repeated run).
fn targets(r: &mut Report, allocations: &str, inter: &Interleaved) {
    const WIRE: &str = "libmemcached-sys-text-facade-wire-bytes";
    let vs = |g: &str, a: &str, b: &str| {
        inter
            .ratio(g, a, b)
            .map(|[p50, _, _]| p50)
            .or_else(|| speedup(&r.dir, (g, a), (g, b)))
    };
    // (shown, met); `None` when a side was not measured.
    let check = |x: Option<f64>, at_least: f64| {
        x.map(|x| {
            let verdict = if x >= at_least { "met" } else { "missed" };
            (format!("{x:.2}x: {verdict}"), x >= at_least)
        })
    };
    let cell = |c: &Option<(String, bool)>| {
        c.as_ref()
            .map_or("not measured".to_string(), |(s, _)| s.clone())
    };
    let missed = |c: &Option<(String, bool)>| matches!(c, Some((_, false)));
    let hit = check(vs("get_hit", "newcache-text", BASELINE), 1.0);
    let set = check(vs("set_100B", "newcache-text", BASELINE), 1.0);
    let many = check(vs("get_many_100", "newcache-text", BASELINE), 1.0);
    let floor = check(vs("get_hit", "newcache-text", FLOOR), 0.9);
    let binary: Vec<(&str, Option<(String, bool)>)> = ["get_hit", "set_100B"]
        .into_iter()
        .map(|g| {
            (
                g,
                check(vs(g, "newcache-libmemcached-binary", BASELINE_BINARY), 0.95),
            )
        })
        .collect();
    let overhead = ["set_100B", "get_100B"]
        .iter()
        .map(|op| {
            mean_ns(&r.dir, "facade_overhead", op).map_or(format!("{op} not measured"), |ns| {
                let verdict = if ns < 500.0 { "met" } else { "missed" };
                format!("{op} {ns:.0} ns: {verdict}")
            })
        })
        .collect::<Vec<_>>()
        .join("; ");
    let allocs = |case: &str| {
        allocations.lines().find_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some(case))
                .then(|| f.next()?.parse::<f64>().ok())
                .flatten()
        })
    };
    // The returned value itself is one allocation; anything more is beyond it.
    let alloc_cells: Vec<String> = [
        (
            "TextTransport::get hit, 100 B",
            "text transport get hit",
            1.0,
        ),
        ("Cache::get_raw hit, 100 B", "`Cache::get_raw` hit", 1.0),
        (
            "Cache::get::<String> hit, 100 B",
            "`Cache::get::<String>` hit",
            1.0,
        ),
        ("Cache::get::<String> miss", "miss", 0.0),
    ]
    .iter()
    .map(|(case, label, allowed)| match allocs(case) {
        Some(n) => {
            let verdict = if n <= *allowed { "met" } else { "missed" };
            format!("{label} {n:.0}: {verdict}")
        }
        None => format!("{label} not measured"),
    })
    .collect();
    // The value path: each facade row over the transport alone beneath it, interleaved
    // only (criterion's rows do not carry the same keys and flags).
    /// A target checked: (shown, met), `None` when not measured.
    type Checked = Option<(String, bool)>;
    let value_path: Vec<(&str, &str, &str, Checked)> = VALUE_PATH
        .iter()
        .map(|(op, facade, transport)| {
            let x = inter.ratio(op, facade, transport).map(|[p50, _, _]| p50);
            (*op, *facade, *transport, check(x, VALUE_PATH_TARGET))
        })
        .collect();
    let value_rows: String = value_path
        .iter()
        .map(|(op, facade, transport, c)| {
            let alloc = VALUE_PATH_ALLOCATIONS
                .iter()
                .filter(|(what, _, _, _)| {
                    (*op == "set_get_100KB") == what.starts_with("set+get")
                })
                .find_map(|(_, _, cases, alone)| {
                    let suffix = if facade.ends_with("-vec") {
                        "<Vec<u8>>"
                    } else {
                        "<String>"
                    };
                    let binary = facade.contains("libmemcached");
                    let case = cases
                        .iter()
                        .find(|c| c.contains(suffix) && c.contains("(binary)") == binary)?;
                    Some(format!(
                        "; allocations per call {} against {}",
                        allocs(case).map_or("-".into(), |n| format!("{n:.0}")),
                        allocs(alone).map_or("-".into(), |n| format!("{n:.0}"))
                    ))
                })
                .unwrap_or_default();
            format!(
                "| the value path: `{facade}` >= {VALUE_PATH_TARGET:.2}x `{transport}`, {op} | {}{alloc} |\n",
                cell(c)
            )
        })
        .collect();
    // get_many(100) against raw libmemcached, on both caches (issue 12 item 8).
    let many_rows: String = [("newcache-text", "`Cache`"), ("newcache-async", "`AsyncCache`")]
        .iter()
        .flat_map(|(client, shown)| {
            [
                (*client, *shown, WIRE, 1.0, "reading the same wire keys and items"),
                (*client, *shown, BASELINE, 0.9, "reading its own short keys"),
            ]
        })
        .map(|(client, shown, against, at_least, what)| {
            format!(
                "| get_many(100): {shown} (text) >= {at_least:.1}x raw libmemcached text {what} (`{against}`) | {} |\n",
                cell(&check(vs("get_many_100", client, against), at_least))
            )
        })
        .collect();
    let _ = writeln!(
        r.md,
        "## Targets, this run\n\nRatios from *Ratios, interleaved* where it measured the pair, else from the criterion tables (medians of the ratios within each repeated run).\n\n| target | result |\n|---|---|\n| text facade >= 1.0x raw libmemcached text, get hit | {} |\n| text facade >= 1.0x raw libmemcached text, set 100 B | {} |\n| text facade >= 1.0x raw libmemcached text, get_many(100) | {} |\n| text facade >= 0.9x the loopback floor, get hit | {} |\n| binary facade within 5% of raw libmemcached binary | {} |\n| key function + herd flags + codec < 0.5 µs | {overhead} |\n| no allocation on the get path beyond the returned value (allocations per call, *Heap allocations per call*) | {} |\n{value_rows}{many_rows}{}",
        cell(&hit),
        cell(&set),
        cell(&many),
        cell(&floor),
        binary
            .iter()
            .map(|(g, c)| format!("{g} {}", cell(c)))
            .collect::<Vec<_>>()
            .join("; "),
        alloc_cells.join("; "),
        r.targets
    );

    // Why each missed target was missed, from this run's own rows.
    let mut why: Vec<String> = Vec::new();
    let x = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
    if missed(&many) {
        why.push(format!(
            "**get_many(100) through the facade.** The facade's wire work is larger than raw libmemcached's: 100 hashed keys of 43 bytes (`-1-` and 40 hex digits: version 1, no flavor) against keys of 10 or 11 bytes (`raw-many-N`); the values are the same 100 bytes (stored bare, the herd state in the flags). Raw libmemcached reading exactly the facade's keys and items (`{WIRE}`) ran at {} of its own short-key multi-get in this run: that is the price of hashed keys at the server and on the wire, which no client can avoid with the same key function. Against that same-bytes row the facade ran at {}, and at {} of the text transport alone reading the same keys (`transport-text-facade-wire-bytes`); the text transport alone, on the short keys, at {} of raw libmemcached. The facade's own work per key is the SHA-1 key function and its hex digits (*Key functions*), reading the herd state from the flags, and the returned map: an owned `String` key per entry and its table (the value itself is the transport's buffer, handed over; *Heap allocations per call*). `get_many_ordered` returns the values in the caller's key order with no map (*Value path*, `newcache-text-ordered`); what would close the rest is the hashing overlapping the round trip, or a faster key function than SHA-1 for users who need no django-newcache compatibility.",
            x(vs("get_many_100", WIRE, BASELINE)),
            x(vs("get_many_100", "newcache-text", WIRE)),
            x(vs(
                "get_many_100",
                "newcache-text",
                "transport-text-facade-wire-bytes"
            )),
            x(vs("get_many_100", "transport-text", BASELINE)),
        ));
    }
    for (name, c, g) in [
        ("get hit", &hit, "get_hit"),
        ("set 100 B", &set, "set_100B"),
    ] {
        if missed(c) {
            why.push(format!(
                "**{name} through the text facade.** The text transport alone ran at {} of raw libmemcached here{}. The facade's CPU work per operation is under 0.2 µs (*Key function + herd flags + codec*) against a round trip of about 25 µs, and both make the same two system calls per operation (*System calls per operation*), so a gap of more than about 1% is the machine's noise landing on this row, or the larger request (the hashed key) at the server.",
                x(vs(g, "transport-text", BASELINE)),
                if g == "set_100B" {
                    format!(
                        ", and raw libmemcached storing exactly the facade's key and bytes (`{WIRE}`) at {} of its own short-key set",
                        x(vs(g, WIRE, BASELINE))
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    if missed(&floor) {
        why.push(format!(
            "**get hit vs the loopback floor.** The floor (`{FLOOR}`) is one raw `mn` ping-pong; a get also carries its key and its 100-byte value both ways. The text transport alone ran at {} of the floor.",
            x(vs("get_hit", "transport-text", FLOOR))
        ));
    }
    for (g, c) in &binary {
        if missed(c) {
            why.push(format!(
                "**binary facade vs raw libmemcached binary, {g}.** Our libmemcached wrapper without the facade (`wrapper-libmemcached-binary`) ran at {} of raw libmemcached binary. The wrapper borrows a handle from the pool (a mutex) and checks the key; a get is one `memcached_get` like the raw row's (one `GETK` write, whose CAS it reads from the handle's own result) and copies the value out of libmemcached's buffer into an `Item`, a set one `memcached_set`. The facade adds its key function, herd flags and codec (under 0.2 µs) and its longer (hashed) key on the wire.",
                x(vs(g, "wrapper-libmemcached-binary", BASELINE_BINARY))
            ));
        }
    }
    // The value path, from this run's own rows: the transport's time per operation, the
    // codec's time per 100 KB, the key function's per key.
    let micro = |group: &str, bench: &str| mean_ns(&r.dir, group, bench).map(duration);
    let shown = |v: Option<String>| v.unwrap_or_else(|| "(not measured)".to_string());
    let per_op = |op: &str, client: &str, per: f64| {
        inter
            .clients(op)
            .into_iter()
            .find(|(c, _)| c == client)
            .map(|(_, ops)| duration(per * 1e9 / ops))
    };
    for (op, facade, transport, c) in &value_path {
        if !missed(c) {
            continue;
        }
        let ratio = c.as_ref().map_or(String::new(), |(s, _)| s.clone());
        if *op == "set_get_100KB" && facade.ends_with("-vec") {
            why.push(format!(
                "**set+get of 100 KB as a `Vec<u8>`, `{facade}` over `{transport}` ({ratio}).** serde hands a `Vec<u8>` to a serializer, and takes one from a deserializer, one element at a time (`Serializer::collect_seq`, `Visitor::visit_seq`): the plain codec encoded 100 KB in {} and decoded it in {} in this run (*Value codec*: `vec_u8_100KB_*`), against {} and {} for the same bytes as a `String` and {} for a plain copy; the decode also builds a second 100 KB `Vec` instead of taking the transport's over (*Heap allocations per call*). The transport's whole set+get took {} here. What would close it, in `crates/newcache/src/codec/plain.rs`: on encode, `Probe` overriding `collect_seq` to `extend` its buffer from the items (a `Vec<u8>`'s come from a slice iterator, so the loop becomes a copy); on decode no serde visitor of `Vec<u8>` takes a buffer, so only knowing the type hands the transport's buffer over (`T: 'static` and `Any`), or the caller reads `serde_bytes::ByteBuf` (handed over today) or `get_raw`.",
                shown(micro("codec", "vec_u8_100KB_encode")),
                shown(micro("codec", "vec_u8_100KB_decode")),
                shown(micro("codec", "string_100KB_encode")),
                shown(micro("codec", "string_100KB_decode")),
                shown(micro("codec", "memcpy_100KB")),
                shown(per_op(op, transport, 1.0)),
            ));
        } else if *op == "set_get_100KB" {
            why.push(format!(
                "**set+get of 100 KB as a `String`, `{facade}` over `{transport}` ({ratio}).** The facade's work that grows with the value: the set copies it into the facade's own buffer before the transport copies it into its write buffer ({} for 100 KB here, `string_100KB_encode`; the buffer grows once from 256 bytes), and the get checks its UTF-8 ({}, `string_100KB_decode`; the transport's buffer is then handed over as the `String`, no copy). The transport's whole set+get took {} here. What would close it: storing a plain `str`/`[u8]` value from the caller's own bytes (no encode buffer), and a faster UTF-8 check (SIMD, e.g. `simdutf8`).",
                shown(micro("codec", "string_100KB_encode")),
                shown(micro("codec", "string_100KB_decode")),
                shown(per_op(op, transport, 1.0)),
            ));
        } else {
            why.push(format!(
                "**get_many(100), `{facade}` over `{transport}` ({ratio}).** Both read the same 100 wire keys and items in one round trip, so the difference is the facade's CPU per key: the key function (`hashed/short` {} per key, *Key functions*), reading the herd state from the flags, the `String` check of each value, and the returned map: an owned `String` key per value and the map's table (*Heap allocations per call*), and a SipHash of every key. The transport alone took {} per get_many of 100 here.{} The key function alone is {} per 100 keys, SHA-1 at the CPU's own SHA instructions: a facade that hashes its keys cannot come within 5% of a transport handed them already hashed unless the hashing overlaps the round trip (the keys sent in parts, the first while the rest are hashed), which no transport here does.",
                shown(micro("keyfn", "hashed/short")),
                shown(per_op(op, transport, 100.0)),
                if *facade == "newcache-text" {
                    format!(
                        " Without the map (`get_many_ordered`, values in key order: `newcache-text-ordered`) the text facade ran at {} of the same transport row.",
                        x(inter
                            .ratio(op, "newcache-text-ordered", transport)
                            .map(|[p50, _, _]| p50))
                    )
                } else {
                    String::new()
                },
                shown(mean_ns(&r.dir, "keyfn", "hashed/short").map(|ns| duration(ns * 100.0))),
            ));
        }
    }
    why.append(&mut r.why);
    if !why.is_empty() {
        let _ = writeln!(
            r.md,
            "### Where a target is missed, and why\n\n{}\n",
            why.iter()
                .map(|w| format!("- {w}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The chart of the async concurrency section, beside `benchmarks.svg`.
const ASYNC_CHART: &str = "benchmarks-async-concurrency.svg";

/// The I/O system calls of a `which calls` cell (`sendto 1.00, recvfrom 1.00, futex 0.20`):
/// their sum per get, the rest left out.
fn io_calls(which: &str) -> f64 {
    const IO: [&str; 8] = [
        "read", "write", "sendto", "recvfrom", "sendmsg", "recvmsg", "writev", "readv",
    ];
    which
        .split(", ")
        .filter_map(|c| c.split_once(' '))
        .filter(|(name, _)| IO.contains(name))
        .filter_map(|(_, per)| per.parse::<f64>().ok())
        .sum()
}

/// Concurrent callers against one memcached (the `async_concurrency` bench; `latencies`: its
/// TSV, `syscalls`: the syscalls helper's, whose `get-cC` lines are these clients').
fn async_concurrency(r: &mut Report, latencies: &str, syscalls: &str, chart_path: &Path) {
    use newcache_benches::concurrent::{BASELINE, CALLERS, CLIENTS};
    const GROUP: &str = "async_concurrent_get_hit";
    if benches(&r.dir, GROUP).is_empty() {
        return;
    }
    let ops = |r: &Report, client: &str, callers: usize| {
        r.ops(GROUP, &format!("{client}_{callers}"), callers as f64)
    };
    // (p50 ns, p99 ns) by client and callers.
    let percentiles = |client: &str, callers: usize| {
        latencies.lines().find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [c, n, _calls, p50, p99, ..] = f.as_slice() else {
                return None;
            };
            (*c == client && n.parse::<usize>().ok() == Some(callers))
                .then(|| Some((p50.parse::<f64>().ok()?, p99.parse::<f64>().ok()?)))
                .flatten()
        })
    };
    let mut per_caller = None;
    // (I/O calls per get, every call per get, which calls) by client and callers.
    let sys = |client: &str, callers: usize| {
        let op = format!("get-c{callers}");
        syscalls.lines().find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [c, o, total, rest @ ..] = f.as_slice() else {
                return None;
            };
            let which = rest.first().copied().unwrap_or_default();
            (*c == client && *o == op).then(|| {
                (
                    io_calls(which),
                    total.parse::<f64>().unwrap_or(f64::NAN),
                    which.to_string(),
                )
            })
        })
    };
    for l in syscalls.lines() {
        if let Some(n) = l.strip_prefix("#gets_per_caller\t") {
            per_caller = n.trim().parse::<u32>().ok();
        }
    }
    let missing: Vec<&str> = CLIENTS
        .iter()
        .copied()
        .filter(|c| CALLERS.iter().all(|n| ops(r, c, *n).is_none()))
        .collect();
    let _ = writeln!(
        r.md,
        "## Async concurrency: get hit, 1 to 256 concurrent callers\n\nThe `async_concurrency` bench (`benches/benches/async_concurrency.rs`, clients in `benches/src/concurrent.rs`): 1, 16, 64 and 256 callers at once, each doing get hits of one 100-byte value in a loop, on one memcached (`-t 2`, `-c 4096`) on the same 2 cores. Each criterion sample releases every caller at once and times from the first caller's start to the last one's finish (`iter_custom`); ops/s is all callers' gets over that wall time (criterion's mean).\n\n- `newcache-async`: **one** `AsyncCache` (`newcache://ADDR/?read_timeout=10000`: the async text transport's one auto-pipelined connection; the timeout, 500 ms by default, only so that no caller gives up under strace), shared by that many tasks on a tokio multi-thread runtime with its default worker threads ({} here).\n- `newcache-blocking`: one blocking `Cache` (the same URL: the text transport's pool with its defaults, `max_connections=64`, so 256 threads share 64 connections, and `max_idle=16`, so past 16 threads connections are closed and opened again as threads come and go: the `connect`, `close`... in its system calls) shared by that many threads.\n- `libmemcached-sys-text`: raw libmemcached, one bare handle per thread (text protocol, `TCP_NODELAY` on), **the baseline**.\n- `memcache-crate-ascii`: the `memcache` crate, one `Client` per thread (its pool of one connection), ASCII protocol.\n- `async-memcached`: the `async-memcached` crate {} (Shopify's), one `Client` (one connection: its calls take `&mut self`) per task, on the same runtime as `newcache-async`.\n\np50/p99: every call's latency, in a histogram of 1.6%-wide buckets, over the whole criterion run of the row (its warm-up included). I/O syscalls per get: `read`, `write`, `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `writev`, `readv`, counted as in *System calls per operation* (`strace -c -f` of the `syscalls` helper driving the same client code{}, minus a run with no gets{}); for the tokio clients `write` and `read` include the runtime's wake-ups of a parked worker thread (an eventfd), not only the socket's; strace slows every system call, so more requests gather per write of the pipelined `newcache-async` under it than without it, and its figure is a lower bound.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        locked_version("async-memcached").unwrap_or_else(|| "?".into()),
        per_caller.map_or(String::new(), |n| format!(
            " with every caller doing {n} gets, against the helper's own memcached, `-t 4`"
        )),
        if CALLERS.iter().all(|n| sys("newcache-async", *n).is_some()) {
            ""
        } else {
            "; a quick run counts 1 and 64 callers only"
        },
    );
    if !missing.is_empty() {
        let _ = writeln!(
            r.md,
            "**Not measured in this run:** {} (no criterion results).\n",
            missing.join(", ")
        );
    }
    let _ = writeln!(
        r.md,
        "| callers | client | ops/s | vs {BASELINE} | p50 | p99 | I/O syscalls per get | all syscalls per get |\n|---|---|---|---|---|---|---|---|"
    );
    let show = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    let mut series: Vec<(&str, Vec<(usize, f64)>)> = Vec::new();
    for callers in CALLERS {
        let base = ops(r, BASELINE, callers);
        for client in CLIENTS {
            let o = ops(r, client, callers);
            if let Some(o) = o {
                match series.iter_mut().find(|(c, _)| *c == client) {
                    Some((_, points)) => points.push((callers, o)),
                    None => series.push((client, vec![(callers, o)])),
                }
            }
            let (p50, p99) = percentiles(client, callers).unzip();
            let s = sys(client, callers);
            let _ = writeln!(
                r.md,
                "| {callers} | {client} | {} | {} | {} | {} | {} | {} |",
                show(o, 0),
                o.map_or("-".into(), |o| ratio(o, base)),
                p50.map_or("-".into(), duration),
                p99.map_or("-".into(), duration),
                show(s.as_ref().map(|s| s.0), 2),
                show(s.as_ref().map(|s| s.1), 2),
            );
        }
    }
    let which: Vec<String> = CALLERS
        .iter()
        .flat_map(|n| CLIENTS.iter().map(move |c| (*c, *n)))
        .filter_map(|(c, n)| sys(c, n).map(|s| format!("| {n} | {c} | {} |", s.2)))
        .collect();
    if !which.is_empty() {
        let _ = writeln!(
            r.md,
            "\nWhich calls, per get (strace):\n\n| callers | client | calls |\n|---|---|---|\n{}",
            which.join("\n")
        );
    }
    let _ = writeln!(r.md, "\n![async concurrency, ops/s]({ASYNC_CHART})\n");
    if let Err(e) = async_chart(chart_path, &series) {
        eprintln!("report: cannot draw the async concurrency chart: {e}");
    }

    // The targets, as ratios in this run.
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let vs_raw = ops(r, "newcache-async", 64).zip(ops(r, BASELINE, 64));
    let io64 = sys("newcache-async", 64).map(|s| s.0);
    let vs_blocking = ops(r, "newcache-async", 1).zip(ops(r, "newcache-blocking", 1));
    let cells = [
        (
            "`AsyncCache` >= 2x raw libmemcached (handle per thread) ops/s, 64 callers",
            vs_raw.map(|(a, b)| (a / b, a / b >= 2.0)),
            "x",
        ),
        (
            "`AsyncCache` <= 0.25 write+read syscalls per get, 64 callers",
            io64.map(|x| (x, x <= 0.25)),
            "",
        ),
        (
            "`AsyncCache` >= 0.9x the blocking `Cache` ops/s, 1 caller",
            vs_blocking.map(|(a, b)| (a / b, a / b >= 0.9)),
            "x",
        ),
    ];
    let async_p50 = |client: &str, callers: usize| {
        percentiles(client, callers).map_or("-".into(), |(p50, _)| duration(p50))
    };
    if vs_raw.is_some_and(|(a, b)| a / b < 2.0) {
        r.why.push(format!(
            "**`AsyncCache` at 64 callers, ops/s against raw libmemcached.** p50 latency {} against {}; I/O syscalls per get {} against {} (*Async concurrency*).",
            async_p50("newcache-async", 64),
            async_p50(BASELINE, 64),
            show(io64, 2),
            show(sys(BASELINE, 64).map(|s| s.0), 2),
        ));
    }
    if io64.is_some_and(|x| x > 0.25) {
        r.why.push(format!(
            "**`AsyncCache` at 64 callers, I/O syscalls per get.** Under strace, per get: {}. Fewer requests gathered per write or read than the target needs.",
            sys("newcache-async", 64).map_or("-".into(), |s| s.2),
        ));
    }
    if vs_blocking.is_some_and(|(a, b)| a / b < 0.9) {
        r.why.push(format!(
            "**`AsyncCache` at 1 caller against the blocking `Cache`.** With one caller nothing is there to gather: each get is one round trip with one write and one read, as in the blocking `Cache`, plus the async transport's hand-offs: the caller's task queues its request for the connection's task, which writes it, reads the reply and wakes the caller, on a runtime whose worker threads park and wake in between. p50 latency {} against {} for the blocking `Cache` (and {} for `async-memcached`, whose task writes and reads its own connection); under strace, per get, `newcache-async` made {} against the blocking `Cache`'s {}. What would close it: a path on which a caller alone on an idle connection writes its request and reads its reply itself, with no hand-off to the connection's task.",
            async_p50("newcache-async", 1),
            async_p50("newcache-blocking", 1),
            async_p50("async-memcached", 1),
            sys("newcache-async", 1).map_or("-".into(), |s| s.2),
            sys("newcache-blocking", 1).map_or("-".into(), |s| s.2),
        ));
    }
    for (what, got, unit) in cells {
        let shown = got.map_or("not measured".to_string(), |(x, met)| {
            format!("{x:.2}{unit}: {}", verdict(met))
        });
        let _ = writeln!(r.targets, "| {what} | {shown} |");
    }
    let _ = writeln!(
        r.md,
        "Targets (also in *Targets, this run*): at 64 callers `newcache-async` ran at {} of raw libmemcached's ops/s (at least 2x wanted) with {} I/O syscalls per get (at most 0.25 wanted); at 1 caller at {} of the blocking `Cache` (at least 0.9x wanted). Ratios of criterion rows measured one after another, seconds apart, on a shared machine: read them with that noise in mind.\n",
        vs_raw.map_or("-".into(), |(a, b)| format!("{:.2}x", a / b)),
        show(io64, 2),
        vs_blocking.map_or("-".into(), |(a, b)| format!("{:.2}x", a / b)),
    );
}

/// Ops/s against callers, one line per client.
fn async_chart(
    path: &Path,
    series: &[(&str, Vec<(usize, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use newcache_benches::concurrent::CALLERS;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let at = |callers: usize| CALLERS.iter().position(|c| *c == callers).unwrap_or(0) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "get hit, total ops/s by concurrent callers (one memcached -t 2, same run)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2..(CALLERS.len() as f64 - 0.8), 0.0..max)?;
    chart
        .configure_mesh()
        .x_labels(CALLERS.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 0.01 && i >= 0.0 {
                CALLERS
                    .get(i as usize)
                    .map_or(String::new(), |c| c.to_string())
            } else {
                String::new()
            }
        })
        .x_desc("concurrent callers")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    let colors = [
        RGBColor(42, 157, 143),
        RGBColor(38, 70, 83),
        RGBColor(231, 111, 81),
        RGBColor(141, 153, 174),
        RGBColor(233, 196, 106),
    ];
    for (i, (client, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let xy: Vec<(f64, f64)> = points.iter().map(|(c, o)| (at(*c), *o)).collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?
            .label(*client)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(xy.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
