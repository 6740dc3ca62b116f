//! The spans and events newcache emits (feature `tracing`), on a real memcached, read back
//! through tracing-subscriber's text formatter: one span per operation with the cache, the
//! operation and its outcome (and the failing server), and the meta-to-lease switch.
#![cfg(all(feature = "tracing", feature = "text"))]

use std::io::Write;
use std::sync::{Arc, Mutex};

use newcache::{Cache, Ttl};
use newcache_testkit::{Memcached, Twemproxy};
use tracing_subscriber::fmt::format::FmtSpan;

/// A writer the subscriber formats into.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn traced(f: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = captured.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}

#[test]
fn every_operation_is_a_span_with_its_outcome() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?name=shop", server.addr());
    let text = traced(|| {
        let cache = Cache::from_url(&url).unwrap();
        cache.set("k", "v", Ttl::Seconds(60)).unwrap();
        assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v"));
        let down =
            Cache::from_url("newcache://127.0.0.1:1/?name=down&connect_timeout=100").unwrap();
        assert!(down.get::<String>("k").is_err());
    });
    let closes: Vec<&str> = text.lines().filter(|l| l.contains("close")).collect();
    assert!(
        closes
            .iter()
            .any(|l| l.contains("newcache{cache=shop op=\"set\" outcome=\"ok\"}")),
        "{text}"
    );
    assert!(
        closes
            .iter()
            .any(|l| l.contains("newcache{cache=shop op=\"get\" outcome=\"ok\"}")),
        "{text}"
    );
    assert!(
        closes.iter().any(|l| l.contains("cache=down")
            && l.contains("outcome=\"error\"")
            && l.contains("server=\"127.0.0.1:1\"")),
        "{text}"
    );
    // Never a key.
    assert!(!text.contains("\"k\""), "{text}");
}

#[test]
fn the_switch_from_meta_to_lease_is_an_event() {
    // twemproxy speaks no meta commands: herd=meta switches to lease, and says so.
    let backend = Memcached::start();
    let proxy = Twemproxy::start(&[&backend]);
    let url = format!("newcache://{}/?name=proxied&herd=meta", proxy.addr());
    let text = traced(|| {
        let cache = Cache::from_url(&url).unwrap();
        cache.set("k", "v", Ttl::Seconds(60)).unwrap();
        assert_eq!(cache.stale_policy().name(), "lease");
        assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v"));
    });
    let switches = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("herd=meta runs as herd=lease"))
        .count();
    assert_eq!(switches, 1, "once per cache:\n{text}");
}

#[test]
fn a_server_marked_down_and_back_are_events() {
    // Two servers, so failover applies; failure_limit=1 marks one down at its first
    // failure, retry_timeout=1 tries it again a second later.
    let mut a = Memcached::start();
    let b = Memcached::start();
    let url = format!(
        "newcache://{};{}/?name=pair&behaviors.failure_limit=1&behaviors.retry_timeout=1&connect_timeout=200&read_timeout=200",
        a.addr(),
        b.addr()
    );
    let label = a.addr().to_string();
    let text = traced(|| {
        let cache = Cache::from_url(&url).unwrap();
        a.kill();
        // Some of these keys live on the killed server: its first failure marks it down.
        for i in 0..20 {
            let _ = cache.get::<String>(&format!("k{i}"));
        }
        a.restart();
        std::thread::sleep(std::time::Duration::from_millis(1200));
        for i in 0..20 {
            let _ = cache.get::<String>(&format!("k{i}"));
        }
    });
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("marked down") && l.contains(&label)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("answers again") && l.contains(&label)),
        "{text}"
    );
    assert!(text.contains("memcached connection opened"), "{text}");
}

#[test]
fn connections_a_batch_opens_side_by_side_are_the_calls_events() {
    // A get_many over two servers never connected to opens both connections at once, each
    // on a thread of its own: their events still belong to the call's span.
    let a = Memcached::start();
    let b = Memcached::start();
    let url = format!("newcache://{};{}/?name=batch", a.addr(), b.addr());
    let text = traced(|| {
        let cache = Cache::from_url(&url).unwrap();
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        assert!(cache.get_many::<_, String>(&keys).unwrap().is_empty());
    });
    let opened: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("memcached connection opened"))
        .collect();
    for server in [a.addr(), b.addr()] {
        assert!(
            opened
                .iter()
                .any(|l| l.contains(&server) && l.contains("newcache{cache=batch op=\"get_many\"")),
            "{text}"
        );
    }
}
