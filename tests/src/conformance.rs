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

use std::time::{SystemTime, UNIX_EPOCH};

use newcache_transport::{
    Item, Result, Store, StoreMode, StoreStatus, Transport, DEFAULT_ITEM_SIZE_LIMIT,
};

mod batches;
mod cas;
mod concurrency;
mod counters;
mod expiry;
mod limits;
mod made;
mod server;
mod storage;

// The cases, where `conformance_suite!` names them (`$crate::conformance::case`).
pub use batches::{
    delete_many_reports_one_result_per_key_in_order,
    delete_removes_an_item_and_reports_whether_there_was_one,
    get_many_answers_in_the_order_of_the_keys, get_many_of_no_keys_answers_nothing,
    store_many_answers_one_status_per_request_in_order,
};
pub use cas::{
    cas_on_a_missing_key_is_not_found, cas_uniques_change_on_every_modification,
    cas_with_a_stale_unique_is_refused_with_exists, cas_with_the_fetched_unique_stores,
    get_and_get_many_return_the_cas_unique_of_every_item,
    touch_keeps_the_value_flags_and_cas_unique,
};
pub use concurrency::{
    eight_threads_share_one_transport, sixteen_threads_get_only_their_own_answers,
};
pub use counters::{
    decr_subtracts_and_stops_at_zero, incr_adds_to_a_decimal_value_and_keeps_the_flags,
    incr_and_decr_of_a_missing_key_are_none_and_create_nothing,
    incr_and_decr_of_a_non_numeric_value_are_client_errors, incr_wraps_around_at_2_pow_64,
};
pub use expiry::{
    a_relative_exptime_expires_after_that_many_seconds,
    an_absolute_exptime_in_the_future_keeps_the_item,
    an_absolute_exptime_in_the_past_expires_the_item_at_once,
    an_exptime_past_2038_is_kept_or_refused_never_stored_and_gone,
    exptime_of_30_days_is_relative_and_one_second_more_is_absolute,
    touch_reports_whether_the_key_holds_an_item,
    touch_with_an_absolute_exptime_in_the_past_removes_the_item,
};
pub use limits::{
    a_set_over_the_item_size_limit_is_refused_and_leaves_no_stale_value,
    a_value_right_at_the_limit_is_stored_and_one_byte_more_is_refused,
    conditional_stores_over_the_item_size_limit_leave_the_old_value,
    invalid_keys_are_refused_before_anything_is_sent,
    store_many_refuses_each_value_over_the_limit_by_itself,
};
pub use made::{
    get_many_made_hands_over_what_get_many_answers, get_many_made_says_when_its_request_is_out,
    get_many_made_stops_at_a_key_that_cannot_be_made,
};
pub use server::{flush_all_empties_every_server, stats_report_the_items_of_every_server};
pub use storage::{
    a_500_kb_value_round_trips, a_missing_key_is_a_miss, add_does_not_overwrite_an_existing_item,
    add_stores_an_item_under_a_free_key, append_adds_bytes_after_the_value_and_keeps_the_flags,
    append_and_prepend_do_not_create_a_missing_item, flags_round_trip_exactly,
    keys_of_250_bytes_and_utf8_keys_are_valid,
    prepend_adds_bytes_before_the_value_and_keeps_the_flags,
    replace_does_not_create_a_missing_item, replace_overwrites_an_existing_item,
    set_overwrites_the_value_and_the_flags, set_then_get_returns_the_exact_bytes,
    the_empty_value_is_stored_and_is_not_a_miss,
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

    /// The item size limit (memcached's `-I`) the transport keeps to: the largest value is
    /// that less the key and the item header ([`newcache_transport::Store::value_limit`]).
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
            get_many_made_hands_over_what_get_many_answers,
            get_many_made_stops_at_a_key_that_cannot_be_made,
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
            a_value_right_at_the_limit_is_stored_and_one_byte_more_is_refused,
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

#[cfg(test)]
mod tests {
    /// Every `pub fn case(f: &dyn Fixture)` of the suite's modules is listed in
    /// `conformance_suite!`, and every listed name is such a function.
    #[test]
    fn the_macro_lists_every_case() {
        let source = include_str!("conformance.rs");
        let modules = [
            include_str!("conformance/batches.rs"),
            include_str!("conformance/cas.rs"),
            include_str!("conformance/concurrency.rs"),
            include_str!("conformance/counters.rs"),
            include_str!("conformance/expiry.rs"),
            include_str!("conformance/limits.rs"),
            include_str!("conformance/made.rs"),
            include_str!("conformance/server.rs"),
            include_str!("conformance/storage.rs"),
        ];
        let defined: Vec<&str> = modules
            .iter()
            .flat_map(|m| m.lines())
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
