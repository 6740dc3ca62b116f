//! The transport conformance suite against the in-memory transport.

use newcache_tests::MemoryFixture;

newcache_tests::conformance_suite!(|| MemoryFixture::new());
