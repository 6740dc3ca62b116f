//! `cargo xtask leakcheck`: the libmemcached transport's tests under valgrind's memcheck.

#[allow(unused_imports)]
use super::*;

/// The test binaries `cargo xtask leakcheck` runs under valgrind: the `cargo test` arguments
/// that build them, and the test targets (by name) to build and run. libmemcached-sys's
/// own `layout` (the caller-owned result trap after a real multi-get) and `calls` (every
/// declaration nothing else calls) run too: they own C memory by hand.
pub(crate) const LEAKCHECK_TARGETS: [(&[&str], &[&str]); 3] = [
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
pub(crate) fn json_string(line: &str, key: &str) -> Option<String> {
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
pub(crate) fn test_executables(
    package: &[&str],
    targets: &[&str],
) -> Result<Vec<(String, PathBuf)>, String> {
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
pub(crate) struct Memcheck {
    /// The `definitely lost:` line (or `All heap blocks were freed`), as printed.
    pub(crate) leak_line: String,
    /// Bytes definitely lost.
    pub(crate) definitely_lost: u64,
    /// The `ERROR SUMMARY:` line, as printed.
    pub(crate) summary_line: String,
    /// Errors in the summary (memory errors, and definite leaks, which
    /// `--errors-for-leak-kinds=definite` counts as errors).
    pub(crate) errors: u64,
}

/// The figures of a valgrind log; `None` when it has no `ERROR SUMMARY` (valgrind died).
pub(crate) fn parse_memcheck(log: &str) -> Option<Memcheck> {
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
pub(crate) fn leakcheck(args: &[String]) -> Result<(), String> {
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
