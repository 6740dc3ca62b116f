//! A Django shop's Python apps share the cluster: what newcache writes, pylibmc (the client
//! django-newcache used) reads as Python values, and the reverse. Runs Debian's python3 with
//! python3-pylibmc against a real memcached; fails loudly when they are missing.

use std::process::Command;

use newcache::{Cache, SetOptions, Ttl};
use newcache_testkit::Memcached;

const PYTHON: &str = "/usr/bin/python3";

fn python(script: &str) -> String {
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {PYTHON}: {e}; install python3-pylibmc (cargo xtask test does)")
        });
    assert!(
        out.status.success(),
        "python failed (is python3-pylibmc installed? `apt-get install python3-pylibmc`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn pylibmc_reads_what_newcache_writes_and_the_reverse() {
    let server = Memcached::start();
    let cache = Cache::from_url(&format!("newcache://{}/?flavor=py", server.addr())).unwrap();
    let bare = SetOptions::new(Ttl::Forever);
    cache.set("text", "héllo", bare).unwrap();
    cache.set("int", &42i64, bare).unwrap();
    cache.set("bool", &true, bare).unwrap();
    cache.set("bytes", &vec![0u8, 1, 255], bare).unwrap();
    cache
        .set(
            "counter",
            &7u64,
            SetOptions::new(Ttl::Seconds(60)).no_herd(),
        )
        .unwrap();
    let key = |k: &str| String::from_utf8(cache.wire_key(k).unwrap()).unwrap();
    let script = format!(
        r#"
import pylibmc
mc = pylibmc.Client(["{addr}"])
for k in ["{text}", "{int}", "{boolean}", "{bytes}"]:
    v = mc.get(k)
    print(type(v).__name__, repr(v))
print(mc.incr("{counter}", 3))
mc.set("{from_py_str}", "ünï")
mc.set("{from_py_int}", 12345)
mc.set("{from_py_bool}", False)
mc.set("{from_py_bytes}", b"\x00\xff")
"#,
        addr = server.addr(),
        text = key("text"),
        int = key("int"),
        boolean = key("bool"),
        bytes = key("bytes"),
        counter = key("counter"),
        from_py_str = key("from_py_str"),
        from_py_int = key("from_py_int"),
        from_py_bool = key("from_py_bool"),
        from_py_bytes = key("from_py_bytes"),
    );
    let out = python(&script);
    // newcache pickles booleans: pylibmc 1.6.3 writes True as flag 2 "1" and reads that back
    // as the int 1, its own bools included; a pickled True is a bool in every client.
    assert_eq!(
        out, "str 'héllo'\nint 42\nbool True\nbytes b'\\x00\\x01\\xff'\n10\n",
        "what pylibmc read"
    );
    assert_eq!(cache.get::<u64>("counter").unwrap(), Some(10));
    assert_eq!(
        cache.get::<String>("from_py_str").unwrap().as_deref(),
        Some("ünï")
    );
    assert_eq!(cache.get::<i64>("from_py_int").unwrap(), Some(12345));
    assert_eq!(cache.get::<bool>("from_py_bool").unwrap(), Some(false));
    assert_eq!(
        cache.get::<Vec<u8>>("from_py_bytes").unwrap(),
        Some(vec![0, 255])
    );
}

/// pylibmc is a second placement oracle: `Client.hash(key)` is the server index it picks.
/// Both transports agree with it on the placements pylibmc users configure, over TCP and
/// over unix-domain sockets (the libmemcached transport added a socket as a host with port
/// 11211, so ketama put 17 of 40 keys elsewhere than pylibmc: an outside audit).
#[test]
fn both_transports_place_keys_where_pylibmc_does() {
    let tcp = [
        "10.0.0.1",
        "10.0.0.2:11212",
        "cache-3.example:11213:2",
        "10.0.0.4",
    ];
    let sockets = [
        "/run/memcached/a.sock",
        "/run/memcached/b.sock",
        "/tmp/mc-c.sock",
    ];
    for servers in [&tcp[..], &sockets[..]] {
        places_keys_where_pylibmc_does(servers);
    }
}

fn places_keys_where_pylibmc_does(servers: &[&str]) {
    use newcache_transport_text::{TextConfig, TextTransport};
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("k{i}-{}-ключ", "x".repeat(i % 40)))
        .collect();
    for behaviors in [
        "{}",
        "{'hash': 'crc'}",
        "{'ketama': True}",
        "{'ketama_weighted': True}",
        "{'distribution': 'consistent ketama spy', 'hash': 'md5'}",
    ] {
        let script = format!(
            "import pylibmc, sys\nc = pylibmc.Client({servers:?}, behaviors={behaviors})\nfor k in sys.stdin.read().split('\\n'):\n    print(c.hash(k))"
        );
        let mut child = Command::new(PYTHON)
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}"));
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(keys.join("\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "pylibmc failed for {behaviors}");
        let theirs: Vec<usize> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(theirs.len(), keys.len());

        let mut config = TextConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            ..TextConfig::default()
        };
        let pairs = behaviors
            .trim_matches(['{', '}'])
            .split(", ")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (n, v) = p.split_once(": ").unwrap();
                (n.trim_matches('\''), v.trim_matches('\''))
            })
            .collect::<Vec<_>>();
        for &(name, value) in &pairs {
            config.set_behavior(name, value).unwrap();
        }
        let text = TextTransport::new(config.clone()).unwrap();
        #[cfg(feature = "binary")]
        let libmemcached = {
            let mut lm = newcache_transport_binary::Behaviors::default();
            for &(name, value) in &pairs {
                lm.set(name, value).unwrap();
            }
            newcache_transport_binary::BinaryTransport::new(
                newcache_transport_binary::BinaryConfig {
                    behaviors: lm,
                    ..newcache_transport_binary::BinaryConfig::new(config.servers.clone())
                },
            )
            .unwrap()
        };
        for (key, want) in keys.iter().zip(theirs) {
            assert_eq!(
                text.server_for_key(key.as_bytes()).unwrap(),
                want,
                "{servers:?} {behaviors}: key {key:?}"
            );
            #[cfg(feature = "binary")]
            assert_eq!(
                libmemcached.server_index_for_key(key.as_bytes()).unwrap(),
                want,
                "{servers:?} {behaviors}: libmemcached transport, key {key:?}"
            );
        }
    }
}
