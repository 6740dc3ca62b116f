//! The newcache demo (`cargo xtask demo`): wire keys, then the thundering-herd scene.
//!
//! Starts a memcached of its own on a free loopback port (or, when memcached is not
//! installed, says so and uses the in-process memory transport), or uses the URL given as the
//! first argument.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use newcache::{Cache, SetOptions, Ttl};

const THREADS: usize = 32;
const TTL_SECS: u64 = 1;
const COMPUTE: Duration = Duration::from_millis(100);
const RUN_FOR: Duration = Duration::from_millis(4_500);

fn main() {
    let arg = std::env::args().nth(1);
    let _server;
    let url = match arg {
        Some(url) => url,
        None if newcache_testkit::memcached_binary().is_some() => {
            let server = newcache_testkit::Memcached::start();
            let url = format!("newcache://{}/", server.addr());
            println!("Started memcached on {} for this demo.", server.addr());
            _server = server;
            url
        }
        None => {
            println!(
                "memcached is not installed, so this demo uses the in-process memory transport."
            );
            println!("({})", newcache_testkit::INSTALL_HINT);
            "newcache:///?transport=memory".to_string()
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
        println!("  {shown:<36} -> {}", String::from_utf8_lossy(&wire));
    }

    println!(
        "\n== Thundering herd: {THREADS} threads read one key that takes {} ms to compute, TTL {TTL_SECS} s, for {:.1} s ==",
        COMPUTE.as_millis(),
        RUN_FOR.as_secs_f64()
    );
    println!(
        "  {:<24} {:>15} {:>9} {:>12} {:>15}",
        "herd protection", "recomputations", "expiries", "per expiry", "values served"
    );
    for (label, herd, policy) in [
        ("off", false, "lease"),
        ("reinsert (the seed's)", true, "reinsert"),
        ("lease (the default)", true, "lease"),
        ("meta (memcached 1.6)", true, "meta"),
    ] {
        if policy == "meta" && url.contains("transport=memory") {
            continue; // the memory transport does not speak the meta protocol
        }
        let cache = Cache::from_url(&format!("{}{}herd_timeout=5&herd={policy}", url, sep(&url)))
            .unwrap_or_else(|e| panic!("{e}"));
        let r = herd_scene(&cache, &format!("expensive-{label}"), herd);
        println!(
            "  {label:<24} {:>15} {:>9} {:>12.1} {:>15}",
            r.recomputations,
            r.expiries,
            r.recomputations as f64 / r.expiries.max(1) as f64,
            r.served
        );
    }
    println!(
        "\nWith herd protection on, the first reader after the soft expiry recomputes and the"
    );
    println!("others keep getting the old value; without it, every reader that misses recomputes.");
    println!("reinsert can recompute more than once per expiry: django-newcache's race, where");
    println!("every reader that fetched the stale envelope before the re-store landed misses too.");
    println!(
        "lease hands the refresh to exactly one reader (a CAS claim); the rest get the old value."
    );
    println!(
        "meta lets memcached hand its win flag to exactly one reader (mg ... R<herd_timeout>)."
    );
}

fn sep(url: &str) -> &'static str {
    if url.contains('?') {
        "&"
    } else {
        "?"
    }
}

struct SceneResult {
    recomputations: u64,
    expiries: u64,
    served: u64,
}

fn herd_scene(cache: &Cache, key: &str, herd: bool) -> SceneResult {
    let options = if herd {
        SetOptions::new(Ttl::Seconds(TTL_SECS))
    } else {
        SetOptions::new(Ttl::Seconds(TTL_SECS)).no_herd()
    };
    // Start warm: the scene measures expiries, not the first (cold) load.
    cache
        .set(key, &0u64, options)
        .unwrap_or_else(|e| panic!("{e}"));
    let recomputations = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (cache, key) = (cache.clone(), key.to_string());
            let (recomputations, served, starts, stop) = (
                recomputations.clone(),
                served.clone(),
                starts.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match cache.get::<u64>(&key) {
                        Ok(Some(_)) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => {
                            let n = recomputations.fetch_add(1, Ordering::Relaxed) + 1;
                            if let Ok(mut s) = starts.lock() {
                                s.push(Instant::now());
                            }
                            std::thread::sleep(COMPUTE);
                            if let Err(e) = cache.set(&key, &n, options) {
                                eprintln!("set failed: {e}");
                            }
                        }
                        Err(e) => eprintln!("get failed: {e}"),
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    while begin.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    // Recomputations that start within one compute time of each other answer the same expiry.
    let mut starts = starts.lock().map(|s| s.clone()).unwrap_or_default();
    starts.sort();
    let mut expiries = 0;
    let mut last: Option<Instant> = None;
    for s in starts {
        if last.is_none_or(|l| s.duration_since(l) > COMPUTE * 3) {
            expiries += 1;
            last = Some(s);
        }
    }
    SceneResult {
        recomputations: recomputations.load(Ordering::Relaxed),
        expiries,
        served: served.load(Ordering::Relaxed),
    }
}
