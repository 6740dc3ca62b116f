//! libmemcached 1.1.4 (the library under pylibmc) and the text transport side by side on the
//! same servers with the same behaviors: with `remove_failed`, a dead server's keys move when
//! libmemcached moves them, so a Rust service and a Python app sharing the cluster keep
//! finding each other's values through an outage.

use std::time::{Duration, Instant};

use newcache_testkit::Memcached;
use newcache_transport::{Error, Store, Transport};
use newcache_transport_binary::{Behaviors, BinaryConfig, BinaryTransport};
use newcache_transport_text::TextTransport;

use super::{cluster, keys, transport};

/// libmemcached with `behaviors` on `servers`, in text mode, with one handle: libmemcached
/// keeps failure records per handle, as one pylibmc client does.
fn libmemcached(servers: &[Memcached], behaviors: &[(&str, &str)]) -> BinaryTransport {
    let mut lm_behaviors = Behaviors::default();
    for (name, value) in behaviors {
        lm_behaviors
            .set(name, value)
            .expect("libmemcached behavior");
    }
    BinaryTransport::new(BinaryConfig {
        behaviors: lm_behaviors,
        binary_protocol: false,
        pool_size: 1,
        ..BinaryConfig::new(servers.iter().map(Memcached::addr))
    })
    .expect("libmemcached")
}

/// A key both transports place on server `server`.
fn key_on(
    keys: &[Vec<u8>],
    ours: &TextTransport,
    libmemcached: &BinaryTransport,
    server: usize,
) -> Vec<u8> {
    keys.iter()
        .find(|k| {
            ours.server_for_key(k).unwrap() == server
                && libmemcached.server_index_for_key(k).unwrap() == server
        })
        .expect("a key both place on the server")
        .clone()
}

/// Three servers, the text transport and libmemcached on them with the same behaviors, and
/// two keys both place alike: one on server 1 (to be killed), one on server 0.
struct SideBySide {
    servers: Vec<Memcached>,
    ours: TextTransport,
    libmemcached: BinaryTransport,
    dead_key: Vec<u8>,
    live_key: Vec<u8>,
}

impl SideBySide {
    fn new(behaviors: &[(&str, &str)]) -> SideBySide {
        let servers = cluster(3);
        let ours = transport(&servers, behaviors);
        let libmemcached = libmemcached(&servers, behaviors);
        let keys = keys(100);
        let dead_key = key_on(&keys, &ours, &libmemcached, 1);
        let live_key = key_on(&keys, &ours, &libmemcached, 0);
        SideBySide {
            servers,
            ours,
            libmemcached,
            dead_key,
            live_key,
        }
    }
}

/// A ketama ring with `remove_failed`, a `retry_timeout` of 1 s and the default
/// `failure_limit` (5): pylibmc's usual failover settings, with a short wait.
const REMOVE_FAILED: [(&str, &str); 3] = [
    ("ketama", "true"),
    ("remove_failed", "1"),
    ("retry_timeout", "1"),
];

/// The two transports, named.
fn both<'a>(
    ours: &'a TextTransport,
    libmemcached: &'a BinaryTransport,
) -> [(&'static str, &'a dyn Transport); 2] {
    [("text", ours), ("libmemcached", libmemcached)]
}

fn write(t: &dyn Transport, key: &[u8]) -> Result<(), Error> {
    t.store(&Store::set(key, b"v", 0, 300)).map(|_| ())
}

/// With `dead_timeout` 0 (libmemcached's default) an ejected server's keys go to the other
/// servers for about a `retry_timeout`, then back to it, failing fast for good: it is never
/// tried again, even after it restarted.
#[test]
fn with_dead_timeout_zero_an_ejected_server_is_never_tried_again_as_in_libmemcached() {
    let behaviors = [
        ("ketama", "true"),
        ("remove_failed", "1"),
        ("failure_limit", "2"),
        ("retry_timeout", "1"),
        ("dead_timeout", "0"),
    ];
    let SideBySide {
        mut servers,
        ours,
        libmemcached,
        dead_key,
        live_key,
    } = SideBySide::new(&behaviors);
    let both = both(&ours, &libmemcached);
    for (_, t) in both {
        write(t, &dead_key).unwrap();
        write(t, &live_key).unwrap();
    }

    servers[1].kill();
    // Each transport goes through: failing (twice for real, fast in between), writing to
    // another server (ejected), failing again (back on the ring, marked dead).
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Phase {
        Failing,
        Moved,
        MarkedDead,
    }
    let mut phases = [Phase::Failing; 2];
    let started = Instant::now();
    while phases != [Phase::MarkedDead; 2] {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{phases:?} after 20 s"
        );
        for (phase, (name, t)) in phases.iter_mut().zip(both) {
            let ok = write(t, &dead_key).is_ok();
            *phase = match (*phase, ok) {
                (Phase::Failing, true) | (Phase::Moved, true) => Phase::Moved,
                (Phase::Failing, false) => Phase::Failing,
                (Phase::Moved, false) | (Phase::MarkedDead, false) => Phase::MarkedDead,
                (Phase::MarkedDead, true) => panic!("{name}: the dead server's key came back"),
            };
            write(t, &live_key).unwrap_or_else(|e| panic!("{name}: a live server failed: {e}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    servers[1].restart();
    // Well past retry_timeout (libmemcached counts it in whole seconds): neither tries it.
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(3) {
        for (name, t) in both {
            // Both transports name it the same way: down for good.
            match write(t, &dead_key) {
                Err(Error::ServerDown { retry_in, .. }) => {
                    assert_eq!(retry_in, Duration::MAX, "{name}: never retried")
                }
                other => panic!("{name}: the ejected server was tried again: {other:?}"),
            }
            write(t, &live_key).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        servers[1].stat("cmd_set"),
        0,
        "nobody wrote to the restarted server"
    );
}

/// With `retry_timeout` 0 an ejected server stays on libmemcached's ring (its retry time is
/// now, which the ring counts as live), its keys failing: the text transport moved them for
/// up to a second, rounding the wait up to the wall clock's second (an outside audit: 127 to
/// 511 of 512 reads of a dead server's keys served by other servers, none by pylibmc).
#[test]
fn with_retry_timeout_zero_an_ejected_servers_keys_stay_where_libmemcached_keeps_them() {
    let behaviors = [
        ("ketama", "true"),
        ("remove_failed", "1"),
        ("failure_limit", "1"),
        ("retry_timeout", "0"),
        ("dead_timeout", "0"),
    ];
    let SideBySide {
        mut servers,
        ours,
        libmemcached,
        dead_key,
        live_key,
    } = SideBySide::new(&behaviors);
    let both = both(&ours, &libmemcached);
    servers[1].kill();
    let started = Instant::now();
    let mut tries = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        for (name, t) in both {
            assert!(
                write(t, &dead_key).is_err(),
                "{name}: the dead server's key was written elsewhere"
            );
            write(t, &live_key).unwrap_or_else(|e| panic!("{name}: a live server failed: {e}"));
        }
        tries += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tries > 20, "{tries}");
}

/// The default `failure_limit` (5) with `remove_failed`: a dead server is ejected (its keys
/// written to another server) when libmemcached ejects it, after five failures each waited
/// out for `retry_timeout` to the wall clock's second, not after five requests in a row.
/// Both see the failures at the same moments, so they eject within a second of each other.
#[test]
fn with_remove_failed_a_dead_server_is_ejected_when_libmemcached_ejects_it() {
    let SideBySide {
        mut servers,
        ours,
        libmemcached,
        dead_key,
        ..
    } = SideBySide::new(&REMOVE_FAILED);
    let both = both(&ours, &libmemcached);
    for (_, t) in both {
        write(t, &dead_key).unwrap();
    }
    servers[1].kill();
    let killed = Instant::now();
    // When each first wrote the dead server's key elsewhere.
    let mut moved: [Option<Duration>; 2] = [None; 2];
    while moved.iter().any(Option::is_none) {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "not both ejected in 30 s: {moved:?}"
        );
        for (when, (_, t)) in moved.iter_mut().zip(both) {
            if when.is_none() && write(t, &dead_key).is_ok() {
                *when = Some(killed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let [Some(text), Some(lm)] = moved else {
        unreachable!()
    };
    // Five failures, four waits of one to two seconds between them.
    assert!(
        text >= Duration::from_secs(4) && lm >= Duration::from_secs(4),
        "ejected before failure_limit waits: text {text:?}, libmemcached {lm:?}"
    );
    eprintln!("ejected after the kill: text {text:?}, libmemcached {lm:?}");
    let apart = text.abs_diff(lm);
    assert!(
        apart < Duration::from_secs(1),
        "text ejected at {text:?}, libmemcached at {lm:?}"
    );
}

/// A server back before `failure_limit` failures is never ejected by either: its keys stay
/// on it through the outage (failing fast between attempts) and are written to it again
/// once it answers.
#[test]
fn with_remove_failed_a_server_back_before_the_limit_keeps_its_keys_in_both() {
    let SideBySide {
        mut servers,
        ours,
        libmemcached,
        dead_key,
        ..
    } = SideBySide::new(&REMOVE_FAILED);
    let both = both(&ours, &libmemcached);
    servers[1].kill();
    // About two failures each (one to two seconds apart), well under five.
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_millis(2500) {
        for (name, t) in both {
            if write(t, &dead_key).is_ok() {
                panic!("{name}: the key was written elsewhere before failure_limit failures");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    servers[1].restart();
    let restarted = Instant::now();
    let mut back = [false; 2];
    while back != [true; 2] {
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "not both back on the restarted server: {back:?}"
        );
        for (is_back, (name, t)) in back.iter_mut().zip(both) {
            if !*is_back && write(t, &dead_key).is_ok() {
                *is_back = true;
                let raw = servers[1].raw(
                    &format!("get {}\r\n", String::from_utf8_lossy(&dead_key)),
                    b"END\r\n",
                );
                assert!(
                    raw.starts_with(b"VALUE "),
                    "{name}: the write went elsewhere"
                );
                servers[1].raw(
                    &format!("delete {}\r\n", String::from_utf8_lossy(&dead_key)),
                    b"\r\n",
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
