//! `herd=meta`: memcached 1.6's own single winner over the text transport. The server keeps the
//! herd state, so values are stored bare (Python clients read them too) and the win is decided
//! by memcached's clock: these tests wait for real seconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use newcache::{Cache, Error, Policy, Ttl};
use newcache_testkit::Memcached;

fn at_once<T: Send + 'static>(n: usize, f: impl Fn() -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn meta_cache(server: &Memcached) -> Cache {
    let cache = Cache::from_url(&format!(
        "newcache://{}/?herd=meta&herd_timeout=60",
        server.addr()
    ))
    .unwrap();
    assert_eq!(cache.config().herd_policy, Policy::Meta);
    cache
}

#[test]
fn values_are_stored_bare_with_the_herd_timeout_on_their_ttl() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("k", "v", Ttl::Seconds(100)).unwrap();
    let wire = String::from_utf8(cache.wire_key("k").unwrap()).unwrap();
    let reply =
        String::from_utf8(server.raw(&format!("mg {wire} f t v\r\n"), b"\r\nv\r\n")).unwrap();
    assert!(reply.starts_with("VA 1 f"), "{reply}");
    assert!(reply.contains(" t16"), "ttl + herd_timeout: {reply}");
    // The soft expiry rides in the flags as under lease, so a cache that reads it with
    // another policy (or after falling back to lease) still protects it.
    let flags: u32 = reply
        .split_whitespace()
        .find_map(|w| w.strip_prefix('f'))
        .and_then(|f| f.parse().ok())
        .unwrap();
    assert_eq!(flags & 0x7ff, 16 | newcache::HERD_FLAG, "{reply}");
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v"));
}

#[test]
fn after_the_soft_expiry_exactly_one_reader_wins_and_the_rest_get_the_old_value() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("hot", &1u32, Ttl::Seconds(1)).unwrap();
    // Item TTL is 61 s; memcached hands the win once fewer than 60 s remain.
    std::thread::sleep(Duration::from_millis(2100));
    let c = cache.clone();
    let got = at_once(32, move || c.get::<u32>("hot").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| *v == 1));
    // get_many goes through the same rule: the win is taken, so everyone is served.
    let many: std::collections::HashMap<String, u32> =
        cache.get_many(&["hot"]).unwrap().into_complete().unwrap();
    assert_eq!(many.get("hot"), Some(&1));
}

/// memcached hands its win to the read itself, so a `get_many_ordered` that then fails
/// on another key (its misses reach nobody) gives the win back (`md <key> I`): the next
/// reader wins. It was dropped, and everyone was served the old value until the item
/// expired (an outside audit).
#[test]
fn a_get_many_ordered_that_fails_gives_its_win_to_the_next_reader() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("hot", &1u32, Ttl::Seconds(1)).unwrap();
    cache
        .set("text", "not a number", Ttl::Seconds(100))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    match cache.get_many_ordered::<_, u32>(&["hot", "text"]) {
        Err(Error::Decode { key, .. }) => assert_eq!(key, "text"),
        other => panic!("a decode error for text, got {other:?}"),
    }
    assert_eq!(
        cache.get::<u32>("hot").unwrap(),
        None,
        "the next reader wins"
    );
    assert_eq!(
        cache.get::<u32>("hot").unwrap(),
        Some(1),
        "the others are served"
    );
}

/// The win a failing `get_many_ordered` gives back is for the item it came with only
/// (`md <key> I C<cas>`): a value another caller stored in between is left fresh. It was
/// marked stale too, one more recomputation and its TTL cut to `2 x herd_timeout` (a review).
#[test]
fn a_win_given_back_leaves_a_value_stored_since_as_it_is() {
    use newcache_testkit::proxy::{FaultProxy, Faults};
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let url = format!("newcache://{}/?herd=meta&herd_timeout=60", proxy.addr());
    let (cache, writer) = (
        Cache::from_url(&url).unwrap(),
        Cache::from_url(&url).unwrap(),
    );
    cache.set("hot", &1u32, Ttl::Seconds(1)).unwrap();
    cache
        .set("text", "not a number", Ttl::Seconds(100))
        .unwrap();
    writer.set("other", &0u32, Ttl::Seconds(100)).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    // The give-back waits on its way until the writer's store has been answered.
    proxy.hold_request(b"md ", b"ms ");
    let reader = cache.clone();
    let failing =
        std::thread::spawn(move || reader.get_many_ordered::<_, u32>(&["hot", "text"]).is_err());
    std::thread::sleep(Duration::from_millis(200));
    writer.set("hot", &2u32, Ttl::Seconds(600)).unwrap();
    assert!(failing.join().unwrap(), "the ordered read fails on text");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        cache.get::<u32>("hot").unwrap(),
        Some(2),
        "the new value, fresh"
    );
}

/// The cache at another version (Django's per-call `version=`) knows what the cache knows
/// of its servers: it sends no meta probe of its own before its first store (an outside
/// audit: one more round trip per `with_version` call).
#[test]
fn a_per_call_version_sends_no_meta_probe_of_its_own() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("k", "v", Ttl::Seconds(100)).unwrap();
    let misses = server.stat("get_misses");
    for _ in 0..10 {
        let versioned = cache.with_version(3).unwrap();
        versioned.set("k", "v3", Ttl::Seconds(100)).unwrap();
    }
    assert_eq!(server.stat("get_misses"), misses, "no probe (a miss) sent");
    let versioned = cache.with_version(3).unwrap();
    assert_eq!(versioned.get::<String>("k").unwrap().as_deref(), Some("v3"));
}

#[test]
fn a_value_without_herd_state_is_served_until_it_expires() {
    // memcached hands the win to the first read once less than the herd timeout (60 s) is
    // left of an item's TTL. A value with no herd state (herd off, or a Python client's)
    // has no soft expiry to recompute at: it read as a miss (an outside audit: a lock
    // stored with herd off read as free), and get_or_set overwrote a Python app's value.
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache
        .set(
            "lock",
            "held",
            newcache::SetOptions::new(Ttl::Seconds(30)).no_herd(),
        )
        .unwrap();
    let python = String::from_utf8(cache.wire_key("python").unwrap()).unwrap();
    let stored = server.raw(&format!("set {python} 16 30 6\r\npython\r\n"), b"\r\n");
    assert_eq!(stored, b"STORED\r\n");
    // Another application's bit 8 (newcache's herd bit) with no unit in bits 11-12: not
    // herd state either. It read as a miss and took the reload's token.
    let foreign = String::from_utf8(cache.wire_key("foreign").unwrap()).unwrap();
    let stored = server.raw(&format!("set {foreign} 256 30 7\r\nforeign\r\n"), b"\r\n");
    assert_eq!(stored, b"STORED\r\n");
    for _ in 0..3 {
        assert_eq!(
            cache.get::<String>("foreign").unwrap().as_deref(),
            Some("foreign")
        );
        let raw = cache.get_raw("foreign").unwrap().expect("served");
        assert_eq!((raw.bytes.as_slice(), raw.flags), (&b"foreign"[..], 256));
    }
    for _ in 0..3 {
        assert_eq!(
            cache.get::<String>("lock").unwrap().as_deref(),
            Some("held")
        );
        assert_eq!(
            cache.get::<String>("python").unwrap().as_deref(),
            Some("python")
        );
    }
    let many = cache.get_many::<_, String>(&["lock", "python"]).unwrap();
    assert_eq!(many.len(), 2, "{many:?}");
    let loaded = cache
        .get_or_set("python", Ttl::Seconds(300), || "loaded".to_string())
        .unwrap();
    assert_eq!(loaded, "python", "the value was served, not loaded over");
    // An invalidation still hands the recompute to one reader.
    assert!(cache.invalidate("lock").unwrap());
    let got = at_once(16, {
        let c = cache.clone();
        move || c.get::<String>("lock").unwrap()
    });
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
}

#[test]
fn a_read_waits_for_no_probe_of_another_server() {
    // The cache learns whether the servers speak meta from its first meta command: a read
    // is one itself (a refusal is answered under lease). Only a store probes first, with
    // `mg` of a key nobody uses, on whichever server holds that key. Reads used to probe
    // too: with that server hung, a new cache's reads of keys elsewhere each waited a read
    // timeout for it (until the server was marked down, then again each retry_timeout).
    let mut servers = [Memcached::start(), Memcached::start()];
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let placement =
        newcache_transport_text::TextTransport::new(newcache_transport_text::TextConfig {
            servers: addrs.clone(),
            ..Default::default()
        })
        .unwrap();
    let probe_home = placement.server_for_key(b"newcache:meta-probe").unwrap();
    let cache = Cache::from_url(&format!(
        "newcache://{}/?herd=meta&read_timeout=300",
        addrs.join(";")
    ))
    .unwrap();
    let elsewhere: Vec<String> = (0..100)
        .map(|i| format!("k{i}"))
        .filter(|k| {
            let wire = cache.wire_key(k).unwrap();
            placement.server_for_key(&wire).unwrap() != probe_home
        })
        .take(3)
        .collect();
    servers[probe_home].pause();
    for key in &elsewhere {
        let started = std::time::Instant::now();
        assert_eq!(cache.get::<u32>(key).unwrap(), None);
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "{key}: {:?}",
            started.elapsed()
        );
    }
    servers[probe_home].resume();
    // A store probes once, then reads and stores go straight to meta.
    cache.set(&elsewhere[0], &1u32, Ttl::Seconds(60)).unwrap();
    assert_eq!(cache.get::<u32>(&elsewhere[0]).unwrap(), Some(1));
    assert_eq!(cache.stale_policy().name(), "meta");
}

#[test]
fn invalidate_hands_the_recompute_to_exactly_one_reader() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("page", &"old", Ttl::Seconds(300)).unwrap();
    assert!(cache.invalidate("page").unwrap());
    assert!(!cache.invalidate("missing").unwrap());
    let c = cache.clone();
    let got = at_once(16, move || c.get::<String>("page").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| v == "old"));
    // The winner's write makes the value fresh again for everyone.
    cache.set("page", &"new", Ttl::Seconds(300)).unwrap();
    assert_eq!(cache.get::<String>("page").unwrap().as_deref(), Some("new"));
}

#[test]
fn an_invalidation_while_the_win_is_out_hands_it_to_one_more_reader() {
    // As under lease: the first winner may have read what the second invalidation replaces.
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("page", &"old", Ttl::Seconds(300)).unwrap();
    assert!(cache.invalidate("page").unwrap());
    assert_eq!(
        cache.get::<String>("page").unwrap(),
        None,
        "the first winner"
    );
    assert_eq!(cache.get::<String>("page").unwrap().as_deref(), Some("old"));
    assert!(cache.invalidate("page").unwrap());
    let c = cache.clone();
    let got = at_once(16, move || c.get::<String>("page").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| v == "old"));
}

/// `peek`, `has_key` and `get_raw` of an invalidated value leave the recompute to the next
/// reader. memcached hands its token to the first meta read of an invalidated item,
/// whatever that read asks; a plain read took it and dropped it, so no reader ever
/// recomputed and the invalidated value was served until it expired (an outside audit).
/// `peek` and `has_key` hand it back and call the value stale; `get_raw` reads as `get`
/// does, its winner told `None`.
#[test]
fn a_look_at_an_invalidated_value_leaves_the_recompute_to_the_next_reader() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    for look in ["peek", "has_key", "get_raw", "peek twice"] {
        cache.set("page", &"old", Ttl::Seconds(300)).unwrap();
        assert!(cache.invalidate("page").unwrap());
        match look {
            "peek" => assert!(cache.peek("page").unwrap().unwrap().stale),
            "has_key" => assert!(!cache.has_key("page").unwrap()),
            "get_raw" => assert_eq!(cache.get_raw("page").unwrap(), None, "its winner"),
            _ => {
                assert!(cache.peek("page").unwrap().unwrap().stale);
                assert!(cache.peek("page").unwrap().unwrap().stale);
            }
        }
        if look == "get_raw" {
            // get_raw won the recompute itself: the others are served.
            assert_eq!(cache.get::<String>("page").unwrap().as_deref(), Some("old"));
            continue;
        }
        let c = cache.clone();
        let got = at_once(16, move || c.get::<String>("page").unwrap());
        assert_eq!(
            got.iter().filter(|g| g.is_none()).count(),
            1,
            "after {look}: exactly one reader recomputes: {got:?}"
        );
        assert!(got.iter().flatten().all(|v| v == "old"));
    }
}

#[test]
fn get_or_set_runs_the_loader_once_after_an_invalidation() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("report", &1u32, Ttl::Seconds(300)).unwrap();
    cache.invalidate("report").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let (c, counter) = (cache.clone(), runs.clone());
    let got = at_once(16, move || {
        c.get_or_set("report", Ttl::Seconds(300), || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            2u32
        })
        .unwrap()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(got.iter().filter(|v| **v == 1).count(), 15, "{got:?}");
    assert_eq!(cache.get::<u32>("report").unwrap(), Some(2));
}

#[test]
fn the_winners_value_does_not_replace_an_invalidation_or_a_write_that_came_while_it_loaded() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("report", &1u32, Ttl::Seconds(300)).unwrap();
    cache.invalidate("report").unwrap();
    let other = cache.clone();
    let got = cache
        .get_or_set("report", Ttl::Seconds(300), || {
            other.invalidate("report").unwrap();
            2u32
        })
        .unwrap();
    assert_eq!(got, 2);
    // Not stored: the second invalidation hands the win to the next reader.
    assert_eq!(cache.get::<u32>("report").unwrap(), None);
    assert_eq!(cache.get::<u32>("report").unwrap(), Some(1));
    let other = cache.clone();
    let got = cache
        .get_or_set("report", Ttl::Seconds(300), || {
            other.set("report", &4u32, Ttl::Seconds(300)).unwrap();
            3u32
        })
        .unwrap();
    assert_eq!(got, 1, "served the old value: the win is out");
    cache.invalidate("report").unwrap();
    let got = cache
        .get_or_set("report", Ttl::Seconds(300), || {
            other.set("report", &4u32, Ttl::Seconds(300)).unwrap();
            3u32
        })
        .unwrap();
    assert_eq!(got, 3);
    assert_eq!(
        cache.get::<u32>("report").unwrap(),
        Some(4),
        "the write stays"
    );
}

/// An invalidation while a caller of this process refreshes the key: memcached hands the
/// win to the next reader, and that reader loads even though the first is still loading
/// (its value, read before the invalidation, is refused). It waited for the first caller
/// instead, then read the key again and was served the old value: the win was dropped and
/// nobody refreshed the key until the item expired (an outside audit: up to 2 x
/// herd_timeout of the value from before the invalidation).
#[test]
fn an_invalidation_while_this_process_refreshes_the_key_is_refreshed_by_its_winner() {
    let server = Memcached::start();
    let cache = meta_cache(&server);
    cache.set("report", &1u32, Ttl::Seconds(300)).unwrap();
    cache.invalidate("report").unwrap();
    let first = cache.clone();
    let refresh = std::thread::spawn(move || {
        first.get_or_set("report", Ttl::Seconds(300), || {
            std::thread::sleep(Duration::from_millis(600));
            2u32
        })
    });
    std::thread::sleep(Duration::from_millis(150));
    assert!(cache.invalidate("report").unwrap());
    let runs = AtomicUsize::new(0);
    let got = cache
        .get_or_set("report", Ttl::Seconds(300), || {
            runs.fetch_add(1, Ordering::SeqCst);
            3u32
        })
        .unwrap();
    assert_eq!(
        (got, runs.load(Ordering::SeqCst)),
        (3, 1),
        "the win after the invalidation is this caller's: it loads"
    );
    assert_eq!(refresh.join().unwrap().unwrap(), 2);
    assert_eq!(
        cache.get::<u32>("report").unwrap(),
        Some(3),
        "the value loaded before the invalidation is not stored over the one after it"
    );
}

#[test]
fn meta_on_a_transport_without_the_meta_protocol_is_refused_when_the_cache_is_built() {
    let err = Cache::from_url("newcache:///?transport=memory&herd=meta").unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("herd=meta") && m.contains("herd=lease")),
        "{err}"
    );
}
