//! Behaviors by pylibmc's names reach libmemcached as pylibmc sets them: checked with
//! `memcached_behavior_get` on the configured handle. No server is needed (nothing connects).

use newcache_transport::Error;
use newcache_transport_binary::{
    BehaviorError, Behaviors, BinaryConfig, BinaryTransport, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POLL_TIMEOUT,
};

fn configure(binary: bool, behaviors: &[(&str, &str)]) -> Result<BinaryTransport, Error> {
    let mut config = BinaryConfig::new(["127.0.0.1:11211", "127.0.0.1:11212"]);
    config.binary_protocol = binary;
    config
        .behaviors
        .set_all(behaviors.iter().copied())
        .unwrap_or_else(|e| panic!("{e}"));
    BinaryTransport::new(config)
}

fn read(t: &BinaryTransport, name: &str) -> u64 {
    t.behavior(name)
        .unwrap_or_else(|e| panic!("behavior({name}): {e}"))
}

#[test]
fn every_behavior_is_accepted_by_libmemcached_and_reads_back() {
    for &name in Behaviors::NAMES {
        // (value as pylibmc users write it, what memcached_behavior_get answers)
        let (value, expected) = match name {
            "hash" | "ketama_hash" => ("md5", Some(1)),
            "distribution" => ("consistent", Some(1)),
            "failure_limit"
            | "num_replicas"
            | "_io_msg_watermark"
            | "_io_bytes_watermark"
            | "_io_key_prefetch" => ("3", Some(3)),
            "_socket_send_size" | "_socket_recv_size" => ("65536", None),
            n if n.ends_with("timeout") => ("7", Some(7)),
            // Refused when on (tests/transport.rs).
            "buffer_requests" => ("0", Some(0)),
            _ => ("1", Some(1)),
        };
        // Text mode: libmemcached refuses verify_keys with the binary protocol.
        let t = configure(false, &[(name, value)])
            .unwrap_or_else(|e| panic!("{name}={value} refused: {e}"));
        match expected {
            Some(expected) => assert_eq!(read(&t, name), expected, "{name}={value}"),
            None => assert!(matches!(
                t.behavior(name),
                Err(BehaviorError::Unsupported { .. })
            )),
        }
    }
}

#[test]
fn unset_behaviors_keep_libmemcacheds_defaults_except_timeouts_and_cas() {
    for binary in [true, false] {
        let t = configure(binary, &[]).unwrap();
        assert_eq!(read(&t, "binary"), u64::from(binary));
        // This transport's own defaults.
        assert_eq!(
            read(&t, "connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT.as_millis() as u64
        );
        assert_eq!(
            read(&t, "_poll_timeout"),
            DEFAULT_POLL_TIMEOUT.as_millis() as u64
        );
        assert_eq!(read(&t, "cas"), 1);
        // On, or a binary-protocol miss waits ~44 ms for Nagle and delayed ACK.
        assert_eq!(read(&t, "tcp_nodelay"), 1);
        // SO_SNDTIMEO and SO_RCVTIMEO (µs) say what the poll timeout says.
        for name in ["send_timeout", "receive_timeout"] {
            assert_eq!(
                read(&t, name),
                DEFAULT_POLL_TIMEOUT.as_micros() as u64,
                "{name}"
            );
        }
        // libmemcached's.
        for (name, default) in [
            ("no_block", 0),
            ("tcp_keepalive", 0),
            ("hash", 0),
            ("ketama", 0),
            ("ketama_weighted", 0),
            ("distribution", 0),
            ("buffer_requests", 0),
            ("verify_keys", 0),
            ("num_replicas", 0),
            ("auto_eject", 0),
            (
                "retry_timeout",
                libmemcached_sys::MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT,
            ),
            ("remove_failed", 0),
            (
                "failure_limit",
                libmemcached_sys::MEMCACHED_SERVER_FAILURE_LIMIT,
            ),
            ("_io_msg_watermark", 500),
            ("_io_bytes_watermark", 65 * 1024),
            ("_io_key_prefetch", 0),
            ("_sort_hosts", 0),
            (
                "dead_timeout",
                libmemcached_sys::MEMCACHED_SERVER_FAILURE_DEAD_TIMEOUT,
            ),
        ] {
            assert_eq!(read(&t, name), default, "{name}");
        }
    }
}

#[test]
fn overriding_the_transports_defaults_works() {
    let t = configure(
        true,
        &[
            ("connect_timeout", "4000"),
            ("_poll_timeout", "5000"),
            ("cas", "0"),
        ],
    )
    .unwrap();
    assert_eq!(read(&t, "connect_timeout"), 4000);
    assert_eq!(read(&t, "_poll_timeout"), 5000);
    assert_eq!(read(&t, "cas"), 0);
    // The socket timeouts follow the poll timeout unless set.
    assert_eq!(read(&t, "send_timeout"), 5_000_000);
    let t = configure(true, &[("_poll_timeout", "300"), ("receive_timeout", "7")]).unwrap();
    assert_eq!(
        (read(&t, "send_timeout"), read(&t, "receive_timeout")),
        (300_000, 7)
    );
}

#[test]
fn ketama_sets_the_distribution_only_as_pylibmc_does() {
    let t = configure(true, &[("ketama", "1")]).unwrap();
    assert_eq!(read(&t, "distribution"), 2, "consistent ketama");
    assert_eq!(read(&t, "hash"), 0, "the key hash stays one-at-a-time");
    let t = configure(true, &[("ketama", "0")]).unwrap();
    assert_eq!(read(&t, "distribution"), 0, "modula");
}

#[test]
fn ketama_weighted_sets_md5_and_the_weighted_distribution() {
    let t = configure(true, &[("ketama_weighted", "1")]).unwrap();
    assert_eq!(read(&t, "distribution"), 5, "consistent weighted");
    assert_eq!(read(&t, "hash"), 1, "md5");
    assert_eq!(read(&t, "ketama_hash"), 1, "md5");
    // libmemcached's quirk, kept: turning it off turns plain ketama on.
    let t = configure(true, &[("ketama_weighted", "0")]).unwrap();
    assert_eq!(read(&t, "distribution"), 2);
}

#[test]
fn behaviors_apply_in_pylibmcs_order_not_the_order_given() {
    // pylibmc applies hash before ketama_weighted, so MD5 wins even when hash is given last.
    let t = configure(true, &[("ketama_weighted", "1"), ("hash", "crc")]).unwrap();
    assert_eq!(read(&t, "hash"), 1, "md5, as in pylibmc");
    // distribution comes after ketama, so it wins.
    let t = configure(true, &[("distribution", "modula"), ("ketama", "1")]).unwrap();
    assert_eq!(read(&t, "distribution"), 0);
    // hash after ketama: the hash stays what was asked.
    let t = configure(true, &[("ketama", "1"), ("hash", "fnv1a_32")]).unwrap();
    assert_eq!((read(&t, "distribution"), read(&t, "hash")), (2, 6));
}

#[test]
fn every_hash_and_distribution_name_reaches_libmemcached() {
    for (hash, name) in newcache_transport_binary::Hash::ALL {
        match configure(true, &[("hash", name)]) {
            Ok(t) => assert_eq!(
                read(&t, "hash"),
                u64::from(newcache_transport_binary::hash_to_libmemcached(hash)),
                "{name}"
            ),
            // libhashkit may be built without hsieh or murmur; the error names the behavior.
            Err(e) => {
                assert!(
                    matches!(name, "hsieh" | "murmur"),
                    "hash {name} refused: {e}"
                );
                assert!(e.to_string().contains(&format!("hash = {name}")), "{e}");
            }
        }
    }
    for (distribution, name) in newcache_transport_binary::Distribution::ALL {
        let t = configure(true, &[("distribution", name)]).unwrap();
        assert_eq!(
            read(&t, "distribution"),
            u64::from(newcache_transport_binary::distribution_to_libmemcached(
                distribution
            )),
            "{name}"
        );
    }
}

#[test]
fn libmemcacheds_refusals_are_errors_naming_the_behavior() {
    // As in pylibmc: libmemcached refuses verify_keys with the binary protocol.
    let err = configure(true, &[("verify_keys", "1")]).unwrap_err();
    match &err {
        Error::Backend { code, message, .. } => {
            assert_eq!(*code, libmemcached_sys::MEMCACHED_INVALID_ARGUMENTS as i32);
            assert!(message.contains("verify_keys"), "{message}");
            assert!(
                message.contains("MEMCACHED_BEHAVIOR_VERIFY_KEY"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_names_and_bad_values_name_what_is_wrong() {
    let mut b = Behaviors::default();
    let err = b.set("tcp_no_delay", "1").unwrap_err();
    assert!(err.to_string().contains("tcp_no_delay"), "{err}");
    let err = b.set("distribution", "ring").unwrap_err();
    assert!(
        err.to_string().contains("distribution") && err.to_string().contains("ring"),
        "{err}"
    );
    let err = b.set("receive_timeout", "soon").unwrap_err();
    assert!(err.to_string().contains("microseconds"), "{err}");
    assert!(b.is_empty());
}

#[test]
fn behaviors_in_effect_reads_every_behavior_back_and_debug_shows_them() {
    let t = configure(
        true,
        &[("hash", "crc"), ("ketama", "1"), ("retry_timeout", "3")],
    )
    .unwrap();
    let all = t.behaviors_in_effect();
    // Every name but the two socket sizes (reading those connects), plus `binary`.
    assert_eq!(all.len(), Behaviors::NAMES.len() + 1 - 2, "{all:?}");
    for (name, value) in &all {
        assert_eq!(read(&t, name), *value, "{name}");
    }
    assert_eq!(
        (
            all["binary"],
            all["hash"],
            all["distribution"],
            all["retry_timeout"]
        ),
        (1, 2, 2, 3)
    );
    let shown = format!("{t:?}");
    assert!(
        shown.contains(&format!("behaviors: {all:?}")),
        "{shown} lacks {all:?}"
    );
}

/// A socket or I/O timeout of 0 is refused by name and on the configuration, naming the
/// behavior and the least it takes: libmemcached fails every wait at once with a
/// `connect_timeout` or `_poll_timeout` of 0 (every request then failed as if the server
/// were dead, and a `set` the server stored reported failure), and sets no socket timeout at
/// all with a `send_timeout`/`receive_timeout` of 0. `retry_timeout` and `dead_timeout` keep
/// 0, which means something to libmemcached (try again at the next second; never retry an
/// ejected server).
#[test]
fn zero_socket_and_io_timeouts_are_refused_naming_the_behavior() {
    use std::time::Duration;
    for (name, least) in [
        ("connect_timeout", "1 ms"),
        ("_poll_timeout", "1 ms"),
        ("send_timeout", "1 µs"),
        ("receive_timeout", "1 µs"),
    ] {
        let mut config = BinaryConfig::new(["127.0.0.1:11211"]);
        let err = config.behaviors.set(name, "0").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, BehaviorError::BadValue { .. })
                && text.contains(name)
                && text.contains(&format!("give at least {least}")),
            "{name}=0: {text}"
        );
        assert!(config.behaviors.is_empty());
    }
    for (name, behaviors) in [
        (
            "connect_timeout",
            Behaviors {
                connect_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
        ),
        (
            "_poll_timeout",
            Behaviors {
                poll_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
        ),
        (
            "send_timeout",
            Behaviors {
                send_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
        ),
        (
            "receive_timeout",
            Behaviors {
                receive_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
        ),
    ] {
        let config = BinaryConfig {
            behaviors,
            ..BinaryConfig::new(["127.0.0.1:11211"])
        };
        match BinaryTransport::new(config) {
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains(name) && text.contains("give at least 1"),
                    "{text}"
                );
            }
            Ok(t) => panic!(
                "{name} of 0 accepted: libmemcached holds {}",
                read(&t, name)
            ),
        }
    }
    let t = configure(true, &[("retry_timeout", "0"), ("dead_timeout", "0")]).unwrap();
    assert_eq!(
        (read(&t, "retry_timeout"), read(&t, "dead_timeout")),
        (0, 0)
    );
}
