//! What the text transport does when a server fails: down, hung, answering garbage, or
//! refusing a value. A connection that saw an error is never reused half-read.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use newcache_testkit::Memcached;
use newcache_transport::{Error, Store, Transport};
use newcache_transport_text::{Failover, TextConfig, TextTransport};

fn transport(servers: Vec<String>) -> TextTransport {
    TextTransport::new(TextConfig {
        servers,
        connect_timeout: Duration::from_millis(200),
        read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        ..TextConfig::default()
    })
    .unwrap()
}

/// A fake server on loopback that answers every request with `reply` (or never, when
/// `None`) and counts the connections it accepted.
fn fake_server(reply: Option<&'static [u8]>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if let Some(reply) = reply {
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[test]
fn a_hung_server_times_out_within_the_read_timeout() {
    let (addr, _) = fake_server(None);
    let t = transport(vec![addr]);
    let started = Instant::now();
    let err = t.get(b"k").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1000),
        "{took:?}"
    );
}

#[test]
fn a_server_trickling_a_reply_is_bounded_by_the_read_timeout_as_a_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            // A value header promising 100 bytes, then one byte every 100 ms.
            let _ = s.write_all(b"VALUE k 0 100 1\r\n");
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(100));
                if s.write_all(b"x").is_err() {
                    return;
                }
            }
        }
    });
    let t = transport(vec![addr]);
    let started = Instant::now();
    let err = t.get(b"k").unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn garbage_is_a_protocol_error_and_the_connection_is_not_reused() {
    let (addr, accepted) = fake_server(Some(b"HELLO THERE\r\n"));
    let t = transport(vec![addr]);
    for _ in 0..3 {
        let err = t.get(b"k").unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert!(err.is_connection_error());
    }
    // Every request needed a fresh connection: none went back to the pool.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_good_reply_keeps_the_connection_for_the_next_request() {
    let (addr, accepted) = fake_server(Some(b"END\r\n"));
    let t = transport(vec![addr]);
    for _ in 0..5 {
        assert_eq!(t.get(b"k").unwrap(), None);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn the_only_server_is_tried_every_time_and_used_again_once_it_is_back() {
    // One server: there is nowhere else to send its keys, so however often it fails, every
    // request tries it (a refused connect costs microseconds, not the retry window), and the
    // first request after it comes back succeeds.
    let mut server = Memcached::start();
    let t = TextTransport::new(TextConfig {
        servers: vec![server.addr()],
        connect_timeout: Duration::from_millis(200),
        failover: Failover {
            retry_timeout: Duration::from_secs(30),
            failure_limit: 1,
            ..Failover::default()
        },
        ..TextConfig::default()
    })
    .unwrap();
    t.store(&Store::set(b"k", b"v", 0, 0)).unwrap();
    server.kill();
    for _ in 0..10 {
        let err = t.get(b"k").unwrap_err();
        assert!(err.is_connection_error(), "tried, not failed fast: {err}");
    }
    server.restart();
    assert_eq!(t.get(b"k").unwrap(), None);
    t.store(&Store::set(b"k", b"v2", 0, 0)).unwrap();
    assert_eq!(t.get(b"k").unwrap().unwrap().value, b"v2");
}

#[test]
fn a_down_server_of_two_fails_fast_and_a_restarted_one_is_used_again() {
    let mut down = Memcached::start();
    let other = Memcached::start();
    let t = TextTransport::new(TextConfig {
        servers: vec![down.addr(), other.addr()],
        connect_timeout: Duration::from_millis(200),
        failover: Failover {
            retry_timeout: Duration::from_millis(300),
            failure_limit: 1,
            ..Failover::default()
        },
        ..TextConfig::default()
    })
    .unwrap();
    let k = (0..1000)
        .map(|i| format!("k{i}").into_bytes())
        .find(|k| t.server_for_key(k).unwrap() == 0)
        .unwrap();
    t.store(&Store::set(&k, b"v", 0, 0)).unwrap();
    down.kill();
    let started = Instant::now();
    let first = t.get(&k).unwrap_err();
    assert!(
        first.is_connection_error(),
        "the first failure is the connection's: {first}"
    );
    for _ in 0..10 {
        // Then the server is left alone for retry_timeout: no connect per request.
        let err = t.get(&k).unwrap_err();
        assert!(matches!(err, Error::ServerDown { .. }), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    down.restart();
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(t.get(&k).unwrap(), None);
    t.store(&Store::set(&k, b"v2", 0, 0)).unwrap();
    assert_eq!(t.get(&k).unwrap().unwrap().value, b"v2");
}

#[test]
fn a_value_the_server_refuses_as_too_large_is_a_typed_error() {
    // The server allows 1 MB items; the transport is told 4 MB, so the server refuses it.
    let server = Memcached::with_args(&["-I", "1m"]);
    let t = TextTransport::new(TextConfig {
        servers: vec![server.addr()],
        item_size_limit: 4 << 20,
        ..TextConfig::default()
    })
    .unwrap();
    let big = vec![b'x'; 2 << 20];
    let err = t.store(&Store::set(b"big", &big, 0, 0)).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    // memcached swallowed the data block: the connection is still in step.
    t.store(&Store::set(b"small", b"v", 0, 0)).unwrap();
    assert_eq!(t.get(b"small").unwrap().unwrap().value, b"v");
}

#[test]
fn every_key_lands_on_the_server_placement_names_and_get_many_finds_it() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let t = transport(servers.iter().map(Memcached::addr).collect());
    let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("key{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let stores: Vec<Store<'_>> = refs.iter().map(|k| Store::set(k, k, 0, 0)).collect();
    assert!(t.store_many(&stores).unwrap().iter().all(|s| s.is_stored()));
    let items = t.get_many(&refs).unwrap();
    assert!(items
        .iter()
        .zip(&refs)
        .all(|(i, k)| i.as_ref().unwrap().value == *k));
    for s in &servers {
        assert!(
            s.stat("curr_items") > 5,
            "placement left a server nearly empty"
        );
    }
    for (i, k) in refs.iter().enumerate() {
        let home = &servers[t.server_for_key(k).unwrap()];
        let raw = home.raw(
            &format!("get {}\r\n", String::from_utf8_lossy(k)),
            b"END\r\n",
        );
        assert!(raw.starts_with(b"VALUE "), "key {i} not on its server");
    }
}

#[test]
fn a_connection_that_timed_out_is_dropped_so_its_late_reply_is_never_read_as_the_next_one() {
    let mut server = Memcached::start();
    let mut config = TextConfig {
        servers: vec![server.addr()],
        read_timeout: Duration::from_millis(300),
        ..TextConfig::default()
    };
    // Try the server again at once after the timeout (the default waits 2 s, as libmemcached).
    config.set_behavior("retry_timeout", "0").unwrap();
    let t = TextTransport::new(config).unwrap();
    t.store(&Store::set(b"a", b"value of a", 0, 0)).unwrap();
    t.store(&Store::set(b"b", b"value of b", 0, 0)).unwrap();
    let connections = |s: &Memcached| -> u64 {
        s.stats()
            .into_iter()
            .find(|(n, _)| n == "total_connections")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap()
    };
    let before = connections(&server);
    // The server hangs with the request for `a` in its socket...
    server.pause();
    let err = t.get(b"a").unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // ...and answers it once it is back: to a connection newcache no longer holds.
    server.resume();
    std::thread::sleep(Duration::from_millis(100));
    let b = t.get(b"b").unwrap().expect("b is stored");
    assert_eq!(
        b.value, b"value of b",
        "read a late reply meant for another request"
    );
    // A new connection served `b` (one more for each `stats` call, which opens its own).
    assert_eq!(connections(&server), before + 1 + 1);
}

#[test]
fn a_connection_that_got_an_error_reply_is_not_pooled() {
    let server = Memcached::start();
    let t = transport(vec![server.addr()]);
    t.store(&Store::set(b"word", b"not a number", 0, 0))
        .unwrap();
    t.store(&Store::set(b"n", b"1", 0, 0)).unwrap();
    let connections = || -> u64 {
        server
            .stats()
            .into_iter()
            .find(|(n, _)| n == "total_connections")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap()
    };
    let before = connections();
    // CLIENT_ERROR: memcached may still be reading what it refused, so the connection goes.
    let err = t.incr(b"word", 1).unwrap_err();
    assert!(matches!(err, Error::Client { .. }), "{err}");
    assert_eq!(t.incr(b"n", 1).unwrap(), Some(2));
    // The incr after the error needed a new connection (plus the `stats` call's own); the
    // one after a good reply reuses it.
    assert_eq!(t.incr(b"n", 1).unwrap(), Some(3));
    assert_eq!(connections(), before + 1 + 1);
}
