//! A reader process for the two-process herd tests:
//! `herd_reader URL KEY THREADS START_MS [TTL_SECS [VALUE]]`. At START_MS (Unix ms) its
//! threads call `get_or_set` on KEY once each, with TTL_SECS (default 300) and a loader that
//! takes 100 ms (`HERD_READER_LOAD_MS` to change it) and returns VALUE (default 2). Prints
//! `loads=N values=v,v,...`; with `HERD_READER_LOAD_MS` it also prints `loading` to stderr
//! when a loader starts, so a test can kill the process mid-load. With `HERD_READER_ASYNC=1`
//! the readers are THREADS tasks of one [`AsyncCache`] on a tokio multi-thread runtime (two
//! worker threads) instead of threads of a [`Cache`], the loader awaiting its 100 ms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use newcache::{AsyncCache, Cache, Ttl};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, key, threads, start, rest) = match args.as_slice() {
        [url, key, threads, start, rest @ ..] if rest.len() <= 2 => {
            (url, key, threads, start, rest)
        }
        _ => {
            eprintln!("usage: herd_reader URL KEY THREADS START_MS [TTL_SECS [VALUE]]");
            std::process::exit(2);
        }
    };
    let ttl: u64 = rest
        .first()
        .map_or(300, |t| t.parse().expect("TTL_SECS is a number"));
    let value: u32 = rest
        .get(1)
        .map_or(2, |v| v.parse().expect("VALUE is a number"));
    let threads: usize = threads.parse().expect("THREADS is a number");
    let start: u64 = start.parse().expect("START_MS is a number");
    let load_ms: u64 = std::env::var("HERD_READER_LOAD_MS")
        .ok()
        .map_or(100, |v| v.parse().expect("HERD_READER_LOAD_MS is a number"));
    let announce = std::env::var_os("HERD_READER_LOAD_MS").is_some();
    let loads = Arc::new(AtomicUsize::new(0));
    let wait_for_start = move || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        Duration::from_millis(start.saturating_sub(now))
    };
    if std::env::var_os("HERD_READER_ASYNC").is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let values: Vec<String> = runtime.block_on(async {
            let cache = AsyncCache::from_url(url).expect("a valid URL");
            let tasks: Vec<_> = (0..threads)
                .map(|_| {
                    let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(wait_for_start()).await;
                        cache
                            .get_or_set(&key, Ttl::Seconds(ttl), || async {
                                loads.fetch_add(1, Ordering::SeqCst);
                                if announce {
                                    eprintln!("loading");
                                }
                                tokio::time::sleep(Duration::from_millis(load_ms)).await;
                                value
                            })
                            .await
                            .expect("get_or_set")
                    })
                })
                .collect();
            let mut values = Vec::new();
            for task in tasks {
                values.push(task.await.expect("reader task").to_string());
            }
            values
        });
        println!(
            "loads={} values={}",
            loads.load(Ordering::SeqCst),
            values.join(",")
        );
        return;
    }
    let cache = Cache::from_url(url).expect("a valid URL");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
            std::thread::spawn(move || {
                std::thread::sleep(wait_for_start());
                cache
                    .get_or_set(&key, Ttl::Seconds(ttl), || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        if announce {
                            eprintln!("loading");
                        }
                        std::thread::sleep(Duration::from_millis(load_ms));
                        value
                    })
                    .expect("get_or_set")
            })
        })
        .collect();
    let values: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("reader thread").to_string())
        .collect();
    println!(
        "loads={} values={}",
        loads.load(Ordering::SeqCst),
        values.join(",")
    );
}
