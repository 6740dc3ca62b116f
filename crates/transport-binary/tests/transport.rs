//! The libmemcached transport against real memcached servers, in binary and text mode.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, connect_with, holds};
use newcache_testkit::Memcached;
use newcache_transport::{Error, Store, StoreMode, StoreStatus, Transport};
use newcache_transport_binary::{BinaryConfig, BinaryTransport};

both_modes!(
    every_operation_works,
    get_many_spans_three_servers_in_the_order_of_the_keys,
    server_for_key_agrees_with_where_items_land,
    a_killed_server_gives_a_typed_error_promptly_and_recovers,
    a_killed_server_in_a_cluster_reads_as_misses_and_gets_the_rest_of_a_batch,
    a_silent_server_times_out,
    a_connect_that_times_out_reports_the_connect_timeout,
    error_messages_keep_libmemcacheds_text,
    a_value_over_the_servers_limit_is_value_too_large,
    many_threads_share_a_small_pool,
    invalid_keys_and_large_values_are_refused_before_libmemcached,
    a_multi_get_of_a_hundred_thousand_keys_is_answered,
    a_reply_timeout_after_an_old_failed_connect_is_no_connect_failure,
    a_server_that_fails_in_one_round_of_a_multi_get_is_not_asked_again,
);

/// A multi-get in rounds (past 32 KB of requests) over a live server and one whose
/// connects time out: the dead server costs the call one connect timeout, not one per
/// round, and a last round holding only its keys does not fail the call, whose live keys
/// are all answered (a review: 2,000 keys took 0.76 s at a 250 ms connect timeout, and a
/// last round of one dead key threw 885 hits away).
fn a_server_that_fails_in_one_round_of_a_multi_get_is_not_asked_again(binary: bool) {
    let live = Memcached::start();
    let hole = newcache_testkit::Blackhole::start();
    let t = connect_with(&[&live], binary, |c| {
        c.servers = vec![live.addr(), hole.addr()];
        c.behaviors.set("connect_timeout", "250").unwrap();
    });
    let home = |k: &[u8]| t.server_index_for_key(k).unwrap();
    // Keys of one length: 442 to a round of 32 KB (50 bytes and a 24-byte header each).
    let all: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("round-key-{i:040}").into_bytes())
        .collect();
    let (on_live, on_dead): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = all.iter().partition(|k| home(k) == 0);
    // Eight rounds of both servers' keys, then a last round of one dead key alone.
    let mut keys: Vec<&[u8]> = on_live
        .iter()
        .zip(&on_dead)
        .flat_map(|(a, b)| [a.as_slice(), b.as_slice()])
        .take(8 * 442)
        .collect();
    keys.push(on_dead[3000].as_slice());
    for key in &keys {
        if home(key) == 0 {
            set(&t, key, key, 0);
        }
    }
    let started = Instant::now();
    let read = t.get_many_read(&keys).expect("the live server answered");
    let took = started.elapsed();
    let hits = read.items.iter().filter(|i| i.is_some()).count();
    assert_eq!(hits, keys.iter().filter(|k| home(k) == 0).count());
    assert_eq!(read.unread.len(), keys.len() - hits);
    assert!(took < Duration::from_millis(600), "{took:?}");
    // Each unread key carries its own server's failure.
    for (_, e) in &read.unread {
        assert!(e.to_string().contains(&hole.addr()), "{e}");
    }
    // A caller told when the request is out is told once, though the last round, of the
    // dead server's key alone, sent nothing.
    let told = std::cell::Cell::new(0);
    let mut made = Told {
        keys: newcache_transport::Premade::new(&keys),
        told: &told,
    };
    t.get_many_made(&mut made, &mut |_, _, _| {}).unwrap();
    assert_eq!(told.get(), 1);
}

/// Premade keys that count [`MadeKeys::sent`].
struct Told<'k> {
    keys: newcache_transport::Premade<'k, &'k [u8]>,
    told: &'k std::cell::Cell<u32>,
}

impl newcache_transport::MadeKeys for Told<'_> {
    fn count(&self) -> usize {
        self.keys.count()
    }
    fn make(&mut self, i: usize) -> newcache_transport::Result<()> {
        self.keys.make(i)
    }
    fn key(&self, i: usize) -> Option<&[u8]> {
        self.keys.key(i)
    }
    fn sent(&self) {
        self.told.set(self.told.get() + 1);
    }
}

/// `Error::Connect` says nothing was sent, so a caller may send it again: a request that
/// went out and whose reply timed out must never be one. libmemcached keeps the server
/// whose connect failed last past later successes, and a connect refused earlier on the
/// handle made a later `incr`, which the server received, a connect timeout (a review).
/// Here the second `incr` connects slowly (the server's accept queue is full for 300 ms, so
/// the connect's SYN is sent again after a second) and then gets no reply: it outlasts the
/// poll timeout and, at 1.6 s, the connect timeout too.
fn a_reply_timeout_after_an_old_failed_connect_is_no_connect_failure(binary: bool) {
    let addr = {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let t = connect_with(&[], binary, |c| {
        c.servers = vec![addr.to_string()];
        c.behaviors.set("connect_timeout", "1500").unwrap();
        c.behaviors.set("_poll_timeout", "600").unwrap();
    });
    // Refused: libmemcached records the server as the one it disconnected last.
    assert!(matches!(t.incr(b"k", 1), Err(Error::Connect { .. })));
    let listener = TcpListener::bind(addr).unwrap();
    let mut queued = Vec::new();
    while queued.len() < 4096 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(stream) => queued.push(stream),
            Err(_) => break,
        }
    }
    let received = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&received);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        listener.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            held.push(stream);
        }
        drop(queued);
        listener.set_nonblocking(false).unwrap();
        // Read what comes and never answer.
        while let Ok((mut stream, _)) = listener.accept() {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = std::io::Read::read(&mut stream, &mut buf) {
                    seen.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
        drop(held);
    });
    let started = Instant::now();
    let e = t.incr(b"k", 1).unwrap_err();
    let took = started.elapsed();
    assert!(
        received.load(Ordering::Relaxed) > 0,
        "the request reached the server ({took:?}: {e:?})"
    );
    assert!(
        matches!(e, Error::Timeout { .. }),
        "a request that was sent, after {took:?}: {e:?}"
    );
}

/// libmemcached writes a whole multi-get's requests before it reads a reply, and memcached
/// stops reading while its replies wait: a `get_many` of 70,000 hits over the binary
/// protocol never returned (an outside audit; this test timed out in text mode). It goes out
/// in rounds now, and 100,000 keys of a cache's length (51 bytes) are answered, in the
/// order asked.
fn a_multi_get_of_a_hundred_thousand_keys_is_answered(binary: bool) {
    let m = Memcached::start();
    let t = Arc::new(connect(&[&m], binary));
    let keys: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("newcache-1-{i:040}").into_bytes())
        .collect();
    for chunk in keys.chunks(1000) {
        let stores: Vec<Store> = chunk.iter().map(|k| Store::set(k, k, 0, 0)).collect();
        t.store_many(&stores).unwrap();
    }
    // On a thread, so that a hang fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let (reader, asked) = (Arc::clone(&t), keys.clone());
    std::thread::spawn(move || {
        let refs: Vec<&[u8]> = asked.iter().map(Vec::as_slice).collect();
        let _ = tx.send(reader.get_many(&refs).map(|items| {
            items
                .iter()
                .zip(&refs)
                .filter(|(item, key)| item.as_ref().is_some_and(|i| i.value == **key))
                .count()
        }));
    });
    let answered = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the multi-get returned within 60 s");
    assert_eq!(answered.unwrap(), keys.len());
}

fn set(t: &BinaryTransport, key: &[u8], value: &[u8], flags: u32) {
    let status = t
        .store(&Store::set(key, value, flags, 0))
        .unwrap_or_else(|e| panic!("set {key:?}: {e}"));
    assert_eq!(status, StoreStatus::Stored);
}

fn store(t: &BinaryTransport, mode: StoreMode, key: &[u8], value: &[u8]) -> StoreStatus {
    t.store(&Store::set(key, value, 0, 0).with_mode(mode))
        .unwrap_or_else(|e| panic!("{} {key:?}: {e}", mode.command()))
}

fn value(t: &BinaryTransport, key: &[u8]) -> Option<Vec<u8>> {
    t.get(key)
        .unwrap_or_else(|e| panic!("get {key:?}: {e}"))
        .map(|i| i.value)
}

fn every_operation_works(binary: bool) {
    let m = Memcached::start();
    let t = connect(&[&m], binary);
    assert_eq!(
        t.name(),
        if binary {
            "libmemcached-binary"
        } else {
            "libmemcached-text"
        }
    );

    // get / set, flags, CAS
    assert_eq!(t.get(b"k").unwrap(), None);
    set(&t, b"k", b"v\r\n\0", 42);
    let item = t.get(b"k").unwrap().expect("hit");
    assert_eq!((item.value.as_slice(), item.flags), (&b"v\r\n\0"[..], 42));
    let cas = item.cas.expect("a CAS unique");
    set(&t, b"empty", b"", 1);
    assert_eq!(value(&t, b"empty"), Some(Vec::new()));

    // add / replace / append / prepend / cas
    assert_eq!(
        store(&t, StoreMode::Add, b"k", b"x"),
        StoreStatus::NotStored
    );
    assert_eq!(store(&t, StoreMode::Add, b"new", b"n"), StoreStatus::Stored);
    assert_eq!(
        store(&t, StoreMode::Replace, b"nope", b"x"),
        StoreStatus::NotStored
    );
    assert_eq!(
        store(&t, StoreMode::Replace, b"new", b"m"),
        StoreStatus::Stored
    );
    assert_eq!(
        store(&t, StoreMode::Append, b"new", b">"),
        StoreStatus::Stored
    );
    assert_eq!(
        store(&t, StoreMode::Prepend, b"new", b"<"),
        StoreStatus::Stored
    );
    assert_eq!(
        store(&t, StoreMode::Append, b"nope", b"x"),
        StoreStatus::NotStored
    );
    assert_eq!(
        store(&t, StoreMode::Prepend, b"nope", b"x"),
        StoreStatus::NotStored
    );
    assert_eq!(value(&t, b"new"), Some(b"<m>".to_vec()));
    assert_eq!(
        store(&t, StoreMode::Cas(cas), b"k", b"c1"),
        StoreStatus::Stored
    );
    assert_eq!(
        store(&t, StoreMode::Cas(cas), b"k", b"c2"),
        StoreStatus::Exists
    );
    assert_eq!(
        store(&t, StoreMode::Cas(cas), b"nope", b"c"),
        StoreStatus::NotFound
    );
    assert_eq!(value(&t, b"k"), Some(b"c1".to_vec()));

    // incr / decr with 64-bit deltas
    set(&t, b"n", b"10", 0);
    assert_eq!(t.incr(b"n", 5).unwrap(), Some(15));
    assert_eq!(t.incr(b"n", u64::MAX).unwrap(), Some(14));
    assert_eq!(t.decr(b"n", 100).unwrap(), Some(0));
    assert_eq!(t.incr(b"missing", 1).unwrap(), None);
    assert_eq!(t.decr(b"missing", 1).unwrap(), None);
    match t.incr(b"k", 1) {
        Err(Error::Client { message, .. }) => assert!(message.contains("non-numeric"), "{message}"),
        other => panic!("incr of a non-numeric value: {other:?}"),
    }
    assert_eq!(
        t.incr(b"n", 2).unwrap(),
        Some(2),
        "the transport stays usable"
    );
    // A counter that reaches u64::MAX says so (libmemcached's binary incr leaves that
    // number when the reply it read had no value, which the transport checks).
    set(&t, b"top", b"18446744073709551614", 0);
    assert_eq!(t.incr(b"top", 1).unwrap(), Some(u64::MAX));
    assert_eq!(t.incr(b"top", 1).unwrap(), Some(0));

    // touch / delete
    assert!(t.touch(b"k", 3600).unwrap());
    assert!(!t.touch(b"missing", 3600).unwrap());
    assert!(t.delete(b"k").unwrap());
    assert!(!t.delete(b"k").unwrap());

    // batches
    let statuses = t
        .store_many(&[
            Store::set(b"a", b"1", 1, 0),
            Store::set(b"a", b"2", 2, 0).with_mode(StoreMode::Add),
            Store::set(b"b", b"3", 3, 0),
        ])
        .unwrap();
    assert_eq!(
        statuses,
        [
            StoreStatus::Stored,
            StoreStatus::NotStored,
            StoreStatus::Stored
        ]
    );
    let got = t.get_many(&[b"b", b"zzz", b"a", b"b"]).unwrap();
    let got: Vec<Option<(Vec<u8>, u32)>> = got
        .into_iter()
        .map(|i| i.map(|i| (i.value, i.flags)))
        .collect();
    assert_eq!(
        got,
        [
            Some((b"3".to_vec(), 3)),
            None,
            Some((b"1".to_vec(), 1)),
            Some((b"3".to_vec(), 3))
        ]
    );
    assert_eq!(
        t.delete_many(&[b"a", b"zzz", b"b"]).unwrap(),
        [true, false, true]
    );
    assert_eq!(t.get_many(&[]).unwrap(), []);

    // stats / flush_all
    let stats = t.stats().unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].server, m.addr());
    assert!(stats[0].stats.contains_key("curr_items"), "{stats:?}");
    assert!(stats[0].stats.len() > 40, "every statistic: {stats:?}");
    assert_eq!(
        stats[0]
            .stats
            .get("pid")
            .map(String::as_str)
            .map(str::is_empty),
        Some(false)
    );
    t.flush_all().unwrap();
    assert_eq!(value(&t, b"new"), None);
    assert!(!holds(&m, "empty"), "flush_all left an item on the server");
}

fn three_servers() -> Vec<Memcached> {
    (0..3).map(|_| Memcached::start()).collect()
}

fn get_many_spans_three_servers_in_the_order_of_the_keys(binary: bool) {
    let servers = three_servers();
    let refs: Vec<&Memcached> = servers.iter().collect();
    let t = connect(&refs, binary);
    let keys: Vec<String> = (0..60).map(|i| format!("spread:{i}")).collect();
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 4 != 3) {
        set(&t, k.as_bytes(), format!("value {i}").as_bytes(), i as u32);
    }
    let used: BTreeSet<usize> = keys
        .iter()
        .map(|k| t.server_index_for_key(k.as_bytes()).unwrap())
        .collect();
    assert_eq!(used.len(), 3, "the keys do not span all three servers");
    for s in &servers {
        assert!(s.stat("curr_items") > 0, "server {} got no item", s.addr());
    }

    let mut asked: Vec<&[u8]> = keys.iter().rev().map(|k| k.as_bytes()).collect();
    asked.insert(5, b"never-stored");
    asked.push(keys[0].as_bytes());
    let got = t.get_many(&asked).unwrap();
    assert_eq!(got.len(), asked.len());
    for (k, item) in asked.iter().zip(&got) {
        let i = keys.iter().position(|x| x.as_bytes() == *k);
        match (i.filter(|i| i % 4 != 3), item) {
            (Some(i), Some(item)) => {
                assert_eq!(item.value, format!("value {i}").into_bytes());
                assert_eq!(item.flags, i as u32);
                assert!(item.cas.is_some());
            }
            (None, None) => {}
            (i, item) => panic!(
                "{:?}: expected index {i:?}, got {item:?}",
                String::from_utf8_lossy(k)
            ),
        }
    }
    // One multi-get: each server saw one get command (plus the sets above).
    let before: Vec<u64> = servers.iter().map(|s| s.stat("cmd_get")).collect();
    t.get_many(&asked).unwrap();
    let after: Vec<u64> = servers.iter().map(|s| s.stat("cmd_get")).collect();
    let keys_per_server: Vec<u64> = (0..3)
        .map(|s| {
            let distinct: BTreeSet<&&[u8]> = asked
                .iter()
                .filter(|k| t.server_index_for_key(k).unwrap() == s)
                .collect();
            distinct.len() as u64
        })
        .collect();
    let deltas: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        deltas, keys_per_server,
        "cmd_get counts keys, one request per server"
    );

    let stats = t.stats().unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.server.as_str()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    assert_eq!(names, addrs);
    t.flush_all().unwrap();
    assert!(t.get_many(&asked).unwrap().iter().all(Option::is_none));
}

fn server_for_key_agrees_with_where_items_land(binary: bool) {
    let servers = three_servers();
    // (what, behaviors, weights, whether 60 similar keys must reach every server)
    type Config<'a> = (&'a str, Vec<(&'a str, &'a str)>, [u32; 3], bool);
    let configs: Vec<Config> = vec![
        ("modula (default)", vec![], [1, 1, 1], true),
        ("ketama", vec![("ketama", "1")], [1, 1, 1], true),
        (
            "consistent ketama + md5",
            vec![("distribution", "consistent ketama"), ("hash", "md5")],
            [1, 1, 1],
            true,
        ),
        (
            "ketama_weighted",
            vec![("ketama_weighted", "1")],
            [1, 3, 1],
            true,
        ),
        ("modula + crc", vec![("hash", "crc")], [1, 1, 1], true),
        // FNV-1a 32 of keys that differ in their last bytes clusters on the ring, so
        // all 60 may land on one server; the placement is still checked key by key.
        (
            "consistent ketama spy + fnv1a_32",
            vec![
                ("distribution", "consistent_ketama_spy"),
                ("hash", "fnv1a_32"),
            ],
            [1, 1, 1],
            false,
        ),
    ];
    for (what, behaviors, weights, spread) in configs {
        let mut config = BinaryConfig::new(
            servers
                .iter()
                .zip(weights)
                .map(|(s, w)| format!("{}:{w}", s.addr())),
        );
        config.binary_protocol = binary;
        config.behaviors.set_all(behaviors.iter().copied()).unwrap();
        let t = BinaryTransport::new(config).unwrap();
        let mut per_server = [0usize; 3];
        for i in 0..60 {
            let key = format!("placed:{i}");
            set(&t, key.as_bytes(), b"v", 0);
            let (host, port) = t.server_for_key(key.as_bytes()).unwrap();
            let index = t.server_index_for_key(key.as_bytes()).unwrap();
            assert_eq!((host.as_str(), port), ("127.0.0.1", servers[index].port()));
            let holders: Vec<usize> = (0..3).filter(|&s| holds(&servers[s], &key)).collect();
            assert_eq!(holders, [index], "{what}: {key} landed elsewhere");
            per_server[index] += 1;
        }
        // A sanity check of the spread only; the placement itself was checked above.
        assert!(
            !spread || per_server.iter().all(|&n| n > 0),
            "{what}: a server got none of 60 keys: {per_server:?}"
        );
        t.flush_all().unwrap();
    }
}

fn a_killed_server_gives_a_typed_error_promptly_and_recovers(binary: bool) {
    let mut m = Memcached::start();
    let t = connect(&[&m], binary);
    set(&t, b"k", b"v", 0);
    m.kill();
    let started = Instant::now();
    let errors = [
        t.get(b"k").unwrap_err(),
        t.store(&Store::set(b"k", b"w", 0, 0)).unwrap_err(),
        t.delete(b"k").unwrap_err(),
        t.incr(b"n", 1).unwrap_err(),
        t.touch(b"k", 1).unwrap_err(),
        t.get_many(&[b"k", b"l"]).unwrap_err(),
        t.flush_all().unwrap_err(),
        t.stats().unwrap_err(),
    ];
    let took = started.elapsed();
    for e in &errors {
        assert!(
            e.is_connection_error(),
            "expected a connection error, got {e:?}"
        );
        assert!(e.to_string().contains(&m.addr()), "{e}");
    }
    assert!(took < Duration::from_secs(1), "8 failures took {took:?}");

    // The only server is tried on every request: used again as soon as it is back.
    m.restart();
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match t.store(&Store::set(b"k", b"again", 0, 0)) {
            Ok(StoreStatus::Stored) => break,
            Ok(other) => panic!("{other:?}"),
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_connection_error(), "{e:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the transport did not recover: {e}"),
        }
    }
    assert_eq!(value(&t, b"k"), Some(b"again".to_vec()));
}

/// As in the text transport: a down server's keys read as misses in `get_many` while the
/// others' values come back; `set_many` and `delete_many` send every other server its
/// share and fail with the down server's error (the real one, then `ServerDown` once it is
/// left alone after `failure_limit` failures); nothing is asked of a server left alone.
fn a_killed_server_in_a_cluster_reads_as_misses_and_gets_the_rest_of_a_batch(binary: bool) {
    let mut servers = three_servers();
    let t = {
        let refs: Vec<&Memcached> = servers.iter().collect();
        connect_with(&refs, binary, |c| {
            c.behaviors.set("failure_limit", "2").unwrap();
            c.behaviors.set("retry_timeout", "30").unwrap();
        })
    };
    let keys: Vec<String> = (0..30).map(|i| format!("c:{i}")).collect();
    for k in &keys {
        set(&t, k.as_bytes(), b"v", 0);
    }
    let home: Vec<usize> = keys
        .iter()
        .map(|k| t.server_index_for_key(k.as_bytes()).unwrap())
        .collect();
    assert!((0..3).all(|s| home.contains(&s)));
    servers[1].kill();
    let all: Vec<&[u8]> = keys.iter().map(String::as_bytes).collect();
    let dead = servers[1].addr();
    let mut failures = Vec::new();
    for round in 0..4 {
        let started = Instant::now();
        let found = t.get_many(&all).expect("get_many with one server down");
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "round {round}"
        );
        for (item, &h) in found.iter().zip(&home) {
            assert_eq!(item.is_some(), h != 1, "round {round}");
        }
        // A write batch: every live server's items are stored, the dead one's error is
        // the answer.
        let value = format!("round{round}");
        let stores: Vec<Store> = all
            .iter()
            .map(|k| Store::set(k, value.as_bytes(), 0, 0))
            .collect();
        let err = t.store_many(&stores).unwrap_err();
        assert!(err.is_server_failure(), "{err:?}");
        assert!(err.to_string().contains(&dead), "{err}");
        failures.push(err);
        let found = t.get_many(&all).unwrap();
        for (item, &h) in found.iter().zip(&home) {
            if h != 1 {
                assert_eq!(item.as_ref().unwrap().value, value.as_bytes());
            }
        }
    }
    // failure_limit 2: real failures first, then the server is left alone.
    assert!(
        failures.iter().any(|e| e.is_connection_error()),
        "{failures:?}"
    );
    assert!(
        matches!(failures.last(), Some(Error::ServerDown { server, retry_in })
            if *server == dead && *retry_in > Duration::from_secs(20)),
        "{failures:?}"
    );
    let on_dead = all.iter().zip(&home).find(|(_, &h)| h == 1).unwrap().0;
    assert!(matches!(t.get(on_dead), Err(Error::ServerDown { .. })));
    let err = t.delete_many(&all).unwrap_err();
    assert!(matches!(err, Error::ServerDown { .. }), "{err:?}");
    let found = t.get_many(&all).unwrap();
    assert!(
        found.iter().all(Option::is_none),
        "the live servers deleted their keys"
    );
}

fn a_silent_server_times_out(binary: bool) {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = connect_with(&[], binary, |c| {
        c.servers = vec![addr.clone()];
        c.behaviors.set("_poll_timeout", "300").unwrap();
    });
    let started = Instant::now();
    match t.get(b"k") {
        Err(Error::Timeout { server, after }) => {
            assert_eq!(
                (server.as_str(), after),
                (addr.as_str(), Duration::from_millis(300))
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(matches!(
        t.store(&Store::set(b"k", b"v", 0, 0)),
        Err(Error::Timeout { .. })
    ));
    drop(listener);
}

fn a_connect_that_times_out_reports_the_connect_timeout(binary: bool) {
    let hole = newcache_testkit::Blackhole::start();
    let addr = hole.addr();
    // (connect timeout, poll timeout): shorter than the poll timeout, the connect's expiry
    // is told by the time the call took; longer, by libmemcached marking the server as the
    // last one disconnected.
    for (connect, poll) in [(200, 1000), (300, 100)] {
        let t = connect_with(&[], binary, |c| {
            c.servers = vec![addr.clone()];
            c.behaviors
                .set("connect_timeout", &connect.to_string())
                .unwrap();
            c.behaviors.set("_poll_timeout", &poll.to_string()).unwrap();
        });
        let started = Instant::now();
        // A failure to connect, as the text transport reports it (nothing was sent), naming
        // the connect timeout.
        match t.get(b"k") {
            Err(Error::Connect { server, source }) => assert_eq!(
                (server.as_str(), source.kind(), source.to_string()),
                (
                    addr.as_str(),
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connecting timed out after {:?} (connect_timeout)",
                        Duration::from_millis(connect)
                    )
                ),
                "connect {connect} ms, poll {poll} ms"
            ),
            other => {
                panic!("connect {connect} ms, poll {poll} ms: expected a connect timeout, got {other:?}")
            }
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(connect - 50) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // The only server is never left alone: the next request tries it again.
        assert!(matches!(
            t.store(&Store::set(b"k", b"v", 0, 0)),
            Err(Error::Connect { .. })
        ));
    }
    // A server that accepts and never answers, with a connect timeout longer than the poll
    // timeout: the poll timeout expired.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let t = connect_with(&[], binary, |c| {
        c.servers = vec![silent_addr.clone()];
        c.behaviors.set("connect_timeout", "2000").unwrap();
        c.behaviors.set("_poll_timeout", "200").unwrap();
    });
    match t.get(b"k") {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// A memcached from before 1.4.8, which had no `touch`: answers every request line with
/// `ERROR`, memcached's reply to a command it does not know.
fn server_without_touch() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let reply: &[u8] = if line.starts_with("touch ") {
                        b"ERROR\r\n"
                    } else {
                        b"SERVER_ERROR this test server only knows it lacks touch\r\n"
                    };
                    if writer.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_server_without_touch_gives_unsupported_in_text_mode() {
    let addr = server_without_touch();
    let t = connect_with(&[], false, |c| c.servers = vec![addr.clone()]);
    for _ in 0..2 {
        match t.touch(b"k", 10) {
            Err(Error::Unsupported { server, command }) => {
                assert_eq!(
                    (server.as_str(), command.as_str()),
                    (addr.as_str(), "touch")
                )
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    // Other replies keep their own types: the connection stayed in step.
    match t.delete(b"k") {
        Err(Error::Server { message, .. }) => assert!(message.contains("lacks touch"), "{message}"),
        other => panic!("expected a SERVER_ERROR, got {other:?}"),
    }
}

fn error_messages_keep_libmemcacheds_text(binary: bool) {
    let mut m = Memcached::start();
    let t = connect(&[&m], binary);
    set(&t, b"word", b"abc", 0);
    let host = format!("host: {}", m.addr());
    match t.incr(b"word", 1).unwrap_err() {
        Error::Client { message, .. } => {
            assert!(message.contains("non-numeric"), "{message}");
            // libmemcached's own report, with its "host: ..." suffix.
            assert!(message.contains(&host), "{message}");
            if binary {
                assert!(message.contains("UNKNOWN READ FAILURE"), "{message}");
            }
        }
        other => panic!("{other:?}"),
    }
    m.kill();
    let err = t.store(&Store::set(b"k", b"v", 0, 0)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&host), "{text}");
    // Not the handle's address libmemcached starts its message with.
    assert!(!text.contains("(0x"), "{text}");
    assert!(
        text.contains("CONNECTION FAILURE") || text.contains("SYSTEM ERROR"),
        "{text}"
    );
    // The only server is tried again, and fails again the same way.
    let err = t.store(&Store::set(b"k", b"v", 0, 0)).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains("CONNECTION FAILURE") || err.to_string().contains("SYSTEM ERROR"),
        "{err}"
    );
    // A server's own failure in a call over every server (flush_all, stats) too.
    for err in [t.flush_all().unwrap_err(), t.stats().unwrap_err()] {
        let text = err.to_string();
        assert!(text.contains(&host) && !text.contains("(0x"), "{text}");
    }
}

fn a_value_over_the_servers_limit_is_value_too_large(binary: bool) {
    // The server's limit (512 KiB) is below the transport's (1 MiB): the server refuses.
    let m = Memcached::with_args(&["-I", "512k"]);
    let t = connect(&[&m], binary);
    let big = vec![b'x'; 600_000];
    // memcached unlinks the old item of a set it refuses as too large: no stale value.
    set(&t, b"big", b"old", 0);
    match t.store(&Store::set(b"big", &big, 0, 0)) {
        Err(Error::ValueTooLarge { size, limit }) => {
            assert_eq!(size, big.len());
            assert!(limit < size);
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    // The connection is still in step.
    set(&t, b"small", b"s", 0);
    assert_eq!(value(&t, b"small"), Some(b"s".to_vec()));
    assert_eq!(value(&t, b"big"), None);
}

fn many_threads_share_a_small_pool(binary: bool) {
    let servers = three_servers();
    let refs: Vec<&Memcached> = servers.iter().collect();
    let t = connect_with(&refs, binary, |c| {
        c.pool_size = 2;
        // What is tested is how 8 threads share 2 handles, not how fast a server answers:
        // under `cargo xtask leakcheck` valgrind runs all threads on one core, many times
        // slower, and a reply could take longer than the default 250 ms connect and 500 ms
        // poll timeouts. Generous timeouts keep every assertion below as strict as natively.
        c.behaviors.set("connect_timeout", "10000").unwrap();
        c.behaviors.set("_poll_timeout", "10000").unwrap();
    });
    let before: Vec<u64> = servers
        .iter()
        .map(|s| s.stat("total_connections"))
        .collect();
    std::thread::scope(|s| {
        for thread in 0..8 {
            let t = &t;
            s.spawn(move || {
                let counter = format!("t{thread}:n");
                set(t, counter.as_bytes(), b"0", 0);
                for i in 0..100u32 {
                    let key = format!("t{thread}:{i}");
                    let v = format!("{thread}/{i}").repeat(1 + (i as usize % 50));
                    set(t, key.as_bytes(), v.as_bytes(), i);
                    let item = t.get(key.as_bytes()).unwrap().expect("hit");
                    assert_eq!((item.value, item.flags), (v.into_bytes(), i));
                    assert_eq!(
                        t.incr(counter.as_bytes(), 1).unwrap(),
                        Some(u64::from(i) + 1)
                    );
                }
            });
        }
    });
    // At most two handles, so at most two connections per server (plus the second
    // statistics request's own).
    for (s, before) in servers.iter().zip(before) {
        let opened = s.stat("total_connections") - before;
        assert!(opened <= 3, "{opened} connections to {}", s.addr());
    }
}

fn invalid_keys_and_large_values_are_refused_before_libmemcached(binary: bool) {
    let m = Memcached::start();
    // An item of 1,060 bytes holds a value of 1,000 under the key `k` with flags 0 (the
    // item header is 59 bytes, the key 1).
    let t = connect_with(&[&m], binary, |c| c.item_size_limit = 1060);
    let before = (m.stat("cmd_get"), m.stat("cmd_set"));
    for bad in [&b"a b"[..], b"", b"\r\n", &[b'k'; 251]] {
        assert!(matches!(t.get(bad), Err(Error::InvalidKey { .. })));
        assert!(matches!(
            t.get_many(&[b"ok", bad]),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            t.store(&Store::set(bad, b"v", 0, 0)),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(t.delete(bad), Err(Error::InvalidKey { .. })));
        assert!(matches!(t.incr(bad, 1), Err(Error::InvalidKey { .. })));
        assert!(matches!(t.touch(bad, 1), Err(Error::InvalidKey { .. })));
        assert!(matches!(
            t.server_for_key(bad),
            Err(Error::InvalidKey { .. })
        ));
    }
    let big = vec![0u8; 1001];
    let add = Store::set(b"k", &big, 0, 0).with_mode(StoreMode::Add);
    assert!(matches!(
        t.store(&add),
        Err(Error::ValueTooLarge {
            size: 1001,
            limit: 1000
        })
    ));
    assert_eq!((m.stat("cmd_get"), m.stat("cmd_set")), before);
    // In a batch the value over the limit is refused by itself: the other request is
    // stored (one set reaches the server), the big one never is.
    assert!(matches!(
        t.store_many(&[Store::set(b"ok", b"v", 0, 0), Store::set(b"k", &big, 0, 0)]),
        Err(Error::ValueTooLarge {
            size: 1001,
            limit: 1000
        })
    ));
    assert_eq!(
        (m.stat("cmd_get"), m.stat("cmd_set")),
        (before.0, before.1 + 1)
    );
}

#[test]
fn new_is_lazy_and_checks_its_configuration() {
    // A port nobody listens on: new() does not connect.
    let port = newcache_testkit::free_port();
    let started = Instant::now();
    let t = BinaryTransport::new(BinaryConfig::new([format!("127.0.0.1:{port}")])).unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(t.get(b"k").unwrap_err().is_connection_error());

    assert!(matches!(
        BinaryTransport::new(BinaryConfig::default()),
        Err(Error::NoServers)
    ));
    let err = BinaryTransport::new(BinaryConfig::new(["127.0.0.1:notaport"])).unwrap_err();
    assert!(err.to_string().contains("notaport"), "{err}");
    let err = BinaryTransport::new(BinaryConfig {
        pool_size: 0,
        ..BinaryConfig::new(["127.0.0.1:11211"])
    })
    .unwrap_err();
    assert!(err.to_string().contains("pool_size"), "{err}");
    let err = BinaryTransport::new(BinaryConfig {
        binary_protocol: false,
        username: Some("u".into()),
        password: Some("p".into()),
        ..BinaryConfig::new(["127.0.0.1:11211"])
    })
    .unwrap_err();
    assert!(err.to_string().contains("binary protocol"), "{err}");
    let err = BinaryTransport::new(BinaryConfig {
        username: Some("u".into()),
        ..BinaryConfig::new(["127.0.0.1:11211"])
    })
    .unwrap_err();
    assert!(err.to_string().contains("both"), "{err}");
}

/// A server that answers every get with `CLIENT_ERROR bad data chunk` and nothing else.
/// libmemcached's text mode ends such a fetch as it ends a miss (`MEMCACHED_NOTFOUND`,
/// keeping the error only as the handle's last one): the get is `Error::Client`, where it
/// returned `Ok(None)`, in `get` and `get_many`, and the connection is closed.
#[test]
fn text_mode_a_client_error_to_a_get_is_an_error_not_a_miss() {
    let (addr, accepted) = scripted_server(|line, out| {
        if line.starts_with("get") {
            let _ = out.write_all(b"CLIENT_ERROR bad data chunk\r\n");
        }
        true
    });
    let t = connect_with(&[], false, |c| c.servers = vec![addr.clone()]);
    for round in 0..3 {
        match t.get(b"k") {
            Err(Error::Client { message, .. }) => assert!(message.contains("bad data chunk")),
            other => panic!("get {round}: {other:?}"),
        }
        let many = t.get_many(&[b"a", b"b"]);
        assert!(
            matches!(many, Err(Error::Client { .. })),
            "get_many {round}: {many:?}"
        );
    }
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "the connection that saw the error was closed and a new one opened"
    );
}

/// A server that closes the connection in the middle of a reply was reachable: the get is
/// an I/O error (as the text transport reports it), not "cannot connect ... is it running
/// and reachable?", which libmemcached's `CONNECTION_FAILURE` read as.
#[test]
fn text_mode_a_connection_closed_mid_reply_is_an_io_error() {
    let (addr, _) = scripted_server(|line, out| {
        if line.starts_with("get") {
            let _ = out.write_all(b"VALUE k 0 10\r\nhel");
        }
        // The connection closes with the value half sent.
        false
    });
    let t = connect_with(&[], false, |c| c.servers = vec![addr.clone()]);
    for round in 0..2 {
        match t.get(b"k") {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof, "{source}")
            }
            other => panic!("get {round}: {other:?}"),
        }
    }
}

/// A server that resets the connection after the request reached it (it closes with the
/// request unread, so the kernel answers with a reset) may have applied the request: an
/// `incr` then is an I/O error (`ConnectionReset`), as the text transport reports it, so a
/// caller does not retry it as never sent; it was `Error::Connect` ("cannot connect ... is
/// it running and reachable?"), which libmemcached's `CONNECTION_FAILURE` read as. Both modes.
#[test]
fn a_connection_reset_after_the_request_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            // Unread data at close: a reset, not an orderly end.
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(stream);
        }
    });
    for binary in [false, true] {
        let t = connect_with(&[], binary, |c| c.servers = vec![addr.clone()]);
        match t.incr(b"counter", 1) {
            Err(Error::Io { source, .. }) => assert_eq!(
                source.kind(),
                std::io::ErrorKind::ConnectionReset,
                "binary={binary}: {source}"
            ),
            other => panic!("binary={binary}: {other:?}"),
        }
    }
}

/// A listener on a free port whose connections each read request lines and hand them to
/// `answer` with the connection to write to; a connection closes once `answer` returns
/// false. Its address, and how many connections it accepted.
fn scripted_server(answer: fn(&str, &mut TcpStream) -> bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if !answer(&line, &mut out) {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// `buffer_requests` is refused, by name and set directly: libmemcached's buffered mode
/// never reads a store's answer, so an `add` of a taken key reported `Stored` with the old
/// value kept, and a `cas` with an out-of-date token reported success with nothing stored
/// (an outside audit). Off, both are what the server answered.
#[test]
fn buffer_requests_is_refused_as_no_store_result_could_be_known() {
    use newcache_transport_binary::{BehaviorError, Behaviors};
    let m = Memcached::start();
    for on in ["1", "true", "yes", "on", " TRUE "] {
        let mut b = Behaviors::default();
        let err = b.set("buffer_requests", on).unwrap_err();
        assert!(
            matches!(&err, BehaviorError::Unsupported { name, .. } if name == "buffer_requests"),
            "buffer_requests={on}: {err:?}"
        );
        let text = err.to_string();
        for needle in ["buffer_requests", "add", "cas", "stored", "leave it off"] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert!(b.is_empty(), "a refused value was kept: {b:?}");
    }
    let mut b = Behaviors::default();
    assert!(matches!(
        b.set("buffer_requests", "maybe"),
        Err(BehaviorError::BadValue { .. })
    ));
    b.set("buffer_requests", "0").unwrap();
    assert_eq!(b.buffer_requests, Some(false));

    for binary in [true, false] {
        // Set on the configuration directly (the field is public): refused by `new`.
        let mut c = BinaryConfig::new([m.addr()]);
        c.binary_protocol = binary;
        c.behaviors.buffer_requests = Some(true);
        match BinaryTransport::new(c) {
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("buffer_requests") && text.contains("leave it off"),
                    "{text}"
                );
            }
            Ok(t) => {
                set(&t, b"buffered", b"old", 0);
                let add = t.store(&Store::set(b"buffered", b"new", 0, 0).with_mode(StoreMode::Add));
                let cas = t.store(
                    &Store::set(b"buffered", b"cas", 0, 0).with_mode(StoreMode::Cas(u64::MAX - 1)),
                );
                panic!(
                    "binary {binary}: buffer_requests was accepted; add of a taken key: {add:?}, stale cas: {cas:?}, value now {:?}",
                    t.get(b"buffered").map(|i| i.map(|i| i.value))
                );
            }
        }
        // Off (explicitly): the server's answers.
        let t = connect_with(&[&m], binary, |c| c.behaviors.buffer_requests = Some(false));
        set(&t, b"unbuffered", b"old", 0);
        assert_eq!(
            store(&t, StoreMode::Add, b"unbuffered", b"new"),
            StoreStatus::NotStored
        );
        let stale = t.get(b"unbuffered").unwrap().unwrap().cas.unwrap();
        set(&t, b"unbuffered", b"newer", 0);
        assert_eq!(
            store(&t, StoreMode::Cas(stale), b"unbuffered", b"cas"),
            StoreStatus::Exists
        );
        assert_eq!(value(&t, b"unbuffered").as_deref(), Some(&b"newer"[..]));
    }
}
