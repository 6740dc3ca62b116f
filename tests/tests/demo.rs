//! The herd demo is the proof, so it is tested: its short mode (`--quick`: every row
//! 2.5 s, two processes x 32 threads, a real memcached it starts itself) must show `lease` and
//! `meta` at exactly one load per event, and no protection at more. The figures are read
//! back from the JSON the demo writes.

use std::path::PathBuf;
use std::process::Command;

/// The demo example's executable. `cargo xtask test` builds it right after the workspace's
/// test build, with the same features (so only the example itself is compiled), and names it
/// in `NEWCACHE_DEMO_EXE`. Without that (a plain `cargo test`), cargo builds it here with the
/// `memory` feature the demo needs on a machine without memcached: a no-op when it is up to
/// date, a build of the facade and its dependents with that feature set when not (about 45 s
/// of CPU, which `cargo xtask test` saves). The demo's output does not depend on the
/// features: it runs against the memcached it starts, over the default text transport.
fn demo_binary() -> PathBuf {
    if let Some(exe) = std::env::var_os("NEWCACHE_DEMO_EXE") {
        let exe = PathBuf::from(exe);
        assert!(
            exe.is_file(),
            "NEWCACHE_DEMO_EXE={} is not a file",
            exe.display()
        );
        return exe;
    }
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "newcache",
            "--features",
            "memory",
            "--example",
            "demo",
            "--message-format=json",
        ])
        .output()
        .expect("runs cargo");
    assert!(
        out.status.success(),
        "building the demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.contains("\"reason\":\"compiler-artifact\"")
                && l.contains("\"kind\":[\"example\"]")
                && l.contains("\"name\":\"demo\"")
        })
        .unwrap_or_else(|| panic!("no demo artifact in cargo's output: {text}"));
    let exe = line
        .split("\"executable\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no executable in {line}"));
    PathBuf::from(exe)
}

/// The value of `"name": VALUE` in one JSON row (numbers and strings, no nesting needed).
fn field<'a>(row: &'a str, name: &str) -> &'a str {
    let rest = row
        .split(&format!("\"{name}\": "))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {row}"));
    rest.split([',', '}'])
        .next()
        .unwrap()
        .trim()
        .trim_matches('"')
}

#[test]
fn the_quick_demo_shows_one_load_per_event_for_lease_and_meta() {
    let out_dir = std::env::temp_dir().join(format!("newcache-demo-{}", std::process::id()));
    let run = Command::new(demo_binary())
        .args(["--quick", "--out"])
        .arg(&out_dir)
        .output()
        .expect("runs the demo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("Started memcached"), "{stdout}");
    // The legend names each row as the table does.
    let (table, legend) = stdout
        .split_once("Rows, named as above:")
        .unwrap_or_else(|| panic!("{stdout}"));
    for label in [
        "no protection",
        "reinsert (the seed's)",
        "lease (the default)",
        "early (XFetch + lease)",
        "meta (memcached 1.6)",
    ] {
        assert!(table.contains(&format!("  {label} ")), "{label}: {stdout}");
        assert!(legend.contains(&format!("  {label} ")), "{label}: {stdout}");
    }
    let json = std::fs::read_to_string(out_dir.join("herd-demo.json")).unwrap();
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(json.contains("\"run_ms\": 2500"), "{json}");
    let rows: Vec<&str> = json.lines().filter(|l| l.contains("\"policy\"")).collect();
    let row = |policy: &str| {
        *rows
            .iter()
            .find(|r| field(r, "policy") == policy)
            .unwrap_or_else(|| panic!("no {policy} row in {json}"))
    };
    assert_eq!(rows.len(), 5, "{json}");
    for policy in ["lease", "meta"] {
        let r = row(policy);
        let loads: usize = field(r, "loads").parse().unwrap();
        let events: usize = field(r, "events").parse().unwrap();
        assert!(events >= 1, "{r}");
        assert_eq!(loads, events, "{policy}: one load per event: {r}");
        assert_eq!(field(r, "loads_per_event"), "1.00", "{r}");
    }
    let none = row("none");
    let per_event: f64 = field(none, "loads_per_event").parse().unwrap();
    assert!(
        per_event > 1.0,
        "no protection loads more than once: {none}"
    );
    // Every row saw reads and the invalidation's event.
    for r in &rows {
        assert!(field(r, "reads").parse::<u64>().unwrap() > 0, "{r}");
        assert!(field(r, "events").parse::<usize>().unwrap() >= 1, "{r}");
    }
}
