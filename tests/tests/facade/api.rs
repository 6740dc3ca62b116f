// The rest of Django's API: CAS, append/prepend, get-and-touch, versions, close. Included by
// cases.rs.

/// The herd settings every extra is checked under (herd=meta needs the text transport's
/// meta commands: tests/tests/herd_meta.rs).
const HERD_SETTINGS: [&str; 4] = ["herd=lease", "herd=reinsert", "herd=early", "herd=off"];

/// `cas` with a zero TTL stores a value that expires at once, as `set` and `replace` with
/// one do: the key is emptied when it still holds what the token came with, and a value
/// written since is a conflict that stays. It answered a conflict without asking the
/// server, so a read-and-retry loop never ended (an outside audit).
#[test]
fn cas_with_a_zero_ttl_empties_the_key_it_still_holds() {
    for herd in HERD_SETTINGS {
        let e = env(herd);
        e.cache.set("t", "v", Ttl::Seconds(100)).unwrap();
        let (_, token) = e.cache.gets::<String>("t").unwrap().unwrap();
        e.cache.cas("t", "v2", token, Ttl::Seconds(0)).unwrap();
        assert_eq!(e.cache.get::<String>("t").unwrap(), None, "{herd}");
        e.cache.set("t", "v", Ttl::Seconds(100)).unwrap();
        let (_, token) = e.cache.gets::<String>("t").unwrap().unwrap();
        e.cache.set("t", "theirs", Ttl::Seconds(100)).unwrap();
        assert!(
            matches!(
                e.cache.cas("t", "v2", token, Ttl::Seconds(0)),
                Err(Error::CasConflict { .. })
            ),
            "{herd}"
        );
        assert_eq!(e.cache.get::<String>("t").unwrap().as_deref(), Some("theirs"));
    }
}

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
        // A delta of 0 leaves the value where it is (Django's deletes it: an outside
        // audit).
        assert_eq!(e.cache.incr_version("page", 0).unwrap(), 1);
        assert_eq!(e.cache.decr_version("page", 0).unwrap(), 1);
        assert_eq!(
            e.cache.get::<String>("page").unwrap().as_deref(),
            Some("v1 page"),
            "{keys}"
        );
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

/// `incr_version` gives the moved value the default TTL (as Django does), and its soft expiry
/// moves with it: past the default TTL the value is stale, one reader recomputes while the
/// others are served it, until the herd timeout ends its life. It kept its old soft expiry
/// (1,000 s ahead), so it read fresh to the end of its new TTL and then vanished with nobody
/// chosen to recompute (an outside audit). A bare value stays bare, living the default TTL.
#[test]
fn incr_version_moves_the_soft_expiry_with_the_ttl() {
    let e = env("timeout=30&herd_timeout=60");
    e.cache.set("page", "p", Ttl::Seconds(1000)).unwrap();
    e.cache
        .set("bare", "b", SetOptions::new(Ttl::Seconds(1000)).no_herd())
        .unwrap();
    e.cache.incr_version("page", 1).unwrap();
    e.cache.incr_version("bare", 1).unwrap();
    let v2 = e.cache.with_version(2).unwrap();
    let ttl = |key: &str| {
        let wire = String::from_utf8(v2.wire_key(key).unwrap()).unwrap();
        e.meta_wire(&wire).unwrap().1
    };
    assert!((88..=90).contains(&ttl("page")), "{}", ttl("page"));
    assert!((28..=30).contains(&ttl("bare")), "{}", ttl("bare"));
    assert_eq!(v2.get::<String>("page").unwrap().as_deref(), Some("p"));
    e.clock.advance_secs(31);
    // Stale: this reader wins the refresh, the next is served the old value.
    assert_eq!(v2.get::<String>("page").unwrap(), None);
    assert_eq!(v2.get::<String>("page").unwrap().as_deref(), Some("p"));
}

/// `decr_version` by `i64::MIN` is a subtraction like any other: from version -1 the value
/// goes to `i64::MAX`, and from version 0 it would overflow, which is refused with the value
/// left where it was. Its negation, clamped, moved the value to `i64::MAX - 1` and answered
/// `i64::MAX` from 0 (an outside audit).
#[test]
fn decr_version_by_the_most_negative_delta_moves_exactly_or_is_refused() {
    let e = env("");
    let below = e.cache.with_version(-1).unwrap();
    below.set("page", "p", Ttl::Seconds(300)).unwrap();
    assert_eq!(below.decr_version("page", i64::MIN).unwrap(), i64::MAX);
    let top = e.cache.with_version(i64::MAX).unwrap();
    assert_eq!(top.get::<String>("page").unwrap().as_deref(), Some("p"));
    let zero = e.cache.with_version(0).unwrap();
    zero.set("page", "z", Ttl::Seconds(300)).unwrap();
    assert!(matches!(
        zero.decr_version("page", i64::MIN),
        Err(Error::Config(_))
    ));
    assert_eq!(zero.get::<String>("page").unwrap().as_deref(), Some("z"));
}

/// `get_and_touch` with a TTL no store takes is refused before anything is sent, hit or
/// miss, as `touch` refuses it; it was checked only after a hit, so a miss answered `None`
/// (an outside audit).
#[test]
fn get_and_touch_refuses_a_ttl_no_store_takes_before_it_reads() {
    let e = env("");
    e.cache.set("session", "s1", Ttl::Seconds(30)).unwrap();
    let gets = e.server.stat("cmd_get");
    for key in ["session", "missing"] {
        assert!(
            matches!(
                e.cache
                    .get_and_touch::<String>(key, Ttl::Seconds(u64::MAX)),
                Err(Error::TtlTooLong(_))
            ),
            "{key}"
        );
    }
    assert_eq!(e.server.stat("cmd_get"), gets, "nothing was read");
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
