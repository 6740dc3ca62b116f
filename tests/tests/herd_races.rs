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

/// Holds the first `n` reads of one key until all `n` have their item, deletes the item, and
/// only then lets them go on: every one of them holds a value that is gone from the server.
struct Vanish {
    key: Vec<u8>,
    n: usize,
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
        if v.fetched.wait().is_leader() {
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
        self.inner.store(request)
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
    let vanish = Arc::new(Vanish {
        key: plain.wire_key("hot").unwrap(),
        n: READERS,
        taken: AtomicUsize::new(0),
        fetched: Barrier::new(READERS),
        deleted: Barrier::new(READERS),
    });
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
