//! Failures as the text transport has them, on real memcached processes: every call bounded
//! by its timeouts on a hung server, one slow reply is no outage, a server is left alone
//! only after `failure_limit` failures in a row (never the only one), batches send every
//! item, and TTLs are exact or refused.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{connect, connect_with};
use newcache_testkit::Memcached;
use newcache_transport::{Error, Store, StoreMode, StoreStatus, Transport};
use newcache_transport_binary::{BinaryConfig, BinaryTransport, DEFAULT_POLL_TIMEOUT};

both_modes!(
    one_slow_reply_is_not_an_outage,
    a_dead_server_is_tried_failure_limit_times_then_fails_fast,
    the_only_server_is_never_left_alone,
    store_many_sends_every_item_and_reports_each,
    exptimes_past_2038_are_exact_or_refused,
    errors_at_ejection_name_the_dead_server,
);

fn three() -> Vec<Memcached> {
    (0..3).map(|_| Memcached::start()).collect()
}

fn over(servers: &[Memcached], binary: bool, behaviors: &[(&str, &str)]) -> BinaryTransport {
    let refs: Vec<&Memcached> = servers.iter().collect();
    connect_with(&refs, binary, |c| {
        for (name, value) in behaviors {
            c.behaviors.set(name, value).unwrap();
        }
    })
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f:{i}")).collect()
}

fn set(t: &BinaryTransport, key: &str) -> Result<StoreStatus, Error> {
    t.store(&Store::set(key.as_bytes(), b"v", 0, 0))
}

/// Both protocols, one after the other (each runs 16 threads on the 2 cores).
#[test]
fn every_call_on_a_hung_server_is_bounded_by_the_poll_timeout() {
    for binary in [true, false] {
        hung_server_calls_are_bounded(binary);
    }
}

/// Three servers, one SIGSTOPped; 16 threads of gets, sets, multi-gets, batches and
/// deletes on the default pool of 8 handles, the default timeouts (250 ms connect, 500 ms
/// poll). No call takes much longer than the poll timeout: a call that waited for a handle
/// gets only what is left of it, and once `failure_limit` (5) calls timed out the hung
/// server's keys fail fast. Keys on the live servers are read and written throughout (a
/// call can only fail by waiting its whole poll timeout for a handle that every other
/// thread holds on the hung server, at the start).
fn hung_server_calls_are_bounded(binary: bool) {
    let mut servers = three();
    let t = over(&servers, binary, &[]);
    let keys = keys(300);
    for k in &keys {
        set(&t, k).unwrap();
    }
    let home: Vec<usize> = keys
        .iter()
        .map(|k| t.server_index_for_key(k.as_bytes()).unwrap())
        .collect();
    servers[1].pause();
    let hung = servers[1].addr();
    let worst: Mutex<(Duration, String)> = Mutex::new((Duration::ZERO, String::new()));
    let outcomes: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for th in 0..16usize {
            let (t, keys, home, worst, outcomes, hung) =
                (&t, &keys, &home, &worst, &outcomes, &hung);
            s.spawn(move || {
                let mut i = th * 131;
                while started.elapsed() < Duration::from_millis(2500) {
                    i += 1;
                    let k = keys[i % keys.len()].as_bytes();
                    let batch: Vec<&[u8]> = (0..9)
                        .map(|j| keys[(i + j * 7) % keys.len()].as_bytes())
                        .collect();
                    let on_hung = home[i % keys.len()] == 1;
                    let begun = Instant::now();
                    let (op, result): (&str, Result<(), Error>) = match i % 5 {
                        0 => ("get", t.get(k).map(|_| ())),
                        1 => ("set", t.store(&Store::set(k, b"w", 0, 0)).map(|_| ())),
                        2 => ("get_many", t.get_many(&batch).map(|_| ())),
                        3 => {
                            let stores: Vec<Store> =
                                batch.iter().map(|k| Store::set(k, b"w", 0, 0)).collect();
                            ("set_many", t.store_many(&stores).map(|_| ()))
                        }
                        _ => ("delete", t.delete(k).map(|_| ())),
                    };
                    let took = begun.elapsed();
                    let outcome = match &result {
                        Ok(()) => "ok".to_string(),
                        Err(Error::ServerDown { server, .. }) if server == hung => {
                            "ServerDown".into()
                        }
                        Err(Error::Timeout { server, .. }) if server == hung => "Timeout".into(),
                        // All 8 handles were held by calls waiting on the hung server.
                        Err(Error::Timeout { server, .. }) if server.contains(',') => {
                            "no handle within the poll timeout".into()
                        }
                        Err(e) => panic!("{op} (key on the hung server: {on_hung}): {e:?}"),
                    };
                    if matches!(op, "get" | "set" | "delete") && !on_hung {
                        assert!(
                            outcome == "ok" || outcome.starts_with("no handle"),
                            "{op} of a live server's key: {outcome}"
                        );
                    }
                    *outcomes
                        .lock()
                        .unwrap()
                        .entry(format!("{op}: {outcome}"))
                        .or_default() += 1;
                    let mut w = worst.lock().unwrap();
                    if took > w.0 {
                        *w = (took, format!("{op}: {result:?}"));
                    }
                }
            });
        }
    });
    servers[1].resume();
    let (worst, what) = worst.into_inner().unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    eprintln!("binary {binary}: slowest call {worst:?} ({what}); outcomes {outcomes:?}");
    // One poll timeout (500 ms), with room for a loaded 2-core machine's scheduling, but
    // well short of two (a wait for a handle, then a whole poll timeout: 1 s).
    assert!(
        worst < DEFAULT_POLL_TIMEOUT * 9 / 5,
        "a call took {worst:?}: {what}"
    );
    let count = |k: &str| outcomes.get(k).copied().unwrap_or(0);
    let timeouts: u64 = outcomes
        .iter()
        .filter(|(k, _)| k.ends_with(": Timeout"))
        .map(|(_, n)| n)
        .sum();
    assert!(timeouts >= 1, "{outcomes:?}");
    assert!(count("get: ServerDown") > 50, "{outcomes:?}");
    assert!(count("get_many: ok") > 50, "{outcomes:?}");
}

/// Three servers, the defaults: a server that times out once (SIGSTOP, then SIGCONT) is not
/// left alone: the next 20 requests for its keys are served.
fn one_slow_reply_is_not_an_outage(binary: bool) {
    let mut servers = three();
    let t = over(&servers, binary, &[("_poll_timeout", "200")]);
    let keys = keys(100);
    for k in &keys {
        set(&t, k).unwrap();
    }
    let on_1: Vec<&String> = keys
        .iter()
        .filter(|k| t.server_index_for_key(k.as_bytes()).unwrap() == 1)
        .collect();
    servers[1].pause();
    assert!(matches!(
        t.get(on_1[0].as_bytes()),
        Err(Error::Timeout { .. })
    ));
    servers[1].resume();
    for k in on_1.iter().cycle().take(20) {
        assert!(
            t.get(k.as_bytes()).unwrap().is_some(),
            "{k} after one timeout"
        );
    }
}

/// A killed server (of three) is tried for real `failure_limit` times in a row, then its
/// keys fail fast with `ServerDown` for `retry_timeout`; every other server keeps working.
fn a_dead_server_is_tried_failure_limit_times_then_fails_fast(binary: bool) {
    let mut servers = three();
    let t = over(
        &servers,
        binary,
        &[("failure_limit", "3"), ("retry_timeout", "1")],
    );
    let keys = keys(100);
    for k in &keys {
        set(&t, k).unwrap();
    }
    let (on_1, on_0): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .filter(|k| t.server_index_for_key(k.as_bytes()).unwrap() != 2)
        .partition(|k| t.server_index_for_key(k.as_bytes()).unwrap() == 1);
    servers[1].kill();
    for (attempt, key) in on_1.iter().take(3).enumerate() {
        let err = set(&t, key).unwrap_err();
        assert!(
            matches!(err, Error::Connect { .. } | Error::Io { .. }),
            "attempt {attempt}: {err:?}"
        );
    }
    let left_alone = Instant::now();
    for k in on_1.iter().take(10) {
        let begun = Instant::now();
        match set(&t, k) {
            Err(Error::ServerDown { server, retry_in }) => {
                assert_eq!(server, servers[1].addr());
                assert!(retry_in <= Duration::from_secs(1), "{retry_in:?}");
            }
            other => panic!("expected ServerDown, got {other:?}"),
        }
        // No connect attempt: far under any connect timeout, with room for a loaded machine.
        assert!(begun.elapsed() < Duration::from_millis(250));
        set(&t, on_0[0]).unwrap();
    }
    // After retry_timeout (libmemcached counts it in whole seconds, so up to a second
    // more) one real attempt; one more failure leaves it alone again.
    loop {
        match set(&t, on_1[0]) {
            Err(Error::ServerDown { .. }) => {
                assert!(left_alone.elapsed() < Duration::from_millis(2300));
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Error::Connect { .. } | Error::Io { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(left_alone.elapsed() >= Duration::from_secs(1));
    assert!(matches!(set(&t, on_1[0]), Err(Error::ServerDown { .. })));
    // Back: the next attempt after the wait succeeds and clears the record.
    servers[1].restart();
    std::thread::sleep(Duration::from_millis(1100));
    set(&t, on_1[0]).unwrap();
    set(&t, on_1[1]).unwrap();
}

/// One server: never left alone, so it is used again the moment it is back, and a hung one
/// costs each call its poll timeout (nowhere else to go).
fn the_only_server_is_never_left_alone(binary: bool) {
    let mut m = Memcached::start();
    let t = connect_with(&[&m], binary, |c| {
        c.behaviors.set("failure_limit", "1").unwrap();
    });
    set(&t, "k").unwrap();
    m.pause();
    for _ in 0..3 {
        assert!(matches!(t.get(b"k"), Err(Error::Timeout { .. })));
    }
    m.resume();
    assert!(t.get(b"k").unwrap().is_some());
    m.kill();
    for _ in 0..5 {
        let err = set(&t, "k").unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    }
    m.restart();
    assert_eq!(set(&t, "k").unwrap(), StoreStatus::Stored);
}

/// Per-item conditions are statuses and never stop a batch; a value the server refuses as
/// too large is refused by itself; every other item is sent.
fn store_many_sends_every_item_and_reports_each(binary: bool) {
    let m = Memcached::with_args(&["-I", "512k"]);
    let t = connect(&[&m], binary);
    set(&t, "taken").unwrap();
    let add = |k: &'static [u8]| Store::set(k, b"new", 0, 0).with_mode(StoreMode::Add);
    let requests = [
        add(b"taken"),
        add(b"free1"),
        Store::set(b"x", b"1", 0, 0).with_mode(StoreMode::Replace),
        add(b"free2"),
    ];
    assert_eq!(
        t.store_many(&requests).unwrap(),
        [
            StoreStatus::NotStored,
            StoreStatus::Stored,
            StoreStatus::NotStored,
            StoreStatus::Stored
        ]
    );
    let big = vec![b'b'; 600_000];
    let requests = [
        Store::set(b"a", b"1", 0, 0),
        Store::set(b"big", &big, 0, 0),
        add(b"taken"),
        Store::set(b"c", b"3", 0, 0),
    ];
    match t.store_many(&requests) {
        Err(Error::ValueTooLarge { size, .. }) => assert_eq!(size, big.len()),
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    for k in [&b"a"[..], b"c"] {
        assert!(t.get(k).unwrap().is_some(), "{:?} was not sent", k);
    }
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// memcached reads a text-protocol exptime as a signed 32-bit number: past 2038 it would be
/// negative and the item gone at once, `set` answering success. In text mode such an
/// exptime is refused before anything is sent; the binary protocol reads it unsigned, and
/// the item keeps exactly that expiry (checked with `mg ... t`).
fn exptimes_past_2038_are_exact_or_refused(binary: bool) {
    let m = Memcached::start();
    let t = connect(&[&m], binary);
    set(&t, "k").unwrap();
    let sets_before = m.stat("cmd_set");
    for exptime in [i32::MAX as u32 + 1, 3_000_000_000, u32::MAX] {
        let store = t.store(&Store::set(b"late", b"v", 0, exptime));
        let touch = t.touch(b"k", exptime);
        let many = t.store_many(&[
            Store::set(b"a", b"v", 0, 0),
            Store::set(b"late", b"v", 0, exptime),
        ]);
        if binary {
            assert_eq!(store.unwrap(), StoreStatus::Stored);
            assert!(touch.unwrap());
            many.unwrap();
            for key in ["late", "k"] {
                let reply = m.raw(&format!("mg {key} t v\r\n"), b"\r\n");
                let reply = String::from_utf8_lossy(&reply);
                let ttl: i64 = reply
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix('t'))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("{key}: {reply:?}"));
                let want = i64::from(exptime) - i64::from(now());
                assert!(
                    (want - 2..=want + 1).contains(&ttl),
                    "{key}: ttl {ttl}, want {want}"
                );
            }
        } else {
            for (what, err) in [
                ("store", store.map(|_| ()).unwrap_err()),
                ("touch", touch.map(|_| ()).unwrap_err()),
                ("store_many", many.map(|_| ()).unwrap_err()),
            ] {
                assert!(
                    matches!(&err, Error::ExptimeTooLate { exptime } if *exptime > i32::MAX as u32),
                    "{what}: {err:?}"
                );
            }
            assert!(t.get(b"k").unwrap().is_some(), "the touch was not sent");
        }
    }
    if !binary {
        assert_eq!(m.stat("cmd_set"), sets_before, "nothing was sent");
        assert_eq!(m.stat("cmd_touch"), 0);
    }
    // The last second memcached keeps is fine everywhere.
    t.store(&Store::set(b"edge", b"v", 0, i32::MAX as u32))
        .unwrap();
    assert!(t.get(b"edge").unwrap().is_some());
}

/// With `remove_failed` (ketama, `failure_limit` 1), libmemcached ejects a dead server inside
/// the call that fails and rebuilds its ring without it at once; after `retry_timeout` it
/// puts the server back on the ring at the start of a call, which then fails on it again.
/// Every error of a request for one of the dead server's keys names the dead server, never
/// the live one its keys move to (an outside audit: the error of the ejecting request named
/// a healthy server, and its `retry_in` was that server's). One handle, closed every few
/// requests so that each new one meets the ejection again, then kept past `retry_timeout`.
fn errors_at_ejection_name_the_dead_server(binary: bool) {
    let live = [Memcached::start(), Memcached::start()];
    // Nothing listens there: every connect is refused.
    let dead = format!("127.0.0.1:{}", newcache_testkit::free_port());
    let mut c = BinaryConfig::new([live[0].addr(), dead.clone(), live[1].addr()]);
    c.binary_protocol = binary;
    c.pool_size = 1;
    c.behaviors
        .set_all([
            ("ketama", "1"),
            ("remove_failed", "1"),
            ("failure_limit", "1"),
            ("retry_timeout", "1"),
        ])
        .unwrap();
    let t = BinaryTransport::new(c).unwrap();
    let keys: Vec<String> = (0..3000)
        .map(|i| format!("eject:{i}"))
        .filter(|k| t.server_index_for_key(k.as_bytes()).unwrap() == 1)
        .take(16)
        .collect();
    assert_eq!(keys.len(), 16, "too few keys on the dead server");
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut check = |op: &str, result: Result<(), Error>| {
        let Err(e) = result else {
            *seen.entry("ok".into()).or_default() += 1;
            return;
        };
        assert_eq!(
            e.server(),
            Some(dead.as_str()),
            "{op}: the error names another server than the dead {dead}: {e:?} ({e})"
        );
        if let Error::ServerDown { retry_in, .. } = &e {
            // dead_timeout 0: an ejected server is never retried (MAX); else its own
            // retry time, under retry_timeout plus the second libmemcached rounds to.
            assert!(
                *retry_in == Duration::MAX || *retry_in <= Duration::from_secs(2),
                "{op}: {e:?}"
            );
        }
        let kind = format!("{e:?}");
        let kind = kind.split([' ', '{']).next().unwrap_or("?").to_string();
        *seen.entry(kind).or_default() += 1;
    };
    let started = Instant::now();
    let mut i = 0usize;
    // Values incr takes, so the live servers the keys move to answer every request.
    while started.elapsed() < Duration::from_millis(3200) {
        i += 1;
        let k = keys[i % keys.len()].as_bytes();
        let (op, result): (&str, Result<(), Error>) = match i % 11 {
            0 => ("get", t.get(k).map(|_| ())),
            1 => ("set", t.store(&Store::set(k, b"1", 0, 0)).map(|_| ())),
            2 => (
                "add",
                t.store(&Store::set(k, b"1", 0, 0).with_mode(StoreMode::Add))
                    .map(|_| ()),
            ),
            3 => (
                "cas",
                t.store(&Store::set(k, b"1", 0, 0).with_mode(StoreMode::Cas(7)))
                    .map(|_| ()),
            ),
            4 => (
                "append",
                t.store(&Store::set(k, b"1", 0, 0).with_mode(StoreMode::Append))
                    .map(|_| ()),
            ),
            5 => ("touch", t.touch(k, 60).map(|_| ())),
            6 => ("incr", t.incr(k, 1).map(|_| ())),
            7 => ("delete", t.delete(k).map(|_| ())),
            8 => ("get_many", t.get_many(&[k]).map(|_| ())),
            9 => (
                "store_many",
                t.store_many(&[Store::set(k, b"1", 0, 0)]).map(|_| ()),
            ),
            _ => ("delete_many", t.delete_many(&[k]).map(|_| ())),
        };
        check(op, result);
        // First, a new handle every few requests, each meeting the ejection; then one
        // handle kept past retry_timeout, which puts the server back on its ring.
        if started.elapsed() < Duration::from_millis(800) {
            if i % 3 == 0 {
                t.close();
            }
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for kind in ["ok", "Connect", "ServerDown"] {
        assert!(seen.contains_key(kind), "no {kind} in {seen:?}");
    }
}
