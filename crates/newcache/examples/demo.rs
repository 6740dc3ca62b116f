//! The newcache demo (`cargo xtask demo`): wire keys, then the thundering-herd scene.
//!
//! Starts a memcached of its own on a free loopback port (or, when memcached is not
//! installed, says so and uses the in-process memory transport, in one process), or uses the
//! URL given as the first argument.
//!
//! The herd scene: two processes x 32 threads read one hot key whose loader takes 100 ms,
//! across several expiries and one explicit invalidation, once per policy and once with no
//! protection. It prints a table and writes the figures to `target/herd-demo.json` and a chart
//! to `target/herd-demo.svg`.
//!
//! Usage: `demo [URL] [--quick] [--out DIR]`. `--quick` runs each row for 2.5 s instead of
//! 5 s (the invalidation at 1.5 s instead of 2.6 s), for a check; `--out` writes the JSON and
//! SVG to DIR instead of `target/`.
//!
//! How loads are counted, per event, not by clustering them in time. The events are the
//! invalidation (its time taken just before the call) and the expiries of the values in the
//! cache: every value carries its soft expiry, and every load first looks at what the cache
//! holds (`Cache::peek`, which has no side effects), so the demo knows which value each load
//! replaces. A load counts against the latest of that value's expiry and the invalidation at
//! or before its start (the invalidation only for a value written before it); a load that
//! starts while its value is still fresh (XFetch's early refresh) counts against that value's
//! coming expiry. A late duplicate so counts against the event it answers, never as an event
//! of its own, and under `meta`, whose expiries memcached decides on its whole-second clock,
//! the count does not depend on when exactly the win came. Expiries after a row's window are
//! left out, with their loads (the readers go on 300 ms past it, so one at its very end is
//! still answered).
//!
//! Each row starts at the moment that puts its invalidation half a second from the instants
//! at which expiries are decided: whole Unix seconds under the client-side policies (the cache
//! keeps a soft expiry to the second, rounded up) and memcached's clock tick under `meta`
//! (read from `stats`'s `time` before the row). An invalidation that lands within
//! milliseconds of an expiry is two events, and start times alone cannot tell their loads
//! apart: the expiry's winner may have read what the invalidation replaces, so the
//! invalidation voids its claim and one more reader loads, and both loads start after the
//! invalidation was called. Half a second away, every load answers one event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use newcache::{Cache, SetOptions, Ttl};

const THREADS: usize = 32;
const TTL_SECS: u64 = 1;
const HERD_TIMEOUT: u32 = 5;
const LOAD: Duration = Duration::from_millis(100);
/// Readers go on this long after a row's window, so an event at its end is answered.
const TAIL: Duration = Duration::from_millis(300);
/// Latency histogram: 10 µs buckets up to 200 ms, then one overflow bucket.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;

/// How long a row runs and when its invalidation comes.
#[derive(Clone, Copy)]
struct Timing {
    run_for: Duration,
    invalidate_at: Duration,
}

const FULL: Timing = Timing {
    run_for: Duration::from_millis(5_000),
    invalidate_at: Duration::from_millis(2_600),
};

const QUICK: Timing = Timing {
    run_for: Duration::from_millis(2_500),
    invalidate_at: Duration::from_millis(1_500),
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--reader") {
        return reader_process(&args[1..]);
    }
    let mut timing = FULL;
    let mut out_dir = None;
    let mut given_url = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => timing = QUICK,
            "--out" => match rest.next() {
                Some(dir) => out_dir = Some(dir.clone()),
                None => {
                    eprintln!("--out needs a directory");
                    std::process::exit(2);
                }
            },
            flag if flag.starts_with("--") => {
                eprintln!("unknown flag {flag}; usage: demo [URL] [--quick] [--out DIR]");
                std::process::exit(2);
            }
            url => given_url = Some(url.to_string()),
        }
    }
    let _server;
    let (url, processes) = match given_url {
        Some(url) => (url, 2),
        None if newcache_testkit::memcached_binary().is_some() => {
            let server = newcache_testkit::Memcached::start();
            let url = format!("newcache://{}/", server.addr());
            println!("Started memcached on {} for this demo.", server.addr());
            _server = server;
            (url, 2)
        }
        None => {
            println!("memcached is not installed, so this demo uses the in-process memory transport (one process).");
            println!("({})", newcache_testkit::INSTALL_HINT);
            ("newcache:///?transport=memory".to_string(), 1)
        }
    };

    println!("\n== Wire keys: flavor \"staging\", version 2 ==");
    let cache = Cache::from_url(&format!("{}{}flavor=staging&version=2", url, sep(&url)))
        .unwrap_or_else(|e| panic!("{e}"));
    let long = "a key longer than memcached's 250-byte limit ".repeat(8);
    for key in ["games", "hello world", "ünïcode ключ", long.as_str()] {
        let wire = cache.wire_key(key).unwrap_or_else(|e| panic!("{e}"));
        let shown: String = if key.chars().count() > 30 {
            format!(
                "{}... ({} bytes)",
                key.chars().take(24).collect::<String>(),
                key.len()
            )
        } else {
            format!("{key:?}")
        };
        println!("  {shown:<40} -> {}", String::from_utf8_lossy(&wire));
    }

    println!(
        "\n== Thundering herd: {processes} process(es) x {THREADS} threads read one key whose loader takes {} ms; TTL {TTL_SECS} s, herd_timeout {HERD_TIMEOUT} s, {:.1} s per row, one invalidation at {:.1} s ==",
        LOAD.as_millis(),
        timing.run_for.as_secs_f64(),
        timing.invalidate_at.as_secs_f64()
    );
    println!(
        "  {:<22} {:>6} {:>7} {:>10} {:>6} {:>9} {:>12} {:>8} {:>8}",
        "policy",
        "loads",
        "events",
        "per event",
        "worst",
        "reads",
        "stale reads",
        "p50 µs",
        "p99 µs"
    );
    let mut rows = Vec::new();
    for policy in ["none", "reinsert", "lease", "early", "meta"] {
        if policy == "meta" && url.contains("transport=memory") {
            continue; // the memory transport does not speak the meta protocol
        }
        let row = scene(&url, policy, processes, timing);
        println!(
            "  {:<22} {:>6} {:>7} {:>10.1} {:>6} {:>9} {:>12} {:>8} {:>8}",
            label(policy),
            row.loads(),
            row.events_ms.len(),
            row.loads_per_event(),
            row.loads_by_event.iter().max().copied().unwrap_or(0),
            row.reads,
            row.stale_reads,
            row.p50_us,
            row.p99_us
        );
        rows.push(row);
    }
    for line in [
        "",
        "  Rows, named as above:",
        "  no protection           every reader that finds no fresh value runs the loader: every",
        "                          thread of every process, per event.",
        "  reinsert (the seed's)   django-newcache's policy: the first reader past the soft expiry",
        "                          re-stores the old value bare and loads; the readers of other",
        "                          processes that raced it load too: up to one per process per",
        "                          event (get_or_set loads once per process).",
        "  lease (the default)     the first reader past the soft expiry claims the refresh with a",
        "                          CAS store and loads; the others are served the old value until",
        "                          the new one lands: one load per event.",
        "  early (XFetch + lease)  like lease, but a reader may refresh ahead of the soft expiry,",
        "                          more likely as it nears and the more often the key is read.",
        "                          Such a load is counted against the expiry it forestalled. Each",
        "                          refresh stores a new value, whose own expiry comes a TTL later,",
        "                          so values are replaced sooner: more events than the other rows",
        "                          in the same time. Each reader draws on its own, so several may",
        "                          refresh the same value (per event above 1), and readers are",
        "                          served stale values less often than under lease.",
        "  meta (memcached 1.6)    memcached hands its win flag to one reader once the item's",
        "                          remaining TTL drops below herd_timeout (its soft expiry) or after",
        "                          an invalidation, and serves every other reader the old value",
        "                          until the winner's value lands: one load per event. Its stale",
        "                          reads are those readers; how many there are follows the read",
        "                          rate (the p50 column): the faster the reads, the more fall in",
        "                          the 100 ms the winner's loader runs. lease's are the same kind.",
        "  Columns: loads = loader runs; events = the invalidation and each expiry a load",
        "  answered, inside the row's window; per event and worst = loads per event, and the most",
        "  one event drew; reads = get_or_set calls; stale reads = reads served a value past its",
        "  soft expiry (the price of one load per event); p50/p99 = a read's latency. A protected",
        "  value's soft expiry is kept to the whole second, rounded up (docs/herd.md), so in a",
        "  short run (--quick) a protected value may not expire inside the window where an",
        "  unprotected one does: compare loads per event, not events.",
    ] {
        println!("{line}");
    }
    match write_outputs(&rows, timing, out_dir.as_deref()) {
        Ok((json, svg)) => println!("\n  Figures: {json}\n  Chart:   {svg}"),
        Err(e) => println!("\n  Could not write the figures: {e}"),
    }
}

fn label(policy: &str) -> &'static str {
    match policy {
        "none" => "no protection",
        "reinsert" => "reinsert (the seed's)",
        "lease" => "lease (the default)",
        "early" => "early (XFetch + lease)",
        _ => "meta (memcached 1.6)",
    }
}

fn sep(url: &str) -> &'static str {
    if url.contains('?') {
        "&"
    } else {
        "?"
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn cache_for(url: &str, policy: &str) -> Cache {
    let herd = if policy == "none" { "off" } else { policy };
    Cache::from_url(&format!(
        "{url}{}herd_timeout={HERD_TIMEOUT}&herd={herd}&lease_wait=2000",
        sep(url)
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// One run of the loader: when it started and ended, the soft expiry of the value it made,
/// and that of the value the cache held when it started (0: none), in Unix ms.
#[derive(Clone, Copy, Debug)]
struct Load {
    start: u64,
    end: u64,
    soft: u64,
    replaces: u64,
}

/// What one process saw.
#[derive(Default)]
struct Tally {
    loads: Vec<Load>,
    reads: u64,
    stale_reads: u64,
    histogram: Vec<u64>,
}

impl Tally {
    fn to_line(&self) -> String {
        let loads: Vec<String> = self
            .loads
            .iter()
            .map(|l| format!("{}:{}:{}:{}", l.start, l.end, l.soft, l.replaces))
            .collect();
        let hist: Vec<String> = self
            .histogram
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| format!("{i}:{n}"))
            .collect();
        format!(
            "TALLY {} {} {} {}",
            self.reads,
            self.stale_reads,
            if loads.is_empty() {
                "-".into()
            } else {
                loads.join(",")
            },
            if hist.is_empty() {
                "-".into()
            } else {
                hist.join(",")
            }
        )
    }

    fn from_line(line: &str) -> Option<Tally> {
        let mut parts = line.strip_prefix("TALLY ")?.split(' ');
        let reads = parts.next()?.parse().ok()?;
        let stale_reads = parts.next()?.parse().ok()?;
        let loads = match parts.next()? {
            "-" => Vec::new(),
            l => l
                .split(',')
                .map(|x| {
                    let mut f = x.split(':').map(|n| n.parse::<u64>().ok());
                    Some(Load {
                        start: f.next()??,
                        end: f.next()??,
                        soft: f.next()??,
                        replaces: f.next()??,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        };
        let mut histogram = vec![0; BUCKETS + 1];
        if let Some(h) = parts.next().filter(|h| *h != "-") {
            for pair in h.split(',') {
                let (i, n) = pair.split_once(':')?;
                let (i, n): (usize, u64) = (i.parse().ok()?, n.parse().ok()?);
                *histogram.get_mut(i)? += n;
            }
        }
        Some(Tally {
            loads,
            reads,
            stale_reads,
            histogram,
        })
    }
}

/// The value readers see: which load made it and when its soft expiry is.
type Stamped = (u64, u64);

/// How the value is stored in a row: with the herd envelope, or (no protection) bare, living
/// a herd timeout past its soft expiry, which the readers check themselves on the stamp, so
/// that every row's values expire on the same clock.
fn store_options(policy: &str) -> SetOptions {
    if policy == "none" {
        SetOptions::new(Ttl::Seconds(TTL_SECS + u64::from(HERD_TIMEOUT))).no_herd()
    } else {
        SetOptions::new(Ttl::Seconds(TTL_SECS))
    }
}

/// Runs THREADS readers in this process until `until_ms` (Unix ms).
fn run_readers(url: &str, policy: &str, key: &str, until_ms: u64) -> Tally {
    let cache = cache_for(url, policy);
    let loads = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let histogram: Arc<Vec<AtomicU64>> =
        Arc::new((0..=BUCKETS).map(|_| AtomicU64::new(0)).collect());
    let generation = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (cache, key, policy) = (cache.clone(), key.to_string(), policy.to_string());
            let (loads, reads, stale, histogram, generation, stop) = (
                loads.clone(),
                reads.clone(),
                stale.clone(),
                histogram.clone(),
                generation.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let load = || {
                    let start = now_ms();
                    // Which value this load replaces; looking changes nothing in the cache.
                    let replaces = match cache.peek(&key) {
                        Ok(Some(p)) => {
                            newcache::codec::decode::<Stamped>(&p.value.bytes, p.value.flags)
                                .map_or(0, |(_, soft)| soft)
                        }
                        _ => 0,
                    };
                    std::thread::sleep(LOAD);
                    let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
                    let end = now_ms();
                    let soft = end + TTL_SECS * 1000;
                    if let Ok(mut l) = loads.lock() {
                        l.push(Load {
                            start,
                            end,
                            soft,
                            replaces,
                        });
                    }
                    (g, soft)
                };
                let options = store_options(&policy);
                while !stop.load(Ordering::Relaxed) && now_ms() < until_ms {
                    let started = Instant::now();
                    let value: Option<Stamped> = if policy == "none" {
                        // A plain read-through: whoever finds no fresh value loads.
                        match cache.get::<Stamped>(&key) {
                            Ok(Some(v)) if now_ms() < v.1 => Some(v),
                            Ok(_) => {
                                let v = load();
                                let _ = cache.set(&key, &v, options);
                                None
                            }
                            Err(e) => {
                                eprintln!("get failed: {e}");
                                None
                            }
                        }
                    } else {
                        match cache.get_or_set(&key, options, load) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                eprintln!("get_or_set failed: {e}");
                                None
                            }
                        }
                    };
                    let us = started.elapsed().as_micros() as u64;
                    let bucket = ((us / BUCKET_US) as usize).min(BUCKETS);
                    if let Some(h) = histogram.get(bucket) {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    if let Some((_, soft_expiry)) = value {
                        if now_ms() > soft_expiry {
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    stop.store(true, Ordering::Relaxed);
    let loads = loads.lock().map(|l| l.clone()).unwrap_or_default();
    Tally {
        loads,
        reads: reads.load(Ordering::Relaxed),
        stale_reads: stale.load(Ordering::Relaxed),
        histogram: histogram
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect(),
    }
}

/// `demo --reader URL POLICY KEY UNTIL_MS`: the second process.
fn reader_process(args: &[String]) {
    let [url, policy, key, until] = args else {
        eprintln!("usage: demo --reader URL POLICY KEY UNTIL_MS");
        std::process::exit(2);
    };
    let until: u64 = until.parse().unwrap_or(0);
    println!("{}", run_readers(url, policy, key, until).to_line());
}

struct Row {
    policy: String,
    /// The events inside the row's window, in ms from its start.
    events_ms: Vec<u64>,
    /// Loads attributed to each event.
    loads_by_event: Vec<usize>,
    reads: u64,
    stale_reads: u64,
    p50_us: u64,
    p99_us: u64,
}

impl Row {
    fn loads(&self) -> usize {
        self.loads_by_event.iter().sum()
    }

    fn loads_per_event(&self) -> f64 {
        self.loads() as f64 / self.events_ms.len().max(1) as f64
    }
}

/// The event a load answers (Unix ms): the expiry of the value it replaces, or the
/// invalidation, whichever is the latest at or before its start; the invalidation only for a
/// value written before it. A load that starts while its value is fresh answers that value's
/// coming expiry.
fn answered(load: &Load, invalidated_at: u64) -> u64 {
    let written_before =
        load.replaces == 0 || load.replaces.saturating_sub(TTL_SECS * 1000) < invalidated_at;
    if load.start >= invalidated_at && written_before {
        invalidated_at
    } else if load.replaces == 0 {
        // Nothing in the cache before the invalidation: not in this scene (it starts warm).
        invalidated_at
    } else {
        load.replaces
    }
}

/// Where in the Unix second (ms) memcached's clock ticks: its `stats` `time` is read until
/// it moves (at most a second and a half). 0 when it cannot be seen.
fn memcached_tick(cache: &Cache) -> u64 {
    let time = || {
        cache.stats().ok().and_then(|servers| {
            servers
                .first()
                .and_then(|s| s.stats.get("time").and_then(|t| t.parse::<u64>().ok()))
        })
    };
    let Some(first) = time() else { return 0 };
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        match time() {
            Some(t) if t != first => return now_ms() % 1000,
            Some(_) => std::thread::sleep(Duration::from_micros(500)),
            None => return 0,
        }
    }
    0
}

fn scene(url: &str, policy: &str, processes: usize, timing: Timing) -> Row {
    let key = format!("hot-{policy}-{}", now_ms());
    let cache = cache_for(url, policy);
    // Start where the invalidation lands half a second from an expiry (see the module doc).
    let tick = if policy == "meta" {
        memcached_tick(&cache)
    } else {
        0
    };
    let invalidate_at = timing.invalidate_at.as_millis() as u64;
    let phase = (tick + 1500 - invalidate_at % 1000) % 1000;
    std::thread::sleep(Duration::from_millis(
        (phase + 1000 - now_ms() % 1000) % 1000,
    ));
    // Start warm: the scene measures expiries and the invalidation, not the first load.
    let set_at = now_ms();
    let warm_soft = set_at + TTL_SECS * 1000;
    cache
        .set(&key, &(0u64, warm_soft), store_options(policy))
        .unwrap_or_else(|e| panic!("{e}"));
    let start = set_at;
    let window_end = start + timing.run_for.as_millis() as u64;
    let until = window_end + TAIL.as_millis() as u64;
    let child = (processes > 1).then(|| {
        std::process::Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")))
            .args(["--reader", url, policy, &key, &until.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the second reader process: {e}"))
    });
    let invalidator = {
        let (cache, key, policy) = (cache.clone(), key.clone(), policy.to_string());
        let at = start + invalidate_at;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms())));
            // The event's time: just before the call, so every load it causes comes after.
            let invalidated_at = now_ms();
            let _ = if policy == "none" {
                cache.delete(&key)
            } else {
                cache.invalidate(&key)
            };
            invalidated_at
        })
    };
    let mut tallies = vec![run_readers(url, policy, &key, until)];
    if let Some(child) = child {
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("second reader process: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().find_map(Tally::from_line) {
            Some(t) => tallies.push(t),
            None => panic!("the second reader process reported nothing: {text}"),
        }
    }
    let invalidated_at = invalidator
        .join()
        .unwrap_or_else(|_| panic!("the invalidation failed"));
    let loads: Vec<Load> = tallies
        .iter()
        .flat_map(|t| t.loads.iter().copied())
        .collect();
    // The events: the invalidation and every expiry a load answered, inside the window; the
    // loads that answered an expiry after it are left out with it.
    let answers: Vec<u64> = loads.iter().map(|l| answered(l, invalidated_at)).collect();
    let mut events: Vec<u64> = answers.clone();
    events.push(invalidated_at);
    events.retain(|&e| e <= window_end);
    events.sort_unstable();
    events.dedup();
    let by_event: Vec<usize> = events
        .iter()
        .map(|e| answers.iter().filter(|a| *a == e).count())
        .collect();
    let events_ms: Vec<u64> = events.iter().map(|e| e.saturating_sub(start)).collect();
    let mut histogram = vec![0u64; BUCKETS + 1];
    for t in &tallies {
        for (sum, n) in histogram.iter_mut().zip(&t.histogram) {
            *sum += n;
        }
    }
    let total: u64 = histogram.iter().sum();
    let percentile = |p: f64| {
        let target = (total as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, n) in histogram.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return (i as u64 + 1) * BUCKET_US;
            }
        }
        BUCKETS as u64 * BUCKET_US
    };
    Row {
        policy: policy.to_string(),
        events_ms,
        loads_by_event: by_event,
        reads: tallies.iter().map(|t| t.reads).sum(),
        stale_reads: tallies.iter().map(|t| t.stale_reads).sum(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `herd-demo.json` and `herd-demo.svg` to `out_dir` (default: the target directory);
/// returns their paths.
fn write_outputs(
    rows: &[Row],
    timing: Timing,
    out_dir: Option<&str>,
) -> std::io::Result<(String, String)> {
    let dir = match out_dir {
        Some(dir) => dir.to_string(),
        None => std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR"))),
    };
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?.display().to_string();
    let json_rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "    {{\"policy\": \"{}\", \"loads\": {}, \"events\": {}, \"loads_per_event\": {:.2}, \"events_ms\": [{}], \"loads_by_event\": [{}], \"reads\": {}, \"stale_reads\": {}, \"p50_us\": {}, \"p99_us\": {}}}",
                r.policy,
                r.loads(),
                r.events_ms.len(),
                r.loads_per_event(),
                join(&r.events_ms),
                join(&r.loads_by_event),
                r.reads,
                r.stale_reads,
                r.p50_us,
                r.p99_us
            )
        })
        .collect();
    let json = format!(
        "{{\n  \"threads_per_process\": {THREADS},\n  \"load_ms\": {},\n  \"ttl_s\": {TTL_SECS},\n  \"herd_timeout_s\": {HERD_TIMEOUT},\n  \"run_ms\": {},\n  \"invalidate_at_ms\": {},\n  \"rows\": [\n{}\n  ]\n}}\n",
        LOAD.as_millis(),
        timing.run_for.as_millis(),
        timing.invalidate_at.as_millis(),
        json_rows.join(",\n")
    );
    let json_path = format!("{dir}/herd-demo.json");
    std::fs::write(&json_path, json)?;

    // A bar chart of loads per event, drawn as plain SVG.
    let (w, bar_h, gap, left) = (640.0, 34.0, 14.0, 190.0);
    let max = rows.iter().map(Row::loads_per_event).fold(1.0f64, f64::max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n<text x=\"10\" y=\"22\" font-size=\"15\">Loads per expiry or invalidation (lower is better; 1 is the goal)</text>\n",
        60.0 + rows.len() as f64 * (bar_h + gap)
    );
    for (i, r) in rows.iter().enumerate() {
        let v = r.loads_per_event();
        let y = 40.0 + i as f64 * (bar_h + gap);
        let len = (w - left - 70.0) * v / max;
        svg.push_str(&format!(
            "<text x=\"10\" y=\"{:.0}\">{}</text>\n<rect x=\"{left}\" y=\"{y:.0}\" width=\"{len:.1}\" height=\"{bar_h}\" fill=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.0}\">{v:.1}</text>\n",
            y + bar_h * 0.65,
            label(&r.policy),
            if v <= 1.05 { "#2a9d8f" } else { "#e76f51" },
            left + len + 6.0,
            y + bar_h * 0.65
        ));
    }
    svg.push_str("</svg>\n");
    let svg_path = format!("{dir}/herd-demo.svg");
    std::fs::write(&svg_path, svg)?;
    Ok((json_path, svg_path))
}
