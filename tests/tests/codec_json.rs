//! The JSON value codec (`codec=json`, feature `json`) against a real memcached: structured
//! values go out as JSON after a 0xff byte, with flag 16 and bit 10, so a client that knows
//! the format reads them (the `memcache` crate raw) and Python's clients raise instead of
//! returning JSON text as if it were the value; plain values keep Python's flags, and a
//! bincode-writing cache reads them back, since reads go by the flags.
#![cfg(feature = "json")]

use std::collections::BTreeMap;

use newcache::codec::{FLAG_JSON, FLAG_TEXT, UNREADABLE};
use newcache::{Cache, SetOptions, Ttl};
use newcache_herd::HERD_FLAG;
use newcache_testkit::Memcached;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Game {
    name: String,
    players: Vec<u32>,
    rating: f64,
}

fn raw(server: &Memcached, wire: &[u8]) -> (Vec<u8>, u32) {
    let client =
        memcache::Client::connect(format!("memcache://{}?protocol=ascii", server.addr())).unwrap();
    client
        .get::<(Vec<u8>, u32)>(std::str::from_utf8(wire).unwrap())
        .unwrap()
        .expect("the item is on the server")
}

#[test]
fn structured_values_are_json_on_the_wire_and_any_client_reads_them() {
    let server = Memcached::start();
    let json = Cache::from_url(&format!(
        "newcache://{}/?codec=json&flavor=j",
        server.addr()
    ))
    .unwrap();
    let game = Game {
        name: "chess".into(),
        players: vec![1, 2],
        rating: 0.5,
    };
    json.set("game", &game, SetOptions::new(Ttl::Forever))
        .unwrap();
    let (bytes, flags) = raw(&server, &json.wire_key("game").unwrap());
    assert_eq!(
        flags,
        FLAG_TEXT | FLAG_JSON,
        "a forever value has no herd bits"
    );
    assert_eq!(bytes[0], UNREADABLE);
    assert_eq!(
        &bytes[1..],
        br#"{"name":"chess","players":[1,2],"rating":0.5}"#
    );
    assert_eq!(json.get::<Game>("game").unwrap(), Some(game.clone()));

    // With a finite TTL the herd state joins the flags; the bytes are the same.
    json.set("herded", &game, Ttl::Seconds(300)).unwrap();
    let (herded, flags) = raw(&server, &json.wire_key("herded").unwrap());
    assert_eq!(flags & 0x7ff, FLAG_TEXT | FLAG_JSON | HERD_FLAG);
    assert_eq!(herded, bytes);
    assert_eq!(json.get::<Game>("herded").unwrap(), Some(game.clone()));

    // Plain values keep the flags Python clients use, whatever the codec.
    json.set("text", "hi", SetOptions::new(Ttl::Forever))
        .unwrap();
    assert_eq!(
        raw(&server, &json.wire_key("text").unwrap()),
        (b"hi".to_vec(), FLAG_TEXT)
    );

    // A cache writing bincode reads the JSON value (and the reverse).
    let bincode = Cache::from_url(&format!("newcache://{}/?flavor=j", server.addr())).unwrap();
    assert_eq!(bincode.get::<Game>("game").unwrap(), Some(game.clone()));
    let map: BTreeMap<String, u32> = [("a".into(), 1)].into();
    bincode
        .set("map", &map, SetOptions::new(Ttl::Forever))
        .unwrap();
    assert_eq!(json.get::<BTreeMap<String, u32>>("map").unwrap(), Some(map));

    // pylibmc raises on it rather than hand Python the JSON text as a str; the bytes after
    // the 0xff are JSON for whoever asks for them raw.
    let script = format!(
        r#"
import pylibmc
mc = pylibmc.Client(["{addr}"])
try:
    print("read", repr(mc.get("{key}")))
except UnicodeDecodeError as e:
    print("raised", type(e).__name__)
"#,
        addr = server.addr(),
        key = String::from_utf8(json.wire_key("game").unwrap()).unwrap(),
    );
    assert_eq!(
        newcache_testkit::python(&script),
        "raised UnicodeDecodeError\n"
    );
}

/// A struct holding itself: one JSON object per level.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Nested {
    inner: Option<Box<Nested>>,
}

/// [`Nested`] `depth` objects deep.
fn nested(depth: u32) -> Nested {
    (1..depth).fold(Nested { inner: None }, |inner, _| Nested {
        inner: Some(Box::new(inner)),
    })
}

/// What JSON (and pickle) would store as something else is refused before it is sent, and
/// the key keeps its value: NaN and infinity have no JSON form (serde_json writes `null`,
/// which read back as `None` inside an `Option` and failed every read of a bare `f64`), and
/// `Some(None)` is written as `None` in both formats. bincode keeps all of them apart, and
/// pickle keeps NaN and infinity.
#[test]
fn values_the_format_would_change_are_refused_and_nothing_is_stored() {
    let server = Memcached::start();
    let url = |codec: &str| format!("newcache://{}/?codec={codec}&flavor=x", server.addr());
    let json = Cache::from_url(&url("json")).unwrap();
    json.set("k", &1.5f64, Ttl::Seconds(60)).unwrap();
    for e in [
        json.set("k", &f64::NAN, Ttl::Seconds(60)).unwrap_err(),
        json.set("k", &Some(f64::INFINITY), Ttl::Seconds(60))
            .unwrap_err(),
        json.set("k", &vec![1.0f32, f32::NEG_INFINITY], Ttl::Seconds(60))
            .unwrap_err(),
    ] {
        assert!(matches!(e, newcache::Error::Encode { .. }), "{e:?}");
        assert!(e.to_string().contains("no JSON form"), "{e}");
    }
    let e = json
        .set("k", &Some(None::<u32>), Ttl::Seconds(60))
        .unwrap_err();
    assert!(e.to_string().contains("reads back as None"), "{e}");
    assert_eq!(json.get::<f64>("k").unwrap(), Some(1.5), "nothing was sent");
    // Deeper than serde_json reads back (127 containers): stored, it failed every read.
    let e = json.set("k", &nested(128), Ttl::Seconds(60)).unwrap_err();
    assert!(matches!(e, newcache::Error::Encode { .. }), "{e:?}");
    assert!(e.to_string().contains("more than 127 deep"), "{e}");
    assert_eq!(json.get::<f64>("k").unwrap(), Some(1.5), "nothing was sent");
    json.set("deep", &nested(127), Ttl::Seconds(60)).unwrap();
    assert_eq!(json.get::<Nested>("deep").unwrap(), Some(nested(127)));
    #[cfg(feature = "pickle")]
    {
        let pickle = Cache::from_url(&url("pickle")).unwrap();
        let e = pickle
            .set("o", &vec![Some(Some(1)), Some(None)], Ttl::Seconds(60))
            .unwrap_err();
        assert!(e.to_string().contains("reads back as None"), "{e}");
        assert_eq!(pickle.get::<Vec<Option<Option<i32>>>>("o").unwrap(), None);
        pickle
            .set("inf", &Some(f64::INFINITY), Ttl::Seconds(60))
            .unwrap();
        assert_eq!(
            pickle.get::<Option<f64>>("inf").unwrap(),
            Some(Some(f64::INFINITY))
        );
    }
    {
        let bincode = Cache::from_url(&url("bincode")).unwrap();
        bincode
            .set("o", &Some(None::<u32>), Ttl::Seconds(60))
            .unwrap();
        assert_eq!(
            bincode.get::<Option<Option<u32>>>("o").unwrap(),
            Some(Some(None))
        );
    }
}
