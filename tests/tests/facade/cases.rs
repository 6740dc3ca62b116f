// The `Cache` facade end to end against a real memcached: django-newcache's own tests,
// ported, and what newcache adds. Items are read back past newcache, through the raw
// protocol and through the `memcache` crate, an independent client.
//
// Included by one test file per transport, each defining `TRANSPORT`: the URL parameters
// that select it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use newcache::{Cache, Error, ManualClock, SetOptions, Ttl, HERD_FLAG};
use newcache_testkit::Memcached;
use newcache_tests::fixtures::at_once;

/// An item's value type, herd and codec bits (0-10): the herd state above them changes with
/// the clock.
fn kind(flags: u32) -> u32 {
    flags & 0x7ff
}

const NOW: u64 = 1_800_000_000;

struct Env {
    server: Memcached,
    cache: Cache,
    clock: ManualClock,
}

/// A fresh memcached and a cache on it with flavor `test`, version 1, a manual clock at the
/// present, and the URL's extra parameters.
fn env(params: &str) -> Env {
    let server = Memcached::start();
    let clock = ManualClock::at_secs(newcache::Clock::now_secs(&newcache::SystemClock));
    let url = format!(
        "newcache://{}/?flavor=test&version=1&{TRANSPORT}&{params}",
        server.addr()
    );
    let cache = newcache::Builder::from_url(&url)
        .unwrap()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    Env {
        server,
        cache,
        clock,
    }
}

impl Env {
    fn wire(&self, key: &str) -> String {
        String::from_utf8(self.cache.wire_key(key).unwrap()).unwrap()
    }

    /// `mg KEY f t v` on the server: (flags, remaining TTL (-1 = never), value).
    fn meta(&self, key: &str) -> Option<(u32, i64, Vec<u8>)> {
        let reply = self
            .server
            .raw(&format!("mg {} f t v\r\n", self.wire(key)), b"\r\n");
        if reply.starts_with(b"EN") {
            return None;
        }
        // VA <len> f<flags> t<ttl>\r\n<data>\r\n
        let text = String::from_utf8_lossy(&reply).into_owned();
        let header = text.lines().next().unwrap().to_string();
        let mut parts = header.split(' ');
        assert_eq!(parts.next(), Some("VA"), "{text}");
        let len: usize = parts.next().unwrap().parse().unwrap();
        let mut flags = 0;
        let mut ttl = 0;
        for p in parts {
            match p.split_at(1) {
                ("f", v) => flags = v.parse().unwrap(),
                ("t", v) => ttl = v.parse().unwrap(),
                _ => {}
            }
        }
        let start = header.len() + 2;
        let mut value = reply[start..].to_vec();
        while value.len() < len + 2 {
            // The rest of the value had not arrived in the first read.
            let more = self
                .server
                .raw(&format!("get {}\r\n", self.wire(key)), b"END\r\n");
            let text = String::from_utf8_lossy(&more);
            let body_start = text.find("\r\n").unwrap() + 2;
            value = more[body_start..body_start + len].to_vec();
            value.extend_from_slice(b"\r\n");
        }
        value.truncate(len);
        Some((flags, ttl, value))
    }

    /// The item as the `memcache` crate (another client) reads it: (bytes, flags).
    fn other_client(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let client =
            memcache::Client::connect(format!("memcache://{}?protocol=ascii", self.server.addr()))
                .unwrap();
        client.get::<(Vec<u8>, u32)>(&self.wire(key)).unwrap()
    }
}

// ---- django-newcache's tests, ported ----

#[test]
fn simple_set_get_and_delete() {
    let e = env("");
    e.cache.set("key", &"value", Ttl::Default).unwrap();
    assert_eq!(
        e.cache.get::<String>("key").unwrap().as_deref(),
        Some("value")
    );
    assert!(e.cache.delete("key").unwrap());
    assert_eq!(e.cache.get::<String>("key").unwrap(), None);
    assert!(!e.cache.delete("key").unwrap());
}

#[test]
fn add_does_not_overwrite() {
    let e = env("");
    assert!(e.cache.add("addkey1", &"value", Ttl::Default).unwrap());
    assert!(!e.cache.add("addkey1", &"newvalue", Ttl::Default).unwrap());
    assert_eq!(
        e.cache.get::<String>("addkey1").unwrap().as_deref(),
        Some("value")
    );
}

#[test]
fn incr_and_decr_work_on_a_herd_off_value() {
    let e = env("");
    e.cache
        .set("answer", &41, SetOptions::new(Ttl::Default).no_herd())
        .unwrap();
    assert_eq!(e.cache.incr("answer", 1).unwrap(), 42);
    assert_eq!(e.cache.get::<i64>("answer").unwrap(), Some(42));
    assert_eq!(e.cache.incr("answer", 10).unwrap(), 52);
    assert_eq!(e.cache.decr("answer", 10).unwrap(), 42);
    assert_eq!(e.cache.decr("answer", 100).unwrap(), 0);
    assert!(
        matches!(e.cache.incr("does_not_exist", 1), Err(Error::NotFound { key }) if key == "does_not_exist")
    );
    assert!(matches!(
        e.cache.decr("does_not_exist", 1),
        Err(Error::NotFound { .. })
    ));
    // A herd-protected integer is stored bare too (its soft expiry is in the flags, which
    // incr keeps): it counts, and stays protected.
    e.cache.set("protected", &5, Ttl::Seconds(60)).unwrap();
    assert_eq!(e.cache.incr("protected", 1).unwrap(), 6);
    assert_eq!(e.cache.get::<i64>("protected").unwrap(), Some(6));
    let (flags, _, _) = e.meta("protected").unwrap();
    assert_eq!(kind(flags), 4 | HERD_FLAG);
    // What is not a number is still a typed error.
    e.cache.set("text", "five", Ttl::Seconds(60)).unwrap();
    assert!(matches!(
        e.cache.incr("text", 1),
        Err(Error::NotNumeric { .. })
    ));
}

#[test]
fn get_many_set_many_and_delete_many() {
    let e = env("");
    let failed = e
        .cache
        .set_many([("a", 1), ("b", 2), ("c", 3), ("ключ d", 4)], Ttl::Default)
        .unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    let got: HashMap<String, i32> = e
        .cache
        .get_many(&["a", "b", "c", "ключ d", "missing", "a"])
        .unwrap()
        .into_complete()
        .unwrap();
    let want: HashMap<String, i32> = [("a", 1), ("b", 2), ("c", 3), ("ключ d", 4)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(got, want);
    assert_eq!(e.cache.delete_many(&["a", "c", "missing"]).unwrap(), 2);
    let got: HashMap<String, i32> = e
        .cache
        .get_many(&["a", "b", "c"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["b"]);
}

#[test]
fn get_many_ordered_answers_key_by_key_in_order() {
    let e = env("");
    e.cache
        .set_many([("a", 1), ("b", 2), ("ключ d", 4)], Ttl::Default)
        .unwrap();
    let got: Vec<Option<i32>> = e
        .cache
        .get_many_ordered(&["a", "missing", "ключ d", "b", "a"])
        .unwrap();
    assert_eq!(got, [Some(1), None, Some(4), Some(2), Some(1)]);
    assert!(e
        .cache
        .get_many_ordered::<&str, i32>(&[])
        .unwrap()
        .is_empty());
    // A value that cannot be read fails the call, naming its key.
    e.cache.set("text", "not a number", Ttl::Default).unwrap();
    match e.cache.get_many_ordered::<_, i32>(&["a", "text"]) {
        Err(Error::Decode { key, .. }) => assert_eq!(key, "text"),
        other => panic!("a decode error for text, got {other:?}"),
    }
}

#[test]
fn get_many_ordered_hands_each_stale_key_to_exactly_one_reader_under_lease() {
    let e = env("herd_timeout=60");
    e.cache
        .set_many([("a", 1u32), ("b", 1)], Ttl::Seconds(10))
        .unwrap();
    e.clock.advance_secs(11);
    let cache = e.cache.clone();
    let got = at_once(16, move |_| {
        cache.get_many_ordered::<_, u32>(&["a", "b"]).unwrap()
    });
    for (i, key) in ["a", "b"].iter().enumerate() {
        let misses = got.iter().filter(|v| v[i].is_none()).count();
        assert_eq!(misses, 1, "{key}: exactly one reader recomputes: {got:?}");
    }
}

#[test]
fn herd_keeps_an_expired_value_alive_for_herd_timeout() {
    // The seed's own policy, kept as `herd=reinsert`.
    let e = env("herd_timeout=60&herd=reinsert");
    e.cache.set("herd", &"old", Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    // The first reader after the soft expiry recomputes...
    assert_eq!(e.cache.get::<String>("herd").unwrap(), None);
    // ...while everyone else is served the old value, stored bare for herd_timeout.
    assert_eq!(
        e.cache.get::<String>("herd").unwrap().as_deref(),
        Some("old")
    );
    assert_eq!(
        e.cache.get::<String>("herd").unwrap().as_deref(),
        Some("old")
    );
    let (flags, ttl, value) = e.meta("herd").unwrap();
    assert_eq!(flags, 16, "re-stored bare, as text");
    assert!((58..=60).contains(&ttl), "ttl {ttl}");
    assert_eq!(value, b"old");
}

#[test]
fn forever_ttls_are_stored_bare_with_herd_on_and_off() {
    let e = env("");
    e.cache.set("forever", &"v", Ttl::Forever).unwrap();
    e.cache
        .set(
            "forever-noherd",
            &"v",
            SetOptions::new(Ttl::Forever).no_herd(),
        )
        .unwrap();
    for key in ["forever", "forever-noherd"] {
        let (flags, ttl, value) = e.meta(key).unwrap();
        assert_eq!((flags, ttl, value.as_slice()), (16, -1, &b"v"[..]), "{key}");
    }
    e.clock.advance_secs(10 * 365 * 24 * 3600);
    assert_eq!(
        e.cache.get::<String>("forever").unwrap().as_deref(),
        Some("v")
    );
    let e = env("timeout=forever");
    e.cache.set("default-forever", &1u8, Ttl::Default).unwrap();
    assert_eq!(e.meta("default-forever").unwrap().1, -1);
}

// ---- what newcache adds ----

#[test]
fn golden_keys_reach_the_server() {
    let e = env("");
    e.cache.set("games", &"chess", Ttl::Forever).unwrap();
    let reply = e.server.raw(
        "get test-1-dd27204535de317c6202952eeb2043fad52e3fec\r\n",
        b"END\r\n",
    );
    assert_eq!(
        reply,
        b"VALUE test-1-dd27204535de317c6202952eeb2043fad52e3fec 16 5\r\nchess\r\nEND\r\n"
    );
    assert_eq!(
        e.wire("hello world"),
        "test-1-2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"
    );
    assert_eq!(
        e.wire("ünïcode ключ"),
        "test-1-d76f84760ebe9734977e613fdc5ecbb884dd3925"
    );
}

#[test]
fn the_herd_state_rides_in_the_flags_and_the_value_stays_bare() {
    let e = env("herd_timeout=60");
    e.cache
        .set("enveloped", &"value", Ttl::Seconds(300))
        .unwrap();
    let (flags, ttl, value) = e.meta("enveloped").unwrap();
    assert_eq!(kind(flags), 16 | HERD_FLAG);
    assert!(
        (358..=360).contains(&ttl),
        "real TTL is ttl + herd_timeout, got {ttl}"
    );
    // The value is exactly what a Python client stores for the str "value".
    assert_eq!(value, b"value");
    // The soft expiry is in the flags: 300 s from the cache's clock.
    let now = newcache::Clock::now_millis(&e.clock);
    let Some(newcache_herd::Carried::Flags(envelope)) = newcache_herd::read_flags(flags, now)
    else {
        panic!("flags {flags:#x} carry no herd state")
    };
    assert_eq!(
        envelope.soft_expiry_millis.div_ceil(1000),
        (now + 300_000).div_ceil(1000)
    );
    // Another client sees the same flags and bytes.
    let (bytes, other_flags) = e.other_client("enveloped").unwrap();
    assert_eq!(other_flags, flags);
    assert_eq!(bytes, value);
}

#[test]
fn set_many_gives_items_the_herd_timeout_too() {
    let e = env("herd_timeout=45");
    e.cache
        .set_many([("m1", "a"), ("m2", "b")], Ttl::Seconds(100))
        .unwrap();
    for key in ["m1", "m2"] {
        let (flags, ttl, _) = e.meta(key).unwrap();
        assert_eq!(kind(flags), 16 | HERD_FLAG);
        assert!((143..=145).contains(&ttl), "{key}: ttl {ttl}");
    }
}

#[test]
fn ttls_past_30_days_are_sent_as_absolute_times() {
    let e = env("");
    let sixty_days = 60 * 24 * 3600;
    e.cache
        .set(
            "long",
            &"v",
            SetOptions::new(Ttl::Seconds(sixty_days)).no_herd(),
        )
        .unwrap();
    let (_, ttl, _) = e.meta("long").unwrap();
    // Sent as a relative 60 days, memcached would read it as a date in 1970 and drop the item.
    // (memcached's clock ticks once a second and may lag the real one by up to a second, so
    // the remaining TTL it reports can be one more.)
    assert!(
        (sixty_days as i64 - 5..=sixty_days as i64 + 1).contains(&ttl),
        "ttl {ttl}"
    );
    e.cache
        .set("long-herd", &"v", Ttl::Seconds(sixty_days))
        .unwrap();
    let (_, ttl, _) = e.meta("long-herd").unwrap();
    assert!(
        (sixty_days as i64 + 55..=sixty_days as i64 + 61).contains(&ttl),
        "ttl {ttl}"
    );
}

#[test]
fn ttls_past_2038_are_refused_never_sent_and_the_longest_that_fits_is_kept() {
    let e = env("");
    let now = newcache::Clock::now_secs(&e.clock);
    let to_2038 = u64::from(newcache_herd::MAX_EXPTIME) - now;
    for ttl in [to_2038 + 1, 12 * 365 * 86_400, u64::MAX] {
        for options in [
            SetOptions::new(Ttl::Seconds(ttl)),
            SetOptions::new(Ttl::Seconds(ttl)).no_herd(),
        ] {
            assert!(
                matches!(e.cache.set("far", &"v", options), Err(Error::TtlTooLong(_))),
                "ttl {ttl}"
            );
            assert!(matches!(
                e.cache.touch("far", options),
                Err(Error::TtlTooLong(_))
            ));
        }
    }
    assert_eq!(e.meta("far"), None, "nothing was stored");
    // The last second memcached can keep is kept: the item is there, not gone at once.
    e.cache
        .set(
            "last",
            &"v",
            SetOptions::new(Ttl::Seconds(to_2038 - 60)).no_herd(),
        )
        .unwrap();
    let (_, ttl, _) = e.meta("last").unwrap();
    assert!(ttl > 0, "ttl {ttl}");
    // With herd on, only the herd timeout would cross the line: the item lives to 2038.
    e.cache
        .set("last-herd", &"v", Ttl::Seconds(to_2038 - 10))
        .unwrap();
    assert_eq!(
        e.cache.get::<String>("last-herd").unwrap().as_deref(),
        Some("v")
    );
    // Forever is the way to say "never expire".
    e.cache.set("forever", &"v", Ttl::Forever).unwrap();
    assert_eq!(e.meta("forever").unwrap().1, -1);
}

#[test]
fn a_zero_ttl_expires_at_once() {
    let e = env("");
    e.cache.set("zero", &"v", Ttl::Forever).unwrap();
    e.cache.set("zero", &"v", Ttl::Seconds(0)).unwrap();
    assert_eq!(e.meta("zero"), None);
}

#[test]
fn plain_values_carry_the_flags_python_clients_read() {
    let e = env("");
    let bare = SetOptions::new(Ttl::Forever);
    e.cache.set("str", "héllo", bare).unwrap();
    e.cache.set("int", &-12i64, bare).unwrap();
    e.cache.set("bool", &true, bare).unwrap();
    e.cache.set("bytes", &vec![0u8, 255], bare).unwrap();
    e.cache.set("struct", &(1u8, "x"), bare).unwrap();
    assert_eq!(
        e.other_client("str").unwrap(),
        ("héllo".as_bytes().to_vec(), 16)
    );
    assert_eq!(e.other_client("int").unwrap(), (b"-12".to_vec(), 4));
    // A pickled True: pylibmc's own flag 2 "1" reads back as the int 1 in Python.
    assert_eq!(
        e.other_client("bool").unwrap(),
        (b"\x80\x02\x88.".to_vec(), 1)
    );
    assert_eq!(e.other_client("bytes").unwrap(), (vec![0, 255], 0));
    // bincode: flag 16 with bit 9, behind a 0xff no Python client decodes.
    let (bytes, flags) = e.other_client("struct").unwrap();
    assert_eq!((bytes[0], flags), (0xff, 16 | 0x200));
    assert_eq!(
        e.cache.get::<(u8, String)>("struct").unwrap(),
        Some((1, "x".into()))
    );
    // What a Python client wrote (here: the other client), newcache reads.
    let client =
        memcache::Client::connect(format!("memcache://{}?protocol=ascii", e.server.addr()))
            .unwrap();
    client.set(&e.wire("from-python"), "7", 0).unwrap();
    assert_eq!(e.cache.get::<u32>("from-python").unwrap(), Some(7));
    let wrong: Result<Option<Vec<String>>, _> = e.cache.get("str");
    assert!(matches!(wrong, Err(Error::Decode { .. })), "{wrong:?}");
}

#[test]
fn bad_keys_send_nothing() {
    let e = env("key_function=django&key_prefix=site");
    // Every counter of commands, and what the server has read and how many connections it
    // took: nothing may move but what the `stats` request itself adds.
    let watched = |stats: Vec<(String, String)>| -> Vec<(String, u64)> {
        stats
            .into_iter()
            .filter(|(n, _)| n.starts_with("cmd_") || n == "bytes_read" || n == "total_connections")
            .map(|(n, v)| (n, v.parse().unwrap()))
            .collect()
    };
    let before = watched(e.server.stats());
    let long = "k".repeat(300);
    for key in ["two words", "line\nbreak", "tab\t", "nul\0", long.as_str()] {
        assert!(
            matches!(e.cache.get::<String>(key), Err(Error::InvalidKey(_))),
            "{key:?}"
        );
        assert!(matches!(
            e.cache.set(key, "v", Ttl::Default),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(
            e.cache.add(key, "v", Ttl::Default),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(e.cache.delete(key), Err(Error::InvalidKey(_))));
        assert!(matches!(e.cache.incr(key, 1), Err(Error::InvalidKey(_))));
        assert!(matches!(e.cache.decr(key, 1), Err(Error::InvalidKey(_))));
        assert!(matches!(
            e.cache.touch(key, Ttl::Default),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(e.cache.has_key(key), Err(Error::InvalidKey(_))));
        assert!(matches!(e.cache.invalidate(key), Err(Error::InvalidKey(_))));
        assert!(matches!(
            e.cache.get_many::<_, String>(&["fine", key]),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(
            e.cache.set_many([("fine", 1), (key, 2)], Ttl::Default),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(
            e.cache.delete_many(&["fine", key]),
            Err(Error::InvalidKey(_))
        ));
    }
    let after = watched(e.server.stats());
    let expected: Vec<(String, u64)> = before
        .iter()
        .map(|(n, v)| match n.as_str() {
            // The second `stats` request: one more connection, "stats\r\n" read.
            "total_connections" => (n.clone(), v + 1),
            "bytes_read" => (n.clone(), v + "stats\r\n".len() as u64),
            _ => (n.clone(), *v),
        })
        .collect();
    assert_eq!(after, expected, "a bad key reached the server");
    assert_eq!(e.server.stat("curr_items"), 0);
    // The error names the key and says what to do.
    let msg = e.cache.get::<String>("two words").unwrap_err().to_string();
    assert!(msg.contains("two words") && msg.contains("space"), "{msg}");
}

#[test]
fn a_value_over_the_item_size_limit_is_a_typed_error_and_is_not_sent() {
    let e = env("");
    let before = e.server.stat("cmd_set");
    let big = vec![7u8; 2 * 1024 * 1024];
    let err = e.cache.set("big", &big, Ttl::Default).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport(newcache::transport::Error::ValueTooLarge { .. })
        ),
        "{err}"
    );
    assert_eq!(e.server.stat("cmd_set"), before);
    // The connection is still good.
    e.cache.set("small", &1, Ttl::Default).unwrap();
    assert_eq!(e.cache.get::<i32>("small").unwrap(), Some(1));
}

#[test]
fn a_dropped_server_gives_a_timely_error_and_a_restarted_one_is_used_again() {
    let mut e = env("connect_timeout=200&read_timeout=300");
    e.cache.set("k", &1, Ttl::Default).unwrap();
    e.server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let err = e.cache.get::<i32>("k").unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        // The first failure is the connection's; the next ones fail fast as the server is
        // left alone for its retry_timeout.
        assert!(
            matches!(&err, Error::Transport(t) if t.is_server_failure()),
            "{err}"
        );
    }
    e.server.restart();
    // Both transports wait out their retry_timeout (1 s here) before they try a failed
    // server again.
    let window = Duration::from_millis(2500);
    let started = Instant::now();
    let after_restart = loop {
        match e.cache.get::<i32>("k") {
            Ok(v) => break v,
            Err(err) if started.elapsed() >= window => panic!("not used again: {err}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(after_restart, None, "a restarted server is empty");
    e.cache.set("k", &2, Ttl::Default).unwrap();
    assert_eq!(e.cache.get::<i32>("k").unwrap(), Some(2));
}

#[test]
fn has_key_replace_touch_clear_and_get_or_set() {
    let e = env("herd_timeout=60");
    assert!(!e.cache.has_key("k").unwrap());
    assert!(!e.cache.replace("k", &1, Ttl::Default).unwrap());
    e.cache.set("k", &1, Ttl::Seconds(10)).unwrap();
    assert!(e.cache.has_key("k").unwrap());
    assert!(e.cache.replace("k", &2, Ttl::Seconds(10)).unwrap());
    assert_eq!(e.cache.get::<i32>("k").unwrap(), Some(2));
    // touch moves the soft expiry with the item's TTL.
    assert!(e.cache.touch("k", Ttl::Seconds(1000)).unwrap());
    let (_, ttl, _) = e.meta("k").unwrap();
    assert!((1058..=1060).contains(&ttl), "ttl {ttl}");
    e.clock.advance_secs(500);
    assert!(e.cache.has_key("k").unwrap());
    assert_eq!(e.cache.get::<i32>("k").unwrap(), Some(2));
    assert!(!e.cache.touch("nothing", Ttl::Seconds(5)).unwrap());
    // get_or_set runs the loader only on a miss.
    let mut runs = 0;
    let v: String = e
        .cache
        .get_or_set("lazy", Ttl::Default, || {
            runs += 1;
            "computed".to_string()
        })
        .unwrap();
    assert_eq!(v, "computed");
    let v: String = e
        .cache
        .get_or_set("lazy", Ttl::Default, || unreachable!())
        .unwrap();
    assert_eq!((v.as_str(), runs), ("computed", 1));
    e.cache.clear().unwrap();
    assert!(!e.cache.has_key("lazy").unwrap());
    assert!(e.cache.stats().unwrap()[0].stats.contains_key("curr_items"));
}

#[test]
fn one_cache_serves_many_threads() {
    let e = env("");
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let cache = e.cache.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let key = format!("t{t}-{i}");
                    cache.set(&key, &(t * 1000 + i), Ttl::Default).unwrap();
                    assert_eq!(cache.get::<i32>(&key).unwrap(), Some(t * 1000 + i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(e.server.stat("curr_items"), 1600);
}

#[test]
fn flavors_and_versions_share_a_server_without_colliding() {
    let server = Memcached::start();
    let url = |q: &str| format!("newcache://{}/?{TRANSPORT}&{q}", server.addr());
    let staging = Cache::from_url(&url("flavor=staging&version=2")).unwrap();
    let prod = Cache::from_url(&url("flavor=prod&version=2")).unwrap();
    let staging3 = Cache::from_url(&url("flavor=staging&version=3")).unwrap();
    staging.set("games", &"staging", Ttl::Default).unwrap();
    prod.set("games", &"prod", Ttl::Default).unwrap();
    assert_eq!(
        staging.get::<String>("games").unwrap().as_deref(),
        Some("staging")
    );
    assert_eq!(
        prod.get::<String>("games").unwrap().as_deref(),
        Some("prod")
    );
    assert_eq!(
        staging3.get::<String>("games").unwrap(),
        None,
        "a version bump invalidates"
    );
    let reply = server.raw(
        "get staging-2-dd27204535de317c6202952eeb2043fad52e3fec\r\n",
        b"END\r\n",
    );
    let line = String::from_utf8_lossy(&reply);
    let flags: u32 = line
        .strip_prefix("VALUE staging-2-dd27204535de317c6202952eeb2043fad52e3fec ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(kind(flags), 16 | HERD_FLAG);
}

#[test]
fn custom_key_functions_plug_in() {
    let server = Memcached::start();
    let cache = newcache::Builder::from_url(&format!("newcache://{}/?{TRANSPORT}", server.addr()))
        .unwrap()
        .key_function(|k: &str| format!("custom/{}", k.len()))
        .build()
        .unwrap();
    cache.set("abc", &"v", Ttl::Forever).unwrap();
    assert_eq!(
        server.raw("get custom/3\r\n", b"END\r\n"),
        b"VALUE custom/3 16 1\r\nv\r\nEND\r\n"
    );
    assert_eq!(cache.get::<String>("xyz").unwrap().as_deref(), Some("v"));
}

#[test]
fn several_servers_share_the_keys() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let hosts: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let cache = Cache::from_url(&format!("newcache://{}/?{TRANSPORT}", hosts.join(";"))).unwrap();
    let items: Vec<(String, u32)> = (0..300).map(|i| (format!("key{i}"), i)).collect();
    assert!(cache
        .set_many(items.clone(), Ttl::Default)
        .unwrap()
        .is_empty());
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    let got: HashMap<String, u32> = cache.get_many(&keys).unwrap().into_complete().unwrap();
    assert_eq!(got.len(), 300);
    for s in &servers {
        let n = s.stat("curr_items");
        assert!((50..=150).contains(&n), "uneven placement: {n} of 300");
    }
}

#[test]
fn the_memory_transport_behaves_like_the_server_through_the_facade() {
    let clock = ManualClock::at_secs(NOW);
    let cache = newcache::Builder::from_url("newcache:///?transport=memory&flavor=test")
        .unwrap()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    cache.set("herd", &"old", Ttl::Seconds(10)).unwrap();
    assert!(cache.add("herd2", &1, Ttl::Default).unwrap());
    assert!(!cache.add("herd2", &1, Ttl::Default).unwrap());
    clock.advance_secs(11);
    assert_eq!(cache.get::<String>("herd").unwrap(), None);
    assert_eq!(cache.get::<String>("herd").unwrap().as_deref(), Some("old"));
    cache
        .set("n", &1, SetOptions::new(Ttl::Forever).no_herd())
        .unwrap();
    assert_eq!(cache.incr("n", 2).unwrap(), 3);
}

// ---- single-winner herd (the default `lease` policy), invalidate, get_or_set ----

#[test]
fn lease_hands_the_refresh_to_exactly_one_of_many_readers() {
    let e = env("herd_timeout=60");
    assert_eq!(e.cache.config().herd_policy, newcache::Policy::Lease);
    e.cache.set("hot", &"old", Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    let cache = e.cache.clone();
    let got = at_once(32, move |_| cache.get::<String>("hot").unwrap());
    let misses = got.iter().filter(|g| g.is_none()).count();
    assert_eq!(misses, 1, "exactly one reader recomputes: {got:?}");
    assert!(got.iter().flatten().all(|v| v == "old"));
    // The claimed item is still an envelope, alive for the winner's write-back and a retry.
    let (flags, ttl, _) = e.meta("hot").unwrap();
    assert_eq!(kind(flags), 16 | HERD_FLAG);
    assert!((118..=120).contains(&ttl), "ttl {ttl}");
}

#[test]
fn a_lease_winner_that_never_writes_back_is_replaced_after_herd_timeout() {
    let e = env("herd_timeout=30");
    e.cache.set("k", &"old", Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    assert_eq!(
        e.cache.get::<String>("k").unwrap(),
        None,
        "the first winner"
    );
    assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("old"));
    e.clock.advance_secs(29);
    assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("old"));
    e.clock.advance_secs(2);
    assert_eq!(e.cache.get::<String>("k").unwrap(), None, "a new winner");
    assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("old"));
}

#[test]
fn get_many_follows_the_seeds_rule_under_reinsert() {
    let e = env("herd_timeout=60&herd=reinsert");
    e.cache
        .set_many([("a", "old-a"), ("b", "old-b")], Ttl::Seconds(10))
        .unwrap();
    e.clock.advance_secs(11);
    e.cache.set("fresh", "f", Ttl::Seconds(300)).unwrap();
    // The first multi-get after the soft expiry misses both stale keys (and re-stores them
    // bare for herd_timeout); the fresh one is served.
    let first: HashMap<String, String> = e
        .cache
        .get_many(&["a", "b", "fresh"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(
        first,
        HashMap::from([("fresh".to_string(), "f".to_string())])
    );
    for key in ["a", "b"] {
        let (flags, ttl, value) = e.meta(key).unwrap();
        assert_eq!(flags & HERD_FLAG, 0, "{key}: re-stored bare");
        assert!((58..=60).contains(&ttl), "{key}: ttl {ttl}");
        assert_eq!(value, format!("old-{key}").as_bytes());
    }
    // Everyone after is served the old values.
    let second: HashMap<String, String> = e
        .cache
        .get_many(&["a", "b"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(second.get("a").map(String::as_str), Some("old-a"));
    assert_eq!(second.get("b").map(String::as_str), Some("old-b"));
}

#[test]
fn get_many_hands_each_stale_key_to_exactly_one_reader_under_lease() {
    let e = env("herd_timeout=60");
    let keys = ["a", "b", "c"];
    e.cache
        .set_many(keys.iter().map(|k| (*k, 1u32)), Ttl::Seconds(10))
        .unwrap();
    e.clock.advance_secs(11);
    let cache = e.cache.clone();
    let got = at_once(16, move |_| {
        cache.get_many::<_, u32>(&["a", "b", "c"]).unwrap()
    });
    for key in keys {
        let misses = got.iter().filter(|m| !m.contains_key(key)).count();
        assert_eq!(misses, 1, "{key}: exactly one reader recomputes: {got:?}");
        // The claim left the old value in its envelope, alive for the write-back.
        let (flags, ttl, _) = e.meta(key).unwrap();
        assert_eq!(kind(flags), 4 | HERD_FLAG, "{key}");
        assert!((118..=120).contains(&ttl), "{key}: ttl {ttl}");
    }
    assert!(got.iter().flat_map(|m| m.values()).all(|v| *v == 1));
}

#[test]
fn invalidate_marks_a_value_stale_so_exactly_one_reader_recomputes() {
    let e = env("herd_timeout=60");
    e.cache.set("fresh", &"v1", Ttl::Seconds(300)).unwrap();
    e.cache.set("bare", &"b1", Ttl::Forever).unwrap();
    assert!(e.cache.invalidate("fresh").unwrap());
    assert!(e.cache.invalidate("bare").unwrap());
    assert!(!e.cache.invalidate("missing").unwrap());
    for key in ["fresh", "bare"] {
        let cache = e.cache.clone();
        let got = at_once(16, move |_| cache.get::<String>(key).unwrap());
        assert_eq!(
            got.iter().filter(|g| g.is_none()).count(),
            1,
            "{key}: {got:?}"
        );
    }
    // delete still deletes.
    assert!(e.cache.delete("fresh").unwrap());
    assert_eq!(e.meta("fresh"), None);
}

#[test]
fn get_or_set_runs_the_loader_once_for_a_cold_key_across_threads() {
    let e = env("");
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(16, move |_| {
        cache
            .get_or_set("cold", Ttl::Seconds(60), || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                "loaded".to_string()
            })
            .unwrap()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(got.iter().all(|v| v == "loaded"));
}

#[test]
fn get_or_set_shares_one_loader_run_between_two_caches_as_between_processes() {
    // Two caches have separate connections and flight tables, as two processes would: the
    // lease key stored with `add` is what keeps the second from loading too.
    let e = env("lease_wait=3000");
    let url = format!(
        "newcache://{}/?flavor=test&version=1&{TRANSPORT}&lease_wait=3000",
        e.server.addr()
    );
    let other = Cache::from_url(&url).unwrap();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let caches = [e.cache.clone(), other];
    let counter = runs.clone();
    let got = at_once(16, move |i| {
        caches[i % 2]
            .get_or_set("shared", Ttl::Seconds(60), || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                7u32
            })
            .unwrap()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(got.iter().all(|v| *v == 7));
}

#[test]
fn get_or_set_runs_the_loader_once_per_expiry_and_serves_the_old_value_meanwhile() {
    let e = env("herd_timeout=60");
    e.cache.set("page", &1u32, Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(16, move |_| {
        cache
            .get_or_set("page", Ttl::Seconds(10), || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                2u32
            })
            .unwrap()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(got.iter().filter(|v| **v == 2).count(), 1, "{got:?}");
    assert_eq!(got.iter().filter(|v| **v == 1).count(), 15, "{got:?}");
    assert_eq!(e.cache.get::<u32>("page").unwrap(), Some(2));
}

#[test]
fn a_failing_loader_reaches_its_caller_and_stores_nothing() {
    let e = env("");
    let got: Result<u32, Error> = e.cache.get_or_try_set("flaky", Ttl::Seconds(60), || {
        Err(Error::Config("database down".into()))
    });
    assert!(
        matches!(&got, Err(Error::Config(m)) if m == "database down"),
        "{got:?}"
    );
    assert_eq!(e.meta("flaky"), None);
    // The lease is released: the next caller loads at once.
    let v = e
        .cache
        .get_or_set("flaky", Ttl::Seconds(60), || 5u32)
        .unwrap();
    assert_eq!(v, 5);
}

#[test]
fn a_failing_loader_on_the_stale_path_keeps_the_old_value_for_everyone() {
    let e = env("herd_timeout=60");
    e.cache.set("page", &1u32, Ttl::Seconds(10)).unwrap();
    e.clock.advance_secs(11);
    // The winner's loader fails; the 15 others are served the old value, never the error.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(16, move |_| {
        cache.get_or_try_set("page", Ttl::Seconds(10), || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            Err::<u32, Error>(Error::Config("database down".into()))
        })
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    let errors: Vec<_> = got.iter().filter_map(|g| g.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{got:?}");
    assert!(
        matches!(errors[0], Error::Config(m) if m == "database down"),
        "{got:?}"
    );
    assert!(got.iter().flatten().all(|v| *v == 1), "{got:?}");
    // Nothing was stored: the item is still the old value's (claimed) envelope.
    let (flags, _, value) = e.meta("page").unwrap();
    assert_eq!(kind(flags), 4 | HERD_FLAG);
    assert_eq!(value, b"1");
    assert_eq!(e.cache.get::<u32>("page").unwrap(), Some(1));
    // Once the claim runs out (herd_timeout), the next caller retries and stores.
    e.clock.advance_secs(61);
    let v = e
        .cache
        .get_or_set("page", Ttl::Seconds(10), || 2u32)
        .unwrap();
    assert_eq!(v, 2);
    assert_eq!(e.cache.get::<u32>("page").unwrap(), Some(2));
}

#[test]
fn after_a_failing_cold_loader_one_waiter_loads_next_not_all() {
    let e = env("lease_wait=3000");
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(8, move |_| {
        cache.get_or_try_set("cold", Ttl::Seconds(60), || {
            let run = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            if run == 0 {
                Err(Error::Config("database down".into()))
            } else {
                Ok(7u32)
            }
        })
    });
    // The leader's error reaches the leader; then one waiter leads and the rest read its value.
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2, "{got:?}");
    assert_eq!(got.iter().filter(|g| g.is_err()).count(), 1, "{got:?}");
    assert!(got.iter().flatten().all(|v| *v == 7), "{got:?}");
    assert_eq!(
        e.meta("cold:newcache-lease"),
        None,
        "the lease key is released"
    );
}

#[test]
fn a_panicking_loader_releases_the_lease_key_and_the_flight() {
    let e = env("lease_wait=3000");
    let cache = e.cache.clone();
    let panicked = std::thread::spawn(move || {
        cache.get_or_set("boom", Ttl::Seconds(60), || -> u32 {
            panic!("loader panicked")
        })
    })
    .join();
    assert!(panicked.is_err());
    assert_eq!(
        e.meta("boom:newcache-lease"),
        None,
        "the lease key is deleted"
    );
    assert_eq!(e.meta("boom"), None, "nothing was stored");
    // With waiters: the leader panics after they joined its flight; one of them loads next.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cache, counter) = (e.cache.clone(), runs.clone());
    let got = at_once(4, move |_| {
        let counter = counter.clone();
        let cache = cache.clone();
        std::thread::spawn(move || {
            cache.get_or_set("boom", Ttl::Seconds(60), || {
                let run = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                assert!(run > 0, "the first loader panics");
                5u32
            })
        })
        .join()
    });
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        got.iter().filter(|g| g.is_err()).count(),
        1,
        "one caller panicked"
    );
    assert!(
        got.iter().flatten().all(|v| matches!(v, Ok(5))),
        "the others got the next loader's value"
    );
    assert_eq!(e.meta("boom:newcache-lease"), None);
}

#[test]
fn early_recomputes_ahead_of_the_expiry_only_when_it_nears() {
    let e = env("herd_timeout=60&herd=early&early_beta=5");
    // The loader's 200 ms are recorded in the envelope: XFetch scales its lead by them.
    let v: u32 = e
        .cache
        .get_or_set("x", Ttl::Seconds(10), || {
            std::thread::sleep(Duration::from_millis(200));
            1
        })
        .unwrap();
    assert_eq!(v, 1);
    // Far from the expiry: every read is served.
    for _ in 0..50 {
        assert_eq!(e.cache.get::<u32>("x").unwrap(), Some(1));
    }
    // 100 ms before it, with beta 5: most reads (about 9 in 10) recompute early, and nothing
    // is stored or removed for the others.
    e.clock.advance_millis(9_900);
    let misses = (0..50)
        .filter(|_| e.cache.get::<u32>("x").unwrap().is_none())
        .count();
    assert!(
        (20..=50).contains(&misses),
        "{misses} of 50 recomputed early"
    );
    let (flags, _, _) = e.meta("x").unwrap();
    assert_eq!(kind(flags), 4 | HERD_FLAG);
    // Past the soft expiry, early behaves as lease: exactly one reader recomputes.
    e.clock.advance_millis(200);
    let cache = e.cache.clone();
    let got = at_once(16, move |_| cache.get::<u32>("x").unwrap());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "{got:?}");
}

// ---- The rest of Django's API: CAS, append/prepend, get-and-touch, versions, close ----

/// The herd settings every extra is checked under (herd=meta needs the text transport's
/// meta commands: tests/tests/herd_meta.rs).
const HERD_SETTINGS: [&str; 4] = ["herd=lease", "herd=reinsert", "herd=early", "herd=off"];

#[test]
fn gets_and_cas_store_only_over_what_was_read() {
    for herd in HERD_SETTINGS {
        for keys in ["", "key_function=django&key_prefix=site"] {
            let e = env(&format!("{herd}&{keys}"));
            e.cache.set("doc", "v1", Ttl::Seconds(300)).unwrap();
            let (value, token) = e.cache.gets::<String>("doc").unwrap().unwrap();
            assert_eq!(value, "v1", "{herd} {keys}");
            e.cache.cas("doc", "v2", token, Ttl::Seconds(300)).unwrap();
            assert_eq!(e.cache.get::<String>("doc").unwrap().as_deref(), Some("v2"));
            // The token is spent: the value changed since.
            match e.cache.cas("doc", "v3", token, Ttl::Seconds(300)) {
                Err(Error::CasConflict { key }) => assert_eq!(key, "doc"),
                other => panic!("{herd}: a conflict, got {other:?}"),
            }
            // Written by someone else in between: a conflict too, and their value stays.
            let (_, token) = e.cache.gets::<String>("doc").unwrap().unwrap();
            e.cache.set("doc", "theirs", Ttl::Seconds(300)).unwrap();
            assert!(matches!(
                e.cache.cas("doc", "mine", token, Ttl::Seconds(300)),
                Err(Error::CasConflict { .. })
            ));
            assert_eq!(e.cache.get::<String>("doc").unwrap().as_deref(), Some("theirs"));
            // Deleted in between.
            let (_, token) = e.cache.gets::<String>("doc").unwrap().unwrap();
            assert!(e.cache.delete("doc").unwrap());
            assert!(matches!(
                e.cache.cas("doc", "mine", token, Ttl::Seconds(300)),
                Err(Error::CasConflict { .. })
            ));
            assert!(e.cache.gets::<String>("doc").unwrap().is_none());
        }
    }
}

#[test]
fn append_and_prepend_extend_text_values_and_keep_the_herd_state() {
    for herd in HERD_SETTINGS {
        let e = env(herd);
        e.cache.set("log", "mid", Ttl::Seconds(300)).unwrap();
        let before = e.meta("log").unwrap().0;
        assert!(e.cache.append("log", "-end").unwrap());
        assert!(e.cache.prepend("log", b"pre-").unwrap());
        assert_eq!(
            e.cache.get::<String>("log").unwrap().as_deref(),
            Some("pre-mid-end"),
            "{herd}"
        );
        // The item keeps its flags: its type, and its soft expiry with it.
        assert_eq!(e.meta("log").unwrap().0, before, "{herd}");
        // Another client reads the longer text.
        assert_eq!(e.other_client("log").unwrap().0, b"pre-mid-end");
        assert!(!e.cache.append("missing", "x").unwrap());
        assert!(e.cache.get::<String>("missing").unwrap().is_none());
    }
    // A cache that compresses cannot append: bytes after zlib data break it.
    let e = env("compress_threshold=10");
    match e.cache.append("log", "x") {
        Err(Error::NotAppendable { key, reason }) => {
            assert_eq!(key, "log");
            assert!(reason.contains("compress"), "{reason}");
        }
        other => panic!("refused, got {other:?}"),
    }
}

#[test]
fn get_and_touch_reads_and_gives_a_new_ttl() {
    for herd in HERD_SETTINGS {
        let e = env(herd);
        e.cache.set("session", "s1", Ttl::Seconds(30)).unwrap();
        let got: Option<String> = e.cache.get_and_touch("session", Ttl::Seconds(3000)).unwrap();
        assert_eq!(got.as_deref(), Some("s1"), "{herd}");
        let (_, ttl, _) = e.meta("session").unwrap();
        assert!(ttl > 2000, "{herd}: ttl {ttl}");
        // The soft expiry moved too: past the old TTL the value is still fresh.
        e.clock.advance_secs(100);
        assert_eq!(
            e.cache.get::<String>("session").unwrap().as_deref(),
            Some("s1"),
            "{herd}"
        );
        assert_eq!(
            e.cache
                .get_and_touch::<String>("missing", Ttl::Seconds(60))
                .unwrap(),
            None
        );
    }
}

#[test]
fn versions_per_call_and_incr_decr_version_move_a_value() {
    for keys in ["", "key_function=django&key_prefix=site"] {
        let e = env(keys);
        e.cache.set("page", "v1 page", Ttl::Seconds(300)).unwrap();
        let v2 = e.cache.with_version(2).unwrap();
        assert_eq!(v2.get::<String>("page").unwrap(), None, "{keys}");
        v2.set("page", "v2 page", Ttl::Seconds(300)).unwrap();
        assert_eq!(
            e.cache.get::<String>("page").unwrap().as_deref(),
            Some("v1 page")
        );
        // incr_version moves the value from version 1 to 3, flags and all.
        let flags = e.meta("page").unwrap().0;
        assert_eq!(e.cache.incr_version("page", 2).unwrap(), 3);
        assert_eq!(e.cache.get::<String>("page").unwrap(), None);
        let v3 = e.cache.with_version(3).unwrap();
        assert_eq!(v3.get::<String>("page").unwrap().as_deref(), Some("v1 page"));
        assert_eq!(
            kind(
                e.server
                    .raw(
                        &format!(
                            "mg {} f\r\n",
                            String::from_utf8(v3.wire_key("page").unwrap()).unwrap()
                        ),
                        b"\r\n"
                    )
                    .strip_prefix(b"HD f")
                    .and_then(|f| std::str::from_utf8(f).ok())
                    .and_then(|f| f.trim().parse().ok())
                    .unwrap()
            ),
            kind(flags)
        );
        assert_eq!(v3.decr_version("page", 2).unwrap(), 1);
        assert_eq!(
            e.cache.get::<String>("page").unwrap().as_deref(),
            Some("v1 page")
        );
        assert!(matches!(
            e.cache.incr_version("missing", 1),
            Err(Error::NotFound { .. })
        ));
    }
    // The version must be a number, and the key function the built-in one.
    let e = env("");
    let named = Cache::from_url(&format!(
        "newcache://{}/?version=v2&{TRANSPORT}",
        e.server.addr()
    ))
    .unwrap();
    named.set("page", "x", Ttl::Seconds(300)).unwrap();
    assert!(matches!(named.incr_version("page", 1), Err(Error::Config(_))));
    let custom = Cache::builder()
        .servers([e.server.addr()])
        .key_function(|k: &str| format!("mine:{k}"))
        .build()
        .unwrap();
    assert!(matches!(custom.with_version(2), Err(Error::Config(_))));
}

#[test]
fn close_drops_the_connections_and_the_next_call_reconnects() {
    let e = env("");
    e.cache.set("k", "v", Ttl::Seconds(300)).unwrap();
    let before = e.server.stat("total_connections");
    e.cache.close();
    assert_eq!(e.cache.get::<String>("k").unwrap().as_deref(), Some("v"));
    assert!(
        e.server.stat("total_connections") > before,
        "a new connection after close"
    );
}
