//! The in-process memory transport (to be written).

/// An in-process transport for tests.
#[derive(Debug, Default)]
pub struct MemoryTransport {}

impl MemoryTransport {
    /// An empty store.
    pub fn new() -> Self {
        MemoryTransport {}
    }
}
