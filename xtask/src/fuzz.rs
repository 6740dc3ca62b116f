//! `cargo xtask fuzz` (the cargo-fuzz targets on nightly) and the stable replay of their
//! corpus that `cargo xtask test` runs.

#[allow(unused_imports)]
use super::*;

/// The fuzz workspace (`fuzz/`, a workspace of its own, not a member of this one).
pub(crate) fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// This workspace's target directory: `CARGO_TARGET_DIR` (relative to where cargo was run,
/// as cargo reads it) or `target/`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        None => root().join("target"),
    }
}

/// The targets of `fuzz/`: the names of `fuzz/fuzz_targets/*.rs`, sorted.
pub(crate) fn fuzz_targets() -> Result<Vec<String>, String> {
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
pub(crate) fn rustup_cargo() -> Command {
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
pub(crate) struct FuzzStatus {
    pub(crate) execs: u64,
    pub(crate) cov: u64,
    pub(crate) ft: u64,
    pub(crate) corpus: String,
    pub(crate) line: String,
}

/// Parses a libFuzzer status line (`#123 NEW cov: 45 ft: 67 corp: 8/910b ...`).
pub(crate) fn fuzz_status(line: &str) -> Option<FuzzStatus> {
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
pub(crate) fn fuzz(args: &[String]) -> Result<(), String> {
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
pub(crate) struct FuzzOutcome {
    pub(crate) summary: String,
    pub(crate) crashes: Vec<String>,
}

/// Runs one fuzz target for `secs` seconds; its output goes to the terminal and to
/// `logs/TARGET.log`. New artifacts (crash, leak, timeout, out-of-memory inputs) are copied
/// to `fuzz/regressions/TARGET/`.
pub(crate) fn fuzz_one(
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
pub(crate) fn artifact_files(dir: &Path) -> Vec<PathBuf> {
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
pub(crate) fn fuzz_replay(lane: &Lane) -> Result<(), String> {
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
