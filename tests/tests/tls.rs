//! TLS to memcached (`-Z`) with certificates made here: the facade over a verified
//! connection (meta and classic), a client certificate, the conformance suite over TLS, and
//! the failures (wrong CA, wrong name, a plain server, bad settings) as typed errors; the
//! same for the async cache and its tokio transport, and its pipelining over TLS.
#![cfg(feature = "tls")]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use newcache::{AsyncCache, Cache, Ttl};
use newcache_testkit::proxy::{FaultProxy, Faults};
use newcache_testkit::Memcached;
use newcache_tests::{BlockingAdapter, ServerFixture};
use newcache_transport_text::{TextConfig, TextTransport, TlsConfig, TokioTextTransport};

mod pki;
use pki::Pki;

/// This test process's certificates, made once, under the target directory (cargo's
/// per-test scratch space), not the system's temporary directory, where each run left a
/// directory of keys behind.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        Pki::make(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("newcache-tls-{}", std::process::id())),
        )
    })
}

fn tls_server() -> Memcached {
    let p = pki();
    Memcached::tls(&p.path("server.pem"), &p.path("server-key.pem"))
}

fn exercise(cache: &Cache, server: &Memcached) {
    cache.set("greeting", "hello", Ttl::Seconds(60)).unwrap();
    assert_eq!(
        cache.get::<String>("greeting").unwrap().as_deref(),
        Some("hello")
    );
    cache.set("n", &5u64, Ttl::Seconds(60)).unwrap();
    assert_eq!(cache.incr("n", 3).unwrap(), 8);
    let big = "x".repeat(300_000);
    cache.set("big", &big, Ttl::Seconds(60)).unwrap();
    let many = cache
        .get_many::<_, String>(&["greeting", "big", "missing"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many.get("big"), Some(&big));
    assert!(cache.delete("greeting").unwrap());
    assert_eq!(cache.get::<String>("greeting").unwrap(), None);
    // Stored for real: the plain port of the same server sees the items.
    assert!(server.stat("curr_items") >= 2);
}

fn url(addr: &str, params: &str) -> String {
    format!(
        "newcache://{addr}/?tls=true&tls_ca={}{params}",
        pki().path("ca.pem").display()
    )
}

#[test]
fn a_verified_tls_connection_carries_every_operation() {
    let server = tls_server();
    for protocol in ["auto", "classic"] {
        let cache =
            Cache::from_url(&url(&server.tls_addr(), &format!("&protocol={protocol}"))).unwrap();
        exercise(&cache, &server);
    }
    // Every handshake went through (memcached counts the failed ones).
    assert_eq!(server.stat("ssl_handshake_errors"), 0);
}

#[test]
fn the_server_name_can_be_given_instead_of_the_host() {
    let server = tls_server();
    let cache = Cache::from_url(&url(&server.tls_addr(), "&tls_server_name=localhost")).unwrap();
    exercise(&cache, &server);
}

/// The error of a first request that cannot connect, with its source chain in the text.
fn connect_error(url: &str) -> String {
    let cache = Cache::from_url(url).unwrap();
    connect_error_text(&cache.get::<String>("k").unwrap_err())
}

/// A connect error's text and its source chain; any other error fails the test.
fn connect_error_text(e: &newcache::Error) -> String {
    let newcache::Error::Transport(newcache_transport::Error::Connect { source, .. }) = e else {
        panic!("not a connect error: {e:?}");
    };
    format!("{e} / {source:?}")
}

/// A URL of the TLS server at `addr` with the CA that did not sign its certificate.
fn other_ca_url(addr: &str) -> String {
    format!(
        "newcache://{addr}/?tls=true&tls_ca={}",
        pki().path("other-ca.pem").display()
    )
}

#[test]
fn a_certificate_from_another_ca_is_a_connect_error() {
    let server = tls_server();
    let text = connect_error(&other_ca_url(&server.tls_addr()));
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[test]
fn a_certificate_for_another_name_is_a_connect_error() {
    let server = tls_server();
    let text = connect_error(&url(
        &server.tls_addr(),
        "&tls_server_name=cache.example.com",
    ));
    assert!(text.contains("NotValidForName"), "{text}");
}

#[test]
fn tls_to_a_plain_server_is_a_connect_error_not_a_hang() {
    let server = Memcached::start();
    let started = std::time::Instant::now();
    let text = connect_error(&url(&server.addr(), ""));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{text}"
    );
    // memcached answers the client's hello as a command it does not know: said so.
    assert!(text.contains("does not speak TLS"), "{text}");
}

#[test]
fn a_server_that_verifies_clients_takes_the_client_certificate_from_either_cache() {
    let p = pki();
    let server = Memcached::tls_verifying_clients(
        &p.path("server.pem"),
        &p.path("server-key.pem"),
        &p.path("ca.pem"),
    );
    let with_cert = url(
        &server.tls_addr(),
        &format!(
            "&tls_cert={}&tls_key={}",
            p.path("client.pem").display(),
            p.path("client-key.pem").display()
        ),
    );
    exercise(&Cache::from_url(&with_cert).unwrap(), &server);
    // Without one, memcached refuses the handshake (TLS 1.3 reports it on the first read).
    let cache = Cache::from_url(&url(&server.tls_addr(), "")).unwrap();
    assert!(cache.get::<String>("k").is_err());
    // The async cache likewise. Past the handshake (TLS 1.3), the server's alert reaches
    // the caller as rustls' typed error, as the blocking cache's and the handshake's do (it
    // was its text only).
    multi_thread_runtime().block_on(async {
        exercise_async(&AsyncCache::from_url(&with_cert).unwrap()).await;
        for protocol in ["auto", "meta", "classic"] {
            let url = url(&server.tls_addr(), &format!("&protocol={protocol}"));
            let cache = AsyncCache::from_url(&url).unwrap();
            let e = cache.get::<String>("k").await.unwrap_err();
            let typed = match &e {
                newcache::Error::Transport(
                    newcache_transport::Error::Io { source, .. }
                    | newcache_transport::Error::Connect { source, .. },
                ) => format!("{source:?}"),
                other => panic!("{protocol}: {other:?}"),
            };
            assert!(typed.contains("AlertReceived("), "{protocol}: {typed}");
        }
    });
}

#[test]
fn incomplete_or_unusable_tls_settings_are_refused() {
    for bad in [
        "newcache://127.0.0.1:1/?tls=true",
        "newcache://127.0.0.1:1/?tls_ca=/etc/ca.pem",
        "newcache://127.0.0.1:1/?tls=true&tls_ca=/etc/ca.pem&tls_cert=/c.pem",
        "newcache:///?tls=true&tls_ca=/etc/ca.pem&transport=memory",
    ] {
        assert!(
            matches!(Cache::from_url(bad), Err(newcache::Error::Config(_))),
            "{bad}"
        );
    }
    // A CA file that is missing or holds no certificate: refused when the cache is built.
    let missing = format!(
        "newcache://127.0.0.1:1/?tls=true&tls_ca={}",
        pki().path("absent.pem").display()
    );
    // A configuration error, not a failure to connect ("is it running and reachable?").
    let e = Cache::from_url(&missing).unwrap_err();
    assert!(matches!(e, newcache::Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("absent.pem"), "{e}");
    assert!(!e.to_string().contains("reachable"), "{e}");
    let not_pem = format!(
        "newcache://127.0.0.1:1/?tls=true&tls_ca={}",
        pki().path("server-key.pem").display()
    );
    assert!(matches!(
        Cache::from_url(&not_pem),
        Err(newcache::Error::Config(_))
    ));
}

/// A text transport over TLS to `addr` (the servers the fixture passes are its plain ports).
/// The conformance suite's transport over TLS. Its timeouts are 2 s, not the default 500 ms:
/// the suite checks answers, not timing, and its 16 threads each opening a TLS connection at
/// once, on this 2-core machine under a parallel build, twice took longer than 500 ms for a
/// handshake step (`sixteen_threads_get_only_their_own_answers`, a `WouldBlock` connect
/// error; it passed alone).
fn tls_transport(addr: String) -> Box<dyn newcache_transport::Transport> {
    Box::new(
        TextTransport::new(patient_tls_config(addr))
            .unwrap_or_else(|e| panic!("TextTransport::new failed: {e}")),
    )
}

/// The text transports' settings for TLS to `addr`, verified by the test CA, with 2 s
/// timeouts.
fn patient_tls_config(addr: String) -> TextConfig {
    let patient = Duration::from_secs(2);
    TextConfig {
        servers: vec![addr],
        tls: Some(TlsConfig {
            ca_file: pki().path("ca.pem"),
            ..TlsConfig::default()
        }),
        connect_timeout: patient,
        read_timeout: patient,
        write_timeout: patient,
        ..TextConfig::default()
    }
}

fn tls_fixture() -> ServerFixture {
    let server = tls_server();
    let addr = server.tls_addr();
    ServerFixture::with_servers(vec![server], move |_| tls_transport(addr))
}

mod conformance {
    newcache_tests::conformance_suite!(super::tls_fixture);
}

/// Over TLS, a reply that keeps coming a byte at a time is given up within the read
/// timeout, as on a plain socket, and a handshake within the connect and read timeouts.
/// rustls' stream read until a whole record had come, each read of the socket with the
/// whole timeout (a 300-byte value 20 ms a byte: returned after 7.8 s with a 300 ms read
/// timeout), and its handshake until it was done (10 s at 5 ms a byte; an outside audit).
#[test]
fn a_tls_server_that_trickles_is_given_up_within_the_timeouts() {
    let server = tls_server();
    let proxy = FaultProxy::start(server.tls_addr().parse().unwrap(), Faults::none());
    let params = "&read_timeout=300&connect_timeout=300&herd=off&protocol=classic";
    let cache = Cache::from_url(&url(&proxy.addr(), params)).unwrap();
    let value = "x".repeat(3000);
    cache.set("k", &value, Ttl::Seconds(60)).unwrap();
    assert_eq!(
        cache.get::<String>("k").unwrap().as_deref(),
        Some(value.as_str())
    );
    proxy.set_faults(Faults::none().trickle_slowly(1_000_000, Duration::from_millis(5)));
    let started = Instant::now();
    let got = cache.get::<String>("k");
    assert_given_up(got, started, true, Duration::from_millis(1000));
    // A new connection's handshake, trickled too: connect (300 ms) and read (300 ms).
    let fresh = Cache::from_url(&url(&proxy.addr(), params)).unwrap();
    let started = Instant::now();
    let got = fresh.get::<String>("k");
    assert_given_up(got, started, false, Duration::from_millis(1300));
}

/// A get of a trickled reply failed (with a timeout, when `timeout`) within `within` of
/// `started`.
fn assert_given_up(
    got: newcache::Result<Option<String>>,
    started: Instant,
    timeout: bool,
    within: Duration,
) {
    let took = started.elapsed();
    let shown = format!("{:?}", got.as_ref().map(|v| v.as_ref().map(String::len)));
    match got {
        Err(newcache::Error::Transport(newcache_transport::Error::Timeout { .. })) => {}
        Err(_) if !timeout => {}
        _ => panic!("{shown}"),
    }
    assert!(took < within, "{took:?}");
}

// The async cache and its tokio transport over TLS: the same checks as above, and the
// pipelining that only the async transport does (many tasks' requests in one write, their
// replies in one read, over one connection).

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn exercise_async(cache: &AsyncCache) {
    cache
        .set("greeting", "hello", Ttl::Seconds(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("greeting").await.unwrap().as_deref(),
        Some("hello")
    );
    cache.set("n", &5u64, Ttl::Seconds(60)).await.unwrap();
    assert_eq!(cache.incr("n", 3).await.unwrap(), 8);
    // Larger than rustls' 64 KB of plaintext it takes at once, and than a TLS record.
    let big = "x".repeat(300_000);
    cache.set("big", &big, Ttl::Seconds(60)).await.unwrap();
    let many = cache
        .get_many::<_, String>(&["greeting", "big", "missing"])
        .await
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many.get("big"), Some(&big));
    assert!(cache.delete("greeting").await.unwrap());
    assert_eq!(cache.get::<String>("greeting").await.unwrap(), None);
}

#[test]
fn an_async_cache_over_verified_tls_carries_every_operation() {
    let server = tls_server();
    let rt = multi_thread_runtime();
    for protocol in ["auto", "classic"] {
        let url = url(&server.tls_addr(), &format!("&protocol={protocol}"));
        rt.block_on(async {
            let cache = AsyncCache::from_url(&url).unwrap();
            exercise_async(&cache).await;
            // What the blocking cache wrote over TLS, the async one reads, and back.
            let blocking = Cache::from_url(&url).unwrap();
            blocking
                .set("shared", "from Cache", Ttl::Seconds(60))
                .unwrap();
            assert_eq!(
                cache.get::<String>("shared").await.unwrap().as_deref(),
                Some("from Cache")
            );
        });
        // Stored for real: the plain port of the same server sees the items.
        assert!(server.stat("curr_items") >= 3);
    }
    assert_eq!(server.stat("ssl_handshake_errors"), 0);
}

/// 64 tasks at once over TLS, each reading back values of its own (some larger than a
/// TLS record): every answer is its own request's. Over TLS requests are not pipelined
/// (`serial_over_tls` in the transport says why): each connection carries one at a time,
/// so the transport writes each request on its own, on a pool of at most
/// `max_connections` connections.
#[test]
fn concurrent_tasks_over_tls_each_get_their_own_answers() {
    let server = tls_server();
    let rt = multi_thread_runtime();
    let url = url(&server.tls_addr(), "&max_connections=4");
    let before = server.stat("total_connections");
    rt.block_on(async {
        let cache = AsyncCache::from_url(&url).unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    for round in 0..20 {
                        let key = format!("task {task} round {round}");
                        let value = format!("{key} ").repeat(1 + (task * round) % 3000);
                        cache.set(&key, &value, Ttl::Seconds(60)).await.unwrap();
                        let got = cache.get::<String>(&key).await.unwrap();
                        assert_eq!(got.as_deref(), Some(value.as_str()), "{key}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    // The pool's four, not one per task (the two `stat` calls open one each).
    let opened = server.stat("total_connections") - before - 1;
    assert!(opened <= 4, "{opened}");
    assert_eq!(server.stat("ssl_handshake_errors"), 0);
    // More pipelined connections asked for than the pool's bound: the bound holds (the
    // pool took the pipelined slots too, 6 connections at a bound of 2: an outside review).
    let transport = shared_tokio(TextConfig {
        max_connections: 2,
        async_connections: 8,
        ..patient_tls_config(server.tls_addr())
    });
    rt.block_on(async {
        use newcache_transport::{AsyncTransport, Store};
        let value = vec![b'v'; 20_000];
        transport
            .store(&Store::set(b"concurrent", &value, 0, 60))
            .await
            .unwrap();
        let before = transport.io_stats();
        let gets: Vec<_> = (0..320)
            .map(|i| {
                let transport = transport.clone();
                tokio::spawn(async move {
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                    transport.get(b"concurrent").await
                })
            })
            .collect();
        for got in gets {
            assert_eq!(got.await.unwrap().unwrap().unwrap().value, value);
        }
        let after = transport.io_stats();
        let (writes, requests) = (
            after.writes - before.writes,
            after.requests - before.requests,
        );
        assert_eq!(requests, 320);
        assert_eq!(writes, requests, "one request per write over TLS");
        assert!(after.connections <= 2, "{}", after.connections);
    });
}

/// A set whose value spans two TLS records, and a get written right behind it: memcached
/// before 1.6.39 reads the value's tail by itself, and the get's bytes, decrypted in the
/// same record, stay in OpenSSL while memcached waits for the socket to be readable, which
/// it is not (memcached's fix: "tls: fix potential hang when pipelining sets"). Written in
/// one batch, the get waited out the whole read timeout; the async transport now sends
/// requests over TLS one at a time, and both are answered at once.
#[test]
fn a_get_right_behind_a_set_over_tls_is_answered_at_once() {
    let server = tls_server();
    let rt = multi_thread_runtime();
    let transport = shared_tokio(TextConfig {
        async_connections: 1,
        ..patient_tls_config(server.tls_addr())
    });
    rt.block_on(async {
        use newcache_transport::{AsyncTransport, Store};
        transport
            .store(&Store::set(b"other", b"x", 0, 60))
            .await
            .unwrap();
        let value = vec![b'v'; 20_000];
        for round in 0..5 {
            let started = Instant::now();
            // A lone get first, so that the set and the get behind it find the connection
            // busy and are queued (and, pipelined, written together).
            let (t1, t2, t3) = (transport.clone(), transport.clone(), transport.clone());
            let first = tokio::spawn(async move { t1.get(b"other").await });
            let key = format!("spanning-{round}");
            let value2 = value.clone();
            let set =
                tokio::spawn(
                    async move { t2.store(&Store::set(key.as_bytes(), &value2, 0, 60)).await },
                );
            let behind = tokio::spawn(async move { t3.get(b"other").await });
            first.await.unwrap().unwrap();
            set.await.unwrap().unwrap();
            let got = behind.await.unwrap();
            assert_eq!(got.unwrap().unwrap().value, b"x", "round {round}");
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "round {round}: {:?}",
                started.elapsed()
            );
        }
    });
}

/// The error of an async cache's first request that cannot connect, with its source chain.
fn async_connect_error(url: &str) -> String {
    multi_thread_runtime().block_on(async {
        let cache = AsyncCache::from_url(url).unwrap();
        connect_error_text(&cache.get::<String>("k").await.unwrap_err())
    })
}

#[test]
fn an_async_cache_refuses_servers_whose_certificates_do_not_verify() {
    let server = tls_server();
    let text = async_connect_error(&other_ca_url(&server.tls_addr()));
    assert!(text.contains("UnknownIssuer"), "{text}");
    let text = async_connect_error(&url(
        &server.tls_addr(),
        "&tls_server_name=cache.example.com",
    ));
    assert!(text.contains("NotValidForName"), "{text}");
    // No request went out: the server saw no command.
    assert_eq!(server.stat("cmd_get"), 0);
}

#[test]
fn an_async_cache_speaking_tls_to_a_plain_server_fails_without_hanging() {
    let server = Memcached::start();
    let started = Instant::now();
    let text = async_connect_error(&url(&server.addr(), ""));
    assert!(started.elapsed() < Duration::from_secs(3), "{text}");
    assert!(text.contains("does not speak TLS"), "{text}");
}

/// Over TLS, the async cache gives up a reply that trickles within the read timeout, and a
/// trickled handshake within the connect and read timeouts, as the blocking cache does.
#[test]
fn an_async_cache_gives_up_a_trickling_tls_server_within_the_timeouts() {
    let server = tls_server();
    let proxy = FaultProxy::start(server.tls_addr().parse().unwrap(), Faults::none());
    let params = "&read_timeout=300&connect_timeout=300&herd=off";
    let rt = multi_thread_runtime();
    rt.block_on(async {
        let cache = AsyncCache::from_url(&url(&proxy.addr(), params)).unwrap();
        let value = "x".repeat(3000);
        cache.set("k", &value, Ttl::Seconds(60)).await.unwrap();
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some(value.as_str())
        );
        proxy.set_faults(Faults::none().trickle_slowly(1_000_000, Duration::from_millis(5)));
        let started = Instant::now();
        let got = cache.get::<String>("k").await;
        assert_given_up(got, started, true, Duration::from_millis(1000));
        let fresh = AsyncCache::from_url(&url(&proxy.addr(), params)).unwrap();
        let started = Instant::now();
        let got = fresh.get::<String>("k").await;
        assert_given_up(got, started, false, Duration::from_millis(1300));
    });
}

/// A tokio text transport, to share between tasks.
fn shared_tokio(config: TextConfig) -> std::sync::Arc<TokioTextTransport> {
    std::sync::Arc::new(TokioTextTransport::new(config).unwrap())
}

/// The tokio text transport over TLS, for the conformance suite (through the blocking
/// adapter), with the blocking suite's patient timeouts.
fn async_tls_fixture() -> ServerFixture {
    let server = tls_server();
    let addr = server.tls_addr();
    ServerFixture::with_servers(vec![server], move |_| {
        let transport = TokioTextTransport::new(patient_tls_config(addr))
            .unwrap_or_else(|e| panic!("TokioTextTransport::new failed: {e}"));
        Box::new(BlockingAdapter::new(transport))
    })
}

mod async_conformance {
    newcache_tests::conformance_suite!(super::async_tls_fixture);
}

/// `set_many` of values that each span TLS records, then `get_many`, over TLS, by both
/// caches: every value stored and read back within the read timeout.
#[test]
fn set_many_of_values_spanning_records_over_tls_completes() {
    let server = tls_server();
    let url = url(&server.tls_addr(), "&read_timeout=2000&write_timeout=2000");
    let keys: Vec<String> = (0..20).map(|i| format!("span-{i}")).collect();
    let items: Vec<(&str, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), format!("{i}-").repeat(7_000)))
        .collect();
    let cache = Cache::from_url(&url).unwrap();
    let started = Instant::now();
    cache
        .set_many(items.iter().map(|(k, v)| (*k, v)), Ttl::Seconds(60))
        .unwrap();
    all_twenty_in_time(cache.get_many::<_, String>(&keys), started);
    multi_thread_runtime().block_on(async {
        let cache = AsyncCache::from_url(&url).unwrap();
        let started = Instant::now();
        cache
            .set_many(items.iter().map(|(k, v)| (*k, v)), Ttl::Seconds(60))
            .await
            .unwrap();
        all_twenty_in_time(cache.get_many::<_, String>(&keys).await, started);
    });
}

/// A `get_many` of the twenty values above: every one read, within 2 s of `started`.
fn all_twenty_in_time(got: newcache::Result<newcache::GetMany<String>>, started: Instant) {
    let got = got.unwrap().into_complete().unwrap();
    assert_eq!(got.len(), 20);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A value that spans two TLS records followed, in the same request, by a small one: the
/// second record held the first value's tail and the whole second command, and memcached
/// before 1.6.39 left that command in OpenSSL, waiting for the socket (an outside review:
/// 21 of 21 such `set_many` calls timed out, every transport and cache). Each command now
/// ends a record, and the batch completes, over both transports and both caches.
#[test]
fn a_batch_of_a_spanning_value_then_a_small_one_completes_over_tls() {
    use newcache_transport::{AsyncTransport, Store, Transport};
    let server = tls_server();
    let big = vec![b'b'; 20_000];
    let batch = [
        Store::set(b"spanning", &big, 0, 60),
        Store::set(b"small", b"x", 0, 60),
    ];
    let blocking = TextTransport::new(patient_tls_config(server.tls_addr())).unwrap();
    let tokio = shared_tokio(patient_tls_config(server.tls_addr()));
    let rt = multi_thread_runtime();
    for round in 0..3 {
        let started = Instant::now();
        blocking.store_many(&batch).unwrap();
        rt.block_on(tokio.store_many(&batch)).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "round {round}: {:?}",
            started.elapsed()
        );
    }
    let url = url(&server.tls_addr(), "&read_timeout=2000&write_timeout=2000");
    let items = [
        ("cache-spanning", "b".repeat(20_000)),
        ("cache-small", "x".into()),
    ];
    let started = Instant::now();
    Cache::from_url(&url)
        .unwrap()
        .set_many(items.iter().map(|(k, v)| (*k, v)), Ttl::Seconds(60))
        .unwrap();
    rt.block_on(async {
        AsyncCache::from_url(&url)
            .unwrap()
            .set_many(items.iter().map(|(k, v)| (*k, v)), Ttl::Seconds(60))
            .await
            .unwrap();
    });
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// Batches of values of every size around the record limits (a record of whole commands
/// holds up to 4 KB, rustls' records up to 16 KB), written, read and deleted over TLS by
/// both transports in both protocols: every call answered within half its read timeout
/// (memcached before 1.6.39 leaves a command that shares a record with a value's tail in
/// OpenSSL, and the call then waits out the timeout), every value read back as written.
#[test]
fn batches_of_values_around_the_record_limits_are_answered_in_time() {
    use newcache_transport::{AsyncTransport, Store, Transport};
    use newcache_transport_text::Protocol;
    const SIZES: [usize; 14] = [
        0, 1, 100, 1_000, 2_040, 4_000, 4_060, 4_096, 4_200, 8_000, 16_300, 16_384, 17_000, 40_000,
    ];
    let server = tls_server();
    let rt = multi_thread_runtime();
    for protocol in [Protocol::Meta, Protocol::Classic] {
        let config = TextConfig {
            protocol,
            ..patient_tls_config(server.tls_addr())
        };
        let blocking = TextTransport::new(config.clone()).unwrap();
        let tokio = shared_tokio(config);
        for round in 0..24usize {
            // Twenty values, their sizes taken from SIZES in a different order each round.
            let keys: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("{protocol:?}-{round}-{i}").into_bytes())
                .collect();
            let values: Vec<Vec<u8>> = (0..20usize)
                .map(|i| vec![b'a' + (i % 26) as u8; SIZES[(i * 5 + round * 3) % SIZES.len()]])
                .collect();
            let stores: Vec<Store<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| Store::set(k, v, 0, 60))
                .collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let timed = |what: &str, started: Instant| {
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(1),
                    "{protocol:?} round {round}: {what} took {took:?}"
                );
            };
            let started = Instant::now();
            if round % 2 == 0 {
                blocking.store_many(&stores).unwrap();
            } else {
                rt.block_on(tokio.store_many(&stores)).unwrap();
            }
            timed("store_many", started);
            let started = Instant::now();
            let read = if round % 2 == 0 {
                rt.block_on(tokio.get_many(&refs)).unwrap()
            } else {
                blocking.get_many(&refs).unwrap()
            };
            timed("get_many", started);
            for ((key, value), item) in keys.iter().zip(&values).zip(&read) {
                let item = item.as_ref().unwrap_or_else(|| panic!("{key:?} missing"));
                assert!(item.value == *value, "{protocol:?} round {round}: {key:?}");
            }
            let started = Instant::now();
            let deleted = if round % 2 == 0 {
                blocking.delete_many(&refs).unwrap()
            } else {
                rt.block_on(tokio.delete_many(&refs)).unwrap()
            };
            timed("delete_many", started);
            assert!(deleted.iter().all(|&d| d));
        }
    }
}

/// memcached at its connection limit writes `ERROR Too many open connections` in plain text
/// on a connection it accepts, before any handshake, and closes it. Over TLS that is the
/// server's error, as on a plain port, from both caches and every protocol (it was a
/// handshake failure, rustls' "corrupt message", which named no limit). A plain server
/// answering the handshake is named as one too.
#[test]
fn a_tls_server_at_its_connection_limit_says_so() {
    let p = pki();
    let server = Memcached::tls_with_args(
        &p.path("server.pem"),
        &p.path("server-key.pem"),
        &["-c", "20", "-t", "1"],
    );
    // Connections (to the plain port) until memcached refuses one (it counts its own
    // sockets too).
    let held = server.connections_to_the_limit(20);
    let refused = |what: &str, got: Result<Option<String>, newcache::Error>| match got {
        Err(newcache::Error::Transport(newcache_transport::Error::Server { message, .. })) => {
            assert!(message.contains("connection limit"), "{what}: {message}");
            assert!(message.contains("did not run"), "{what}: {message}");
        }
        other => panic!("{what}: {other:?}"),
    };
    let rt = multi_thread_runtime();
    for protocol in ["auto", "classic", "meta"] {
        let at = url(&server.tls_addr(), &format!("&protocol={protocol}"));
        let started = Instant::now();
        refused(
            &format!("{protocol} blocking"),
            Cache::from_url(&at).unwrap().get::<String>("k"),
        );
        let got =
            rt.block_on(async { AsyncCache::from_url(&at).unwrap().get::<String>("k").await });
        refused(&format!("{protocol} async"), got);
        assert!(started.elapsed() < Duration::from_secs(3), "{protocol}");
    }
    drop(held);
}

/// A refusal line that arrives in two pieces (through something that cuts the bytes
/// apart) is read to its end before the handshake's failure is named: rustls fails on a
/// record's first five bytes, and the line's start alone was taken for a corrupt record (an
/// outside review). A server that writes `ERROR Too many open`, then the rest 50 ms later.
#[test]
fn a_refusal_line_in_two_pieces_is_read_to_its_end() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut conn, b"ERROR Too many open");
                std::thread::sleep(Duration::from_millis(50));
                let _ = std::io::Write::write_all(&mut conn, b" connections\r\n");
            });
        }
    });
    let at = url(&addr, "&protocol=meta");
    let limit = |what: &str, got: Result<Option<String>, newcache::Error>| match got {
        Err(newcache::Error::Transport(newcache_transport::Error::Server { message, .. })) => {
            assert!(message.contains("connection limit"), "{what}: {message}");
        }
        other => panic!("{what}: {other:?}"),
    };
    limit("blocking", Cache::from_url(&at).unwrap().get::<String>("k"));
    let got = multi_thread_runtime()
        .block_on(async { AsyncCache::from_url(&at).unwrap().get::<String>("k").await });
    limit("async", got);
}
