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

/// A memcached that takes only the binary protocol (`-B binary`; `-S` for SASL does the
/// same) closes a connection once it has a binary header's 24 bytes, without a reply, and
/// waits for them before: both transports fail with an I/O error that names that server
/// and what to use instead, at once (well within the read timeout), whichever protocol
/// they were told to speak. It said only that the connection closed before any reply came;
/// in `auto` every call waited out the read timeout on the probe's `version`, and with a
/// protocol given `stats` and `flush_all` did ("overloaded or hung": an outside audit).
/// (A request shorter than a header, a meta get of a one-byte key, still waits: the server
/// waits for the rest of the header. A cache's keys are hashed to 40 bytes and more.)
#[test]
fn a_binary_only_server_is_named_as_such() {
    use newcache_transport_text::Protocol;
    const KEY: &[u8] = b"a-key-as-long-as-a-header";
    let server = Memcached::with_args(&["-B", "binary"]);
    let says_binary_only =
        |what: &str, got: Result<(), newcache_transport::Error>, started: std::time::Instant| {
            match got {
                Err(e @ newcache_transport::Error::Io { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains("only the binary protocol"), "{what}: {text}");
                    assert!(text.contains("transport=libmemcached"), "{what}: {text}");
                }
                other => panic!("{what}: {other:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{what}: {:?}",
                started.elapsed()
            );
        };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = std::time::Instant::now;
    for protocol in [Protocol::Auto, Protocol::Classic, Protocol::Meta] {
        let config = TextConfig {
            servers: vec![server.addr()],
            read_timeout: Duration::from_secs(5),
            protocol,
            ..TextConfig::default()
        };
        let blocking = TextTransport::new(config.clone()).unwrap();
        let tokio = TokioTextTransport::new(config).unwrap();
        let what = |op: &str, side: &str| format!("{protocol:?} {op} ({side})");
        // A `get` told to speak the classic protocol is a connection cut, as a proxy's
        // would be; and so is one the async transport was told to speak meta to.
        if protocol != Protocol::Classic {
            let started = now();
            let got = blocking.get(KEY).map(drop);
            says_binary_only(&what("get", "blocking"), got, started);
        }
        if protocol == Protocol::Auto {
            let started = now();
            let got = runtime.block_on(AsyncTransport::get(&tokio, KEY)).map(drop);
            says_binary_only(&what("get", "async"), got, started);
        }
        let started = now();
        says_binary_only(
            &what("stats", "blocking"),
            blocking.stats().map(drop),
            started,
        );
        let started = now();
        let got = runtime.block_on(AsyncTransport::stats(&tokio)).map(drop);
        says_binary_only(&what("stats", "async"), got, started);
        let started = now();
        says_binary_only(
            &what("flush_all", "blocking"),
            blocking.flush_all(),
            started,
        );
        let started = now();
        let got = runtime.block_on(AsyncTransport::flush_all(&tokio));
        says_binary_only(&what("flush_all", "async"), got, started);
    }
}

/// memcached over its connection limit (`-c`) answers a connection it accepts with `ERROR
/// Too many open connections` and closes it, before reading from it: both transports fail
/// the request with the server's error saying so (the request did not run), in either
/// protocol, and the probe takes it for no verdict. It was "unexpected reply line", a reply
/// that may not answer its request (an outside audit), and a probe could have taken it for
/// the classic protocol's `ERROR`.
#[test]
fn a_server_at_its_connection_limit_says_so() {
    let server = Memcached::with_args(&["-c", "20", "-t", "1"]);
    // Connections (to the plain port) until memcached refuses one (it counts its own
    // sockets too).
    let held = server.connections_to_the_limit(20);
    let refused = |what: &str, got: Result<(), newcache_transport::Error>| match got {
        Err(newcache_transport::Error::Server { message, .. }) => {
            assert!(message.contains("connection limit"), "{what}: {message}");
            assert!(message.contains("did not run"), "{what}: {message}");
        }
        other => panic!("{what}: {other:?}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for protocol in [Protocol::Auto, Protocol::Classic, Protocol::Meta] {
        let config = TextConfig {
            servers: vec![server.addr()],
            protocol,
            ..TextConfig::default()
        };
        let blocking = TextTransport::new(config.clone()).unwrap();
        refused(
            &format!("{protocol:?} blocking"),
            blocking.get(b"k").map(drop),
        );
        let tokio = TokioTextTransport::new(config.clone()).unwrap();
        let got = runtime
            .block_on(AsyncTransport::get(&tokio, b"k"))
            .map(drop);
        refused(&format!("{protocol:?} async"), got);
        // Batches: a large write meets the server's close before its line is read ("reset
        // by peer", an outside review, 6 of 6); each on a transport of its own, whose first
        // connection it is.
        let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("k{i}").into_bytes()).collect();
        let value = vec![b'v'; 10_000];
        let stores: Vec<Store<'_>> = keys.iter().map(|k| Store::set(k, &value, 0, 60)).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let fresh = TextTransport::new(config.clone()).unwrap();
        refused(
            &format!("{protocol:?} store_many"),
            fresh.store_many(&stores).map(drop),
        );
        let fresh = TextTransport::new(config).unwrap();
        refused(
            &format!("{protocol:?} delete_many"),
            fresh.delete_many(&refs).map(drop),
        );
    }
    drop(held);
}
