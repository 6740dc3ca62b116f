//! Project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test`: installs memcached and libmemcached when missing (as root, from
//!   Debian's packages), then runs the format check, clippy with `-D warnings`, and every test
//!   of the workspace with all features; then, with pkg-config unable to find libmemcached,
//!   a check of every member but the libmemcached ones with every other feature, a check of
//!   the facade with no features, and the facade's test that asking for libmemcached without
//!   it is a clear error; and the fuzz corpus replay. After the build of the tests, two lanes of steps run at once
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
//! - `cargo xtask soak [--secs N] [--transport text|binary|async|all]`: the soak
//!   (`tests/src/bin/soak/`): 16 threads of mixed, checksummed operations on three
//!   memcached servers that are stopped, killed and restarted, through the blocking cache
//!   over each transport and through the async cache; fails on any wrong value,
//!   memory growth or over-long call. Not part of `cargo xtask test` (a minute by default).
//! - `cargo xtask fuzz [--secs N] [TARGET]`: the cargo-fuzz targets of `fuzz/` (installing
//!   cargo-fuzz when missing), each for N seconds (default 60) with the nightly toolchain;
//!   fails when one finds a crash, which it copies to `fuzz/regressions/TARGET/`. `cargo xtask
//!   test` replays `fuzz/corpus/` and `fuzz/regressions/` through the same targets on stable.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod fuzz;
mod instructions;
mod leakcheck;
mod manifest;
mod steps;
mod test;

use bench::*;
use fuzz::*;
use instructions::*;
use leakcheck::*;
use steps::*;
use test::*;

const USAGE: &str = "usage: cargo xtask <test|demo|bench [--quick]|leakcheck|fuzz [--secs N] [TARGET]|soak [--secs N] [--transport text|binary|async|all]>
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
    // A network namespace of its own (`unshare --net`, `ip link`): the self-connection test
    // in tests/tests/cluster_failover.rs narrows its ephemeral port range there.
    if !on_path("unshare") {
        missing.push("util-linux");
    }
    if !on_path("ip") {
        missing.push("iproute2");
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

/// `cargo xtask soak [--secs N] [--transport text|binary|async|all]`: `tests/src/bin/soak/`,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn memcheck_figures_are_read_from_valgrinds_log() {
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
    pub(crate) fn artifact_fields_are_read_from_cargos_json() {
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
    pub(crate) fn libfuzzer_status_lines_are_read() {
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
