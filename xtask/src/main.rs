//! Project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test`: installs memcached and libmemcached when missing (as root, from
//!   Debian's packages), then runs the format check, clippy with `-D warnings`, and every test
//!   of the workspace with all features.
//! - `cargo xtask demo`: starts a memcached of its own and shows wire keys and the herd scene
//!   (falls back to the in-process memory transport, said plainly, when memcached is absent).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <test|demo|bench [--quick]>
  test    install what is missing (memcached, libmemcached), then fmt, clippy and every test
  demo    wire keys and the thundering-herd scene against a memcached the demo starts itself
  bench   criterion benchmarks of every transport and peer, then docs/benchmarks.md";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    eprintln!("xtask: {what}: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn on_path(bin: &str) -> bool {
    which(bin).is_some()
}

fn which(bin: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(bin)).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn has_libmemcached() -> bool {
    Command::new("pkg-config")
        .args(["--exists", "libmemcached"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
        .unwrap_or(false)
}

/// Debian packages the tests need, each with the check that says it is there.
fn missing_packages() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !on_path("memcached") {
        missing.push("memcached");
    }
    if !on_path("pkg-config") {
        missing.push("pkg-config");
    }
    // twemproxy: the text transport's proxy test runs through it.
    if !on_path("nutcracker") {
        missing.push("nutcracker");
    }
    if !has_libmemcached() {
        missing.push("libmemcached-dev");
    }
    // The SASL test needs Cyrus SASL's PLAIN mechanism (only a Recommends of libsasl2-2).
    if on_path("dpkg-query") && !deb_installed("libsasl2-modules") {
        missing.push("libsasl2-modules");
    }
    // Debian's own python3 with pylibmc: the Python-interop tests read and write through it.
    let pylibmc = Command::new("/usr/bin/python3")
        .args(["-c", "import pylibmc"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !pylibmc {
        missing.push("python3-pylibmc");
    }
    missing
}

/// `apt-get install` of Debian packages, without recommends or questions.
fn apt_install(packages: &[&str]) -> Result<(), String> {
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install, &format!("apt-get install {}", packages.join(" ")))
}

fn install_prerequisites() -> Result<(), String> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    if is_root() && on_path("apt-get") {
        eprintln!(
            "xtask: installing {} from Debian's packages",
            missing.join(" ")
        );
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        run(update, "apt-get update")?;
        apt_install(&missing)?;
        let still = missing_packages();
        if !still.is_empty() {
            return Err(format!("still missing after install: {}", still.join(" ")));
        }
        return Ok(());
    }
    Err(format!(
        "missing: {}. Install them first:\n  Debian/Ubuntu: sudo apt-get install memcached libmemcached-dev libsasl2-modules pkg-config python3-pylibmc nutcracker\n  macOS:         brew install memcached libmemcached pkg-config twemproxy",
        missing.join(" ")
    ))
}

fn test(args: &[String]) -> Result<(), String> {
    install_prerequisites()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt, "format check")?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy, "clippy")?;
    // Every unit, integration and bench target (criterion runs each bench once in test
    // mode), then the doctests, which --all-targets leaves out.
    let mut tests = cargo();
    tests
        .args(["test", "--workspace", "--all-features", "--all-targets"])
        .args(args);
    run(tests, "tests")?;
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--all-features", "--doc"]);
    run(doc, "doctests")?;
    // The facade as a user without libmemcached builds it: default features only, where
    // asking for binary=true must be a clear error, not a fallback.
    let mut default = cargo();
    default.args(["test", "-p", "newcache", "--lib"]);
    run(default, "facade with default features")?;
    eprintln!("xtask: all checks passed");
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
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
        .arg(&allocations);
    if let Some(syscalls) = syscalls {
        report.arg("--syscalls").arg(syscalls);
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
fn bench_cargo(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args)
        .args(["-p", "newcache-benches", "--features", "binary"]);
    cmd
}

/// Builds one binary of the benches package (cargo bench's profile, feature `binary`) and
/// returns the path cargo reports for it: the build's own artifact, not whatever another
/// build (`--release` links there too) last linked at `target/release/<name>`.
fn bench_binary(name: &str) -> Result<PathBuf, String> {
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
        .filter(|l| l.contains(&format!("\"name\":\"{name}\"")))
        .find_map(|l| {
            let rest = l.split_once("\"executable\":\"")?.1;
            Some(PathBuf::from(rest.split_once('"')?.0))
        })
        .ok_or_else(|| format!("cargo did not report the {name} executable"))
}

/// The clients and operations whose system calls per operation the report shows.
const SYSCALL_CLIENTS: [&str; 6] = [
    "newcache-text",
    "transport-text",
    "libmemcached-sys-text",
    "libmemcached-sys-binary",
    "memcache-crate-ascii",
    "memcache-crate-binary",
];
const SYSCALL_OPS: [&str; 3] = ["get", "set", "get_many"];

/// `strace -c` output: calls per system call name (the summary's `total` line left out).
fn strace_calls(summary: &str) -> Vec<(String, u64)> {
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
fn syscall_counts(target: &str, helper: &Path, quick: bool) -> Result<Option<PathBuf>, String> {
    let out = PathBuf::from(format!("{target}/syscalls.tsv"));
    if !on_path("strace") {
        if is_root() && on_path("apt-get") {
            apt_install(&["strace"])?;
        } else {
            eprintln!("xtask: strace not found; the report will have no system call counts");
            return Ok(None);
        }
    }
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
    let mut server = server
        .spawn()
        .map_err(|e| format!("cannot start memcached: {e}"))?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let addr = format!("127.0.0.1:{port}");
    let trace = format!("{target}/strace.txt");
    let count = |client: &str, op: &str, n: u32| -> Result<Vec<(String, u64)>, String> {
        let status = Command::new("strace")
            .args(["-c", "-f", "-o", &trace])
            .arg(helper)
            .args([addr.as_str(), client, op])
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
    let result = (|| {
        for client in SYSCALL_CLIENTS {
            for op in SYSCALL_OPS {
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
        }
        Ok::<(), String>(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result?;
    std::fs::write(&out, lines).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Some(out))
}

fn demo(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "newcache",
        "--features",
        "memory",
        "--example",
        "demo",
        "--",
    ])
    .args(args);
    run(cmd, "demo")
}
