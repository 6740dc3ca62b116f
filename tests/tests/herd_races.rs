//! Herd races made to happen on purpose: the text transport on a real memcached, wrapped by a
//! transport that counts the requests the facade sends and can hold readers at a barrier, so
//! an interleaving that is rare in production happens every run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use newcache::transport::{Error, Item, Result, ServerStats, Store, StoreStatus};
use newcache::{Builder, Cache, Clock, ManualClock, SystemClock, Transport, Ttl};
use newcache_testkit::Memcached;
use newcache_tests::fixtures::at_once;
use newcache_transport_text::{TextConfig, TextTransport};

/// Holds the first `n` reads of one key until all `n` have their item, deletes the item
/// (unless `keep`), and only then lets them go on: every one of them holds a value that is
/// gone from the server (or, kept, every one read it before any of them acted on it).
struct Vanish {
    key: Vec<u8>,
    n: usize,
    keep: bool,
    taken: AtomicUsize,
    fetched: Barrier,
    deleted: Barrier,
}

/// The text transport, counting what the facade asks of it, with an optional [`Vanish`].
#[derive(Debug)]
struct Spy {
    inner: TextTransport,
    vanish: Option<Arc<Vanish>>,
    stores: AtomicUsize,
    store_manys: Mutex<Vec<usize>>,
    late: Option<Arc<LateRestore>>,
}

impl Vanish {
    /// Holds the first `n` reads of `key` until all `n` have their item; then deletes it,
    /// unless `keep`.
    fn new(key: Vec<u8>, n: usize, keep: bool) -> Arc<Vanish> {
        Arc::new(Vanish {
            key,
            n,
            keep,
            taken: AtomicUsize::new(0),
            fetched: Barrier::new(n),
            deleted: Barrier::new(n),
        })
    }
}

impl std::fmt::Debug for Vanish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vanish").field("n", &self.n).finish()
    }
}

impl Spy {
    fn new(server: &Memcached, vanish: Option<Arc<Vanish>>) -> Spy {
        Spy {
            inner: TextTransport::new(TextConfig {
                servers: vec![server.addr()],
                ..TextConfig::default()
            })
            .unwrap(),
            vanish,
            stores: AtomicUsize::new(0),
            store_manys: Mutex::new(Vec::new()),
            late: None,
        }
    }
}

impl Transport for Spy {
    fn name(&self) -> &'static str {
        "spy"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Item>> {
        let Some(v) = self.vanish.as_ref().filter(|v| v.key == key) else {
            return self.inner.get(key);
        };
        if v.taken.fetch_add(1, Ordering::SeqCst) >= v.n {
            return self.inner.get(key);
        }
        let item = self.inner.get(key);
        if v.fetched.wait().is_leader() && !v.keep {
            self.inner.delete(key)?;
        }
        v.deleted.wait();
        item
    }
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        self.inner.get_many(keys)
    }
    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        self.stores.fetch_add(1, Ordering::SeqCst);
        let Some(late) = &self.late else {
            return self.inner.store(request);
        };
        late.before(request);
        let status = self.inner.store(request);
        late.after(request);
        status
    }
    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        self.store_manys.lock().unwrap().push(requests.len());
        self.inner.store_many(requests)
    }
    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.inner.delete(key)
    }
    fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.inner.incr(key, delta)
    }
    fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.inner.decr(key, delta)
    }
    fn touch(&self, key: &[u8], exptime: u32) -> Result<bool> {
        self.inner.touch(key, exptime)
    }
    fn flush_all(&self) -> std::result::Result<(), Error> {
        self.inner.flush_all()
    }
    fn stats(&self) -> Result<Vec<ServerStats>> {
        self.inner.stats()
    }
}

/// A cache on `spy` with a manual clock, `herd_timeout=60` and the URL's extra parameters.
fn cache_on(server: &Memcached, spy: Arc<Spy>, clock: &ManualClock, params: &str) -> Cache {
    Builder::from_url(&format!(
        "newcache://{}/?herd_timeout=60&{params}",
        server.addr()
    ))
    .unwrap()
    .transport(spy)
    .clock(Arc::new(clock.clone()))
    .build()
    .unwrap()
}

#[test]
fn a_stale_value_that_vanishes_before_the_claim_is_a_cold_miss_loaded_once() {
    const READERS: usize = 16;
    let server = Memcached::start();
    let clock = ManualClock::at_secs(SystemClock.now_secs());
    let plain = cache_on(&server, Arc::new(Spy::new(&server, None)), &clock, "");
    plain.set("hot", &1u32, Ttl::Seconds(10)).unwrap();
    clock.advance_secs(11);
    // All 16 readers fetch the stale envelope; then it is deleted under them, so every claim
    // (cas) finds NOT_FOUND. That must not count as 16 won refreshes.
    let vanish = Vanish::new(plain.wire_key("hot").unwrap(), READERS, false);
    // Two caches, as two processes: separate flight tables, one lease key between them.
    let caches: Vec<Cache> = (0..2)
        .map(|_| {
            let spy = Arc::new(Spy::new(&server, Some(vanish.clone())));
            cache_on(&server, spy, &clock, "lease_wait=3000")
        })
        .collect();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let got = at_once(READERS, move |i| {
        caches[i % 2]
            .get_or_set("hot", Ttl::Seconds(10), || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                2u32
            })
            .unwrap()
    });
    assert!(
        vanish.taken.load(Ordering::SeqCst) >= READERS,
        "every reader was held"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a cold miss: one loader run under single flight and the lease key"
    );
    assert!(got.iter().all(|v| *v == 2), "{got:?}");
    assert_eq!(plain.get::<u32>("hot").unwrap(), Some(2));
}

#[test]
fn one_get_many_sends_the_stores_of_all_its_stale_keys_in_one_store_many() {
    for policy in ["lease", "reinsert"] {
        let server = Memcached::start();
        let clock = ManualClock::at_secs(SystemClock.now_secs());
        let spy = Arc::new(Spy::new(&server, None));
        let cache = cache_on(&server, spy.clone(), &clock, &format!("herd={policy}"));
        let stale = ["k0", "k1", "k2", "k3"];
        cache
            .set_many(stale.iter().map(|k| (*k, 1u32)), Ttl::Seconds(10))
            .unwrap();
        clock.advance_secs(11);
        cache.set("fresh", &2u32, Ttl::Seconds(300)).unwrap();
        spy.stores.store(0, Ordering::SeqCst);
        spy.store_manys.lock().unwrap().clear();
        let got: std::collections::HashMap<String, u32> = cache
            .get_many(&["k0", "fresh", "k1", "missing", "k2", "k3"])
            .unwrap()
            .into_complete()
            .unwrap();
        assert_eq!(got.len(), 1, "{policy}: the stale keys are misses: {got:?}");
        assert_eq!(got.get("fresh"), Some(&2));
        assert_eq!(
            spy.stores.load(Ordering::SeqCst),
            0,
            "{policy}: no single store"
        );
        assert_eq!(
            *spy.store_manys.lock().unwrap(),
            [4],
            "{policy}: one store_many with the four re-stores or claims"
        );
        // The others are now served the old values, and nothing more is stored.
        let again: std::collections::HashMap<String, u32> =
            cache.get_many(&stale).unwrap().into_complete().unwrap();
        assert_eq!(again.len(), 4, "{policy}: {again:?}");
        assert!(again.values().all(|v| *v == 1));
        assert_eq!(spy.store_manys.lock().unwrap().len(), 1, "{policy}");
    }
}

/// A memcached with no room for another 100 KB value (`-M`, no eviction: it answers
/// `SERVER_ERROR out of memory storing object`) but room for small items (lease keys).
fn full_for_large_values(flavor: &str) -> (Memcached, String) {
    let server = Memcached::with_args(&["-m", "8", "-M"]);
    let url = format!("newcache://{}/?flavor={flavor}", server.addr());
    let filler = Cache::from_url(&url).unwrap();
    // Small items first, so their slab class has a page to take lease keys from.
    for i in 0..50 {
        filler
            .set(&format!("small-{i}"), "s", Ttl::Seconds(600))
            .unwrap();
    }
    let large = "x".repeat(100_000);
    let refused = (0..400).find_map(|i| {
        filler
            .set(&format!("fill-{i}"), large.as_str(), Ttl::Seconds(600))
            .err()
    });
    assert!(
        matches!(
            refused,
            Some(newcache::Error::Transport(Error::Server { .. }))
        ),
        "{refused:?}"
    );
    (server, url)
}

/// A loaded value the server refuses to store (`SERVER_ERROR out of memory storing object`)
/// is still the caller's, and the callers waiting for that load are served it: one load
/// for eight callers, blocking and async (an outside audit: eight loads one after another,
/// and eight errors).
#[test]
fn a_loaded_value_the_server_cannot_store_is_served_to_every_waiting_caller() {
    let (_server, url) = full_for_large_values("refused");
    let cache = Cache::from_url(&url).unwrap();
    let value = "v".repeat(100_000);
    let loads = AtomicUsize::new(0);
    let load = || {
        loads.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        value.clone()
    };
    let got: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|_| s.spawn(|| cache.get_or_set("cold", Ttl::Seconds(600), load)))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1, "{got:?}");
    for one in got {
        assert_eq!(one.unwrap().len(), 100_000);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let got = rt.block_on(async {
        let cache = newcache::AsyncCache::from_url(&url).unwrap();
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads, value) = (cache.clone(), loads.clone(), value.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_set("cold-async", Ttl::Seconds(600), || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            value
                        })
                        .await
                })
            })
            .collect();
        let mut got = Vec::new();
        for call in calls {
            got.push(call.await.unwrap());
        }
        got
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1, "{got:?}");
    for one in got {
        assert_eq!(one.unwrap().len(), 100_000);
    }
}

/// A memcached started without CAS (`-C`) gives every item the unique 0, which no `cas`
/// matches: the text transport reads it as no unique, as libmemcached does, so `gets` says
/// CAS is off, and `invalidate`, `touch` and the herd's claims rewrite the value without
/// `cas`. Taken for a unique, every `cas` was `EXISTS`: `invalidate` and `touch` reported
/// done and changed nothing, and a stale key was never recomputed until it expired for
/// good (an outside audit: 0 loads for 16 threads).
#[test]
fn a_server_without_cas_is_read_as_such() {
    let server = Memcached::with_args(&["-C"]);
    let clock = ManualClock::at_secs(SystemClock.now_secs());
    let url = format!("newcache://{}/?flavor=nocas", server.addr());
    let cache = Builder::from_url(&url)
        .unwrap()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    cache.set("k", "v", Ttl::Seconds(600)).unwrap();
    match cache.gets::<String>("k") {
        Err(newcache::Error::Config(message)) => assert!(message.contains("-C"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The TTL moves (memcached's own, read by a meta get's `t`).
    assert!(cache.touch("k", Ttl::Seconds(3000)).unwrap());
    let wire = cache.wire_key("k").unwrap();
    let ttl = |wire: &[u8]| {
        let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
        let mut request = b"mg ".to_vec();
        request.extend_from_slice(wire);
        request.extend_from_slice(b" t\r\n");
        std::io::Write::write_all(&mut conn, &request).unwrap();
        let mut reply = [0u8; 64];
        let n = std::io::Read::read(&mut conn, &mut reply).unwrap();
        String::from_utf8_lossy(&reply[..n]).into_owned()
    };
    let seen = ttl(&wire);
    let left: u64 = seen.trim().strip_prefix("HD t").unwrap().parse().unwrap();
    assert!(left > 3000 && left <= 3000 + 60, "{seen}");
    // Invalidated: the next reader recomputes.
    assert!(cache.invalidate("k").unwrap());
    assert_eq!(cache.get::<String>("k").unwrap(), None);
    // A value past its soft expiry is recomputed by the threads that read it.
    cache.set("stale", "old", Ttl::Seconds(10)).unwrap();
    clock.advance_secs(11);
    let loads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                cache
                    .get_or_set("stale", Ttl::Seconds(10), || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        "new".to_string()
                    })
                    .unwrap()
            });
        }
    });
    assert!(loads.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        cache.get::<String>("stale").unwrap().as_deref(),
        Some("new")
    );
}

/// Holds the first bare re-store of `OLDVAL` (once armed) until the refreshed value
/// (`NEWVAL`) is stored, so that it lands after it; the refresh's store then returns only
/// 200 ms later, its flight still open, so the reader whose re-store was held joins it as a
/// follower ([`Spy::store`]).
#[derive(Default)]
struct LateRestore {
    armed: std::sync::atomic::AtomicBool,
    held_one: std::sync::atomic::AtomicBool,
    refreshed: (Mutex<bool>, std::sync::Condvar),
    /// Holds no re-store; runs this once the refresh is stored instead.
    then: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for LateRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateRestore").finish_non_exhaustive()
    }
}

impl LateRestore {
    /// Before `request` goes out: holds the first re-store of `OLDVAL` until the refresh is
    /// stored.
    fn before(&self, request: &Store<'_>) {
        let armed = self.armed.load(Ordering::SeqCst) && self.then.lock().unwrap().is_none();
        if armed && request.value == b"OLDVAL" && !self.held_one.swap(true, Ordering::SeqCst) {
            let (lock, landed) = &self.refreshed;
            let done = lock.lock().unwrap();
            let (done, _) = landed
                .wait_timeout_while(done, Duration::from_secs(5), |done| !*done)
                .unwrap();
            assert!(*done, "the refresh was never stored");
        }
    }

    /// After `request` was answered: once the refresh is stored, lets the held re-store go
    /// and keeps the refresh's flight open a while.
    fn after(&self, request: &Store<'_>) {
        if self.armed.load(Ordering::SeqCst) && request.value.starts_with(b"NEWVAL") {
            if let Some(then) = self.then.lock().unwrap().take() {
                then();
            }
            *self.refreshed.0.lock().unwrap() = true;
            self.refreshed.1.notify_all();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Under `reinsert` every reader of a stale value re-stores it bare (a plain `set`), and so
/// does the refresh's store of the new value: a reader's re-store that lands after the
/// refresh replaced the new value with the old one, and that reader, a follower of the
/// refresh in this process, was then served the old value, which stayed for the herd
/// timeout (seen once beside busy loops on a memcached without CAS). The follower puts the
/// refreshed value back, and nothing is loaded twice.
#[test]
fn a_re_store_that_lands_after_the_refresh_does_not_undo_it() {
    let server = Memcached::start();
    let clock = ManualClock::at_secs(SystemClock.now_secs());
    let late = Arc::new(LateRestore::default());
    let spy = Arc::new(Spy {
        late: Some(late.clone()),
        ..Spy::new(&server, None)
    });
    let cache = cache_on(&server, spy, &clock, "herd=reinsert");
    cache.set("k", "OLDVAL", Ttl::Seconds(10)).unwrap();
    clock.advance_secs(11);
    late.armed.store(true, Ordering::SeqCst);
    let loads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                cache
                    .get_or_set("k", Ttl::Seconds(10), || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        "NEWVAL".to_string()
                    })
                    .unwrap()
            });
        }
    });
    assert!(late.held_one.load(Ordering::SeqCst), "no re-store was held");
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("NEWVAL"));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// Under `reinsert`, a refresh whose loader fails leaves the other readers of the stale value
/// served the old value: the loader runs once in the process, as docs/herd.md says (a first
/// fix of the late re-store race above made each follower load after a failed refresh: 5
/// to 8 runs for 16 threads, an outside review).
#[test]
fn a_failing_refresh_under_reinsert_runs_its_loader_once() {
    const READERS: usize = 16;
    let server = Memcached::start();
    let clock = ManualClock::at_secs(SystemClock.now_secs());
    let plain = cache_on(&server, Arc::new(Spy::new(&server, None)), &clock, "");
    plain.set("hot", &1u32, Ttl::Seconds(10)).unwrap();
    clock.advance_secs(11);
    // Every reader reads the stale value before any re-store lands.
    let gate = Vanish::new(plain.wire_key("hot").unwrap(), READERS, true);
    let spy = Arc::new(Spy::new(&server, Some(gate.clone())));
    let cache = cache_on(&server, spy, &clock, "herd=reinsert");
    let runs = AtomicUsize::new(0);
    let got: Vec<std::result::Result<u32, newcache::Error>> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(|| {
                    cache.get_or_try_set("hot", Ttl::Seconds(10), || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        Err(newcache::Error::Config("the database is down".into()))
                    })
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(
        gate.taken.load(Ordering::SeqCst) >= READERS,
        "every reader was held"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{got:?}");
    // The one that loaded has its loader's error; the others, the old value.
    assert_eq!(got.iter().filter(|g| g.is_err()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| *v == 1), "{got:?}");
}

/// The follower puts the refresh's value back only over its own re-store: an invalidation
/// (or another writer's value) that lands after the refresh stays. Putting it back over
/// anything not fresh undid such an invalidation: the value loaded before it was served
/// (an outside review, 3 of 3 runs).
#[test]
fn an_invalidation_after_the_refresh_is_not_undone_by_a_follower() {
    let server = Memcached::start();
    let clock = ManualClock::at_secs(SystemClock.now_secs());
    let plain = cache_on(
        &server,
        Arc::new(Spy::new(&server, None)),
        &clock,
        "herd=reinsert",
    );
    plain.set("k", "OLDVAL", Ttl::Seconds(10)).unwrap();
    clock.advance_secs(11);
    // Both readers read the stale value, and both re-store it, before either loads.
    let gate = Vanish::new(plain.wire_key("k").unwrap(), 2, true);
    // Once the refresh is stored, another process (another cache: its own flights)
    // invalidates the key.
    let late = Arc::new(LateRestore::default());
    let other = cache_on(
        &server,
        Arc::new(Spy::new(&server, None)),
        &clock,
        "herd=reinsert",
    );
    *late.then.lock().unwrap() = Some(Box::new(move || {
        assert!(other.invalidate("k").unwrap());
    }));
    let spy = Arc::new(Spy {
        late: Some(late.clone()),
        ..Spy::new(&server, Some(gate))
    });
    let cache = cache_on(&server, spy, &clock, "herd=reinsert&lease_wait=3000");
    late.armed.store(true, Ordering::SeqCst);
    let loads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                cache
                    .get_or_set("k", Ttl::Seconds(10), || {
                        let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
                        std::thread::sleep(Duration::from_millis(100));
                        format!("NEWVAL{n}")
                    })
                    .unwrap()
            });
        }
    });
    // The value loaded before the invalidation is not what the key serves now.
    assert_ne!(
        plain.get::<String>("k").unwrap().as_deref(),
        Some("NEWVAL1"),
        "loads: {}",
        loads.load(Ordering::SeqCst)
    );
}
