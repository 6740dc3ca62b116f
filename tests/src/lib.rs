//! newcache's integration test support: the transport conformance suite and the fixtures it
//! runs on.
//!
//! The suite ([`conformance`]) is written once against `&dyn Transport`; each backend's test
//! file runs all of it with [`conformance_suite!`] and a [`Fixture`]:
//!
//! ```ignore
//! // tests/tests/conformance_memory.rs
//! use newcache_tests::MemoryFixture;
//! newcache_tests::conformance_suite!(|| MemoryFixture::new());
//! ```
//!
//! [`Fixture`]: conformance::Fixture
#![forbid(unsafe_code)]

pub mod block_on;
pub mod checked;
pub mod conformance;
pub mod fixtures;

pub use block_on::BlockingAdapter;
pub use conformance::Fixture;
pub use fixtures::{MemoryFixture, ServerFixture};
