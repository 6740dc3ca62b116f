//! The report's sections: the interleaved ratios, TCP_NODELAY, concurrency, heap
//! allocations and system calls per call, and the get-hit chart.

use std::fmt::Write as _;
use std::path::Path;

use super::machine::duration;
use super::results::{benches, mean_ns, ratio, Report};
use newcache_benches::clients::{VALUE_PATH, VALUE_PATH_ALLOCATIONS, VALUE_PATH_TARGET};
use plotters::prelude::*;

pub(super) fn chart(path: &Path, rows: &[(String, f64)]) -> Result<(), Box<dyn std::error::Error>> {
    let height = 60 + 26 * rows.len() as u32;
    let root = SVGBackend::new(path, (760, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().map(|r| r.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "get hit, ops/s (one connection, loopback, same run)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..max, (0..rows.len()).into_segmented())?;
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (name, ops))| {
        let color = if name.starts_with("newcache") || name == "transport-text" {
            RGBColor(42, 157, 143)
        } else {
            RGBColor(141, 153, 174)
        };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*ops, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }))?;
    root.present()?;
    Ok(())
}

/// The `interleaved` bench's figures: per operation, each client's ops/s and every pair's
/// ratio (median and middle half of the rounds).
#[derive(Default)]
pub(super) struct Interleaved {
    pub(super) ops: Vec<(String, String, f64)>,
    pub(super) ratios: Vec<(String, String, String, [f64; 3])>,
}

impl Interleaved {
    pub(super) fn parse(tsv: &str) -> Interleaved {
        let mut out = Interleaved::default();
        for line in tsv.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["ops", op, client, ops] => {
                    if let Ok(ops) = ops.parse() {
                        out.ops.push((op.to_string(), client.to_string(), ops));
                    }
                }
                ["ratio", op, a, b, p50, p25, p75] => {
                    if let (Ok(p50), Ok(p25), Ok(p75)) = (p50.parse(), p25.parse(), p75.parse()) {
                        out.ratios.push((
                            op.to_string(),
                            a.to_string(),
                            b.to_string(),
                            [p50, p25, p75],
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// How many times faster `a` ran than `b` on `op`: (median, p25, p75) over the rounds.
    pub(super) fn ratio(&self, op: &str, a: &str, b: &str) -> Option<[f64; 3]> {
        self.ratios
            .iter()
            .find(|(o, x, y, _)| o == op && x == a && y == b)
            .map(|(_, _, _, r)| *r)
    }

    pub(super) fn clients(&self, op: &str) -> Vec<(String, f64)> {
        self.ops
            .iter()
            .filter(|(o, _, _)| o == op)
            .map(|(_, c, ops)| (c.clone(), *ops))
            .collect()
    }
}

/// The interleaved ratios, one table per operation, then the value path's.
pub(super) fn interleaved_section(r: &mut Report, inter: &Interleaved) {
    if inter.ops.is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## Ratios, interleaved (what the targets are checked on)\n\nThe `interleaved` bench (`benches/benches/interleaved.rs`): within each round every client runs a short burst of the operation (50 gets or sets, 10 multi-gets, 10 set+get pairs), a different client first each round, against one memcached with one worker thread (`-t 1`, so every client's connection is served alike). A ratio is the median over the rounds of the ratio within a round, with the middle half of the rounds beside it. On this shared machine the speed drifts by tens of percent over the seconds criterion spends on one row, which moves criterion's ratios between rows; within a round of a few milliseconds the machine is the same for every client.\n"
    );
    for (op, title) in [
        ("get_hit", "get hit"),
        ("set_100B", "set 100 B"),
        ("get_many_100", "get_many of 100 (keys/s)"),
        ("set_get_100KB", "set+get 100 KB (pairs/s)"),
    ] {
        let clients = inter.clients(op);
        let Some((base, _)) = clients.first() else {
            continue;
        };
        let _ = writeln!(
            r.md,
            "### {title}\n\n| client | ops/s | vs {base} | middle half of the rounds | vs the transport alone |\n|---|---|---|---|---|"
        );
        for (client, ops) in &clients {
            let (median, spread) = match inter.ratio(op, client, base) {
                Some([p50, p25, p75]) => (format!("{p50:.2}x"), format!("{p25:.2}x - {p75:.2}x")),
                None => ("1.00x".to_string(), "-".to_string()),
            };
            // A facade row of the value path: its ratio to the transport beneath it.
            let alone = VALUE_PATH
                .iter()
                .find(|(o, facade, _)| *o == op && facade == client)
                .and_then(|(_, _, transport)| {
                    inter
                        .ratio(op, client, transport)
                        .map(|[p50, _, _]| format!("{p50:.2}x (`{transport}`)"))
                })
                .unwrap_or_else(|| "-".to_string());
            let _ = writeln!(
                r.md,
                "| {client} | {ops:.0} | {median} | {spread} | {alone} |"
            );
        }
        let _ = writeln!(r.md);
    }
    let rows: Vec<String> = VALUE_PATH
        .iter()
        .filter_map(|(op, facade, transport)| {
            let [p50, p25, p75] = inter.ratio(op, facade, transport)?;
            let verdict = if p50 >= VALUE_PATH_TARGET {
                "met"
            } else {
                "missed"
            };
            Some(format!(
                "| {op} | {facade} | {transport} | {p50:.2}x | {p25:.2}x - {p75:.2}x | {verdict} |"
            ))
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            r.md,
            "### The value path: the facade over the transport alone\n\nEach `Cache` row against the transport beneath it, in the same rounds. The transport rows do what the facade does on the wire: for set+get, the same 100 KB with the same flags (text and the herd state) under a key of the facade's wire key's length; for get_many, the facade's own 100 wire keys and items (`-facade-wire-bytes`). `-string` rows store and read a `String`, `-vec` rows a `Vec<u8>`. Target: {VALUE_PATH_TARGET:.2}x or better.\n\n| operation | facade | transport alone | facade / transport | middle half of the rounds | target |\n|---|---|---|---|---|---|\n{}\n",
            rows.join("\n")
        );
    }
}

/// Raw libmemcached's get miss with `TCP_NODELAY` off and on (the `tcp_nodelay` bench).
pub(super) fn tcp_nodelay(r: &mut Report) {
    const GROUP: &str = "get_miss_tcp_nodelay";
    if benches(&r.dir, GROUP).is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## TCP_NODELAY: raw libmemcached's get miss, Nagle on and off\n\nOne raw libmemcached handle (as in `libmemcached-sys-*`), a key that is not there, time per miss with `MEMCACHED_BEHAVIOR_TCP_NODELAY` off (libmemcached's default) and on. `memcached_get` is what a C program calls; `mget-1-key` is a one-key `memcached_mget` + `memcached_fetch_result`, how libmemcached-based wrappers (our `newcache-transport-binary` included) read one key.\n\n| protocol | call | TCP_NODELAY off | TCP_NODELAY on | off / on |\n|---|---|---|---|---|"
    );
    let mut stalls = Vec::new();
    for protocol in ["text", "binary"] {
        for call in ["memcached_get", "mget-1-key"] {
            let at = |nodelay: &str| {
                mean_ns(
                    &r.dir,
                    GROUP,
                    &format!("{protocol}_{call}_nodelay-{nodelay}"),
                )
            };
            let (off, on) = (at("off"), at("on"));
            let show = |ns: Option<f64>| {
                ns.map_or("-".into(), |ns| {
                    format!("{} ({:.0}/s)", duration(ns), 1e9 / ns)
                })
            };
            let times = match (off, on) {
                (Some(off), Some(on)) => format!("{:.0}x", off / on),
                _ => "-".into(),
            };
            if off.is_some_and(|ns| ns > 5e6) {
                stalls.push(format!(
                    "{protocol} `{call}` ({})",
                    off.map_or_else(String::new, duration)
                ));
            }
            let _ = writeln!(
                r.md,
                "| {protocol} | `{call}` | {} | {} | {times} |",
                show(off),
                show(on)
            );
        }
    }
    let finding = if stalls.is_empty() {
        "**This run: no miss waited for Nagle**; every row is one round trip.".to_string()
    } else {
        format!(
            "**This run: without `TCP_NODELAY` a miss waits for the delayed ACK in {}**; with it every miss is one round trip.",
            stalls.join(", ")
        )
    };
    let _ = writeln!(
        r.md,
        "\n{finding} Why (seen with `strace` on libmemcached 1.1.4): a binary `mget` writes the key's quiet `GETKQ` and then the `NOOP` that ends the batch as **two** `sendto` calls. On a miss the server answers the quiet `GETKQ` with nothing, so nothing carries the ACK of the first segment back; Nagle's algorithm holds the small `NOOP` until the server's delayed ACK fires (about 40 ms on Linux), and only then does the server see the `NOOP` and reply. On a hit the value's reply carries the ACK at once. Binary `memcached_get` sends one non-quiet `GETK` in one write and the text protocol sends one line, so neither waits. The ~23 misses/s seen before were this: a binary one-key `mget` miss without `TCP_NODELAY`. Every libmemcached handle in these benches, and `newcache-transport-binary` by default, sets `TCP_NODELAY`.\n"
    );
}

/// Threads sharing one `Cache` against one raw handle per thread (the `concurrency` bench).
pub(super) fn concurrency(r: &mut Report) {
    const GROUP: &str = "concurrent_get_hit";
    if benches(&r.dir, GROUP).is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## Concurrency: get hit, total ops/s\n\n1, 2, 4 and 8 threads share one `Cache` (`newcache://ADDR/?transport=text`: the text transport's pool of connections); raw libmemcached gets one handle per thread (`libmemcached-sys`, text protocol), as a C or pylibmc program would. Each sample starts every thread at once and stops at the last one's finish (criterion's `iter_custom`); memcached runs 4 worker threads on the same 2 cores.\n\n| threads | newcache-text | libmemcached-sys-text, handle per thread | ratio |\n|---|---|---|---|"
    );
    for threads in [1u32, 2, 4, 8] {
        let per = f64::from(threads);
        // criterion files `<client>/<threads>` as `<client>_<threads>`.
        let ours = r.ops(GROUP, &format!("newcache-text_{threads}"), per);
        let theirs = r.ops(GROUP, &format!("libmemcached-sys-text_{threads}"), per);
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            r.md,
            "| {threads} | {} | {} | {} |",
            show(ours),
            show(theirs),
            ours.map_or("-".into(), |o| ratio(o, theirs))
        );
    }
    let _ = writeln!(r.md);
}

/// Heap allocations per call (the `allocations` bench's TSV).
pub(super) fn allocations_section(r: &mut Report, tsv: &str) {
    let rows: Vec<Vec<&str>> = tsv
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 3)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## Heap allocations per call\n\nThe `allocations` bench (`benches/benches/allocations.rs`): dhat's counting global allocator, against a real memcached; counts per call (a reallocation counts as an allocation), averaged over 1,000 calls (100 for the 100 KB cases) after a warm-up (they are the same every call). libmemcached allocates with C `malloc`, which a Rust allocator does not see: its rows (`binary`, `BinaryTransport`) count the Rust side only (the items, the facade).\n\n| call | allocations | bytes asked for |\n|---|---|---|"
    );
    for f in &rows {
        let _ = writeln!(r.md, "| {} | {} | {} |", f[0], f[1], f[2]);
    }
    let find = |case: &str| rows.iter().find(|f| f.first() == Some(&case));
    let shown = |f: &Vec<&str>| format!("{} ({} B)", f[1], f[2]);
    let mut table = String::new();
    for (op, transport, facade_cases, alone_case) in VALUE_PATH_ALLOCATIONS {
        let Some(alone) = find(alone_case) else {
            continue;
        };
        for case in *facade_cases {
            let Some(facade) = find(case) else {
                continue;
            };
            let extra = match (facade[1].parse::<f64>(), alone[1].parse::<f64>()) {
                (Ok(a), Ok(b)) => format!("{:+.0}", a - b),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                table,
                "| {op} | {transport} | `{case}` | {} | {} | {extra} |",
                shown(facade),
                shown(alone)
            );
        }
    }
    if !table.is_empty() {
        let _ = writeln!(
            r.md,
            "\n### The value path: the facade against the transport alone\n\n| operation | transport | facade call | facade: allocations (bytes) | the transport alone | facade's extra allocations |\n|---|---|---|---|---|---|\n{table}"
        );
    }
    let _ = writeln!(
        r.md,
        "\nWhere they come from (found with a backtrace-capturing allocator, dhat, over the same calls; the counts above are this run's, the attribution is from when this was written). Values are stored bare (the herd state rides in the item's flags), so nothing is stripped from a value on the way out:\n\n- `TextTransport::get` hit, 1: the `Vec` the decoder copies the value into out of the connection's read buffer (`proto::Decoder::decode`), returned as the `Item`'s value. A miss allocates nothing.\n- `Cache::get_raw` hit, 1: that same `Vec`, returned as it is.\n- `Cache::get::<String>` hit, 1: that same `Vec`, handed over as the `String` (`codec::decode_vec`: the UTF-8 checked, no copy). The wire key goes into a reused per-thread buffer: no allocation.\n- `Cache::set` of a `str`, 0: the caller's bytes go to the transport as they are (`codec::with_encoding`), which copies them into the connection's write buffer as it does for its own callers.\n- `Cache::set+get::<String>` of 100 KB, 1, as the transport's: the set allocates nothing (as above); the get's value is the transport's buffer handed over.\n- `Cache::set+get::<Vec<u8>>` of 100 KB, 2: the get hands the transport's buffer over too (`codec::decode_vec` knows the type); serde gives a serializer a `Vec<u8>`'s elements, not its slice, so the set copies them into a buffer of the facade's with one `extend` over the elements, which reserves the value's size at once (1 allocation; `codec::plain`'s `collect_seq`), before the transport copies them; `serde_bytes::Bytes` or `set_raw` store bytes with no copy.\n- `TextTransport::get_many` of 100, 104: the 100 values, the result `Vec<Option<Item>>`, the decoder's list of values and the buffer of their keys (`proto::Values::with_capacity`), and the reply that carries them, boxed (`proto::Reply::Values`: the first key is held inline, so an unboxed reply would be about 350 bytes, and every reply, a lone get's too, would be copied at that size wherever it moves).\n- `Cache::get_many::<String>` of 100, about 3 more than the transport: the returned `GetMany`'s 3 (the keys asked, back to back in one `String`; its entries; its index table, hashed with foldhash), made and filled with the keys while the server answers (`MadeKeys::sent`), with no `String` per key (the 100 values are the transport's buffers handed over), and a few of bookkeeping (the wire-key buffer and its end offsets are not among them: each thread keeps its last multi-get's for the next): over the text transport nothing beyond that transport's own (`Transport::get_many_made`: the keys are all made, then sent whole as a plain `get_many` of the list of them, which is on the stack for up to 128 keys: on the heap, it was the call's first large block, and glibc merged there, before the request went out, the small blocks the last call's values freed).\n- `Cache(identity keys)::get_many::<String>` of 100 (a key function that returns each key as it is, on the raw clients' keys), about as many as the hashed key function's: the same `GetMany` and bookkeeping, and the request sent whole (its keys are all made and checked first, since such a key function's keys can be refused one by one); dhat counts no allocation for the closure's `String` per key in this build.\n- `TokioTextTransport::get` hit, 2: the boxed future (`AsyncTransport` methods return a `BoxFuture`; opening a connection and the queued path are boxed apart, so this one is 656 bytes, within glibc's per-thread cache of small blocks; at 1.2 KB it was not, and its allocation and free cost about as much as the rest of the call's) and the value's `Vec`. The job's step (with the key its reply is checked against, copied so that a caller that stops waiting leaves nothing borrowed behind, inline up to 62 bytes) and its answer are held inline for a job of one command (`SmallVec`: each was a list of its own, two allocations more, one made by the caller and freed by the connection's task under concurrency). A lone caller on the direct path takes its result from the connection's state, with no reply channel (a queued caller has one). The request's bytes go into the thread's spare buffer, given back once a lone request is written whole.\n- `AsyncCache::get::<String>` hit, 2: those 2. The wire key is made in the same reused per-thread buffer as the blocking `Cache`'s and held inline in the call's future across its await, up to 62 bytes (`ShortKey`, as the async transport's steps hold theirs; a `Vec` for it was a seventh, and an inline key of memcached's 250 bytes made the future 944 bytes, now 744).\n- `AsyncCache::get_many::<String>` of 100 (hashed or identity keys), about 16 more than `Cache`'s: the same `GetMany` and values; the request goes out whole, so the list of the made keys' slices is made for it; the rest is the async transport's bookkeeping: the keys copied into the connection's job with their ends (a caller that stops waiting leaves nothing borrowed behind), the job's plan and request bytes, the boxed future, the boxed reply, the grouping by server (a lone server is asked for the caller's list of keys as it is, where a server of several gets a list of its own), and the reply list the job hands back (`Step::take`), which a single server's multi-get returns as it is.\n"
    );
}

/// The operations the `syscalls` helper measures, in the per-operation tables' column order,
/// with their headings (*System calls per operation*, *Client instructions per operation*).
pub(super) const OP_COLUMNS: [(&str, &str); 3] = [
    ("get", "get hit"),
    ("set", "set 100 B"),
    ("get_many", "get_many of 100"),
];

/// `client`'s cell for `op` in a per-operation table whose rows are in the order their
/// clients first came (a row added for a new client); `None` for an operation that is not
/// one of [`OP_COLUMNS`].
pub(super) fn op_cell<'t, C: Default>(
    table: &'t mut Vec<(String, [C; 3])>,
    client: &str,
    op: &str,
) -> Option<&'t mut C> {
    let col = OP_COLUMNS.iter().position(|(o, _)| *o == op)?;
    let at = match table.iter().position(|(c, _)| c == client) {
        Some(at) => at,
        None => {
            table.push((client.to_string(), Default::default()));
            table.len() - 1
        }
    };
    table.get_mut(at)?.1.get_mut(col)
}

/// System calls per operation (the `syscalls` helper under `strace -c -f`).
pub(super) fn syscalls_section(r: &mut Report, tsv: &str) {
    let mut ops = 200;
    // Per client and operation: the calls in all, and which.
    let mut table: Vec<(String, [(String, String); 3])> = Vec::new();
    for line in tsv.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let ["#ops", n] = f.as_slice() {
            ops = n.parse().unwrap_or(ops);
            continue;
        }
        let [client, op, total, rest @ ..] = f.as_slice() else {
            continue;
        };
        if op.starts_with("get-c") {
            // Concurrent callers: in *Async concurrency*.
            continue;
        }
        let which = rest.first().copied().unwrap_or_default();
        if let Some(cell) = op_cell(&mut table, client, op) {
            *cell = (total.to_string(), which.to_string());
        }
    }
    if table.is_empty() {
        return;
    }
    let _ = writeln!(
        r.md,
        "## System calls per operation\n\n`strace -c -f` of the `syscalls` helper (`benches/src/bin/syscalls.rs`) doing {ops} operations, minus a run doing none (setup and one warm-up call subtracted), divided by {ops}; the server is not traced. get: a hit of 100 bytes; set: 100 bytes; get_many: 100 keys, all hits.\n\n| client | get hit | set 100 B | get_many of 100 |\n|---|---|---|---|"
    );
    for (client, [(g, _), (s, _), (m, _)]) in &table {
        let _ = writeln!(r.md, "| {client} | {g} | {s} | {m} |");
    }
    let _ = writeln!(
        r.md,
        "\nWhich calls, per operation:\n\n| client | get hit | set 100 B | get_many of 100 |\n|---|---|---|---|"
    );
    for (client, [(_, g), (_, s), (_, m)]) in &table {
        let _ = writeln!(r.md, "| {client} | {g} | {s} | {m} |");
    }
    let _ = writeln!(r.md);
}
