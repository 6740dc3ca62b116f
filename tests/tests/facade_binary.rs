//! The facade suite over libmemcached's binary protocol (`binary=true`, the seed's switch),
//! and over libmemcached's text mode (`transport=libmemcached`).
#![cfg(feature = "binary")]

mod binary {
    // retry_timeout=1: a restarted server is tried again after one second.
    const TRANSPORT: &str = "binary=true&behaviors.retry_timeout=1";
    include!("facade/cases.rs");
}

mod libmemcached_text {
    const TRANSPORT: &str = "transport=libmemcached&behaviors.retry_timeout=1";
    include!("facade/cases.rs");
}
