//! A proxy is a server: the text transport through twemproxy (Debian's `nutcracker`) in
//! front of two memcached processes. Every conformance case whose commands twemproxy carries
//! runs unchanged; the commands it lacks (`flush_all`, `stats`, the meta commands) give a
//! typed "unsupported" error at once, not a hang, and do not mark the proxy down.

use std::time::{Duration, Instant};

use newcache_testkit::{Memcached, Twemproxy};
use newcache_tests::conformance::Fixture;
use newcache_transport::{Error, Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport};

/// Two memcached processes, twemproxy in front, and the text transport talking only to it.
struct ProxyFixture {
    transport: TextTransport,
    backends: Vec<Memcached>,
    _proxy: Twemproxy,
}

impl ProxyFixture {
    fn start() -> ProxyFixture {
        let backends = vec![Memcached::start(), Memcached::start()];
        let proxy = Twemproxy::start(&backends.iter().collect::<Vec<_>>());
        let transport = TextTransport::new(TextConfig {
            servers: vec![proxy.addr()],
            read_timeout: Duration::from_secs(2),
            ..TextConfig::default()
        })
        .expect("transport");
        ProxyFixture {
            transport,
            backends,
            _proxy: proxy,
        }
    }
}

impl Fixture for ProxyFixture {
    fn transport(&self) -> &dyn Transport {
        &self.transport
    }

    fn server_stat(&self, name: &str) -> Option<u64> {
        // Read past the proxy, from the memcached processes behind it.
        Some(self.backends.iter().map(|m| m.stat(name)).sum())
    }
}

// Every conformance case that touches keys only (all but flush_all and stats).
newcache_tests::conformance_suite!(@keyed (|| ProxyFixture::start()));

fn expect_unsupported<T: std::fmt::Debug>(what: &str, outcome: Result<T, Error>, took: Duration) {
    match outcome {
        Err(Error::Unsupported { command, .. }) => assert!(
            what.starts_with(command.as_str()),
            "{what}: reported as {command}"
        ),
        other => panic!("{what} through twemproxy: expected Unsupported, got {other:?}"),
    }
    assert!(took < Duration::from_millis(500), "{what} took {took:?}");
}

#[test]
fn commands_twemproxy_lacks_are_typed_unsupported_errors_not_hangs() {
    let f = ProxyFixture::start();
    let t = &f.transport;
    let timed = |what: &str, op: &dyn Fn() -> Result<(), Error>| {
        let begun = Instant::now();
        let outcome = op();
        expect_unsupported(what, outcome, begun.elapsed());
    };
    timed("flush_all", &|| t.flush_all());
    timed("stats", &|| t.stats().map(|_| ()));
    timed("mg", &|| t.meta_get(b"k", 5).map(|_| ()));
    timed("mg (many)", &|| {
        t.meta_get_many(&[b"a", b"b"], 5).map(|_| ())
    });
    timed("md", &|| t.meta_invalidate(b"k", 5, None).map(|_| ()));
    // The proxy is not marked down by what it refused: ordinary commands go on working.
    for i in 0..20 {
        let key = format!("after:{i}");
        t.store(&Store::set(key.as_bytes(), b"v", 0, 60)).unwrap();
        assert_eq!(t.get(key.as_bytes()).unwrap().unwrap().value, b"v");
    }
    // And the items went through the proxy to the memcached processes behind it.
    let stored: u64 = f.backends.iter().map(|b| b.stat("curr_items")).sum();
    assert_eq!(stored, 20);
}

#[test]
fn quiet_deletes_go_through_twemproxy() {
    // twemproxy carries `delete <key> noreply` (answering nothing) and `version`.
    let f = ProxyFixture::start();
    let t = &f.transport;
    let keys: Vec<String> = (0..30).map(|i| format!("quiet:{i}")).collect();
    for k in &keys {
        t.store(&Store::set(k.as_bytes(), b"v", 0, 60)).unwrap();
    }
    let mut batch: Vec<&[u8]> = keys[..20].iter().map(|k| k.as_bytes()).collect();
    batch.push(b"quiet:missing");
    t.delete_many_quiet(&batch)
        .expect("quiet deletes through twemproxy");
    // The proxy forwards each noreply delete without waiting; poll briefly for the last.
    let deadline = Instant::now() + Duration::from_secs(2);
    while f.backends.iter().map(|b| b.stat("curr_items")).sum::<u64>() != 10 {
        assert!(
            Instant::now() < deadline,
            "the deletes did not reach memcached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(t.get(k.as_bytes()).unwrap().is_some(), i >= 20, "{k}");
    }
}

/// twemproxy whose memcached is gone before the first request, with `protocol=auto`: the
/// probe finds the classic protocol anyway (twemproxy answers `version` with
/// `SERVER_ERROR Connection refused`), and every request, blocking or async, fails with
/// that `Error::Server`; it was an I/O error saying the server closed the connection
/// without replying to the meta probe (an outside audit). Once memcached is back, the same
/// transports work.
#[test]
fn a_proxy_whose_server_is_gone_at_first_contact_says_so() {
    let mut backend = Memcached::start();
    let proxy = Twemproxy::start(&[&backend]);
    backend.kill();
    let config = TextConfig {
        servers: vec![proxy.addr()],
        read_timeout: Duration::from_secs(2),
        ..TextConfig::default()
    };
    let blocking = TextTransport::new(config.clone()).expect("transport");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tokio = newcache_transport_text::TokioTextTransport::new(config).expect("async");
    let server_error = |what: &str, got: Result<Option<newcache_transport::Item>, Error>| match got
    {
        Err(Error::Server { message, .. }) => {
            assert!(message.contains("Connection refused"), "{what}: {message}")
        }
        other => panic!("{what}: {other:?}"),
    };
    for round in 0..2 {
        server_error(&format!("blocking {round}"), blocking.get(b"k"));
        let got = runtime.block_on(newcache_transport::AsyncTransport::get(&tokio, b"k"));
        server_error(&format!("async {round}"), got);
    }
    backend.restart();
    blocking
        .store(&Store::set(b"k", b"v", 0, 0))
        .expect("set once it is back");
    assert_eq!(
        blocking.get(b"k").expect("get").map(|i| i.value),
        Some(b"v".to_vec())
    );
}
