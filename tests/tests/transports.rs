//! The transports end to end against real memcached, one module per file: the conformance
//! suite over the memory, text and async text transports, the async transport's pipelining,
//! cancellation and faults, bounded connections, and the text transport through twemproxy.
//! One test binary, not one per file (tests/Cargo.toml says which files stay binaries of
//! their own, and why).

mod conformance_memory;
mod conformance_text;
mod conformance_tokio;
mod connections;
mod probe;
mod tokio_transport;
mod twemproxy;
