//! What the report says about the machine, the toolchain and the versions measured.

use std::path::Path;

/// A command's first line of output, or `None` when it cannot run.
pub(super) fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_string())
}

/// The version of a crate in the workspace's `Cargo.lock`.
pub(super) fn locked_version(package: &str) -> Option<String> {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    let wanted = format!("name = \"{package}\"");
    lines.find(|l| l.trim() == wanted)?;
    let version = lines.next()?.trim().strip_prefix("version = ")?;
    Some(version.trim_matches('"').to_string())
}

/// The machine and the versions this run measured, found where it runs.
pub(super) fn machine() -> String {
    let unknown = || "unknown".to_string();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(unknown, |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| unknown(), |k| k.trim().to_string());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = first_line(&rustc, &["-V"]).unwrap_or_else(unknown);
    let memcached = first_line("memcached", &["-V"]).unwrap_or_else(unknown);
    let libmemcached = first_line("pkg-config", &["--modversion", "libmemcached"])
        .map_or_else(unknown, |v| format!("libmemcached {v}"));
    let strace = first_line("strace", &["-V"]).unwrap_or_else(|| "no strace".into());
    // When and of what: the date (UTC) and the commit the run measured (`+ changes` when
    // the work tree differed from it).
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let commit = first_line("git", &["-C", root, "rev-parse", "--short=8", "HEAD"]).map_or_else(
        unknown,
        |c| {
            let changed = std::process::Command::new("git")
                .args(["-C", root, "diff", "--quiet", "HEAD"])
                .status()
                .is_ok_and(|s| !s.success());
            match changed {
                true => format!("{c} + changes"),
                false => c,
            }
        },
    );
    let krate = |name: &str| {
        locked_version(name).map_or_else(|| format!("{name} ?"), |v| format!("{name} {v}"))
    };
    format!(
        "| what | this run |\n|---|---|\n| when | {date}, commit {commit} |\n| machine | {cores} cores, {cpu}; {os}, Linux {kernel} |\n| toolchain | {rustc}; {} |\n| server | {memcached}, started per bench with `-m 64` and `-t 4` (`-t 1` for the one-connection transport and interleaved benches, `-t 2` for the async concurrency bench), loopback |\n| C library | {libmemcached} (Debian's `libmemcached-dev`), linked through `libmemcached-sys` |\n| peers | the `{}` crate; `{}` (async concurrency) |\n| tracing | {strace} |\n",
        krate("criterion"),
        krate("memcache"),
        krate("async-memcached"),
    )
}

/// A time in nanoseconds, in the unit that reads best.
pub(super) fn duration(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}
