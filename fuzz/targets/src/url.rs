//! The URL parser: `newcache::Config::from_url` and `newcache::Cache::from_url` over
//! arbitrary strings (the input's bytes, lossily UTF-8).
//!
//! Checks: no panic; a URL `Config::from_url` accepts is a configuration `validate` accepts;
//! a URL `Cache::from_url` accepts is one `Config::from_url` accepts, and the cache makes
//! wire keys without panicking; a configuration's `Debug` never shows the password.

use newcache::{Cache, Config};

/// The URL target.
pub fn url(data: &[u8]) {
    let url = String::from_utf8_lossy(data);
    let config = Config::from_url(&url);
    if let Ok(config) = &config {
        if let Err(e) = config.validate() {
            panic!("{url:?} parsed to a configuration validate refuses: {e}");
        }
        if let Some(secret) = &config.password {
            let shown = format!("{config:?}");
            // Only a password that cannot be there for another reason.
            let others = format!(
                "{:?}",
                Config {
                    password: None,
                    ..config.clone()
                }
            );
            if secret.0.len() >= 6 && !others.contains(&secret.0) {
                assert!(
                    !shown.contains(&secret.0),
                    "{url:?}: the password shows in {shown}"
                );
            }
        }
    }
    let cache = Cache::from_url(&url);
    if let Ok(cache) = cache {
        assert!(config.is_ok(), "{url:?}: a cache from a URL Config refuses");
        for key in ["games", "", "a b", "é", &url] {
            let _ = cache.wire_key(key);
        }
        let _ = format!("{cache:?}");
    }
}
