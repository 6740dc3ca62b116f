//! Turns criterion's results into `docs/benchmarks.md` and `docs/benchmarks.svg`:
//! `report <criterion dir> <docs dir> <command that measured> [--syscalls FILE]
//! [--instructions FILE] [--allocations FILE] [--interleaved FILE] [--async-concurrency FILE]
//! [--observe FILE]`, the files written by `cargo xtask bench` (the `syscalls` helper under
//! strace and under callgrind, the `allocations`, `interleaved` and `async_concurrency`
//! benches, and the facade's `observe` bench).

use std::fmt::Write as _;
use std::path::PathBuf;

// Its modules are in a folder of their own: a file in src/bin/ would be a binary of its own.
#[path = "report/async_concurrency.rs"]
mod async_concurrency;
#[path = "report/instructions.rs"]
mod instructions;
#[path = "report/machine.rs"]
mod machine;
#[path = "report/observe.rs"]
mod observe;
#[path = "report/results.rs"]
mod results;
#[path = "report/sections.rs"]
mod sections;
#[path = "report/targets.rs"]
mod targets;

use async_concurrency::{async_concurrency, OneCaller, ASYNC_CHART};
use machine::machine;
use results::{benches, repetitions, Report};
use sections::{
    allocations_section, chart, concurrency, interleaved_section, syscalls_section, tcp_nodelay,
    Interleaved,
};
use targets::targets;

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

/// Command-line arguments.
struct Args {
    criterion: PathBuf,
    docs: PathBuf,
    command: String,
    syscalls: Option<PathBuf>,
    instructions: Option<PathBuf>,
    allocations: Option<PathBuf>,
    interleaved: Option<PathBuf>,
    async_concurrency: Option<PathBuf>,
    observe: Option<PathBuf>,
}

fn args() -> Args {
    let usage = || -> ! {
        eprintln!(
            "usage: report <criterion dir> <docs dir> <command> [--syscalls FILE] [--instructions FILE] [--allocations FILE] [--interleaved FILE] [--async-concurrency FILE] [--observe FILE]"
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
        instructions: None,
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
            "--instructions" => args.instructions = Some(file.into()),
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
        "Rows:\n\n- `newcache-*`: the whole `Cache` facade (key function + herd state in the flags + codec) over each transport; in set+get 100 KB, `-string` stores and reads a `String`, `-vec` a `Vec<u8>`. In get_many and the interleaved get hit, `newcache-async` is the `AsyncCache` (one task awaiting a burst of calls on a current-thread runtime); in get_many, `newcache-text-ordered` is `get_many_ordered` (values in key order, no map), and `-identity` a cache whose key function returns the key as it is (a user's `Fn(&str) -> String`), reading the raw clients' own short keys: the facade with no key function's cost.\n- `transport-text`: the Rust text transport alone (no key function, herd or codec); `transport-tokio` (interleaved get hit and get_many) the async text transport alone, awaited like `newcache-async`.\n- `libmemcached-sys-text`, `libmemcached-sys-binary`: **the baseline**, raw libmemcached: one handle and the C calls a C program makes (`memcached_get`, `memcached_set`, `memcached_mget` + `memcached_fetch_result` into a result it owns), as bare `libmemcached-sys` FFI calls (`newcache_transport_binary::bare`), `MEMCACHED_BEHAVIOR_TCP_NODELAY` = 1.\n- `wrapper-libmemcached-*`: our `newcache-transport-binary` (pool, key checks, items) without the facade.\n- `memcache-crate-*`: the `memcache` crate, ASCII and its default binary protocol.\n- `loopback-floor-mn`: a raw `mn` ping-pong on one TCP connection: the floor for one round trip; `loopback-floor-mn-tokio` (interleaved get hit) the same on a tokio socket, awaited like `newcache-async`: the runtime's own cost of a round trip.\n\n`vs libmemcached-sys-text` is the ratio to raw libmemcached's text protocol on the same operation in the same run; `vs floor` to the floor's round trips per second.\n"
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
        &OneCaller {
            cache: inter.ratio("get_hit", "newcache-async", "newcache-text"),
            transport: inter.ratio("get_hit", "transport-tokio", "transport-text"),
            floor: inter.ratio("get_hit", "loopback-floor-mn-tokio", "loopback-floor-mn"),
        },
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
    if let Some(text) = args
        .instructions
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        instructions::section(&mut r, &text);
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
