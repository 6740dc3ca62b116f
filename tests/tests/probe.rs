//! The meta probe ([`Protocol::Auto`]): a server is spoken to in the classic protocol, for
//! good, only when two probes on two connections say so. One probe's word was taken: a
//! stray untagged meta line (`EN`) before the first probe's reply, or the first connection
//! cut before it, made a memcached 1.6 classic for the transport's life, where replies
//! cannot be matched to their requests (an outside audit then read a stray `VALUE` as a
//! hit). Both transports, against a real memcached behind a relay that spoils only its
//! first connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use newcache_testkit::Memcached;
use newcache_transport::{AsyncTransport, Store, Transport};
use newcache_transport_text::{Protocol, TextConfig, TextTransport, TokioTextTransport};

/// What the relay does to its first connection.
#[derive(Clone, Copy, Debug)]
enum First {
    /// Answers the first request with a stray untagged meta line, then relays.
    StrayLine,
    /// Closes it once the first request is in.
    Cut,
}

/// A relay to `server` on a free loopback port; its first connection gets `first`, every
/// later one is relayed both ways unchanged.
fn relay(server: &Memcached, first: First) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = server.socket_addr();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            if n == 0 {
                let mut buf = [0u8; 1024];
                let _ = client.read(&mut buf);
                match first {
                    First::StrayLine => {
                        let _ = client.write_all(b"EN\r\n");
                    }
                    First::Cut => continue,
                }
            }
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c_in, &mut s_out));
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || std::io::copy(&mut s_in, &mut c_out));
        }
    });
    addr
}

fn config(addr: String) -> TextConfig {
    TextConfig {
        servers: vec![addr],
        read_timeout: Duration::from_secs(2),
        protocol: Protocol::Auto,
        ..TextConfig::default()
    }
}

#[test]
fn one_spoiled_probe_does_not_make_memcached_classic() {
    for first in [First::StrayLine, First::Cut] {
        let server = Memcached::start();
        let t = TextTransport::new(config(relay(&server, first))).unwrap();
        // The first request meets the spoiled probe: it may fail, but the server is not
        // taken for classic; the next ones speak meta.
        let _ = t.store(&Store::set(b"probe:k", b"v", 0, 0));
        t.store(&Store::set(b"probe:k", b"v", 0, 0)).expect("a set");
        assert_eq!(
            t.get(b"probe:k").expect("a get").map(|i| i.value),
            Some(b"v".to_vec())
        );
        assert_eq!(t.server_protocol(0), Some(Protocol::Meta), "{first:?}");

        let server = Memcached::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = TokioTextTransport::new(config(relay(&server, first))).unwrap();
            let _ = t.store(&Store::set(b"probe:k", b"v", 0, 0)).await;
            t.store(&Store::set(b"probe:k", b"v", 0, 0))
                .await
                .expect("a set");
            assert_eq!(
                t.get(b"probe:k").await.expect("a get").map(|i| i.value),
                Some(b"v".to_vec())
            );
            assert_eq!(
                t.server_protocol(0),
                Some(Protocol::Meta),
                "async {first:?}"
            );
        });
    }
}

/// A memcached that takes only the binary protocol (`-B binary`, as `-S` for SASL does)
/// closes the probe's connection without a reply and leaves `version` unanswered: both
/// transports fail the request with an I/O error that names that server and what to use
/// instead, within the read timeout and the probe's connect. It said only that the
/// connection closed before any reply came.
#[test]
fn a_binary_only_server_is_named_as_such() {
    let server = Memcached::with_args(&["-B", "binary"]);
    let config = TextConfig {
        servers: vec![server.addr()],
        read_timeout: Duration::from_millis(300),
        ..TextConfig::default()
    };
    let says_binary_only =
        |what: &str, got: Result<Option<newcache_transport::Item>, newcache_transport::Error>| {
            match got {
                Err(e @ newcache_transport::Error::Io { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains("only the binary protocol"), "{what}: {text}");
                    assert!(text.contains("transport=libmemcached"), "{what}: {text}");
                }
                other => panic!("{what}: {other:?}"),
            }
        };
    let blocking = TextTransport::new(config.clone()).unwrap();
    let started = std::time::Instant::now();
    says_binary_only("blocking", blocking.get(b"k"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tokio = TokioTextTransport::new(config).unwrap();
    let started = std::time::Instant::now();
    says_binary_only("async", runtime.block_on(AsyncTransport::get(&tokio, b"k")));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
