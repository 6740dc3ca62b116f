// The single-winner herd (the default `lease` policy), invalidate and get_or_set: one
// recomputation per expiry, across threads and caches. Included by cases.rs.

#[test]
fn lease_hands_the_refresh_to_exactly_one_of_many_readers() {
    let e = env("herd_timeout=60");
    assert_eq!(e.cache.config().herd_policy, newcache::Policy::Lease);
    e.cache.set("hot", &"old", Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    let cache = e.cache.clone();
    let got = at_once(32, move |_| cache.get::<String>("hot").unwrap());
    let misses = got.iter().filter(|g| g.is_none()).count();
    assert_eq!(misses, 1, "exactly one reader recomputes: {got:?}");
    assert!(got.iter().flatten().all(|v| v == "old"));
    // The claimed item is still an envelope, alive for the winner's write-back and a retry.
    let (flags, ttl, _) = e.meta("hot").unwrap();
    assert_eq!(kind(flags), 16 | HERD_FLAG);
    // 2 x herd_timeout and the two seconds of clock slack.
    assert!((120..=122).contains(&ttl), "ttl {ttl}");
}

#[test]
fn a_lease_winner_that_never_writes_back_is_replaced_after_herd_timeout() {
    let e = env("herd_timeout=30");
    e.cache.set("k", &"old", Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    assert_eq!(
        e.cache.get::<String>("k").unwrap(),
        None,
        "the first winner"
    );
    assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("old"));
    e.clock.advance_secs(29);
    assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("old"));
    e.clock.advance_secs(2);
    assert_eq!(e.cache.get::<String>("k").unwrap(), None, "a new winner");
    assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("old"));
}

#[test]
fn get_many_follows_the_seeds_rule_under_reinsert() {
    let e = env("herd_timeout=60&herd=reinsert");
    e.cache
        .set_many([("a", "old-a"), ("b", "old-b")], Ttl::Seconds(10))
        .unwrap();
    e.clock.advance_secs(11);
    e.cache.set("fresh", "f", Ttl::Seconds(300)).unwrap();
    // The first multi-get after the soft expiry misses both stale keys (and re-stores them
    // bare for herd_timeout); the fresh one is served.
    let first: HashMap<String, String> = e
        .cache
        .get_many(&["a", "b", "fresh"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(
        first,
        HashMap::from([("fresh".to_string(), "f".to_string())])
    );
    for key in ["a", "b"] {
        let (flags, ttl, value) = e.meta(key).unwrap();
        assert_eq!(flags & HERD_FLAG, 0, "{key}: re-stored bare");
        assert!((58..=60).contains(&ttl), "{key}: ttl {ttl}");
        assert_eq!(value, format!("old-{key}").as_bytes());
    }
    // Everyone after is served the old values.
    let second: HashMap<String, String> = e
        .cache
        .get_many(&["a", "b"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(second.get("a").map(String::as_str), Some("old-a"));
    assert_eq!(second.get("b").map(String::as_str), Some("old-b"));
}

#[test]
fn get_many_hands_each_stale_key_to_exactly_one_reader_under_lease() {
    let e = env("herd_timeout=60");
    let keys = ["a", "b", "c"];
    e.cache
        .set_many(keys.iter().map(|k| (*k, 1u32)), Ttl::Seconds(10))
        .unwrap();
    e.clock.advance_secs(11);
    let cache = e.cache.clone();
    let got = at_once(16, move |_| {
        cache.get_many::<_, u32>(&["a", "b", "c"]).unwrap()
    });
    for key in keys {
        let misses = got.iter().filter(|m| !m.contains_key(key)).count();
        assert_eq!(misses, 1, "{key}: exactly one reader recomputes: {got:?}");
        // The claim left the old value in its envelope, alive for the write-back.
        let (flags, ttl, _) = e.meta(key).unwrap();
        assert_eq!(kind(flags), 4 | HERD_FLAG, "{key}");
        assert!((120..=122).contains(&ttl), "{key}: ttl {ttl}");
    }
    assert!(got.iter().flat_map(|m| m.values()).all(|v| *v == 1));
}

/// A stale key asked twice in one `get_many`: one read wins its refresh, the other is served
/// the old value. The map held that value as a hit, so the caller, the winner, did not load
/// and nobody refreshed the key until the claim ran out (an outside audit). The key is
/// missing from the map, as when asked once.
#[test]
fn a_stale_key_asked_twice_in_get_many_is_a_miss_for_its_winner() {
    for policy in ["lease", "early"] {
        let e = env(&format!("herd={policy}"));
        e.cache.set("a", "OLD", Ttl::Seconds(60)).unwrap();
        e.cache.set("b", "B", Ttl::Seconds(60)).unwrap();
        assert!(e.cache.invalidate("a").unwrap());
        let got = e.cache.get_many::<_, String>(&["a", "b", "a"]).unwrap();
        assert_eq!(got.get("a"), None, "{policy}: {got:?}");
        assert_eq!(got.get("b").map(String::as_str), Some("B"), "{policy}");
        // A fresh key asked twice keeps its value.
        let got = e.cache.get_many::<_, String>(&["b", "b"]).unwrap();
        assert_eq!((got.len(), got.get("b").map(String::as_str)), (1, Some("B")));
    }
}

#[test]
fn invalidate_marks_a_value_stale_so_exactly_one_reader_recomputes() {
    let e = env("herd_timeout=60");
    e.cache.set("fresh", &"v1", Ttl::Seconds(300)).unwrap();
    e.cache.set("bare", &"b1", Ttl::Forever).unwrap();
    assert!(e.cache.invalidate("fresh").unwrap());
    assert!(e.cache.invalidate("bare").unwrap());
    assert!(!e.cache.invalidate("missing").unwrap());
    for key in ["fresh", "bare"] {
        let cache = e.cache.clone();
        let got = at_once(16, move |_| cache.get::<String>(key).unwrap());
        assert_eq!(
            got.iter().filter(|g| g.is_none()).count(),
            1,
            "{key}: {got:?}"
        );
    }
    // delete still deletes.
    assert!(e.cache.delete("fresh").unwrap());
    assert_eq!(e.meta("fresh"), None);
}

#[test]
fn an_invalidation_during_a_claimed_refresh_hands_it_to_one_more_reader() {
    // The expiry's winner may have read what the invalidation replaces, so the invalidation
    // voids its claim: two events, one recomputation each.
    let e = env("herd_timeout=60");
    e.cache.set("hot", &"old", Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    assert_eq!(e.cache.get::<String>("hot").unwrap(), None, "the expiry's winner");
    assert_eq!(
        e.cache.get::<String>("hot").unwrap().as_deref(),
        Some("old"),
        "claimed: the others are served"
    );
    assert!(e.cache.invalidate("hot").unwrap());
    let cache = e.cache.clone();
    let got = at_once(16, move |_| cache.get::<String>("hot").unwrap());
    assert_eq!(
        got.iter().filter(|g| g.is_none()).count(),
        1,
        "the invalidation's winner: {got:?}"
    );
    assert!(got.iter().flatten().all(|v| v == "old"));
}

/// `get_or_set` over a stale `page` whose loader first runs `meanwhile` (what another
/// client does while it loads); returns what the caller got.
fn refresh_with(e: &Env, meanwhile: impl FnOnce(&Cache)) -> String {
    e.cache.set("page", &"old", Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    let other = e.cache.clone();
    e.cache
        .get_or_set("page", Ttl::Seconds(300), || {
            meanwhile(&other);
            "loaded".to_string()
        })
        .unwrap()
}

#[test]
fn a_refresh_does_not_replace_a_value_written_while_it_loaded() {
    let e = env("herd_timeout=60");
    let got = refresh_with(&e, |c| c.set("page", &"written", Ttl::Seconds(300)).unwrap());
    assert_eq!(got, "loaded", "the caller gets what it loaded");
    assert_eq!(
        e.cache.get::<String>("page").unwrap().as_deref(),
        Some("written"),
        "the write is newer than what the loader read"
    );
}

#[test]
fn a_refresh_invalidated_while_it_loaded_leaves_the_refresh_to_the_next_reader() {
    let e = env("herd_timeout=60");
    let got = refresh_with(&e, |c| assert!(c.invalidate("page").unwrap()));
    assert_eq!(got, "loaded");
    // Not stored: the next reader recomputes, the others are served the old value.
    assert_eq!(e.cache.get::<String>("page").unwrap(), None);
    assert_eq!(
        e.cache.get::<String>("page").unwrap().as_deref(),
        Some("old")
    );
}

/// A loader slower than `herd_timeout`: its claim runs out while it loads, and the next
/// reader claims the same old value again. That claim is no newer than the load, so the
/// loaded value lands over it (a value is refreshed however slow its loader). Before, it
/// went to its caller only: with every loader that slow, each claim voided the one before
/// and readers were served the old value for as long as they kept coming.
#[test]
fn a_refresh_slower_than_herd_timeout_lands_over_the_next_readers_claim() {
    let e = env("herd_timeout=60");
    let clock = e.clock.clone();
    let got = refresh_with(&e, |c| {
        clock.advance_secs(61);
        assert_eq!(
            c.get::<String>("page").unwrap(),
            None,
            "the first claim ran out: another reader claims"
        );
        assert_eq!(c.get::<String>("page").unwrap().as_deref(), Some("old"));
    });
    assert_eq!(got, "loaded");
    assert_eq!(
        e.cache.get::<String>("page").unwrap().as_deref(),
        Some("loaded"),
        "the slow load landed"
    );
    // The second claimant's value, when it comes, finds a value it did not claim.
    e.cache.set("page", &"loaded", Ttl::Seconds(300)).unwrap();
}

/// The same slow loader, with the value invalidated while it loads: the invalidation is
/// newer than the load, whether or not a reader has claimed the invalidated value since.
#[test]
fn a_slow_refresh_invalidated_while_it_loaded_is_not_stored() {
    for claimed_since in [false, true] {
        let e = env("herd_timeout=60");
        let clock = e.clock.clone();
        let got = refresh_with(&e, |c| {
            clock.advance_secs(30);
            assert!(c.invalidate("page").unwrap());
            if claimed_since {
                assert_eq!(c.get::<String>("page").unwrap(), None, "the invalidation's winner");
            }
            clock.advance_secs(31);
        });
        assert_eq!(got, "loaded");
        assert_ne!(
            e.cache.get::<String>("page").unwrap().as_deref(),
            Some("loaded"),
            "claimed since: {claimed_since}"
        );
    }
}

#[test]
fn a_refresh_deleted_while_it_loaded_stores_nothing() {
    let e = env("herd_timeout=60");
    let got = refresh_with(&e, |c| assert!(c.delete("page").unwrap()));
    assert_eq!(got, "loaded");
    assert_eq!(e.meta("page"), None);
}

#[test]
fn a_cold_load_does_not_replace_a_value_written_while_it_ran() {
    let e = env("");
    let other = e.cache.clone();
    let got: String = e
        .cache
        .get_or_set("cold", Ttl::Seconds(300), || {
            other.set("cold", &"written", Ttl::Seconds(300)).unwrap();
            "loaded".to_string()
        })
        .unwrap();
    assert_eq!(got, "loaded");
    assert_eq!(
        e.cache.get::<String>("cold").unwrap().as_deref(),
        Some("written")
    );
}

#[test]
fn get_or_set_runs_the_loader_once_for_a_cold_key_across_threads() {
    let e = env("");
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(16, move |_| {
        cache
            .get_or_set("cold", Ttl::Seconds(60), || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                "loaded".to_string()
            })
            .unwrap()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(got.iter().all(|v| v == "loaded"));
}

#[test]
fn get_or_set_shares_one_loader_run_between_two_caches_as_between_processes() {
    // Two caches have separate connections and flight tables, as two processes would (named
    // apart: caches of one name on one cluster share their flights): the lease key stored
    // with `add` is what keeps the second from loading too.
    let e = env("lease_wait=3000");
    let url = format!(
        "newcache://{}/?flavor=test&version=1&{TRANSPORT}&lease_wait=3000&name=other",
        e.server.addr()
    );
    let other = Cache::from_url(&url).unwrap();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let caches = [e.cache.clone(), other];
    let counter = runs.clone();
    let got = at_once(16, move |i| {
        caches[i % 2]
            .get_or_set("shared", Ttl::Seconds(60), || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                7u32
            })
            .unwrap()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(got.iter().all(|v| *v == 7));
}

#[test]
fn get_or_set_runs_the_loader_once_per_expiry_and_serves_the_old_value_meanwhile() {
    let e = env("herd_timeout=60");
    e.cache.set("page", &1u32, Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(16, move |_| {
        cache
            .get_or_set("page", Ttl::Seconds(10), || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                2u32
            })
            .unwrap()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(got.iter().filter(|v| **v == 2).count(), 1, "{got:?}");
    assert_eq!(got.iter().filter(|v| **v == 1).count(), 15, "{got:?}");
    assert_eq!(e.cache.get::<u32>("page").unwrap(), Some(2));
}

#[test]
fn a_failing_loader_reaches_its_caller_and_stores_nothing() {
    let e = env("");
    let got: Result<u32, Error> = e.cache.get_or_try_set("flaky", Ttl::Seconds(60), || {
        Err(Error::Config("database down".into()))
    });
    assert!(
        matches!(&got, Err(Error::Config(m)) if m == "database down"),
        "{got:?}"
    );
    assert_eq!(e.meta("flaky"), None);
    // The lease is released: the next caller loads at once.
    let v = e
        .cache
        .get_or_set("flaky", Ttl::Seconds(60), || 5u32)
        .unwrap();
    assert_eq!(v, 5);
}

#[test]
fn a_failing_loader_on_the_stale_path_keeps_the_old_value_for_everyone() {
    let e = env("herd_timeout=60");
    e.cache.set("page", &1u32, Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    // The winner's loader fails; the 15 others are served the old value, never the error.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(16, move |_| {
        cache.get_or_try_set("page", Ttl::Seconds(10), || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            Err::<u32, Error>(Error::Config("database down".into()))
        })
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    let errors: Vec<_> = got.iter().filter_map(|g| g.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{got:?}");
    assert!(
        matches!(errors[0], Error::Config(m) if m == "database down"),
        "{got:?}"
    );
    assert!(got.iter().flatten().all(|v| *v == 1), "{got:?}");
    // Nothing was stored: the item is still the old value's (claimed) envelope.
    let (flags, _, value) = e.meta("page").unwrap();
    assert_eq!(kind(flags), 4 | HERD_FLAG);
    assert_eq!(value, b"1");
    assert_eq!(e.cache.get::<u32>("page").unwrap(), Some(1));
    // Once the claim runs out (herd_timeout), the next caller retries and stores.
    e.clock.advance_secs(61);
    let v = e
        .cache
        .get_or_set("page", Ttl::Seconds(10), || 2u32)
        .unwrap();
    assert_eq!(v, 2);
    assert_eq!(e.cache.get::<u32>("page").unwrap(), Some(2));
}

/// The callers waiting for a cold loader that fails fail with it (`Error::LoadFailed`),
/// running no loader of their own; the next caller loads. They used to take the load over one
/// after another, each after the one before it failed: an outside audit saw 50 tasks on a
/// cold key whose loader failed after 200 ms run 50 loaders, the last caller after 10.12 s.
#[test]
fn after_a_failing_cold_loader_its_waiters_fail_with_it_and_the_next_caller_loads() {
    let e = env("lease_wait=3000");
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let started = Instant::now();
    let got = at_once(8, move |_| {
        cache.get_or_try_set("cold", Ttl::Seconds(60), || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            Err::<u32, _>(Error::Config("database down".into()))
        })
    });
    let took = started.elapsed();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "{got:?}");
    let (leader, waiters): (Vec<_>, Vec<_>) = got
        .iter()
        .partition(|g| matches!(g, Err(Error::Config(m)) if m == "database down"));
    assert_eq!(leader.len(), 1, "{got:?}");
    assert!(
        waiters
            .iter()
            .all(|g| matches!(g, Err(Error::LoadFailed { key }) if key == "cold")),
        "{got:?}"
    );
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(e.lease("cold"), None, "the lease key is released");
    // A caller after the failure leads a flight of its own.
    let v: u32 = e
        .cache
        .get_or_set("cold", Ttl::Seconds(60), || 7u32)
        .unwrap();
    assert_eq!((v, e.cache.get::<u32>("cold").unwrap()), (7, Some(7)));
}

/// An env (`params`), a cache on its server and clock standing for another process, and a
/// cold `get_or_set` of `key` in this process whose loader hangs (returning 1) until the
/// sender is used or dropped, or 15 s.
#[allow(clippy::type_complexity)]
fn hung_cold_leader(
    params: &str,
    key: &'static str,
) -> (
    Env,
    newcache::Cache,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Result<u32, Error>>,
) {
    let e = env(params);
    let other = newcache::Builder::from_url(&format!(
        "newcache://{}/?flavor=test&version=1&{TRANSPORT}&{params}&name=elsewhere",
        e.server.addr()
    ))
    .unwrap()
    .clock(Arc::new(e.clock.clone()))
    .build()
    .unwrap();
    let (release, hang) = std::sync::mpsc::channel::<()>();
    let cache = e.cache.clone();
    let leader = std::thread::spawn(move || {
        cache.get_or_set(key, Ttl::Seconds(60), move || {
            let _ = hang.recv_timeout(Duration::from_secs(15));
            1u32
        })
    });
    (e, other, release, leader)
}

/// A caller in this process waiting for a hung cold loader of the same key reads the key
/// again every `lease_wait`: the value another process loaded once the hung loader's lease
/// expired is served to it. Before, it waited until the hung loader returned (an outside
/// audit: still waiting after 10 s, the value stored by another process long before).
#[test]
fn a_hung_cold_loader_does_not_keep_its_followers_from_another_process_s_value() {
    let (e, other, release, leader) = hung_cold_leader("lease_wait=1000", "hung");
    std::thread::sleep(Duration::from_millis(100));
    // Another process: it waits out the hung loader's lease, then loads.
    let elsewhere = std::thread::spawn(move || {
        other.get_or_set("hung", Ttl::Seconds(60), || 3u32).unwrap()
    });
    let started = Instant::now();
    let v: u32 = e
        .cache
        .get_or_set("hung", Ttl::Seconds(60), || 2u32)
        .unwrap();
    let took = started.elapsed();
    assert_eq!(elsewhere.join().unwrap(), 3);
    assert_eq!(v, 3, "the other process's value, not a load of its own");
    assert!(took < Duration::from_secs(6), "waited {took:?}");
    release.send(()).unwrap();
    // The hung loader's value, loaded before the other was stored, does not replace it.
    assert_eq!(leader.join().unwrap().unwrap(), 1);
    assert_eq!(e.cache.get::<u32>("hung").unwrap(), Some(3));
}

/// A loader slower than `lease_wait` is still one load for the callers of its process, and
/// its failure theirs: an outside audit saw the change that let a caller take a slow load
/// over run 3 loads of a 5 s loader in one process (`lease_wait=500`), and a failing loader
/// of 3.5 s once per caller, one after another (16 threads, the last after 48 s).
#[test]
fn a_loader_slower_than_lease_wait_is_one_load_and_one_failure_in_its_process() {
    let e = env("lease_wait=500");
    for fails in [false, true] {
        let key = if fails { "slow-fail" } else { "slow" };
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cache, counter) = (e.cache.clone(), runs.clone());
        let got = at_once(6, move |_| {
            cache.get_or_try_set(key, Ttl::Seconds(60), || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2500));
                if fails {
                    Err(Error::Config("database down".into()))
                } else {
                    Ok(4u32)
                }
            })
        });
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "{key}: {got:?}");
        if fails {
            let failed = got
                .iter()
                .filter(|g| matches!(g, Err(Error::LoadFailed { .. })))
                .count();
            assert_eq!(failed, 5, "{got:?}");
        } else {
            assert!(got.iter().all(|g| matches!(g, Ok(4))), "{got:?}");
        }
    }
}

#[test]
fn while_a_cold_load_runs_its_lease_key_is_there() {
    let e = env("lease_wait=3000");
    // While a cold load runs, its lease key is there (TTL: lease_wait, whole seconds, and
    // one more: memcached's clock ends an item up to a second early).
    let (cache, seen) = (e.cache.clone(), Arc::new(std::sync::Mutex::new(None)));
    let lease = String::from_utf8(e.cache.lease_key("held").unwrap()).unwrap();
    let server_addr = e.server.addr();
    let seen_in = seen.clone();
    cache
        .get_or_set("held", Ttl::Seconds(60), move || {
            let mut s = std::net::TcpStream::connect(&server_addr).unwrap();
            use std::io::{Read, Write};
            s.write_all(format!("mg {lease} t\r\n").as_bytes()).unwrap();
            let mut reply = [0u8; 64];
            let n = s.read(&mut reply).unwrap();
            *seen_in.lock().unwrap() = Some(String::from_utf8_lossy(&reply[..n]).into_owned());
            1u32
        })
        .unwrap();
    let seen = seen.lock().unwrap().clone().unwrap();
    assert!(seen.starts_with("HD t4") || seen.starts_with("HD t3"), "{seen}");
}

/// The cold load's lease key is made from the wire key (`newcache-lease-` and its SHA-1),
/// not from the caller's key through the key function: with a key function that does not
/// hash, a long key was stored and read, and refused on a cold `get_or_set` only (its lease
/// key `{key}:newcache-lease` was past 250 bytes); and a caller's own key of that name made
/// `get_or_set` wait on it for ever, then deleted it (an outside audit).
#[test]
fn the_lease_key_fits_any_valid_key_and_is_no_callers_key() {
    let e = env("key_function=django&key_prefix=site&lease_wait=1000");
    let long = "k".repeat(240);
    assert_eq!(e.cache.wire_key(&long).unwrap().len(), 247);
    let v: u32 = e
        .cache
        .get_or_set(&long, Ttl::Seconds(60), || 1u32)
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(e.cache.get::<u32>(&long).unwrap(), Some(1));
    let lease = e.cache.lease_key("report").unwrap();
    assert!(lease.starts_with(b"newcache-lease-") && lease.len() == 55);
    // A caller's value under the old lease key's name is left alone.
    e.cache
        .set("report:newcache-lease", "user data", Ttl::Forever)
        .unwrap();
    let started = Instant::now();
    let v: String = e
        .cache
        .get_or_set("report", Ttl::Seconds(60), || "loaded".to_string())
        .unwrap();
    assert_eq!(v, "loaded");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        e.cache.get::<String>("report:newcache-lease").unwrap().as_deref(),
        Some("user data")
    );
}

/// A lease key that does not expire (stored by something else with no TTL) costs a cold
/// `get_or_set` the lease's own life and a second more (`lease_wait` rounded up to the
/// second, and two more), then it loads: the wait is bounded by the cache, not by the key's
/// TTL.
#[test]
fn a_lease_key_that_never_expires_costs_a_bounded_wait() {
    let e = env("lease_wait=1000");
    let lease = String::from_utf8(e.cache.lease_key("stuck").unwrap()).unwrap();
    assert_eq!(
        e.server.raw(&format!("set {lease} 0 0 1\r\nx\r\n"), b"\r\n"),
        b"STORED\r\n"
    );
    let started = Instant::now();
    let v: u32 = e
        .cache
        .get_or_set("stuck", Ttl::Seconds(60), || 9u32)
        .unwrap();
    let took = started.elapsed();
    assert_eq!(v, 9);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "waited {took:?}"
    );
    assert_eq!(e.cache.get::<u32>("stuck").unwrap(), Some(9));
}

#[test]
fn a_panicking_loader_releases_the_lease_key_and_the_flight() {
    let e = env("lease_wait=3000");
    let cache = e.cache.clone();
    let panicked = std::thread::spawn(move || {
        cache.get_or_set("boom", Ttl::Seconds(60), || -> u32 {
            panic!("loader panicked")
        })
    })
    .join();
    assert!(panicked.is_err());
    assert_eq!(
        e.lease("boom"),
        None,
        "the lease key is deleted"
    );
    assert_eq!(e.meta("boom"), None, "nothing was stored");
    // With waiters: the leader panics after they joined its flight; one of them loads next.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(4, move |_| {
        let counter = counter.clone();
        let cache = cache.clone();
        std::thread::spawn(move || {
            cache.get_or_set("boom", Ttl::Seconds(60), || {
                let run = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                assert!(run > 0, "the first loader panics");
                5u32
            })
        })
        .join()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        got.iter().filter(|g| g.is_err()).count(),
        1,
        "one caller panicked"
    );
    assert!(
        got.iter().flatten().all(|v| matches!(v, Ok(5))),
        "the others got the next loader's value"
    );
    assert_eq!(e.lease("boom"), None);
}

/// A cache under `herd=early` (`early_beta=5`) whose key `x` holds 1, loaded by a loader of
/// 200 ms: recorded in the envelope, XFetch scales its lead by them.
fn early_with_x() -> Env {
    early_with_x_and("")
}

/// [`early_with_x`], with more URL parameters.
fn early_with_x_and(params: &str) -> Env {
    let e = env(&format!("herd_timeout=60&herd=early&early_beta=5{params}"));
    let v: u32 = e
        .cache
        .get_or_set("x", Ttl::Seconds(10), || {
            std::thread::sleep(Duration::from_millis(200));
            1
        })
        .unwrap();
    assert_eq!(v, 1);
    e
}

/// XFetch decides per reader, so near the expiry many readers of one process decide to
/// refresh at once; `get_or_set` runs one loader per process for them: the rest are served
/// the value (or, deciding in the instant before the leader was on its way, wait for it).
/// An outside audit saw 146 of 200 tasks of one process load.
#[test]
fn early_refreshes_once_per_process() {
    let e = early_with_x();
    // 100 ms before the expiry, with beta 5: about 9 readers in 10 decide to refresh.
    e.clock.advance_millis(9_900);
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(64, move |_| {
        let counter = counter.clone();
        cache
            .get_or_set("x", Ttl::Seconds(10), move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
                2u32
            })
            .unwrap()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "{got:?}");
    assert!(got.iter().all(|v| *v == 1 || *v == 2), "{got:?}");
    assert_eq!(e.cache.get::<u32>("x").unwrap(), Some(2));
}

/// An early refresh under way keeps its process's readers off the value once it expires:
/// they are served the old value, as before the expiry, instead of claiming it for a second
/// load (an outside audit: 5 of 9 refreshes loaded twice in one process).
#[test]
fn an_early_refresh_under_way_is_its_processs_one_load_past_the_expiry() {
    let e = early_with_x();
    let (leader, started_rx, release_tx) = early_refresh_held(&e);
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an early refresh started");
    // Past the soft expiry now, while the early refresh loads.
    e.clock.advance_millis(200);
    for _ in 0..5 {
        assert_eq!(e.cache.get::<u32>("x").unwrap(), Some(1), "served, not claimed");
    }
    let again = e
        .cache
        .get_or_set("x", Ttl::Seconds(10), || -> u32 { panic!("a second load") })
        .unwrap();
    assert_eq!(again, 1);
    // Another process (a cache of another name: flights of its own) claims the expired
    // value, re-storing it under a new unique.
    let url = format!(
        "newcache://{}/?flavor=test&version=1&{TRANSPORT}&herd_timeout=60&herd=early&early_beta=5&name=other",
        e.server.addr()
    );
    let other = newcache::Builder::from_url(&url)
        .unwrap()
        .clock(Arc::new(e.clock.clone()))
        .build()
        .unwrap();
    assert_eq!(other.get::<u32>("x").unwrap(), None, "its reader wins the claim");
    release_tx.send(()).unwrap();
    assert_eq!(leader.join().unwrap(), 2);
    // The claim is newer than the early refresh's read (it may follow an invalidation the
    // refresh never saw): the early value goes to its caller only, and the claim's winner
    // stores the next one.
    assert_eq!(e.cache.get::<u32>("x").unwrap(), Some(1));
}

/// An early refresh held longer than `lease_wait` is taken for hung, as its waiters take
/// it: a reader past the expiry claims the value and loads, so a hung loader does not keep
/// the process on the old value until it is gone.
#[test]
fn an_early_refresh_slower_than_lease_wait_leaves_the_expired_value_to_a_claim() {
    let e = early_with_x_and("&lease_wait=300");
    let (leader, started_rx, release_tx) = early_refresh_held(&e);
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an early refresh started");
    e.clock.advance_millis(200);
    assert_eq!(e.cache.get::<u32>("x").unwrap(), Some(1), "served meanwhile");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(e.cache.get::<u32>("x").unwrap(), None, "claimed: this reader loads");
    release_tx.send(()).unwrap();
    assert_eq!(leader.join().unwrap(), 2);
}

/// An invalidation while an early refresh loads hands the value to one more reader at once:
/// that refresh read the value from before it, and its store will not land. Served the
/// invalidated value while the refresh ran, readers waited up to `lease_wait` for nothing
/// (a review: 2.4 s).
#[test]
fn an_invalidation_during_an_early_refresh_goes_to_the_next_reader_at_once() {
    let e = early_with_x();
    let (leader, started_rx, release_tx) = early_refresh_held(&e);
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an early refresh started");
    assert!(e.cache.invalidate("x").unwrap());
    assert_eq!(e.cache.get::<u32>("x").unwrap(), None, "this reader claims it");
    assert_eq!(e.cache.get::<u32>("x").unwrap(), Some(1), "the others are served");
    release_tx.send(()).unwrap();
    assert_eq!(leader.join().unwrap(), 2);
}

/// A refresh's loader slower than `lease_wait` that reads its own key past the expiry is
/// served the old value: it was taken for hung, and the inner call claimed the value and
/// ran a nested load (a review: 2 loads, the outer value thrown away).
#[test]
fn a_slow_refresh_loader_reading_its_own_key_is_served_the_old_value() {
    let e = early_with_x_and("&lease_wait=300");
    e.clock.advance_millis(9_900);
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, clock, counter) = (e.cache.clone(), e.clock.clone(), runs.clone());
    let mut inner = None;
    for _ in 0..200 {
        let mut ran = false;
        let v = cache
            .get_or_set("x", Ttl::Seconds(10), || {
                ran = true;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                clock.advance_millis(200);
                std::thread::sleep(Duration::from_millis(400));
                inner = Some(cache.get_or_set("x", Ttl::Seconds(10), || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    7u32
                }));
                2u32
            })
            .unwrap();
        if ran {
            assert_eq!(v, 2);
            break;
        }
    }
    assert!(matches!(inner, Some(Ok(1))), "{inner:?}");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Starts a thread reading `x` through `get_or_set` 100 ms before its soft expiry until a
/// read draws an early refresh, whose loader then waits to be released (and gives 2): the
/// thread (its value), the loader's start, the release.
fn early_refresh_held(
    e: &Env,
) -> (
    std::thread::JoinHandle<u32>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    e.clock.advance_millis(9_900);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let cache = e.cache.clone();
    let leader = std::thread::spawn(move || {
        // Each read 100 ms before the expiry draws an early refresh about 9 times in 10.
        for _ in 0..200 {
            let mut ran = false;
            let v = cache
                .get_or_set("x", Ttl::Seconds(10), || {
                    ran = true;
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    2u32
                })
                .unwrap();
            if ran {
                return v;
            }
        }
        panic!("no early refresh in 200 reads");
    });
    (leader, started_rx, release_tx)
}

#[test]
fn early_recomputes_ahead_of_the_expiry_only_when_it_nears() {
    let e = early_with_x();
    // Far from the expiry: every read is served.
    for _ in 0..50 {
        assert_eq!(e.cache.get::<u32>("x").unwrap(), Some(1));
    }
    // 100 ms before it, with beta 5: most reads (about 9 in 10) recompute early, and nothing
    // is stored or removed for the others.
    e.clock.advance_millis(9_900);
    let misses = (0..50)
        .filter(|_| e.cache.get::<u32>("x").unwrap().is_none())
        .count();
    assert!(
        (20..=50).contains(&misses),
        "{misses} of 50 recomputed early"
    );
    let (flags, _, _) = e.meta("x").unwrap();
    assert_eq!(kind(flags), 4 | HERD_FLAG);
    // Past the soft expiry, early behaves as lease: exactly one reader recomputes.
    e.clock.advance_millis(200);
    let cache = e.cache.clone();
    let got = at_once(16, move |_| cache.get::<u32>("x").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
}

/// A caller waiting for a hung cold loader of its process re-reads the key every
/// `lease_wait`; when that read finds another process's value past its soft expiry and wins
/// its refresh (the claim), it refreshes. The win was dropped: the caller went on waiting,
/// then was served the old value it had claimed, and nobody refreshed it for `herd_timeout`
/// (an outside audit, lease and meta).
#[test]
fn a_cold_waiter_that_wins_a_refresh_refreshes() {
    let (e, other, release, leader) = hung_cold_leader("lease_wait=500", "stale");
    std::thread::sleep(Duration::from_millis(100));
    let cache = e.cache.clone();
    let waiter =
        std::thread::spawn(move || cache.get_or_set("stale", Ttl::Seconds(60), || 5u32));
    std::thread::sleep(Duration::from_millis(100));
    // Another process's value, then its soft expiry passed: the waiter's next read wins the
    // refresh.
    other.set("stale", &3u32, Ttl::Seconds(1)).unwrap();
    e.clock.advance_secs(2);
    assert_eq!(waiter.join().unwrap().unwrap(), 5, "refreshed, not the old 3");
    assert_eq!(other.get::<u32>("stale").unwrap(), Some(5));
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap(), 1);
    assert_eq!(other.get::<u32>("stale").unwrap(), Some(5), "kept over the late load");
}

/// A cold load whose value the cache cannot store (past the item size limit) fails its
/// waiters as a loader error does. Each waiter found the key still cold and ran its loader
/// in turn, each failing alike (an outside audit: 222 runs for 222 calls, the last after
/// 24 s). A TTL that expires at once stores nothing to wait for: every caller loads at once,
/// side by side (they loaded one after another).
#[test]
fn an_unstorable_load_fails_its_waiters_and_a_zero_ttl_loads_side_by_side() {
    let e = env("lease_wait=3000");
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let started = Instant::now();
    let got = at_once(8, move |_| {
        cache.get_or_set("huge", Ttl::Seconds(60), || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            "x".repeat(2 << 20)
        })
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "{got:?}");
    let too_large = got
        .iter()
        .filter(|g| {
            matches!(
                g,
                Err(Error::Transport(
                    newcache_transport::Error::ValueTooLarge { .. }
                ))
            )
        })
        .count();
    let failed = got
        .iter()
        .filter(|g| matches!(g, Err(Error::LoadFailed { .. })))
        .count();
    assert_eq!((too_large, failed), (1, 7));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    runs.store(0, std::sync::atomic::Ordering::SeqCst);
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let started = Instant::now();
    let got = at_once(8, move |_| {
        cache.get_or_set("now", Ttl::Seconds(0), || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            9u32
        })
    });
    assert!(got.iter().all(|g| matches!(g, Ok(9))), "{got:?}");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 8);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "side by side, not 8 x 300 ms: {:?}",
        started.elapsed()
    );
    assert_eq!(e.cache.get::<u32>("now").unwrap(), None);
}

/// `add` over a value past its TTL stores, as memcached's `add` over an expired item does:
/// the herd keeps the item `herd_timeout` longer, and an `add` used as a lock with a TTL
/// (Django's idiom) was refused that much longer (an outside audit). Of several adders at
/// once, one stores; a fresh value still refuses an `add`, and so does a stale one whose
/// refresh a reader has claimed (the others are served it meanwhile). Under `herd=meta` the
/// server decides what is served, and under `reinsert` a reader re-stores the old value
/// with a plain `set`: `add` is memcached's own there (other audits: it took over a value
/// the others were being served; the re-store overwrote the added value). (`herd=meta`
/// needs the text transport.)
#[test]
fn add_takes_over_a_value_past_its_ttl() {
    for policy in ["lease", "early"] {
        let e = env(&format!("herd={policy}&herd_timeout=60"));
        assert!(e.cache.add("lock", "owner1", Ttl::Seconds(1)).unwrap(), "{policy}");
        assert!(!e.cache.add("lock", "owner2", Ttl::Seconds(1)).unwrap(), "{policy}");
        e.clock.advance_secs(2);
        assert!(!e.cache.has_key("lock").unwrap(), "{policy}");
        let cache = e.cache.clone();
        let won = at_once(8, move |i| {
            cache
                .add("lock", &format!("owner{}", i + 2), Ttl::Seconds(1))
                .unwrap()
        });
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{policy}: {won:?}");
        let winner = won.iter().position(|w| *w).unwrap();
        assert_eq!(
            e.cache.get::<String>("lock").unwrap(),
            Some(format!("owner{}", winner + 2)),
            "{policy}"
        );
        assert!(!e.cache.add("lock", "late", Ttl::Seconds(1)).unwrap(), "{policy}");
    }
    for policy in ["lease", "early"] {
        let e = env(&format!("herd={policy}&herd_timeout=60"));
        e.cache.set("k", "old", Ttl::Seconds(1)).unwrap();
        e.clock.advance_secs(2);
        assert_eq!(e.cache.get::<String>("k").unwrap(), None, "{policy}: the winner");
        assert!(!e.cache.add("k", "added", Ttl::Seconds(60)).unwrap(), "{policy}");
        assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("old"));
    }
    let meta = TRANSPORT.starts_with("transport=text");
    for policy in ["reinsert", "meta"].into_iter().filter(|p| meta || *p != "meta") {
        let e = env(&format!("herd={policy}&herd_timeout=60"));
        e.cache.set("k", "old", Ttl::Seconds(1)).unwrap();
        e.clock.advance_secs(2);
        assert!(!e.cache.add("k", "added", Ttl::Seconds(60)).unwrap(), "{policy}");
        assert_ne!(
            e.cache.get::<String>("k").unwrap().as_deref(),
            Some("added"),
            "{policy}"
        );
    }
}

/// A refresh whose loaded value is too large to store empties the key, as a `set` of it
/// does (memcached's own rule for a `set` too large): the old value was left claimed, and
/// served as fresh for `2 x herd_timeout` (an outside audit), under every policy that claims.
#[test]
fn a_refresh_too_large_to_store_leaves_no_old_value() {
    for policy in ["lease", "early", "reinsert"] {
        let e = env(&format!("herd={policy}&herd_timeout=60&item_size_limit=65536"));
        e.cache.set("k", "old", Ttl::Seconds(10)).unwrap();
        e.clock.advance_secs(11);
        let got = e
            .cache
            .get_or_set("k", Ttl::Seconds(60), || "x".repeat(100_000));
        assert!(
            matches!(
                got,
                Err(Error::Transport(
                    newcache_transport::Error::ValueTooLarge { .. }
                ))
            ),
            "{policy}: {got:?}"
        );
        assert_eq!(e.cache.get::<String>("k").unwrap(), None, "{policy}");
        assert_eq!(e.cache.peek("k").unwrap(), None, "{policy}: nothing left");
        // A value another writer stored while the loader ran is newer: it stays (an
        // unconditional delete took it: another audit). Under `reinsert` the loaded value
        // is stored with a `set`, over whatever is there, as django-newcache stores it.
        if policy == "reinsert" {
            continue;
        }
        e.cache.set("n", "old", Ttl::Seconds(10)).unwrap();
        e.clock.advance_secs(11);
        let other = e.cache.clone();
        let got = e.cache.get_or_set("n", Ttl::Seconds(60), move || {
            other.set("n", "newer", Ttl::Seconds(300)).unwrap();
            "x".repeat(100_000)
        });
        assert!(got.is_err(), "{policy}");
        assert_eq!(
            e.cache.get::<String>("n").unwrap().as_deref(),
            Some("newer"),
            "{policy}"
        );
    }
}

/// A zero-TTL `get_or_set` stores nothing over nothing: a value another caller stored while
/// it loaded stays. It deleted that value (an outside audit: callers with a 60 s TTL and a
/// zero one on one cold key left it empty).
#[test]
fn a_zero_ttl_load_keeps_what_another_caller_stored_meanwhile() {
    let e = env("lease_wait=3000");
    let cache = e.cache.clone();
    let got = at_once(8, move |i| {
        let ttl = if i % 2 == 0 { Ttl::Seconds(0) } else { Ttl::Seconds(60) };
        cache.get_or_set("mixed", ttl, move || {
            // The zero-TTL loads end after the other's value is stored.
            std::thread::sleep(Duration::from_millis(if i % 2 == 0 { 400 } else { 100 }));
            if i % 2 == 0 { "now" } else { "kept" }.to_string()
        })
    });
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_eq!(
        e.cache.get::<String>("mixed").unwrap().as_deref(),
        Some("kept")
    );
}

#[test]
fn a_loader_that_calls_get_or_set_of_its_own_key_is_told_so() {
    // The inner call followed its own load's single flight, and waited for it for ever.
    let e = env("lease_wait=1000");
    let url = format!(
        "newcache://{}/?flavor=test&version=1&{TRANSPORT}&lease_wait=1000",
        e.server.addr()
    );
    // Built from the same URL: the same name, so the same single flights.
    let twin = Cache::from_url(&url).unwrap();
    let cache = e.cache.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut inner = Vec::new();
        let outer = cache.get_or_set("self", Ttl::Seconds(60), || {
            inner.push(cache.get_or_set("self", Ttl::Seconds(60), || 1u32));
            inner.push(twin.get_or_set("self", Ttl::Seconds(60), || 2u32));
            // Another key is no reentry.
            inner.push(cache.get_or_set("other", Ttl::Seconds(60), || 3u32));
            4u32
        });
        let _ = tx.send((outer, inner));
    });
    let (outer, inner) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the inner get_or_set waited for its own load");
    assert_eq!(outer.unwrap(), 4);
    assert!(
        matches!(&inner[0], Err(Error::Reentrant { key }) if key == "self"),
        "{:?}",
        inner[0]
    );
    assert!(matches!(&inner[1], Err(Error::Reentrant { .. })), "{:?}", inner[1]);
    assert_eq!(inner[2].as_ref().unwrap(), &3);
    assert_eq!(e.cache.get::<u32>("self").unwrap(), Some(4));
    assert_eq!(e.cache.get::<u32>("other").unwrap(), Some(3));
    assert_eq!(e.lease("self"), None);
    // A refresh's loader (this reader won the expired value's claim) meets no load to wait
    // for: it is served the old value, as before.
    e.clock.advance_secs(61);
    let cache = e.cache.clone();
    let mut inner = None;
    let refreshed = cache.get_or_set("self", Ttl::Seconds(60), || {
        inner = Some(cache.get_or_set("self", Ttl::Seconds(60), || 6u32));
        5u32
    });
    assert_eq!(refreshed.unwrap(), 5);
    assert!(matches!(inner, Some(Ok(4))), "{inner:?}");
    assert_eq!(e.cache.get::<u32>("self").unwrap(), Some(5));
}
