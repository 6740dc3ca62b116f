//! Failover in the text transport, on real memcached processes: a server that hangs or dies
//! fails fast instead of costing a timeout per request, the rest of the cluster keeps
//! serving, ejection moves a dead server's keys on a ketama ring, and a server that comes
//! back is used again.

use std::time::{Duration, Instant};

use newcache_testkit::Memcached;
use newcache_transport::{Error, Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport};

fn cluster(n: usize) -> Vec<Memcached> {
    (0..n).map(|_| Memcached::start()).collect()
}

fn transport(servers: &[Memcached], behaviors: &[(&str, &str)]) -> TextTransport {
    let mut config = TextConfig {
        servers: servers.iter().map(Memcached::addr).collect(),
        read_timeout: Duration::from_millis(800),
        write_timeout: Duration::from_millis(800),
        ..TextConfig::default()
    };
    for (name, value) in behaviors {
        config
            .set_behavior(name, value)
            .unwrap_or_else(|e| panic!("{name}={value}: {e}"));
    }
    TextTransport::new(config).expect("transport")
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("failover:{i}").into_bytes())
        .collect()
}

fn set(t: &TextTransport, key: &[u8]) -> Result<(), Error> {
    t.store(&Store::set(key, b"v", 0, 300)).map(|_| ())
}

#[test]
fn a_hung_server_costs_one_timeout_per_retry_window_and_the_others_never_fail() {
    let mut servers = cluster(3);
    // Modula, libmemcached's default: a down server's keys are not moved, they fail fast.
    let t = transport(&servers, &[("retry_timeout", "1")]);
    let keys = keys(300);
    for k in &keys {
        set(&t, k).expect("healthy cluster");
    }
    let home: Vec<usize> = keys.iter().map(|k| t.server_for_key(k).unwrap()).collect();
    assert!((0..3).all(|s| home.contains(&s)));

    servers[1].pause();
    let started = Instant::now();
    let (mut timeouts, mut fast_failures, mut slowest_fast) = (0, 0, Duration::ZERO);
    while started.elapsed() < Duration::from_millis(2500) {
        for (k, &h) in keys.iter().zip(&home) {
            let begun = Instant::now();
            let got = t.get(k);
            let took = begun.elapsed();
            if h == 1 {
                match got {
                    Err(Error::Timeout { .. }) => timeouts += 1,
                    Err(Error::ServerDown { ref server, .. }) => {
                        assert_eq!(server, &servers[1].addr());
                        fast_failures += 1;
                        slowest_fast = slowest_fast.max(took);
                    }
                    other => panic!("key on the hung server: {other:?}"),
                }
            } else {
                assert!(
                    got.expect("keys on live servers never fail").is_some(),
                    "a live server lost a key"
                );
            }
        }
        // A multi-get over the whole cluster answers for the live servers.
        let all: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let found = t.get_many(&all).expect("get_many with one server down");
        for ((item, &h), k) in found.iter().zip(&home).zip(&keys) {
            assert_eq!(item.is_some(), h != 1, "{}", String::from_utf8_lossy(k));
        }
    }
    // 2.5 s with a 1 s retry window: the hung server was tried about three times, not once
    // per request, and every other request for it failed at once.
    assert!((1..=4).contains(&timeouts), "{timeouts} timeouts");
    assert!(fast_failures > 100, "{fast_failures} fast failures");
    assert!(
        slowest_fast < Duration::from_millis(50),
        "a fast failure took {slowest_fast:?}"
    );

    servers[1].resume();
    std::thread::sleep(Duration::from_millis(1100));
    let first_on_1 = keys.iter().zip(&home).find(|(_, &h)| h == 1).unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match t.get(first_on_1) {
            Ok(Some(_)) => break,
            // The frozen connection's late replies were dropped with it; a fresh one works.
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_server_failure(), "{e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("the resumed server is not used again: {other:?}"),
        }
    }
}

#[test]
fn ketama_with_remove_failed_moves_a_dead_servers_keys_and_takes_it_back_after_restart() {
    let mut servers = cluster(3);
    let t = transport(
        &servers,
        &[
            ("ketama", "true"),
            ("remove_failed", "1"),
            ("failure_limit", "2"),
            ("retry_timeout", "1"),
            ("dead_timeout", "2"),
        ],
    );
    let keys = keys(600);
    let home: Vec<usize> = keys.iter().map(|k| t.server_for_key(k).unwrap()).collect();
    assert!((0..3).all(|s| home.contains(&s)));
    let killed_at = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            // Mid-load: reads and writes run before, during and after the kill.
            let started = Instant::now();
            let mut failures: Vec<(Instant, Error)> = Vec::new();
            while started.elapsed() < Duration::from_millis(2500) {
                for (k, &h) in keys.iter().zip(&home) {
                    match set(&t, k).and_then(|()| t.get(k).map(|_| ())) {
                        Ok(()) => {}
                        Err(e) if h == 1 => {
                            assert!(e.is_server_failure(), "{e}");
                            failures.push((Instant::now(), e));
                        }
                        Err(e) => panic!("a key on a live server failed: {e}"),
                    }
                }
            }
            failures
        });
        std::thread::sleep(Duration::from_millis(300));
        servers[1].kill();
        let killed_at = Instant::now();
        let failures = load.join().expect("load thread");
        // Two real failures (failure_limit) and fast ServerDown answers in between: libmemcached
        // counts only real attempts, one per retry_timeout, so ejection comes after
        // (failure_limit - 1) x retry_timeout = 1 s. After that, nothing fails.
        let real = failures
            .iter()
            .filter(|(_, e)| !matches!(e, Error::ServerDown { .. }))
            .count();
        assert!(
            (2..=4).contains(&real),
            "{real} real failures: {failures:?}"
        );
        let last = failures.last().expect("the kill was noticed").0;
        assert!(
            last.duration_since(killed_at) < Duration::from_millis(1500),
            "failures went on for {:?} after the kill",
            last.duration_since(killed_at)
        );
        killed_at
    });
    assert!(killed_at.elapsed() > Duration::from_secs(2));
    // Ejected: its keys now live on the other two, readable and writable.
    for (k, &h) in keys.iter().zip(&home) {
        let now = t.server_for_key(k).unwrap();
        assert_ne!(now, 1);
        if h != 1 {
            assert_eq!(now, h, "keys of live servers stay put");
        }
        set(&t, k).unwrap();
        assert!(t.get(k).unwrap().is_some());
    }

    servers[1].restart();
    std::thread::sleep(Duration::from_millis(2100));
    let (on_1, _) = keys.iter().zip(&home).find(|(_, &h)| h == 1).unwrap();
    // After dead_timeout the ring takes the server back and the next request uses it.
    set(&t, on_1).expect("the restarted server takes writes");
    assert_eq!(t.server_for_key(on_1).unwrap(), 1);
    let raw = servers[1].raw(
        &format!("get {}\r\n", String::from_utf8_lossy(on_1)),
        b"END\r\n",
    );
    assert!(
        raw.starts_with(b"VALUE "),
        "the value went to the restarted server"
    );
}

#[test]
fn without_remove_failed_a_dead_servers_keys_fail_fast_with_a_typed_error() {
    let mut servers = cluster(2);
    // A ring, but no ejection: the keys stay on the dead server and fail fast.
    let t = transport(&servers, &[("ketama", "true"), ("retry_timeout", "5")]);
    let keys = keys(100);
    let on_0 = keys
        .iter()
        .find(|k| t.server_for_key(k).unwrap() == 0)
        .unwrap();
    let on_1 = keys
        .iter()
        .find(|k| t.server_for_key(k).unwrap() == 1)
        .unwrap();
    set(&t, on_0).unwrap();
    servers[0].kill();
    assert!(
        matches!(set(&t, on_0), Err(Error::Io { .. } | Error::Connect { .. })),
        "the first failure is the real one"
    );
    for _ in 0..50 {
        let begun = Instant::now();
        match t.get(on_0) {
            Err(Error::ServerDown { server, retry_in }) => {
                assert_eq!(server, servers[0].addr());
                assert!(retry_in <= Duration::from_secs(5));
            }
            other => panic!("expected ServerDown, got {other:?}"),
        }
        assert!(begun.elapsed() < Duration::from_millis(20));
        set(&t, on_1).expect("the live server is untouched");
    }
    assert_eq!(t.server_for_key(on_0).unwrap(), 0, "not ejected");
}
