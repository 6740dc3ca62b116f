//! What the cache tells an operator: counters and histograms through the `metrics` crate's
//! facade (feature `metrics`: any exporter, Prometheus or StatsD, reads them), and a span
//! per operation with events through `tracing` (feature `tracing`). Labelled by cache name
//! (`name=` in the URL, default `default`) and operation, never by key.
//!
//! With both features off every function here is empty and inlined away: the hot path is
//! what it was. With them on, the recording runs on the caller's thread, a fixed cost per
//! call: `cargo bench -p newcache --features metrics,tracing --bench observe` (run by
//! `cargo xtask bench`, its figures in docs/benchmarks.md, *Metrics and tracing*) measured
//! 0.39 to 1.35 µs more CPU per 100-byte get hit with a Prometheus recorder and a subscriber
//! at INFO, and 1.26 to 3.91 µs with every span recorded at DEBUG (four runs, 2026-12-05);
//! as a ratio that is 1.029x to 1.062x and 1.093x to 1.179x of gets of 13.6 to 25.6 µs, and
//! 1.007x to 1.06x of the 50 to 90 µs gets of earlier hosts.
//! newcache allocates nothing to record: each cache's metric keys are built once. The
//! recorder may: `metrics-exporter-prometheus` looks each key up per recording, about one
//! allocation per counter or histogram touched (an outside audit: a get hit went from 1.00
//! allocation to 4.02 with it).
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `newcache_operations_total` | counter | cache, op, outcome (`ok`, `error`, `cancelled`: an async call whose future was dropped first, `panicked`: a `get_or_set` whose loader panicked) | calls |
//! | `newcache_operation_duration_seconds` | histogram | cache, op | call latency |
//! | `newcache_hits_total` / `newcache_misses_total` | counter | cache, op | keys found or not (a reader that wins a refresh counts as a miss) |
//! | `newcache_stale_served_total` | counter | cache, op | a value past its soft expiry served while another reader refreshes it, as the reader can tell: under `herd=meta` every such read (the server says so), under `lease` and `early` a reader that lost the race to claim it (readers after a claim read the claim's new soft expiry and count as hits) |
//! | `newcache_herd_claims_total` | counter | cache, op, result (`won`, `lost`) | refreshes claimed by this reader, or taken by another first |
//! | `newcache_loader_runs_total` / `newcache_loader_errors_total` | counter | cache | `get_or_set` loader runs, and those that failed (an error, a panic, or its call dropped before it finished: a timeout around an async `get_or_set`) |
//! | `newcache_loader_duration_seconds` | histogram | cache | how long loaders ran |
//! | `newcache_lease_waits_total` | counter | cache | `get_or_set` callers that waited for another's load |
//! | `newcache_lease_wait_duration_seconds` | histogram | cache | how long they waited |
//! | `newcache_errors_total` | counter | cache, op, kind, server | failed calls, by [`Error::kind`] and server (a `get_or_set` whose loader failed: `loader`); and each key a `get_many` could not read (`GetMany::failed`: a value that did not decode, a server that failed while the others answered), and each key a `set_many` or `delete_many` could not write ([`Error::PartlyStored`], [`Error::PartlyDeleted`]), each by its own failure's kind and server |
//! | `newcache_meta_fallbacks_total` | counter | cache | `herd=meta` switched to `lease` (the servers refused meta commands) |

use std::future::Future;
use std::time::Duration;

use crate::Error;

/// True when anything is observed (feature `metrics` or `tracing`): what only the
/// observations need is not computed otherwise.
pub(crate) const ENABLED: bool = cfg!(any(feature = "metrics", feature = "tracing"));

/// Where a cache reports to: its name (and, with `metrics`, the keys of its metrics).
#[derive(Debug)]
pub(crate) struct Observer {
    #[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
    name: std::sync::Arc<str>,
    #[cfg(feature = "metrics")]
    keys: keys::Keys,
}

/// Something that happened inside an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Hit,
    Miss,
    StaleServed,
    ClaimWon,
    ClaimLost,
}

impl Observer {
    pub(crate) fn new(name: &str) -> Observer {
        Observer {
            name: name.into(),
            #[cfg(feature = "metrics")]
            keys: keys::Keys::new(name),
        }
    }

    /// Counts `n` of `event` in `op`.
    #[inline]
    pub(crate) fn event(&self, op: &'static str, event: Event, n: u64) {
        #[cfg(feature = "metrics")]
        if n > 0 {
            let keys = self.keys.op(op);
            let key = match event {
                Event::Hit => &keys.hits,
                Event::Miss => &keys.misses,
                Event::StaleServed => &keys.stale,
                Event::ClaimWon => &keys.won,
                Event::ClaimLost => &keys.lost,
            };
            keys::count(key, n);
        }
        #[cfg(feature = "tracing")]
        if n > 0 {
            tracing::trace!(cache = %self.name, op, event = ?event, n, "newcache event");
        }
        let _ = (op, event, n);
    }

    /// A `get_or_set` loader ran for `took`, and failed or not.
    #[inline]
    pub(crate) fn loader(&self, took: Duration, failed: bool) {
        #[cfg(feature = "metrics")]
        {
            let keys = self.keys.cache();
            keys::count(&keys.loader_runs, 1);
            if failed {
                keys::count(&keys.loader_errors, 1);
            }
            keys::record(&keys.loader_duration, took);
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(cache = %self.name, took_ms = took.as_millis() as u64, failed, "newcache loader ran");
        let _ = (took, failed);
    }

    /// A `get_or_set` caller waited `took` for another's load (in this process or another).
    #[inline]
    pub(crate) fn lease_wait(&self, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            let keys = self.keys.cache();
            keys::count(&keys.lease_waits, 1);
            keys::record(&keys.lease_wait_duration, took);
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(cache = %self.name, took_ms = took.as_millis() as u64, "newcache waited for another loader");
        let _ = took;
    }

    /// `herd=meta` switched to `lease` for good: the servers refused a meta command.
    #[inline]
    pub(crate) fn meta_fallback(&self) {
        #[cfg(feature = "metrics")]
        keys::count(&self.keys.cache().meta_fallbacks, 1);
        #[cfg(feature = "tracing")]
        tracing::warn!(cache = %self.name, "the servers refused a meta command: herd=meta runs as herd=lease from now on");
    }

    /// Runs one operation: its latency, outcome and error (by kind and server) are recorded,
    /// inside a span `newcache` with the cache, the operation and, once known, the outcome
    /// and the failing server. Without either feature it is the operation itself. Not an
    /// `async fn` either way: one would hold the operation's future twice (the argument,
    /// and the future awaited), and every call's future with it (`AsyncCache::get`'s was
    /// 2024 bytes that way without the features, 1176 this way).
    #[inline]
    pub(crate) fn op<'a, R: 'a, E: Observed + 'a>(
        &'a self,
        op: &'static str,
        operation: impl Future<Output = Result<R, E>> + 'a,
    ) -> impl Future<Output = Result<R, E>> + 'a {
        #[cfg(any(feature = "metrics", feature = "tracing"))]
        {
            Observing {
                operation,
                observer: self,
                op,
                started: None,
                done: false,
                polling: false,
            }
        }
        #[cfg(not(any(feature = "metrics", feature = "tracing")))]
        {
            let _ = op;
            operation
        }
    }

    /// A key of a `get_many` whose value could not be read (it did not decode, or its server
    /// failed while the others answered), or a server `stats` could not ask, while the call
    /// itself succeeded: counted in
    /// `newcache_errors_total` as a failed call is, by its error's kind and server, so that
    /// a server down shows in the errors of a service that reads through `get_many`.
    pub(crate) fn failed_key<E: Observed + ?Sized>(&self, op: &'static str, error: &E) {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            cache = %self.name,
            op,
            kind = error.kind(),
            server = error.server().unwrap_or(""),
            "newcache key not read"
        );
        #[cfg(feature = "metrics")]
        self.count_error(op, error);
        let _ = (op, error);
    }

    /// One more `newcache_errors_total`, labelled by `error`'s kind and server: built per
    /// error, as only failing paths pay for it.
    /// A `set_many` or `delete_many` that failed in part counts each key it could not
    /// write, by its own failure's kind and server, as a `get_many` counts each key it could
    /// not read: it counted once, by its first failure's server, so a second server down
    /// never showed (an outside audit).
    #[cfg(feature = "metrics")]
    fn count_error<E: Observed + ?Sized>(&self, op: &'static str, error: &E) {
        error.each_failure(&mut |kind, server| {
            let cache = metrics::SharedString::from(std::sync::Arc::clone(&self.name));
            metrics::counter!(
                "newcache_errors_total",
                "cache" => cache,
                "op" => op,
                "kind" => kind,
                "server" => server.unwrap_or("").to_owned()
            )
            .increment(1);
        });
    }

    /// The span of one operation.
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    fn span(&self, op: &'static str) -> OpSpan {
        #[cfg(feature = "tracing")]
        {
            tracing::debug_span!(
                "newcache",
                cache = %self.name,
                op,
                outcome = tracing::field::Empty,
                server = tracing::field::Empty,
            )
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = op;
        }
    }

    /// Records a finished operation: its outcome and failing server in its span, its count,
    /// latency and error in the metrics.
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    fn finish<R, E: Observed>(
        &self,
        op: &'static str,
        span: &OpSpan,
        result: &Result<R, E>,
        took: Duration,
    ) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        #[cfg(feature = "tracing")]
        {
            span.record("outcome", outcome);
            if let Err(e) = result {
                if let Some(server) = e.server() {
                    span.record("server", server);
                }
                span.in_scope(|| tracing::debug!(kind = e.kind(), "newcache operation failed"));
            }
        }
        #[cfg(feature = "metrics")]
        {
            let keys = self.keys.op(op);
            keys::count(
                if result.is_ok() {
                    &keys.ok
                } else {
                    &keys.error
                },
                1,
            );
            keys::record(&keys.duration, took);
            if let Err(e) = result {
                self.count_error(op, e);
            }
        }
        let _ = (op, span, took, outcome);
    }
}

impl Observer {
    /// Records an operation whose future was dropped before it completed (a
    /// `tokio::time::timeout` around it, a client that hung up): counted with outcome
    /// `cancelled`, with its latency so far; invisible before, so a service whose calls all
    /// hit its own deadline showed no errors (an outside audit).
    /// A panic inside the operation (a `get_or_set` loader's) ends it the same way, with
    /// outcome `panicked` (it was counted as `cancelled`: an outside audit).
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    fn cancelled(&self, op: &'static str, span: &OpSpan, took: Duration, outcome: &'static str) {
        #[cfg(feature = "tracing")]
        {
            span.record("outcome", outcome);
            span.in_scope(|| {
                tracing::debug!(outcome, "newcache operation ended before completing")
            });
        }
        #[cfg(feature = "metrics")]
        {
            let keys = self.keys.op(op);
            keys::count(
                if outcome == "panicked" {
                    &keys.panicked
                } else {
                    &keys.cancelled
                },
                1,
            );
            keys::record(&keys.duration, took);
        }
        let _ = (op, span, took, outcome);
    }
}

/// The span an operation runs in (`()` without `tracing`).
#[cfg(feature = "tracing")]
type OpSpan = tracing::Span;
#[cfg(all(feature = "metrics", not(feature = "tracing")))]
type OpSpan = ();

#[cfg(any(feature = "metrics", feature = "tracing"))]
pin_project_lite::pin_project! {
    /// An operation observed ([`Observer::op`]): the operation's own future, polled inside
    /// its span, recorded when it completes.
    struct Observing<'a, F> {
        #[pin]
        operation: F,
        observer: &'a Observer,
        op: &'static str,
        // From the first poll: when the operation started, and its span.
        started: Option<(std::time::Instant, OpSpan)>,
        // Recorded (it completed): a future dropped before is recorded as cancelled.
        done: bool,
        // Inside its own poll: a panic then is the operation's (a `get_or_set` loader's).
        polling: bool,
    }
    impl<F> PinnedDrop for Observing<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some((started, span)), false) = (this.started.as_ref(), *this.done) {
                // Dropped by a panic inside it (a `get_or_set` loader's), not by its caller,
                // nor by a panic of the caller's own (another branch of a `join!`: that was
                // counted as `panicked` too, an outside audit).
                let outcome = if *this.polling && std::thread::panicking() {
                    "panicked"
                } else {
                    "cancelled"
                };
                this.observer.cancelled(this.op, span, started.elapsed(), outcome);
            }
        }
    }
}

#[cfg(any(feature = "metrics", feature = "tracing"))]
impl<R, E: Observed, F: Future<Output = Result<R, E>>> Future for Observing<'_, F> {
    type Output = Result<R, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let (observer, op) = (*this.observer, *this.op);
        let (started, span) = &*this
            .started
            .get_or_insert_with(|| (std::time::Instant::now(), observer.span(op)));
        #[cfg(feature = "tracing")]
        let entered = span.enter();
        *this.polling = true;
        let polled = this.operation.poll(cx);
        *this.polling = false;
        #[cfg(feature = "tracing")]
        drop(entered);
        let std::task::Poll::Ready(result) = polled else {
            return std::task::Poll::Pending;
        };
        observer.finish(op, span, &result, started.elapsed());
        *this.done = true;
        std::task::Poll::Ready(result)
    }
}

/// An operation's error as observations label it.
#[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
pub(crate) trait Observed {
    /// [`Error::kind`].
    fn kind(&self) -> &'static str;
    /// [`Error::server`].
    fn server(&self) -> Option<&str>;
    /// Each failure the error stands for, by kind and server: itself, or each key of a
    /// call that failed in part.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn each_failure(&self, counted: &mut dyn FnMut(&'static str, Option<&str>)) {
        counted(self.kind(), self.server());
    }
}

impl Observed for Error {
    fn kind(&self) -> &'static str {
        Error::kind(self)
    }

    fn server(&self) -> Option<&str> {
        Error::server(self)
    }

    fn each_failure(&self, counted: &mut dyn FnMut(&'static str, Option<&str>)) {
        match self {
            Error::PartlyStored { failed, .. } | Error::PartlyDeleted { failed, .. }
                if !failed.is_empty() =>
            {
                for (_, e) in failed {
                    counted(e.kind(), e.server());
                }
            }
            _ => counted(self.kind(), self.server()),
        }
    }
}

impl Observed for newcache_transport::Error {
    fn kind(&self) -> &'static str {
        newcache_transport::Error::kind(self)
    }

    fn server(&self) -> Option<&str> {
        newcache_transport::Error::server(self)
    }
}

impl Error {
    /// A short, stable name of the error's kind, for metrics and logs: `invalid_key`,
    /// `not_found`, `not_numeric`, `cas_conflict`, `load_failed`, `reentrant`, `not_appendable`, `encode`,
    /// `decode`, `ttl_too_long`, `config`, or the
    /// transport's (for a [`Error::PartlyStored`] or [`Error::PartlyDeleted`], its first failure's: `connect`, `timeout`, `io`, `protocol`, `server`, `client`,
    /// `unsupported`, `server_down`, `value_too_large`, `auth`, `backend`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidKey(_) => "invalid_key",
            Error::NotFound { .. } => "not_found",
            Error::NotNumeric { .. } => "not_numeric",
            Error::CasConflict { .. } => "cas_conflict",
            Error::LoadFailed { .. } => "load_failed",
            Error::Reentrant { .. } => "reentrant",
            Error::NotAppendable { .. } => "not_appendable",
            Error::Encode { .. } => "encode",
            Error::Decode { .. } => "decode",
            Error::TtlTooLong(_) => "ttl_too_long",
            Error::Transport(e) => e.kind(),
            Error::PartlyStored { failed, .. } => {
                failed.first().map_or("partly_stored", |(_, e)| e.kind())
            }
            Error::PartlyDeleted { failed, .. } => {
                failed.first().map_or("partly_deleted", |(_, e)| e.kind())
            }
            Error::Config(_) => "config",
        }
    }

    /// The server the error came from, when it names one (a [`Error::PartlyStored`] or
    /// [`Error::PartlyDeleted`]: the first failed server).
    pub fn server(&self) -> Option<&str> {
        match self {
            Error::Transport(e) => e.server(),
            Error::PartlyStored { failed, .. } | Error::PartlyDeleted { failed, .. } => {
                failed.first().and_then(|(_, e)| e.server())
            }
            _ => None,
        }
    }
}

/// The keys of a cache's metrics, built once per cache name and operation for the process
/// (interned, never freed: their number is bounded by the names and operations there are),
/// so that newcache allocates nothing to record one (a recorder may, in its lookup).
#[cfg(feature = "metrics")]
mod keys {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError, RwLock};
    use std::time::Duration;

    use metrics::{Key, Label, Level, Metadata};

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// Adds `n` to the counter `key` in whatever recorder is in effect.
    pub(super) fn count(key: &Key, n: u64) {
        metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(n));
    }

    /// Records `took` in the histogram `key`, in seconds.
    pub(super) fn record(key: &Key, took: Duration) {
        metrics::with_recorder(|r| {
            r.register_histogram(key, &METADATA)
                .record(took.as_secs_f64())
        });
    }

    /// One operation's metrics.
    #[derive(Debug)]
    pub(super) struct OpKeys {
        pub(super) hits: Key,
        pub(super) misses: Key,
        pub(super) stale: Key,
        pub(super) won: Key,
        pub(super) lost: Key,
        pub(super) ok: Key,
        pub(super) error: Key,
        pub(super) cancelled: Key,
        pub(super) panicked: Key,
        pub(super) duration: Key,
    }

    /// A cache's metrics that are not per operation.
    #[derive(Debug)]
    pub(super) struct CacheKeys {
        pub(super) loader_runs: Key,
        pub(super) loader_errors: Key,
        pub(super) loader_duration: Key,
        pub(super) lease_waits: Key,
        pub(super) lease_wait_duration: Key,
        pub(super) meta_fallbacks: Key,
    }

    fn labels(pairs: &[(&'static str, &str)]) -> &'static [Label] {
        let labels: Vec<Label> = pairs
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect();
        Box::leak(labels.into_boxed_slice())
    }

    type OpTable = Mutex<HashMap<(String, &'static str), &'static OpKeys>>;
    type CacheTable = Mutex<HashMap<String, &'static CacheKeys>>;

    fn op_keys(name: &str, op: &'static str) -> &'static OpKeys {
        static TABLE: OnceLock<OpTable> = OnceLock::new();
        let mut table = TABLE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.entry((name.to_owned(), op)).or_insert_with(|| {
            let by_op = labels(&[("cache", name), ("op", op)]);
            let with =
                |k: &'static str, v: &'static str| labels(&[("cache", name), ("op", op), (k, v)]);
            Box::leak(Box::new(OpKeys {
                hits: Key::from_static_parts("newcache_hits_total", by_op),
                misses: Key::from_static_parts("newcache_misses_total", by_op),
                stale: Key::from_static_parts("newcache_stale_served_total", by_op),
                won: Key::from_static_parts("newcache_herd_claims_total", with("result", "won")),
                lost: Key::from_static_parts("newcache_herd_claims_total", with("result", "lost")),
                ok: Key::from_static_parts("newcache_operations_total", with("outcome", "ok")),
                error: Key::from_static_parts(
                    "newcache_operations_total",
                    with("outcome", "error"),
                ),
                cancelled: Key::from_static_parts(
                    "newcache_operations_total",
                    with("outcome", "cancelled"),
                ),
                panicked: Key::from_static_parts(
                    "newcache_operations_total",
                    with("outcome", "panicked"),
                ),
                duration: Key::from_static_parts("newcache_operation_duration_seconds", by_op),
            }))
        })
    }

    fn cache_keys(name: &str) -> &'static CacheKeys {
        static TABLE: OnceLock<CacheTable> = OnceLock::new();
        let mut table = TABLE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.entry(name.to_owned()).or_insert_with(|| {
            let by_cache = labels(&[("cache", name)]);
            Box::leak(Box::new(CacheKeys {
                loader_runs: Key::from_static_parts("newcache_loader_runs_total", by_cache),
                loader_errors: Key::from_static_parts("newcache_loader_errors_total", by_cache),
                loader_duration: Key::from_static_parts(
                    "newcache_loader_duration_seconds",
                    by_cache,
                ),
                lease_waits: Key::from_static_parts("newcache_lease_waits_total", by_cache),
                lease_wait_duration: Key::from_static_parts(
                    "newcache_lease_wait_duration_seconds",
                    by_cache,
                ),
                meta_fallbacks: Key::from_static_parts("newcache_meta_fallbacks_total", by_cache),
            }))
        })
    }

    /// One cache's keys: its own, and each operation's once it has run.
    #[derive(Debug)]
    pub(super) struct Keys {
        name: String,
        cache: &'static CacheKeys,
        ops: RwLock<Vec<(&'static str, &'static OpKeys)>>,
    }

    impl Keys {
        pub(super) fn new(name: &str) -> Keys {
            Keys {
                name: name.to_owned(),
                cache: cache_keys(name),
                ops: RwLock::new(Vec::new()),
            }
        }

        pub(super) fn cache(&self) -> &'static CacheKeys {
            self.cache
        }

        pub(super) fn op(&self, op: &'static str) -> &'static OpKeys {
            let known = self
                .ops
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|(o, _)| *o == op)
                .map(|(_, k)| *k);
            if let Some(keys) = known {
                return keys;
            }
            let keys = op_keys(&self.name, op);
            self.ops
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push((op, keys));
            keys
        }
    }
}
