//! Herd settings that cannot work on the chosen transport are refused when the cache is built,
//! with the fix in the message, never degraded at run time: `herd=meta` over libmemcached
//! (binary or text mode: it does not speak the meta protocol), and `herd=lease`/`early` with
//! libmemcached's CAS turned off (no CAS, no single winner).
#![cfg(feature = "binary")]

use newcache::{Builder, Cache, Error, Policy};

/// Nothing listens on port 1: building never connects, so these need no server.
const SERVER: &str = "127.0.0.1:1";

fn refused(url: &str) -> String {
    match Cache::from_url(url) {
        Err(Error::Config(message)) => message,
        Err(other) => panic!("{url}: expected a configuration error, got {other}"),
        Ok(_) => panic!("{url}: built, but should have been refused"),
    }
}

#[test]
fn herd_meta_over_libmemcached_is_refused_naming_lease() {
    for transport in ["binary=true", "transport=libmemcached"] {
        let message = refused(&format!("newcache://{SERVER}/?{transport}&herd=meta"));
        assert!(message.contains("herd=meta"), "{transport}: {message}");
        assert!(message.contains("herd=lease"), "{transport}: {message}");
        assert!(message.contains("libmemcached"), "{transport}: {message}");
    }
    let err = Builder::new()
        .servers([SERVER])
        .libmemcached(true)
        .herd_policy(Policy::Meta)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("herd=meta"), "{err}");
}

/// The text transport told not to speak meta names the setting that turned it off, not
/// another transport (it said "the text transport does not speak it; use the text
/// transport").
#[test]
fn herd_meta_with_protocol_classic_is_refused_naming_the_protocol() {
    let message = refused(&format!("newcache://{SERVER}/?herd=meta&protocol=classic"));
    assert!(message.contains("protocol=classic"), "{message}");
    assert!(message.contains("herd=lease"), "{message}");
    assert!(!message.contains("use the text transport"), "{message}");
}

#[test]
fn lease_without_cas_is_refused_naming_both_fixes() {
    for url in [
        format!("newcache://{SERVER}/?binary=true&behaviors.cas=false"),
        format!("newcache://{SERVER}/?binary=true&behaviors.cas=0&herd=lease"),
        format!("newcache://{SERVER}/?transport=libmemcached&behaviors.cas=false"),
        format!("newcache://{SERVER}/?binary=true&behaviors.cas=false&herd=early"),
    ] {
        let message = refused(&url);
        assert!(message.contains("behaviors.cas=true"), "{url}: {message}");
        assert!(message.contains("herd=reinsert"), "{url}: {message}");
    }
    let err = Builder::new()
        .servers([SERVER])
        .libmemcached(true)
        .behavior("cas", "false")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("behaviors.cas=true"), "{err}");
}

#[test]
fn what_needs_no_cas_still_builds() {
    for params in [
        // The transport's default: CAS on.
        "binary=true",
        "binary=true&behaviors.cas=true",
        // The seed's policy re-stores without CAS; herd off writes no envelopes.
        "binary=true&behaviors.cas=false&herd=reinsert",
        "binary=true&behaviors.cas=false&herd=off",
        "transport=libmemcached&behaviors.cas=false&herd=reinsert",
    ] {
        let cache = Cache::from_url(&format!("newcache://{SERVER}/?{params}"))
            .unwrap_or_else(|e| panic!("{params}: {e}"));
        assert!(
            cache.transport().name().starts_with("libmemcached"),
            "{params}: {}",
            cache.transport().name()
        );
    }
}
