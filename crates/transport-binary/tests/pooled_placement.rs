//! Every pooled handle puts a key where the configured handle says it goes. The handles are
//! `memcached_clone`s of one configured master, and libmemcached 1.1.4's clone does not copy
//! the weighted-ketama flag (`ketama.weighted_`): without care, a pooled handle would build an
//! unweighted ring and store keys on other servers than `server_index_for_key` (and an
//! uncloned pylibmc `Client` with the same behaviors) name.

use newcache_testkit::Memcached;
use newcache_transport::{Store, Transport};
use newcache_transport_binary::{Behaviors, BinaryConfig, BinaryTransport};

fn transport(servers: &[Memcached], behaviors: &[(&str, &str)], binary: bool) -> BinaryTransport {
    let mut b = Behaviors::default();
    for (name, value) in behaviors {
        b.set(name, value).unwrap();
    }
    BinaryTransport::new(BinaryConfig {
        binary_protocol: binary,
        behaviors: b,
        ..BinaryConfig::new(servers.iter().map(Memcached::addr))
    })
    .unwrap()
}

#[test]
fn pooled_handles_store_every_key_on_the_server_the_configured_handle_names() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    for (behaviors, binary) in [
        (&[("ketama_weighted", "true")][..], true),
        (&[("ketama_weighted", "true")][..], false),
        (&[("ketama_weighted", "true"), ("hash", "crc")][..], true),
        (&[("ketama", "true")][..], true),
        (&[("distribution", "consistent_ketama_spy")][..], true),
        (&[("hash", "crc")][..], true),
    ] {
        for s in &servers {
            assert!(s.raw("flush_all\r\n", b"\r\n").starts_with(b"OK"));
        }
        let t = transport(&servers, behaviors, binary);
        let keys: Vec<String> = (0..300).map(|i| format!("placed:{i}")).collect();
        for k in &keys {
            t.store(&Store::set(k.as_bytes(), b"v", 0, 0)).unwrap();
        }
        let mut wrong = 0;
        for k in &keys {
            let named = t.server_index_for_key(k.as_bytes()).unwrap();
            let reply = servers[named].raw(&format!("mg {k} v\r\n"), b"\r\n");
            if !reply.starts_with(b"VA") {
                wrong += 1;
            }
        }
        assert_eq!(
            wrong, 0,
            "{behaviors:?} binary={binary}: keys not where named"
        );
    }
}
