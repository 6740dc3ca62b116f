//! The facade suite over the Rust text transport (the default).
const TRANSPORT: &str = "transport=text";
include!("facade/cases.rs");
