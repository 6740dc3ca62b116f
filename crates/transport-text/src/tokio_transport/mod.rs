//! [`TokioTextTransport`]: memcached's text protocol on tokio, every connection carrying
//! the requests of any number of tasks at once (auto-pipelining) where the server speaks
//! the meta protocol (classic and TLS connections carry one request at a time), built from the same
//! [`TextConfig`] and the same sans-IO pieces as the blocking [`TextTransport`]
//! (the codec, the request encoding and reply checks of `command`, placement and failover).
//!
//! # Design
//!
//! - **Connections.** In the meta protocol each server has
//!   [`TextConfig::async_connections`] connections (1 by default), opened on first use
//!   (building the transport touches no server) and again after one closes; requests take
//!   them in turn. In the classic protocol (no tags to match pipelined replies by) a
//!   connection carries one request at a time, from a pool of up to
//!   [`TextConfig::max_connections`] per server, as the blocking transport's. With [`Protocol::Auto`] the first
//!   connection to a server sends the blocking transport's meta probe and the answer is
//!   judged by the same rules (meta on memcached 1.6+, classic otherwise).
//! - **Queue.** A caller encodes its request (one command, or a whole multi-key batch for
//!   one server) into bytes, with the connection's next opaque tokens in meta, and puts it
//!   with the replies it awaits (its *steps*) into the connection's bounded queue
//!   ([`TextConfig::async_queue`] requests; past it a caller waits for room, within its
//!   timeout). Multi-key operations queue every server's batch before awaiting any reply,
//!   so they cost about one round trip however many servers they touch.
//! - **Writer.** One task per connection takes everything queued, appends the jobs to the
//!   FIFO of requests in flight (in the order written) and writes all their bytes with one
//!   write: under load one write carries many requests. A request whose caller has gone
//!   before it was written is dropped unwritten.
//! - **Reader.** The same task reads replies as they arrive and decodes each with the
//!   codec's [`Decoder`](crate::proto::Decoder) for the step the oldest job in the FIFO
//!   awaits, then checks it with the blocking transport's checks: in meta the opaque token
//!   and the key echoed back, in classic the keys of `VALUE` lines and the kind of status
//!   line. A reply that does not answer its request, an unparsable byte, or any byte when
//!   nothing is in flight closes the connection, and **every** request in flight on it
//!   fails with [`Error::Protocol`]: a reply is never handed to a request it does not
//!   answer. An error line (`CLIENT_ERROR`...) answers its request; in classic it also
//!   closes the connection afterwards (whether the server is still reading what it refused
//!   cannot be told), in meta the tags keep the connection in step.
//! - **Direct path.** A request that finds its connection idle (nothing queued, being
//!   written or in flight) after a lone caller's use (the last request in flight before it
//!   was alone: under concurrency requests are queued, to share writes) does not go
//!   through the queue: its caller enters it in the FIFO,
//!   writes it and reads and decodes its reply in its own task, with the same decoder and
//!   checks, so a lone caller costs one write, one read and no hand-off between tasks.
//!   Requests that arrive meanwhile are queued as above, and the connection's task takes the
//!   reading back once they are written (the direct caller then gets its answer from the
//!   connection's state when the task has read it; a lone caller needs no reply channel).
//!   Bytes found on an idle connection before the request is written were not asked for:
//!   the connection closes and the request goes on a new one.
//! - **Cancellation.** A caller whose future is dropped leaves its request in the FIFO:
//!   its reply is still read, checked and thrown away, so the connection stays in step. A
//!   direct caller dropped (or timed out) mid-reply hands the reading back to the
//!   connection's task with what it had read of the reply, and the task reads the rest.
//! - **Timeouts.** A request fails with [`Error::Timeout`] when its reply has not come
//!   within [`TextConfig::read_timeout`] of being queued (waiting for room in the queue
//!   included); the connection and the other requests on it go on. A server's part of a
//!   multi-key batch larger than the blocking transport's rounds (32 KB of keys for a
//!   multi-get, 512 commands for stores and deletes) goes in those rounds, one after
//!   another, each one job whose reply is due within the read timeout, so a large answer
//!   that keeps arriving is not cut short. A direct caller arms no
//!   timer of its own: the connection's task, which wakes every quarter of the read
//!   timeout, fails it when its reply is late and reads that reply itself. When nothing at all
//!   arrives for the read timeout while requests are in flight (a hung server), or the
//!   awaited reply has not come whole within two read timeouts (bytes trickling in), the
//!   connection is closed and every request on it fails; the next request opens a new one.
//!   Writes are bounded by [`TextConfig::write_timeout`], connecting by
//!   [`TextConfig::connect_timeout`]. Idle connections close after
//!   [`TextConfig::idle_timeout`].
//! - **Failover.** Every exchange's outcome is reported to the same cluster state as the
//!   blocking transport's (`failure_limit`, `retry_timeout`, `remove_failed`,
//!   `dead_timeout`), and keys are placed exactly as it places them.
//!
//! # Limits
//!
//! - TLS needs feature `tls` (a config with [`TextConfig::tls`] is refused with
//!   [`Error::Unsupported`] without it). A TLS connection's reads and writes go through
//!   rustls' state, shared by its reader and writer under a lock held for non-blocking
//!   steps only. Over TLS requests are not pipelined: memcached before 1.6.39 can leave a
//!   pipelined request unanswered there (see `serial_over_tls`), so TLS connections carry
//!   one request at a time, a pool of up to [`TextConfig::max_connections`] per server.
//! - The transport must be used inside a tokio runtime with its I/O and time drivers
//!   enabled; its connections' tasks run on the runtime of the first request that needs
//!   them.
//! - The classic protocol has no tags, so it is not pipelined (one request per connection
//!   at a time). Its replies are checked as far as it allows (the keys of `VALUE` lines,
//!   the kind of status line, no byte when nothing is in flight), but a duplicated reply
//!   of the same shape as the one awaited (`STORED` before another store's `STORED`) that
//!   arrives while the next request is in flight cannot be told from it: use meta
//!   (memcached 1.6+, what [`Protocol::Auto`] picks there) where replies may be duplicated.
//! - A proxy that closes the connection on a command it lacks is told from a failing
//!   server as the blocking transport tells it: for `stats` and `flush_all`, by a `version`
//!   it answers ([`Error::Unsupported`] then); a server that restarted between the two reads
//!   the same way.
//!
//! [`TextTransport`]: crate::TextTransport

mod conn;
mod connect;
mod halves;
mod ops;
mod rounds;
mod spare;
mod steps;
#[cfg(feature = "tls")]
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use newcache_transport::{Error, Result};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cluster::{self, Cluster, Ticket};
use crate::command::{Cmd, NeedsMeta, Wire};
use crate::conn::{Endpoint, WIRE_CLASSIC, WIRE_META, WIRE_UNKNOWN};
use crate::multi_get::{encode_multi_get_into, gets_per_key};
use crate::proto::{self, Expect};
use crate::quiet::{encode_quiet_deletes, QuietRound};
use crate::{placement, server_specs, Protocol, TextConfig, MAX_ASYNC_CONNECTIONS};
use conn::{Abandoned, Awaiting, Direct, Failure, Handle, Job, JobReply, JobResult};
use smallvec::smallvec;
use steps::{AnswerList, Keys, OwnedCmd, Step, Steps};

/// memcached's text protocol on tokio, auto-pipelined: see the
/// [module documentation](crate::tokio_transport). Cheap to clone (the clones share connections).
///
/// ```no_run
/// # async fn demo() -> Result<(), newcache_transport::Error> {
/// use newcache_transport::{AsyncTransport, Store};
/// use newcache_transport_text::{TextConfig, TokioTextTransport};
///
/// let transport = TokioTextTransport::new(TextConfig {
///     servers: vec!["127.0.0.1:11211".into()],
///     ..TextConfig::default()
/// })?;
/// transport.store(&Store::set(b"greeting", b"hello", 16, 300)).await?;
/// let item = transport.get(b"greeting").await?;
/// assert_eq!(item.map(|i| i.value), Some(b"hello".to_vec()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokioTextTransport {
    inner: Arc<Inner>,
}

/// What the async transport's connections did so far ([`TokioTextTransport::io_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioIoStats {
    /// Connections opened.
    pub connections: u64,
    /// Write calls that carried requests (each may carry many).
    pub writes: u64,
    /// Requests written: one per single-key operation, one per server of a multi-key one
    /// (one per round of a server's part too large for one: 32 KB of keys to read, 512
    /// commands to store or delete).
    pub requests: u64,
    /// Of those, requests that found their connection idle after a lone caller's use and
    /// were written, and their replies read, by their caller's own task (the direct path;
    /// the others were queued).
    pub direct: u64,
}

struct Inner {
    servers: Vec<Server>,
    cluster: Cluster,
    config: TextConfig,
    /// Connections opened so far, which seeds each one's first opaque token.
    opened: AtomicU32,
    counters: Arc<conn::Counters>,
}

struct Server {
    label: String,
    endpoint: Endpoint,
    /// With TLS: how to speak it to this server.
    #[cfg(feature = "tls")]
    tls: Option<TlsTarget>,
    /// With [`Protocol::Auto`]: what the server's probe found (`WIRE_*`).
    wire: Arc<AtomicU8>,
    /// Its connections: the first [`TextConfig::async_connections`] carry the meta
    /// protocol's pipelined requests; in the classic protocol, one request at a time each,
    /// all of them are opened as needed ([`classic_slot`]).
    slots: Vec<Slot>,
    /// How many of `slots` the meta protocol uses.
    pipelined: usize,
    /// How many of `slots` the one-request-at-a-time pool uses (classic, TLS): at most
    /// `max_connections`.
    pool: usize,
    /// Its requests whose callers gave up on them: each such caller's next requests go on
    /// the connection that carries its abandoned one (`TokioTextTransport::handle_now`).
    abandoned: Arc<Abandoned>,
    next: AtomicUsize,
    /// Its own `-I`, asked before a store it might refuse and unlink the old item for
    /// ([`Store::needs_server_limit`](newcache_transport::Store::needs_server_limit)).
    item_size_max: newcache_transport::ItemSizeMax,
}

impl Server {
    /// Where to open a connection to it, and what it was found to speak.
    fn target(&self) -> connect::Target<'_> {
        connect::Target {
            label: &self.label,
            endpoint: &self.endpoint,
            wire: &self.wire,
            #[cfg(feature = "tls")]
            tls: self.tls.as_ref(),
        }
    }
}

/// A server's TLS settings: the client's, and the name its certificate must carry.
#[cfg(feature = "tls")]
struct TlsTarget {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

/// One of a server's connections.
struct Slot {
    current: Mutex<Option<Handle>>,
    /// Held while the connection is (re)opened, so concurrent callers wait for one connect;
    /// it holds the last attempt's failure, which the callers that waited for that attempt
    /// get too, rather than each trying again in turn (against a server that accepts and
    /// never answers, the 50th caller would fail after 50 read timeouts).
    opening: tokio::sync::Mutex<Option<Error>>,
    /// How many attempts to open failed.
    failed_opens: AtomicU64,
}

/// The bytes of a job and the replies it awaits.
struct Plan {
    bytes: Vec<u8>,
    steps: Steps,
}

/// Builds a job for a connection (its dialect and tokens); run again when the job must go
/// on another connection.
type Build<'a> = dyn Fn(&Handle) -> Result<Plan> + Send + Sync + 'a;

/// A job's answers, and the dialect they were had in.
struct Answers {
    wire: Wire,
    list: AnswerList,
}

/// A job queued, its answers to come.
struct Submitted {
    index: usize,
    /// What the server's record was when the job was let through, for the report.
    ticket: Ticket,
    wire: Wire,
    rx: oneshot::Receiver<JobResult>,
    deadline: Instant,
    /// Marks the connection abandoned if the caller leaves before the answer. Declared
    /// after `rx`, so dropped after it: the writer, which drops a job whose caller left
    /// under the lock it enters jobs by, sees the caller gone before the note is made.
    awaiting: Awaiting,
}

/// When a queued job's answer is due.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// [`TextConfig::read_timeout`] after it is queued, once its connection is open (an
    /// opening is bounded by its own budget, [`open_budget`]).
    Fresh,
    /// By this instant, a connection to open for it included: a job sent again keeps its
    /// first deadline (a new one made a call behind a hung server's take two read
    /// timeouts, and each opening of a connection for it one more connect).
    By(Instant),
}

impl fmt::Debug for TokioTextTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioTextTransport")
            .field("servers", &self.servers())
            .finish()
    }
}

impl TokioTextTransport {
    /// A transport over these servers, with the blocking transport's settings plus
    /// [`TextConfig::async_connections`] and [`TextConfig::async_queue`]. Connects to
    /// nothing until the first request. With [`TextConfig::tls`] (feature `tls`) every
    /// connection speaks TLS, set up as the blocking transport's are; without the feature
    /// such a config is refused ([`Error::Unsupported`]).
    pub fn new(config: TextConfig) -> Result<Self> {
        let config = config.bounded();
        let (specs, settings) = server_specs(&config)?;
        #[cfg(feature = "tls")]
        let tls = config
            .tls
            .as_ref()
            .map(|t| {
                crate::tls::client_config(t)
                    .map(|client| (t, client))
                    .map_err(|source| Error::Connect {
                        server: config.servers.join(","),
                        source,
                    })
            })
            .transpose()?;
        #[cfg(not(feature = "tls"))]
        if config.tls.is_some() {
            return Err(Error::Unsupported {
                server: "the tokio text transport".into(),
                command: "TLS (build newcache-transport-text with its `tls` feature)".into(),
            });
        }
        let connections = config.async_connections;
        // The classic protocol's requests are not pipelined, nor are any over TLS
        // ([`serial_over_tls`]): their connections are a pool of `max_connections` (0: no
        // limit), each a slot made now, so at most MAX_ASYNC_CONNECTIONS. Meta alone needs
        // only the pipelined ones.
        let classic = match (config.protocol, config.max_connections) {
            (Protocol::Meta, _) if config.tls.is_none() => connections,
            (_, 0) => MAX_ASYNC_CONNECTIONS,
            (_, n) => n.min(MAX_ASYNC_CONNECTIONS),
        };
        let servers = specs
            .iter()
            .map(|s| {
                let label = cluster::server_label(s);
                Ok(Server {
                    #[cfg(feature = "tls")]
                    tls: match &tls {
                        Some((t, client)) => Some(TlsTarget {
                            config: client.clone(),
                            name: crate::tls::server_name(t, s).map_err(|source| {
                                Error::Connect {
                                    server: label.clone(),
                                    source,
                                }
                            })?,
                        }),
                        None => None,
                    },
                    label,
                    endpoint: if s.port == 0 {
                        Endpoint::Unix(PathBuf::from(&s.host))
                    } else {
                        Endpoint::Tcp(s.address())
                    },
                    wire: Arc::new(AtomicU8::new(WIRE_UNKNOWN)),
                    slots: (0..connections.max(classic))
                        .map(|_| Slot {
                            current: Mutex::new(None),
                            opening: tokio::sync::Mutex::new(None),
                            failed_opens: AtomicU64::new(0),
                        })
                        .collect(),
                    pipelined: connections,
                    pool: classic,
                    abandoned: Arc::default(),
                    next: AtomicUsize::new(0),
                    item_size_max: Default::default(),
                })
            })
            .collect::<Result<Vec<Server>>>()?;
        let cluster = Cluster::new(specs, settings, config.failover);
        Ok(TokioTextTransport {
            inner: Arc::new(Inner {
                servers,
                cluster,
                config,
                opened: AtomicU32::new(0),
                counters: Arc::default(),
            }),
        })
    }

    /// The servers, as `host:port` (or a socket's path), in configuration order.
    pub fn servers(&self) -> Vec<String> {
        self.inner.cluster.labels().to_vec()
    }

    /// The placement this transport resolved from its behaviors and servers.
    pub fn placement(&self) -> &placement::Settings {
        self.inner.cluster.settings()
    }

    /// The index (into [`TokioTextTransport::servers`]) of the server that holds `key` now,
    /// as [`TextTransport::server_for_key`](crate::TextTransport::server_for_key).
    pub fn server_for_key(&self, key: &[u8]) -> Result<usize> {
        self.inner.cluster.place(key)
    }

    /// The protocol spoken to the server at `index`: [`Protocol::Meta`] or
    /// [`Protocol::Classic`], or `None` while a [`Protocol::Auto`] transport has not probed
    /// it yet (or there is no such server).
    pub fn server_protocol(&self, index: usize) -> Option<Protocol> {
        let server = self.inner.servers.get(index)?;
        match self.inner.config.protocol {
            Protocol::Auto => match server.wire.load(Ordering::Relaxed) {
                WIRE_META => Some(Protocol::Meta),
                WIRE_CLASSIC => Some(Protocol::Classic),
                _ => None,
            },
            forced => Some(forced),
        }
    }

    /// Connections opened, writes and requests written so far, over every server.
    pub fn io_stats(&self) -> TokioIoStats {
        let c = &self.inner.counters;
        TokioIoStats {
            connections: c.connections.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            requests: c.jobs.load(Ordering::Relaxed),
            direct: c.direct.load(Ordering::Relaxed),
        }
    }

    /// Lets go of every connection: requests queued or in flight on one finish there, then
    /// it closes; the next request opens a new one.
    fn close_connections(&self) {
        for server in &self.inner.servers {
            for slot in &server.slots {
                slot.current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
            }
        }
    }

    fn server(&self, index: usize) -> Result<&Server> {
        self.inner.servers.get(index).ok_or(Error::NoServers)
    }

    fn label(&self, index: usize) -> &str {
        self.inner.cluster.label(index)
    }

    /// The error of a request to server `index` not answered within the read timeout.
    fn timed_out(&self, index: usize) -> Error {
        Error::Timeout {
            server: self.label(index).to_string(),
            after: self.inner.config.read_timeout,
        }
    }

    /// An open connection to server `index`, opened when there is none, a failure to get
    /// one reported to the cluster (a server that cannot be connected to counts towards its
    /// ejection).
    async fn handle_reported(&self, index: usize, ticket: Ticket) -> Result<Handle> {
        self.handle_from(index, ticket, self.handle_now(index))
            .await
    }

    /// Server `index`'s next connection when it is open (`Ok(Ok)`), else the slot to open
    /// (`Ok(Err)`): a request on an open connection gets it with no future of its own.
    fn handle_now(&self, index: usize) -> Result<Result<Handle, &Slot>> {
        // A caller that gave up on a request still in flight goes behind it (`Abandoned`).
        if let Some(handle) = self.server(index)?.abandoned.route() {
            return Ok(Ok(handle));
        }
        let slot = self.slot(index)?;
        Ok(current(slot).ok_or(slot))
    }

    /// What [`Self::handle_now`] found, made a connection: the slot opened when it was not
    /// (unless another caller opened it meanwhile), a failure reported to the cluster.
    async fn handle_from(
        &self,
        index: usize,
        ticket: Ticket,
        now: Result<Result<Handle, &Slot>>,
    ) -> Result<Handle> {
        let handle = match now {
            Ok(Ok(handle)) => return Ok(handle),
            // Boxed: waiting for another caller's opening, or opening, is a future every
            // request's would otherwise carry, for the rare call that opens.
            Ok(Err(slot)) => Box::pin(self.open(index, slot)).await,
            Err(e) => Err(e),
        };
        if handle.is_err() {
            self.inner.cluster.report(index, ticket, &handle);
        }
        handle
    }

    /// The next of server `index`'s connection slots: in turn among the pipelined ones
    /// (meta), or an idle one of the pool ([`classic_slot`]: classic, or TLS).
    fn slot(&self, index: usize) -> Result<&Slot> {
        let server = self.server(index)?;
        let classic = match self.inner.config.protocol {
            Protocol::Classic => true,
            Protocol::Meta => false,
            Protocol::Auto => server.wire.load(Ordering::Relaxed) == WIRE_CLASSIC,
        };
        if classic || serial_over_tls(&self.inner.config) {
            return classic_slot(server).ok_or(Error::NoServers);
        }
        let n = server.pipelined.max(1);
        let at = server.next.fetch_add(1, Ordering::Relaxed) % n;
        server.slots.get(at).ok_or(Error::NoServers)
    }

    /// Opens `slot`'s connection to server `index`, unless another caller has meanwhile;
    /// a caller that waited while another's attempt failed fails with that attempt's error.
    ///
    /// Waiting and opening together end within [`open_budget`]: each step of an opening
    /// has its own timeout, but their sum (a connect, the probe, a second connect and a
    /// `version` behind twemproxy), after waiting for another caller's attempt, took a call
    /// at a 300 ms read timeout 2.06 s (an outside audit, twemproxy under load).
    async fn open(&self, index: usize, slot: &Slot) -> Result<Handle> {
        let server = self.server(index)?;
        let budget = open_budget(&self.inner.config);
        let until = Instant::now() + budget;
        let no_connection = || Error::Connect {
            server: server.label.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection within {budget:?} (the connect timeout and the read timeout)"
                ),
            ),
        };
        let failed_before = slot.failed_opens.load(Ordering::Acquire);
        let Ok(mut last_failure) = tokio::time::timeout_at(until, slot.opening.lock()).await else {
            return Err(no_connection());
        };
        if let Some(handle) = current(slot) {
            return Ok(handle);
        }
        if slot.failed_opens.load(Ordering::Acquire) != failed_before {
            if let Some(e) = last_failure.as_ref().and_then(again) {
                return Err(e);
            }
        }
        let opened = tokio::time::timeout_at(until, self.open_now(server, slot))
            .await
            .unwrap_or_else(|_| Err(no_connection()));
        match &opened {
            Ok(_) => *last_failure = None,
            Err(e) => {
                *last_failure = again(e);
                slot.failed_opens.fetch_add(1, Ordering::AcqRel);
            }
        }
        opened
    }

    /// Opens `slot`'s connection to `server` now (the caller holds the slot's `opening`).
    async fn open_now(&self, server: &Server, slot: &Slot) -> Result<Handle> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Unsupported {
            server: "the tokio text transport".into(),
            command: "use outside a tokio runtime".into(),
        })?;
        let config = &self.inner.config;
        // Each connection starts its tokens elsewhere, so a reply that strays from one
        // connection to another does not carry the token the other expects either.
        let seed = self
            .inner
            .opened
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9);
        let target = server.target();
        // Boxed: opening a connection (resolving, connecting, probing) is a large future
        // that every request's future would otherwise carry, for the rare call that opens.
        let (reader, writer, wire) = Box::pin(connect::open(config, &target, seed)).await?;
        let settings = conn::Settings {
            label: server.label.clone(),
            wire,
            serial: wire == Wire::Classic || serial_over_tls(config),
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            idle_timeout: config.idle_timeout,
            queue: config.async_queue,
            server_wire: server.wire.clone(),
            abandoned: server.abandoned.clone(),
            reprobe: config.protocol == Protocol::Auto,
            counters: self.inner.counters.clone(),
        };
        let handle = conn::start(&runtime, reader, writer, settings, seed.wrapping_add(1));
        *slot.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.clone());
        Ok(handle)
    }

    /// A job that did not go on the direct path: queued (on `first`'s connection first,
    /// when given), then awaited.
    async fn queued(
        &self,
        index: usize,
        build: &Build<'_>,
        first: Option<(Handle, Plan)>,
    ) -> Result<Answers> {
        let sub = self.submit_first(index, build, first, Due::Fresh).await?;
        self.wait(sub, build).await
    }

    /// Queues the job `build` makes on a connection to server `index` (failing fast when
    /// the server is marked down). A connection that closed before taking the job is
    /// replaced once.
    async fn submit(&self, index: usize, build: &Build<'_>) -> Result<Submitted> {
        self.submit_first(index, build, None, Due::Fresh).await
    }

    /// [`Self::submit`], its first attempt with a job already built for `first`'s
    /// connection, the job answered when `due` says.
    async fn submit_first(
        &self,
        index: usize,
        build: &Build<'_>,
        mut first: Option<(Handle, Plan)>,
        mut due: Due,
    ) -> Result<Submitted> {
        let cluster = &self.inner.cluster;
        let ticket = match cluster.check_up(index) {
            Ok(ticket) => ticket,
            Err(e) => return Err(failed_fast(e).await),
        };
        let mut unsent = None;
        for _ in 0..2 {
            let (handle, plan) = match first.take() {
                Some(built) => built,
                None => {
                    let handle = match due {
                        Due::Fresh => self.handle_reported(index, ticket).await?,
                        Due::By(deadline) => {
                            tokio::time::timeout_at(deadline, self.handle_reported(index, ticket))
                                .await
                                .map_err(|_| self.timed_out(index))??
                        }
                    };
                    let plan = build(&handle)?;
                    (handle, plan)
                }
            };
            let deadline = match due {
                Due::Fresh => Instant::now() + self.inner.config.read_timeout,
                Due::By(deadline) => deadline,
            };
            due = Due::By(deadline);
            let (tx, rx) = oneshot::channel();
            let job = Job {
                bytes: plan.bytes,
                steps: plan.steps,
                reply: JobReply::new(tx),
            };
            match tokio::time::timeout_at(deadline, handle.tx.send(job)).await {
                Ok(Ok(())) => {
                    return Ok(Submitted {
                        index,
                        ticket,
                        wire: handle.wire,
                        rx,
                        deadline,
                        awaiting: Awaiting::on(&handle),
                    })
                }
                // Closed before it took the job: nothing was sent. (Closed by a TLS
                // failure, that is what the caller learns if the next one closes too.)
                Ok(Err(_)) => {
                    unsent = handle.unsent_error().or(unsent);
                    continue;
                }
                // The queue stayed full (not a failure of the server).
                Err(_) => return Err(self.timed_out(index)),
            }
        }
        Err(unsent.unwrap_or_else(|| closed(self.label(index))))
    }

    /// The answers of a queued job, its outcome reported to the cluster. A job that was
    /// not sent (its connection closed first) is queued again on a new connection, up to
    /// [`RESENDS`] times, within its first deadline.
    async fn wait(&self, mut sub: Submitted, build: &Build<'_>) -> Result<Answers> {
        let mut resends = 0;
        loop {
            let awaited = tokio::time::timeout_at(sub.deadline, &mut sub.rx).await;
            if awaited.is_ok() {
                // Answered, failed with its connection, or not sent: nothing of it is left
                // in flight. (Timed out, or dropped while it waits, it marks the connection
                // abandoned.)
                sub.awaiting.answered();
            }
            let outcome = match awaited {
                Ok(Ok(Ok(list))) => Ok(Answers {
                    wire: sub.wire,
                    list,
                }),
                Ok(Ok(Err(Failure::Failed(e)))) => Err(e),
                Ok(Ok(Err(Failure::NotSent))) if resends < RESENDS => {
                    resends += 1;
                    sub = self
                        .submit_first(sub.index, build, None, Due::By(sub.deadline))
                        .await?;
                    continue;
                }
                Ok(Ok(Err(Failure::NotSent))) => Err(closed(self.label(sub.index))),
                // The connection's task went without answering (its runtime shut down): the
                // job may have been sent and run, so it is not sent again (an incr would
                // count twice).
                Ok(Err(_)) => Err(ended(self.label(sub.index))),
                Err(_) => Err(self.timed_out(sub.index)),
            };
            self.inner.cluster.report(sub.index, sub.ticket, &outcome);
            return outcome;
        }
    }

    /// One job on server `index`. When its connection is idle (nothing queued or in
    /// flight) the caller writes it and reads its reply itself ([`Handle::direct`]: no
    /// hand-off to the connection's task and back); else it is queued.
    async fn exchange(&self, index: usize, build: &Build<'_>) -> Result<Answers> {
        in_runtime()?;
        let cluster = &self.inner.cluster;
        let ticket = match cluster.check_up(index) {
            Ok(ticket) => ticket,
            Err(e) => return Err(failed_fast(e).await),
        };
        let handle = match self.handle_now(index) {
            Ok(Ok(handle)) => handle,
            now => Box::pin(self.handle_from(index, ticket, now)).await?,
        };
        let plan = build(&handle)?;
        let timeout = self.inner.config.read_timeout;
        let outcome = match handle.direct(plan.bytes, plan.steps, timeout).await {
            // Boxed, as opening is: the queued path's future is larger than the direct
            // path's, and a lone get's would otherwise carry it.
            Direct::Busy(bytes, steps) => {
                let first = Some((handle, Plan { bytes, steps }));
                return Box::pin(self.queued(index, build, first)).await;
            }
            Direct::Done(Err(Failure::NotSent)) => {
                return Box::pin(self.queued(index, build, None)).await;
            }
            Direct::Done(Ok(list)) => Ok(Answers {
                wire: handle.wire,
                list,
            }),
            Direct::Done(Err(Failure::Failed(e))) => Err(e),
            Direct::TimedOut => Err(self.timed_out(index)),
        };
        cluster.report(index, ticket, &outcome);
        outcome
    }

    /// One job per server, every one queued before any answer is awaited; each server's
    /// outcome, in the order of `groups`. Consecutive groups of one server are its part in
    /// rounds ([`rounds`]): one outcome for them all, their answers in order.
    async fn batch(&self, groups: &[(usize, Box<Build<'_>>)]) -> Vec<Result<Answers>> {
        if let [(index, build)] = groups {
            return vec![self.exchange(*index, build.as_ref()).await];
        }
        let parts: Vec<&[(usize, Box<Build<'_>>)]> =
            groups.chunk_by(|(a, _), (b, _)| a == b).collect();
        if in_runtime().is_err() {
            return parts.iter().map(|_| Err(Error::NoRuntime)).collect();
        }
        // Each server's job submitted and awaited at once: a server whose connection is
        // still to open (or whose probe hangs), or whose job must go again on a new
        // connection, does not hold up the others' (awaited one after another, the second
        // call after three servers hung took three read timeouts). Every job is submitted
        // at the first poll, before any answer is awaited.
        futures_util::future::join_all(parts.into_iter().map(|part| async move {
            match part {
                [(index, build)] => {
                    let sub = self.submit(*index, build.as_ref()).await?;
                    self.wait(sub, build.as_ref()).await
                }
                [(index, _), ..] => self.in_rounds(*index, part).await,
                [] => Err(closed("no server")),
            }
        }))
        .await
    }
}

/// [`Error::NoRuntime`] outside a tokio runtime: its timers and sockets would panic there
/// (an outside audit: "there is no reactor running" from a call awaited by another
/// executor).
fn in_runtime() -> Result<()> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| Error::NoRuntime)
}

/// Whether requests go one at a time on each connection because it speaks TLS. memcached
/// before 1.6.39 can leave a pipelined request unanswered over TLS: when OpenSSL has read
/// the next request's bytes along with the record it was asked for (a set's value, then
/// the next command in the same record), memcached waits for the socket to be readable
/// again, and it is not (memcached's own fix, "tls: fix potential hang when pipelining
/// sets", 1.6.39). An outside audit saw 5 requests in about 57 rounds of 64 pipelining
/// tasks wait out the whole read timeout (5 to 60 s) against memcached 1.6.18, and none
/// without TLS. A TLS record now also ends where a command ends and holds whole commands
/// only, or one large command alone (`tls_cuts`, both transports), which keeps the next
/// command out of a value's record, within a request too; requests
/// still go one at a time, as the blocking transport sends them, because memcached's fix
/// says it "may not be the only fix required" (a read that takes less than a record would
/// leave bytes in OpenSSL the same way) and pipelining with the cuts alone was not
/// measured. So TLS connections are a pool of up to `max_connections` per server, as the
/// classic protocol's are.
fn serial_over_tls(config: &TextConfig) -> bool {
    config.tls.is_some()
}

/// In the classic protocol a connection carries one request at a time (its replies have no
/// tags to match them by): the first open connection with nothing in flight, else the first
/// not open (opened for this request, as a pool grows), else one in turn (the request
/// waits for it). A lone caller thus keeps to one connection, and concurrent callers open
/// up to [`TextConfig::max_connections`].
fn classic_slot(server: &Server) -> Option<&Slot> {
    // The pool's own slots only: with `async_connections` over `max_connections` the
    // others are the pipelined ones, and a pool that used them went past its bound (an
    // outside review: 6 connections at `max_connections=2`).
    let pool = server
        .slots
        .get(..server.pool.min(server.slots.len()))
        .unwrap_or_default();
    let mut unopened = None;
    for slot in pool {
        match current(slot) {
            Some(handle) if handle.is_idle() => return Some(slot),
            Some(_) => {}
            None => {
                unopened.get_or_insert(slot);
            }
        }
    }
    unopened.or_else(|| {
        let n = pool.len().max(1);
        pool.get(server.next.fetch_add(1, Ordering::Relaxed) % n)
    })
}

/// A request that fails without touching a socket (its server is left alone): the task
/// gives the runtime its turn once its budget is spent, as I/O would make it, so a task
/// calling a down server in a loop does not hold its thread (an outside audit: the other
/// tasks of a runtime stalled for the whole 2 s retry window).
async fn failed_fast(e: Error) -> Error {
    tokio::task::consume_budget().await;
    e
}

/// The longest a caller waits for a connection to be opened, by itself or another caller:
/// a connect, then a round trip (the protocol probe's, on a server's first connection).
fn open_budget(config: &TextConfig) -> std::time::Duration {
    config.connect_timeout.saturating_add(config.read_timeout)
}

/// How many times a job that its connection closed before writing goes again on a new
/// connection. Once was too few where connections break often and requests queue behind
/// each other (the classic protocol's one request per connection): with 4 connections, 64
/// tasks and 2% of replies cut short, about 2.6 requests per cut reply failed unsent; a
/// bound keeps a server that closes every connection from being reconnected without end.
const RESENDS: u32 = 4;

/// `slot`'s connection, when it is open.
fn current(slot: &Slot) -> Option<Handle> {
    slot.current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|h| h.is_open())
        .cloned()
}

/// The same error again, for the callers that waited on the attempt that failed with it;
/// `None` for errors an attempt to open does not end with.
fn again(e: &Error) -> Option<Error> {
    matches!(
        e,
        Error::Connect { .. }
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Protocol { .. }
            | Error::Server { .. }
            | Error::Unsupported { .. }
    )
    .then(|| e.for_another_key())
}

/// The error of a queued job whose connection's task ended without answering it.
fn ended(label: &str) -> Error {
    Error::Io {
        server: label.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::ConnectionAborted, conn::TASK_ENDED),
    }
}

/// The error of a request whose connection closed before it could be sent, twice.
fn closed(label: &str) -> Error {
    Error::Io {
        server: label.to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed before the request could be sent",
        ),
    }
}

/// A job of keyed commands, each tagged with the next of the connection's tokens.
fn plan_cmds<'c>(
    label: &str,
    handle: &Handle,
    cmds: impl ExactSizeIterator<Item = Cmd<'c>>,
) -> Result<Plan> {
    let mut opaque = handle.reserve(cmds.len());
    let mut bytes = spare::take();
    let mut steps = Steps::with_capacity(cmds.len());
    for cmd in cmds {
        bytes.reserve(cmd.cost());
        cmd.encode(&mut bytes, handle.wire, opaque)
            .map_err(|NeedsMeta(what)| Error::Unsupported {
                server: label.to_string(),
                command: what.into(),
            })?;
        steps.push(Step::Cmd {
            cmd: OwnedCmd::of(&cmd),
            opaque,
        });
        opaque = opaque.wrapping_add(1);
    }
    Ok(Plan { bytes, steps })
}

/// A multi-get as the blocking transport sends it: one `mg` per key in meta for a few
/// keys, else one `gets` (closed in meta by a tagged `mg`).
fn plan_gets(label: &str, handle: &Handle, keys: &[&[u8]]) -> Result<Plan> {
    if gets_per_key(handle.wire, keys.len()) {
        return plan_cmds(label, handle, keys.iter().map(|&k| Cmd::Get(k)));
    }
    let mut bytes = Vec::with_capacity(keys.iter().map(|k| k.len() + 1).sum::<usize>() + 64);
    let closer = encode_multi_get_into(&mut bytes, handle.wire, keys.iter().copied(), || {
        handle.reserve(1)
    });
    let mut steps = smallvec![Step::Gets {
        keys: Keys::new(keys),
    }];
    if let Some((opaque, key)) = closer {
        steps.push(Step::Closer {
            key: key.to_vec(),
            opaque,
        });
    }
    Ok(Plan { bytes, steps })
}

/// Deletes of `keys` with no reply per key but the round's last, as the blocking
/// transport sends them ([`encode_quiet_deletes`]).
fn plan_quiet_deletes(handle: &Handle, keys: &[&[u8]]) -> Plan {
    let first = handle.reserve(keys.len());
    let mut opaque = first;
    let mut bytes = Vec::with_capacity(keys.iter().map(|k| k.len() + 24).sum::<usize>() + 16);
    encode_quiet_deletes(
        &mut bytes,
        handle.wire,
        keys.iter().copied(),
        keys.len(),
        || {
            let token = opaque;
            opaque = opaque.wrapping_add(1);
            token
        },
    );
    Plan {
        bytes,
        steps: smallvec![Step::Quiet {
            round: QuietRound::new(handle.wire, first, keys.len()),
            keys: Keys::new(keys),
        }],
    }
}

/// A one-line command (`flush_all`, `stats`).
fn plan_line(line: &str, expect: Expect) -> Plan {
    let mut bytes = Vec::new();
    proto::encode_line(&mut bytes, line);
    Plan {
        bytes,
        steps: smallvec![Step::Line(expect)],
    }
}
