//! The facade suite over the Rust text transport (the default).
// retry_timeout=1: a restarted server is tried again after one second, as with libmemcached.
const TRANSPORT: &str = "transport=text&behaviors.retry_timeout=1";
include!("facade/cases.rs");
