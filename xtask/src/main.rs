//! Project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test`: installs memcached and libmemcached when missing (as root, from
//!   Debian's packages), then runs the format check, clippy with `-D warnings`, and every test
//!   of the workspace with all features; then, with pkg-config unable to find libmemcached,
//!   the facade's default-features tests and a build of the default workspace members; and
//!   the fuzz corpus replay. After the build of the tests, two lanes of steps run at once
//!   (see `two_lanes`; `XTASK_TEST_LANES=1` runs them one at a time). Each step says how long
//!   it took, in wall and CPU time.
//! - `cargo xtask demo`: starts a memcached of its own and shows wire keys and the herd scene
//!   (falls back to the in-process memory transport, said plainly, when memcached is absent).
//! - `cargo xtask bench [--quick]`: the criterion benchmarks, then `docs/benchmarks.md`.
//! - `cargo xtask leakcheck`: builds the libmemcached transport's tests (the binary
//!   conformance suite, `crates/transport-binary`'s `transport`, `sasl` and `behaviors`, and
//!   `crates/libmemcached-sys`'s `layout` and `calls`) and runs each under valgrind's
//!   memcheck (installing valgrind as root when missing); fails on any definite leak or
//!   memory error. Slow (minutes), so not part of `cargo xtask test`.
//! - `cargo xtask soak [--secs N] [--transport text|binary|all]`: the soak
//!   (`tests/src/bin/soak.rs`): 16 threads of mixed, checksummed operations on three
//!   memcached servers that are stopped, killed and restarted; fails on any wrong value,
//!   memory growth or over-long call. Not part of `cargo xtask test` (a minute by default).
//! - `cargo xtask fuzz [--secs N] [TARGET]`: the cargo-fuzz targets of `fuzz/` (installing
//!   cargo-fuzz when missing), each for N seconds (default 60) with the nightly toolchain;
//!   fails when one finds a crash, which it copies to `fuzz/regressions/TARGET/`. `cargo xtask
//!   test` replays `fuzz/corpus/` and `fuzz/regressions/` through the same targets on stable.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <test|demo|bench [--quick]|leakcheck|fuzz [--secs N] [TARGET]|soak [--secs N] [--transport text|binary|all]>
  test       install what is missing (memcached, libmemcached), then fmt, clippy and every test
  demo       wire keys and the thundering-herd scene against a memcached the demo starts itself
  bench      criterion benchmarks of every transport and peer, then docs/benchmarks.md
  leakcheck  the libmemcached transport's tests under valgrind: fails on definite leaks or memory errors
  fuzz       each fuzz target of fuzz/ for N seconds (default 60, nightly): fails on a crash, saved to fuzz/regressions/
  soak       16 threads of mixed operations for N seconds (default 60) on 3 memcached servers stopped, killed and restarted: fails on a wrong value, memory growth or a slow call";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("leakcheck") => leakcheck(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("soak") => soak(&args[1..]),
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
    // CI builds from an empty target directory, once: incremental compilation's caches of
    // the workspace crates (a hundred test crates) are written and never read, and cost
    // about 15% of the test build's CPU there. Elsewhere it stays as the user has it (a
    // change of it rebuilds the workspace crates, so a developer's `cargo test` and `cargo
    // xtask test` keep sharing them).
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
        && std::env::var_os("CARGO_INCREMENTAL").is_none()
    {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

fn run(cmd: Command, what: &str) -> Result<(), String> {
    Lane::Terminal.run(cmd, what)
}

/// Where a step's output goes: the terminal, or a log file, for the steps `cargo xtask
/// test` runs beside the others (printed whole when they are done, not interleaved).
enum Lane {
    Terminal,
    Log(PathBuf),
}

impl Lane {
    /// A line of xtask's own, where the steps' output goes.
    fn say(&self, line: &str) {
        use std::io::Write as _;
        match self {
            Lane::Terminal => eprintln!("{line}"),
            Lane::Log(path) => {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
    }

    /// Runs `cmd` (its output where this lane's goes) and says how long it took.
    fn status(&self, mut cmd: Command, what: &str) -> Result<std::process::ExitStatus, String> {
        self.say(&format!("xtask: {what}: {cmd:?}"));
        if let Lane::Log(path) = self {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let err = file
                .try_clone()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            cmd.stdout(file).stderr(err);
        }
        let timer = StepTimer::start();
        let status = cmd
            .status()
            .map_err(|e| format!("{what}: cannot run: {e}"))?;
        self.say(&timer.line(what));
        Ok(status)
    }

    fn run(&self, cmd: Command, what: &str) -> Result<(), String> {
        let status = self.status(cmd, what)?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({status})"))
        }
    }
}

/// Set while `cargo xtask test` runs two lanes of steps at once: a step's CPU time, read as
/// this process's children's, would then count the other lane's too, so it is not shown.
static TWO_LANES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A step's wall time, and the CPU time (user + system) of the processes it ran, for the
/// `xtask: <step> took N s` lines: on this shared 2-core machine wall time alone says little.
struct StepTimer {
    started: std::time::Instant,
    cpu: Option<f64>,
}

impl StepTimer {
    fn start() -> StepTimer {
        StepTimer {
            started: std::time::Instant::now(),
            cpu: children_cpu_secs(),
        }
    }

    fn line(&self, what: &str) -> String {
        let wall = self.started.elapsed().as_secs_f64();
        let two_lanes = TWO_LANES.load(std::sync::atomic::Ordering::Relaxed);
        match (self.cpu, children_cpu_secs()) {
            (Some(before), Some(after)) if !two_lanes => {
                format!(
                    "xtask: {what} took {wall:.1} s (CPU {:.1} s)",
                    after - before
                )
            }
            _ => format!("xtask: {what} took {wall:.1} s"),
        }
    }

    fn report(&self, what: &str) {
        eprintln!("{}", self.line(what));
    }
}

/// User + system time of this process's finished (waited-for) children and theirs, from
/// Linux's /proc/self/stat (`cutime`, `cstime`, in the kernel's fixed 100 ticks a second);
/// `None` elsewhere.
fn children_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // first of them is field 3 (state), so cutime (field 16) and cstime (17) are 13 and 14.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(13)? + ticks(14)?) as f64 / 100.0)
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
    // Debian's own python3 with its memcached clients and Django: the Python-interop tests
    // read and write through pylibmc, and the reader matrix (tests/tests/python_matrix.rs)
    // reads through all of them.
    for (module, package) in [
        ("pylibmc", "python3-pylibmc"),
        ("pymemcache", "python3-pymemcache"),
        ("memcache", "python3-memcache"),
        ("django", "python3-django"),
    ] {
        let found = Command::new("/usr/bin/python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            missing.push(package);
        }
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
        "missing: {}. Install them first:\n  Debian/Ubuntu: sudo apt-get install memcached libmemcached-dev libsasl2-modules pkg-config python3-pylibmc python3-pymemcache python3-memcache python3-django nutcracker\n  macOS:         brew install memcached libmemcached pkg-config twemproxy",
        missing.join(" ")
    ))
}

fn test(args: &[String]) -> Result<(), String> {
    let timer = StepTimer::start();
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
    // Extra arguments are cargo test's (`cargo xtask test -- --nocapture`): then one cargo
    // test and the other steps after it, one at a time, as with XTASK_TEST_LANES=1.
    let one_lane = !args.is_empty() || std::env::var("XTASK_TEST_LANES").is_ok_and(|v| v == "1");
    if one_lane {
        // Every unit, integration and bench target (criterion runs each bench once in test
        // mode), then the doctests, which --all-targets leaves out.
        let mut tests = cargo();
        tests
            .args(["test", "--workspace", "--all-features", "--all-targets"])
            .args(args);
        run(tests, "tests")?;
        second_lane(&Lane::Terminal, &[])?;
        facade_default_features(&Lane::Terminal)?;
    } else {
        two_lanes()?;
    }
    timer.report("cargo xtask test");
    eprintln!("xtask: all checks passed");
    Ok(())
}

/// The tests and the other steps in two lanes at once, after one build of every test
/// target. The test binaries mostly wait (on memcached, on timeouts, on other processes):
/// one at a time, as `cargo test` runs them, they keep the 2 cores half idle for minutes.
/// The first lane (its output on the terminal) runs the unit, example and bench targets and
/// about half of the integration tests, then the facade's default-features tests; the
/// second (its output in `target/xtask-lane2.log`, printed when both are done) the
/// doctests, the builds without libmemcached, the fuzz corpus replay and then the other
/// integration tests. Both `cargo test`s select targets of the same `--workspace
/// --all-features` build, so neither compiles anything; the integration tests are shared
/// out by name ([`split_tests`]), so every one runs exactly once.
fn two_lanes() -> Result<(), String> {
    let names = build_tests()?;
    let (first, second) = split_tests(&names);
    let log = target_dir().join("xtask-lane2.log");
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "xtask: two lanes; the second's output is in {} and follows when both are done",
        log.display()
    );
    let timer = StepTimer::start();
    TWO_LANES.store(true, std::sync::atomic::Ordering::Relaxed);
    let lane2 = {
        let log = log.clone();
        std::thread::spawn(move || {
            // The first lane's cargo takes the build directory's lock first: it only sees
            // that every test is built (a second or two), where it would otherwise wait
            // for the doctests' build.
            std::thread::sleep(std::time::Duration::from_secs(3));
            second_lane(&Lane::Log(log), &second)
        })
    };
    let lane1 = (|| {
        let mut tests = cargo();
        tests.args([
            "test",
            "--workspace",
            "--all-features",
            "--lib",
            "--bins",
            "--examples",
            "--benches",
        ]);
        for name in &first {
            tests.args(["--test", name]);
        }
        run(tests, "tests (first lane)")?;
        facade_default_features(&Lane::Terminal)
    })();
    let lane2 = lane2
        .join()
        .unwrap_or_else(|_| Err("the second lane panicked".into()));
    TWO_LANES.store(false, std::sync::atomic::Ordering::Relaxed);
    eprintln!("xtask: ---- the second lane ({}) ----", log.display());
    match std::fs::read(&log) {
        Ok(text) => eprint!("{}", String::from_utf8_lossy(&text)),
        Err(e) => eprintln!("xtask: {}: {e}", log.display()),
    }
    eprintln!("xtask: ---- end of the second lane ----");
    timer.report("the two lanes");
    match (lane1, lane2) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
    }
}

/// Builds every test target of the workspace (`cargo test --workspace --all-features
/// --all-targets --no-run`) and returns the names of the integration tests among them.
fn build_tests() -> Result<Vec<String>, String> {
    let mut build = cargo();
    build
        .args([
            "test",
            "--workspace",
            "--all-features",
            "--all-targets",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit());
    eprintln!("xtask: build the tests: {build:?}");
    let timer = StepTimer::start();
    let out = build
        .output()
        .map_err(|e| format!("build the tests: cannot run: {e}"))?;
    timer.report("build the tests");
    if !out.status.success() {
        return Err(format!("build the tests failed ({})", out.status));
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains("\"kind\":[\"test\"]"))
        .filter_map(artifact)
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err("build the tests: cargo named no integration test".into());
    }
    Ok(names)
}

/// About how long the longest integration tests take, in seconds, each on its own on 2
/// cores (`demo` with the build of the demo it runs first): what [`split_tests`] balances
/// the lanes by. Any other test counts as 3 s.
const LONG_TESTS: [(&str, u32); 14] = [
    ("demo", 40),
    ("placement_oracle", 20),
    ("herd_processes", 19),
    ("soak", 17),
    ("cluster_failover", 12),
    ("unix_socket", 11),
    ("reliability", 11),
    ("conformance_binary", 10),
    ("conformance_tokio", 10),
    ("facade_binary", 10),
    ("fault_proxy", 10),
    ("failures", 9),
    ("tokio_transport", 8),
    ("twemproxy", 6),
];

/// The integration tests by lane, longest first into the lane that has less to do (but
/// `demo` into the second): the first lane has its unit, example and bench targets and the
/// facade's default-features tests besides (about 40 s), the second the doctests, the
/// builds without libmemcached and the fuzz corpus replay (about 80 s). Every name goes to
/// exactly one lane.
fn split_tests(names: &[String]) -> (Vec<String>, Vec<String>) {
    let weight = |name: &str| {
        LONG_TESTS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(3, |(_, w)| *w)
    };
    let mut by_weight: Vec<&String> = names.iter().collect();
    by_weight.sort_by_key(|n| std::cmp::Reverse(weight(n)));
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let (mut load1, mut load2) = (40, 80);
    for name in by_weight {
        // `demo` builds the demo with cargo itself: in the second lane, after its builds,
        // it does not wait for them to give up the build directory's lock.
        if name == "demo" {
            load2 += weight(name);
            second.push(name.clone());
        } else if load1 <= load2 {
            load1 += weight(name);
            first.push(name.clone());
        } else {
            load2 += weight(name);
            second.push(name.clone());
        }
    }
    (first, second)
}

/// The doctests, the builds without libmemcached, the fuzz corpus replay and then the
/// integration tests `tests` (none: no test step), one after another in `lane`.
fn second_lane(lane: &Lane, tests: &[String]) -> Result<(), String> {
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--all-features", "--doc"]);
    lane.run(doc, "doctests")?;
    // A machine without libmemcached builds everything it is meant to: every workspace
    // member but libmemcached-sys and transport-binary (which are not in the others'
    // dependency trees without their `binary` features) with every target, and the facade
    // with no features at all. pkg-config cannot see libmemcached here, so
    // libmemcached-sys's build script would fail if anything pulled it in; `check` runs
    // build scripts as `build` does, without generating code (the build of the tests
    // compiled the same code).
    let mut members = without_libmemcached(cargo());
    members.args([
        "check",
        "--workspace",
        "--exclude",
        "libmemcached-sys",
        "--exclude",
        "newcache-transport-binary",
        "--all-targets",
    ]);
    lane.run(members, "members without libmemcached")?;
    let mut bare = without_libmemcached(cargo());
    bare.args(["check", "-p", "newcache", "--no-default-features"]);
    lane.run(
        bare,
        "facade without default features, without libmemcached",
    )?;
    fuzz_replay(lane)?;
    // The tests last: most of them wait more than they compute, beside the first lane's
    // CPU-bound ones (the placement oracle), where the builds above would slow those down.
    if !tests.is_empty() {
        let mut cmd = cargo();
        cmd.args(["test", "--workspace", "--all-features"]);
        for name in tests {
            cmd.args(["--test", name]);
        }
        lane.run(cmd, "tests (second lane)")?;
    }
    Ok(())
}

/// The facade as a user without libmemcached builds it: default features only, where
/// asking for binary=true or transport=libmemcached must be a clear error, not a fallback
/// (the unit tests in config.rs and tests/no_binary_feature.rs), with pkg-config unable to
/// find libmemcached.
fn facade_default_features(lane: &Lane) -> Result<(), String> {
    let mut default = without_libmemcached(cargo());
    default.args([
        "test",
        "-p",
        "newcache",
        "--lib",
        "--test",
        "no_binary_feature",
    ]);
    lane.run(default, "facade with default features")
}

/// `cmd` as on a machine without libmemcached: pkg-config looks in an empty directory
/// (`PKG_CONFIG_PATH` cleared too, so nothing points it back), so libmemcached-sys's build
/// script fails if anything pulls it in. Nothing else in the workspace's tree asks
/// pkg-config (the memcache peer crate is built without its OpenSSL), so this shares the
/// target directory, and its artefacts, with the other steps.
fn without_libmemcached(mut cmd: Command) -> Command {
    cmd.env("PKG_CONFIG_LIBDIR", "/nonexistent")
        .env_remove("PKG_CONFIG_PATH");
    cmd
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
        .arg(&async_concurrency);
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
        .filter_map(artifact)
        .find(|(target, _)| target == name)
        .map(|(_, exe)| exe)
        .ok_or_else(|| format!("cargo did not report the {name} executable"))
}

/// A `compiler-artifact` line of cargo's JSON messages: its target's name and executable
/// (`None` for other lines, and for artifacts without an executable, such as libraries).
fn artifact(line: &str) -> Option<(String, PathBuf)> {
    if !line.contains("\"reason\":\"compiler-artifact\"") {
        return None;
    }
    let target = json_string(line.split_once("\"target\":")?.1, "name")?;
    Some((target, PathBuf::from(json_string(line, "executable")?)))
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
/// The `async_concurrency` bench's clients, counted with that many concurrent callers
/// (op `get-cC`): every caller count in a full run, 1 and 64 (the targets') in a quick one.
const SYSCALL_CONCURRENT_CLIENTS: [&str; 5] = [
    "newcache-async",
    "newcache-blocking",
    "libmemcached-sys-text",
    "memcache-crate-ascii",
    "async-memcached",
];
const SYSCALL_CONCURRENT_CALLERS: [u32; 4] = [1, 16, 64, 256];

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
    let result = (|| {
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
        Ok::<(), String>(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result?;
    std::fs::write(&out, lines).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Some(out))
}

/// The test binaries `cargo xtask leakcheck` runs under valgrind: the `cargo test` arguments
/// that build them, and the test targets (by name) to build and run. libmemcached-sys's
/// own `layout` (the caller-owned result trap after a real multi-get) and `calls` (every
/// declaration nothing else calls) run too: they own C memory by hand.
const LEAKCHECK_TARGETS: [(&[&str], &[&str]); 3] = [
    (
        &["-p", "newcache-tests", "--features", "binary"],
        &["conformance_binary"],
    ),
    (
        &["-p", "newcache-transport-binary"],
        &["transport", "sasl", "behaviors"],
    ),
    (&["-p", "libmemcached-sys"], &["layout", "calls"]),
];

/// The value of the JSON string field `"key":"..."` in one line of cargo's JSON messages
/// (the first such field; escapes undone). Enough for cargo's flat artifact messages, with no
/// JSON crate in xtask.
fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

/// Builds the test targets `targets` with `cargo test <package> --no-run` and returns each
/// target's executable as cargo reports it (`--message-format=json`), in the order asked.
fn test_executables(package: &[&str], targets: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut build = cargo();
    build.arg("test").args(package);
    for t in targets {
        build.args(["--test", t]);
    }
    build
        .args(["--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit());
    eprintln!("xtask: build the tests: {build:?}");
    let out = build
        .output()
        .map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !out.status.success() {
        return Err(format!("building {targets:?} failed ({})", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let found: Vec<(String, PathBuf)> = stdout
        .lines()
        .filter(|line| line.contains("\"kind\":[\"test\"]"))
        .filter_map(artifact)
        .filter(|(target, _)| targets.contains(&target.as_str()))
        .collect();
    targets
        .iter()
        .map(|t| {
            found
                .iter()
                .find(|(name, _)| name == t)
                .cloned()
                .ok_or_else(|| format!("cargo reported no executable for the test target {t}"))
        })
        .collect()
}

/// What valgrind's log says about one run.
struct Memcheck {
    /// The `definitely lost:` line (or `All heap blocks were freed`), as printed.
    leak_line: String,
    /// Bytes definitely lost.
    definitely_lost: u64,
    /// The `ERROR SUMMARY:` line, as printed.
    summary_line: String,
    /// Errors in the summary (memory errors, and definite leaks, which
    /// `--errors-for-leak-kinds=definite` counts as errors).
    errors: u64,
}

/// The figures of a valgrind log; `None` when it has no `ERROR SUMMARY` (valgrind died).
fn parse_memcheck(log: &str) -> Option<Memcheck> {
    let strip = |l: &str| -> String {
        // "==1234== text" -> "text"
        l.trim_start_matches(|c: char| c == '=' || c.is_ascii_digit())
            .trim()
            .to_string()
    };
    let number_after = |l: &str, marker: &str| -> Option<u64> {
        l.split_once(marker)?
            .1
            .split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()
    };
    let summary = log.lines().rev().find(|l| l.contains("ERROR SUMMARY:"))?;
    let errors = number_after(summary, "ERROR SUMMARY:")?;
    let (leak_line, definitely_lost) =
        match log.lines().rev().find(|l| l.contains("definitely lost:")) {
            Some(l) => (strip(l), number_after(l, "definitely lost:")?),
            None => (
                log.lines()
                    .rev()
                    .find(|l| l.contains("All heap blocks were freed"))
                    .map(strip)?,
                0,
            ),
        };
    Some(Memcheck {
        leak_line,
        definitely_lost,
        summary_line: strip(summary),
        errors,
    })
}

/// `cargo xtask leakcheck`: the libmemcached transport's tests under valgrind's memcheck.
fn leakcheck(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "leakcheck takes no arguments (got {arg:?})\n{USAGE}"
        ));
    }
    install_prerequisites()?;
    if !on_path("valgrind") {
        if is_root() && on_path("apt-get") {
            apt_install(&["valgrind"])?;
        } else {
            return Err("valgrind not found. Install it first:\n  Debian/Ubuntu: sudo apt-get install valgrind".into());
        }
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", root().display()));
    let logs = PathBuf::from(format!("{target}/leakcheck"));
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let mut binaries = Vec::new();
    for (package, targets) in LEAKCHECK_TARGETS {
        binaries.extend(test_executables(package, targets)?);
    }
    let started = std::time::Instant::now();
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for (name, exe) in &binaries {
        let log = logs.join(format!("{name}.valgrind.log"));
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--error-exitcode=1",
        ])
        .arg(format!("--log-file={}", log.display()))
        .arg(exe)
        // One test at a time: valgrind runs every thread on one core anyway, and the tests'
        // timeouts are measured against that.
        .arg("--test-threads=1")
        .current_dir(root());
        eprintln!("xtask: valgrind {name}: {cmd:?}");
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run valgrind: {e}"))?;
        let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let Some(m) = parse_memcheck(&text) else {
            return Err(format!(
                "{name}: valgrind's log {} has no ERROR SUMMARY ({status})",
                log.display()
            ));
        };
        let line = format!("{name}: {}; {}", m.leak_line, m.summary_line);
        eprintln!("xtask: {line}");
        if m.errors > 0 || m.definitely_lost > 0 {
            failed.push(format!(
                "{name}: {} bytes definitely lost, {} errors (see {})",
                m.definitely_lost,
                m.errors,
                log.display()
            ));
        } else if !status.success() {
            failed.push(format!(
                "{name}: the tests failed under valgrind ({status}); memcheck itself found nothing"
            ));
        }
        report.push(line);
    }
    eprintln!(
        "xtask: leakcheck of {} test binaries took {:.0} s:",
        binaries.len(),
        started.elapsed().as_secs_f64()
    );
    for line in &report {
        eprintln!("  {line}");
    }
    if failed.is_empty() {
        eprintln!("xtask: no definite leaks and no memory errors");
        Ok(())
    } else {
        Err(format!("leakcheck failed:\n  {}", failed.join("\n  ")))
    }
}

/// `cargo xtask soak [--secs N] [--transport text|binary|all]`: `tests/src/bin/soak.rs`,
/// optimised, with libmemcached's transport built (its options are the binary's own).
fn soak(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "newcache-tests",
        "--features",
        "binary",
        "--bin",
        "soak",
        "--",
    ])
    .args(args);
    run(cmd, "soak")
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

/// The fuzz workspace (`fuzz/`, a workspace of its own, not a member of this one).
fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// This workspace's target directory: `CARGO_TARGET_DIR` (relative to where cargo was run,
/// as cargo reads it) or `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        None => root().join("target"),
    }
}

/// The targets of `fuzz/`: the names of `fuzz/fuzz_targets/*.rs`, sorted.
fn fuzz_targets() -> Result<Vec<String>, String> {
    let dir = fuzz_dir().join("fuzz_targets");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// `cargo` through rustup's proxy (so `+nightly` works), without the variables the outer
/// cargo set for this process (they name the stable toolchain).
fn rustup_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(root());
    cmd
}

/// What libFuzzer's last status line (`#N DONE cov: C ft: F corp: ...`) says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct FuzzStatus {
    execs: u64,
    cov: u64,
    ft: u64,
    corpus: String,
    line: String,
}

/// Parses a libFuzzer status line (`#123 NEW cov: 45 ft: 67 corp: 8/910b ...`).
fn fuzz_status(line: &str) -> Option<FuzzStatus> {
    let mut words = line.split_whitespace();
    let execs = words.next()?.strip_prefix('#')?.parse().ok()?;
    let words: Vec<&str> = words.collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.to_string())
    };
    Some(FuzzStatus {
        execs,
        cov: after("cov:")?.parse().ok()?,
        ft: after("ft:").and_then(|f| f.parse().ok()).unwrap_or(0),
        corpus: after("corp:").unwrap_or_default(),
        line: line.trim().to_string(),
    })
}

/// `cargo xtask fuzz [--secs N] [TARGET]`.
fn fuzz(args: &[String]) -> Result<(), String> {
    let mut secs: u64 = 60;
    let mut only: Option<String> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--secs" => {
                secs = rest
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--secs takes a number of seconds\n{USAGE}"))?;
            }
            a if a.starts_with('-') => return Err(format!("unknown option {a:?}\n{USAGE}")),
            a if only.is_none() => only = Some(a.to_string()),
            a => return Err(format!("one target at a time (got {a:?} too)\n{USAGE}")),
        }
    }
    let all = fuzz_targets()?;
    let targets: Vec<String> = match only {
        Some(t) if all.contains(&t) => vec![t],
        Some(t) => {
            return Err(format!(
                "no fuzz target {t:?}; the targets: {}",
                all.join(", ")
            ))
        }
        None => all,
    };
    let has_cargo_fuzz = rustup_cargo()
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_cargo_fuzz {
        let mut install = rustup_cargo();
        install.args(["install", "cargo-fuzz"]);
        run(install, "install cargo-fuzz")?;
    }
    let has_nightly = rustup_cargo()
        .args(["+nightly", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_nightly {
        let mut install = Command::new("rustup");
        install.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        run(install, "install the nightly toolchain")?;
    }
    // Its own target directory (fuzz/target), whatever CARGO_TARGET_DIR says: the fuzz
    // builds (nightly, sanitizers) share nothing with the workspace's.
    let target_dir = fuzz_dir().join("target");
    let mut build = rustup_cargo();
    build
        .args(["+nightly", "fuzz", "build", "--target-dir"])
        .arg(&target_dir);
    if let [one] = targets.as_slice() {
        build.arg(one);
    }
    run(build, "build the fuzz targets")?;
    let logs = target_dir.join("fuzz-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let mut summary = Vec::new();
    let mut crashes = Vec::new();
    for target in &targets {
        let outcome = fuzz_one(target, secs, &target_dir, &logs)?;
        summary.push(outcome.summary);
        crashes.extend(outcome.crashes);
    }
    eprintln!("xtask: fuzzing, {secs} s per target:");
    for line in &summary {
        eprintln!("  {line}");
    }
    if crashes.is_empty() {
        eprintln!("xtask: no crash");
        Ok(())
    } else {
        Err(format!(
            "the fuzzers found {} crash(es):\n  {}\nreplay one on stable: (cd fuzz && cargo run -p newcache-fuzz-targets --bin replay -- TARGET FILE)",
            crashes.len(),
            crashes.join("\n  ")
        ))
    }
}

/// What one target's run came to: its summary line and its crashes (described).
struct FuzzOutcome {
    summary: String,
    crashes: Vec<String>,
}

/// Runs one fuzz target for `secs` seconds; its output goes to the terminal and to
/// `logs/TARGET.log`. New artifacts (crash, leak, timeout, out-of-memory inputs) are copied
/// to `fuzz/regressions/TARGET/`.
fn fuzz_one(
    target: &str,
    secs: u64,
    target_dir: &Path,
    logs: &Path,
) -> Result<FuzzOutcome, String> {
    use std::io::{BufRead as _, Write as _};
    let artifacts = fuzz_dir().join("artifacts").join(target);
    let before = artifact_files(&artifacts);
    let log_path = logs.join(format!("{target}.log"));
    let mut log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = rustup_cargo();
    cmd.args(["+nightly", "fuzz", "run", "--target-dir"])
        .arg(target_dir)
        .arg(target)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        // An input that runs this long is a hang, not a slow input.
        .arg("-timeout=30")
        .arg("-print_final_stats=1");
    let dict = fuzz_dir().join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    eprintln!("xtask: fuzz {target} for {secs} s: {cmd:?}");
    let started = std::time::Instant::now();
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let mut last: Option<FuzzStatus> = None;
    let mut panic_lines: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            // libFuzzer's periodic lines are many: the terminal gets the others and every
            // 16th of those.
            match fuzz_status(&line) {
                Some(status) => {
                    let pulse = line.contains(" pulse ") || line.contains(" DONE ");
                    if pulse || status.execs.is_power_of_two() {
                        eprintln!("{line}");
                    }
                    last = Some(status);
                }
                None => eprintln!("{line}"),
            }
            if line.contains("panicked at")
                || line.contains("ERROR: libFuzzer")
                || line.contains("ERROR: AddressSanitizer")
                || (!panic_lines.is_empty() && panic_lines.len() < 12)
            {
                panic_lines.push(line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cargo fuzz run {target}: {e}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    let new: Vec<PathBuf> = artifact_files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let mut crashes = Vec::new();
    let regressions = fuzz_dir().join("regressions").join(target);
    for artifact in &new {
        let name = artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // libFuzzer's slow-unit reports are not failures.
        if name.starts_with("slow-unit-") {
            continue;
        }
        std::fs::create_dir_all(&regressions)
            .map_err(|e| format!("{}: {e}", regressions.display()))?;
        let kept = regressions.join(&name);
        std::fs::copy(artifact, &kept).map_err(|e| format!("{}: {e}", kept.display()))?;
        crashes.push(format!(
            "{target}: {} (kept as {})",
            artifact.display(),
            kept.display()
        ));
    }
    if !status.success() && crashes.is_empty() {
        crashes.push(format!(
            "{target}: cargo fuzz run failed ({status}) without leaving an input; see {}",
            log_path.display()
        ));
    }
    if !crashes.is_empty() && !panic_lines.is_empty() {
        eprintln!("xtask: {target} failed:");
        for line in &panic_lines {
            eprintln!("  {line}");
        }
    }
    let figures = match &last {
        Some(s) => format!(
            "{} executions, cov {} ft {}, corpus {}",
            s.execs, s.cov, s.ft, s.corpus
        ),
        None => "no status line from libFuzzer".to_string(),
    };
    let verdict = if crashes.is_empty() {
        "clean".to_string()
    } else {
        format!("{} crash input(s)", crashes.len())
    };
    Ok(FuzzOutcome {
        summary: format!(
            "{target}: {verdict}; {figures} in {elapsed:.0} s (log {})",
            log_path.display()
        ),
        crashes,
    })
}

/// The files in a target's artifact directory.
fn artifact_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// `cargo xtask test`'s replay of the fuzz corpus: every file of `fuzz/corpus/*` and
/// `fuzz/regressions/*` through the fuzz targets' bodies, on stable, without libFuzzer. It
/// is built in fuzz/'s own workspace (its lock file, the fuzz targets' own features of
/// newcache) but in this workspace's target directory and dev profile, so the registry
/// crates it shares with the steps before (serde, bincode, flate2, md-5, ...) are not
/// compiled again: about 20 s of CPU the first time, where fuzz/target and an optimised
/// profile of its own took 100 s. Unoptimised, the replay of the corpus takes about 6 s. A
/// process that dies without a panic (a stack overflow, an allocation over the replay's
/// limits) is run again naming each input, to say which.
fn fuzz_replay(lane: &Lane) -> Result<(), String> {
    let target = target_dir();
    let replay = || {
        let mut cmd = cargo();
        cmd.current_dir(fuzz_dir())
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "run",
                "--quiet",
                "-p",
                "newcache-fuzz-targets",
                "--bin",
                "replay",
                "--",
            ]);
        cmd
    };
    let status = lane.status(replay(), "fuzz corpus replay")?;
    if status.success() {
        return Ok(());
    }
    if status.code().is_some() {
        return Err(format!(
            "fuzz corpus replay failed ({status}): an input above panics; a crash libFuzzer found is fixed in the library, never by deleting its input"
        ));
    }
    // Killed by a signal: no panic message said which input.
    let out = replay()
        .arg("--verbose")
        .output()
        .map_err(|e| format!("fuzz corpus replay: cannot run: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("replay: ") && !l.ends_with(" inputs"))
        .unwrap_or("(no input named)");
    Err(format!(
        "fuzz corpus replay died ({status}), at the input {last:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcheck_figures_are_read_from_valgrinds_log() {
        // The tail of a real log: one definite leak and one invalid read.
        let leaky = "==28638== 40 bytes in 1 blocks are definitely lost in loss record 1 of 1
==28638== LEAK SUMMARY:
==28638==    definitely lost: 40 bytes in 1 blocks
==28638==    indirectly lost: 0 bytes in 0 blocks
==28638== ERROR SUMMARY: 2 errors from 2 contexts (suppressed: 0 from 0)
";
        let m = parse_memcheck(leaky).unwrap();
        assert_eq!((m.definitely_lost, m.errors), (40, 2));
        assert_eq!(m.leak_line, "definitely lost: 40 bytes in 1 blocks");
        assert_eq!(
            m.summary_line,
            "ERROR SUMMARY: 2 errors from 2 contexts (suppressed: 0 from 0)"
        );
        let clean = "==7== All heap blocks were freed -- no leaks are possible
==7== ERROR SUMMARY: 0 errors from 0 contexts (suppressed: 0 from 0)
";
        let m = parse_memcheck(clean).unwrap();
        assert_eq!((m.definitely_lost, m.errors), (0, 0));
        assert!(
            m.leak_line.starts_with("All heap blocks"),
            "{}",
            m.leak_line
        );
        let big = "==7==    definitely lost: 1,234 bytes in 5 blocks\n==7== ERROR SUMMARY: 5 errors from 5 contexts\n";
        assert_eq!(parse_memcheck(big).unwrap().definitely_lost, 1234);
        assert!(parse_memcheck("valgrind: fatal error\n").is_none());
    }

    #[test]
    fn artifact_fields_are_read_from_cargos_json() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/transport-binary#newcache-transport-binary@0.1.0","target":{"kind":["test"],"crate_types":["bin"],"name":"sasl","src_path":"/w/tests/sasl.rs"},"executable":"/w/target/debug/deps/sasl-ef26\"x","fresh":true}"#;
        let target = line.split_once("\"target\":").unwrap().1;
        assert_eq!(json_string(target, "name").as_deref(), Some("sasl"));
        assert_eq!(
            json_string(line, "executable").as_deref(),
            Some("/w/target/debug/deps/sasl-ef26\"x")
        );
        assert_eq!(json_string(r#"{"executable":null}"#, "executable"), None);
    }

    #[test]
    fn libfuzzer_status_lines_are_read() {
        let line =
            "#2097152\tpulse  cov: 1234 ft: 5678 corp: 345/67Kb lim: 4096 exec/s: 2057 rss: 400Mb";
        let s = fuzz_status(line).unwrap();
        assert_eq!((s.execs, s.cov, s.ft), (2_097_152, 1234, 5678));
        assert_eq!(s.corpus, "345/67Kb");
        let done =
            fuzz_status("#1000000 DONE   cov: 88 ft: 99 corp: 7/1b exec/s: 9 rss: 30Mb").unwrap();
        assert_eq!((done.execs, done.cov, done.ft), (1_000_000, 88, 99));
        assert!(fuzz_status("INFO: Seed: 1234").is_none());
        assert!(fuzz_status("#1 INITED exec/s: 0 rss: 30Mb").is_none());
    }
}
