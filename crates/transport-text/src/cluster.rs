//! A cluster's state: where keys go ([`newcache_placement`]'s ring) and which servers are
//! down (failover). No I/O: the transport reports each exchange's outcome here.
//!
//! The model is libmemcached's, as pylibmc users tune it, with one change when
//! `remove_failed` is off: a server is left alone only after `failure_limit` failures in a
//! row, not after one (so one slow reply does not fail every request for `retry_timeout`).
//! A cluster of one server never refuses to try it (there is nowhere else to go):
//! - a connection-level failure (connect refused or timed out, a read or write timeout, an
//!   I/O error) counts against the server, once for all the requests in flight together
//!   ([`Ticket`]); at `failure_limit` failures in a row it is left
//!   alone for `retry_timeout`: requests for its keys fail at once with
//!   [`Error::ServerDown`] instead of waiting for a connect timeout each; after the wait, one
//!   more failure leaves it alone again, one success clears its record;
//! - with `remove_failed` on, failures are counted as libmemcached counts them, because an
//!   ejection moves keys and must come when a pylibmc client's does: only failed connects
//!   (refused, timed out) count, as a hung server, which still accepts connections, is
//!   never ejected by libmemcached (a timeout or I/O error leaves it alone for
//!   `retry_timeout`, its keys failing fast where they are); each failure leaves
//!   the server alone for `retry_timeout` (ending on the wall clock's second, as
//!   libmemcached's whole-second retry times do), and the `failure_limit`-th in a row ejects
//!   it: consistent distributions (ketama) rebuild the ring without it, so its keys go where
//!   libmemcached sends them, to the next server on the ring; modula keeps it (its keys fail
//!   fast). The ejection lasts `dead_timeout`; once it is over, the next request for the
//!   server tries it again: one success clears its record (and puts it back on the ring),
//!   one more failure ejects it again;
//! - with `dead_timeout` 0 (libmemcached's default) an ejected server is never tried again,
//!   as in libmemcached 1.1.4 (`backoff_handling` in its `connect.cc` leaves the failure
//!   counter at the limit and answers every later connect with `SERVER_MARKED_DEAD`): it
//!   stays off a consistent ring until its last `retry_timeout` runs out, then is back on
//!   the ring with its keys failing fast, for the life of the transport.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use newcache_placement::{Ring, Server, Settings};
use newcache_transport::{Error, FailureTicket, FailureTickets, Result};

/// What happens when a server fails, under libmemcached's behavior names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// `retry_timeout`: after a failure, how long the server is left alone (requests for
    /// its keys fail fast). Zero: retried on every request. Default 2 s (libmemcached's).
    pub retry_timeout: Duration,
    /// `failure_limit` (`server_failure_limit`): failures in a row before the server is
    /// left alone for `retry_timeout`, or, with `remove_failed`, ejected (each failure then
    /// leaves it alone for `retry_timeout`, as in libmemcached). Default 5 (libmemcached's);
    /// at least 1.
    pub failure_limit: u32,
    /// `remove_failed` (or the older `auto_eject`): eject a server after `failure_limit`
    /// failures; consistent distributions then place its keys on the others. Default off.
    pub remove_failed: bool,
    /// `dead_timeout`: how long an ejected server stays out before it is tried again.
    /// Zero (the default, libmemcached's): never again. Its keys then go to the other
    /// servers of a consistent ring until its last `retry_timeout` runs out, and after that
    /// back to it, failing fast with [`Error::ServerDown`] (`retry_in` [`Duration::MAX`])
    /// until the transport is rebuilt, exactly as libmemcached 1.1.4 does.
    pub dead_timeout: Duration,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            retry_timeout: Duration::from_secs(2),
            failure_limit: 5,
            remove_failed: false,
            dead_timeout: Duration::ZERO,
        }
    }
}

/// One server's failure record. Times are milliseconds since the cluster's epoch; 0 = up.
#[derive(Debug, Default)]
struct Health {
    /// What a request let through saw ([`Ticket`]), so that of the requests in flight
    /// together only the first to fail counts.
    counted: FailureTickets,
    failures: AtomicU32,
    down_until: AtomicU64,
    ejected: AtomicBool,
    /// Ejected with `dead_timeout` 0: never tried again.
    dead: AtomicBool,
}

#[derive(Debug)]
struct RingState {
    ring: Ring,
    /// When an ejected server's wait ends and the ring must take it back (ms since epoch).
    next_rebuild: Option<u64>,
}

/// What a request saw of its server's record when it was let through
/// ([`Cluster::check_up`]), handed back with its outcome ([`Cluster::report`]): a failure
/// counts only when no other was counted since ([`FailureTickets`]).
pub(crate) type Ticket = FailureTicket;

/// Placement plus failover for one transport.
#[derive(Debug)]
pub(crate) struct Cluster {
    servers: Vec<Server>,
    labels: Vec<String>,
    settings: Settings,
    failover: Failover,
    health: Vec<Health>,
    ring: RwLock<RingState>,
    epoch: Instant,
}

/// How a server is named in errors and [`crate::TextTransport::servers`]: `host:port`, or
/// the path of a unix-domain socket (port 0, as libmemcached gives one).
pub(crate) fn server_label(server: &Server) -> String {
    if server.port == 0 {
        server.host.clone()
    } else {
        server.address()
    }
}

impl Cluster {
    pub(crate) fn new(servers: Vec<Server>, settings: Settings, failover: Failover) -> Cluster {
        let ring = Ring::new(&servers, &settings);
        Cluster {
            labels: servers.iter().map(server_label).collect(),
            health: servers.iter().map(|_| Health::default()).collect(),
            servers,
            settings,
            failover,
            ring: RwLock::new(RingState {
                ring,
                next_rebuild: None,
            }),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn label(&self, index: usize) -> &str {
        self.labels.get(index).map_or("", String::as_str)
    }

    pub(crate) fn labels(&self) -> &[String] {
        &self.labels
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    fn now_ms(&self) -> u64 {
        // +1 keeps 0 free to mean "up".
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// When a wait of `wait` from now ends (ms since the epoch), as libmemcached ends it:
    /// it keeps retry times in whole seconds of the wall clock (`next_retry = now + wait`,
    /// tried again once the clock's second is past it), so a wait of whole seconds ends at
    /// just past the start of a wall-clock second, `wait` to `wait` + 1 s from now, the
    /// moment a pylibmc client that saw the failure in the same second ends it. A wait with a
    /// fraction of a second (only a Rust caller can give one) is kept exactly.
    fn libmemcached_wait(&self, wait: Duration) -> u64 {
        if wait.is_zero() {
            // `next_retry = now`, which libmemcached's ring counts as live: a server ejected
            // with `retry_timeout=0` is never left out of it (its keys stay, failing fast).
            // Rounded up to the second, its keys moved for up to a second (an outside audit:
            // 127 to 511 of 512 reads served by other servers, where pylibmc moved none).
            return self.now_ms();
        }
        let mut ms = Self::ms(wait);
        if wait.subsec_nanos() == 0 {
            // The wall clock first, then the cluster's: read the other way round, the time
            // between the two readings moved the end before the second's start, and a
            // request in that moment was tried where libmemcached's is not; its failure
            // counted in the old second, and every later wait ended a second early (an
            // outside audit: ejection and re-admission 1 s before pylibmc's in about half
            // the runs). 10 ms past the second's start covers the readings' rounding.
            let into_second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.subsec_millis());
            const PAST_THE_SECOND_MS: u64 = 10;
            ms = ms.saturating_add(1000 - u64::from(into_second) + PAST_THE_SECOND_MS);
        }
        self.now_ms().saturating_add(ms)
    }

    /// The server that holds `key`, as libmemcached would pick it with the same servers,
    /// behaviors and ejections.
    pub(crate) fn place(&self, key: &[u8]) -> Result<usize> {
        if self.servers.len() == 1 {
            return Ok(0);
        }
        let due = {
            let state = self.ring.read().unwrap_or_else(|p| p.into_inner());
            match state.next_rebuild {
                Some(at) if self.now_ms() >= at => true,
                _ => {
                    return state
                        .ring
                        .server_for_key(key)
                        .ok_or_else(|| self.nobody_left());
                }
            }
        };
        if due {
            self.rebuild();
        }
        let state = self.ring.read().unwrap_or_else(|p| p.into_inner());
        state
            .ring
            .server_for_key(key)
            .ok_or_else(|| self.nobody_left())
    }

    fn nobody_left(&self) -> Error {
        let now = self.now_ms();
        let soonest = self
            .health
            .iter()
            .map(|h| h.down_until.load(Ordering::Relaxed))
            .filter(|&t| t > now)
            .min()
            .unwrap_or(now);
        if !self.settings.hash.is_computed() {
            return Error::Protocol {
                server: "every server".into(),
                detail: format!(
                    "the text transport does not compute the {} hash; use the binary transport",
                    self.settings.hash
                ),
            };
        }
        Error::ServerDown {
            server: "every server".into(),
            retry_in: Duration::from_millis(soonest - now),
        }
    }

    /// Rebuilds the ring from the servers whose ejection has not run out.
    fn rebuild(&self) {
        let now = self.now_ms();
        let out = |i: usize| {
            self.health.get(i).is_some_and(|h| {
                h.ejected.load(Ordering::Relaxed) && h.down_until.load(Ordering::Relaxed) > now
            })
        };
        let ring = Ring::with_live(&self.servers, &self.settings, |i| !out(i));
        let next_rebuild = (0..self.servers.len())
            .filter(|&i| out(i))
            .filter_map(|i| self.health.get(i))
            .map(|h| h.down_until.load(Ordering::Relaxed))
            .min();
        let mut state = self.ring.write().unwrap_or_else(|p| p.into_inner());
        *state = RingState { ring, next_rebuild };
    }

    /// The server's record as a request sees it now (see [`Ticket`]).
    pub(crate) fn ticket(&self, index: usize) -> Ticket {
        match self.health.get(index) {
            Some(h) => h.counted.ticket(),
            None => FailureTickets::default().ticket(),
        }
    }

    /// Fails fast when the server is inside its retry wait; else the request's [`Ticket`],
    /// for [`Cluster::report`].
    pub(crate) fn check_up(&self, index: usize) -> Result<Ticket> {
        let Some(health) = self.health.get(index) else {
            return Err(Error::NoServers);
        };
        let ticket = self.ticket(index);
        if health.dead.load(Ordering::Relaxed) {
            return Err(Error::ServerDown {
                server: self.label(index).to_string(),
                retry_in: Duration::MAX,
            });
        }
        let until = health.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(ticket);
        }
        let now = self.now_ms();
        if now < until {
            return Err(Error::ServerDown {
                server: self.label(index).to_string(),
                retry_in: Duration::from_millis(until - now),
            });
        }
        Ok(ticket)
    }

    /// Records how an exchange with the server ended, given the [`Ticket`] its request got.
    pub(crate) fn report<T>(&self, index: usize, ticket: Ticket, outcome: &Result<T>) {
        match outcome {
            Ok(_) => self.succeeded(index),
            Err(e) if counts_as_failure(e) => self.failed(index, ticket, e),
            Err(_) => {}
        }
    }

    fn succeeded(&self, index: usize) {
        let Some(health) = self.health.get(index) else {
            return;
        };
        if health.failures.load(Ordering::Relaxed) == 0
            && health.down_until.load(Ordering::Relaxed) == 0
        {
            return;
        }
        health.failures.store(0, Ordering::Relaxed);
        let was_down = health.down_until.swap(0, Ordering::Relaxed) != 0;
        let was_ejected = health.ejected.swap(false, Ordering::Relaxed);
        #[cfg(feature = "tracing")]
        if was_down || was_ejected {
            tracing::info!(
                server = self.label(index),
                ejected = was_ejected,
                "memcached server answers again"
            );
        }
        let _ = was_down;
        if was_ejected {
            self.rebuild();
        }
    }

    /// A failure of server `index` (`error`, a [`counts_as_failure`] one).
    fn failed(&self, index: usize, ticket: Ticket, error: &Error) {
        let Some(health) = self.health.get(index) else {
            return;
        };
        // Another request let through with this one was counted already: the same failure.
        if !health.counted.count(ticket) {
            return;
        }
        if self.failover.remove_failed
            && !matches!(error, Error::Connect { .. })
            && self.health.len() > 1
        {
            // Only failed connects count toward an ejection, as in libmemcached (its
            // failure counter moves in its connect path): a hung server still accepts
            // connections, so pylibmc never ejects it, and neither may this client, or the
            // two would place its keys apart. A timeout leaves it alone for retry_timeout
            // (its keys fail fast, where they stay); a connection that broke is followed
            // by a new connect on the next request, as libmemcached's is (a killed server
            // then counts its first failure there, when libmemcached's does).
            if matches!(error, Error::Timeout { .. }) && !self.failover.retry_timeout.is_zero() {
                health.down_until.store(
                    self.libmemcached_wait(self.failover.retry_timeout),
                    Ordering::Relaxed,
                );
            }
            return;
        }
        let now = self.now_ms();
        let failures = health
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let limit = self.failover.failure_limit.max(1);
        if self.health.len() == 1 {
            // The only server: keep trying it.
            return;
        }
        if failures < limit {
            if self.failover.remove_failed && !self.failover.retry_timeout.is_zero() {
                // Ejection moves keys, so it comes when libmemcached's does: each failure
                // leaves the server alone for retry_timeout, and the failure_limit-th
                // ejects it.
                health.down_until.store(
                    self.libmemcached_wait(self.failover.retry_timeout),
                    Ordering::Relaxed,
                );
            }
            // Otherwise keep trying it until the limit.
            return;
        }
        #[cfg(feature = "tracing")]
        tracing::warn!(
            server = self.label(index),
            failures,
            ejected = self.failover.remove_failed,
            "memcached server marked down after failure_limit failures in a row"
        );
        if self.failover.remove_failed {
            if self.failover.dead_timeout.is_zero() {
                // libmemcached sets no new retry time: the server stays off the ring for
                // what is left of this failure's retry_timeout and is never tried again.
                health.dead.store(true, Ordering::Relaxed);
                health.down_until.store(
                    self.libmemcached_wait(self.failover.retry_timeout),
                    Ordering::Relaxed,
                );
            } else {
                health.down_until.store(
                    self.libmemcached_wait(self.failover.dead_timeout),
                    Ordering::Relaxed,
                );
                // After the wait, one more failure ejects it again.
                health.failures.store(limit - 1, Ordering::Relaxed);
            }
            health.ejected.store(true, Ordering::Relaxed);
            if self.settings.distribution.is_consistent() {
                self.rebuild();
            }
        } else if !self.failover.retry_timeout.is_zero() {
            health.down_until.store(
                now.saturating_add(Self::ms(self.failover.retry_timeout)),
                Ordering::Relaxed,
            );
            // After the wait, one more failure leaves it alone again.
            health.failures.store(limit - 1, Ordering::Relaxed);
        }
    }
}

/// Failures that say the server is unreachable or hung, as opposed to replies it gave.
fn counts_as_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Connect { .. } | Error::Timeout { .. } | Error::Io { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use newcache_placement::Distribution;
    use std::io;

    fn cluster(n: usize, distribution: Distribution, failover: Failover) -> Cluster {
        let servers = (0..n)
            .map(|i| Server::new(format!("10.0.0.{i}"), 11211))
            .collect();
        let settings = Settings {
            distribution,
            ..Settings::default()
        };
        Cluster::new(servers, settings, failover)
    }

    fn refused(index: usize) -> Result<()> {
        Err(Error::Connect {
            server: format!("server {index}"),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        })
    }

    fn key_on(c: &Cluster, server: usize) -> Vec<u8> {
        (0..10_000)
            .map(|i| format!("key{i}").into_bytes())
            .find(|k| c.place(k).ok() == Some(server))
            .expect("some key lands on the server")
    }

    /// Requests let through together that one hang or kill fails are one failure: only
    /// requests sent after a failure was counted count again, as each of libmemcached's
    /// handles (one request at a time) counts them.
    #[test]
    fn requests_in_flight_together_that_fail_count_once() {
        for failover in [
            Failover::default(),
            Failover {
                remove_failed: true,
                ..Failover::default()
            },
        ] {
            let c = cluster(3, Distribution::ConsistentKetama, failover);
            // 64 callers let through, then all failing (a SIGSTOP past the read timeout).
            let tickets: Vec<Ticket> = (0..64).map(|_| c.check_up(1).unwrap()).collect();
            for &ticket in &tickets {
                c.report(1, ticket, &refused(1));
            }
            assert_eq!(
                c.health[1].failures.load(Ordering::Relaxed),
                1,
                "{failover:?}"
            );
            assert!(!c.health[1].ejected.load(Ordering::Relaxed), "{failover:?}");
            if !failover.remove_failed {
                // Tried again at once; the next failure of a request sent now counts.
                let ticket = c.check_up(1).unwrap();
                c.report(1, ticket, &refused(1));
                assert_eq!(c.health[1].failures.load(Ordering::Relaxed), 2);
                // A failure of a request let through before that one does not.
                c.report(1, tickets[0], &refused(1));
                assert_eq!(c.health[1].failures.load(Ordering::Relaxed), 2);
            }
        }
    }

    #[test]
    fn failure_limit_failures_in_a_row_fail_the_server_fast_until_the_retry_time() {
        let c = cluster(3, Distribution::Modula, Failover::default());
        assert!(c.check_up(1).is_ok());
        // Four failures (one short of the default limit of 5), a success, four more: the
        // server is tried every time.
        for _ in 0..2 {
            for _ in 0..4 {
                c.report(1, c.ticket(1), &refused(1));
                assert!(c.check_up(1).is_ok());
            }
            c.report(1, c.ticket(1), &Ok(()));
        }
        for _ in 0..5 {
            c.report(1, c.ticket(1), &refused(1));
        }
        match c.check_up(1) {
            Err(Error::ServerDown { retry_in, .. }) => {
                assert!(retry_in <= Duration::from_secs(2) && retry_in > Duration::from_secs(1))
            }
            other => panic!("expected ServerDown, got {other:?}"),
        }
        assert!(c.check_up(0).is_ok(), "other servers are untouched");
        // A reply the server gave (not a connection failure) does not count.
        c.report::<()>(
            2,
            c.ticket(2),
            &Err(Error::Client {
                server: "s".into(),
                message: "bad".into(),
            }),
        );
        assert!(c.check_up(2).is_ok());
    }

    #[test]
    fn the_only_server_is_always_tried() {
        for failover in [
            Failover::default(),
            Failover {
                failure_limit: 1,
                remove_failed: true,
                ..Failover::default()
            },
        ] {
            let c = cluster(1, Distribution::ConsistentKetama, failover);
            for _ in 0..10 {
                c.report(0, c.ticket(0), &refused(0));
                assert!(c.check_up(0).is_ok());
                assert_eq!(c.place(b"k").unwrap(), 0);
            }
        }
    }

    #[test]
    fn zero_retry_timeout_retries_every_request() {
        let failover = Failover {
            retry_timeout: Duration::ZERO,
            ..Failover::default()
        };
        let c = cluster(2, Distribution::Modula, failover);
        c.report(0, c.ticket(0), &refused(0));
        assert!(c.check_up(0).is_ok());
    }

    #[test]
    fn ejection_moves_keys_on_consistent_rings_and_success_brings_the_server_back() {
        let failover = Failover {
            failure_limit: 2,
            remove_failed: true,
            retry_timeout: Duration::ZERO,
            dead_timeout: Duration::from_secs(60),
        };
        let c = cluster(3, Distribution::ConsistentKetama, failover);
        let key = key_on(&c, 1);
        c.report(1, c.ticket(1), &refused(1));
        assert_eq!(c.place(&key).unwrap(), 1, "one failure is under the limit");
        c.report(1, c.ticket(1), &refused(1));
        let moved = c.place(&key).unwrap();
        assert_ne!(
            moved, 1,
            "ejected: the key goes to the next server on the ring"
        );
        assert!(matches!(c.check_up(1), Err(Error::ServerDown { .. })));
        // The server answers again (say after its dead_timeout): it is back on the ring.
        c.report(1, c.ticket(1), &Ok(()));
        assert_eq!(c.place(&key).unwrap(), 1);
        assert!(c.check_up(1).is_ok());
    }

    #[test]
    fn modula_keeps_an_ejected_servers_keys_failing_fast() {
        let failover = Failover {
            failure_limit: 1,
            remove_failed: true,
            ..Failover::default()
        };
        let c = cluster(3, Distribution::Modula, failover);
        let key = key_on(&c, 2);
        c.report(2, c.ticket(2), &refused(2));
        assert_eq!(c.place(&key).unwrap(), 2);
        assert!(matches!(c.check_up(2), Err(Error::ServerDown { .. })));
    }

    #[test]
    fn an_ejection_runs_out_and_the_ring_takes_the_server_back() {
        let failover = Failover {
            failure_limit: 1,
            remove_failed: true,
            retry_timeout: Duration::from_secs(5),
            dead_timeout: Duration::from_millis(200),
        };
        let c = cluster(2, Distribution::ConsistentKetama, failover);
        let key = key_on(&c, 0);
        c.report(0, c.ticket(0), &refused(0));
        assert_eq!(c.place(&key).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(c.place(&key).unwrap(), 0, "tried again after the wait");
        assert!(c.check_up(0).is_ok());
        // One more failure ejects it again straight away.
        c.report(0, c.ticket(0), &refused(0));
        assert_eq!(c.place(&key).unwrap(), 1);
    }

    #[test]
    fn with_retry_timeout_zero_an_ejected_server_keeps_its_keys_failing_fast() {
        let failover = Failover {
            failure_limit: 1,
            remove_failed: true,
            retry_timeout: Duration::ZERO,
            dead_timeout: Duration::ZERO,
        };
        let c = cluster(3, Distribution::ConsistentKetama, failover);
        let key = key_on(&c, 1);
        c.report(1, c.ticket(1), &refused(1));
        assert_eq!(
            c.place(&key).unwrap(),
            1,
            "its keys stay, as libmemcached's"
        );
        assert!(matches!(c.check_up(1), Err(Error::ServerDown { .. })));
    }

    #[test]
    fn with_dead_timeout_zero_an_ejected_server_is_never_tried_again() {
        // libmemcached 1.1.4: the ring leaves the server out until its retry_timeout runs
        // out, then places its keys on it again, and every request for them is answered
        // SERVER_MARKED_DEAD without connecting, for good.
        let failover = Failover {
            failure_limit: 2,
            remove_failed: true,
            retry_timeout: Duration::from_millis(200),
            dead_timeout: Duration::ZERO,
        };
        let c = cluster(3, Distribution::ConsistentKetama, failover);
        let key = key_on(&c, 1);
        c.report(1, c.ticket(1), &refused(1));
        assert_eq!(c.place(&key).unwrap(), 1, "under the limit: not ejected");
        assert!(
            matches!(c.check_up(1), Err(Error::ServerDown { .. })),
            "left alone for retry_timeout, as libmemcached does"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(c.check_up(1).is_ok(), "tried again after retry_timeout");
        c.report(1, c.ticket(1), &refused(1));
        assert_ne!(c.place(&key).unwrap(), 1, "ejected: the key moved");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            c.place(&key).unwrap(),
            1,
            "back on the ring after retry_timeout"
        );
        for _ in 0..3 {
            match c.check_up(1) {
                Err(Error::ServerDown { retry_in, .. }) => assert_eq!(retry_in, Duration::MAX),
                other => panic!("expected ServerDown for good, got {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(c.check_up(0).is_ok() && c.check_up(2).is_ok());
        // Modula: the same, without the ring moving the key.
        let c = cluster(3, Distribution::Modula, failover);
        let key = key_on(&c, 2);
        c.report(2, c.ticket(2), &refused(2));
        std::thread::sleep(Duration::from_millis(250));
        c.report(2, c.ticket(2), &refused(2));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(c.place(&key).unwrap(), 2);
        assert!(
            matches!(c.check_up(2), Err(Error::ServerDown { retry_in, .. }) if retry_in == Duration::MAX)
        );
    }

    #[test]
    fn with_remove_failed_each_failure_waits_out_retry_timeout_to_the_wall_clocks_second() {
        // libmemcached's count toward ejection, so keys move when pylibmc's do: failure k
        // of failure_limit leaves the server alone (its keys fail fast, not moved), until
        // the wall clock's second after retry_timeout, as libmemcached's whole-second
        // next_retry ends it.
        let failover = Failover {
            failure_limit: 3,
            remove_failed: true,
            retry_timeout: Duration::from_secs(1),
            dead_timeout: Duration::ZERO,
        };
        let c = cluster(3, Distribution::ConsistentKetama, failover);
        let key = key_on(&c, 1);
        for failure in 1..3 {
            c.report(1, c.ticket(1), &refused(1));
            assert_eq!(c.place(&key).unwrap(), 1, "failure {failure}: not ejected");
            let retry_in = match c.check_up(1) {
                Err(Error::ServerDown { retry_in, .. }) => retry_in,
                other => panic!("failure {failure}: expected ServerDown, got {other:?}"),
            };
            let ends = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + retry_in;
            // Just past a second's start (10 ms, and what this thread took to look), never
            // before it.
            let past = ends.subsec_millis();
            assert!(
                retry_in > Duration::from_millis(990)
                    && retry_in <= Duration::from_millis(2010)
                    && (5..=300).contains(&past),
                "failure {failure}: the wait ends {retry_in:?} from now, {past} ms into a second"
            );
            // Cut the wait short, as if it ran out.
            c.health[1].down_until.store(1, Ordering::Relaxed);
        }
        c.report(1, c.ticket(1), &refused(1));
        assert_ne!(c.place(&key).unwrap(), 1, "the failure_limit-th ejects it");
    }

    /// A hung server (its requests time out, its connects succeed) is never ejected, as
    /// libmemcached never ejects it: its keys stay where pylibmc places them, failing fast
    /// for retry_timeout after each failure (an outside audit: the text transport ejected a
    /// server SIGSTOPped for 5 s and, with dead_timeout 0, kept it out for good, while
    /// libmemcached and pylibmc placed its keys on it throughout).
    #[test]
    fn with_remove_failed_only_failed_connects_eject() {
        let failover = Failover {
            failure_limit: 2,
            remove_failed: true,
            retry_timeout: Duration::from_secs(1),
            dead_timeout: Duration::ZERO,
        };
        let c = cluster(3, Distribution::ConsistentKetama, failover);
        let key = key_on(&c, 1);
        let hung: Result<()> = Err(Error::Timeout {
            server: "server 1".into(),
            after: Duration::from_millis(500),
        });
        for failure in 1..=5 {
            c.report(1, c.ticket(1), &hung);
            assert_eq!(c.place(&key).unwrap(), 1, "timeout {failure}: not ejected");
            assert!(
                matches!(c.check_up(1), Err(Error::ServerDown { .. })),
                "timeout {failure}: left alone for retry_timeout"
            );
            c.health[1].down_until.store(1, Ordering::Relaxed);
        }
        assert!(c.check_up(1).is_ok());
        for _ in 0..2 {
            c.report(1, c.ticket(1), &refused(1));
            c.health[1].down_until.store(1, Ordering::Relaxed);
        }
        assert_ne!(c.place(&key).unwrap(), 1, "failed connects eject it");
    }

    #[test]
    fn with_every_server_ejected_keys_fail_fast() {
        let failover = Failover {
            failure_limit: 1,
            remove_failed: true,
            ..Failover::default()
        };
        let c = cluster(2, Distribution::ConsistentKetama, failover);
        c.report(0, c.ticket(0), &refused(0));
        c.report(1, c.ticket(1), &refused(1));
        assert!(matches!(c.place(b"k"), Err(Error::ServerDown { .. })));
    }
}
