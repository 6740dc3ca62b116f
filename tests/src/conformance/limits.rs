//! Limits and invalid input: values over the item size limit and keys that would break the
//! protocol are refused before anything is sent, and leave no stale value.

use newcache_transport::{Error, Result, Store, StoreMode, StoreStatus};

use super::{cas_of, get, hit, keys, noise, ok, refs, server_stats, set, show, value, Fixture};

/// The largest value memcached at the fixture's item size limit stores under `key` with
/// `flags` ([`Store::value_limit`]).
fn room(f: &dyn Fixture, key: &[u8], flags: u32) -> usize {
    Store::set(key, b"", flags, 0).value_limit(f.item_size_limit())
}

/// Asserts `result` is [`Error::ValueTooLarge`] naming exactly `size` and `limit`, in its
/// fields and in its message.
fn expect_too_large<T: std::fmt::Debug>(what: &str, result: Result<T>, size: usize, limit: usize) {
    let e = match result {
        Err(e) => e,
        Ok(v) => panic!("{what}: expected Error::ValueTooLarge, got Ok({v:?})"),
    };
    let &Error::ValueTooLarge { size: s, limit: l } = &e else {
        panic!("{what}: expected Error::ValueTooLarge, got {e:?}")
    };
    assert_eq!((s, l), (size, limit), "{what}: (size, limit) of {e}");
    let message = e.to_string();
    assert!(
        message.contains(&format!("{size} bytes"))
            && message.contains(&format!("at most {limit} bytes")),
        "{what}: the message does not name the size and the limit: {message}"
    );
}

/// A `set` of a value over the item size limit fails with [`Error::ValueTooLarge`] naming
/// the value's size and the limit, the value is never sent (the server's `cmd_set` does not
/// move), and the key's old value is gone: memcached unlinks the old item when it refuses a
/// `set` as too large, so readers do not go on getting the value the caller just tried to
/// replace.
pub fn a_set_over_the_item_size_limit_is_refused_and_leaves_no_stale_value(f: &dyn Fixture) {
    let t = f.transport();
    let limit = room(f, b"k", 0);
    set(t, b"k", b"small", 0, 0);
    set(t, b"other", b"stays", 0, 0);
    let before = server_stats(f, &["cmd_set"]);
    let too_big = vec![b'x'; limit + 1];
    expect_too_large(
        "set",
        t.store(&Store::set(b"k", &too_big, 0, 0)),
        limit + 1,
        limit,
    );
    assert_eq!(get(t, b"k"), None, "the old value outlived a refused set");
    // A refused set of a key that holds nothing is refused the same way.
    // Its limit is 3 bytes lower: the key is 3 bytes longer.
    expect_too_large(
        "set of a free key",
        t.store(&Store::set(b"free", &too_big, 0, 0)),
        limit + 1,
        limit - 3,
    );
    assert_eq!(get(t, b"free"), None);
    assert_eq!(
        server_stats(f, &["cmd_set"]),
        before,
        "a value over the limit reached the server"
    );
    assert_eq!(value(t, b"other"), b"stays");
    // The key is usable again at once.
    set(t, b"k", b"again", 0, 0);
    assert_eq!(value(t, b"k"), b"again");
}

/// `add`, `replace`, `cas`, `append` and `prepend` of a value over the item size limit fail
/// with [`Error::ValueTooLarge`] and send nothing: the key keeps its value and its CAS
/// unique (memcached unlinks the old item only for a refused `set`).
pub fn conditional_stores_over_the_item_size_limit_leave_the_old_value(f: &dyn Fixture) {
    let t = f.transport();
    let limit = room(f, b"k", 0);
    set(t, b"k", b"small", 3, 0);
    let unique = cas_of(t, b"k");
    let before = server_stats(f, &["cmd_set"]);
    let too_big = vec![b'x'; limit + 1];
    for mode in [
        StoreMode::Add,
        StoreMode::Replace,
        StoreMode::Cas(unique),
        StoreMode::Append,
        StoreMode::Prepend,
    ] {
        let request = Store::set(b"k", &too_big, 0, 0).with_mode(mode);
        expect_too_large(mode.command(), t.store(&request), limit + 1, limit);
        let item = hit(t, b"k");
        assert_eq!(
            (item.value.as_slice(), item.flags, item.cas),
            (&b"small"[..], 3, Some(unique)),
            "{} over the limit changed the item",
            mode.command()
        );
    }
    // add of a free key over the limit creates nothing.
    let add = Store::set(b"free", &too_big, 0, 0).with_mode(StoreMode::Add);
    expect_too_large("add of a free key", t.store(&add), limit + 1, limit - 3);
    assert_eq!(get(t, b"free"), None);
    assert_eq!(
        server_stats(f, &["cmd_set"]),
        before,
        "a value over the limit reached the server"
    );
}

/// In `store_many`, a request over the item size limit is refused by itself: the other
/// requests are stored (on every server), the refused `set`'s key is gone, a refused `add`
/// leaves its key alone, none of the refused values is sent, and the call fails with
/// [`Error::ValueTooLarge`] naming the first refused request's size and the limit.
pub fn store_many_refuses_each_value_over_the_limit_by_itself(f: &dyn Fixture) {
    let t = f.transport();
    let limit = room(f, b"k", 0);
    set(t, b"k", b"small", 0, 0);
    set(t, b"kept", b"old", 0, 0);
    let good = keys("good", 12);
    let before = server_stats(f, &["cmd_set"]);
    let too_big = vec![b'x'; limit + 1];
    let bigger = vec![b'y'; limit + 2];
    let mut batch: Vec<Store<'_>> = Vec::new();
    for (i, k) in good.iter().enumerate() {
        batch.push(Store::set(k, k, 0, 0));
        match i {
            3 => batch.push(Store::set(b"k", &too_big, 0, 0)),
            7 => batch.push(Store::set(b"kept", &bigger, 0, 0).with_mode(StoreMode::Add)),
            9 => batch.push(Store::set(b"gone-too", &bigger, 0, 0)),
            _ => {}
        }
    }
    expect_too_large("store_many", t.store_many(&batch), limit + 1, limit);
    let stored = ok("get_many", t.get_many(&refs(&good)));
    for (k, item) in good.iter().zip(&stored) {
        let item = item
            .as_ref()
            .unwrap_or_else(|| panic!("{} of the batch was not stored", show(k)));
        assert_eq!(&item.value, k);
    }
    assert_eq!(get(t, b"k"), None, "the old value outlived a refused set");
    assert_eq!(get(t, b"gone-too"), None);
    assert_eq!(value(t, b"kept"), b"old", "a refused add changed the item");
    if let (Some(before), Some(after)) = (before, server_stats(f, &["cmd_set"])) {
        let (b, a) = (before[0].1, after[0].1);
        assert_eq!(
            a - b,
            good.len() as u64,
            "the batch's good sets, and nothing over the limit, reached the server"
        );
    }
    // `store_many_each` lists every refused request, each with its ValueTooLarge, beside
    // the others' statuses (the memory backend answered the first refusal alone, so the
    // cache's `PartlyStored` naming the keys was a bare ValueTooLarge there).
    set(t, b"k", b"small", 0, 0);
    let each = ok("store_many_each", t.store_many_each(&batch));
    let refused: Vec<usize> = each
        .failed
        .iter()
        .map(|(i, e)| {
            assert!(matches!(e, Error::ValueTooLarge { .. }), "{i}: {e:?}");
            *i
        })
        .collect();
    assert_eq!(refused, [4, 9, 12]);
    assert_eq!(get(t, b"k"), None, "the old value outlived a refused set");
    assert!(each.statuses.get(5).is_some_and(|s| s.is_stored()));
    // A batch of nothing but one refused set refuses just the same.
    set(t, b"k", b"small", 0, 0);
    expect_too_large(
        "store_many of one",
        t.store_many(&[Store::set(b"k", &too_big, 0, 0)]),
        limit + 1,
        limit,
    );
    assert_eq!(get(t, b"k"), None);
}

/// The limit is memcached's own, exact for each key and flags ([`Store::value_limit`]): a
/// value of exactly that many bytes is stored and read back whole, and one byte more is
/// refused before it is sent, naming that limit, with no stale value left. With a one-byte
/// key and a 250-byte one, flags 0 and nonzero, by `store` and by `store_many`.
pub fn a_value_right_at_the_limit_is_stored_and_one_byte_more_is_refused(f: &dyn Fixture) {
    let t = f.transport();
    let long_key = vec![b'L'; 250];
    for (key, flags) in [(&b"k"[..], 0), (&b"k"[..], 16), (&long_key[..], 1)] {
        let what = format!("a {}-byte key with flags {flags}", key.len());
        let limit = room(f, key, flags);
        let at_limit = noise(limit);
        let status = ok(
            "set at the limit",
            t.store(&Store::set(key, &at_limit, flags, 0)),
        );
        assert_eq!(status, StoreStatus::Stored, "{what}");
        let item = hit(t, key);
        assert!(
            item.value == at_limit && item.flags == flags,
            "{what}: the value at the limit came back altered"
        );
        let before = server_stats(f, &["cmd_set"]);
        let over = noise(limit + 1);
        expect_too_large(
            &what,
            t.store(&Store::set(key, &over, flags, 0)),
            limit + 1,
            limit,
        );
        assert_eq!(
            get(t, key),
            None,
            "{what}: the old value outlived a refused set"
        );
        assert_eq!(
            server_stats(f, &["cmd_set"]),
            before,
            "{what}: a value over the limit reached the server"
        );
        // The same through store_many, whose other requests are stored.
        let good = keys("edge", 4);
        let mut batch: Vec<Store<'_>> = good.iter().map(|k| Store::set(k, k, 0, 0)).collect();
        batch.insert(1, Store::set(key, &at_limit, flags, 0));
        let statuses = ok("store_many at the limit", t.store_many(&batch));
        assert!(
            statuses.iter().all(|s| s.is_stored()),
            "{what}: {statuses:?}"
        );
        assert!(
            hit(t, key).value == at_limit,
            "{what}: the value at the limit came back altered"
        );
        batch[1] = Store::set(key, &over, flags, 0);
        expect_too_large(&what, t.store_many(&batch), limit + 1, limit);
        assert_eq!(
            get(t, key),
            None,
            "{what}: the old value outlived a refused set"
        );
        for k in &good {
            assert_eq!(&value(t, k), k);
        }
    }
}

/// Keys that would break the protocol (a space, a line end, a control byte, 251 bytes, the
/// empty key) fail with [`Error::InvalidKey`] in every command, before anything is sent:
/// no server statistic moves, and a batch holding one such key sends none of its keys.
pub fn invalid_keys_are_refused_before_anything_is_sent(f: &dyn Fixture) {
    let t = f.transport();
    let good: &[u8] = b"good";
    set(t, good, b"v", 0, 0);
    let long = vec![b'k'; 251];
    let bad_keys: [&[u8]; 8] = [
        b"has space",
        b"new\nline",
        b"crlf\r\n",
        b"tab\tkey",
        b"nul\0",
        b"\x7f",
        &long,
        b"",
    ];
    let watched = [
        "cmd_get",
        "cmd_set",
        "cmd_touch",
        "get_hits",
        "get_misses",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
    ];
    let before = server_stats(f, &watched);
    for bad in bad_keys {
        let expect_invalid = |what: &str, err: Option<Error>| match err {
            Some(Error::InvalidKey { .. }) => {}
            other => panic!(
                "{what} with key {}: expected Error::InvalidKey, got {other:?}",
                show(bad)
            ),
        };
        expect_invalid("get", t.get(bad).err());
        expect_invalid("get_many", t.get_many(&[good, bad]).err());
        expect_invalid("set", t.store(&Store::set(bad, b"v", 0, 0)).err());
        let add = Store::set(bad, b"v", 0, 0).with_mode(StoreMode::Add);
        expect_invalid("add", t.store(&add).err());
        let batch = [
            Store::set(good, b"changed", 0, 0),
            Store::set(bad, b"v", 0, 0),
        ];
        expect_invalid("store_many", t.store_many(&batch).err());
        expect_invalid("delete", t.delete(bad).err());
        expect_invalid("delete_many", t.delete_many(&[good, bad]).err());
        expect_invalid("incr", t.incr(bad, 1).err());
        expect_invalid("decr", t.decr(bad, 1).err());
        expect_invalid("touch", t.touch(bad, 0).err());
    }
    assert_eq!(
        server_stats(f, &watched),
        before,
        "a command reached the server"
    );
    assert_eq!(value(t, good), b"v", "part of a refused batch was run");
}
