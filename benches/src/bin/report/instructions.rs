//! The client's instructions per operation under callgrind (`target/instructions.tsv`,
//! written by `cargo xtask bench`).

use std::fmt::Write as _;

use super::results::Report;
use super::sections::{op_cell, OP_COLUMNS as OPS};
use super::BASELINE;

/// Instructions per operation by client, in the file's order: `client<TAB>op<TAB>count`.
fn parse(tsv: &str) -> Vec<(String, [Option<u64>; 3])> {
    let mut rows: Vec<(String, [Option<u64>; 3])> = Vec::new();
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        let [client, op, count] = line.split('\t').collect::<Vec<_>>()[..] else {
            continue;
        };
        let Ok(count) = count.parse() else {
            continue;
        };
        if let Some(cell) = op_cell(&mut rows, client, op) {
            *cell = Some(count);
        }
    }
    rows
}

/// `count` with thousands separated, and its ratio to the baseline's.
fn cell(count: Option<u64>, baseline: Option<u64>) -> String {
    let Some(count) = count else {
        return "-".into();
    };
    let digits = count.to_string();
    let mut grouped = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(d);
    }
    match baseline.filter(|b| *b > 0) {
        Some(b) => format!("{grouped} ({:.2}x)", count as f64 / b as f64),
        None => grouped,
    }
}

/// *Client instructions per operation*: the table, and what it says beside the wall-clock
/// ratios.
pub(super) fn section(r: &mut Report, tsv: &str) {
    let rows = parse(tsv);
    let Some(baseline) = rows
        .iter()
        .find(|(c, _)| c == BASELINE)
        .map(|(_, cells)| *cells)
    else {
        return;
    };
    let _ = writeln!(
        r.md,
        "## Client instructions per operation (callgrind)\n\nThe one figure here that this machine's noise cannot move: instructions the client process executes in user space per operation (its own code and its libraries: libmemcached, libc, the allocator), not the kernel's system calls (*System calls per operation*) and not the server's work. `valgrind --tool=callgrind` of the `syscalls` helper (`benches/src/bin/syscalls.rs`) doing N operations, minus a run doing none, divided by N (N = 1000 for get and set, 100 for get_many; fewer in a quick run). In parentheses, the ratio to `{BASELINE}` (fewer is cheaper). `newcache-text-identity` is the facade with a key function that returns the key as it is, on the same short keys as the transport and the raw clients, so the difference between it and `newcache-text` is the default key function and its longer wire keys: valgrind's CPU has no SHA instructions, so SHA-1 runs in software here, where this machine's CPU uses its own (*Key functions* has its time).\n\n| client | {} | {} | {} |\n|---|---|---|---|",
        OPS[0].1, OPS[1].1, OPS[2].1
    );
    for (client, cells) in &rows {
        let _ = writeln!(
            r.md,
            "| {client} | {} | {} | {} |",
            cell(cells[0], baseline[0]),
            cell(cells[1], baseline[1]),
            cell(cells[2], baseline[2])
        );
    }
    let _ = writeln!(r.md);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_the_files_order_and_cells_their_columns() {
        let rows = parse("#client\top\tinstructions per op\nb\tget_many\t300\na\tget\t1000\nb\tget\t2000\nb\tbogus\t1\n");
        assert_eq!(
            rows,
            vec![
                ("b".to_string(), [Some(2000), None, Some(300)]),
                ("a".to_string(), [Some(1000), None, None]),
            ]
        );
    }

    #[test]
    fn cells_group_digits_and_give_the_ratio() {
        assert_eq!(cell(Some(206_777), Some(206_777)), "206,777 (1.00x)");
        assert_eq!(cell(Some(3007), Some(3228)), "3,007 (0.93x)");
        assert_eq!(cell(Some(999), None), "999");
        assert_eq!(cell(None, Some(1)), "-");
    }
}
