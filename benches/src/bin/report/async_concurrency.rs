//! The async concurrency section: ops/s, latency percentiles and system calls per get at 1
//! to 256 callers, and its chart.

use std::fmt::Write as _;
use std::path::Path;

use super::machine::{duration, locked_version};
use super::results::{benches, ratio, Report};
use plotters::prelude::*;

/// The chart of the async concurrency section, beside `benchmarks.svg`.
pub(super) const ASYNC_CHART: &str = "benchmarks-async-concurrency.svg";

/// The I/O system calls of a `which calls` cell (`sendto 1.00, recvfrom 1.00, futex 0.20`):
/// their sum per get, the rest left out.
pub(super) fn io_calls(which: &str) -> f64 {
    const IO: [&str; 8] = [
        "read", "write", "sendto", "recvfrom", "sendmsg", "recvmsg", "writev", "readv",
    ];
    which
        .split(", ")
        .filter_map(|c| c.split_once(' '))
        .filter(|(name, _)| IO.contains(name))
        .filter_map(|(_, per)| per.parse::<f64>().ok())
        .sum()
}

/// Concurrent callers against one memcached (the `async_concurrency` bench; `latencies`: its
/// TSV, `syscalls`: the syscalls helper's, whose `get-cC` lines are these clients').
/// `one_interleaved`: one caller's get hits in the interleaved bench's rounds, when it ran.
pub(super) fn async_concurrency(
    r: &mut Report,
    latencies: &str,
    syscalls: &str,
    chart_path: &Path,
    one_interleaved: &OneCaller,
) {
    use newcache_benches::concurrent::{BASELINE, CALLERS, CLIENTS};
    const GROUP: &str = "async_concurrent_get_hit";
    if benches(&r.dir, GROUP).is_empty() {
        return;
    }
    let ops = |r: &Report, client: &str, callers: usize| {
        r.ops(GROUP, &format!("{client}_{callers}"), callers as f64)
    };
    // (p50 ns, p99 ns) by client and callers.
    let percentiles = |client: &str, callers: usize| {
        latencies.lines().find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [c, n, _calls, p50, p99, ..] = f.as_slice() else {
                return None;
            };
            (*c == client && n.parse::<usize>().ok() == Some(callers))
                .then(|| Some((p50.parse::<f64>().ok()?, p99.parse::<f64>().ok()?)))
                .flatten()
        })
    };
    let mut per_caller = None;
    // (I/O calls per get, every call per get, which calls) by client and callers.
    let sys = |client: &str, callers: usize| {
        let op = format!("get-c{callers}");
        syscalls.lines().find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [c, o, total, rest @ ..] = f.as_slice() else {
                return None;
            };
            let which = rest.first().copied().unwrap_or_default();
            (*c == client && *o == op).then(|| {
                (
                    io_calls(which),
                    total.parse::<f64>().unwrap_or(f64::NAN),
                    which.to_string(),
                )
            })
        })
    };
    for l in syscalls.lines() {
        if let Some(n) = l.strip_prefix("#gets_per_caller\t") {
            per_caller = n.trim().parse::<u32>().ok();
        }
    }
    let missing: Vec<&str> = CLIENTS
        .iter()
        .copied()
        .filter(|c| CALLERS.iter().all(|n| ops(r, c, *n).is_none()))
        .collect();
    let _ = writeln!(
        r.md,
        "## Async concurrency: get hit, 1 to 256 concurrent callers\n\nThe `async_concurrency` bench (`benches/benches/async_concurrency.rs`, clients in `benches/src/concurrent.rs`): 1, 16, 64 and 256 callers at once, each doing get hits of one 100-byte value in a loop, on one memcached (`-t 2`, `-c 4096`) on the same 2 cores. Each criterion sample releases every caller at once and times from the first caller's start to the last one's finish (`iter_custom`); ops/s is all callers' gets over that wall time (criterion's mean).\n\n- `newcache-async`: **one** `AsyncCache` (`newcache://ADDR/?read_timeout=10000`: the async text transport's one auto-pipelined connection; the timeout, 500 ms by default, only so that no caller gives up under strace), shared by that many tasks on a tokio multi-thread runtime with its default worker threads ({} here).\n- `newcache-blocking`: one blocking `Cache` (the same URL: the text transport's pool with its defaults, `max_connections=64`, so 256 threads share 64 connections, and `max_idle=16`, so past 16 threads connections are closed and opened again as threads come and go: the `connect`, `close`... in its system calls) shared by that many threads.\n- `libmemcached-sys-text`: raw libmemcached, one bare handle per thread (text protocol, `TCP_NODELAY` on), **the baseline**.\n- `memcache-crate-ascii`: the `memcache` crate, one `Client` per thread (its pool of one connection), ASCII protocol.\n- `async-memcached`: the `async-memcached` crate {} (Shopify's), one `Client` (one connection: its calls take `&mut self`) per task, on the same runtime as `newcache-async`.\n\np50/p99: every call's latency, in a histogram of 1.6%-wide buckets, over the whole criterion run of the row (its warm-up included). I/O syscalls per get: `read`, `write`, `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `writev`, `readv`, counted as in *System calls per operation* (`strace -c -f` of the `syscalls` helper driving the same client code{}, minus a run with no gets{}); for the tokio clients `write` and `read` include the runtime's wake-ups of a parked worker thread (an eventfd), not only the socket's; strace slows every system call, so more requests gather per write of the pipelined `newcache-async` under it than without it, and its figure is a lower bound.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        locked_version("async-memcached").unwrap_or_else(|| "?".into()),
        per_caller.map_or(String::new(), |n| format!(
            " with every caller doing {n} gets, against the helper's own memcached, `-t 4`"
        )),
        if CALLERS.iter().all(|n| sys("newcache-async", *n).is_some()) {
            ""
        } else {
            "; a quick run counts 1 and 64 callers only"
        },
    );
    if !missing.is_empty() {
        let _ = writeln!(
            r.md,
            "**Not measured in this run:** {} (no criterion results).\n",
            missing.join(", ")
        );
    }
    let _ = writeln!(
        r.md,
        "| callers | client | ops/s | vs {BASELINE} | p50 | p99 | I/O syscalls per get | all syscalls per get |\n|---|---|---|---|---|---|---|---|"
    );
    let show = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    let mut series: Vec<(&str, Vec<(usize, f64)>)> = Vec::new();
    for callers in CALLERS {
        let base = ops(r, BASELINE, callers);
        for client in CLIENTS {
            let o = ops(r, client, callers);
            if let Some(o) = o {
                match series.iter_mut().find(|(c, _)| *c == client) {
                    Some((_, points)) => points.push((callers, o)),
                    None => series.push((client, vec![(callers, o)])),
                }
            }
            let (p50, p99) = percentiles(client, callers).unzip();
            let s = sys(client, callers);
            let _ = writeln!(
                r.md,
                "| {callers} | {client} | {} | {} | {} | {} | {} | {} |",
                show(o, 0),
                o.map_or("-".into(), |o| ratio(o, base)),
                p50.map_or("-".into(), duration),
                p99.map_or("-".into(), duration),
                show(s.as_ref().map(|s| s.0), 2),
                show(s.as_ref().map(|s| s.1), 2),
            );
        }
    }
    let which: Vec<String> = CALLERS
        .iter()
        .flat_map(|n| CLIENTS.iter().map(move |c| (*c, *n)))
        .filter_map(|(c, n)| sys(c, n).map(|s| format!("| {n} | {c} | {} |", s.2)))
        .collect();
    if !which.is_empty() {
        let _ = writeln!(
            r.md,
            "\nWhich calls, per get (strace):\n\n| callers | client | calls |\n|---|---|---|\n{}",
            which.join("\n")
        );
    }
    let _ = writeln!(r.md, "\n![async concurrency, ops/s]({ASYNC_CHART})\n");
    if let Err(e) = async_chart(chart_path, &series) {
        eprintln!("report: cannot draw the async concurrency chart: {e}");
    }

    // The targets, as ratios in this run.
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let vs_raw = ops(r, "newcache-async", 64).zip(ops(r, BASELINE, 64));
    let io64 = sys("newcache-async", 64).map(|s| s.0);
    let vs_blocking = ops(r, "newcache-async", 1).zip(ops(r, "newcache-blocking", 1));
    // The 1-caller ratio read in the interleaved bench's rounds too: one task awaiting its
    // gets on a current-thread runtime, against the blocking `Cache`, within milliseconds.
    let middle = |r: Option<[f64; 3]>| {
        r.map(|[median, p25, p75]| format!("{median:.2}x (middle half {p25:.2}x - {p75:.2}x)"))
    };
    let interleaved = middle(one_interleaved.cache);
    // (target, ratio and verdict, unit, what the cell adds after the verdict)
    let cells = [
        (
            "`AsyncCache` >= 2x raw libmemcached (handle per thread) ops/s, 64 callers",
            vs_raw.map(|(a, b)| (a / b, a / b >= 2.0)),
            "x",
            String::new(),
        ),
        (
            "`AsyncCache` <= 0.25 write+read syscalls per get, 64 callers",
            io64.map(|x| (x, x <= 0.25)),
            "",
            String::new(),
        ),
        (
            "`AsyncCache` >= 0.9x the blocking `Cache` ops/s, 1 caller",
            vs_blocking.map(|(a, b)| (a / b, a / b >= 0.9)),
            "x",
            interleaved.as_ref().map_or(String::new(), |x| {
                format!(" (interleaved with the blocking `Cache`, one caller on a current-thread runtime: {x})")
            }),
        ),
    ];
    let async_p50 = |client: &str, callers: usize| {
        percentiles(client, callers).map_or("-".into(), |(p50, _)| duration(p50))
    };
    if vs_raw.is_some_and(|(a, b)| a / b < 2.0) {
        r.why.push(format!(
            "**`AsyncCache` at 64 callers, ops/s against raw libmemcached.** p50 latency {} against {}; I/O syscalls per get {} against {} (*Async concurrency*).",
            async_p50("newcache-async", 64),
            async_p50(BASELINE, 64),
            show(io64, 2),
            show(sys(BASELINE, 64).map(|s| s.0), 2),
        ));
    }
    if io64.is_some_and(|x| x > 0.25) {
        r.why.push(format!(
            "**`AsyncCache` at 64 callers, I/O syscalls per get.** Under strace, per get: {}. Fewer requests gathered per write or read than the target needs.",
            sys("newcache-async", 64).map_or("-".into(), |s| s.2),
        ));
    }
    if vs_blocking.is_some_and(|(a, b)| a / b < 0.9) {
        r.why.push(format!(
            "**`AsyncCache` at 1 caller against the blocking `Cache`.** With one caller nothing is there to gather. The caller, alone on an idle connection, writes its request and reads its reply itself (the direct path: no hand-off to the connection's task), so each get is one write and one read, as in the blocking `Cache`, plus the runtime's wait for the reply (`epoll_wait` and a wake-up) where the blocking `Cache` blocks in its read. p50 latency {} against {} for the blocking `Cache` (and {} for `async-memcached`, whose task writes and reads its own connection the same way); under strace, per get, `newcache-async` made {} against the blocking `Cache`'s {}. The ratio is of criterion rows run seconds apart, and it moves more from run to run than the p50s do.",
            async_p50("newcache-async", 1),
            async_p50("newcache-blocking", 1),
            async_p50("async-memcached", 1),
            sys("newcache-async", 1).map_or("-".into(), |s| s.2),
            sys("newcache-blocking", 1).map_or("-".into(), |s| s.2),
        ));
    }
    for (what, got, unit, also) in cells {
        let shown = got.map_or("not measured".to_string(), |(x, met)| {
            format!("{x:.2}{unit}: {}", verdict(met))
        });
        let _ = writeln!(r.targets, "| {what} | {shown}{also} |");
    }
    let _ = writeln!(
        r.md,
        "Targets (also in *Targets, this run*): at 64 callers `newcache-async` ran at {} of raw libmemcached's ops/s (at least 2x wanted) with {} I/O syscalls per get (at most 0.25 wanted); at 1 caller at {} of the blocking `Cache` (at least 0.9x wanted). Ratios of criterion rows measured one after another, seconds apart, on a shared machine: read them with that noise in mind. {}\n",
        vs_raw.map_or("-".into(), |(a, b)| format!("{:.2}x", a / b)),
        show(io64, 2),
        vs_blocking.map_or("-".into(), |(a, b)| format!("{:.2}x", a / b)),
        interleaved.as_ref().map_or(String::new(), |x| format!(
            "In the interleaved bench's rounds (*Ratios, interleaved*: `get_hit`, `newcache-async` over `newcache-text`, one caller: a task awaiting its gets one after another on a current-thread runtime this thread drives), where both are measured within the same milliseconds, one `AsyncCache` caller ran at {x} of the blocking `Cache`. In the same rounds the async text transport alone (`transport-tokio`) ran at {} of the blocking text transport alone (`transport-text`), and a raw `mn` ping-pong on a tokio socket (`loopback-floor-mn-tokio`: a write, then `readable().await` and a read) at {} of the same on a blocking socket (`loopback-floor-mn`): the runtime's wait for a reply (`epoll_wait` and a wake-up, where a blocking read sleeps in the read itself) costs that much before any of newcache's code runs.",
            middle(one_interleaved.transport).unwrap_or_else(|| "-".into()),
            middle(one_interleaved.floor).unwrap_or_else(|| "-".into()),
        )),
    );
}

/// One caller's get hits in the interleaved bench's rounds (median, 25th and 75th
/// percentiles of the per-round ratios).
pub(super) struct OneCaller {
    /// `AsyncCache` over the blocking `Cache`.
    pub(super) cache: Option<[f64; 3]>,
    /// The async text transport alone over the blocking one.
    pub(super) transport: Option<[f64; 3]>,
    /// A raw `mn` ping-pong on a tokio socket over one on a blocking socket.
    pub(super) floor: Option<[f64; 3]>,
}

/// Ops/s against callers, one line per client.
pub(super) fn async_chart(
    path: &Path,
    series: &[(&str, Vec<(usize, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use newcache_benches::concurrent::CALLERS;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let at = |callers: usize| CALLERS.iter().position(|c| *c == callers).unwrap_or(0) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "get hit, total ops/s by concurrent callers (one memcached -t 2, same run)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2..(CALLERS.len() as f64 - 0.8), 0.0..max)?;
    chart
        .configure_mesh()
        .x_labels(CALLERS.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 0.01 && i >= 0.0 {
                CALLERS
                    .get(i as usize)
                    .map_or(String::new(), |c| c.to_string())
            } else {
                String::new()
            }
        })
        .x_desc("concurrent callers")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    let colors = [
        RGBColor(42, 157, 143),
        RGBColor(38, 70, 83),
        RGBColor(231, 111, 81),
        RGBColor(141, 153, 174),
        RGBColor(233, 196, 106),
    ];
    for (i, (client, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let xy: Vec<(f64, f64)> = points.iter().map(|(c, o)| (at(*c), *o)).collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?
            .label(*client)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(xy.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
