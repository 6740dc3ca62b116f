//! `incr` and `decr`: decimal counters, wrapping and floors, and what is not a number.

use newcache_transport::Error;

use super::{counter_text, get, hit, ok, set, show, value, Fixture};

/// `incr` and `decr` of a key without an item answer `None` and do not create one.
pub fn incr_and_decr_of_a_missing_key_are_none_and_create_nothing(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(ok("incr", t.incr(b"n", 1)), None);
    assert_eq!(ok("decr", t.decr(b"n", 1)), None);
    assert_eq!(get(t, b"n"), None);
}

/// `incr` adds to a decimal value, answers the new value, stores it as decimal text, and
/// keeps the item's flags.
pub fn incr_adds_to_a_decimal_value_and_keeps_the_flags(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"n", b"41", 7, 0);
    assert_eq!(ok("incr", t.incr(b"n", 1)), Some(42));
    assert_eq!(ok("incr", t.incr(b"n", 0)), Some(42));
    assert_eq!(ok("incr", t.incr(b"n", 1000)), Some(1042));
    let item = hit(t, b"n");
    assert_eq!((item.value.as_slice(), item.flags), (&b"1042"[..], 7));
}

/// `incr` wraps around at 2^64, as memcached's 64-bit counters do.
pub fn incr_wraps_around_at_2_pow_64(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"n", u64::MAX.to_string().as_bytes(), 0, 0);
    assert_eq!(ok("incr", t.incr(b"n", 1)), Some(0));
    assert_eq!(counter_text(t, b"n"), "0");
    assert_eq!(ok("incr", t.incr(b"n", u64::MAX)), Some(u64::MAX));
    set(t, b"m", b"5", 0, 0);
    assert_eq!(ok("incr", t.incr(b"m", u64::MAX)), Some(4));
}

/// `decr` subtracts and stops at 0 instead of going below.
pub fn decr_subtracts_and_stops_at_zero(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"n", b"10", 3, 0);
    assert_eq!(ok("decr", t.decr(b"n", 3)), Some(7));
    assert_eq!(counter_text(t, b"n"), "7");
    // memcached writes a shorter result in place, padded with spaces to the value's
    // length; the memory backend stored "7" (an outside audit).
    assert_eq!(hit(t, b"n").value, b"7 ");
    assert_eq!(ok("decr", t.decr(b"n", 100)), Some(0));
    assert_eq!(ok("decr", t.decr(b"n", 1)), Some(0));
    assert_eq!(ok("decr", t.decr(b"n", u64::MAX)), Some(0));
    let item = hit(t, b"n");
    assert_eq!(counter_text(t, b"n"), "0");
    assert_eq!(item.flags, 3);
    assert_eq!(ok("incr", t.incr(b"n", 5)), Some(5));
}

/// `incr` and `decr` of a value that is not a decimal 64-bit number (letters, a trailing
/// letter, a number over 2^64 - 1, a negative number, the empty value) fail with
/// [`Error::Client`] ("cannot increment or decrement non-numeric value") and leave the item
/// alone; the transport stays usable.
pub fn incr_and_decr_of_a_non_numeric_value_are_client_errors(f: &dyn Fixture) {
    let t = f.transport();
    let values: [&[u8]; 5] = [b"abc", b"12ab", b"184467440737095516160", b"-1", b""];
    for (i, v) in values.iter().enumerate() {
        let key = format!("nan:{i}").into_bytes();
        set(t, &key, v, 0, 0);
        for (op, result) in [("incr", t.incr(&key, 1)), ("decr", t.decr(&key, 1))] {
            match result {
                Err(Error::Client { message, .. }) => assert!(
                    message.contains("non-numeric"),
                    "{op} of {:?}: unexpected message {message:?}",
                    show(v)
                ),
                other => panic!("{op} of {}: expected Error::Client, got {other:?}", show(v)),
            }
        }
        assert_eq!(value(t, &key), *v, "a failed incr/decr changed the value");
    }
    set(t, b"n", b"1", 0, 0);
    assert_eq!(ok("incr", t.incr(b"n", 1)), Some(2));
}
