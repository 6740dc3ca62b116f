//! `touch` and expiry times: relative, absolute, the 30-day boundary and 2038.

use std::time::Duration;

use newcache_transport::{Error, Store, StoreMode, StoreStatus, MAX_RELATIVE_EXPTIME};

use super::{get, ok, set, store, unix_now, value, Fixture};

/// `touch` answers `true` for a key that holds an item and `false` (creating nothing) for
/// one that does not.
pub fn touch_reports_whether_the_key_holds_an_item(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v", 0, 0);
    assert!(ok("touch", t.touch(b"k", 0)));
    assert!(ok("touch", t.touch(b"k", 3600)));
    assert!(!ok("touch", t.touch(b"missing", 3600)));
    assert_eq!(get(t, b"missing"), None);
    assert_eq!(value(t, b"k"), b"v");
}

/// `touch` replaces the exptime: an absolute exptime in the past expires the item at once.
pub fn touch_with_an_absolute_exptime_in_the_past_removes_the_item(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v", 0, 0);
    set(t, b"other", b"v", 0, 0);
    assert!(ok("touch", t.touch(b"k", unix_now() - 10)));
    assert_eq!(get(t, b"k"), None);
    assert!(!ok("touch", t.touch(b"k", 0)));
    assert_eq!(value(t, b"other"), b"v");
}

/// An exptime above 30 days is an absolute Unix time; one an hour ahead keeps the item.
pub fn an_absolute_exptime_in_the_future_keeps_the_item(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v", 0, unix_now() + 3600);
    assert_eq!(value(t, b"k"), b"v");
    assert!(ok("touch", t.touch(b"k", unix_now() + 7200)));
    assert_eq!(value(t, b"k"), b"v");
}

/// An absolute exptime in the past is accepted (`Stored`) and the item is expired at once.
pub fn an_absolute_exptime_in_the_past_expires_the_item_at_once(f: &dyn Fixture) {
    let t = f.transport();
    let past = unix_now() - 10;
    assert!(past > MAX_RELATIVE_EXPTIME);
    set(t, b"k", b"v", 0, past);
    assert_eq!(get(t, b"k"), None);
    // An expired item counts as missing for add.
    assert_eq!(store(t, StoreMode::Add, b"k", b"w", 0), StoreStatus::Stored);
    assert_eq!(value(t, b"k"), b"w");
}

/// Exptime 2592000 (30 days) is still relative; 2592001 is an absolute time in January 1970,
/// long past, so the item expires at once.
pub fn exptime_of_30_days_is_relative_and_one_second_more_is_absolute(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"relative", b"v", 0, MAX_RELATIVE_EXPTIME);
    set(t, b"absolute", b"v", 0, MAX_RELATIVE_EXPTIME + 1);
    assert_eq!(value(t, b"relative"), b"v");
    assert_eq!(get(t, b"absolute"), None);
}

/// An exptime past 2038-01-19 (above `i32::MAX`, which memcached's text protocols read as
/// negative) is either kept exactly (libmemcached's binary protocol reads it unsigned) or
/// refused with [`Error::ExptimeTooLate`] and nothing sent: never a store reported as done
/// with the item gone at once. Through store, store_many and touch.
pub fn an_exptime_past_2038_is_kept_or_refused_never_stored_and_gone(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"old", 0, 0);
    for exptime in [i32::MAX as u32 + 1, u32::MAX] {
        let outcomes = [
            (
                "store",
                t.store(&Store::set(b"k", b"new", 0, exptime)).map(|_| ()),
            ),
            (
                "store_many",
                t.store_many(&[Store::set(b"k", b"new", 0, exptime)])
                    .map(|_| ()),
            ),
            ("touch", t.touch(b"k", exptime).map(|_| ())),
        ];
        for (what, outcome) in outcomes {
            match outcome {
                Ok(()) => assert!(get(t, b"k").is_some(), "{what} {exptime}: stored and gone"),
                Err(Error::ExptimeTooLate { exptime: e }) => assert_eq!(e, exptime),
                Err(other) => panic!("{what} {exptime}: {other}"),
            }
        }
        assert!(get(t, b"k").is_some(), "{exptime}: the item is gone");
    }
}

/// An item stored with a relative exptime of 1 second is gone 2.5 seconds later, as is one
/// touched down to 1 second; items with a longer or no exptime stay.
pub fn a_relative_exptime_expires_after_that_many_seconds(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"short", b"v", 0, 1);
    set(t, b"touched-down", b"v", 0, 3600);
    assert!(ok("touch", t.touch(b"touched-down", 1)));
    set(t, b"long", b"v", 0, 3600);
    set(t, b"forever", b"v", 0, 0);
    // memcached's clock ticks once a second, so 1 s can mean up to 2 s; leave slack.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(get(t, b"short"), None, "exptime 1 did not expire");
    assert_eq!(get(t, b"touched-down"), None, "touch to 1 s did not expire");
    assert_eq!(value(t, b"long"), b"v");
    assert_eq!(value(t, b"forever"), b"v");
    assert_eq!(
        store(t, StoreMode::Replace, b"short", b"w", 0),
        StoreStatus::NotStored
    );
}
