//! Built without the `binary` feature (what a user without libmemcached gets), newcache
//! refuses every way of asking for libmemcached with an error that names the feature, and
//! never falls back to another transport. `cargo xtask test` runs this file with every
//! feature but `binary`, pkg-config unable to find libmemcached; with `binary` on it has no
//! tests (the feature is then there).
#![cfg(not(feature = "binary"))]

use newcache::Cache;

/// The error of building a cache from `url`, as text.
fn url_error(url: &str) -> String {
    match Cache::from_url(url) {
        Ok(cache) => panic!(
            "{url}: built a cache on the {} transport instead of refusing",
            cache.transport().name()
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn transport_libmemcached_without_the_binary_feature_is_a_clear_error() {
    let err = url_error("newcache://127.0.0.1:1/?transport=libmemcached");
    assert!(err.contains("transport=libmemcached"), "{err}");
    assert!(err.contains("`binary` feature"), "{err}");
    assert!(err.contains("never falls back"), "{err}");

    // The same through the builder.
    let err = Cache::builder()
        .servers(["127.0.0.1:1"])
        .libmemcached(false)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("transport=libmemcached"), "{err}");
    assert!(err.contains("`binary` feature"), "{err}");
}

#[test]
fn binary_true_and_libmemcached_behaviors_without_the_feature_are_clear_errors() {
    let err = url_error("newcache://127.0.0.1:1/?binary=true");
    assert!(
        err.contains("binary=true") && err.contains("`binary` feature"),
        "{err}"
    );
    let err = Cache::builder()
        .servers(["127.0.0.1:1"])
        .libmemcached(true)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("binary=true") && err.contains("`binary` feature"),
        "{err}"
    );
    // pylibmc's behaviors with libmemcached's text mode: refused, naming the behavior.
    let err = url_error("newcache://127.0.0.1:1/?transport=libmemcached&behaviors.hash=crc");
    assert!(
        err.contains("behaviors.hash") && err.contains("`binary` feature"),
        "{err}"
    );
}
