//! `cargo xtask test`: fmt, clippy, one build of every test target, then the tests and
//! the other checks in two lanes at once.

#[allow(unused_imports)]
use super::*;

pub(crate) fn test(args: &[String]) -> Result<(), String> {
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
pub(crate) fn two_lanes() -> Result<(), String> {
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
pub(crate) fn build_tests() -> Result<Vec<String>, String> {
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
pub(crate) const LONG_TESTS: [(&str, u32); 14] = [
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
pub(crate) fn split_tests(names: &[String]) -> (Vec<String>, Vec<String>) {
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
pub(crate) fn second_lane(lane: &Lane, tests: &[String]) -> Result<(), String> {
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
pub(crate) fn facade_default_features(lane: &Lane) -> Result<(), String> {
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
pub(crate) fn without_libmemcached(mut cmd: Command) -> Command {
    cmd.env("PKG_CONFIG_LIBDIR", "/nonexistent")
        .env_remove("PKG_CONFIG_PATH");
    cmd
}
