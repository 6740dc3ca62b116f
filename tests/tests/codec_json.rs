//! The JSON value codec (`codec=json`, feature `json`) against a real memcached: structured
//! values go out as JSON with flag bit 10, any client reads them (the `memcache` crate raw,
//! Debian's python3 with pylibmc and `json.loads`), plain values keep Python's flags, and a
//! bincode-writing cache reads them back, since reads go by the flags.
#![cfg(feature = "json")]

use std::collections::BTreeMap;
use std::process::Command;

use newcache::codec::{FLAG_JSON, FLAG_TEXT};
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
    assert_eq!(flags, FLAG_JSON, "a forever value is stored bare");
    assert_eq!(bytes, br#"{"name":"chess","players":[1,2],"rating":0.5}"#);
    assert_eq!(json.get::<Game>("game").unwrap(), Some(game.clone()));

    // With a finite TTL the herd envelope wraps the JSON; the flags say both.
    json.set("herded", &game, Ttl::Seconds(300)).unwrap();
    let (bytes, flags) = raw(&server, &json.wire_key("herded").unwrap());
    assert_eq!(flags, FLAG_JSON | HERD_FLAG);
    assert!(bytes.ends_with(br#""rating":0.5}"#));
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

    // Python reads the JSON value with pylibmc and json.loads.
    let script = format!(
        r#"
import json, pylibmc
v = pylibmc.Client(["{addr}"]).get("{key}")
d = json.loads(v)
print(d["name"], d["players"], d["rating"])
"#,
        addr = server.addr(),
        key = String::from_utf8(json.wire_key("game").unwrap()).unwrap(),
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("run /usr/bin/python3 (cargo xtask test installs python3-pylibmc)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "chess [1, 2] 0.5\n");
}
