//! Fixtures the conformance suite runs on: one fresh backend per test case.

use std::fmt;

use newcache_testkit::Memcached;
use newcache_transport::{MemoryTransport, Transport};

use crate::conformance::Fixture;

/// A fresh [`MemoryTransport`]. Its statistics stand in for a server's, so the suite's
/// "nothing reached the server" checks run against it too.
#[derive(Debug, Default)]
pub struct MemoryFixture {
    transport: MemoryTransport,
}

impl MemoryFixture {
    /// A fixture around an empty store with the default item size limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fixture around an existing store (e.g. one with a smaller item size limit).
    pub fn with_transport(transport: MemoryTransport) -> Self {
        MemoryFixture { transport }
    }

    /// The store under test, as its concrete type.
    pub fn memory(&self) -> &MemoryTransport {
        &self.transport
    }
}

impl Fixture for MemoryFixture {
    fn transport(&self) -> &dyn Transport {
        &self.transport
    }

    fn server_stat(&self, name: &str) -> Option<u64> {
        let stats = self
            .transport
            .stats()
            .unwrap_or_else(|e| panic!("MemoryTransport::stats failed: {e}"));
        Some(
            stats
                .iter()
                .map(|s| match s.stats.get(name).map(|v| v.parse::<u64>()) {
                    Some(Ok(n)) => n,
                    _ => panic!("MemoryTransport has no numeric stat {name}: {s:?}"),
                })
                .sum(),
        )
    }

    fn item_size_limit(&self) -> usize {
        self.transport.item_size_limit()
    }
}

/// Real memcached servers, started fresh for one test case, and a transport connected to
/// them. The servers are stopped when the fixture is dropped.
///
/// [`Fixture::server_stat`] asks the servers themselves (over a connection of its own, not
/// through the transport under test) and sums over them.
///
/// ```no_run
/// use newcache_tests::ServerFixture;
/// # fn connect(servers: Vec<String>) -> Box<dyn newcache_transport::Transport> { unimplemented!() }
/// // Three servers; `connect` gets their `127.0.0.1:PORT` addresses.
/// let fixture = ServerFixture::start(3, |servers| connect(servers));
/// assert_eq!(fixture.servers().len(), 3);
/// ```
pub struct ServerFixture {
    // Declared first so it is dropped (and its connections closed) before the servers.
    transport: Box<dyn Transport>,
    servers: Vec<Memcached>,
    item_size_limit: usize,
}

impl ServerFixture {
    /// Starts `count` memcached servers with default settings and connects a transport to
    /// them: `connect` gets their addresses (`127.0.0.1:PORT`) in order. Panics when memcached
    /// is not installed or does not start.
    pub fn start(
        count: usize,
        connect: impl FnOnce(Vec<String>) -> Box<dyn Transport>,
    ) -> ServerFixture {
        Self::with_servers((0..count).map(|_| Memcached::start()).collect(), connect)
    }

    /// Connects a transport to servers the caller started (e.g. with other memcached
    /// arguments); `connect` gets their addresses in order.
    pub fn with_servers(
        servers: Vec<Memcached>,
        connect: impl FnOnce(Vec<String>) -> Box<dyn Transport>,
    ) -> ServerFixture {
        let transport = connect(servers.iter().map(Memcached::addr).collect());
        ServerFixture {
            transport,
            servers,
            item_size_limit: newcache_transport::DEFAULT_ITEM_SIZE_LIMIT,
        }
    }

    /// Tells the suite the item size limit (memcached's `-I`) the transport keeps to
    /// (default [`newcache_transport::DEFAULT_ITEM_SIZE_LIMIT`]).
    pub fn with_item_size_limit(mut self, limit: usize) -> Self {
        self.item_size_limit = limit;
        self
    }

    /// The servers, in the order their addresses were given to the transport.
    pub fn servers(&self) -> &[Memcached] {
        &self.servers
    }
}

impl fmt::Debug for ServerFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFixture")
            .field("transport", &self.transport)
            .field("servers", &self.servers)
            .field("item_size_limit", &self.item_size_limit)
            .finish()
    }
}

impl Fixture for ServerFixture {
    fn transport(&self) -> &dyn Transport {
        self.transport.as_ref()
    }

    fn server_stat(&self, name: &str) -> Option<u64> {
        Some(self.servers.iter().map(|s| s.stat(name)).sum())
    }

    fn item_size_limit(&self) -> usize {
        self.item_size_limit
    }
}

/// Runs `f(i)` for `i` in `0..n` on `n` threads released at once (a barrier), and returns
/// their results in order: the way the herd tests make many readers race for one key.
pub fn at_once<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}
