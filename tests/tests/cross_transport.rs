//! The transports agree: a value written by one is read by the other (flags travel with it),
//! and the Rust text transport places keys where libmemcached's default does.
#![cfg(feature = "binary")]

use newcache::{Cache, SetOptions, Ttl};
use newcache_testkit::Memcached;
use newcache_transport::Transport;
use newcache_transport_binary::{BinaryConfig, BinaryTransport};
use newcache_transport_text::{TextConfig, TextTransport};

#[test]
fn a_value_written_by_one_transport_is_read_by_the_others() {
    let server = Memcached::start();
    let url = |q: &str| format!("newcache://{}/?flavor=x&{q}", server.addr());
    let caches = [
        Cache::from_url(&url("transport=text")).unwrap(),
        Cache::from_url(&url("binary=true")).unwrap(),
        Cache::from_url(&url("transport=libmemcached")).unwrap(),
    ];
    for (w, writer) in caches.iter().enumerate() {
        let key = format!("written-by-{w}");
        writer.set(&key, "héllo", Ttl::Seconds(300)).unwrap();
        writer
            .set(
                &format!("{key}-n"),
                &41u64,
                SetOptions::new(Ttl::Forever).no_herd(),
            )
            .unwrap();
        writer
            .set(&format!("{key}-s"), &(1u8, "x"), Ttl::Default)
            .unwrap();
        for reader in &caches {
            assert_eq!(
                reader.get::<String>(&key).unwrap().as_deref(),
                Some("héllo")
            );
            assert_eq!(
                reader.get::<(u8, String)>(&format!("{key}-s")).unwrap(),
                Some((1, "x".into()))
            );
            let raw = reader.get_raw(&format!("{key}-n")).unwrap().unwrap();
            assert_eq!((raw.bytes.as_slice(), raw.flags), (&b"41"[..], 4));
        }
        assert_eq!(
            caches[(w + 1) % 3].incr(&format!("{key}-n"), 1).unwrap(),
            42
        );
    }
}

#[test]
fn the_text_transport_places_keys_as_libmemcached_does_by_default() {
    // Placement only: no server needs to run, since neither transport connects to place a key.
    for n in [1usize, 2, 3, 5, 10] {
        let servers: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 20000 + i)).collect();
        let text = TextTransport::new(TextConfig {
            servers: servers.clone(),
            ..TextConfig::default()
        })
        .unwrap();
        let lm = BinaryTransport::new(BinaryConfig::new(servers.clone())).unwrap();
        for i in 0..20_000u32 {
            // Varied lengths and bytes, including non-ASCII (libmemcached hashes signed chars).
            let key = format!("{i}-{}-ключ-{}", "k".repeat((i % 37) as usize), i * 7919);
            assert_eq!(
                text.server_for_key(key.as_bytes()).unwrap(),
                lm.server_index_for_key(key.as_bytes()).unwrap(),
                "{n} servers, key {key:?}"
            );
        }
        assert_eq!(text.name(), "text");
    }
}
