//! The bare libmemcached peer the benchmarks use does what it says, on a real memcached.

use newcache_testkit::Memcached;
use newcache_transport_binary::bare::Bare;

#[test]
fn bare_libmemcached_sets_gets_and_multi_gets_in_both_protocols() {
    let server = Memcached::start();
    for binary in [true, false] {
        let mut b = Bare::new("127.0.0.1", server.port(), binary).expect("handle");
        assert!(b.set(b"bare:k", &[7u8; 100]));
        assert_eq!(b.get(b"bare:k"), Some(100));
        assert_eq!(b.get(b"bare:absent"), None);
        assert!(b.set(b"bare:j", b"xyz"));
        assert_eq!(
            b.get_many(&[b"bare:k", b"bare:absent", b"bare:j"]),
            (2, 103),
            "binary={binary}"
        );
        // The handle is reusable after a multi-get.
        assert_eq!(b.get(b"bare:j"), Some(3));
    }
    assert!(Bare::new("bad\0host", 1, true).is_none());
}
