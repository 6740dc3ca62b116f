//! The `Cache` and `AsyncCache` facade end to end against real memcached (and Python's
//! clients, twemproxy, TLS and unix-socket servers), one module per file. One test binary,
//! not one per file: each would link the facade and instantiate its generics again
//! (tests/Cargo.toml says which files stay binaries of their own, and why).

mod async_cache;
mod binary_url;
mod codec_json;
mod cross_transport;
mod facade_binary;
mod facade_text;
mod herd_build;
mod herd_fallback;
mod herd_meta;
mod herd_races;
mod python_interop;
mod python_matrix;
mod python_values;
mod tls;
mod unix_socket;
