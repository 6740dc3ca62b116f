//! `cargo xtask bench`: the criterion and interleaved benches, the system-call counts under
//! strace, the client's instructions under callgrind ([`instruction_counts`]), the cost of
//! metrics and tracing, then the report (docs/benchmarks.md).

#[allow(unused_imports)]
use super::*;

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    install_prerequisites()?;
    let quick = args.iter().any(|a| a == "--quick");
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", root().display()));
    let started = std::time::Instant::now();
    // Everything is built in cargo bench's profile, so the syscalls helper and the report
    // share every dependency with the benches (a `--release` build of the helpers would
    // compile the whole workspace a second time).
    let syscalls_helper = bench_binary("syscalls")?;
    let report_bin = bench_binary("report")?;
    run(bench_cargo(&["bench", "--no-run"]), "build the benches")?;
    eprintln!("xtask: built in {:.0} s", started.elapsed().as_secs_f64());
    let syscalls = syscall_counts(&target, &syscalls_helper, quick)?;
    // A measure beside the benches, not one of them: without it the report has no such
    // section, and says why on stderr.
    let instructions = instruction_counts(&target, &syscalls_helper, quick).unwrap_or_else(|e| {
        eprintln!("xtask: no instruction counts in this report: {e}");
        None
    });
    let criterion_dir = PathBuf::from(format!("{target}/criterion"));
    if criterion_dir.exists() {
        // Old results (and old repetitions) must not mix with this run's.
        std::fs::remove_dir_all(&criterion_dir)
            .map_err(|e| format!("{}: {e}", criterion_dir.display()))?;
    }
    let criterion = |names: &[&str], baseline: Option<String>| {
        let mut cmd = bench_cargo(&["bench"]);
        for name in names {
            cmd.args(["--bench", name]);
        }
        if let Some(b) = baseline {
            cmd.args(["--", "--save-baseline", &b]);
        }
        if quick {
            cmd.env("NEWCACHE_BENCH_QUICK", "1");
        }
        run(cmd, "benchmarks")
    };
    criterion(
        &["concurrency", "tcp_nodelay", "cluster", "keyfn", "envelope"],
        None,
    )?;
    // The transport rows are compared with each other, so the full run repeats that bench
    // and the report takes medians: a slow patch of this shared machine then hits every
    // row in some run instead of one row in the only run.
    let repeats = if quick { 1 } else { 3 };
    for rep in 1..=repeats {
        criterion(&["transports"], Some(format!("rep{rep}")))?;
    }
    let allocations = PathBuf::from(format!("{target}/allocations.tsv"));
    let mut count = bench_cargo(&["bench", "--bench", "allocations"]);
    count.env("NEWCACHE_ALLOCATIONS_OUT", &allocations);
    run(count, "allocations per call")?;
    // The targets' ratios, every client taking its turn within each round.
    let interleaved = PathBuf::from(format!("{target}/interleaved.tsv"));
    let mut turns = bench_cargo(&["bench", "--bench", "interleaved"]);
    turns.env("NEWCACHE_INTERLEAVED_OUT", &interleaved);
    if quick {
        turns.env("NEWCACHE_BENCH_QUICK", "1");
    }
    run(turns, "interleaved ratios")?;
    // Concurrent callers (1-256): ops/s in criterion's results, latency percentiles here.
    let async_concurrency = PathBuf::from(format!("{target}/async_concurrency.tsv"));
    let mut callers = bench_cargo(&["bench", "--bench", "async_concurrency"]);
    callers.env("NEWCACHE_ASYNC_CONCURRENCY_OUT", &async_concurrency);
    if quick {
        callers.env("NEWCACHE_BENCH_QUICK", "1");
    }
    run(callers, "async concurrency")?;
    // What metrics and tracing cost on a get hit: the facade's own bench, with both features.
    let observe = PathBuf::from(format!("{target}/observe.tsv"));
    let mut watched = cargo();
    watched
        .args(["bench", "-p", "newcache", "--features", "metrics,tracing"])
        .args(["--bench", "observe"])
        .env("NEWCACHE_OBSERVE_OUT", &observe);
    if quick {
        watched.env("NEWCACHE_BENCH_QUICK", "1");
    }
    run(watched, "metrics and tracing")?;
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let mut report = Command::new(report_bin);
    report
        .current_dir(root())
        .arg(&criterion_dir)
        .arg(root().join("docs"))
        .arg(command)
        .arg("--allocations")
        .arg(&allocations)
        .arg("--interleaved")
        .arg(&interleaved)
        .arg("--async-concurrency")
        .arg(&async_concurrency)
        .arg("--observe")
        .arg(&observe);
    if let Some(syscalls) = syscalls {
        report.arg("--syscalls").arg(syscalls);
    }
    if let Some(instructions) = instructions {
        report.arg("--instructions").arg(instructions);
    }
    run(report, "report")?;
    eprintln!(
        "xtask: {command} took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo <args> -p newcache-benches --features binary`, the benches package with the
/// libmemcached rows.
pub(crate) fn bench_cargo(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args)
        .args(["-p", "newcache-benches", "--features", "binary"]);
    cmd
}

/// Builds one binary of the benches package (cargo bench's profile, feature `binary`) and
/// returns the path cargo reports for it: the build's own artifact, not whatever another
/// build (`--release` links there too) last linked at `target/release/<name>`.
pub(crate) fn bench_binary(name: &str) -> Result<PathBuf, String> {
    let mut build = cargo();
    build.args([
        "build",
        "--profile",
        "bench",
        "--quiet",
        "-p",
        "newcache-benches",
        "--features",
        "binary",
        "--bin",
        name,
        "--message-format=json",
    ]);
    build.stderr(std::process::Stdio::inherit());
    let out = build
        .output()
        .map_err(|e| format!("cargo build --bin {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build --bin {name} failed ({})", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(artifact)
        .find(|(target, _)| target == name)
        .map(|(_, exe)| exe)
        .ok_or_else(|| format!("cargo did not report the {name} executable"))
}

/// A `compiler-artifact` line of cargo's JSON messages: its target's name and executable
/// (`None` for other lines, and for artifacts without an executable, such as libraries).
pub(crate) fn artifact(line: &str) -> Option<(String, PathBuf)> {
    if !line.contains("\"reason\":\"compiler-artifact\"") {
        return None;
    }
    let target = json_string(line.split_once("\"target\":")?.1, "name")?;
    Some((target, PathBuf::from(json_string(line, "executable")?)))
}

/// The clients and operations whose system calls per operation the report shows.
pub(crate) const SYSCALL_CLIENTS: [&str; 6] = [
    "newcache-text",
    "transport-text",
    "libmemcached-sys-text",
    "libmemcached-sys-binary",
    "memcache-crate-ascii",
    "memcache-crate-binary",
];
pub(crate) const SYSCALL_OPS: [&str; 3] = ["get", "set", "get_many"];
/// The `async_concurrency` bench's clients, counted with that many concurrent callers
/// (op `get-cC`): every caller count in a full run, 1 and 64 (the targets') in a quick one.
pub(crate) const SYSCALL_CONCURRENT_CLIENTS: [&str; 5] = [
    "newcache-async",
    "newcache-blocking",
    "libmemcached-sys-text",
    "memcache-crate-ascii",
    "async-memcached",
];
pub(crate) const SYSCALL_CONCURRENT_CALLERS: [u32; 4] = [1, 16, 64, 256];

/// `strace -c` output: calls per system call name (the summary's `total` line left out).
pub(crate) fn strace_calls(summary: &str) -> Vec<(String, u64)> {
    summary
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `% time, seconds, usecs/call, calls, [errors,] syscall`
            let name = *fields.last()?;
            let calls = fields.get(3)?.parse().ok()?;
            (fields.len() >= 5 && name != "total" && name != "syscall")
                .then(|| (name.to_string(), calls))
        })
        .collect()
}

/// Runs the `syscalls` helper under `strace -c -f` for every client and operation, 0 and
/// N times, against a memcached started here (not traced), and writes
/// `client<TAB>op<TAB>calls per op<TAB>which calls` lines to `target/syscalls.tsv`.
/// Returns the file's path, or `None` when strace is missing and cannot be installed.
pub(crate) fn syscall_counts(
    target: &str,
    helper: &Path,
    quick: bool,
) -> Result<Option<PathBuf>, String> {
    let out = PathBuf::from(format!("{target}/syscalls.tsv"));
    if !have_tool("strace", "system call counts")? {
        return Ok(None);
    }
    with_helper_server(|addr| {
        let lines = count_syscalls(target, helper, addr, quick)?;
        std::fs::write(&out, lines).map_err(|e| format!("{}: {e}", out.display()))
    })?;
    Ok(Some(out))
}

/// The lines of `target/syscalls.tsv`: every client and operation under strace, against
/// the memcached at `addr`.
fn count_syscalls(target: &str, helper: &Path, addr: &str, quick: bool) -> Result<String, String> {
    let trace = format!("{target}/strace.txt");
    let count = |client: &str, op: &str, n: u32| -> Result<Vec<(String, u64)>, String> {
        let status = Command::new("strace")
            .args(["-c", "-f", "-o", &trace])
            .arg(helper)
            .args([addr, client, op])
            .arg(n.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("strace: {e}"))?;
        if !status.success() {
            return Err(format!("strace {client} {op} {n} failed ({status})"));
        }
        let text = std::fs::read_to_string(&trace).map_err(|e| format!("{trace}: {e}"))?;
        let calls = strace_calls(&text);
        if calls.is_empty() {
            return Err(format!("no calls in strace's summary for {client} {op}"));
        }
        Ok(calls)
    };
    // The counts are exact, not sampled: a quick run needs fewer operations.
    let n: u32 = if quick { 100 } else { 200 };
    let mut lines = format!("#ops\t{n}\n");
    // Concurrent callers share `per_caller` gets each.
    let per_caller: u32 = if quick { 20 } else { 50 };
    lines.push_str(&format!("#gets_per_caller\t{per_caller}\n"));
    let concurrent = SYSCALL_CONCURRENT_CLIENTS.iter().flat_map(|client| {
        SYSCALL_CONCURRENT_CALLERS
            .iter()
            .filter(|c| !quick || **c == 1 || **c == 64)
            .map(move |c| (*client, format!("get-c{c}"), c * per_caller))
    });
    let pairs: Vec<(&str, String, u32)> = SYSCALL_CLIENTS
        .iter()
        .flat_map(|client| SYSCALL_OPS.iter().map(|op| (*client, op.to_string(), n)))
        .chain(concurrent)
        .collect();
    for (client, op, n) in pairs {
        let op = op.as_str();
        let base = count(client, op, 0)?;
        let with = count(client, op, n)?;
        let mut per_op: Vec<(String, f64)> = with
            .iter()
            .map(|(name, calls)| {
                let before = base.iter().find(|(b, _)| b == name).map_or(0, |b| b.1);
                (
                    name.clone(),
                    calls.saturating_sub(before) as f64 / f64::from(n),
                )
            })
            .filter(|(_, per)| *per >= 0.005)
            .collect();
        per_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = per_op.iter().map(|p| p.1).sum();
        let which: Vec<String> = per_op
            .iter()
            .map(|(name, per)| format!("{name} {per:.2}"))
            .collect();
        lines.push_str(&format!(
            "{client}\t{op}\t{total:.2}\t{}\n",
            which.join(", ")
        ));
    }
    Ok(lines)
}

/// True when `bin` is on the PATH, after installing its Debian package (of the same name)
/// when root; else says on stderr that the report will have no `what`.
pub(crate) fn have_tool(bin: &str, what: &str) -> Result<bool, String> {
    if on_path(bin) {
        return Ok(true);
    }
    if is_root() && on_path("apt-get") {
        apt_install(&[bin])?;
        return Ok(true);
    }
    eprintln!("xtask: {bin} not found; the report will have no {what}");
    Ok(false)
}

/// Runs `measure` with the address of a memcached started for it ([`helper_server`]), then
/// stops that memcached, whatever `measure` returned.
pub(crate) fn with_helper_server<T>(
    measure: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    let (mut server, addr) = helper_server()?;
    let result = measure(&addr);
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// A memcached for the measuring helpers (`syscalls` under strace or callgrind), started
/// here and not traced: `-t 4`, on a free port of 127.0.0.1. Returns it and its address.
pub(crate) fn helper_server() -> Result<(std::process::Child, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    let mut server = Command::new(which("memcached").ok_or("memcached not found")?);
    server.args([
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-t",
        "4",
    ]);
    if is_root() {
        server.args(["-u", "root"]);
    }
    let server = server
        .spawn()
        .map_err(|e| format!("cannot start memcached: {e}"))?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok((server, format!("127.0.0.1:{port}")))
}
