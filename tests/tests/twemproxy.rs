//! A proxy is a server: the text transport through twemproxy (Debian's `nutcracker`) in
//! front of two memcached processes. Every conformance case whose commands twemproxy carries
//! runs unchanged; the commands it lacks (`flush_all`, `stats`, the meta commands) give a
//! typed "unsupported" error at once, not a hang, and do not mark the proxy down.

use std::time::{Duration, Instant};

use newcache_testkit::{Memcached, Twemproxy};
use newcache_tests::conformance::Fixture;
use newcache_transport::{Error, Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport};

/// Two memcached processes, twemproxy in front, and the text transport talking only to it.
struct ProxyFixture {
    transport: TextTransport,
    backends: Vec<Memcached>,
    _proxy: Twemproxy,
}

impl ProxyFixture {
    fn start() -> ProxyFixture {
        let backends = vec![Memcached::start(), Memcached::start()];
        let proxy = Twemproxy::start(&backends.iter().collect::<Vec<_>>());
        let transport = TextTransport::new(TextConfig {
            servers: vec![proxy.addr()],
            read_timeout: Duration::from_secs(2),
            ..TextConfig::default()
        })
        .expect("transport");
        ProxyFixture {
            transport,
            backends,
            _proxy: proxy,
        }
    }
}

impl Fixture for ProxyFixture {
    fn transport(&self) -> &dyn Transport {
        &self.transport
    }

    fn server_stat(&self, name: &str) -> Option<u64> {
        // Read past the proxy, from the memcached processes behind it.
        Some(self.backends.iter().map(|m| m.stat(name)).sum())
    }
}

// The conformance cases twemproxy supports, by name (all but flush_all and stats).
newcache_tests::conformance_suite!(@cases (|| ProxyFixture::start())
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
    a_relative_exptime_expires_after_that_many_seconds,
    a_value_over_the_item_size_limit_is_refused_before_it_is_sent,
    invalid_keys_are_refused_before_anything_is_sent,
    eight_threads_share_one_transport,
);

fn expect_unsupported<T: std::fmt::Debug>(what: &str, outcome: Result<T, Error>, took: Duration) {
    match outcome {
        Err(Error::Unsupported { command, .. }) => assert!(
            what.starts_with(command.as_str()),
            "{what}: reported as {command}"
        ),
        other => panic!("{what} through twemproxy: expected Unsupported, got {other:?}"),
    }
    assert!(took < Duration::from_millis(500), "{what} took {took:?}");
}

#[test]
fn commands_twemproxy_lacks_are_typed_unsupported_errors_not_hangs() {
    let f = ProxyFixture::start();
    let t = &f.transport;
    let timed = |what: &str, op: &dyn Fn() -> Result<(), Error>| {
        let begun = Instant::now();
        let outcome = op();
        expect_unsupported(what, outcome, begun.elapsed());
    };
    timed("flush_all", &|| t.flush_all());
    timed("stats", &|| t.stats().map(|_| ()));
    timed("mg", &|| t.meta_get(b"k", 5).map(|_| ()));
    timed("mg (many)", &|| {
        t.meta_get_many(&[b"a", b"b"], 5).map(|_| ())
    });
    timed("md", &|| t.meta_invalidate(b"k", 5).map(|_| ()));
    // The proxy is not marked down by what it refused: ordinary commands go on working.
    for i in 0..20 {
        let key = format!("after:{i}");
        t.store(&Store::set(key.as_bytes(), b"v", 0, 60)).unwrap();
        assert_eq!(t.get(key.as_bytes()).unwrap().unwrap().value, b"v");
    }
    // And the items went through the proxy to the memcached processes behind it.
    let stored: u64 = f.backends.iter().map(|b| b.stat("curr_items")).sum();
    assert_eq!(stored, 20);
}
