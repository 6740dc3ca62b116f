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
    let left_out = test_files_outside_one_binary(&root())?;
    if !left_out.is_empty() {
        return Err(format!("test files:\n  {}", left_out.join("\n  ")));
    }
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
        let demo = build_demo()?;
        // Every unit, integration and bench target (criterion runs each bench once in test
        // mode), then the doctests, which --all-targets leaves out.
        let mut tests = cargo();
        tests
            .args(["test", "--workspace", "--all-features", "--all-targets"])
            .args(args)
            .env(DEMO_EXE_VAR, &demo);
        run(tests, "tests")?;
        second_lane(&Lane::Terminal, &[], &demo)?;
        facade_without_binary(&Lane::Terminal)?;
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
/// about half of the integration tests, then the facade's test without the binary feature; the
/// second (its output in `target/xtask-lane2.log`, printed when both are done) the
/// doctests, the builds without libmemcached, the fuzz corpus replay and then the other
/// integration tests. Both `cargo test`s select targets of the same `--workspace
/// --all-features` build, so neither compiles anything; the integration tests are shared
/// out by name ([`split_tests`]), so every one runs exactly once.
pub(crate) fn two_lanes() -> Result<(), String> {
    let names = build_tests()?;
    let demo = build_demo()?;
    // A renamed or merged test binary left in LONG_TESTS would count as a small one.
    for (name, _) in LONG_TESTS
        .iter()
        .filter(|(n, _)| !names.iter().any(|m| m == n))
    {
        eprintln!("xtask: LONG_TESTS names {name}, which is no test target: update it");
    }
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
        let demo = demo.clone();
        std::thread::spawn(move || {
            // The first lane's cargo takes the build directory's lock first: it only sees
            // that every test is built (a second or two), where it would otherwise wait
            // for the doctests' build.
            std::thread::sleep(std::time::Duration::from_secs(3));
            second_lane(&Lane::Log(log), &second, &demo)
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
        tests.env(DEMO_EXE_VAR, &demo);
        run(tests, "tests (first lane)")?;
        facade_without_binary(&Lane::Terminal)
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
    build.args([
        "test",
        "--workspace",
        "--all-features",
        "--all-targets",
        "--no-run",
    ]);
    let mut names: Vec<String> = built(build, "build the tests", "test")?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err("build the tests: cargo named no integration test".into());
    }
    Ok(names)
}

/// Runs the cargo build `build` as the timed step `step`, with cargo's JSON messages, and
/// returns the targets of kind `kind` (`test`, `example`) it built with an executable: their
/// names and executables.
fn built(mut build: Command, step: &str, kind: &str) -> Result<Vec<(String, PathBuf)>, String> {
    build
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit());
    eprintln!("xtask: {step}: {build:?}");
    let timer = StepTimer::start();
    let out = build
        .output()
        .map_err(|e| format!("{step}: cannot run: {e}"))?;
    timer.report(step);
    if !out.status.success() {
        return Err(format!("{step} failed ({})", out.status));
    }
    let kind = format!("\"kind\":[\"{kind}\"]");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&kind))
        .filter_map(artifact)
        .collect())
}

/// The variable that names the demo's executable to tests/tests/demo.rs.
pub(crate) const DEMO_EXE_VAR: &str = "NEWCACHE_DEMO_EXE";

/// Builds the demo example (crates/newcache/examples/demo.rs), which tests/tests/demo.rs
/// runs, and returns its executable. `--all-targets` builds examples only as test harnesses,
/// which cannot run the demo; this is the example itself, with the test build's
/// `--workspace --all-features` features, so it reuses that build's libraries and compiles
/// the example alone (2 s). Left to itself, tests/tests/demo.rs builds the demo with
/// `--features memory`, a feature set of its own: the facade and its dependents again.
pub(crate) fn build_demo() -> Result<PathBuf, String> {
    let mut build = cargo();
    build.args([
        "build",
        "--workspace",
        "--all-features",
        "--example",
        "demo",
    ]);
    built(build, "build the demo", "example")?
        .into_iter()
        .find(|(name, _)| name == "demo")
        .map(|(_, exe)| exe)
        .ok_or_else(|| "build the demo: cargo named no executable for the demo".into())
}

/// About how long the longest integration test binaries take, in seconds, each with the
/// other lane busy on 2 cores: what [`split_tests`] balances the lanes by. Any other counts
/// as 1 s (the small ones take a second or less). `cache` and `transports` are many files'
/// tests in one binary each (tests/Cargo.toml), `transport_text` the text transport's;
/// `failures` is libmemcached's (crates/transport-binary/tests).
pub(crate) const LONG_TESTS: [(&str, u32); 14] = [
    ("placement_oracle", 34),
    ("cache", 30),
    ("transports", 29),
    ("herd_processes", 18),
    ("soak", 16),
    ("demo", 14),
    ("reliability", 13),
    ("transport_text", 12),
    ("cluster_failover", 11),
    ("conformance_binary", 11),
    ("fault_proxy", 11),
    ("failures", 9),
    ("transport", 4),
    ("cli", 2),
];

/// The integration tests by lane, longest first into the lane that has less to do: the
/// first lane has its unit, example and bench targets and the facade's test without the
/// binary feature besides (about 20 s), the second the doctests, the checks without
/// libmemcached and the fuzz corpus replay (about 60 s beside the first lane's tests: the
/// check of the facade with no features checks its dependencies again for that).
/// Every name goes to exactly one lane.
pub(crate) fn split_tests(names: &[String]) -> (Vec<String>, Vec<String>) {
    let weight = |name: &str| {
        LONG_TESTS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(1, |(_, w)| *w)
    };
    let mut by_weight: Vec<&String> = names.iter().collect();
    by_weight.sort_by_key(|n| std::cmp::Reverse(weight(n)));
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let (mut load1, mut load2) = (20, 60);
    for name in by_weight {
        if load1 <= load2 {
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
/// integration tests `tests` (none: no test step), one after another in `lane`; `demo` is the
/// demo's executable ([`build_demo`]), for tests/tests/demo.rs.
pub(crate) fn second_lane(lane: &Lane, tests: &[String], demo: &Path) -> Result<(), String> {
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--all-features", "--doc"]);
    lane.run(doc, "doctests")?;
    // A machine without libmemcached builds everything it is meant to: every workspace
    // member but libmemcached-sys and transport-binary (which are not in the others'
    // dependency trees without their `binary` features) with every target and every other
    // feature, and the facade with no features at all. pkg-config cannot see libmemcached
    // here, so libmemcached-sys's build script would fail if anything pulled it in; `check`
    // runs build scripts as `build` does, without generating code. With every feature but
    // `binary`, the dependencies resolve to clippy's features and its checked artefacts
    // serve: only the members are checked again.
    let mut members = without_libmemcached(cargo());
    members.arg("check").args(NOT_LIBMEMCACHED).args([
        "--all-targets",
        "--features",
        &features_without_libmemcached()?,
    ]);
    lane.run(members, "members without libmemcached")?;
    let mut bare = without_libmemcached(cargo());
    bare.args(["check", "-p", "newcache", "--no-default-features"]);
    lane.run(
        bare,
        "facade without default features, without libmemcached",
    )?;
    // The facade's unit tests with only the text transport: a test that needs a codec or a
    // transport says so (`#[cfg(feature = ...)]`); they did not compile without bincode.
    let mut lean = without_libmemcached(cargo());
    lean.args([
        "test",
        "-p",
        "newcache",
        "--no-default-features",
        "--features",
        "text",
        "--lib",
    ]);
    lane.run(lean, "facade's unit tests with only the text transport")?;
    fuzz_replay(lane)?;
    // The tests last: most of them wait more than they compute, beside the first lane's
    // CPU-bound ones (the placement oracle), where the builds above would slow those down.
    if !tests.is_empty() {
        let mut cmd = cargo();
        cmd.args(["test", "--workspace", "--all-features"]);
        for name in tests {
            cmd.args(["--test", name]);
        }
        cmd.env(DEMO_EXE_VAR, demo);
        lane.run(cmd, "tests (second lane)")?;
    }
    Ok(())
}

/// The facade as a user without libmemcached builds it: asking for binary=true or
/// transport=libmemcached must be a clear error, not a fallback (tests/no_binary_feature.rs),
/// with pkg-config unable to find libmemcached. Every other feature is on, as in the members'
/// check: the dependencies are then the test build's, and only the facade (its library and
/// command-line tool) and this test are compiled again.
pub(crate) fn facade_without_binary(lane: &Lane) -> Result<(), String> {
    let mut test = without_libmemcached(cargo());
    test.arg("test").args(NOT_LIBMEMCACHED).args([
        "--features",
        &features_without_libmemcached()?,
        "--test",
        "no_binary_feature",
    ]);
    lane.run(test, "facade without the binary feature")
}

/// The workspace but the two members that need libmemcached.
const NOT_LIBMEMCACHED: [&str; 5] = [
    "--workspace",
    "--exclude",
    "libmemcached-sys",
    "--exclude",
    "newcache-transport-binary",
];

/// Every member's features but those that bring libmemcached in, for `--features`.
fn features_without_libmemcached() -> Result<String, String> {
    Ok(manifest::features_without_libmemcached(&root())?.join(","))
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

/// Where a workspace member with `autotests = false` in its manifest has a top-level file of
/// `tests/` that is in no test binary, or in more than one: such a member names its test
/// binaries (`[[test]]`), whose root files take the other files in as modules (`mod name;`),
/// and cargo, no longer finding test files by itself, would silently leave a new file out.
/// One line per problem; none when every file is in exactly one binary.
pub(crate) fn test_files_outside_one_binary(root: &Path) -> Result<Vec<String>, String> {
    let read = manifest::read;
    let members = manifest::members(root)?;
    let mut problems = Vec::new();
    for member in &members {
        let dir = root.join(member);
        let manifest = read(&dir.join("Cargo.toml"))?;
        if !manifest.lines().any(|l| l.trim() == "autotests = false") {
            continue;
        }
        // The root files of its [[test]] targets (`path`, else cargo's tests/NAME.rs).
        let mut roots = Vec::new();
        let mut in_test = false;
        let (mut name, mut path) = (None, None);
        for line in manifest.lines().map(str::trim).chain(["[end]"]) {
            if line.starts_with('[') {
                if in_test {
                    match (path.take(), name.take()) {
                        (Some(p), _) => roots.push(p),
                        (None, Some(n)) => roots.push(format!("tests/{n}.rs")),
                        (None, None) => {
                            problems.push(format!("{member}: a [[test]] without a name"))
                        }
                    }
                }
                in_test = line == "[[test]]";
            } else if in_test {
                let value = |key: &str| {
                    let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
                    Some(rest.trim().trim_matches('"').to_string())
                };
                name = value("name").or(name);
                path = value("path").or(path);
            }
        }
        // Every root file, and every file a root declares as a module, by its path.
        let mut holders: std::collections::BTreeMap<PathBuf, Vec<String>> = Default::default();
        for r in &roots {
            let file = dir.join(r);
            holders
                .entry(file.clone())
                .or_default()
                .push(format!("[[test]] {r}"));
            let text = read(&file)?;
            let mut module_path = None;
            for line in text.lines().map(str::trim) {
                if let Some(p) = line.strip_prefix("#[path = \"") {
                    module_path = p.split('"').next().map(str::to_string);
                    continue;
                }
                let declared = line
                    .strip_prefix("pub ")
                    .unwrap_or(line)
                    .strip_prefix("mod ")
                    .and_then(|m| m.strip_suffix(';'));
                if let Some(m) = declared {
                    let base = file.parent().unwrap_or(&dir);
                    let module = match module_path.take() {
                        Some(p) => base.join(p),
                        None if base.join(format!("{m}.rs")).is_file() => {
                            base.join(format!("{m}.rs"))
                        }
                        None => base.join(m).join("mod.rs"),
                    };
                    if !module.is_file() {
                        problems.push(format!(
                            "{member}/{r}: mod {m}: no file {}",
                            module.display()
                        ));
                    }
                    holders
                        .entry(module)
                        .or_default()
                        .push(format!("mod {m} in {r}"));
                } else if !line.starts_with("#[") {
                    module_path = None;
                }
            }
        }
        let tests = dir.join("tests");
        let entries = std::fs::read_dir(&tests).map_err(|e| format!("{}: {e}", tests.display()))?;
        for entry in entries {
            let file = entry
                .map_err(|e| format!("{}: {e}", tests.display()))?
                .path();
            if file.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let shown = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            match holders.get(&file).map(Vec::as_slice) {
                None | Some([]) => problems.push(format!(
                    "{shown} is in no test binary: add `mod` for it to a root file, or a [[test]] to {member}/Cargo.toml"
                )),
                Some([_]) => {}
                Some(many) => problems.push(format!("{shown} is in {} binaries: {}", many.len(), many.join(", "))),
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_file_is_in_exactly_one_test_binary() {
        let problems = test_files_outside_one_binary(&root()).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn every_test_goes_to_exactly_one_lane() {
        let names: Vec<String> = LONG_TESTS
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(["small_a".into(), "small_b".into()])
            .collect();
        let (first, second) = split_tests(&names);
        let mut both: Vec<String> = first.iter().chain(&second).cloned().collect();
        both.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(both, want);
        assert!(
            !first.is_empty() && !second.is_empty(),
            "{first:?} {second:?}"
        );
    }

    #[test]
    fn a_test_file_left_out_or_taken_in_twice_is_found() {
        let dir = std::env::temp_dir().join(format!("xtask-test-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("member/tests")).unwrap();
        let write = |path: &str, text: &str| std::fs::write(dir.join(path), text).unwrap();
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\n    \"member\",\n]\n",
        );
        write(
            "member/Cargo.toml",
            "[package]\nautotests = false\n\n[[test]]\nname = \"all\"\npath = \"tests/all.rs\"\n\n[[test]]\nname = \"alone\"\n",
        );
        write(
            "member/tests/all.rs",
            "//! Root.\nmod a;\n#[cfg(unix)]\nmod b;\nmod alone;\n",
        );
        for file in ["a", "b", "alone", "forgotten"] {
            write(&format!("member/tests/{file}.rs"), "");
        }
        let problems = test_files_outside_one_binary(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("member/tests/alone.rs is in 2 binaries")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("member/tests/forgotten.rs is in no test binary")),
            "{problems:?}"
        );
    }
}
