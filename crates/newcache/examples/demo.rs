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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use newcache::{Cache, SetOptions, Ttl};

const THREADS: usize = 32;
const TTL_SECS: u64 = 1;
const HERD_TIMEOUT: u32 = 5;
const LOAD: Duration = Duration::from_millis(100);
const RUN_FOR: Duration = Duration::from_millis(5_000);
const INVALIDATE_AT: Duration = Duration::from_millis(2_600);
/// Latency histogram: 10 µs buckets up to 200 ms, then one overflow bucket.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--reader") {
        return reader_process(&args[1..]);
    }
    let _server;
    let (url, processes) = match args.first() {
        Some(url) => (url.clone(), 2),
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
        RUN_FOR.as_secs_f64(),
        INVALIDATE_AT.as_secs_f64()
    );
    println!(
        "  {:<22} {:>8} {:>8} {:>11} {:>12} {:>12} {:>9} {:>9}",
        "policy", "loads", "events", "per event", "reads", "stale reads", "p50 µs", "p99 µs"
    );
    let mut rows = Vec::new();
    for policy in ["none", "reinsert", "lease", "early", "meta"] {
        if policy == "meta" && url.contains("transport=memory") {
            continue; // the memory transport does not speak the meta protocol
        }
        let row = scene(&url, policy, processes);
        println!(
            "  {:<22} {:>8} {:>8} {:>11.1} {:>12} {:>12} {:>9} {:>9}",
            label(policy),
            row.loads,
            row.events,
            row.loads as f64 / row.events.max(1) as f64,
            row.reads,
            row.stale_reads,
            row.p50_us,
            row.p99_us
        );
        rows.push(row);
    }
    println!(
        "\n  events = expiries plus the invalidation; a load is one run of the 100 ms loader."
    );
    println!(
        "  none: every reader that misses loads. reinsert (django-newcache): several per event,"
    );
    println!("  its race. lease (the default, a CAS claim) and meta (memcached's win flag): exactly one.");
    println!("  early may load a little ahead of an expiry, so readers rarely see a stale value.");
    match write_outputs(&rows) {
        Ok((json, svg)) => println!("\n  Figures: {json}\n  Chart:   {svg}"),
        Err(e) => println!("\n  Could not write the figures under target/: {e}"),
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

/// What one process saw.
#[derive(Default)]
struct Tally {
    loads: Vec<u64>,
    reads: u64,
    stale_reads: u64,
    histogram: Vec<u64>,
}

impl Tally {
    fn to_line(&self) -> String {
        let loads: Vec<String> = self.loads.iter().map(u64::to_string).collect();
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
            l => l.split(',').filter_map(|x| x.parse().ok()).collect(),
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
                    if let Ok(mut l) = loads.lock() {
                        l.push(now_ms());
                    }
                    std::thread::sleep(LOAD);
                    let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
                    (g, now_ms() + TTL_SECS * 1000)
                };
                let ttl = SetOptions::new(Ttl::Seconds(TTL_SECS));
                while !stop.load(Ordering::Relaxed) && now_ms() < until_ms {
                    let started = Instant::now();
                    let value: Option<Stamped> = if policy == "none" {
                        match cache.get::<Stamped>(&key) {
                            Ok(Some(v)) => Some(v),
                            Ok(None) => {
                                let v = load();
                                let _ = cache.set(&key, &v, ttl.no_herd());
                                None
                            }
                            Err(e) => {
                                eprintln!("get failed: {e}");
                                None
                            }
                        }
                    } else {
                        match cache.get_or_set(&key, ttl, load) {
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
    loads: usize,
    events: usize,
    reads: u64,
    stale_reads: u64,
    p50_us: u64,
    p99_us: u64,
}

fn scene(url: &str, policy: &str, processes: usize) -> Row {
    let key = format!("hot-{policy}-{}", now_ms());
    let cache = cache_for(url, policy);
    // Start warm: the scene measures expiries and the invalidation, not the first load.
    let warm = (0u64, now_ms() + TTL_SECS * 1000);
    let options = SetOptions::new(Ttl::Seconds(TTL_SECS));
    let options = if policy == "none" {
        options.no_herd()
    } else {
        options
    };
    cache
        .set(&key, &warm, options)
        .unwrap_or_else(|e| panic!("{e}"));
    let start = now_ms();
    let until = start + RUN_FOR.as_millis() as u64;
    let child = (processes > 1).then(|| {
        std::process::Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")))
            .args(["--reader", url, policy, &key, &until.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the second reader process: {e}"))
    });
    let invalidator = {
        let (cache, key, policy) = (cache.clone(), key.clone(), policy.to_string());
        std::thread::spawn(move || {
            std::thread::sleep(INVALIDATE_AT);
            let _ = if policy == "none" {
                cache.delete(&key)
            } else {
                cache.invalidate(&key)
            };
            now_ms()
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
    let invalidated_at = invalidator.join().unwrap_or(0);
    let mut loads: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.loads.iter().copied())
        .collect();
    loads.sort_unstable();
    // Loads that start within three load times of each other answer the same event.
    let mut events = 0;
    let mut first: Option<u64> = None;
    for &l in &loads {
        if first.is_none_or(|f| l.saturating_sub(f) > 3 * LOAD.as_millis() as u64) {
            events += 1;
            first = Some(l);
        }
    }
    let _ = invalidated_at;
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
        loads: loads.len(),
        events,
        reads: tallies.iter().map(|t| t.reads).sum(),
        stale_reads: tallies.iter().map(|t| t.stale_reads).sum(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    }
}

/// Writes `target/herd-demo.json` and `target/herd-demo.svg`; returns their paths.
fn write_outputs(rows: &[Row]) -> std::io::Result<(String, String)> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR")));
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?.display().to_string();
    let json_rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "    {{\"policy\": \"{}\", \"loads\": {}, \"events\": {}, \"loads_per_event\": {:.2}, \"reads\": {}, \"stale_reads\": {}, \"p50_us\": {}, \"p99_us\": {}}}",
                r.policy,
                r.loads,
                r.events,
                r.loads as f64 / r.events.max(1) as f64,
                r.reads,
                r.stale_reads,
                r.p50_us,
                r.p99_us
            )
        })
        .collect();
    let json = format!(
        "{{\n  \"threads_per_process\": {THREADS},\n  \"load_ms\": {},\n  \"ttl_s\": {TTL_SECS},\n  \"herd_timeout_s\": {HERD_TIMEOUT},\n  \"run_ms\": {},\n  \"rows\": [\n{}\n  ]\n}}\n",
        LOAD.as_millis(),
        RUN_FOR.as_millis(),
        json_rows.join(",\n")
    );
    let json_path = format!("{dir}/herd-demo.json");
    std::fs::write(&json_path, json)?;

    // A bar chart of loads per event, drawn as plain SVG.
    let (w, bar_h, gap, left) = (640.0, 34.0, 14.0, 190.0);
    let max = rows
        .iter()
        .map(|r| r.loads as f64 / r.events.max(1) as f64)
        .fold(1.0f64, f64::max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n<text x=\"10\" y=\"22\" font-size=\"15\">Loads per expiry or invalidation (lower is better; 1 is the goal)</text>\n",
        60.0 + rows.len() as f64 * (bar_h + gap)
    );
    for (i, r) in rows.iter().enumerate() {
        let v = r.loads as f64 / r.events.max(1) as f64;
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
