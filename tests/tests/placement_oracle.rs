//! Our placement (`newcache-placement`, used by the text transport) against libmemcached's own
//! `memcached_server_by_key`, for every behavior combination we claim identical.
//!
//! Clusters of 1, 2, 3, 5 and 10 servers, each three ways (default port, other ports, other
//! ports with weights), and 100,000 keys of every length from 1 to 250 bytes, ASCII and
//! bytes of 0x80 and above (which libmemcached hashes as signed chars). No server is
//! contacted: libmemcached places keys without I/O.
#![cfg(feature = "binary")]

use newcache_placement::{Behaviors as PlacementBehaviors, Ring, Server};
use newcache_transport_binary::{Behaviors, BinaryConfig, BinaryTransport};

const KEYS: usize = 100_000;
const SIZES: [usize; 5] = [1, 2, 3, 5, 10];

/// Deterministic keys of varied length and content (no space or control byte).
fn keys() -> Vec<Vec<u8>> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..KEYS)
        .map(|i| {
            let len = 1 + (next() % 250) as usize;
            (0..len)
                .map(|_| {
                    let r = next();
                    if i % 3 == 0 && r % 5 == 0 {
                        0x80 + (r >> 8) as u8 % 0x80 // high bytes: sign extension
                    } else {
                        0x21 + ((r >> 8) % 0x5e) as u8 // printable ASCII
                    }
                })
                .collect()
        })
        .collect()
}

/// The three shapes of each cluster size: host strings exactly as a user writes them.
fn clusters() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for n in SIZES {
        out.push((
            format!("{n} servers, port 11211"),
            (0..n)
                .map(|i| format!("10.0.{}.{}", i / 4, 10 + i))
                .collect(),
        ));
        out.push((
            format!("{n} servers, other ports"),
            (0..n)
                .map(|i| format!("cache-{i}.example:{}", 11300 + i))
                .collect(),
        ));
        out.push((
            format!("{n} servers, other ports, weights"),
            (0..n)
                .map(|i| format!("cache-{i}.example:{}:{}", 11300 + i, 1 + i % 3))
                .collect(),
        ));
    }
    out
}

/// Checks one behavior combination on every cluster, every key.
fn prove(behaviors: &[(&str, &str)]) {
    let keys = keys();
    for (shape, entries) in clusters() {
        let mut lm = Behaviors::default();
        let mut ours = PlacementBehaviors::default();
        for (name, value) in behaviors {
            lm.set(name, value).expect("libmemcached behavior");
            assert!(ours.set(name, value).expect("placement behavior"), "{name}");
        }
        let oracle = BinaryTransport::new(BinaryConfig {
            behaviors: lm,
            ..BinaryConfig::new(entries.clone())
        })
        .expect("libmemcached configuration");
        let servers: Vec<Server> = entries
            .iter()
            .map(|e| Server::parse(e).expect("server entry"))
            .collect();
        let ring = Ring::new(&servers, &ours.settings(&servers));
        let mut counts = vec![0usize; servers.len()];
        for key in &keys {
            let want = oracle
                .server_index_for_key(key)
                .expect("libmemcached places");
            let got = ring.server_for_key(key).expect("we place");
            assert_eq!(
                got,
                want,
                "{behaviors:?}, {shape}: key {:?} ({} bytes) went to {} where libmemcached puts it on {}",
                String::from_utf8_lossy(key),
                key.len(),
                entries[got],
                entries[want]
            );
            counts[got] += 1;
        }
        // `crc` hashes below 0x8000 while weighted (MD5) points spread over 32 bits: in
        // libmemcached too, every key then lands on the first point's server.
        let degenerate = ours.settings(&servers).weighted
            && ours.settings(&servers).hash == newcache_placement::Hash::Crc;
        assert!(
            degenerate || counts.iter().all(|&c| c > 0),
            "{behaviors:?}, {shape}: a server got no key: {counts:?}"
        );
    }
}

#[test]
fn modula_one_at_a_time_the_default() {
    prove(&[]);
}

#[test]
fn modula_crc() {
    prove(&[("hash", "crc")]);
}

#[test]
fn modula_md5() {
    prove(&[("hash", "md5")]);
}

#[test]
fn modula_fnv1a_32() {
    prove(&[("hash", "fnv1a_32")]);
}

#[test]
fn modula_fnv1_32() {
    prove(&[("hash", "fnv1_32")]);
}

#[test]
fn modula_fnv1_64() {
    prove(&[("hash", "fnv1_64")]);
}

#[test]
fn modula_fnv1a_64() {
    prove(&[("hash", "fnv1a_64")]);
}

#[test]
fn modula_sorted_hosts() {
    prove(&[("_sort_hosts", "true")]);
}

#[test]
fn ketama_as_pylibmc_sets_it() {
    // pylibmc's {"ketama": True}: the ring, with the one-at-a-time key hash.
    prove(&[("ketama", "true")]);
}

#[test]
fn ketama_with_md5_keys() {
    prove(&[("ketama", "true"), ("hash", "md5")]);
}

#[test]
fn ketama_with_crc_keys() {
    prove(&[("ketama", "true"), ("hash", "crc")]);
}

#[test]
fn ketama_weighted() {
    // MD5 points and MD5 keys, 160 points per server at equal weights.
    prove(&[("ketama_weighted", "true")]);
}

#[test]
fn consistent() {
    prove(&[("distribution", "consistent")]);
}

#[test]
fn consistent_weighted() {
    prove(&[("distribution", "consistent weighted")]);
}

#[test]
fn consistent_ketama_spy() {
    prove(&[("distribution", "consistent ketama spy")]);
}

#[test]
fn consistent_ketama_spy_with_md5_keys() {
    // spymemcached's own setup: ketama points and keys both by MD5.
    prove(&[("distribution", "consistent ketama spy"), ("hash", "md5")]);
}
