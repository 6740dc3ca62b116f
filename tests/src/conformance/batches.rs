//! Batches: multi-gets, `store_many` and `delete_many`, one answer per key, in order.

use newcache_transport::{Item, Store, StoreMode, StoreStatus};

use super::{get, hit, keys, ok, refs, set, show, store, value, Fixture};

/// `get_many` answers one entry per key, in the order of the keys, with `None` for misses
/// and the same item again for a repeated key.
pub fn get_many_answers_in_the_order_of_the_keys(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("many", 20);
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 1) {
        set(t, k, format!("value {i}").as_bytes(), i as u32, 0);
    }
    // Reversed, with an unknown key in the middle and a repeated key at the end.
    let mut asked: Vec<&[u8]> = refs(&keys).into_iter().rev().collect();
    asked.insert(7, b"unknown-key");
    asked.push(&keys[0]);
    asked.push(&keys[1]);
    let got = ok("get_many", t.get_many(&asked));
    assert_eq!(got.len(), asked.len(), "one entry per key");
    for (k, item) in asked.iter().zip(&got) {
        let expected = keys.iter().position(|x| x == k).filter(|i| i % 3 != 1);
        match (expected, item) {
            (Some(i), Some(item)) => {
                assert_eq!(item.value, format!("value {i}").into_bytes(), "{}", show(k));
                assert_eq!(item.flags, i as u32, "{}", show(k));
            }
            (None, None) => {}
            (expected, item) => panic!(
                "get_many for {}: expected {}, got {item:?}",
                show(k),
                if expected.is_some() {
                    "a hit"
                } else {
                    "a miss"
                }
            ),
        }
    }
}

/// `get_many` of no keys answers an empty list.
pub fn get_many_of_no_keys_answers_nothing(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v", 0, 0);
    assert_eq!(ok("get_many", t.get_many(&[])), Vec::<Option<Item>>::new());
    assert_eq!(ok("store_many", t.store_many(&[])), Vec::new());
    assert_eq!(ok("delete_many", t.delete_many(&[])), Vec::<bool>::new());
    assert_eq!(value(t, b"k"), b"v");
}

/// `store_many` answers one status per request, in the order of the requests, and runs
/// requests on the same key in that order.
pub fn store_many_answers_one_status_per_request_in_order(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"old", b"o", 0, 0);
    let spread = keys("spread", 12);
    let mut requests = vec![
        Store::set(b"a", b"1", 1, 0),
        Store::set(b"a", b"2", 2, 0).with_mode(StoreMode::Add),
        Store::set(b"missing", b"x", 0, 0).with_mode(StoreMode::Replace),
        Store::set(b"b", b"3", 3, 0).with_mode(StoreMode::Add),
        Store::set(b"missing", b"x", 0, 0).with_mode(StoreMode::Cas(1)),
        Store::set(b"a", b"+", 0, 0).with_mode(StoreMode::Append),
        Store::set(b"old", b"n", 4, 0).with_mode(StoreMode::Replace),
        Store::set(b"missing", b"x", 0, 0).with_mode(StoreMode::Prepend),
    ];
    let mut expected = vec![
        StoreStatus::Stored,
        StoreStatus::NotStored,
        StoreStatus::NotStored,
        StoreStatus::Stored,
        StoreStatus::NotFound,
        StoreStatus::Stored,
        StoreStatus::Stored,
        StoreStatus::NotStored,
    ];
    for (i, k) in spread.iter().enumerate() {
        // Alternate a fresh add with an add of a key added just before it.
        let k = if i % 2 == 1 { &spread[i - 1] } else { k };
        requests.push(Store::set(k, b"s", 0, 0).with_mode(StoreMode::Add));
        expected.push(if i % 2 == 1 {
            StoreStatus::NotStored
        } else {
            StoreStatus::Stored
        });
    }
    assert_eq!(ok("store_many", t.store_many(&requests)), expected);
    let item = hit(t, b"a");
    assert_eq!((item.value.as_slice(), item.flags), (&b"1+"[..], 1));
    assert_eq!(value(t, b"b"), b"3");
    assert_eq!(hit(t, b"old").flags, 4);
    assert_eq!(get(t, b"missing"), None);
    let stored = ok("get_many", t.get_many(&refs(&spread)));
    for (i, item) in stored.iter().enumerate() {
        assert_eq!(item.is_some(), i % 2 == 0, "{}", show(&spread[i]));
    }
}

/// `delete` removes the item and answers `true`; on a key without an item it answers `false`.
pub fn delete_removes_an_item_and_reports_whether_there_was_one(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v", 0, 0);
    set(t, b"other", b"v", 0, 0);
    assert!(ok("delete", t.delete(b"k")));
    assert_eq!(get(t, b"k"), None);
    assert!(!ok("delete", t.delete(b"k")));
    assert!(!ok("delete", t.delete(b"never")));
    assert_eq!(value(t, b"other"), b"v");
    // The key is free again.
    assert_eq!(
        store(t, StoreMode::Add, b"k", b"again", 0),
        StoreStatus::Stored
    );
}

/// `delete_many` answers, per key and in order, whether there was an item, and removes them.
pub fn delete_many_reports_one_result_per_key_in_order(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("del", 12);
    for k in keys.iter().step_by(2) {
        set(t, k, b"v", 0, 0);
    }
    set(t, b"kept", b"v", 0, 0);
    let mut asked = refs(&keys);
    asked.reverse();
    let got = ok("delete_many", t.delete_many(&asked));
    let expected: Vec<bool> = (0..keys.len()).rev().map(|i| i % 2 == 0).collect();
    assert_eq!(got, expected);
    let left = ok("get_many", t.get_many(&refs(&keys)));
    assert!(left.iter().all(Option::is_none), "{left:?}");
    assert_eq!(value(t, b"kept"), b"v");
}
