//! `herd=meta` on a server that cannot do meta (here twemproxy, which closes the connection on
//! `mg`/`md`; memcached before 1.6 answers `ERROR`): the first refused meta command switches
//! the cache to `lease` for good and the operation is retried under lease, so callers never
//! see the refusal. `Cache::stale_policy()` shows the switch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use newcache::{Builder, Cache, Clock, ManualClock, Policy, SystemClock, Ttl, HERD_FLAG};
use newcache_testkit::{Memcached, Twemproxy};
use newcache_tests::fixtures::at_once;

/// One memcached, twemproxy in front, and a `herd=meta` cache that talks only to the proxy.
struct Proxied {
    backend: Memcached,
    _proxy: Twemproxy,
    cache: Cache,
    clock: ManualClock,
}

fn proxied() -> Proxied {
    let backend = Memcached::start();
    let proxy = Twemproxy::start(&[&backend]);
    let clock = ManualClock::at_secs(SystemClock.now_secs());
    let cache = Builder::from_url(&format!(
        "newcache://{}/?herd=meta&herd_timeout=60&read_timeout=2000",
        proxy.addr()
    ))
    .unwrap()
    .clock(Arc::new(clock.clone()))
    .build()
    .unwrap();
    assert_eq!(cache.config().herd_policy, Policy::Meta);
    assert_eq!(
        cache.stale_policy().name(),
        "meta",
        "no switch before any request"
    );
    Proxied {
        backend,
        _proxy: proxy,
        cache,
        clock,
    }
}

impl Proxied {
    /// Stores a bare value as another client would, straight on the backend.
    fn raw_set(&self, key: &str, value: &str) {
        let wire = String::from_utf8(self.cache.wire_key(key).unwrap()).unwrap();
        let reply = self.backend.raw(
            &format!("set {wire} 16 300 {}\r\n{value}\r\n", value.len()),
            b"\r\n",
        );
        assert_eq!(reply, b"STORED\r\n");
    }

    /// The item's flags on the memcached behind the proxy.
    fn flags_on_backend(&self, key: &str) -> u32 {
        let wire = String::from_utf8(self.cache.wire_key(key).unwrap()).unwrap();
        let reply =
            String::from_utf8(self.backend.raw(&format!("mg {wire} f\r\n"), b"\r\n")).unwrap();
        let flags = reply
            .split_whitespace()
            .find_map(|w| w.strip_prefix('f'))
            .unwrap_or_else(|| panic!("no flags in {reply:?}"));
        flags.parse().unwrap()
    }

    fn assert_switched(&self) {
        assert_eq!(self.cache.stale_policy().name(), "lease");
        assert!(!self.cache.stale_policy().server_side());
        // The configuration still says what was asked for.
        assert_eq!(self.cache.config().herd_policy, Policy::Meta);
    }
}

#[test]
fn a_cache_that_writes_first_has_probed_and_protects_what_it_wrote() {
    let p = proxied();
    // The first store is preceded by the probe: the cache knows it runs lease before it
    // writes anything, and what it writes carries the soft expiry.
    p.cache.set("early", "v", Ttl::Seconds(10)).unwrap();
    p.assert_switched();
    assert_eq!(p.flags_on_backend("early") & 0x7ff, 16 | HERD_FLAG);
    assert_eq!(
        p.cache.get::<String>("early").unwrap().as_deref(),
        Some("v")
    );
    // Past its TTL, exactly one of 16 readers recomputes; the others are served the value
    // written before any read (which, before the probe, had no soft expiry: 16 of 16 were
    // served it past its TTL, then 16 of 16 missed at once).
    p.clock.advance_secs(11);
    let cache = p.cache.clone();
    let got = at_once(16, move |_| cache.get::<String>("early").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| v == "v"), "{got:?}");
}

#[test]
fn the_first_refused_get_switches_to_lease_and_is_answered_under_lease() {
    let p = proxied();
    // A value another client stored bare; the first operation is a read.
    p.raw_set("early", "v");
    assert_eq!(
        p.cache.get::<String>("early").unwrap().as_deref(),
        Some("v")
    );
    p.assert_switched();
    p.cache.set("hot", &1u32, Ttl::Seconds(10)).unwrap();
    assert_eq!(p.flags_on_backend("hot") & 0x7ff, 4 | HERD_FLAG);
    // Lease's single winner holds through the proxy.
    p.clock.advance_secs(11);
    let cache = p.cache.clone();
    let got = at_once(16, move |_| cache.get::<u32>("hot").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| *v == 1), "{got:?}");
    p.assert_switched();
}

#[test]
fn a_first_invalidate_switches_and_invalidates_with_an_envelope() {
    let p = proxied();
    p.cache.set("page", "old", Ttl::Seconds(300)).unwrap();
    assert!(p.cache.invalidate("page").unwrap());
    p.assert_switched();
    assert_eq!(p.flags_on_backend("page") & 0x7ff, 16 | HERD_FLAG);
    assert!(!p.cache.invalidate("missing").unwrap());
    let cache = p.cache.clone();
    let got = at_once(16, move |_| cache.get::<String>("page").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| v == "old"), "{got:?}");
}

#[test]
fn a_first_get_many_switches_and_is_answered() {
    let p = proxied();
    p.cache.set("a", &1u32, Ttl::Seconds(300)).unwrap();
    let got: HashMap<String, u32> = p
        .cache
        .get_many(&["a", "b"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(got, HashMap::from([("a".to_string(), 1)]));
    p.assert_switched();
}

#[test]
fn a_first_get_or_set_switches_and_loads_once_across_threads() {
    let p = proxied();
    let runs = Arc::new(AtomicUsize::new(0));
    let (cache, counter) = (p.cache.clone(), runs.clone());
    let got = at_once(8, move |_| {
        cache
            .get_or_set("report", Ttl::Seconds(300), || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                7u32
            })
            .unwrap()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(got.iter().all(|v| *v == 7), "{got:?}");
    p.assert_switched();
    // The loaded value went in as a lease envelope.
    assert_eq!(p.flags_on_backend("report") & 0x7ff, 4 | HERD_FLAG);
}
