//! A reply never reaches the wrong request: the libmemcached transport behind a relay that
//! duplicates the servers' replies (in the same write, and about 30 ms later), under many
//! threads of gets, multi-gets and sets whose values carry their own key and a checksum.
//! Errors are allowed; another key's value never is.

mod common;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fault_proxy::{FaultProxy, Faults};
use newcache_testkit::Memcached;
use newcache_transport::{Error, Item, Store, Transport};
use newcache_transport_binary::{BinaryConfig, BinaryTransport};

/// What these tests check is which reply reaches which request, not how fast servers
/// answer: generous timeouts keep a loaded 2-core machine (or valgrind) from turning a slow
/// reply into an error where none is allowed.
fn patient(mut config: BinaryConfig) -> BinaryTransport {
    config.behaviors.set("connect_timeout", "5000").unwrap();
    config.behaviors.set("_poll_timeout", "5000").unwrap();
    BinaryTransport::new(config).unwrap()
}

/// FNV-1a, the checksum the values carry.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `key#seq#padding#checksum`: a value that says which key it belongs to.
fn value_for(key: &str, seq: u64) -> Vec<u8> {
    let pad = "x".repeat((seq % 40) as usize);
    let body = format!("{key}#{seq}#{pad}");
    format!("{body}#{:016x}", checksum(body.as_bytes())).into_bytes()
}

/// What is wrong with `item` as the value of `key`, if anything.
fn wrong(key: &str, item: &Item) -> Option<String> {
    let text = String::from_utf8_lossy(&item.value);
    let Some((body, sum)) = text.rsplit_once('#') else {
        return Some(format!("{key}: not a test value: {text:?}"));
    };
    if format!("{:016x}", checksum(body.as_bytes())) != sum {
        return Some(format!("{key}: bad checksum: {text:?}"));
    }
    let owner = body.split('#').next().unwrap_or_default();
    (owner != key).then(|| format!("{key} returned the value of {owner}: {text:?}"))
}

fn kind(e: &Error) -> String {
    let shown = format!("{e:?}");
    shown
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    wrong: Mutex<Vec<String>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn error(&self, e: &Error) {
        *self.errors.lock().unwrap().entry(kind(e)).or_default() += 1;
    }
}

/// `threads` threads of sets, gets and multi-gets of self-describing values for `run`.
fn hammer(t: &BinaryTransport, threads: usize, run: Duration) -> Tally {
    let tally = Tally::default();
    let keys: Vec<String> = (0..64).map(|i| format!("rel:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        // Retried: the relay may garble a reply.
        for _ in 0..5 {
            if t.store(&Store::set(k.as_bytes(), &value_for(k, i as u64), 0, 0))
                .is_ok()
            {
                break;
            }
        }
    }
    let started = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let (tally, keys) = (&tally, &keys);
            s.spawn(move || {
                let mut i = th as u64 * 7919;
                while started.elapsed() < run {
                    i = i.wrapping_add(1);
                    let key = &keys[(i * 31 % keys.len() as u64) as usize];
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    match i % 4 {
                        0 => {
                            let v = value_for(key, i);
                            if let Err(e) = t.store(&Store::set(key.as_bytes(), &v, 0, 0)) {
                                tally.error(&e);
                            }
                        }
                        1 => {
                            let batch: Vec<&[u8]> = (0..6)
                                .map(|j| {
                                    keys[((i + j * 11) % keys.len() as u64) as usize].as_bytes()
                                })
                                .collect();
                            match t.get_many(&batch) {
                                Ok(items) => {
                                    assert_eq!(items.len(), batch.len());
                                    for (k, item) in batch.iter().zip(items) {
                                        let k = std::str::from_utf8(k).unwrap();
                                        if let Some(w) = item.as_ref().and_then(|it| wrong(k, it)) {
                                            tally.wrong.lock().unwrap().push(w);
                                        }
                                    }
                                }
                                Err(e) => tally.error(&e),
                            }
                        }
                        _ => match t.get(key.as_bytes()) {
                            Ok(Some(item)) => {
                                if let Some(w) = wrong(key, &item) {
                                    tally.wrong.lock().unwrap().push(w);
                                }
                            }
                            Ok(None) => {}
                            Err(e) => tally.error(&e),
                        },
                    }
                }
            });
        }
    });
    tally
}

fn report(what: &str, tally: &Tally, proxies: &[FaultProxy]) {
    let wrong = tally.wrong.lock().unwrap();
    let dups: u64 = proxies.iter().map(FaultProxy::duplicated).sum();
    eprintln!(
        "{what}: {} operations, {dups} duplicated replies, {} wrong values, errors {:?}",
        tally.ops.load(Ordering::Relaxed),
        wrong.len(),
        tally.errors.lock().unwrap()
    );
    assert!(
        wrong.is_empty(),
        "{what}: {} values of another key (first: {:?})",
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        dups > 50,
        "{what}: the relay duplicated only {dups} replies"
    );
}

fn duplicated_replies_never_give_another_keys_value(binary: bool) {
    let servers: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    for (faults, label) in [
        (
            Faults {
                one_in: 15,
                same_write_only: true,
                delay: Duration::ZERO,
            },
            "same write",
        ),
        (
            Faults {
                one_in: 15,
                same_write_only: false,
                delay: Duration::from_millis(30),
            },
            "same write and 30 ms later",
        ),
    ] {
        let proxies: Vec<FaultProxy> = servers
            .iter()
            .map(|m| FaultProxy::start(m.socket_addr(), faults))
            .collect();
        // The default timeouts: errors are allowed here, and a garbled reply costs one.
        let t = BinaryTransport::new(BinaryConfig {
            binary_protocol: binary,
            pool_size: 8,
            ..BinaryConfig::new(proxies.iter().map(FaultProxy::addr))
        })
        .unwrap();
        let tally = hammer(&t, 12, Duration::from_secs(3));
        report(&format!("binary {binary}, {label}"), &tally, &proxies);
    }
}

both_modes!(
    duplicated_replies_never_give_another_keys_value,
    a_late_copy_waiting_on_an_idle_connection_is_never_read,
);

/// Without faults nothing fails: the checks add no false alarms.
#[test]
fn a_clean_run_has_no_errors() {
    let servers: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    for binary in [true, false] {
        let t = patient(BinaryConfig {
            binary_protocol: binary,
            ..BinaryConfig::new(servers.iter().map(Memcached::addr))
        });
        let tally = hammer(&t, 8, Duration::from_millis(1500));
        let errors = tally.errors.lock().unwrap();
        assert!(errors.is_empty(), "binary {binary}: {errors:?}");
        assert!(tally.wrong.lock().unwrap().is_empty());
    }
}

/// Every reply copied, and the copy sent after the request completed, while the handle is
/// idle in the pool: the copy waits unread on a pooled connection. Before each request the
/// transport finds it and drops the connection, so every request reads its own reply on a
/// fresh one. (The copies are released by the test, so no copy races a request.)
fn a_late_copy_waiting_on_an_idle_connection_is_never_read(binary: bool) {
    let m = Memcached::start();
    let proxy = FaultProxy::holding_copies(m.socket_addr());
    let t = patient(BinaryConfig {
        binary_protocol: binary,
        pool_size: 1,
        ..BinaryConfig::new([proxy.addr()])
    });
    let connections = m.stat("total_connections");
    let mut released = 0;
    // The copies of the last request's replies, sent now; they arrive at once on loopback.
    let mut release = || {
        released += proxy.release_held();
        std::thread::sleep(Duration::from_millis(5));
    };
    for i in 0..15u64 {
        let key = format!("late:{i}");
        let value = value_for(&key, i);
        assert_eq!(
            t.store(&Store::set(key.as_bytes(), &value, 0, 0)).unwrap(),
            newcache_transport::StoreStatus::Stored,
            "set {i}"
        );
        release();
        let item = t.get(key.as_bytes()).unwrap().expect("hit");
        assert_eq!(item.value, value, "get {i}");
        release();
        let batch = [key.as_bytes(), b"late:none"];
        let items = t.get_many(&batch).unwrap();
        assert_eq!(items[0].as_ref().map(|i| &i.value), Some(&value));
        assert!(items[1].is_none());
        release();
    }
    assert!(released >= 45, "{released} copies");
    // A fresh connection for every request: the stale ones were dropped.
    let opened = m.stat("total_connections") - connections;
    assert!(opened >= 45, "{opened} connections");
}

/// A server that answers every `get` with another key's item: the item is refused
/// (`Error::Protocol` naming both keys), never returned, and the connection is dropped.
#[test]
fn an_item_of_another_key_is_a_protocol_error() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            counter.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let reply: &[u8] = if line.starts_with("get") {
                        b"VALUE someone:else 0 5 7\r\nhello\r\nEND\r\n"
                    } else {
                        b"ERROR\r\n"
                    };
                    if writer.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let t = BinaryTransport::new(BinaryConfig {
        binary_protocol: false,
        ..BinaryConfig::new([addr.clone()])
    })
    .unwrap();
    for round in 0..3 {
        for result in [
            t.get(b"mine").map(|_| ()),
            t.get_many(&[b"mine", b"also:mine"]).map(|_| ()),
        ] {
            match result {
                Err(Error::Protocol { detail, .. }) => {
                    assert!(detail.contains("someone:else"), "{detail}")
                }
                other => panic!("round {round}: expected Error::Protocol, got {other:?}"),
            }
        }
    }
    // Each refused reply dropped its connection.
    assert!(accepted.load(Ordering::Relaxed) >= 6);
}
