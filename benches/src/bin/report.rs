//! Turns criterion's results into `docs/benchmarks.md` and `docs/benchmarks.svg`:
//! `report <criterion dir> <docs dir> <command that measured>`.

use std::fmt::Write as _;
use std::path::Path;

const GROUPS: &[(&str, &str, f64)] = &[
    ("get_hit", "get hit", 1.0),
    ("get_miss", "get miss", 1.0),
    ("set_100B", "set 100 B", 1.0),
    ("get_many_100", "get_many of 100 (keys/s)", 100.0),
    ("set_get_100KB", "set+get 100 KB (pairs/s)", 1.0),
];
const BASELINE: &str = "libmemcached-text";
const FLOOR: &str = "loopback-floor-mn";

/// Mean time per iteration in ns, from `<dir>/<group>/<bench>/new/estimates.json`.
fn mean_ns(dir: &Path, group: &str, bench: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(dir.join(group).join(bench).join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("mean")?.get("point_estimate")?.as_f64()
}

fn benches(dir: &Path, group: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(group))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "report")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [criterion, docs, command] = args.as_slice() else {
        eprintln!("usage: report <criterion dir> <docs dir> <command>");
        std::process::exit(2);
    };
    let dir = Path::new(criterion);
    let floor_ns = mean_ns(dir, "get_hit", FLOOR);
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Measured by `{command}` (criterion; each bench starts its own memcached 1.6.18, `-t 4`, on loopback; one connection per client, sequential, 100-byte values unless said). Ops/s are from criterion's mean. **Ratios are what to read**: the machine (2 cores, shared) is noisy, so absolute figures move between runs while ratios from one run hold.\n"
    );
    let _ = writeln!(
        md,
        "- `newcache-*`: the whole `Cache` facade (key function + herd envelope + codec) over each transport.\n- `libmemcached-*`: libmemcached 1.1.4 through `newcache-transport-binary` with no facade (a thin safe wrapper, not bare C calls).\n- `memcache-crate-*`: the `memcache` crate 0.21, ASCII and its default binary protocol.\n- `loopback-floor-mn`: a raw `mn` ping-pong on one TCP connection, the floor for one round trip.\n- `vs libmemcached text` is the ratio to `libmemcached-text` on the same op in the same run; `vs floor` to the floor's round trips/s.\n"
    );
    let mut chart: Vec<(String, f64)> = Vec::new();
    for (group, title, elements) in GROUPS {
        let names = benches(dir, group);
        if names.is_empty() {
            continue;
        }
        let base = mean_ns(dir, group, BASELINE).map(|ns| elements * 1e9 / ns);
        let _ = writeln!(
            md,
            "## {title}\n\n| client | ops/s | vs libmemcached text | vs floor |\n|---|---|---|---|"
        );
        let mut rows: Vec<(String, f64)> = names
            .iter()
            .filter_map(|n| mean_ns(dir, group, n).map(|ns| (n.clone(), elements * 1e9 / ns)))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (name, ops) in &rows {
            let vs_base = base.map_or("-".into(), |b| format!("{:.2}x", ops / b));
            let vs_floor = floor_ns.map_or("-".into(), |f| format!("{:.2}x", ops / (1e9 / f)));
            let _ = writeln!(md, "| {name} | {ops:.0} | {vs_base} | {vs_floor} |");
            if *group == "get_hit" {
                chart.push((name.clone(), *ops));
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "![get hit, ops/s](benchmarks.svg)\n");
    let _ = writeln!(
        md,
        "Targets (issue 5) not yet checked here: no allocation on the get path beyond the returned value, concurrency (1-8 threads), syscall counts and raw libmemcached through bare C calls come next."
    );
    std::fs::write(Path::new(docs).join("benchmarks.md"), md).expect("write benchmarks.md");

    let max = chart.iter().map(|c| c.1).fold(1.0f64, f64::max);
    let (w, bar, gap, left) = (720.0, 24.0, 8.0, 250.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">get hit, operations per second (one connection, loopback)</text>\n",
        40.0 + chart.len() as f64 * (bar + gap)
    );
    for (i, (name, ops)) in chart.iter().enumerate() {
        let y = 32.0 + i as f64 * (bar + gap);
        let len = (w - left - 80.0) * ops / max;
        let color = if name.starts_with("newcache") {
            "#2a9d8f"
        } else {
            "#8d99ae"
        };
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{:.0}\">{name}</text><rect x=\"{left}\" y=\"{y:.0}\" width=\"{len:.1}\" height=\"{bar}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.0}\">{ops:.0}</text>",
            y + bar * 0.7,
            left + len + 5.0,
            y + bar * 0.7
        );
    }
    svg.push_str("</svg>\n");
    std::fs::write(Path::new(docs).join("benchmarks.svg"), svg).expect("write benchmarks.svg");
    println!("wrote {docs}/benchmarks.md and {docs}/benchmarks.svg");
}
