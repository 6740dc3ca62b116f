//! SASL against a real memcached started with `-S` (see `support/sasl_server.rs` for how
//! the server and its sasldb are set up).

#[path = "support/sasl_server.rs"]
mod sasl_server;

use newcache_transport::{Error, Store, StoreStatus, Transport};
use newcache_transport_binary::{BinaryConfig, BinaryTransport};
use sasl_server::SaslMemcached;

fn transport(
    server: &SaslMemcached,
    user: Option<&str>,
    password: Option<&str>,
) -> BinaryTransport {
    BinaryTransport::new(BinaryConfig {
        username: user.map(str::to_string),
        password: password.map(str::to_string),
        ..BinaryConfig::new([server.addr()])
    })
    .unwrap_or_else(|e| panic!("BinaryTransport::new: {e}"))
}

#[test]
fn the_right_password_works_and_a_wrong_one_is_an_auth_error() {
    let server = SaslMemcached::with_user("auth", "alice", "s3cret");

    let t = transport(&server, Some("alice"), Some("s3cret"));
    assert_eq!(
        t.store(&Store::set(b"k", b"v", 3, 0)).unwrap(),
        StoreStatus::Stored
    );
    let item = t.get(b"k").unwrap().expect("hit");
    assert_eq!((item.value.as_slice(), item.flags), (&b"v"[..], 3));
    assert_eq!(t.incr(b"n", 1).unwrap(), None);
    assert!(t.delete(b"k").unwrap());
    assert_eq!(t.stats().unwrap().len(), 1);

    for (user, password) in [("alice", "wrong"), ("mallory", "s3cret")] {
        let t = transport(&server, Some(user), Some(password));
        match t.get(b"k") {
            Err(Error::Auth { server: s, message }) => {
                assert_eq!(s, server.addr());
                assert!(message.contains("AUTHENTICATION FAILURE"), "{message}");
            }
            other => panic!("{user}/{password}: expected Error::Auth, got {other:?}"),
        }
        assert!(matches!(
            t.store(&Store::set(b"k", b"v", 0, 0)),
            Err(Error::Auth { .. })
        ));
    }

    // No credentials at all: memcached refuses every command.
    let t = transport(&server, None, None);
    match t.store(&Store::set(b"k", b"v", 0, 0)) {
        Err(Error::Auth { message, .. }) => {
            assert!(message.contains("AUTHENTICATION FAILURE"), "{message}")
        }
        other => panic!("without credentials: expected Error::Auth, got {other:?}"),
    }
}
