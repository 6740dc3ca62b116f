//! Exactly one loader run per expiry across two processes x 16 threads, for `lease` and
//! `meta`, on a real memcached, for one expiry, three in a row, an invalidation and a cold
//! key; every other reader gets the old value, never an error. The same with two processes
//! x 256 tasks of an `AsyncCache` (`async_*` tests), and with one process of each kind.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;

const THREADS: usize = 16;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Runs two reader processes that start together; returns (total loads, every value read).
fn two_processes(url: &str, key: &str) -> (usize, Vec<u32>) {
    two_processes_storing(url, key, 300, 2)
}

/// As [`two_processes`], the loader storing `value` for `ttl` seconds.
fn two_processes_storing(url: &str, key: &str, ttl: u64, value: u32) -> (usize, Vec<u32>) {
    two_processes_of(THREADS, url, key, ttl, value)
}

/// Two reader processes of `threads` threads each.
fn two_processes_of(
    threads: usize,
    url: &str,
    key: &str,
    ttl: u64,
    value: u32,
) -> (usize, Vec<u32>) {
    readers(&[Readers::Threads(threads); 2], url, key, ttl, value)
}

/// What one reader process runs.
#[derive(Debug, Clone, Copy)]
enum Readers {
    /// Threads of a blocking `Cache`.
    Threads(usize),
    /// Tasks of one `AsyncCache` on a multi-thread tokio runtime.
    Tasks(usize),
}

/// How long the loader runs, in ms: the window in which every other reader must read the
/// old value. 100 ms was too short on a loaded 2-core machine (the test's other lane busy):
/// readers of one process read up to a few hundred ms late and got the new value, with
/// exactly one load all the same.
const LOAD_MS: u64 = 400;

/// Reader processes that start together, one per entry, their loader taking [`LOAD_MS`];
/// returns (total loads, every value read).
fn readers(processes: &[Readers], url: &str, key: &str, ttl: u64, value: u32) -> (usize, Vec<u32>) {
    readers_loading(processes, url, key, ttl, value, LOAD_MS)
}

/// [`readers`] with a loader that takes `load_ms`.
fn readers_loading(
    processes: &[Readers],
    url: &str,
    key: &str,
    ttl: u64,
    value: u32,
    load_ms: u64,
) -> (usize, Vec<u32>) {
    let start = now_ms() + 400;
    let children: Vec<_> = processes
        .iter()
        .map(|readers| {
            let (threads, tasks) = match *readers {
                Readers::Threads(n) => (n, false),
                Readers::Tasks(n) => (n, true),
            };
            let mut reader = Command::new(env!("CARGO_BIN_EXE_herd_reader"));
            if tasks {
                reader.env("HERD_READER_ASYNC", "1");
            }
            reader.env("HERD_READER_LOAD_MS", load_ms.to_string());
            reader
                .args([
                    url,
                    key,
                    &threads.to_string(),
                    &start.to_string(),
                    &ttl.to_string(),
                    &value.to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("runs herd_reader")
        })
        .collect();
    let mut loads = 0;
    let mut values = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("herd_reader finishes");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (l, v) = text.trim().split_once(' ').unwrap();
        loads += l.strip_prefix("loads=").unwrap().parse::<usize>().unwrap();
        values.extend(
            v.strip_prefix("values=")
                .unwrap()
                .split(',')
                .map(|x| x.parse::<u32>().unwrap()),
        );
    }
    (loads, values)
}

fn check_one_load(loads: usize, values: &[u32]) {
    check_one_load_of(loads, values, 2 * THREADS);
}

#[test]
fn lease_one_load_per_expiry_across_two_processes() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?herd=lease&herd_timeout=60", server.addr());
    let cache = Cache::from_url(&url).unwrap();
    cache.set("hot", &1u32, Ttl::Seconds(1)).unwrap();
    // The soft expiry is kept to the whole second, rounded up: a 1 s TTL is stale within 2 s.
    std::thread::sleep(Duration::from_millis(2100));
    let (loads, values) = two_processes(&url, "hot");
    check_one_load(loads, &values);
    assert_eq!(cache.get::<u32>("hot").unwrap(), Some(2));
}

#[test]
fn meta_one_load_per_expiry_across_two_processes() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?herd=meta&herd_timeout=60", server.addr());
    let cache = Cache::from_url(&url).unwrap();
    cache.set("hot", &1u32, Ttl::Seconds(1)).unwrap();
    // memcached decides the win on its own whole-second clock.
    std::thread::sleep(Duration::from_millis(2100));
    let (loads, values) = two_processes(&url, "hot");
    check_one_load(loads, &values);
    assert_eq!(cache.get::<u32>("hot").unwrap(), Some(2));
}

#[test]
fn an_invalidation_gives_one_load_across_two_processes() {
    one_invalidation(&[Readers::Threads(THREADS); 2]);
}

/// An invalidated value, read by `processes` at once, under lease and meta.
fn one_invalidation(processes: &[Readers]) {
    for policy in ["lease", "meta"] {
        let server = Memcached::start();
        let url = format!(
            "newcache://{}/?herd={policy}&herd_timeout=60",
            server.addr()
        );
        let cache = Cache::from_url(&url).unwrap();
        cache.set("page", &1u32, Ttl::Seconds(300)).unwrap();
        assert!(cache.invalidate("page").unwrap());
        let (loads, values) = readers(processes, &url, "page", 300, 2);
        check_one_load_of(loads, &values, total(processes));
    }
}

/// How many readers `processes` run in all.
fn total(processes: &[Readers]) -> usize {
    processes
        .iter()
        .map(|r| match r {
            Readers::Threads(n) | Readers::Tasks(n) => *n,
        })
        .sum()
}

#[test]
fn a_cold_key_is_loaded_once_across_two_processes() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?herd=lease&lease_wait=3000", server.addr());
    let (loads, values) = two_processes(&url, "cold");
    assert_eq!(loads, 1);
    assert!(values.iter().all(|v| *v == 2), "{values:?}");
}

#[test]
fn a_killed_loader_hands_the_cold_key_to_exactly_one_waiter() {
    use std::io::{BufRead, BufReader};
    let server = Memcached::start();
    let url = format!("newcache://{}/?herd=lease&lease_wait=1000", server.addr());
    // A process takes the lease on the cold key and is killed mid-load (its loader would
    // take a minute), leaving the lease key behind until it expires.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_herd_reader"))
        .args([&url, "cold", "1", &now_ms().to_string()])
        .env("HERD_READER_LOAD_MS", "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs herd_reader");
    let mut line = String::new();
    BufReader::new(holder.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "loading");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // 2 processes x 32 threads now wait on the dead holder's lease: when it expires, exactly
    // one of the 64 takes it over and loads; the others get that value.
    // The load as before (100 ms): every waiter's lease_wait (1 s) covers the dead holder's
    // lease and the takeover's load.
    let (loads, values) = readers_loading(&[Readers::Threads(32); 2], &url, "cold", 300, 2, 100);
    assert_eq!(loads, 1, "{values:?}");
    assert_eq!(values.len(), 64);
    assert!(values.iter().all(|v| *v == 2), "{values:?}");
}

/// A cold key whose loader takes most of `lease_wait`: one load across processes. The lease
/// key's TTL was `lease_wait` in whole seconds, which memcached's whole-second clock ends up
/// to a second early (an outside audit: a 1 s lease lived 0.08 to 0.89 s), so an 800 ms
/// loader under `lease_wait=1000` got a second one in another process on 10 of 10 cold
/// events.
#[test]
fn a_loader_within_lease_wait_is_the_only_one_across_processes() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?herd=lease&lease_wait=1000", server.addr());
    for round in 0..3 {
        let key = format!("within-{round}");
        let (loads, values) = readers_loading(&[Readers::Threads(4); 4], &url, &key, 300, 2, 800);
        assert_eq!(loads, 1, "round {round}: {values:?}");
        assert!(values.iter().all(|v| *v == 2), "{values:?}");
    }
}

/// A cold key whose loader is slower than the lease (`lease_wait=1000`: a 2 s lease key,
/// a 2.5 s loader): the second loader the docs allow, and no more. Every waiter timed its
/// own wait from the first lease, so once it expired and one process took the lease anew,
/// every other process loaded too (an outside audit: 8 loads by 8 processes; 4 of 4 here).
///
/// The loader is 2.5 s, not longer: memcached's clock counts whole seconds from its own
/// start, so the first lease lives 1 to 2 s (by where in memcached's second it was taken)
/// and the one taken when it expires lives 2 s from then, 3 to 4 s from the start. A 3.5 s
/// loader got a third load, as the docs allow, whenever the first lease was taken late in
/// memcached's second (a busy CI machine started the readers later: 3 loads).
#[test]
fn a_loader_slower_than_the_lease_gets_one_more_not_one_per_process() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?herd=lease&lease_wait=1000", server.addr());
    let (loads, values) = readers_loading(&[Readers::Threads(4); 4], &url, "slow", 300, 2, 2_500);
    assert!((1..=2).contains(&loads), "{loads} loads: {values:?}");
    assert_eq!(values.len(), 16);
    assert!(values.iter().all(|v| *v == 2), "{values:?}");
}

/// Three expiries in a row, each read by two processes x 16 threads: one load per expiry,
/// and every other reader gets the value from the expiry before.
fn expiries_in_a_row(policy: &str, stale_after: Duration) {
    let server = Memcached::start();
    let url = format!(
        "newcache://{}/?herd={policy}&herd_timeout=60",
        server.addr()
    );
    let cache = Cache::from_url(&url).unwrap();
    cache.set("hot", &1u32, Ttl::Seconds(1)).unwrap();
    for value in 2..=4u32 {
        std::thread::sleep(stale_after);
        let (loads, values) = two_processes_storing(&url, "hot", 1, value);
        assert_eq!(loads, 1, "{policy}, expiry {}: {values:?}", value - 1);
        assert_eq!(values.len(), 2 * THREADS);
        assert_eq!(
            values.iter().filter(|v| **v == value).count(),
            1,
            "{values:?}"
        );
        assert_eq!(
            values.iter().filter(|v| **v == value - 1).count(),
            2 * THREADS - 1,
            "{policy}: the others get the previous value: {values:?}"
        );
    }
    assert_eq!(cache.get::<u32>("hot").unwrap(), Some(4));
}

#[test]
fn lease_one_load_per_expiry_for_three_expiries_in_a_row() {
    // The soft expiry is kept to the whole second, rounded up: a 1 s TTL is stale within 2 s.
    expiries_in_a_row("lease", Duration::from_millis(2100));
}

#[test]
fn meta_one_load_per_expiry_for_three_expiries_in_a_row() {
    // memcached decides the win on its own whole-second clock.
    expiries_in_a_row("meta", Duration::from_millis(2100));
}

/// Tasks per process in the async tests.
const TASKS: usize = 256;

/// One load, by one of `readers` in total; every other reader got the old value (1).
fn check_one_load_of(loads: usize, values: &[u32], readers: usize) {
    assert_eq!(loads, 1, "exactly one loader run across both processes");
    assert_eq!(values.len(), readers);
    assert_eq!(values.iter().filter(|v| **v == 2).count(), 1, "{values:?}");
    assert_eq!(
        values.iter().filter(|v| **v == 1).count(),
        readers - 1,
        "{values:?}"
    );
}

/// A value past its soft expiry, read by `processes` at once under `policy`.
fn one_expiry(policy: &str, processes: &[Readers]) {
    let server = Memcached::start();
    let url = format!(
        "newcache://{}/?herd={policy}&herd_timeout=60",
        server.addr()
    );
    let cache = Cache::from_url(&url).unwrap();
    cache.set("hot", &1u32, Ttl::Seconds(1)).unwrap();
    // Whole seconds: memcached's clock (meta), the soft expiry rounded up (lease).
    std::thread::sleep(Duration::from_millis(2100));
    let (loads, values) = readers(processes, &url, "hot", 300, 2);
    check_one_load_of(loads, &values, total(processes));
    assert_eq!(cache.get::<u32>("hot").unwrap(), Some(2));
}

#[test]
fn async_lease_one_load_per_expiry_across_two_processes_of_256_tasks() {
    one_expiry("lease", &[Readers::Tasks(TASKS); 2]);
}

#[test]
fn async_meta_one_load_per_expiry_across_two_processes_of_256_tasks() {
    one_expiry("meta", &[Readers::Tasks(TASKS); 2]);
}

#[test]
fn threads_of_a_cache_and_tasks_of_an_async_cache_share_one_load() {
    for policy in ["lease", "meta"] {
        one_expiry(policy, &[Readers::Threads(THREADS), Readers::Tasks(TASKS)]);
    }
}

#[test]
fn async_an_invalidation_gives_one_load_across_two_processes_of_256_tasks() {
    one_invalidation(&[Readers::Tasks(TASKS); 2]);
}

#[test]
fn async_a_cold_key_is_loaded_once_across_two_processes_of_256_tasks() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?herd=lease&lease_wait=3000", server.addr());
    let (loads, values) = readers(&[Readers::Tasks(TASKS); 2], &url, "cold", 300, 2);
    assert_eq!(loads, 1);
    assert_eq!(values.len(), 2 * TASKS);
    assert!(values.iter().all(|v| *v == 2), "{values:?}");
}
