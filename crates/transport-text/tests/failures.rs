//! What the text transport does when a server fails: down, hung, answering garbage, or
//! refusing a value. A connection that saw an error is never reused half-read.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use newcache_testkit::Memcached;
use newcache_transport::{Error, Store, Transport};
use newcache_transport_text::{Failover, Protocol, TextConfig, TextTransport};

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

/// A transport speaking the classic protocol, as the fake servers below do.
fn classic(servers: Vec<String>) -> TextTransport {
    TextTransport::new(TextConfig {
        servers,
        connect_timeout: Duration::from_millis(200),
        read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        protocol: Protocol::Classic,
        ..TextConfig::default()
    })
    .unwrap()
}

/// A fake server on loopback: each connection it accepts is counted and served by `serve`
/// on a thread of its own.
fn fake_server_serving(
    serve: impl Fn(TcpStream) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let serve = Arc::clone(&serve);
            std::thread::spawn(move || serve(stream));
        }
    });
    (addr, accepted)
}

/// Answers every read on `stream` with `reply` (or never, when `None`) until it closes.
fn answer_every_read(mut stream: TcpStream, reply: Option<&[u8]>) {
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
}

/// A fake server that never answers.
fn hung_server() -> (String, Arc<AtomicUsize>) {
    fake_server_serving(|stream| answer_every_read(stream, None))
}

#[test]
fn a_hung_server_times_out_within_the_read_timeout() {
    let (addr, _) = hung_server();
    let t = classic(vec![addr]);
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
    let t = classic(vec![addr]);
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
    let (addr, accepted) = fake_server_serving(|s| answer_every_read(s, Some(b"HELLO THERE\r\n")));
    let t = classic(vec![addr]);
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
    let (addr, accepted) = fake_server_serving(|s| answer_every_read(s, Some(b"END\r\n")));
    let t = classic(vec![addr]);
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

/// A fake server that reads request lines and answers each with what `answer` makes of it
/// (nothing for `None`), and counts the connections it accepted.
fn scripted_server(answer: fn(&str) -> Option<String>) -> (String, Arc<AtomicUsize>) {
    fake_server_serving(move |stream| {
        let mut out = stream.try_clone().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stream));
        while let Some(Ok(line)) = lines.next() {
            if let Some(reply) = answer(line.trim_end()) {
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    })
}

/// The `O<token>` and `k<key>`... of a meta request line: (command, key, token).
fn meta_request(line: &str) -> Option<(&str, &str, u32)> {
    let mut words = line.split(' ');
    let command = words.next()?;
    let key = words.next()?;
    let token = words.find_map(|w| w.strip_prefix('O'))?.parse().ok()?;
    Some((command, key, token))
}

#[test]
fn a_meta_reply_to_another_request_is_an_error_and_its_connection_is_closed() {
    // The probe is answered as memcached 1.6 does; every mg after it with the token of the
    // request before (a duplicate of an earlier reply).
    let (addr, accepted) = scripted_server(|line| {
        let (_, key, token) = meta_request(line)?;
        if key == "newcache:meta-probe" {
            return Some(format!("EN k{key} O{token}\r\n"));
        }
        Some(format!("EN k{key} O{}\r\n", token.wrapping_sub(1)))
    });
    let t = transport(vec![addr]);
    for _ in 0..3 {
        let err = t.get(b"k").unwrap_err();
        assert!(
            matches!(&err, Error::Protocol { detail, .. } if detail.contains("another request")),
            "{err}"
        );
    }
    assert_eq!(t.server_protocol(0), Some(Protocol::Meta));
    // A connection for each request: none went back to the pool.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_meta_reply_naming_another_key_fails_the_whole_pipelined_batch() {
    // The second reply of a batch names another key: the batch fails, and the requests
    // behind it on the connection are not read as answers.
    let (addr, accepted) = scripted_server(|line| {
        let (command, key, token) = meta_request(line)?;
        match (command, key) {
            (_, "newcache:meta-probe") => Some(format!("EN k{key} O{token}\r\n")),
            ("mg", "b") => Some(format!("VA 1 f0 c1 kz O{token}\r\nz\r\n")),
            ("mg", _) => Some(format!("VA 1 f0 c1 k{key} O{token}\r\n{key}\r\n")),
            _ => None,
        }
    });
    let t = transport(vec![addr]);
    let err = t.get_many(&[b"a", b"b", b"c"]).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    let item = t.get(b"a").unwrap().unwrap();
    assert_eq!(item.value, b"a");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the failed batch's connection was closed"
    );
}

#[test]
fn a_classic_value_of_a_key_not_asked_for_is_an_error_and_its_connection_is_closed() {
    let (addr, accepted) =
        fake_server_serving(|s| answer_every_read(s, Some(b"VALUE other 0 1\r\nx\r\nEND\r\n")));
    let t = classic(vec![addr]);
    for _ in 0..2 {
        let err = t.get(b"k").unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
    }
    let err = t.get_many(&[b"k", b"j"]).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// A server answering a `get` with `VALUE` blocks of the key asked, without end: the
/// block past one per key asked is an error at once, not values collected until the read
/// timeout (fast enough to never leave the socket idle for it).
#[test]
fn endless_value_blocks_fail_the_get_at_the_first_one_past_the_keys_asked() {
    let (addr, accepted) = fake_server_serving(|mut s| {
        let mut buf = [0u8; 4096];
        let Ok(n) = s.read(&mut buf) else { return };
        let keys: Vec<Vec<u8>> = buf[..n]
            .split(|b| *b == b' ' || *b == b'\r' || *b == b'\n')
            .skip(1)
            .filter(|k| !k.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let mut i = 0usize;
        loop {
            let key = &keys[i % keys.len()];
            let mut block = b"VALUE ".to_vec();
            block.extend_from_slice(key);
            block.extend_from_slice(b" 0 3\r\nabc\r\n");
            if s.write_all(&block).is_err() {
                return;
            }
            i += 1;
        }
    });
    let t = TextTransport::new(TextConfig {
        servers: vec![addr],
        read_timeout: Duration::from_secs(5),
        protocol: Protocol::Classic,
        ..TextConfig::default()
    })
    .unwrap();
    let began = Instant::now();
    let err = t.get(b"k").unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("more VALUE blocks"), "{err}");
    let err = t.get_many(&[b"k", b"j", b"i"]).unwrap_err();
    assert!(err.to_string().contains("more VALUE blocks"), "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "each connection was closed"
    );
}

#[test]
fn a_classic_connection_with_bytes_waiting_is_not_reused() {
    // Each reply comes twice, the copy 20 ms later, when the connection is idle in the pool.
    let (addr, accepted) = fake_server_serving(|mut stream| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(b"END\r\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
            let _ = stream.write_all(b"END\r\n");
        }
    });
    let t = classic(vec![addr]);
    for i in 1..=3 {
        assert_eq!(t.get(b"k").unwrap(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(accepted.load(Ordering::SeqCst), i);
    }
}

#[test]
fn a_server_without_meta_is_found_by_the_probe_and_spoken_to_in_classic() {
    // memcached before 1.6: `ERROR` to any meta command.
    let (addr, accepted) = scripted_server(|line| match line.split(' ').next() {
        Some("mg" | "ms" | "md" | "ma" | "mn") => Some("ERROR\r\n".into()),
        Some("gets") => Some("END\r\n".into()),
        Some("set") => Some("STORED\r\n".into()),
        _ => None,
    });
    let t = transport(vec![addr]);
    assert_eq!(
        t.server_protocol(0),
        None,
        "not probed before the first request"
    );
    assert_eq!(t.get(b"k").unwrap(), None);
    assert_eq!(t.server_protocol(0), Some(Protocol::Classic));
    assert!(t.store(&Store::set(b"k", b"v", 0, 0)).unwrap().is_stored());
    assert!(matches!(
        t.meta_get(b"k", 5),
        Err(Error::Unsupported { command, .. }) if command == "mg"
    ));
    // Two probes' connections (classic takes two probes' word: one stray line or cut
    // connection must not make a memcached 1.6 classic for good), then one classic
    // connection for everything.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_garbled_probe_reply_is_an_error_and_the_server_is_probed_again() {
    // The first connection's probe reply is garbage; the next is memcached 1.6's.
    let (addr, accepted) = scripted_server(|line| {
        let (command, key, token) = meta_request(line)?;
        static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
        if key == "newcache:meta-probe" && FIRST.swap(false, Ordering::SeqCst) {
            return Some("HD kother O1\r\n".into());
        }
        match command {
            "mg" => Some(format!("EN k{key} O{token}\r\n")),
            _ => None,
        }
    });
    let t = transport(vec![addr]);
    assert!(matches!(t.get(b"k"), Err(Error::Protocol { .. })));
    assert_eq!(t.server_protocol(0), None, "not taken for classic");
    assert_eq!(t.get(b"k").unwrap(), None);
    assert_eq!(t.server_protocol(0), Some(Protocol::Meta));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
