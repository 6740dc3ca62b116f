// django-newcache's own tests, ported: set, get, delete, add, incr/decr, the multi-key
// calls and the herd's soft expiry. Included by cases.rs.

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

/// A `get_many_ordered` that fails on one key hands nobody its misses, so it claims no
/// stale key: the next reader recomputes. It claimed them first, and the key stayed claimed
/// and unrefreshed, its old value served, until the herd timeout ran out (an outside audit).
#[test]
fn a_get_many_ordered_that_fails_leaves_each_stale_key_to_the_next_reader() {
    for herd in ["lease", "reinsert"] {
        let e = env(&format!("herd_timeout=60&herd={herd}"));
        e.cache.set("stale", &1u32, Ttl::Seconds(10)).unwrap();
        e.cache.set("text", "not a number", Ttl::Seconds(1000)).unwrap();
        e.clock.advance_secs(11);
        match e.cache.get_many_ordered::<_, u32>(&["stale", "text"]) {
            Err(Error::Decode { key, .. }) => assert_eq!(key, "text", "{herd}"),
            other => panic!("{herd}: a decode error for text, got {other:?}"),
        }
        assert_eq!(
            e.cache.get::<u32>("stale").unwrap(),
            None,
            "{herd}: the next reader recomputes"
        );
        assert_eq!(
            e.cache.get::<u32>("stale").unwrap(),
            Some(1),
            "{herd}: the others are served the old value"
        );
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
