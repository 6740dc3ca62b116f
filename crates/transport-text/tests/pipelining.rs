//! Pipelined multi-key operations on real memcached: every server of a cluster gets its
//! request before any reply is read (relays that hold replies prove it), batches far larger
//! than the socket buffers complete (no write-write deadlock with the server), and quiet
//! deletes (`noreply`) get no per-key replies yet leave every connection in step.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use newcache_testkit::Memcached;
use newcache_transport::{Store, Transport};
use newcache_transport_text::{Protocol, TextConfig, TextTransport};

fn transport(servers: Vec<String>) -> TextTransport {
    TextTransport::new(TextConfig {
        servers,
        ..TextConfig::default()
    })
    .expect("transport")
}

/// 50,000 keys of 1 KB: a 50 MB `set_many` and a 50 MB multi-get reply. memcached stops
/// reading a connection whose replies it cannot send; a client that wrote the whole batch
/// before reading any reply would block in its write until the write timeout.
fn big_batches(servers: &[Memcached]) {
    const KEYS: usize = 50_000;
    let t = transport(servers.iter().map(Memcached::addr).collect());
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("big-batch:{i:06}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| {
            let mut v = format!("{i:06}:").into_bytes();
            v.resize(1024, b'x');
            v
        })
        .collect();
    let requests: Vec<Store<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| Store::set(k, v, 7, 600))
        .collect();
    let statuses = t.store_many(&requests).expect("a 50 MB set_many");
    assert_eq!(statuses.len(), KEYS);
    assert!(statuses.iter().all(|s| s.is_stored()));
    let stored: u64 = servers.iter().map(|m| m.stat("curr_items")).sum();
    assert_eq!(
        stored, KEYS as u64,
        "every item is on a server (none evicted)"
    );

    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let items = t.get_many(&refs).expect("a 50 MB multi-get");
    for ((item, value), key) in items.iter().zip(&values).zip(&keys) {
        let item = item
            .as_ref()
            .unwrap_or_else(|| panic!("{} missing", String::from_utf8_lossy(key)));
        assert_eq!((&item.value, item.flags), (value, 7));
    }

    let deleted = t.delete_many(&refs).expect("a 50,000-key delete_many");
    assert!(deleted.iter().all(|&d| d));
    let stored: u64 = servers.iter().map(|m| m.stat("curr_items")).sum();
    assert_eq!(stored, 0);
    // The connections came through whole: the next request works at once.
    t.store(&Store::set(b"after", b"v", 0, 60)).unwrap();
    assert!(t.get(b"after").unwrap().is_some());
}

#[test]
fn a_50_mb_batch_to_one_server_does_not_deadlock() {
    big_batches(&[Memcached::with_args(&["-m", "256"])]);
}

#[test]
fn a_50_mb_batch_over_three_servers_does_not_deadlock() {
    let servers: Vec<Memcached> = (0..3)
        .map(|_| Memcached::with_args(&["-m", "128"]))
        .collect();
    big_batches(&servers);
}

/// A TCP relay on loopback in front of one memcached, counting the bytes it passes back;
/// relays sharing an armed [`Gate`] hold every reply until each of them has received a
/// request.
struct Relay {
    addr: String,
    to_client: Arc<AtomicUsize>,
}

/// Shared by the relays in front of a cluster: while armed, a relay holds the replies it
/// gets from its server until every relay has received (and passed on) a request.
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    armed: bool,
    arrived: Vec<bool>,
}

impl Gate {
    fn new(relays: usize) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(GateState {
                armed: false,
                arrived: vec![false; relays],
            }),
            changed: Condvar::new(),
        })
    }

    /// From now on, replies wait until every relay has received a request.
    fn arm(&self) {
        let mut state = self.state.lock().unwrap();
        state.armed = true;
        state.arrived.iter_mut().for_each(|a| *a = false);
    }

    fn arrived(&self, relay: usize) {
        let mut state = self.state.lock().unwrap();
        if state.armed {
            state.arrived[relay] = true;
            self.changed.notify_all();
        }
    }

    /// Waits until the replies may go (at most 10 s, so no thread outlives a failed test
    /// for long).
    fn wait(&self) {
        let state = self.state.lock().unwrap();
        let _ = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(10), |s| {
                s.armed && !s.arrived.iter().all(|&a| a)
            })
            .unwrap();
    }
}

impl Relay {
    fn start(upstream: SocketAddr, id: usize, gate: Arc<Gate>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let to_client = Arc::new(AtomicUsize::new(0));
        let counter = to_client.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
                let (mut s_in, mut s_out) = (server.try_clone().unwrap(), server);
                let gate_up = gate.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        gate_up.arrived(id);
                    }
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                let gate_down = gate.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        gate_down.wait();
                        counter.fetch_add(n, Ordering::SeqCst);
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Both);
                });
            }
        });
        Relay { addr, to_client }
    }

    fn bytes_to_client(&self) -> usize {
        self.to_client.load(Ordering::SeqCst)
    }
}

/// Three memcached processes, a relay in front of each, and a text transport over the
/// relays.
struct RelayedCluster {
    _servers: Vec<Memcached>,
    relays: Vec<Relay>,
    gate: Arc<Gate>,
    transport: TextTransport,
}

impl RelayedCluster {
    fn start(protocol: Protocol) -> RelayedCluster {
        let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
        let gate = Gate::new(servers.len());
        let relays: Vec<Relay> = servers
            .iter()
            .enumerate()
            .map(|(id, m)| Relay::start(m.socket_addr(), id, gate.clone()))
            .collect();
        let transport = TextTransport::new(TextConfig {
            servers: relays.iter().map(|r| r.addr.clone()).collect(),
            read_timeout: Duration::from_millis(1000),
            write_timeout: Duration::from_millis(1000),
            protocol,
            ..TextConfig::default()
        })
        .expect("transport");
        RelayedCluster {
            _servers: servers,
            relays,
            gate,
            transport,
        }
    }

    fn bytes_to_client(&self) -> usize {
        self.relays.iter().map(Relay::bytes_to_client).sum()
    }
}

fn hundred_keys(prefix: &str) -> Vec<Vec<u8>> {
    (0..100)
        .map(|i| format!("{prefix}:{i}").into_bytes())
        .collect()
}

#[test]
fn every_server_gets_its_request_before_any_reply_is_read() {
    // Auto: the first batch probes the three servers for meta, in one round trip too.
    every_server_gets_its_request_first(Protocol::Auto);
    every_server_gets_its_request_first(Protocol::Classic);
}

fn every_server_gets_its_request_first(protocol: Protocol) {
    let c = RelayedCluster::start(protocol);
    let t = &c.transport;
    let keys = hundred_keys("pipelined");
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let homes: Vec<usize> = refs.iter().map(|k| t.server_for_key(k).unwrap()).collect();
    assert!(
        (0..3).all(|s| homes.contains(&s)),
        "the keys span the three servers"
    );

    // Each relay holds its server's reply until all three have a request: only a client
    // that writes every server's request before reading any reply gets an answer in time.
    c.gate.arm();
    let stored = t
        .store_many(
            &refs
                .iter()
                .map(|k| Store::set(k, b"v", 0, 60))
                .collect::<Vec<_>>(),
        )
        .expect("set_many is pipelined");
    assert!(stored.iter().all(|s| s.is_stored()));
    c.gate.arm();
    let items = t.get_many(&refs).expect("get_many is pipelined");
    assert!(items.iter().all(Option::is_some));
    c.gate.arm();
    let deleted = t
        .delete_many(&refs[..50])
        .expect("delete_many is pipelined");
    assert!(deleted.iter().all(|&d| d));
    c.gate.arm();
    t.delete_many_quiet(&refs[50..])
        .expect("delete_many_quiet is pipelined");
    c.gate.arm();
    assert!(t.get_many(&refs).unwrap().iter().all(Option::is_none));

    // The control: a request to one server alone (as a client that read servers one after
    // another would send first) waits on the gate and times out.
    c.gate.arm();
    let one = refs
        .iter()
        .find(|k| t.server_for_key(k).unwrap() == 0)
        .unwrap();
    assert!(
        matches!(t.get(one), Err(newcache_transport::Error::Timeout { .. })),
        "the gate holds a lone server's reply"
    );
}

#[test]
fn quiet_deletes_get_no_per_key_replies_and_leave_connections_in_step() {
    quiet_deletes(Protocol::Auto);
    quiet_deletes(Protocol::Classic);
}

fn quiet_deletes(protocol: Protocol) {
    let c = RelayedCluster::start(protocol);
    let t = &c.transport;
    let keys = hundred_keys("quiet");
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    t.store_many(
        &refs
            .iter()
            .map(|k| Store::set(k, b"v", 0, 60))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let version = t.stats().unwrap()[0].stats["version"].clone();

    // 80 present keys and 20 missing ones.
    let missing = hundred_keys("quiet-missing");
    let mut batch: Vec<&[u8]> = refs[..80].to_vec();
    batch.extend(missing.iter().take(20).map(Vec::as_slice));
    let before = c.bytes_to_client();
    t.delete_many_quiet(&batch).expect("quiet deletes");
    let back = c.bytes_to_client() - before;
    if protocol == Protocol::Classic {
        // The only bytes back are one VERSION per server.
        assert_eq!(
            back,
            3 * format!("VERSION {version}\r\n").len(),
            "no per-key reply"
        );
    } else {
        // memcached leaves out md's HD with q: back come a NF for each missing key (with
        // its key and token) and one reply per server for its last delete.
        let most = |key_len: usize| "NF k O4294967295\r\n".len() + key_len;
        let bound = 20 * most("quiet-missing:19".len()) + 3 * most("quiet-missing:19".len());
        assert!(back <= bound, "{back} bytes back, more than {bound}");
        assert!(t.server_protocol(0) == Some(Protocol::Meta));
    }

    let items = t.get_many(&refs).unwrap();
    assert!(items[..80].iter().all(Option::is_none), "deleted");
    assert!(items[80..].iter().all(Option::is_some), "untouched");
    // The connections were left in step: ordinary replies line up with their requests.
    for k in &refs[80..] {
        assert!(t.delete(k).unwrap());
        assert!(!t.delete(k).unwrap());
    }
    // Invalid keys send nothing; an empty batch is nothing to do.
    let before = c.bytes_to_client();
    assert!(matches!(
        t.delete_many_quiet(&[b"ok", b"bad key"]),
        Err(newcache_transport::Error::InvalidKey { .. })
    ));
    t.delete_many_quiet(&[]).unwrap();
    assert_eq!(c.bytes_to_client(), before);
}

/// A fake server that answers every read with `reply`.
fn fake_server(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn quiet_deletes_read_errors_and_stray_replies_up_to_the_version_line() {
    let one = |addr: String| {
        TextTransport::new(TextConfig {
            servers: vec![addr],
            read_timeout: Duration::from_millis(300),
            protocol: Protocol::Classic,
            ..TextConfig::default()
        })
        .unwrap()
    };
    // An error among the noreply commands is returned, typed.
    let t = one(fake_server(
        b"SERVER_ERROR out of memory\r\nVERSION 1.6.18\r\n",
    ));
    assert!(matches!(
        t.delete_many_quiet(&[b"a", b"b"]),
        Err(newcache_transport::Error::Server { .. })
    ));
    // A server that ignores noreply and answers each delete is still read to its VERSION.
    let t = one(fake_server(b"DELETED\r\nNOT_FOUND\r\nVERSION 1.4.0\r\n"));
    t.delete_many_quiet(&[b"a", b"b"]).unwrap();
    // More lines than commands, and no VERSION: a protocol error, not a hang.
    let t = one(fake_server(b"DELETED\r\nDELETED\r\nDELETED\r\n"));
    assert!(matches!(
        t.delete_many_quiet(&[b"a", b"b"]),
        Err(newcache_transport::Error::Protocol { .. })
    ));
}
