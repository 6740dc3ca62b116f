//! The client's instructions per operation, under callgrind: the one measure of this
//! machine's benches that its noise cannot move. The `syscalls` helper does each operation
//! N times and none, under `valgrind --tool=callgrind`; the difference over N is what one
//! operation costs the client process in user space (its own code and its libraries:
//! libmemcached, libc), not the kernel's system calls and not the server's work.

#[allow(unused_imports)]
use super::*;

/// The clients whose instructions per operation the report shows: the facade with its
/// default (hashing) key function and with an identity one, the text transport alone, raw
/// libmemcached both ways, and the `memcache` crate.
pub(crate) const INSTRUCTION_CLIENTS: [&str; 6] = [
    "newcache-text",
    "newcache-text-identity",
    "transport-text",
    "libmemcached-sys-text",
    "libmemcached-sys-binary",
    "memcache-crate-ascii",
];

/// The `Collected : N` figure of callgrind's summary on stderr: instructions executed.
pub(crate) fn callgrind_total(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        let (_, after) = line.split_once("Collected :")?;
        after.trim().parse().ok()
    })
}

/// Runs the `syscalls` helper under callgrind for every client of [`INSTRUCTION_CLIENTS`]
/// and operation (`get`, `set`, `get_many`), 0 and N times, against a memcached started
/// here, and writes `client<TAB>op<TAB>instructions per op` lines to
/// `target/instructions.tsv`. Returns the file's path, or `None` when valgrind is missing and
/// cannot be installed.
pub(crate) fn instruction_counts(
    target: &str,
    helper: &Path,
    quick: bool,
) -> Result<Option<PathBuf>, String> {
    let out = PathBuf::from(format!("{target}/instructions.tsv"));
    if !have_tool("valgrind", "instruction counts")? {
        return Ok(None);
    }
    with_helper_server(|addr| {
        let lines = count_instructions(helper, addr, quick)?;
        std::fs::write(&out, lines).map_err(|e| format!("{}: {e}", out.display()))
    })?;
    Ok(Some(out))
}

/// The lines of `target/instructions.tsv`: every client and operation under callgrind,
/// against the memcached at `addr`.
fn count_instructions(helper: &Path, addr: &str, quick: bool) -> Result<String, String> {
    let count = |client: &str, op: &str, n: u32| -> Result<u64, String> {
        let run = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(helper)
            .args([addr, client, op])
            .arg(n.to_string())
            .stdout(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("valgrind: {e}"))?;
        let stderr = String::from_utf8_lossy(&run.stderr);
        if !run.status.success() {
            return Err(format!(
                "callgrind {client} {op} {n} failed ({}): {stderr}",
                run.status
            ));
        }
        callgrind_total(&stderr)
            .ok_or_else(|| format!("no instruction total from callgrind for {client} {op}"))
    };
    // Deterministic, so few operations do; a multi-get is a hundred gets' work.
    let n = |op: &str| match (op, quick) {
        ("get_many", true) => 20,
        ("get_many", false) => 100,
        (_, true) => 200,
        (_, false) => 1000,
    };
    let mut lines = String::from("#client\top\tinstructions per op\n");
    for client in INSTRUCTION_CLIENTS {
        for op in SYSCALL_OPS {
            let n = n(op);
            let base = count(client, op, 0)?;
            let with = count(client, op, n)?;
            let per = with.saturating_sub(base) / u64::from(n);
            lines.push_str(&format!("{client}\t{op}\t{per}\n"));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_read_from_callgrinds_summary() {
        let stderr = "==12== Callgrind, a call-graph generating cache profiler\n==12== \n==12== Events    : Ir\n==12== Collected : 4252947\n==12== \n==12== I   refs:      4,252,947\n";
        assert_eq!(callgrind_total(stderr), Some(4_252_947));
        assert_eq!(callgrind_total("==12== I   refs:      4,252,947\n"), None);
    }
}
