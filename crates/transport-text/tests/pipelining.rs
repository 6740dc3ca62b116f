//! Pipelined multi-key operations on real memcached: batches far larger than the socket
//! buffers complete (no write-write deadlock with the server), and every server of a
//! cluster gets its request before any reply is read.

use newcache_testkit::Memcached;
use newcache_transport::{Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport};

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
