//! The text transport's integration tests, one module per file: failures (down, hung and
//! garbling servers), a made multi-get sent whole, pipelining, and the async transport's
//! direct calls and scripted servers. One test binary, not one per file: each would link the
//! transport, tokio and the test kit again.

mod failures;
mod made_multi_get;
mod pipelining;
mod tokio_direct;
mod tokio_scripted;
