//! Our placement (`newcache-placement`, used by the text transport) against libmemcached's own
//! `memcached_server_by_key`, for every behavior combination we claim identical.
//!
//! Clusters of 1, 2, 3, 5 and 10 servers, each four ways (default port, default port with
//! weights, other ports, other ports with weights), and 100,000 keys of every length from 1
//! to 250 bytes, ASCII and bytes of 0x80 and above (which libmemcached hashes as signed
//! chars). Each key is placed three ways and all must agree with libmemcached: by the pure
//! [`Ring`], and by a [`TextTransport`] configured through `set_behavior` (the path the
//! facade uses). On consistent rings, the ring rebuilt without one ejected server is
//! checked too, against libmemcached given the list without that server (see
//! [`ejected`]); `an_ejected_servers_keys_go_where_libmemcached_sends_them` checks the same
//! with libmemcached really ejecting a killed server. The pure checks contact no server:
//! libmemcached places keys without I/O.
#![cfg(feature = "binary")]

use newcache_placement::{Behaviors as PlacementBehaviors, Ring, Server};
use newcache_testkit::Memcached;
use newcache_transport::{Store, Transport};
use newcache_transport_binary::{Behaviors, BinaryConfig, BinaryTransport};
use newcache_transport_text::{TextConfig, TextTransport};

const KEYS: usize = 100_000;
const SIZES: [usize; 5] = [1, 2, 3, 5, 10];

/// Deterministic keys of varied length and content (no space or control byte), made once
/// and shared by every test: made per test, in this unoptimised test code, they were a tenth
/// of each test's time (12.5 million random bytes, 17 times over).
fn keys() -> &'static [Vec<u8>] {
    static KEYS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    KEYS.get_or_init(make_keys)
}

fn make_keys() -> Vec<Vec<u8>> {
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

/// The four shapes of each cluster size: host strings exactly as a user writes them.
fn clusters() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for n in SIZES {
        out.push((
            format!("{n} servers, port 11211"),
            (0..n)
                .map(|i| format!("10.0.{}.{}", i / 4, 10 + i))
                .collect(),
        ));
        // libmemcached leaves ":11211" out of ketama point names, weighted or not.
        out.push((
            format!("{n} servers, port 11211, weights"),
            (0..n)
                .map(|i| format!("cache-{i}.example:11211:{}", 1 + (i + 1) % 3))
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

fn libmemcached(behaviors: &[(&str, &str)], entries: &[String]) -> BinaryTransport {
    let mut lm = Behaviors::default();
    for (name, value) in behaviors {
        lm.set(name, value).expect("libmemcached behavior");
    }
    BinaryTransport::new(BinaryConfig {
        behaviors: lm,
        ..BinaryConfig::new(entries.to_vec())
    })
    .expect("libmemcached configuration")
}

fn text_transport(behaviors: &[(&str, &str)], entries: &[String]) -> TextTransport {
    let mut config = TextConfig {
        servers: entries.to_vec(),
        ..TextConfig::default()
    };
    for (name, value) in behaviors {
        config
            .set_behavior(name, value)
            .expect("text transport behavior");
    }
    TextTransport::new(config).expect("text transport")
}

/// The server to eject from a cluster for the ejection check: one whose removal leaves the
/// resolved settings as they are (libmemcached turns a consistent ring weighted when a
/// server of weight above 1 is added, so removing the only such server would change the
/// ring's kind, not only its servers). `None` for one server, or when every choice would.
fn ejected(ours: &PlacementBehaviors, servers: &[Server]) -> Option<usize> {
    if servers.len() < 2 {
        return None;
    }
    let full = ours.settings(servers);
    let mid = servers.len() / 2;
    (mid..servers.len()).chain(0..mid).find(|&r| {
        let rest: Vec<Server> = without(servers, r);
        ours.settings(&rest) == full
    })
}

fn without<T: Clone>(items: &[T], index: usize) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, x)| x.clone())
        .collect()
}

/// Checks one behavior combination on every cluster, every key: the pure ring and the text
/// transport against libmemcached, and on consistent rings the ring without one ejected
/// server against libmemcached without that server (every fifth key: 20,000 per cluster).
///
/// Why the list without the server is libmemcached's own ejected ring: its
/// `update_continuum` (`hosts.cc`), with `remove_failed` on, skips every server whose retry
/// time is in the future and computes the rest (point names from host and port, the live
/// server count, the live servers' total weight) exactly as for a list that never had it;
/// the continuum's entries keep the full list's indices, which we map back.
/// `an_ejected_servers_keys_go_where_libmemcached_sends_them` confirms it on real servers.
fn prove(behaviors: &[(&str, &str)]) {
    let keys = keys();
    let mut ejection_checks = 0;
    for (shape, entries) in clusters() {
        let mut ours = PlacementBehaviors::default();
        for (name, value) in behaviors {
            assert!(ours.set(name, value).expect("placement behavior"), "{name}");
        }
        let oracle = libmemcached(behaviors, &entries);
        let text = text_transport(behaviors, &entries);
        let servers: Vec<Server> = entries
            .iter()
            .map(|e| Server::parse(e).expect("server entry"))
            .collect();
        let settings = ours.settings(&servers);
        assert_eq!(text.placement(), &settings, "{shape}");
        let ring = Ring::new(&servers, &settings);
        let removed = ejected(&ours, &servers).filter(|_| settings.distribution.is_consistent());
        let after_ejection = removed.map(|r| {
            let ring = Ring::with_live(&servers, &settings, |i| i != r);
            let oracle = libmemcached(behaviors, &without(&entries, r));
            (r, ring, oracle)
        });
        let mut counts = vec![0usize; servers.len()];
        for (n, key) in keys.iter().enumerate() {
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
            assert_eq!(
                text.server_for_key(key).expect("the text transport places"),
                want,
                "{behaviors:?}, {shape}: the text transport disagrees on {:?}",
                String::from_utf8_lossy(key)
            );
            counts[got] += 1;
            // Every fifth key after an ejection (libmemcached's lookups are the cost).
            if let Some((r, ring, oracle)) = after_ejection.as_ref().filter(|_| n % 5 == 0) {
                let want = oracle
                    .server_index_for_key(key)
                    .expect("libmemcached places");
                // Back to indices of the full list.
                let want = if want >= *r { want + 1 } else { want };
                let got = ring.server_for_key(key).expect("we place");
                assert_eq!(
                    got, want,
                    "{behaviors:?}, {shape}, {} ejected: key {:?} went to {} where libmemcached puts it on {}",
                    entries[*r],
                    String::from_utf8_lossy(key),
                    entries[got],
                    entries[want]
                );
            }
        }
        ejection_checks += usize::from(after_ejection.is_some());
        // `crc` hashes below 0x8000 while weighted (MD5) points spread over 32 bits: in
        // libmemcached too, every key then lands on the first point's server.
        let degenerate = settings.weighted && settings.hash == newcache_placement::Hash::Crc;
        assert!(
            degenerate || counts.iter().all(|&c| c > 0),
            "{behaviors:?}, {shape}: a server got no key: {counts:?}"
        );
    }
    let consistent = {
        let mut b = PlacementBehaviors::default();
        for (name, value) in behaviors {
            b.set(name, value).expect("placement behavior");
        }
        b.settings(&[]).distribution.is_consistent()
    };
    if consistent {
        // Every cluster of 2 or more servers (16 of 20) has a server whose ejection keeps
        // the ring's kind.
        assert_eq!(ejection_checks, 16, "{behaviors:?}");
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

/// Which live server holds each key, read back from the servers themselves; then empties
/// them.
fn holders(servers: &[Memcached], live: &[usize], keys: &[&[u8]]) -> Vec<Option<usize>> {
    let mut out = vec![None; keys.len()];
    for &j in live {
        let one = TextTransport::new(TextConfig {
            servers: vec![servers[j].addr()],
            ..TextConfig::default()
        })
        .expect("one-server transport");
        for (slot, item) in out.iter_mut().zip(one.get_many(keys).expect("read back")) {
            if item.is_some() {
                assert!(slot.is_none(), "a key on two servers");
                *slot = Some(j);
            }
        }
        one.flush_all().expect("flush");
    }
    out
}

#[test]
fn an_ejected_servers_keys_go_where_libmemcached_sends_them() {
    // Real servers, one killed; libmemcached (pylibmc's settings: remove_failed) really
    // ejects it, and so does the text transport. Every key is then written through each
    // and found on the server the ring without the dead one names.
    //
    // Not `ketama_weighted` without weights: the transport's libmemcached handles are
    // `memcached_clone`s, and libmemcached 1.1.4's clone does not copy the weighted flag
    // that behavior sets (weights above 1 in the server list set it again), so a clone
    // places keys as `ketama` with `hash=md5` even before any ejection (pylibmc's
    // `Client.clone()` and `ClientPool` too). The ejected weighted ring is covered by the
    // weighted cluster below and, for `ketama_weighted`, by `prove`.
    let cases: [(&[(&str, &str)], bool); 2] = [
        (&[("ketama", "true")], false),
        (&[("ketama", "true")], true),
    ];
    let failover = [
        ("remove_failed", "1"),
        ("failure_limit", "1"),
        ("retry_timeout", "60"),
        ("dead_timeout", "60"),
    ];
    let keys: Vec<&[u8]> = keys().iter().take(3000).map(Vec::as_slice).collect();
    for (placement, weights) in cases {
        let mut servers: Vec<Memcached> = (0..4).map(|_| Memcached::start()).collect();
        let entries: Vec<String> = servers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if weights {
                    format!("{}:{}", m.addr(), 1 + (i + 1) % 3)
                } else {
                    m.addr()
                }
            })
            .collect();
        let behaviors: Vec<(&str, &str)> = placement.iter().chain(&failover).copied().collect();
        let what = format!("{placement:?}, weights {weights}");
        let mut lm_behaviors = Behaviors::default();
        for (name, value) in &behaviors {
            lm_behaviors
                .set(name, value)
                .expect("libmemcached behavior");
        }
        let lm = BinaryTransport::new(BinaryConfig {
            behaviors: lm_behaviors,
            binary_protocol: false,
            // One handle: libmemcached's ejections are per handle.
            pool_size: 1,
            ..BinaryConfig::new(entries.clone())
        })
        .expect("libmemcached");
        let text = text_transport(&behaviors, &entries);
        let specs: Vec<Server> = entries.iter().map(|e| Server::parse(e).unwrap()).collect();
        let mut ours = PlacementBehaviors::default();
        for (name, value) in placement {
            ours.set(name, value).unwrap();
        }
        let settings = ours.settings(&specs);
        let dead = 2;
        let shrunk = Ring::with_live(&specs, &settings, |i| i != dead);
        let on_dead = *keys
            .iter()
            .find(|k| lm.server_index_for_key(k).unwrap() == dead)
            .expect("a key on the server to kill");
        assert_eq!(text.server_for_key(on_dead).unwrap(), dead, "{what}");

        servers[dead].kill();
        let set = |t: &dyn Transport, k: &[u8]| t.store(&Store::set(k, b"v", 0, 300));
        // libmemcached: the first request fails to connect; the next is answered
        // SERVER_MARKED_DEAD while it rebuilds the ring without the server; then the key
        // goes elsewhere.
        assert!(set(&lm, on_dead).is_err(), "{what}");
        assert!(set(&lm, on_dead).is_err(), "{what}");
        set(&lm, on_dead).unwrap_or_else(|e| panic!("{what}: libmemcached did not eject: {e}"));
        // The text transport ejects on the first failure (failure_limit 1).
        assert!(set(&text, on_dead).is_err(), "{what}");
        assert_ne!(text.server_for_key(on_dead).unwrap(), dead, "{what}");

        let live: Vec<usize> = (0..servers.len()).filter(|&i| i != dead).collect();
        for (name, t) in [("libmemcached", &lm as &dyn Transport), ("text", &text)] {
            for k in &keys {
                set(t, k).unwrap_or_else(|e| panic!("{what}, {name}: {e}"));
            }
            let found = holders(&servers, &live, &keys);
            for (k, holder) in keys.iter().zip(found) {
                let want = shrunk.server_for_key(k);
                assert_eq!(
                    holder,
                    want,
                    "{what}, {name}: key {:?} is on {holder:?}, the ring without server {dead} says {want:?}",
                    String::from_utf8_lossy(k)
                );
                if name == "text" {
                    assert_eq!(text.server_for_key(k).ok(), want, "{what}");
                }
            }
        }
    }
}
