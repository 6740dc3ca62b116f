//! The bare libmemcached peer the benchmarks use does what it says, on a real memcached.

use newcache_testkit::Memcached;
use newcache_transport_binary::bare::{Bare, Keys, Options};

#[test]
fn bare_libmemcached_sets_gets_and_multi_gets_in_both_protocols() {
    let server = Memcached::start();
    for options in [Options::BINARY, Options::TEXT] {
        let mut b = Bare::connect(&server.addr(), options).expect("handle");
        b.set(b"bare:k", &[7u8; 100]).expect("set");
        assert_eq!(b.get(b"bare:k").expect("get"), Some(100));
        assert_eq!(b.get(b"bare:absent").expect("get"), None);
        b.set(b"bare:j", b"xyz").expect("set");
        b.set(b"bare:empty", b"").expect("set");
        assert_eq!(b.get(b"bare:empty").expect("get"), Some(0), "{options:?}");
        let keys = Keys::new(&["bare:k", "bare:absent", "bare:j"]);
        assert_eq!(b.get_many(&keys).expect("mget"), (2, 103), "{options:?}");
        // The handle is reusable after a multi-get.
        assert_eq!(b.get(b"bare:j").expect("get"), Some(3));
        assert_eq!(
            b.get_via_mget(&Keys::new(&["bare:j"])).expect("mget"),
            Some(3)
        );
        assert_eq!(
            b.get_via_mget(&Keys::new(&["bare:absent"])).expect("mget"),
            None
        );
    }
    assert!(Bare::new("bad\0host", 1, Options::TEXT).is_err());
    assert!(Bare::connect("no-port", Options::TEXT).is_err());
}
