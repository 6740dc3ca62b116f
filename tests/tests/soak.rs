//! The soak, short: the `soak` binary (tests/src/bin/soak/) for 8 s per phase (the text
//! transport, libmemcached's binary protocol when the `binary` feature is on, and the
//! `AsyncCache` over the async text transport), with servers stopped, killed and restarted
//! during the run. `cargo xtask soak` runs it longer.
//!
//! It must exit 0 and report 0 wrong values for each transport; errors are expected while
//! servers are down, but every call stays bounded: none but `get_or_set` over 4 s (two
//! requests to a stopped server at connect 250 ms + write 500 ms + read 500 ms + a pooled
//! connection wait of 500 ms each, with slack), `get_or_set` not over 6 s (it may wait out a
//! lease key left by a timed-out `add` that ran late: `lease_wait` 3 s stored as 4 s, which
//! memcached's whole-second clock ends at 4 s at the latest, + one failing request). The binary checks the same limits and its memory growth.

use std::process::Command;

#[test]
fn soak_short_run_has_no_wrong_value_and_bounded_calls() {
    let phases: u32 = if cfg!(feature = "binary") { 3 } else { 2 };
    let out = Command::new(env!("CARGO_BIN_EXE_soak"))
        .args(["--secs", &(8 * phases).to_string()])
        .output()
        .expect("run the soak binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "soak failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let wrong: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("wrong values:"))
        .collect();
    assert_eq!(
        wrong.len(),
        phases as usize,
        "one summary per transport:\n{stdout}"
    );
    assert!(
        wrong.iter().all(|l| *l == "wrong values: 0"),
        "wrong values seen:\n{stdout}"
    );
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("longest by operation (ms): "))
    {
        for entry in line["longest by operation (ms): ".len()..].split(", ") {
            let (op, ms) = entry.rsplit_once(' ').expect("`op ms`");
            let ms: u64 = ms.parse().expect("milliseconds");
            let limit = if op == "get_or_set" { 6_000 } else { 4_000 };
            assert!(
                ms < limit,
                "a {op} call took {ms} ms (limit {limit}):\n{stdout}"
            );
        }
    }
    let operations: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("operations: "))
        .map(|n| n.parse::<u64>().expect("a count"))
        .min()
        .expect("an operations line");
    assert!(operations > 1_000, "too few operations ran:\n{stdout}");
    assert!(
        stdout.contains("stopped+continued") && stdout.contains("killed+restarted"),
        "servers were stopped and killed:\n{stdout}"
    );
}
