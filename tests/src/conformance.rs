//! The transport conformance suite: what every [`Transport`] must do, written once against
//! `&dyn Transport` and run unchanged against every backend.
//!
//! Each case is a plain function taking a [`Fixture`] (a fresh backend: a new store or new
//! servers) and reads as one sentence of the specification. [`conformance_suite!`] turns the
//! whole list into one `#[test]` per case for a given fixture:
//!
//! ```ignore
//! // tests/tests/conformance_memory.rs
//! use newcache_tests::MemoryFixture;
//! newcache_tests::conformance_suite!(|| MemoryFixture::new());
//! ```
//!
//! The expectations are memcached 1.6's, as its `protocol.txt` defines them and as the real
//! server answers; the in-memory transport mirrors them.
//!
//! [`conformance_suite!`]: crate::conformance_suite

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use newcache_transport::{
    Error, Item, Result, Store, StoreMode, StoreStatus, Transport, DEFAULT_ITEM_SIZE_LIMIT,
    MAX_RELATIVE_EXPTIME,
};

/// A fresh backend for one test case: a transport over an empty store (a new server, or a
/// flushed one), plus a view of the server side.
pub trait Fixture {
    /// The transport under test.
    fn transport(&self) -> &dyn Transport;

    /// A server statistic (e.g. `"cmd_set"`), summed over servers, when the backend has real
    /// servers (or keeps memcached's statistics itself); `None` skips the checks that
    /// nothing reached a server. Implementations should read it past the transport under
    /// test, and panic when the server lacks the statistic.
    fn server_stat(&self, name: &str) -> Option<u64>;

    /// The value size, in bytes, above which the transport refuses to store.
    fn item_size_limit(&self) -> usize {
        DEFAULT_ITEM_SIZE_LIMIT
    }
}

/// Builds a fixture with `make` and runs `case` on it; what [`conformance_suite!`] expands to.
///
/// [`conformance_suite!`]: crate::conformance_suite
pub fn run_case<F: Fixture>(make: impl FnOnce() -> F, case: fn(&dyn Fixture)) {
    let fixture = make();
    case(&fixture);
}

/// Expands to one `#[test]` per conformance case, each running the case on a fresh fixture
/// built by the given expression (a closure or function returning a [`Fixture`]).
///
/// ```ignore
/// newcache_tests::conformance_suite!(|| MemoryFixture::new());
/// mod cluster {
///     newcache_tests::conformance_suite!(|| super::text_fixture(3));
/// }
/// ```
///
/// [`Fixture`]: crate::conformance::Fixture
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@keyed ($make));
        $crate::conformance_suite!(@cases ($make)
            // server-wide:start
            flush_all_empties_every_server,
            stats_report_the_items_of_every_server,
            // server-wide:end
        );
    };
    // The cases that touch keys only, for backends that lack server-wide commands (a
    // proxy such as twemproxy has no flush_all or stats).
    (@keyed ($make:expr)) => {
        $crate::conformance_suite!(@cases ($make)
            // cases:start
            set_then_get_returns_the_exact_bytes,
            the_empty_value_is_stored_and_is_not_a_miss,
            flags_round_trip_exactly,
            a_missing_key_is_a_miss,
            set_overwrites_the_value_and_the_flags,
            a_500_kb_value_round_trips,
            keys_of_250_bytes_and_utf8_keys_are_valid,
            add_stores_an_item_under_a_free_key,
            add_does_not_overwrite_an_existing_item,
            replace_overwrites_an_existing_item,
            replace_does_not_create_a_missing_item,
            append_adds_bytes_after_the_value_and_keeps_the_flags,
            prepend_adds_bytes_before_the_value_and_keeps_the_flags,
            append_and_prepend_do_not_create_a_missing_item,
            get_and_get_many_return_the_cas_unique_of_every_item,
            cas_with_the_fetched_unique_stores,
            cas_with_a_stale_unique_is_refused_with_exists,
            cas_on_a_missing_key_is_not_found,
            cas_uniques_change_on_every_modification,
            touch_keeps_the_value_flags_and_cas_unique,
            get_many_answers_in_the_order_of_the_keys,
            get_many_of_no_keys_answers_nothing,
            store_many_answers_one_status_per_request_in_order,
            delete_removes_an_item_and_reports_whether_there_was_one,
            delete_many_reports_one_result_per_key_in_order,
            incr_and_decr_of_a_missing_key_are_none_and_create_nothing,
            incr_adds_to_a_decimal_value_and_keeps_the_flags,
            incr_wraps_around_at_2_pow_64,
            decr_subtracts_and_stops_at_zero,
            incr_and_decr_of_a_non_numeric_value_are_client_errors,
            touch_reports_whether_the_key_holds_an_item,
            touch_with_an_absolute_exptime_in_the_past_removes_the_item,
            an_absolute_exptime_in_the_future_keeps_the_item,
            an_absolute_exptime_in_the_past_expires_the_item_at_once,
            exptime_of_30_days_is_relative_and_one_second_more_is_absolute,
            an_exptime_past_2038_is_kept_or_refused_never_stored_and_gone,
            a_relative_exptime_expires_after_that_many_seconds,
            a_set_over_the_item_size_limit_is_refused_and_leaves_no_stale_value,
            conditional_stores_over_the_item_size_limit_leave_the_old_value,
            store_many_refuses_each_value_over_the_limit_by_itself,
            a_value_at_the_limit_is_stored_or_refused_without_a_stale_value,
            invalid_keys_are_refused_before_anything_is_sent,
            eight_threads_share_one_transport,
            sixteen_threads_get_only_their_own_answers,
            // cases:end
        );
    };
    (@cases ($make:expr) $($case:ident,)*) => {
        $(
            #[test]
            // `|| Fixture::new()` reads better here than `Fixture::new`.
            #[allow(clippy::redundant_closure)]
            fn $case() {
                $crate::conformance::run_case($make, $crate::conformance::$case);
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Unwraps a transport result, naming the operation when it failed.
fn ok<T>(what: &str, result: Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{what} failed: {e} ({e:?})"))
}

/// Runs a `set` and asserts it was stored.
fn set(t: &dyn Transport, key: &[u8], value: &[u8], flags: u32, exptime: u32) {
    let status = ok("set", t.store(&Store::set(key, value, flags, exptime)));
    assert_eq!(status, StoreStatus::Stored, "set {}", show(key));
}

/// Runs one store request of `mode`.
fn store(t: &dyn Transport, mode: StoreMode, key: &[u8], value: &[u8], flags: u32) -> StoreStatus {
    ok(
        mode.command(),
        t.store(&Store::set(key, value, flags, 0).with_mode(mode)),
    )
}

/// The item under `key`, or `None` on a miss.
fn get(t: &dyn Transport, key: &[u8]) -> Option<Item> {
    ok("get", t.get(key))
}

/// The item under `key`, which must be there.
fn hit(t: &dyn Transport, key: &[u8]) -> Item {
    get(t, key).unwrap_or_else(|| panic!("get {}: expected a hit, got a miss", show(key)))
}

/// The value under `key`, which must be there.
fn value(t: &dyn Transport, key: &[u8]) -> Vec<u8> {
    hit(t, key).value
}

/// The CAS unique of the item under `key`, which must be there and carry one.
fn cas_of(t: &dyn Transport, key: &[u8]) -> u64 {
    hit(t, key)
        .cas
        .unwrap_or_else(|| panic!("get {}: the item carries no CAS unique", show(key)))
}

/// A counter's value as text, without the trailing spaces memcached may leave in place
/// when `incr`/`decr` shortens a number.
fn counter_text(t: &dyn Transport, key: &[u8]) -> String {
    String::from_utf8_lossy(&value(t, key))
        .trim_end_matches(' ')
        .to_string()
}

fn show(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}

/// The current Unix time in seconds, as an exptime.
fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_else(|e| panic!("the clock is before 1970: {e}"));
    u32::try_from(secs).unwrap_or_else(|_| panic!("Unix time {secs} does not fit an exptime"))
}

/// Snapshots server statistics, when the fixture has them.
fn server_stats(f: &dyn Fixture, names: &[&str]) -> Option<Vec<(String, u64)>> {
    names
        .iter()
        .map(|&n| f.server_stat(n).map(|v| (n.to_string(), v)))
        .collect()
}

/// `count` distinct keys with `prefix`, enough of them to land on every server of a cluster.
fn keys(prefix: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("{prefix}:{i}").into_bytes())
        .collect()
}

fn refs(keys: &[Vec<u8>]) -> Vec<&[u8]> {
    keys.iter().map(Vec::as_slice).collect()
}

/// Deterministic, incompressible-looking bytes covering every byte value.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Round trips

/// A stored value comes back byte for byte, whatever bytes it holds: protocol line ends,
/// protocol words, NUL, 0xff and every other byte value.
pub fn set_then_get_returns_the_exact_bytes(f: &dyn Fixture) {
    let t = f.transport();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let values: [&[u8]; 8] = [
        b"hello",
        b"line\r\nbreak\r\n",
        b"\r\nEND\r\n",
        b"VALUE other 0 1\r\nx\r\nEND\r\n",
        b"\0nul\0",
        &[0xff, 0x00, 0xfe, 0x80],
        &all_bytes,
        b"ends with a lone \r",
    ];
    for (i, v) in values.iter().enumerate() {
        set(t, format!("bytes:{i}").as_bytes(), v, 0, 0);
    }
    for (i, v) in values.iter().enumerate() {
        let got = value(t, format!("bytes:{i}").as_bytes());
        assert_eq!(got, *v, "value {i} came back altered");
    }
}

/// A zero-length value is an item like any other: a hit with an empty value, not a miss.
pub fn the_empty_value_is_stored_and_is_not_a_miss(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"empty", b"", 7, 0);
    let item = hit(t, b"empty");
    assert_eq!(item.value, b"");
    assert_eq!(item.flags, 7);
}

/// The 32-bit client flags come back exactly, including 0 and `u32::MAX`.
pub fn flags_round_trip_exactly(f: &dyn Fixture) {
    let t = f.transport();
    let flags = [0, 1, 16, 0x100, 0xffff, 0x1_0000, 0x8000_0000, u32::MAX];
    for (i, &fl) in flags.iter().enumerate() {
        set(t, format!("flags:{i}").as_bytes(), b"v", fl, 0);
    }
    for (i, &fl) in flags.iter().enumerate() {
        assert_eq!(
            hit(t, format!("flags:{i}").as_bytes()).flags,
            fl,
            "flags {fl:#x}"
        );
    }
}

/// A key that was never stored is a miss (`None`), not an error.
pub fn a_missing_key_is_a_miss(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(get(t, b"never-stored"), None);
    set(t, b"stored", b"v", 0, 0);
    assert_eq!(get(t, b"never-stored"), None);
    assert_eq!(get(t, b"stored-not"), None);
}

/// `set` replaces both the value and the flags of an existing item.
pub fn set_overwrites_the_value_and_the_flags(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"first", 1, 0);
    set(t, b"k", b"second, longer", 2, 0);
    let item = hit(t, b"k");
    assert_eq!(
        (item.value.as_slice(), item.flags),
        (&b"second, longer"[..], 2)
    );
    set(t, b"k", b"3", 3, 0);
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"3"[..], 3));
}

/// A value of 500 KB (more than any socket buffer) round-trips intact.
pub fn a_500_kb_value_round_trips(f: &dyn Fixture) {
    let t = f.transport();
    let big = noise(500 * 1024);
    set(t, b"big", &big, 5, 0);
    set(t, b"after-big", b"small", 0, 0);
    let got = value(t, b"big");
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the 500 KB value came back altered");
    // The connection is still in step after the large transfer.
    assert_eq!(value(t, b"after-big"), b"small");
    let many = ok("get_many", t.get_many(&[b"big", b"after-big"]));
    assert!(many[0].as_ref().is_some_and(|i| i.value == big));
}

/// Keys of exactly 250 bytes, and keys of UTF-8 (bytes 0x80 and above), are valid.
pub fn keys_of_250_bytes_and_utf8_keys_are_valid(f: &dyn Fixture) {
    let t = f.transport();
    let long = vec![b'k'; 250];
    let utf8 = "ключ-ünïcode-键".as_bytes();
    set(t, &long, b"long", 0, 0);
    set(t, utf8, b"utf8", 0, 0);
    assert_eq!(value(t, &long), b"long");
    assert_eq!(value(t, utf8), b"utf8");
    assert!(ok("delete", t.delete(&long)));
}

// ---------------------------------------------------------------------------------------
// Conditional stores

/// `add` stores an item under a key that holds none.
pub fn add_stores_an_item_under_a_free_key(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Add, b"k", b"added", 3),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"added"[..], 3));
}

/// `add` on a key that holds an item answers `NotStored` and leaves the item alone.
pub fn add_does_not_overwrite_an_existing_item(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"original", 1, 0);
    assert_eq!(
        store(t, StoreMode::Add, b"k", b"usurper", 2),
        StoreStatus::NotStored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"original"[..], 1));
}

/// `replace` overwrites the value and flags of an existing item.
pub fn replace_overwrites_an_existing_item(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"old", 1, 0);
    assert_eq!(
        store(t, StoreMode::Replace, b"k", b"new", 2),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"new"[..], 2));
}

/// `replace` on a key that holds no item answers `NotStored` and creates nothing.
pub fn replace_does_not_create_a_missing_item(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Replace, b"k", b"new", 0),
        StoreStatus::NotStored
    );
    assert_eq!(get(t, b"k"), None);
}

/// `append` adds its bytes after the value; the item keeps its own flags.
pub fn append_adds_bytes_after_the_value_and_keeps_the_flags(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"head", 5, 0);
    assert_eq!(
        store(t, StoreMode::Append, b"k", b"+tail\r\n", 99),
        StoreStatus::Stored
    );
    assert_eq!(
        store(t, StoreMode::Append, b"k", b"", 99),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!(
        (item.value.as_slice(), item.flags),
        (&b"head+tail\r\n"[..], 5)
    );
}

/// `prepend` adds its bytes before the value; the item keeps its own flags.
pub fn prepend_adds_bytes_before_the_value_and_keeps_the_flags(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"tail", 5, 0);
    assert_eq!(
        store(t, StoreMode::Prepend, b"k", b"\0head+", 99),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!(
        (item.value.as_slice(), item.flags),
        (&b"\0head+tail"[..], 5)
    );
}

/// `append` and `prepend` on a key that holds no item answer `NotStored` and create nothing.
pub fn append_and_prepend_do_not_create_a_missing_item(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Append, b"a", b"x", 0),
        StoreStatus::NotStored
    );
    assert_eq!(
        store(t, StoreMode::Prepend, b"p", b"x", 0),
        StoreStatus::NotStored
    );
    assert_eq!(ok("get_many", t.get_many(&[b"a", b"p"])), vec![None, None]);
}

// ---------------------------------------------------------------------------------------
// CAS

/// `get` and `get_many` return each item's CAS unique, and agree on it. (Uniques are
/// per server: items on different servers may share one.)
pub fn get_and_get_many_return_the_cas_unique_of_every_item(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("cas", 10);
    for k in &keys {
        set(t, k, b"v", 0, 0);
    }
    let singles: Vec<Option<u64>> = keys.iter().map(|k| Some(cas_of(t, k))).collect();
    let many = ok("get_many", t.get_many(&refs(&keys)));
    let batch: Vec<Option<u64>> = many
        .iter()
        .map(|i| i.as_ref().and_then(|i| i.cas))
        .collect();
    assert_eq!(batch, singles, "get_many and get disagree on CAS uniques");
    // A modification between the two reads shows in both.
    set(t, &keys[0], b"w", 0, 0);
    let changed = cas_of(t, &keys[0]);
    assert_ne!(Some(changed), singles[0]);
    let again = ok("get_many", t.get_many(&[&keys[0]]));
    assert_eq!(again[0].as_ref().and_then(|i| i.cas), Some(changed));
}

/// `cas` with the unique of a fetched item stores the new value and flags.
pub fn cas_with_the_fetched_unique_stores(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v1", 1, 0);
    let cas = cas_of(t, b"k");
    assert_eq!(
        store(t, StoreMode::Cas(cas), b"k", b"v2", 2),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"v2"[..], 2));
    assert_ne!(
        item.cas,
        Some(cas),
        "a successful cas must change the unique"
    );
}

/// `cas` with a unique the item no longer has answers `Exists` and changes nothing.
pub fn cas_with_a_stale_unique_is_refused_with_exists(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v1", 0, 0);
    let stale = cas_of(t, b"k");
    set(t, b"k", b"v2", 0, 0);
    assert_eq!(
        store(t, StoreMode::Cas(stale), b"k", b"v3", 0),
        StoreStatus::Exists
    );
    assert_eq!(value(t, b"k"), b"v2");
    // A unique that was used once is stale after its own successful cas, too.
    let fresh = cas_of(t, b"k");
    assert_eq!(
        store(t, StoreMode::Cas(fresh), b"k", b"v4", 0),
        StoreStatus::Stored
    );
    assert_eq!(
        store(t, StoreMode::Cas(fresh), b"k", b"v5", 0),
        StoreStatus::Exists
    );
    assert_eq!(value(t, b"k"), b"v4");
}

/// `cas` on a key that holds no item (never stored, or deleted) answers `NotFound`.
pub fn cas_on_a_missing_key_is_not_found(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Cas(1), b"never", b"v", 0),
        StoreStatus::NotFound
    );
    set(t, b"gone", b"v", 0, 0);
    let cas = cas_of(t, b"gone");
    assert!(ok("delete", t.delete(b"gone")));
    assert_eq!(
        store(t, StoreMode::Cas(cas), b"gone", b"v", 0),
        StoreStatus::NotFound
    );
    assert_eq!(get(t, b"never"), None);
    assert_eq!(get(t, b"gone"), None);
}

/// Every modification (set, replace, append, prepend, incr, decr, cas) gives the item a new
/// CAS unique, even when the value ends up the same.
pub fn cas_uniques_change_on_every_modification(f: &dyn Fixture) {
    let t = f.transport();
    let mut seen = Vec::new();
    set(t, b"k", b"1", 0, 0);
    seen.push(("set", cas_of(t, b"k")));
    set(t, b"k", b"1", 0, 0);
    seen.push(("set again", cas_of(t, b"k")));
    store(t, StoreMode::Replace, b"k", b"1", 0);
    seen.push(("replace", cas_of(t, b"k")));
    store(t, StoreMode::Append, b"k", b"2", 0);
    seen.push(("append", cas_of(t, b"k")));
    store(t, StoreMode::Prepend, b"k", b"3", 0);
    seen.push(("prepend", cas_of(t, b"k")));
    assert_eq!(ok("incr", t.incr(b"k", 1)), Some(313));
    seen.push(("incr", cas_of(t, b"k")));
    assert_eq!(ok("decr", t.decr(b"k", 1)), Some(312));
    seen.push(("decr", cas_of(t, b"k")));
    let last = cas_of(t, b"k");
    assert_eq!(
        store(t, StoreMode::Cas(last), b"k", b"312", 0),
        StoreStatus::Stored
    );
    seen.push(("cas", cas_of(t, b"k")));
    let distinct: BTreeSet<u64> = seen.iter().map(|&(_, c)| c).collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a modification kept the CAS unique: {seen:?}"
    );
}

/// `touch` changes only the exptime: value, flags and CAS unique stay (as in memcached 1.6),
/// so a `cas` with the unique read before the touch still succeeds.
pub fn touch_keeps_the_value_flags_and_cas_unique(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v", 9, 0);
    let before = hit(t, b"k");
    assert!(ok("touch", t.touch(b"k", 3600)));
    let after = hit(t, b"k");
    assert_eq!(after, before, "touch changed more than the exptime");
    let cas = before
        .cas
        .unwrap_or_else(|| panic!("the item carries no CAS unique"));
    assert_eq!(
        store(t, StoreMode::Cas(cas), b"k", b"w", 9),
        StoreStatus::Stored
    );
}

// ---------------------------------------------------------------------------------------
// Batches

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

// ---------------------------------------------------------------------------------------
// incr / decr

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

// ---------------------------------------------------------------------------------------
// touch and exptime

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

// ---------------------------------------------------------------------------------------
// Server-wide commands

/// `flush_all` empties every server; stores afterwards work as usual.
pub fn flush_all_empties_every_server(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("flush", 30);
    for k in &keys {
        set(t, k, b"v", 0, 0);
    }
    ok("flush_all", t.flush_all());
    let left = ok("get_many", t.get_many(&refs(&keys)));
    assert!(left.iter().all(Option::is_none), "items survived flush_all");
    set(t, &keys[0], b"after", 0, 0);
    assert_eq!(value(t, &keys[0]), b"after");
}

/// `stats` answers one non-empty set of statistics per server, under distinct server names,
/// whose `curr_items` add up to the items stored.
pub fn stats_report_the_items_of_every_server(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("stats", 5);
    for k in &keys {
        set(t, k, b"v", 0, 0);
    }
    let stats = ok("stats", t.stats());
    assert!(!stats.is_empty(), "stats answered no server");
    let names: BTreeSet<&str> = stats.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(names.len(), stats.len(), "server names repeat: {names:?}");
    let mut curr_items = 0;
    for s in &stats {
        assert!(!s.server.is_empty());
        assert!(!s.stats.is_empty(), "no statistics from {}", s.server);
        let n = s.stats.get("curr_items").map(|v| v.parse::<u64>());
        match n {
            Some(Ok(n)) => curr_items += n,
            other => panic!("{}: curr_items is {other:?}", s.server),
        }
    }
    assert_eq!(curr_items, keys.len() as u64);
}

// ---------------------------------------------------------------------------------------
// Limits and invalid input

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
            && message.contains(&format!("limit of {limit} bytes")),
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
    let limit = f.item_size_limit();
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
    expect_too_large(
        "set of a free key",
        t.store(&Store::set(b"free", &too_big, 0, 0)),
        limit + 1,
        limit,
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
    let limit = f.item_size_limit();
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
    expect_too_large("add of a free key", t.store(&add), limit + 1, limit);
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
    let limit = f.item_size_limit();
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

/// A value right at the item size limit is stored, or, when the server's own limit counts
/// the key and the item's header too (memcached's does), refused by the server: then it is
/// [`Error::ValueTooLarge`] naming its size and a limit below it (see
/// [`Error::refused_by_server`]), and, as memcached unlinks the old item of a refused `set`,
/// the key holds nothing. The same through `store_many`, whose other requests are stored.
pub fn a_value_at_the_limit_is_stored_or_refused_without_a_stale_value(f: &dyn Fixture) {
    let t = f.transport();
    let limit = f.item_size_limit();
    let at_limit = noise(limit);
    // What a transport can say of the server's limit: below the size (the configured limit
    // let the value through).
    let server_limit = match Error::refused_by_server(limit, limit) {
        Error::ValueTooLarge { limit, .. } => limit,
        other => panic!("refused_by_server gave {other:?}"),
    };
    set(t, b"k", b"small", 0, 0);
    match t.store(&Store::set(b"k", &at_limit, 0, 0)) {
        Ok(status) => {
            assert_eq!(status, StoreStatus::Stored);
            assert!(value(t, b"k") == at_limit, "the value came back altered");
        }
        refused => {
            expect_too_large("set at the limit", refused, limit, server_limit);
            assert_eq!(get(t, b"k"), None, "the old value outlived a refused set");
        }
    }
    set(t, b"k", b"small", 0, 0);
    let good = keys("edge", 6);
    let mut batch: Vec<Store<'_>> = good.iter().map(|k| Store::set(k, k, 0, 0)).collect();
    batch.insert(2, Store::set(b"k", &at_limit, 0, 0));
    match t.store_many(&batch) {
        Ok(statuses) => {
            assert!(statuses.iter().all(|s| s.is_stored()), "{statuses:?}");
            assert!(value(t, b"k") == at_limit, "the value came back altered");
        }
        refused => {
            expect_too_large("store_many at the limit", refused, limit, server_limit);
            assert_eq!(get(t, b"k"), None, "the old value outlived a refused set");
        }
    }
    for k in &good {
        assert_eq!(&value(t, k), k);
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

// ---------------------------------------------------------------------------------------
// Concurrency

/// Eight threads sharing one transport, 200 operations each (set, get, get_many, incr),
/// see no error and each reads back exactly its own values.
pub fn eight_threads_share_one_transport(f: &dyn Fixture) {
    let t = f.transport();
    std::thread::scope(|s| {
        for thread in 0..8u32 {
            s.spawn(move || {
                let counter = format!("thread{thread}:counter").into_bytes();
                set(t, &counter, b"0", 0, 0);
                let mut previous = counter.clone();
                for i in 0..50u32 {
                    let key = format!("thread{thread}:key{i}").into_bytes();
                    let value = format!("thread {thread} value {i} ").repeat(1 + i as usize * 7);
                    let flags = thread * 1000 + i;
                    set(t, &key, value.as_bytes(), flags, 0);
                    let item = hit(t, &key);
                    assert_eq!(item.value, value.as_bytes(), "thread {thread} op {i}");
                    assert_eq!(item.flags, flags, "thread {thread} op {i}");
                    let n = ok("incr", t.incr(&counter, 1));
                    assert_eq!(n, Some(u64::from(i) + 1), "thread {thread} counter");
                    let both = ok("get_many", t.get_many(&[&key, &previous]));
                    assert_eq!(both.len(), 2);
                    assert_eq!(both[0].as_ref().map(|i| i.flags), Some(flags));
                    assert!(
                        both[1].is_some(),
                        "thread {thread} lost {}",
                        show(&previous)
                    );
                    previous = key;
                }
            });
        }
    });
    for thread in 0..8 {
        let counter = format!("thread{thread}:counter").into_bytes();
        assert_eq!(counter_text(t, &counter), "50");
    }
}

/// Sixteen threads, each on keys of its own, interleave add, touch, get, incr, get_many and
/// delete (40 rounds each): every status, counter and value is the one the thread's own
/// history implies, never the answer to another thread's request.
pub fn sixteen_threads_get_only_their_own_answers(f: &dyn Fixture) {
    let t = f.transport();
    std::thread::scope(|s| {
        for thread in 0..16u32 {
            s.spawn(move || {
                let key = format!("own{thread}:key").into_bytes();
                let counter = format!("own{thread}:n").into_bytes();
                let start = u64::from(thread) * 1_000_000;
                set(t, &counter, start.to_string().as_bytes(), 0, 0);
                for i in 0..40u32 {
                    let value = format!("thread {thread} round {i}").into_bytes();
                    let flags = thread * 1000 + i;
                    assert_eq!(
                        store(t, StoreMode::Add, &key, &value, flags),
                        StoreStatus::Stored,
                        "thread {thread} round {i}: add of a free key"
                    );
                    assert_eq!(
                        store(t, StoreMode::Add, &key, b"other", 0),
                        StoreStatus::NotStored,
                        "thread {thread} round {i}: add of a taken key"
                    );
                    assert!(ok("touch", t.touch(&key, 0)), "thread {thread} round {i}");
                    let item = hit(t, &key);
                    assert_eq!(
                        (item.value.as_slice(), item.flags),
                        (value.as_slice(), flags),
                        "thread {thread} round {i}"
                    );
                    assert_eq!(
                        ok("incr", t.incr(&counter, 1)),
                        Some(start + u64::from(i) + 1),
                        "thread {thread} round {i}: its own counter"
                    );
                    let both = ok("get_many", t.get_many(&[&key, &counter]));
                    assert_eq!(both.len(), 2);
                    assert_eq!(
                        both[0].as_ref().map(|i| i.value.as_slice()),
                        Some(value.as_slice()),
                        "thread {thread} round {i}"
                    );
                    assert!(both[1].is_some(), "thread {thread} round {i}");
                    assert!(ok("delete", t.delete(&key)), "thread {thread} round {i}");
                    assert!(!ok("delete", t.delete(&key)), "thread {thread} round {i}");
                    assert!(!ok("touch", t.touch(&key, 0)), "thread {thread} round {i}");
                    assert!(get(t, &key).is_none(), "thread {thread} round {i}");
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    /// Every `pub fn case(f: &dyn Fixture)` in this file is listed in `conformance_suite!`,
    /// and every listed name is such a function.
    #[test]
    fn the_macro_lists_every_case() {
        let source = include_str!("conformance.rs");
        let defined: Vec<&str> = source
            .lines()
            .filter_map(|l| {
                l.strip_prefix("pub fn ")?
                    .strip_suffix("(f: &dyn Fixture) {")
            })
            .collect();
        let list = |from: &str, to: &str| -> Vec<&str> {
            let start = source.find(from).expect("start marker");
            let end = source.find(to).expect("end marker");
            source[start..end]
                .lines()
                .skip(1)
                .map(|l| l.trim().trim_end_matches(','))
                .filter(|l| !l.is_empty())
                .collect()
        };
        let mut listed = list("// cases:start", "// cases:end");
        listed.extend(list("// server-wide:start", "// server-wide:end"));
        let mut defined = defined;
        assert!(defined.len() >= 40, "{defined:?}");
        defined.sort_unstable();
        listed.sort_unstable();
        assert_eq!(defined, listed);
    }
}
