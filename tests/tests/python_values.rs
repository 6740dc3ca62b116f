//! What Python apps store, newcache reads: values written by pylibmc, pymemcache,
//! python-memcached and Django's backends over them (pickles, compressed values, each
//! client's int and bool flags), and django-newcache's own herd tuple, both directions.
//! Runs Debian's /usr/bin/python3 against a real memcached; fails loudly when a client is
//! missing (`cargo xtask test` installs them).
#![cfg(feature = "pickle")]

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use newcache::codec::FLAG_PICKLE;
use newcache::{Builder, Cache, Clock, Error, ManualClock, SetOptions, Ttl};
use newcache_testkit::Memcached;
use newcache_tests::fixtures::at_once;
use serde::Deserialize;

const PYTHON: &str = "/usr/bin/python3";

/// Runs `script` with Debian's python3, `ADDR` replaced by the server's address.
fn python(server: &Memcached, script: &str) -> String {
    let out = Command::new(PYTHON)
        .args(["-c", &script.replace("ADDR", &server.addr())])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}; `cargo xtask test` installs it"));
    assert!(
        out.status.success(),
        "python failed (python3-pylibmc, python3-pymemcache, python3-memcache, python3-django installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A stand-in for django-newcache's module, so that Python pickles and unpickles its
/// `newcache.Marker` without the package installed.
const FAKE_NEWCACHE: &str = r#"import sys, types
class Marker(object): pass
m = types.ModuleType("newcache"); m.Marker = Marker; Marker.__module__ = "newcache"
sys.modules["newcache"] = m
"#;

/// [`python`], with [`FAKE_NEWCACHE`] first.
fn python_with_marker(server: &Memcached, script: &str) -> String {
    python(server, &format!("{FAKE_NEWCACHE}{script}"))
}

/// A cache whose wire keys are the keys themselves, so Python writes under plain names.
fn plain_keys(server: &Memcached) -> Cache {
    Builder::from_url(&format!("newcache://{}/", server.addr()))
        .unwrap()
        .key_function(|k: &str| k.to_string())
        .build()
        .unwrap()
}

#[derive(Debug, PartialEq, Deserialize)]
struct Profile {
    name: String,
    tags: Vec<String>,
    score: f64,
    parent: Option<u32>,
}

#[test]
fn every_clients_values_read_as_rust_types() {
    let server = Memcached::start();
    python(
        &server,
        r#"
import pylibmc, memcache
from pymemcache.client.base import Client
from pymemcache import serde
profile = {"name": "ada", "tags": ["x", "y"], "score": 2.5, "parent": None}
for name, c in [
    ("pylibmc", pylibmc.Client(["ADDR"])),
    ("pymemcache", Client("ADDR", serde=serde.pickle_serde)),
    ("memcache", memcache.Client(["ADDR"])),
]:
    c.set(name + ":str", "héllo")
    c.set(name + ":int", -42)
    c.set(name + ":big", 10**30)
    c.set(name + ":true", True)
    c.set(name + ":false", False)
    c.set(name + ":bytes", b"\x00\xff")
    c.set(name + ":float", 2.5)
    c.set(name + ":none", None)
    c.set(name + ":list", [1, 2, 3])
    c.set(name + ":tuple", (1, "x"))
    c.set(name + ":profile", profile)
    c.set(name + ":set", {7})
    c.set(name + ":empty", {"avatar": b"", "name": "x"})
"#,
    );
    let cache = plain_keys(&server);
    for client in ["pylibmc", "pymemcache", "memcache"] {
        let get = |k: &str| format!("{client}:{k}");
        assert_eq!(
            cache.get::<String>(&get("str")).unwrap().as_deref(),
            Some("héllo"),
            "{client}"
        );
        assert_eq!(
            cache.get::<i64>(&get("int")).unwrap(),
            Some(-42),
            "{client}"
        );
        assert_eq!(
            cache.get::<u128>(&get("big")).unwrap(),
            Some(10u128.pow(30)),
            "{client}"
        );
        assert_eq!(
            cache.get::<bool>(&get("true")).unwrap(),
            Some(true),
            "{client}"
        );
        assert_eq!(
            cache.get::<bool>(&get("false")).unwrap(),
            Some(false),
            "{client}"
        );
        assert_eq!(
            cache.get::<Vec<u8>>(&get("bytes")).unwrap(),
            Some(vec![0, 255]),
            "{client}"
        );
        assert_eq!(
            cache.get::<f64>(&get("float")).unwrap(),
            Some(2.5),
            "{client}"
        );
        // A stored None is a hit holding None, not a miss.
        assert_eq!(
            cache.get::<Option<u32>>(&get("none")).unwrap(),
            Some(None),
            "{client}"
        );
        assert_eq!(
            cache.get::<Vec<u8>>(&get("list")).unwrap(),
            Some(vec![1, 2, 3]),
            "{client}"
        );
        assert_eq!(
            cache.get::<(u8, String)>(&get("tuple")).unwrap(),
            Some((1, "x".into())),
            "{client}"
        );
        assert_eq!(
            cache.get::<Profile>(&get("profile")).unwrap(),
            Some(Profile {
                name: "ada".into(),
                tags: vec!["x".into(), "y".into()],
                score: 2.5,
                parent: None,
            }),
            "{client}"
        );
        assert_eq!(
            cache.get::<Vec<u32>>(&get("set")).unwrap(),
            Some(vec![7]),
            "{client}"
        );
        // `b''`, which python-memcached's protocol 0 pickles as a call of `bytes()`: empty
        // bytes, not the empty list it read as in a self-describing type.
        assert_eq!(
            cache.get::<Avatar>(&get("empty")).unwrap(),
            Some(Avatar {
                avatar: vec![],
                name: "x".into()
            }),
            "{client}"
        );
        assert!(
            cache.get::<serde_json::Value>(&get("empty")).is_err(),
            "{client}: bytes are no JSON value"
        );
    }
}

#[derive(Debug, PartialEq, Deserialize)]
struct Avatar {
    avatar: Vec<u8>,
    name: String,
}

#[test]
fn djangos_backends_values_read_as_rust_types() {
    let server = Memcached::start();
    python(
        &server,
        r#"
from django.conf import settings
settings.configure(CACHES={
    name: {"BACKEND": "django.core.cache.backends.memcached." + name, "LOCATION": "ADDR",
           "KEY_FUNCTION": lambda key, prefix, version: key}
    for name in ["PyLibMCCache", "PyMemcacheCache", "MemcachedCache"]})
from django.core.cache import caches
for name in ["PyLibMCCache", "PyMemcacheCache", "MemcachedCache"]:
    c = caches[name]
    c.set(name + ":str", "ünï", 300)
    c.set(name + ":int", 7, 300)
    c.set(name + ":bool", True, 300)
    c.set(name + ":dict", {"a": [1, 2]}, 300)
    user = {"id": 1, "name": "ann"}
    c.set(name + ":shared", {"author": user, "editor": user, "tags": [user["name"]]}, 300)
    c.set(name + ":big", 2**63, 300)
"#,
    );
    let cache = plain_keys(&server);
    for backend in ["PyLibMCCache", "PyMemcacheCache", "MemcachedCache"] {
        let get = |k: &str| format!("{backend}:{k}");
        assert_eq!(
            cache.get::<String>(&get("str")).unwrap().as_deref(),
            Some("ünï"),
            "{backend}"
        );
        assert_eq!(cache.get::<u8>(&get("int")).unwrap(), Some(7), "{backend}");
        assert_eq!(
            cache.get::<bool>(&get("bool")).unwrap(),
            Some(true),
            "{backend}"
        );
        let dict: HashMap<String, Vec<u8>> = cache.get(&get("dict")).unwrap().unwrap();
        assert_eq!(dict["a"], [1, 2], "{backend}");
        // One dict under two keys (serde-pickle alone: "recursive structure found", an
        // outside audit).
        let shared: serde_json::Value = cache.get(&get("shared")).unwrap().unwrap();
        let user = serde_json::json!({"id": 1, "name": "ann"});
        assert_eq!(
            shared,
            serde_json::json!({"author": user, "editor": user, "tags": ["ann"]}),
            "{backend}"
        );
        // 2**63: flag 4 (pylibmc) or 2 (the others), read as the number either way.
        let big: serde_json::Value = cache.get(&get("big")).unwrap().unwrap();
        assert_eq!(
            big,
            serde_json::json!(9_223_372_036_854_775_808u64),
            "{backend}"
        );
    }
}

#[test]
fn pylibmcs_compressed_values_are_read_and_newcache_compresses_like_it() {
    // An item size of 1 MB: values over it that compress below it are stored.
    let server = Memcached::start();
    python(
        &server,
        r#"
import pylibmc
c = pylibmc.Client(["ADDR"])
c.set("text", "compressible " * 10000, min_compress_len=100)
c.set("list", list(range(5000)), min_compress_len=100)
c.set("bytes", b"\x01" * 50000, min_compress_len=100)
"#,
    );
    let cache = plain_keys(&server);
    assert_eq!(
        cache.get::<String>("text").unwrap(),
        Some("compressible ".repeat(10000))
    );
    assert_eq!(
        cache.get::<Vec<u32>>("list").unwrap(),
        Some((0..5000).collect())
    );
    assert_eq!(cache.get::<Vec<u8>>("bytes").unwrap(), Some(vec![1; 50000]));
    let raw = cache.get_raw("text").unwrap().unwrap();
    assert_eq!(raw.flags, 16 | 8, "pylibmc stored it compressed");

    // newcache, told pylibmc's min_compress_len, stores 2 MB of text (twice the item size)
    // compressed below the limit, and pylibmc and python-memcached read it back.
    let zipping = Builder::from_url(&format!(
        "newcache://{}/?min_compress_len=1000",
        server.addr()
    ))
    .unwrap()
    .key_function(|k: &str| k.to_string())
    .build()
    .unwrap();
    let big = "abcdefgh".repeat(256 * 1024);
    zipping.set("big", &big, Ttl::Seconds(300)).unwrap();
    assert_eq!(
        zipping.get::<String>("big").unwrap().as_deref(),
        Some(big.as_str())
    );
    let raw = zipping.get_raw("big").unwrap().unwrap();
    assert_eq!(raw.flags, 16 | 8);
    assert!(raw.bytes.len() < 100_000, "{}", raw.bytes.len());
    // Under the threshold: stored as it is.
    zipping.set("small", "tiny", Ttl::Seconds(300)).unwrap();
    assert_eq!(zipping.get_raw("small").unwrap().unwrap().flags, 16);
    let out = python(
        &server,
        r#"
import pylibmc, memcache
print(len(pylibmc.Client(["ADDR"]).get("big")), len(memcache.Client(["ADDR"]).get("big")))
"#,
    );
    assert_eq!(out, format!("{} {}\n", big.len(), big.len()));
}

#[test]
fn a_pickle_without_a_serde_form_is_a_typed_error_and_get_many_keeps_the_rest() {
    let server = Memcached::start();
    python(
        &server,
        r#"
import pylibmc, datetime, decimal
c = pylibmc.Client(["ADDR"])
c.set("when", datetime.datetime(2020, 1, 2, 3, 4, 5))
c.set("price", decimal.Decimal("1.50"))
c.set("good", "fine")
c.set("n", 5)
"#,
    );
    let cache = plain_keys(&server);
    match cache.get::<String>("when") {
        Err(Error::Decode { detail, flags, .. }) => {
            assert_eq!(flags, FLAG_PICKLE);
            assert!(detail.contains("datetime.datetime"), "{detail}");
            assert!(detail.contains("get_raw"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    match cache.get::<f64>("price") {
        Err(Error::Decode { detail, .. }) => {
            assert!(detail.contains("decimal.Decimal"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // The bytes are still there for whoever wants them.
    let raw = cache.get_raw("when").unwrap().unwrap();
    assert_eq!(raw.flags, FLAG_PICKLE);
    assert!(raw.bytes.windows(8).any(|w| w == b"datetime"));
    // One bad value costs its key, not the call.
    let got = cache
        .get_many::<_, String>(&["good", "when", "missing", "price"])
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got["good"], "fine");
    let failed: Vec<&str> = got.failed().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(failed, ["when", "price"]);
    assert!(matches!(got.failed()[0].1, Error::Decode { .. }));
    assert!(got.into_complete().is_err());
    // A value of the wrong type is reported the same way.
    let got = cache.get_many::<_, u32>(&["n", "good"]).unwrap();
    assert_eq!(got["n"], 5);
    assert_eq!(got.failed().len(), 1);
}

#[test]
fn a_marker_outside_django_newcaches_herd_tuple_is_a_plain_pickle_whose_bytes_get_raw_returns() {
    let server = Memcached::start();
    python_with_marker(
        &server,
        r#"
import time, pylibmc
c = pylibmc.Client(["ADDR"])
c.set("str_expiry", (Marker(), 9, "soon"))
c.set("float_expiry", (Marker(), 7, time.time() + 300.5))
c.set("nested", [(Marker(), 1, 2)])
c.set("good", "fine")
"#,
    );
    let cache = plain_keys(&server);
    for key in ["str_expiry", "float_expiry", "nested"] {
        // Not a herd tuple: no herd state, so no claim; a typed error naming the marker.
        match cache.get::<i64>(key) {
            Err(Error::Decode { detail, flags, .. }) => {
                assert_eq!(flags, FLAG_PICKLE, "{key}");
                assert!(detail.contains("newcache.Marker"), "{key}: {detail}");
            }
            other => panic!("{key}: {other:?}"),
        }
        // The bytes are there for whoever wants them, as for any pickle without a serde form.
        let raw = cache.get_raw(key).unwrap().unwrap();
        assert_eq!(raw.flags, FLAG_PICKLE, "{key}");
        assert!(raw.bytes.windows(6).any(|w| w == b"Marker"), "{key}");
    }
    let got = cache
        .get_many::<_, String>(&["good", "str_expiry"])
        .unwrap();
    assert_eq!(got["good"], "fine");
    assert_eq!(got.failed().len(), 1);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Stored by django-newcache's own code on Python 3 (pylibmc, pickle protocol 5,
/// CACHE_HERD_TIMEOUT=60): `'héllo'` and `42` with herd, `{'a': [1, 2]}` without.
const SEED_HELLO: &str = "8005952a000000000000008c086e65776361636865948c064d61726b65729493942981948c0668c3a96c6c6f944ae5cf0e6b87942e";
const SEED_42: &str =
    "80059523000000000000008c086e65776361636865948c064d61726b65729493942981944b2a4ae5cf0e6b87942e";
const SEED_DICT: &str = "80059510000000000000007d948c0161945d94284b014b0265732e";
/// The golden tuples' expiry (Unix seconds).
const SEED_EXPIRY: u64 = 1_796_132_837;

fn store_raw(server: &Memcached, key: &str, flags: u32, bytes: &[u8]) {
    let mut s = std::net::TcpStream::connect(server.socket_addr()).unwrap();
    use std::io::{Read, Write};
    s.write_all(format!("set {key} {flags} 0 {}\r\n", bytes.len()).as_bytes())
        .unwrap();
    s.write_all(bytes).unwrap();
    s.write_all(b"\r\n").unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"STORED\r\n");
}

/// A django-newcache-style cache at a chosen time: `flavor`-`v2`-sha1 keys, as the seed
/// writes them with `CACHE_VERSION = 'v2'`.
fn seed_cache(server: &Memcached, clock: &ManualClock, extra: &str) -> Cache {
    Builder::from_url(&format!(
        "newcache://{}/?flavor=site&version=v2&herd_timeout=60{extra}",
        server.addr()
    ))
    .unwrap()
    .clock(Arc::new(clock.clone()))
    .build()
    .unwrap()
}

#[test]
fn django_newcaches_golden_values_are_read_with_their_soft_expiry() {
    let server = Memcached::start();
    let clock = ManualClock::at_secs(SEED_EXPIRY - 100);
    let cache = seed_cache(&server, &clock, "");
    // The seed's key function: '%s-%s-%s' % (FLAVOR, CACHE_VERSION, sha1(key)).
    let out = python(
        &server,
        "import hashlib; print('site-v2-' + hashlib.sha1('greeting'.encode()).hexdigest())",
    );
    let wire = String::from_utf8(cache.wire_key("greeting").unwrap()).unwrap();
    assert_eq!(out.trim(), wire);
    store_raw(&server, &wire, 1, &hex(SEED_HELLO));
    let answer = String::from_utf8(cache.wire_key("answer").unwrap()).unwrap();
    store_raw(&server, &answer, 1, &hex(SEED_42));
    let dict = String::from_utf8(cache.wire_key("dict").unwrap()).unwrap();
    store_raw(&server, &dict, 1, &hex(SEED_DICT));

    assert_eq!(
        cache.get::<String>("greeting").unwrap().as_deref(),
        Some("héllo")
    );
    assert_eq!(cache.get::<u32>("answer").unwrap(), Some(42));
    let d: HashMap<String, Vec<u8>> = cache.get("dict").unwrap().unwrap();
    assert_eq!(d["a"], [1, 2]);
    let peeked = cache.peek("greeting").unwrap().unwrap();
    assert!(!peeked.stale);

    // Past the tuple's expiry (the seed serves it through that second): exactly one of 16
    // readers recomputes, the others are served the old value.
    clock.advance_secs(101);
    assert!(cache.peek("greeting").unwrap().unwrap().stale);
    let c = cache.clone();
    let got = at_once(16, move |_| c.get::<String>("greeting").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| v == "héllo"), "{got:?}");
    // The claim moved the tuple's expiry by the herd timeout: django-newcache's readers
    // (pylibmc and its unpacking) now see a fresh tuple and serve it too.
    let out = python_with_marker(
        &server,
        &format!(
            r#"
import pickle, pylibmc
marker, value, expiry = pylibmc.Client(["ADDR"]).get("{wire}")
print(isinstance(marker, Marker), value, expiry - {now})
"#,
            now = clock.now_secs()
        ),
    );
    assert_eq!(out, "True héllo 59\n", "the claimed tuple");
}

#[test]
fn django_newcaches_tuples_of_every_protocol_and_compressed_keep_their_soft_expiry() {
    // django-newcache on python-memcached (its fallback without pylibmc) pickles the tuple
    // with protocol 0 (or 1, as configured), and pylibmc with `min_compress_len` stores it
    // compressed (flags 1 | 8). An outside audit found the first two read as a class
    // instance (a typed error) and the compressed one's soft expiry ignored: 16 readers
    // past it, 0 refreshes.
    let server = Memcached::start();
    let clock = ManualClock::at_secs(SEED_EXPIRY - 100);
    let cache = seed_cache(&server, &clock, "");
    let keys = ["protocol 0", "protocol 1", "compressed", "ours"];
    let wires: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8(cache.wire_key(k).unwrap()).unwrap())
        .collect();
    let big = "x".repeat(5000);
    python_with_marker(
        &server,
        &format!(
            r#"
import memcache, pylibmc
assert memcache.Client(["ADDR"]).set("{w0}", (Marker(), 'héllo', {SEED_EXPIRY}), 0)
assert memcache.Client(["ADDR"], pickleProtocol=1).set("{w1}", (Marker(), 'héllo', {SEED_EXPIRY}), 0)
assert pylibmc.Client(["ADDR"]).set("{w2}", (Marker(), '{big}', {SEED_EXPIRY}), 0, min_compress_len=100)
"#,
            w0 = wires[0],
            w1 = wires[1],
            w2 = wires[2],
        ),
    );
    let flags_of = |wire: &str| {
        let reply = server.raw(&format!("mg {wire} f\r\n"), b"\r\n");
        String::from_utf8(reply).unwrap()
    };
    // And newcache's own, compressed the same way.
    let writer = seed_cache(
        &server,
        &clock,
        "&envelope=django-newcache&codec=pickle&compress_threshold=100",
    );
    writer.set("ours", &big, Ttl::Seconds(100)).unwrap();
    for wire in [&wires[2], &wires[3]] {
        assert!(flags_of(wire).contains(" f9"), "{}", flags_of(wire));
    }
    let expect = |key: &str| match key {
        "compressed" | "ours" => big.clone(),
        _ => "héllo".to_string(),
    };
    for key in keys {
        assert_eq!(
            cache.get::<String>(key).unwrap(),
            Some(expect(key)),
            "{key}"
        );
        assert!(!cache.peek(key).unwrap().unwrap().stale, "{key}");
    }
    // Past the expiry: one reader of 16 recomputes each, the others are served.
    clock.advance_secs(101);
    for key in keys {
        assert!(cache.peek(key).unwrap().unwrap().stale, "{key}");
        let c = cache.clone();
        let got = at_once(16, move |_| c.get::<String>(key).unwrap());
        assert_eq!(
            got.iter().filter(|g| g.is_none()).count(),
            1,
            "{key}: {got:?}"
        );
        assert!(got.iter().flatten().all(|v| *v == expect(key)), "{key}");
    }
    // The claims moved each tuple's expiry in its own format: still compressed, and
    // django-newcache's readers serve them as fresh.
    for wire in [&wires[2], &wires[3]] {
        assert!(flags_of(wire).contains(" f9"), "{}", flags_of(wire));
    }
    let out = python_with_marker(
        &server,
        &format!(
            r#"
import memcache, pylibmc
for c, w in ((memcache.Client(["ADDR"]), "{w0}"), (memcache.Client(["ADDR"]), "{w1}"), (pylibmc.Client(["ADDR"]), "{w2}"), (pylibmc.Client(["ADDR"]), "{w3}")):
    marker, value, expiry = c.get(w)
    print(isinstance(marker, Marker), len(value), expiry - {now})
"#,
            w0 = wires[0],
            w1 = wires[1],
            w2 = wires[2],
            w3 = wires[3],
            now = clock.now_secs()
        ),
    );
    assert_eq!(
        out, "True 5 59\nTrue 5 59\nTrue 5000 59\nTrue 5000 59\n",
        "the claimed tuples"
    );
}

#[test]
fn envelope_django_newcache_writes_the_seeds_exact_bytes() {
    let server = Memcached::start();
    // At the moment that makes the soft expiry the golden one: now + 300 s.
    let clock = ManualClock::at_secs(SEED_EXPIRY - 300);
    let cache = seed_cache(&server, &clock, "&envelope=django-newcache&codec=pickle");
    cache.set("greeting", "héllo", Ttl::Seconds(300)).unwrap();
    cache.set("answer", &42u32, Ttl::Seconds(300)).unwrap();
    let item = |key: &str| {
        let wire = String::from_utf8(cache.wire_key(key).unwrap()).unwrap();
        let reply = server.raw(&format!("mg {wire} f t v\r\n"), b"\r\n");
        let text = String::from_utf8_lossy(&reply).into_owned();
        let header = text.lines().next().unwrap().to_string();
        let body = reply[header.len() + 2..reply.len() - 2].to_vec();
        (header, body)
    };
    let (header, body) = item("greeting");
    assert!(
        header.contains(" f1 ") && header.contains(" t360"),
        "{header}"
    );
    assert_eq!(body, hex(SEED_HELLO));
    let (_, body) = item("answer");
    assert_eq!(body, hex(SEED_42));
    // Without the herd (Forever, or herd off), the value is what pylibmc stores bare.
    cache
        .set("plain", "héllo", SetOptions::new(Ttl::Forever))
        .unwrap();
    let (header, body) = item("plain");
    assert!(header.contains(" f16 "), "{header}");
    assert_eq!(body, "héllo".as_bytes());
    // And it reads its own tuples back.
    assert_eq!(
        cache.get::<String>("greeting").unwrap().as_deref(),
        Some("héllo")
    );
    assert_eq!(cache.get::<u32>("answer").unwrap(), Some(42));
}

/// Another application's flag bits beside the type bits (`16 | 1 << 20`) are ignored, as
/// pylibmc and pymemcache ignore them: the text reads as text (it was an error). `set_raw`
/// with the herd on refuses flags in the bits the herd keeps its state in (they were
/// overwritten, and read back as another soft expiry); without the herd they are kept.
#[test]
fn another_applications_flag_bits_are_ignored_as_python_ignores_them() {
    let server = Memcached::start();
    let shown = python(
        &server,
        r#"
import pylibmc
from pymemcache.client.base import Client
assert Client("ADDR").set("high", b"abc", flags=16 | (1 << 20), noreply=False)
print(repr(pylibmc.Client(["ADDR"]).get("high")))
"#,
    );
    assert_eq!(shown.trim(), "'abc'", "what Python reads");
    let cache = plain_keys(&server);
    assert_eq!(cache.get::<String>("high").unwrap().as_deref(), Some("abc"));
    let e = cache
        .set_raw("raw", b"abc", 16 | (1 << 20), Ttl::Seconds(300))
        .unwrap_err();
    assert!(matches!(e, Error::Encode { .. }), "{e}");
    cache
        .set_raw(
            "raw",
            b"abc",
            16 | (1 << 20),
            SetOptions::new(Ttl::Seconds(300)).no_herd(),
        )
        .unwrap();
    assert_eq!(cache.get_raw("raw").unwrap().unwrap().flags, 16 | (1 << 20));
    // With the herd's own bit among them too: refused with the herd, kept without it (the
    // check missed it, and without the herd the bits were dropped: another audit).
    let flags = 16 | 256 | (1 << 20);
    let e = cache
        .set_raw("raw8", b"abc", flags, Ttl::Seconds(300))
        .unwrap_err();
    assert!(matches!(e, Error::Encode { .. }), "{e}");
    cache
        .set_raw(
            "raw8",
            b"abc",
            flags,
            SetOptions::new(Ttl::Seconds(300)).no_herd(),
        )
        .unwrap();
    let peeked = cache.peek("raw8").unwrap().unwrap();
    assert_eq!(
        (peeked.value.flags, peeked.value.bytes.as_slice()),
        (flags, &b"abc"[..])
    );
    // Bit 8 with bits 11-12 is what every newcache reader takes for the herd's state: such
    // flags are refused with or without the herd, and nothing is sent. Stored bare, they
    // read as a soft expiry long past: `get_raw` answered a miss, and `get` re-stored the
    // value with flags of its own (an outside audit).
    let stores = server.stat("cmd_set");
    for flags in [0x900, 0xffff_1900, 16 | 0x100 | 0x1000] {
        for options in [
            SetOptions::new(Ttl::Seconds(300)),
            SetOptions::new(Ttl::Seconds(300)).no_herd(),
            SetOptions::new(Ttl::Seconds(0)).no_herd(),
        ] {
            let e = cache
                .set_raw("enveloped", b"abc", flags, options)
                .unwrap_err();
            assert!(
                matches!(&e, Error::Encode { detail, .. } if detail.contains("bit 8 and bits 11-12")),
                "{flags:#x}: {e}"
            );
        }
    }
    assert_eq!(server.stat("cmd_set"), stores, "nothing stored");
    assert!(cache.peek("enveloped").unwrap().is_none());
}
